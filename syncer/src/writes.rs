//! Writes to the host cluster that keep the rules: never touch a foreign object, delete only
//! with a UID precondition, and report name collisions on the virtual object. They serve
//! typed and dynamic kinds alike (the kind's name, `Api` and references come from the
//! context's [`Kind`](crate::resource::Kind)).

use std::time::Duration;

use kube::{
    Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Preconditions},
};

use crate::{
    Action,
    context::SyncContext,
    error::{Error, Result, Side, api_error, status_code},
    events::EventType,
    host_owner::{give_owner, with_owner},
    resource::AnyResource,
    safety::{Admission, virtual_key_of_host},
    wire,
};

pub use crate::resource::{FIELD_MANAGER, write_params};

/// Whether two objects carry the same labels and annotations (absent and empty are equal);
/// the metadata part of "is the host object already what we want?".
pub fn labels_and_annotations_match(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let or_empty = |map: &Option<std::collections::BTreeMap<String, String>>| map.clone().unwrap_or_default();
    or_empty(&a.labels) == or_empty(&b.labels) && or_empty(&a.annotations) == or_empty(&b.annotations)
}

/// A held delete is looked at again now and then (the brake stays engaged until a restart).
const HELD_RETRY: Duration = Duration::from_secs(300);

/// A foreign object will not go away by itself soon; look again now and then.
const FOREIGN_RETRY: Duration = Duration::from_secs(300);

fn display_key<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// Parameters of a delete of the object `meta` describes: background propagation and a UID
/// precondition, so that a newer object of the same name is never hit; `grace_period_seconds`
/// None keeps the object's default.
pub fn delete_params(meta: &ObjectMeta, grace_period_seconds: Option<u32>) -> DeleteParams {
    DeleteParams {
        preconditions: meta.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        grace_period_seconds,
        ..DeleteParams::background()
    }
}

/// Deletes a host object gracefully, only if it carries this instance's ownership marker,
/// with a UID precondition so that a newer object of the same name is never hit.
pub async fn delete_object<K: AnyResource>(ctx: &SyncContext<K>, host: &K) -> Result<Action> {
    delete_object_with_grace(ctx, host, None).await
}

/// [`delete_object`] with an explicit grace period in seconds (None: the object's default, for
/// pods their `terminationGracePeriodSeconds`), so that a virtual pod's graceful deletion reaches
/// its host twin with the same grace period.
pub async fn delete_object_with_grace<K: AnyResource>(
    ctx: &SyncContext<K>,
    host: &K,
    grace_period_seconds: Option<u32>,
) -> Result<Action> {
    let ownership = ctx.clients().ownership();
    if !ownership.owns(host.meta()) {
        tracing::warn!(host = %display_key(host), "refusing to delete a host object this instance does not own");
        return Ok(Action::await_change());
    }
    let kind = ctx.kind().name().into_owned();
    let key = display_key(host);
    let virtual_present = virtual_key_of_host(host.meta()).is_some_and(|twin| {
        ctx.virtual_store()
            .contains(&ctx.kind().object_ref(twin.namespace.as_deref(), &twin.name))
    });
    match ctx
        .oversight()
        .host_guard()
        .admit_delete(&kind, host.meta(), virtual_present)
    {
        Admission::Allowed => {}
        Admission::Earlier => return Ok(Action::await_change()),
        Admission::Held => {
            tracing::warn!(host = %key, "host delete held by the mass-deletion brake");
            return Ok(Action::requeue(HELD_RETRY));
        }
    }
    let params = delete_params(host.meta(), grace_period_seconds);
    match ctx.host_api_for(host).delete(&host.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(host = %key, "deleted host object");
            Ok(Action::await_change())
        }
        // Already gone: the goal is reached.
        Err(err) if status_code(&err) == Some(404) => Ok(Action::await_change()),
        Err(err) => Err(api_error(Side::Host, "delete", &kind, &key)(err)),
    }
}

/// When this process's controllers started (see [`mark_started`]).
static STARTED: std::sync::OnceLock<jiff::Timestamp> = std::sync::OnceLock::new();

/// Records that the controllers start now: a virtual object older than this with no host copy
/// in the cache is looked up before its copy is created (see [`create_host_object`]).
pub fn mark_started() {
    let _ = STARTED.set(jiff::Timestamp::now());
}

/// Whether the create of `virt`'s copy should read the host name first: it is known to be held
/// by a foreign object, or the virtual object is older than this process, for which a missing
/// copy is more often a collision met before a restart than a new object. A read, where a
/// create would be a write refused with 409 at every start.
fn look_before_create<K: AnyResource>(
    collisions: &crate::indices::Collisions,
    kind: &str,
    virtual_key: &vcsync_translators::VirtualKey,
    virt: &K,
) -> bool {
    if collisions.contains(kind, virtual_key) {
        return true;
    }
    let created = virt.meta().creation_timestamp.as_ref().map(|t| t.0);
    match (STARTED.get(), created) {
        (Some(started), Some(created)) => created < *started,
        (None, _) | (_, None) => true,
    }
}

/// Creates `desired` on the host. If a foreign object already holds the name, nothing is
/// written: the virtual object gets a Warning event and the key is retried much later.
pub async fn create_host_object<K: AnyResource>(
    ctx: &SyncContext<K>,
    virt: &K,
    desired: &K,
) -> Result<Action> {
    let kind = ctx.kind().name().into_owned();
    let key = display_key(desired);
    let params = write_params();
    let collisions = ctx.caches().indices().collisions();
    let virtual_key = crate::resource::virtual_key_of(virt);
    let api = ctx.host_api_for(desired);
    let read = |api: kube::Api<K>| {
        let (name, kind, key) = (desired.name_any(), kind.clone(), key.clone());
        async move {
            api.get_opt(&name)
                .await
                .map_err(api_error(Side::Host, "get", &kind, &key))
        }
    };
    if look_before_create(collisions, &kind, &virtual_key, virt)
        && let Some(existing) = read(api.clone()).await?
    {
        return name_taken(ctx, virt, &existing, &virtual_key).await;
    }
    let desired = owned(ctx, desired);
    match wire::create(&api, &params, desired.as_ref()).await {
        Ok(_) => {
            tracing::info!(host = %key, "created host object");
            collisions.clear(&kind, &virtual_key);
            Ok(Action::await_change())
        }
        Err(err) if status_code(&err) == Some(409) => match read(api).await? {
            Some(existing) => name_taken(ctx, virt, &existing, &virtual_key).await,
            // Gone again: look again shortly.
            None => Ok(Action::requeue(Duration::from_millis(100))),
        },
        Err(err) => {
            let error = api_error(Side::Host, "create", &kind, &key)(err);
            record_rejection(ctx, virt, &error).await;
            Err(error)
        }
    }
}

/// The host name of `virt`'s copy is held by `existing`: a foreign object (the collision is
/// noted and reported on the virtual object, and looked at again much later), or one of ours
/// the cache does not show yet (looked at again once it caught up).
async fn name_taken<K: AnyResource>(
    ctx: &SyncContext<K>,
    virt: &K,
    existing: &K,
    virtual_key: &vcsync_translators::VirtualKey,
) -> Result<Action> {
    if ctx.clients().ownership().owns(existing.meta()) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let kind = ctx.kind().name().into_owned();
    let error = Error::ForeignHostObject {
        host: display_key(existing),
        instance: ctx.clients().ownership().instance().to_string(),
    };
    tracing::warn!(error = %error, "name collision with a foreign host object");
    ctx.caches().indices().collisions().note(&kind, virtual_key);
    ctx.events()
        .publish(
            &ctx.kind().reference_of(virt),
            EventType::Warning,
            "HostNameCollision",
            &error.to_string(),
        )
        .await;
    Ok(Action::requeue(FOREIGN_RETRY))
}

/// Replaces a host object with `desired`, which must carry the observed resourceVersion
/// (a stale one fails with a conflict and is retried quickly).
pub async fn update_host_object<K: AnyResource>(
    ctx: &SyncContext<K>,
    virt: &K,
    desired: &K,
) -> Result<Action> {
    let kind = ctx.kind().name().into_owned();
    let key = display_key(desired);
    let params = write_params();
    let desired = owned(ctx, desired);
    match wire::replace(
        &ctx.host_api_for(&desired),
        &desired.name_any(),
        &params,
        desired.as_ref(),
    )
    .await
    {
        Ok(_) => {
            tracing::info!(host = %key, "updated host object");
            Ok(Action::await_change())
        }
        Err(err) => {
            let error = api_error(Side::Host, "update", &kind, &key)(err);
            if !error.is_conflict() {
                record_rejection(ctx, virt, &error).await;
            }
            Err(error)
        }
    }
}

/// Gives `host`, a copy written without it (by an older vcsync, or before `hostOwner` was set),
/// the owner reference the host copies carry; Some(action) when it wrote (the write's event
/// brings the next reconcile), None when there was nothing to do.
pub async fn own_host_copy<K: AnyResource>(ctx: &SyncContext<K>, host: &K) -> Result<Option<Action>> {
    let owner = ctx.oversight().host_owner();
    // Every reconcile of a pair comes here: nothing more than this check unless there is work.
    if owner.missing_from(host.meta()).is_none() {
        return Ok(None);
    }
    let key = display_key(host);
    let wrote = give_owner(&ctx.host_api_for(host), owner, host)
        .await
        .map_err(api_error(
            Side::Host,
            "set the owner of",
            &ctx.kind().name(),
            &key,
        ))?;
    Ok(wrote.then(|| {
        tracing::info!(host = %key, "host copy now owned by the hostOwner ConfigMap");
        Action::await_change()
    }))
}

/// `desired` with the owner reference the host copies carry (see [`crate::host_owner`]), when
/// it is to carry one it lacks.
fn owned<'a, K: AnyResource>(ctx: &SyncContext<K>, desired: &'a K) -> std::borrow::Cow<'a, K> {
    match ctx.oversight().host_owner().missing_from(desired.meta()) {
        Some(reference) => {
            let mut stamped = desired.clone();
            with_owner(stamped.meta_mut(), reference);
            std::borrow::Cow::Owned(stamped)
        }
        None => std::borrow::Cow::Borrowed(desired),
    }
}

/// The host refused a translated object (invalid, forbidden, quota): tell the tenant. Not a
/// 404: in the per-namespace mapping the host namespace is not there yet (the namespace syncer
/// makes it), which the retry with backoff outlasts and the tenant cannot fix.
async fn record_rejection<K: AnyResource>(ctx: &SyncContext<K>, virt: &K, error: &Error) {
    if let Error::Api { source, .. } = error
        && let kube::Error::Api(status) = source.as_ref()
        && (400..500).contains(&status.code)
        && status.code != 404
    {
        ctx.events()
            .publish(
                &ctx.kind().reference_of(virt),
                EventType::Warning,
                "SyncFailed",
                &error.to_string(),
            )
            .await;
    }
}
