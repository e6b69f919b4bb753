//! Talking to the clusters: listing, the churn's writes, the foreign objects.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::Context;
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Namespace, Secret},
    serde_json::{self, Value, json},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use vcsync_syncer::Config;
use vcsync_translators::MANAGED_BY_LABEL;

use super::{
    FOREIGN_COLLISIONS, FOREIGN_OTHERS, HOST_NAMESPACE,
    check::{Observed, Snapshot, host_key_of},
    plan::{Content, Key, Kind, Op, Rng},
};

pub(super) fn observed(meta: &ObjectMeta, data: BTreeMap<String, String>) -> Observed {
    Observed {
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        data,
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
    Ok(all)
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

pub(super) fn meta(key: &Key, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

pub(super) async fn create(client: &Client, key: &Key, content: &Content) -> kube::Result<()> {
    let pp = PostParams::default();
    match key.kind {
        Kind::ConfigMap => {
            let cm = ConfigMap {
                metadata: meta(key, &content.labels),
                data: Some(content.data.clone()),
                ..Default::default()
            };
            Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                .create(&pp, &cm)
                .await?;
        }
        Kind::Secret => {
            let secret = Secret {
                metadata: meta(key, &content.labels),
                data: Some(
                    content
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                        .collect(),
                ),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            Api::<Secret>::namespaced(client.clone(), &key.namespace)
                .create(&pp, &secret)
                .await?;
        }
    }
    Ok(())
}

/// A JSON merge patch turning `before` into `after` (`encode` renders a data value).
pub(super) fn merge_patch(before: &Content, after: &Content, encode: impl Fn(&str) -> Value) -> Value {
    fn diff(
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
        encode: &dyn Fn(&str) -> Value,
    ) -> Value {
        let mut patch = serde_json::Map::new();
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            patch.insert(k.clone(), Value::Null);
        }
        for (k, v) in after {
            patch.insert(k.clone(), encode(v));
        }
        Value::Object(patch)
    }
    json!({
        "metadata": {"labels": diff(&before.labels, &after.labels, &|v| Value::String(v.into()))},
        "data": diff(&before.data, &after.data, &encode),
    })
}

/// Applies `op` to the virtual cluster (an empty restart is the soak's to carry out: nothing
/// here).
pub(super) async fn apply(client: &Client, op: &Op) -> kube::Result<()> {
    match op {
        Op::EmptyVirtualRestart => Ok(()),
        Op::Create(key, content) => create(client, key, content).await,
        Op::Update(key, before, after) => {
            let pp = PatchParams::default();
            match key.kind {
                Kind::ConfigMap => {
                    let patch = merge_patch(before, after, |v| Value::String(v.into()));
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .patch(&key.name, &pp, &Patch::Merge(patch))
                        .await?;
                }
                Kind::Secret => {
                    let patch = merge_patch(before, after, |v| {
                        serde_json::to_value(ByteString(v.as_bytes().to_vec())).unwrap_or(Value::Null)
                    });
                    Api::<Secret>::namespaced(client.clone(), &key.namespace)
                        .patch(&key.name, &pp, &Patch::Merge(patch))
                        .await?;
                }
            }
            Ok(())
        }
        Op::Delete(key) => {
            let dp = DeleteParams::default();
            match key.kind {
                Kind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .delete(&key.name, &dp)
                        .await?;
                }
                Kind::Secret => {
                    Api::<Secret>::namespaced(client.clone(), &key.namespace)
                        .delete(&key.name, &dp)
                        .await?;
                }
            }
            Ok(())
        }
    }
}

/// Applies `op`, retrying transient failures a few times.
pub(super) async fn apply_with_retries(client: &Client, op: &Op) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match apply(client, op).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(%err, "churn operation failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("churn operation {op:?}")),
        }
    }
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
    let created: Vec<&Key> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create(key, _) => Some(key),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_patch_removes_and_sets_keys() {
        let before = Content {
            data: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            labels: BTreeMap::from([("app".into(), "x".into())]),
        };
        let after = Content {
            data: BTreeMap::from([("b".into(), "3".into())]),
            labels: BTreeMap::from([("tier".into(), "t".into())]),
        };
        let patch = merge_patch(&before, &after, |v| Value::String(v.into()));
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"app": null, "tier": "t"}}, "data": {"a": null, "b": "3"}})
        );
    }
}
