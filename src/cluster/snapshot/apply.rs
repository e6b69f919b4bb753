//! Recreating a snapshot's objects in a cluster: in dependency order, never over an existing
//! object, owner references re-pointed at the owners' new UIDs once those exist.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{
    archive::Entry,
    order::restore_order,
    prepare::{comparable, first_difference, for_create, without_allocations},
};
use crate::cluster::{Progress, Result};

/// Who the restore's writes name as their field manager.
const FIELD_MANAGER: &str = "vcsync-restore";
/// How long a restored CustomResourceDefinition may take to be served.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a restore did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Outcome {
    /// Objects created (to be created).
    pub created: Vec<String>,
    /// Objects that existed as the snapshot has them.
    pub unchanged: usize,
    /// Objects that existed otherwise, left as they are: (object, first differing path).
    pub differing: Vec<(String, String)>,
    /// Services created with new cluster IPs or node ports, theirs being taken.
    pub reallocated: Vec<String>,
    /// Objects whose owner references were re-pointed.
    pub owners_linked: usize,
    /// Owner references left out: their owner is neither in the snapshot nor restored.
    pub owners_dropped: Vec<String>,
    /// Objects that could not be created: (object, error).
    pub failed: Vec<(String, String)>,
}

fn api_for(client: &Client, entry: &Entry) -> Api<DynamicObject> {
    let resource = entry.resource.api_resource();
    match entry.namespace().filter(|_| entry.resource.namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// What became of one object.
enum Found {
    /// Created (to be created), with its new UID.
    Created(Option<String>),
    /// An object of its name exists.
    Existing(Box<DynamicObject>),
}

/// Recreates `entries` through `client`, or with `dry_run` only says what it would do.
pub async fn restore(
    client: &Client,
    entries: &[Entry],
    dry_run: bool,
    progress: &Progress,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    // Snapshot UID -> UID in this cluster, of each object restored or found.
    let mut uids: HashMap<String, String> = HashMap::new();
    let mut created = Vec::new();
    let order = restore_order(entries);
    for (done, &i) in order.iter().enumerate() {
        progress.count(if dry_run { "comparing" } else { "restoring" }, done, order.len());
        let entry = &entries[i];
        let api = api_for(client, entry);
        let found = if dry_run {
            match api.get_opt(entry.name()).await {
                Ok(live) => Ok(live.map_or(Found::Created(None), |live| Found::Existing(Box::new(live)))),
                Err(err) => Err(err.to_string()),
            }
        } else {
            create(client, &api, entry, &mut outcome).await
        };
        let (new_uid, live) = match found {
            Ok(Found::Created(uid)) => (uid, None),
            Ok(Found::Existing(live)) => (live.metadata.uid.clone(), Some(live)),
            Err(err) => {
                outcome.failed.push((entry.display(), err));
                continue;
            }
        };
        if let (Some(old), Some(new)) = (entry.uid(), new_uid) {
            uids.insert(old.to_string(), new);
        }
        let Some(live) = live else {
            outcome.created.push(entry.display());
            created.push(i);
            continue;
        };
        let live = serde_json::to_value(*live).context("encoding an object")?;
        let want = comparable(&entry.resource, entry.object.clone());
        match first_difference(&want, &comparable(&entry.resource, live)) {
            None => outcome.unchanged += 1,
            Some(path) => outcome.differing.push((entry.display(), path)),
        }
    }
    if !dry_run {
        progress.step("linking owner references");
        for i in created {
            link_owners(client, &entries[i], &uids, &mut outcome).await;
        }
    }
    Ok(outcome)
}

/// Creates `entry`, or finds the object of its name that exists; Err with the API's message.
async fn create(
    client: &Client,
    api: &Api<DynamicObject>,
    entry: &Entry,
    outcome: &mut Outcome,
) -> std::result::Result<Found, String> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let object = for_create(entry);
    let parse = |value: Value| serde_json::from_value::<DynamicObject>(value).map_err(|err| err.to_string());
    let mut created = api.create(&params, &parse(object.clone())?).await;
    if entry.resource.group.is_empty()
        && entry.resource.kind == "Service"
        && matches!(&created, Err(kube::Error::Api(status)) if status.code == 422 && takes_allocation(&status.message))
    {
        created = api.create(&params, &parse(without_allocations(object))?).await;
        if created.is_ok() {
            outcome.reallocated.push(entry.display());
        }
    }
    match created {
        Ok(created) => {
            if entry.resource.kind == "CustomResourceDefinition" {
                established(client, entry.name()).await?;
            }
            Ok(Found::Created(created.metadata.uid))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => match api.get_opt(entry.name()).await {
            Ok(Some(live)) => Ok(Found::Existing(Box::new(live))),
            Ok(None) => Err("it existed, then vanished".into()),
            Err(err) => Err(err.to_string()),
        },
        Err(err) => Err(err.to_string()),
    }
}

/// Whether a refusal is about a Service's cluster IP or node port being taken or out of range.
fn takes_allocation(message: &str) -> bool {
    ["clusterIP", "nodePort", "provided IP", "provided port"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// Waits until the restored definition `name` is served (its Established condition).
async fn established(client: &Client, name: &str) -> std::result::Result<(), String> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        let ready = api
            .get_opt(name)
            .await
            .map_err(|err| err.to_string())?
            .and_then(|crd| crd.status?.conditions)
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not established within {}s", ESTABLISH_TIMEOUT.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Points the owner references of `entry`, which the restore created, at its owners' UIDs
/// in this cluster; a reference whose owner is not there is left out (the garbage collector
/// would delete an object whose owner is missing).
async fn link_owners(client: &Client, entry: &Entry, uids: &HashMap<String, String>, outcome: &mut Outcome) {
    let Some(owners) = entry.object["metadata"]["ownerReferences"].as_array() else {
        return;
    };
    let mut linked = Vec::new();
    for owner in owners {
        match owner["uid"].as_str().and_then(|uid| uids.get(uid)) {
            Some(uid) => {
                let mut owner = owner.clone();
                owner["uid"] = json!(uid);
                linked.push(owner);
            }
            None => outcome.owners_dropped.push(format!(
                "{}: owner {} {}",
                entry.display(),
                owner["kind"].as_str().unwrap_or_default(),
                owner["name"].as_str().unwrap_or_default()
            )),
        }
    }
    if linked.is_empty() {
        return;
    }
    let patch = json!({"metadata": {"ownerReferences": linked}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api_for(client, entry)
        .patch(entry.name(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => outcome.owners_linked += 1,
        Err(err) => outcome
            .failed
            .push((entry.display(), format!("linking its owners: {err}"))),
    }
}
