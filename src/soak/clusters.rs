//! Reading the clusters (every ConfigMap, Secret and pod, as the checker sees them) and the
//! foreign host objects.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta},
};
use vcsync_syncer::Config;
use vcsync_translators::MANAGED_BY_LABEL;

use super::{
    args::{FOREIGN_COLLISIONS, FOREIGN_OTHERS, HOST_NAMESPACE},
    check::{Observed, Snapshot, host_key_of},
    objects::{POD_ENV, POD_VOLUME, create},
    plan::{Content, Key, Kind, Op, POD_CONFIG_MAP, POD_SECRET, Rng, pod_references},
};

pub(super) fn observed(meta: &ObjectMeta, data: BTreeMap<String, String>) -> Observed {
    Observed {
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        data,
        terminating: meta.deletion_timestamp.is_some(),
    }
}

pub(super) fn key_of(kind: Kind, meta: &ObjectMeta) -> Key {
    Key {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

pub(super) fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Every ConfigMap and Secret of a cluster, optionally only of `namespaces`.
pub(super) async fn list_all(
    client: &Client,
    namespaces: Option<&BTreeSet<String>>,
) -> anyhow::Result<BTreeMap<Key, Observed>> {
    let keep = |meta: &ObjectMeta| {
        namespaces.is_none_or(|set| set.contains(meta.namespace.as_deref().unwrap_or("")))
    };
    let mut all = BTreeMap::new();
    for cm in Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing config maps")?
    {
        if keep(&cm.metadata) {
            let data = cm.data.clone().unwrap_or_default();
            all.insert(
                key_of(Kind::ConfigMap, &cm.metadata),
                observed(&cm.metadata, data),
            );
        }
    }
    for secret in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing secrets")?
    {
        if keep(&secret.metadata) {
            all.insert(
                key_of(Kind::Secret, &secret.metadata),
                observed(&secret.metadata, secret_data(&secret)),
            );
        }
    }
    for pod in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?
    {
        if keep(&pod.metadata) {
            let mut observed = observed(&pod.metadata, pod_references_of(&pod));
            // Status changes (scheduling, running) are not the syncer's doing.
            observed.resource_version.clear();
            all.insert(key_of(Kind::Pod, &pod.metadata), observed);
        }
    }
    Ok(all)
}

/// What `pod` references as the churn's content does: the ConfigMap of its volume and the
/// Secret of its env var (host names on the host; the syncer adds volumes and env vars of its
/// own).
pub(super) fn pod_references_of(pod: &Pod) -> BTreeMap<String, String> {
    let spec = pod.spec.as_ref();
    let config_map = spec
        .and_then(|s| {
            let volumes = s.volumes.as_ref()?;
            volumes.iter().find(|v| v.name == POD_VOLUME)?.config_map.as_ref()
        })
        .map(|cm| cm.name.clone());
    let secret = spec
        .and_then(|s| {
            let env = s.containers.first()?.env.as_ref()?;
            env.iter().find(|e| e.name == POD_ENV)?.value_from.as_ref()
        })
        .and_then(|from| from.secret_key_ref.as_ref())
        .map(|secret| secret.name.clone());
    [(POD_CONFIG_MAP, config_map), (POD_SECRET, secret)]
        .into_iter()
        .filter_map(|(what, name)| Some((what.to_string(), name?)))
        .collect()
}

/// UID of the virtual `kube-system` namespace: the identity of the virtual cluster.
pub(super) async fn cluster_uid(virt: &Client) -> anyhow::Result<Option<String>> {
    let namespace = Api::<Namespace>::all(virt.clone())
        .get_opt("kube-system")
        .await
        .context("reading the virtual kube-system namespace")?;
    Ok(namespace.and_then(|ns| ns.metadata.uid))
}

pub(super) async fn snapshot(
    host: &Client,
    virt: &Client,
    namespaces: &BTreeSet<String>,
) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        virt: list_all(virt, Some(namespaces)).await?,
        host: list_all(host, None).await?,
        cluster_uid: cluster_uid(virt).await?,
        namespaces: namespaces.clone(),
    })
}

/// Creates the foreign host objects: some at the host names of virtual objects the churn will
/// create (half of them labelled as another instance's), some at unrelated names. Returns them
/// as the host lists them.
pub(super) async fn create_foreign(
    host: &Client,
    config: &Config,
    ops: &[Op],
    rng: &mut Rng,
) -> anyhow::Result<BTreeMap<Key, Observed>> {
    // ConfigMaps and Secrets of their own: a pod waits for its references, so a foreign object
    // at one of their names would hold the pod back too, which is not what this checks.
    let references: BTreeSet<Key> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create(key, _) if key.kind == Kind::Pod => Some(pod_references(key)),
            _ => None,
        })
        .flatten()
        .collect();
    let created: Vec<&Key> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create(key, _) if key.kind != Kind::Pod && !references.contains(key) => Some(key),
            _ => None,
        })
        .collect();
    // One foreign object per name (the same virtual object may be picked twice).
    let mut keys = BTreeMap::new();
    for i in 0..FOREIGN_COLLISIONS.min(created.len()) {
        let host_key = host_key_of(config, created[rng.below(created.len())]);
        let mut labels = BTreeMap::from([("owner".to_string(), "someone-else".to_string())]);
        if i % 2 == 1 {
            labels.insert(MANAGED_BY_LABEL.into(), "another-instance".into());
        }
        keys.entry(host_key).or_insert(labels);
    }
    for i in 0..FOREIGN_OTHERS {
        let kind = if i % 2 == 0 { Kind::ConfigMap } else { Kind::Secret };
        let key = Key {
            kind,
            namespace: HOST_NAMESPACE.into(),
            name: format!("foreign-{i}"),
        };
        keys.insert(
            key,
            BTreeMap::from([("owner".to_string(), "someone-else".to_string())]),
        );
    }
    for (key, labels) in &keys {
        let content = Content {
            data: BTreeMap::from([("foreign".to_string(), "do not touch".to_string())]),
            labels: labels.clone(),
            annotations: BTreeMap::new(),
        };
        create(host, key, &content)
            .await
            .with_context(|| format!("creating foreign object {key}"))?;
    }
    Ok(list_all(host, None)
        .await?
        .into_iter()
        .filter(|(key, _)| keys.contains_key(key))
        .collect())
}
