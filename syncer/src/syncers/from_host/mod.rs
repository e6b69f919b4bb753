//! Host -> virtual flows: objects that exist on the host and are shown to tenants.
//!
//! - [`events`]: host Events about host objects owned by this instance appear in the virtual
//!   namespace of the virtual object, about that object.
//! - [`classes`]: StorageClasses and IngressClasses appear read-only in the virtual cluster.
//!
//! Everything these syncers create in the virtual cluster carries
//! [`SYNCED_FROM_HOST_LABEL`]; objects without it are never updated or deleted, so a tenant's
//! own object of the same name is safe (and removing the label from a mirrored object hands
//! it over to the tenant).
//!
//! They are [`FakeSyncer`](crate::FakeSyncer)s: their keys are virtual keys, derived from the
//! host object (same name for cluster-scoped classes; translated for events), and their
//! controllers are driven by host informers through extra triggers. That gives them the
//! manager's queue, per-key serialisation, backoff and the wait for full caches.

pub mod classes;
pub mod event_router;
pub mod event_translation;
pub mod events;
pub mod shared;

use k8s_openapi::api::{networking::v1::IngressClass, storage::v1::StorageClass};

use crate::{RegisterContext, Result, register_fake_syncer};

pub(crate) use shared::{Readable, informer_keys, probe};
pub use shared::{SYNCED_FROM_HOST_LABEL, is_synced_from_host};

/// Registers the host -> virtual syncers the configuration enables (a class mirror only if
/// both API servers serve the kind and the host lets vcsync read it).
pub async fn register(ctx: &RegisterContext) -> Result<()> {
    let (clients, caches) = (ctx.clients(), ctx.caches());
    let sync = &clients.config().sync;
    if sync.events.enabled {
        register_fake_syncer(ctx, events::EventSyncer::new(clients, caches, ctx.registrar())).await?;
    }
    if sync.storage_classes.enabled
        && let Some(mirror) = classes::HostMirror::<StorageClass>::new(clients, caches).await?
    {
        register_fake_syncer(ctx, mirror).await?;
    }
    if sync.ingress_classes.enabled
        && let Some(mirror) = classes::HostMirror::<IngressClass>::new(clients, caches).await?
    {
        register_fake_syncer(ctx, mirror).await?;
    }
    Ok(())
}
