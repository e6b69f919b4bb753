//! The churn's writes: virtual objects built from a key and its content, and each operation
//! applied to the virtual cluster.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use k8s_openapi::{
    ByteString,
    api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, Pod, PodSpec, Secret,
        SecretKeySelector, Volume, VolumeMount,
    },
    serde_json::{self, Value, json},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use super::plan::{Content, Key, Kind, Op, POD_CONFIG_MAP, POD_SECRET};

/// The image of the churn's pods (never pulled: fake kubelets run anything).
const POD_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// The Secret key a pod takes its env var from (every Secret of the churn has it).
const POD_SECRET_KEY: &str = "k0";
/// The pods' `terminationGracePeriodSeconds`.
const POD_GRACE_SECONDS: i64 = 2;
/// The pod's volume of its ConfigMap.
pub(super) const POD_VOLUME: &str = "config";
/// The pod's env var from its Secret.
pub(super) const POD_ENV: &str = "SOAK_SECRET";

fn meta(key: &Key, content: &Content) -> ObjectMeta {
    ObjectMeta {
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        labels: Some(content.labels.clone()),
        annotations: Some(content.annotations.clone()).filter(|a| !a.is_empty()),
        ..Default::default()
    }
}

fn secret_bytes(data: &BTreeMap<String, String>) -> BTreeMap<String, ByteString> {
    data.iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect()
}

/// Pod `key`: one container mounting the ConfigMap its content names and taking an env var
/// from the Secret it names.
fn pod(key: &Key, content: &Content) -> Pod {
    let named = |what: &str| content.data.get(what).cloned().unwrap_or_default();
    Pod {
        metadata: meta(key, content),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(POD_IMAGE.into()),
                env: Some(vec![EnvVar {
                    name: POD_ENV.into(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: named(POD_SECRET),
                            key: POD_SECRET_KEY.into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                volume_mounts: Some(vec![VolumeMount {
                    name: POD_VOLUME.into(),
                    mount_path: "/etc/soak".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            // Short, so that a host pod the syncer deletes without a grace period of the
            // tenant's (its virtual pod already gone) does not hold the soak for the default 30 s.
            termination_grace_period_seconds: Some(POD_GRACE_SECONDS),
            volumes: Some(vec![Volume {
                name: POD_VOLUME.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: named(POD_CONFIG_MAP),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates `key` with `content` in the cluster of `client`.
pub(super) async fn create(client: &Client, key: &Key, content: &Content) -> kube::Result<()> {
    let pp = PostParams::default();
    match key.kind {
        Kind::ConfigMap => {
            let cm = ConfigMap {
                metadata: meta(key, content),
                data: Some(content.data.clone()),
                ..Default::default()
            };
            api::<ConfigMap>(client, key).create(&pp, &cm).await?;
        }
        Kind::Secret => {
            let secret = Secret {
                metadata: meta(key, content),
                data: Some(secret_bytes(&content.data)),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            api::<Secret>(client, key).create(&pp, &secret).await?;
        }
        Kind::Pod => {
            let pods = api::<Pod>(client, key);
            match pods.create(&pp, &pod(key, content)).await {
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    force_away_terminating(&pods, &key.name).await?;
                    pods.create(&pp, &pod(key, content)).await?;
                }
                result => {
                    result?;
                }
            }
        }
    }
    Ok(())
}

/// Deletes pod `name` at once if it is terminating: a namesake deleted gracefully a moment ago,
/// or while no syncer ran to finish its deletion. A user recreating the pod forces it away
/// (`kubectl delete --force`), and so does the churn.
async fn force_away_terminating(pods: &Api<Pod>, name: &str) -> kube::Result<()> {
    let Some(old) = pods.get_opt(name).await? else {
        return Ok(());
    };
    if old.metadata.deletion_timestamp.is_none() {
        return Ok(());
    }
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: old.metadata.uid.map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &now).await {
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        result => result.map(|_| ()),
    }
}

fn api<K>(client: &Client, key: &Key) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::namespaced(client.clone(), &key.namespace)
}

/// A JSON merge patch turning `before` into `after`: labels, annotations, and (`encode`
/// rendering a value) data; None for a pod, whose data are its references.
pub(super) fn merge_patch(
    before: &Content,
    after: &Content,
    encode: Option<&dyn Fn(&str) -> Value>,
) -> Value {
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
    let string = |v: &str| Value::String(v.into());
    let mut patch = json!({
        "metadata": {
            "labels": diff(&before.labels, &after.labels, &string),
            "annotations": diff(&before.annotations, &after.annotations, &string),
        },
    });
    if let Some(encode) = encode {
        patch["data"] = diff(&before.data, &after.data, encode);
    }
    patch
}

/// Applies `op` to the virtual cluster (an empty restart is the soak's to carry out: nothing
/// here).
pub(super) async fn apply(client: &Client, op: &Op) -> kube::Result<()> {
    match op {
        Op::EmptyVirtualRestart => Ok(()),
        Op::Create(key, content) => create(client, key, content).await,
        Op::Update(key, before, after) => {
            let pp = PatchParams::default();
            let string = |v: &str| Value::String(v.into());
            let bytes =
                |v: &str| serde_json::to_value(ByteString(v.as_bytes().to_vec())).unwrap_or(Value::Null);
            match key.kind {
                Kind::ConfigMap => {
                    let patch = Patch::Merge(merge_patch(before, after, Some(&string)));
                    api::<ConfigMap>(client, key)
                        .patch(&key.name, &pp, &patch)
                        .await?;
                }
                Kind::Secret => {
                    let patch = Patch::Merge(merge_patch(before, after, Some(&bytes)));
                    api::<Secret>(client, key).patch(&key.name, &pp, &patch).await?;
                }
                Kind::Pod => {
                    let patch = Patch::Merge(merge_patch(before, after, None));
                    api::<Pod>(client, key).patch(&key.name, &pp, &patch).await?;
                }
            }
            Ok(())
        }
        Op::Delete(key, grace) => {
            let dp = DeleteParams {
                grace_period_seconds: *grace,
                ..DeleteParams::default()
            };
            match key.kind {
                Kind::ConfigMap => {
                    api::<ConfigMap>(client, key).delete(&key.name, &dp).await?;
                }
                Kind::Secret => {
                    api::<Secret>(client, key).delete(&key.name, &dp).await?;
                }
                Kind::Pod => {
                    api::<Pod>(client, key).delete(&key.name, &dp).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_patch_removes_and_sets_keys() {
        let before = Content {
            data: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            labels: BTreeMap::from([("app".into(), "x".into())]),
            annotations: BTreeMap::from([("soak-note-0".into(), "n".into())]),
        };
        let after = Content {
            data: BTreeMap::from([("b".into(), "3".into())]),
            labels: BTreeMap::from([("tier".into(), "t".into())]),
            annotations: BTreeMap::new(),
        };
        let string = |v: &str| Value::String(v.into());
        let patch = merge_patch(&before, &after, Some(&string));
        assert_eq!(
            patch,
            json!({
                "metadata": {
                    "labels": {"app": null, "tier": "t"},
                    "annotations": {"soak-note-0": null},
                },
                "data": {"a": null, "b": "3"},
            })
        );
        let pod_patch = merge_patch(&before, &after, None);
        assert!(pod_patch.get("data").is_none(), "{pod_patch}");
    }

    #[test]
    fn a_pod_mounts_and_takes_env_from_the_objects_its_content_names() {
        let key = Key {
            kind: Kind::Pod,
            namespace: "tenant-0".into(),
            name: "pod-1".into(),
        };
        let content = Content {
            data: BTreeMap::from([
                (POD_CONFIG_MAP.into(), "pod-1-config".into()),
                (POD_SECRET.into(), "pod-1-env".into()),
            ]),
            ..Default::default()
        };
        let pod = pod(&key, &content);
        let spec = pod.spec.unwrap();
        let volume = spec.volumes.unwrap()[0].config_map.clone().unwrap();
        assert_eq!(volume.name, "pod-1-config");
        let env = spec.containers[0].env.clone().unwrap()[0].clone();
        assert_eq!(env.value_from.unwrap().secret_key_ref.unwrap().name, "pod-1-env");
    }
}
