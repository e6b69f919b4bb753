//! Reading a virtual cluster into a snapshot: every kind it serves that can be listed and
//! created (custom resources and their definitions included), page by page.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::{api::core::v1::Namespace, jiff};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams},
    core::GroupVersion,
    discovery::{Scope, verbs},
};

use super::{
    archive::{Entry, FORMAT, Manifest, Resource, VERSION},
    order::restore_order,
    prepare::{drop_derived, for_snapshot, left_out},
};
use crate::cluster::{Progress, Result};

/// Objects a list page asks for.
const PAGE: u32 = 500;
/// How long one API group's discovery may take: an aggregated API whose server is gone can hold
/// a request until the client's read timeout (minutes).
const GROUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The kinds `client`'s cluster serves that a snapshot holds, sorted. A group whose API does
/// not answer (an aggregated API whose server is down: metrics, say, which stores nothing) is
/// left out with a note rather than failing the snapshot.
async fn kinds(client: &Client, progress: &Progress) -> Result<Vec<Resource>> {
    let mut groups = vec![
        kube::discovery::group(client, "")
            .await
            .context("discovering the core API")?,
    ];
    let listed = client
        .list_api_groups()
        .await
        .context("discovering the API groups")?;
    for group in listed.groups {
        let Some(version) = group
            .preferred_version
            .or_else(|| group.versions.first().cloned())
        else {
            continue;
        };
        let Ok(served) = version.group_version.parse::<GroupVersion>() else {
            continue;
        };
        match tokio::time::timeout(GROUP_TIMEOUT, kube::discovery::pinned_group(client, &served)).await {
            Ok(Ok(found)) => groups.push(found),
            Ok(Err(err)) => progress.note(format!(
                "{} left out of the snapshot: its API did not answer ({err})",
                version.group_version
            )),
            Err(_) => progress.note(format!(
                "{} left out of the snapshot: its API did not answer within {}s",
                version.group_version,
                GROUP_TIMEOUT.as_secs()
            )),
        }
    }
    let mut kinds: Vec<Resource> = groups
        .iter()
        .flat_map(|group| group.recommended_resources())
        .filter(|(_, caps)| caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::CREATE))
        .map(|(served, caps)| Resource {
            group: served.group,
            version: served.version,
            kind: served.kind,
            plural: served.plural,
            namespaced: caps.scope == Scope::Namespaced,
        })
        .filter(|resource| left_out(resource).is_none())
        .collect();
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// Every object of `resource`, in the snapshot's form.
async fn objects_of(client: &Client, resource: &Resource) -> Result<Vec<Entry>> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource.api_resource());
    let mut params = ListParams::default().limit(PAGE);
    let mut entries = Vec::new();
    loop {
        let page = match api.list(&params).await {
            Ok(page) => page,
            // Gone since discovery (a definition deleted meanwhile): nothing to keep.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(entries),
            Err(err) => {
                return Err(anyhow::Error::new(err)
                    .context(format!("listing {}", resource.count_key()))
                    .into());
            }
        };
        for object in page.items {
            let value = serde_json::to_value(object).context("encoding an object")?;
            if let Some(object) = for_snapshot(resource, value) {
                entries.push(Entry {
                    resource: resource.clone(),
                    object,
                });
            }
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(entries),
        }
    }
}

/// A snapshot of the cluster `client` reaches, named `cluster` in its manifest: the entries in
/// the order a restore creates them.
pub async fn take(client: &Client, cluster: &str, progress: &Progress) -> Result<(Manifest, Vec<Entry>)> {
    progress.step(format!("discovering the kinds cluster {cluster} serves"));
    let kinds = kinds(client, progress).await?;
    let created = jiff::Timestamp::now().to_string();
    let cluster_uid = Api::<Namespace>::all(client.clone())
        .get_opt("kube-system")
        .await
        .context("reading namespace kube-system")?
        .and_then(|ns| ns.metadata.uid);
    let server_version = client.apiserver_version().await.ok().map(|info| info.git_version);
    progress.step(format!("reading the objects of {} kinds", kinds.len()));
    let mut entries = Vec::new();
    for (done, resource) in kinds.iter().enumerate() {
        progress.count("reading objects, kind by kind", done, kinds.len());
        entries.extend(objects_of(client, resource).await?);
    }
    drop_derived(&mut entries);
    let order = restore_order(&entries);
    let mut slots: Vec<Option<Entry>> = entries.into_iter().map(Some).collect();
    let entries: Vec<Entry> = order.into_iter().filter_map(|i| slots[i].take()).collect();
    let mut counts = BTreeMap::new();
    for entry in &entries {
        *counts.entry(entry.resource.count_key()).or_insert(0) += 1;
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        cluster: cluster.into(),
        cluster_uid,
        created,
        server_version,
        objects: entries.len(),
        counts,
    };
    Ok((manifest, entries))
}
