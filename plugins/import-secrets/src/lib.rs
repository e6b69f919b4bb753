//! `import-secrets`: host secrets mirrored read-only into chosen virtual namespaces.
//!
//! ```yaml
//! plugins:
//!   import-secrets:
//!     config:
//!       imports:
//!         - hostSecret: registry-credentials     # in the host namespace
//!           targets:
//!             - namespace: team-a                # same name
//!             - namespace: team-b
//!               name: pull-secret                # renamed
//! ```
//!
//! Each target is a virtual secret that the plugin keeps equal to its host secret (data, type
//! and labels): created when missing, overwritten when a tenant edits it, recreated when a
//! tenant deletes it, removed when the host secret goes or the target leaves the
//! configuration. Copies carry the label [`IMPORTED_FROM_LABEL`]; a virtual secret without it
//! is the tenant's and is never touched; if it has a target's name, a Warning event on it
//! says why the import did not happen there.
//!
//! It is a fake syncer keyed by the target's virtual key: virtual secret events reconcile
//! their own key (the fake syncer's watch), host secret events reconcile the targets of that
//! secret, and a (re)list of the host secrets reconciles every target and every copy.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::reflector::ObjectRef,
};
use serde::Deserialize;
use vcsync_syncer::{
    Action, Base, ControllerBuilder, ControllerModifier, Error, FakeSyncer, Plugin, PluginConfig,
    RegisterContext, Result, Side, SyncContext,
    cache::Cache,
    error::{api_error, status_code},
    events::EventType,
    informer::{InformerEvent, Scope},
    register_fake_syncer,
};
use vcsync_translators::VirtualKey;

/// Label on every imported virtual secret: the host secret's name (cut to 63 characters).
pub const IMPORTED_FROM_LABEL: &str = "vcsync.dev/imported-from";
/// Prefix of vcsync's reserved keys: host labels under it are not copied.
const RESERVED_PREFIX: &str = "vcsync.dev/";
/// A create raced with the cache, or the target namespace does not exist yet.
const RETRY: Duration = Duration::from_secs(5);

/// The plugin's `config`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImportSecretsConfig {
    /// The host secrets to import and where.
    #[serde(default)]
    pub imports: Vec<Import>,
}

/// One host secret and its targets.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Import {
    /// Name of the secret in the host namespace.
    pub host_secret: String,
    /// Virtual namespaces (and optional new names) of the copies.
    pub targets: Vec<Target>,
}

/// Where a copy goes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Virtual namespace.
    pub namespace: String,
    /// Name of the copy; the host secret's name when absent.
    #[serde(default)]
    pub name: Option<String>,
}

impl ImportSecretsConfig {
    /// Target virtual key -> host secret name; refuses empty names and a key targeted twice.
    pub fn targets(&self) -> std::result::Result<HashMap<VirtualKey, String>, String> {
        let mut targets = HashMap::new();
        for import in &self.imports {
            if import.host_secret.is_empty() {
                return Err("imports: hostSecret must not be empty".into());
            }
            for target in &import.targets {
                let name = target.name.clone().unwrap_or_else(|| import.host_secret.clone());
                if target.namespace.is_empty() || name.is_empty() {
                    return Err(format!(
                        "imports[{}]: a target needs a namespace and a non-empty name",
                        import.host_secret
                    ));
                }
                let key = VirtualKey::namespaced(&target.namespace, name);
                if let Some(other) = targets.insert(key.clone(), import.host_secret.clone()) {
                    return Err(format!(
                        "imports: {key} is the target of both {other} and {}",
                        import.host_secret
                    ));
                }
            }
        }
        Ok(targets)
    }
}

/// The value of [`IMPORTED_FROM_LABEL`] for host secret `name`.
pub fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Whether a virtual secret is an imported copy.
pub fn is_imported(secret: &Secret) -> bool {
    secret.labels().contains_key(IMPORTED_FROM_LABEL)
}

/// The copy of `host` at `key`: the host's data, type and labels (reserved keys dropped) plus
/// the marker.
pub fn desired_copy(host: &Secret, key: &VirtualKey) -> Secret {
    let mut labels: BTreeMap<String, String> = host
        .labels()
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(IMPORTED_FROM_LABEL.into(), label_value(&host.name_any()));
    Secret {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: key.namespace.clone(),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: host.data.clone().filter(|d| !d.is_empty()),
        type_: Some(secret_type(host)),
        ..Secret::default()
    }
}

fn secret_type(secret: &Secret) -> String {
    secret
        .type_
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "Opaque".into())
}

/// Whether `current` already is `desired` (data, type, labels).
pub fn copy_in_sync(current: &Secret, desired: &Secret) -> bool {
    current.data.clone().unwrap_or_default() == desired.data.clone().unwrap_or_default()
        && secret_type(current) == secret_type(desired)
        && current.labels() == desired.labels()
}

/// The plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportSecretsPlugin;

#[async_trait]
impl Plugin for ImportSecretsPlugin {
    fn name(&self) -> &str {
        "import-secrets"
    }

    async fn register(&self, ctx: &RegisterContext, config: &PluginConfig) -> Result<()> {
        let config: ImportSecretsConfig = config.parse()?;
        let targets = config.targets().map_err(|reason| Error::Registration {
            name: "import-secrets".into(),
            reason,
        })?;
        let targets = Arc::new(targets);
        let host = ctx.caches().informers().get::<Secret>(Scope::Custom {
            side: Side::Host,
            namespace: Some(ctx.clients().host_namespace().to_string()),
            labels: String::new(),
        });
        let virtual_store = ctx.caches().virtual_informer::<Secret>().store();
        let by_host: Arc<HashMap<String, Vec<VirtualKey>>> = Arc::new(targets.iter().fold(
            HashMap::new(),
            |mut map: HashMap<String, Vec<VirtualKey>>, (key, host)| {
                map.entry(host.clone()).or_default().push(key.clone());
                map
            },
        ));
        let all_targets: Vec<VirtualKey> = targets.keys().cloned().collect();
        let trigger =
            host.subscribe()
                .flat_map(move |event| {
                    let keys: Vec<VirtualKey> = match event {
                        InformerEvent::Applied(s) | InformerEvent::Deleted(s) => {
                            by_host.get(&s.name_any()).cloned().unwrap_or_default()
                        }
                        // Host secrets deleted during a watch gap left no event; copies whose
                        // target left the configuration are found here too.
                        InformerEvent::Relisted => all_targets
                            .iter()
                            .cloned()
                            .chain(virtual_store.state().iter().filter(|s| is_imported(s)).map(|s| {
                                VirtualKey::namespaced(s.namespace().unwrap_or_default(), s.name_any())
                            }))
                            .collect(),
                    };
                    futures::stream::iter(keys)
                })
                .boxed();
        tracing::info!(targets = targets.len(), "importing host secrets");
        register_fake_syncer(
            ctx,
            SecretImporter {
                targets,
                host: host.store(),
                host_namespace: ctx.clients().host_namespace().to_string(),
                trigger: Mutex::new(Some(trigger)),
            },
        )
        .await
    }
}

/// The fake syncer that keeps the copies.
struct SecretImporter {
    targets: Arc<HashMap<VirtualKey, String>>,
    host: Cache<Secret>,
    host_namespace: String,
    trigger: Mutex<Option<BoxStream<'static, VirtualKey>>>,
}

impl SecretImporter {
    /// The copy `key` should be, if it is a target whose host secret exists. A cached host
    /// secret that does not decode is an error, never an absence (which removes the copy).
    fn desired(&self, key: &VirtualKey) -> Result<Option<Secret>> {
        let Some(host_name) = self.targets.get(key) else {
            return Ok(None);
        };
        let host = self
            .host
            .try_get(&ObjectRef::new(host_name).within(&self.host_namespace))?;
        Ok(host.map(|host| desired_copy(&host, key)))
    }
}

fn api(ctx: &SyncContext<Secret>, key: &VirtualKey) -> Api<Secret> {
    Api::namespaced(
        ctx.virtual_client().clone(),
        key.namespace.as_deref().unwrap_or_default(),
    )
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some("vcsync".into()),
        ..PostParams::default()
    }
}

impl Base for SecretImporter {
    fn name(&self) -> &str {
        "import-secrets"
    }
}

#[async_trait]
impl FakeSyncer for SecretImporter {
    type Resource = Secret;

    async fn fake_sync_up(&self, ctx: &SyncContext<Secret>, key: &VirtualKey) -> Result<Action> {
        let Some(desired) = self.desired(key)? else {
            return Ok(Action::await_change());
        };
        match api(ctx, key).create(&params(), &desired).await {
            Ok(_) => {
                tracing::info!(secret = %key, "imported host secret");
                Ok(Action::await_change())
            }
            // Created meanwhile (the cache will tell whose it is), or no such namespace yet.
            Err(err) if matches!(status_code(&err), Some(404 | 409)) => {
                tracing::debug!(secret = %key, error = %err, "import deferred");
                Ok(Action::requeue(RETRY))
            }
            Err(err) => Err(api_error(Side::Virtual, "create", "Secret", &key.to_string())(
                err,
            )),
        }
    }

    async fn fake_sync(&self, ctx: &SyncContext<Secret>, virt: Arc<Secret>) -> Result<Action> {
        if virt.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let key = VirtualKey::namespaced(virt.namespace().unwrap_or_default(), virt.name_any());
        let desired = self.desired(&key)?;
        if !is_imported(&virt) {
            if desired.is_some() {
                let message = format!(
                    "not importing host secret {}: this secret is not an imported copy; rename or delete it to \
                     receive the import",
                    self.targets[&key]
                );
                ctx.events()
                    .publish(
                        &virt.object_ref(&()),
                        EventType::Warning,
                        "ImportConflict",
                        &message,
                    )
                    .await;
            }
            return Ok(Action::await_change());
        }
        match desired {
            Some(desired) if copy_in_sync(&virt, &desired) => Ok(Action::await_change()),
            // The type of a secret cannot change: such copies are recreated.
            Some(mut desired) if secret_type(&virt) == secret_type(&desired) => {
                desired.metadata.resource_version = virt.metadata.resource_version.clone();
                api(ctx, &key)
                    .replace(&key.name, &params(), &desired)
                    .await
                    .map_err(api_error(Side::Virtual, "update", "Secret", &key.to_string()))?;
                tracing::info!(secret = %key, "reverted imported secret to the host secret");
                Ok(Action::await_change())
            }
            _ => {
                let params = DeleteParams {
                    preconditions: virt.metadata.uid.clone().map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                match api(ctx, &key).delete(&key.name, &params).await {
                    Ok(_) => tracing::info!(secret = %key, "removed imported secret"),
                    Err(err) if matches!(status_code(&err), Some(404 | 409)) => {}
                    Err(err) => {
                        return Err(api_error(Side::Virtual, "delete", "Secret", &key.to_string())(
                            err,
                        ));
                    }
                }
                Ok(Action::await_change())
            }
        }
    }

    fn controller_modifier(&self) -> Option<&dyn ControllerModifier> {
        Some(self)
    }
}

impl ControllerModifier for SecretImporter {
    fn modify_controller(
        &self,
        _ctx: &RegisterContext,
        builder: ControllerBuilder,
    ) -> Result<ControllerBuilder> {
        Ok(match self.trigger.lock().expect("trigger lock").take() {
            Some(trigger) => builder.watches(trigger),
            None => builder,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn host() -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": "registry", "namespace": "host-ns", "uid": "u", "resourceVersion": "3",
                "labels": {"team": "infra", "vcsync.dev/managed-by": "x"}},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "e30="}
        }))
        .unwrap()
    }

    #[test]
    fn a_copy_has_the_data_type_and_labels_plus_the_marker() {
        let key = VirtualKey::namespaced("team-a", "pull");
        let copy = desired_copy(&host(), &key);
        assert_eq!(copy.metadata.name.as_deref(), Some("pull"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(copy.metadata.uid, None);
        let labels = copy.labels();
        assert_eq!(labels["team"], "infra");
        assert_eq!(labels[IMPORTED_FROM_LABEL], "registry");
        assert!(!labels.contains_key("vcsync.dev/managed-by"));
        assert!(is_imported(&copy));
        assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));

        let mut server = copy.clone();
        server.metadata.uid = Some("v".into());
        server.metadata.resource_version = Some("9".into());
        assert!(copy_in_sync(&server, &copy));
        let mut edited = server.clone();
        edited.data = None;
        assert!(!copy_in_sync(&edited, &copy));
        let mut relabelled = server;
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".into(), "y".into());
        assert!(!copy_in_sync(&relabelled, &copy));
    }

    #[test]
    fn an_absent_type_is_opaque() {
        let mut host = host();
        host.type_ = None;
        let copy = desired_copy(&host, &VirtualKey::namespaced("a", "b"));
        let mut server = copy.clone();
        server.type_ = Some("Opaque".into());
        assert!(copy_in_sync(&server, &copy));
    }

    #[test]
    fn targets_default_to_the_host_name_and_must_be_unique() {
        let text = "plugins:\n  import-secrets:\n    config:\n      imports:\n        - hostSecret: s\n          targets:\n            \
                    - {namespace: a}\n            - {namespace: b, name: t}\n";
        let config: ImportSecretsConfig = PluginConfig::new("import-secrets", "f.yaml", text)
            .parse()
            .unwrap();
        let targets = config.targets().unwrap();
        assert_eq!(targets[&VirtualKey::namespaced("a", "s")], "s");
        assert_eq!(targets[&VirtualKey::namespaced("b", "t")], "s");

        let mut twice = config.clone();
        twice.imports.push(Import {
            host_secret: "other".into(),
            targets: vec![Target {
                namespace: "a".into(),
                name: Some("s".into()),
            }],
        });
        assert!(twice.targets().unwrap_err().contains("a/s"));

        let err = PluginConfig::new(
            "import-secrets",
            "f.yaml",
            &text.replace("hostSecret", "hostsecret"),
        )
        .parse::<ImportSecretsConfig>()
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("f.yaml:5:"), "{err}");
    }

    #[test]
    fn long_host_names_make_valid_label_values() {
        assert_eq!(label_value("short"), "short");
        let long = format!("{}.-x", "a".repeat(61));
        assert_eq!(label_value(&long), "a".repeat(61));
    }

    /// A host secret that does not decode once read as gone, and the imported copy was
    /// deleted from the virtual cluster. Now the reconcile fails (to be retried) and sends
    /// nothing.
    #[tokio::test]
    async fn a_host_secret_that_does_not_decode_fails_the_reconcile_and_deletes_no_copy() {
        use vcsync_syncer::cache::{Storage, filled};

        let (client, connections) = vcsync_syncer::testing::silent_api_server().await;
        let register = RegisterContext::new(
            client.clone(),
            client,
            vcsync_syncer::Config::new("demo", "host-ns"),
        )
        .unwrap();
        let key = VirtualKey::namespaced("team-a", "pull");
        let host_secrets = filled(Storage::Encoded, [host()]);
        host_secrets.corrupt(&ObjectRef::new("registry").within("host-ns"));
        let importer = SecretImporter {
            targets: Arc::new([(key.clone(), "registry".to_string())].into()),
            host: host_secrets,
            host_namespace: "host-ns".into(),
            trigger: Mutex::new(None),
        };
        let mut copy = desired_copy(&host(), &key);
        copy.metadata.uid = Some("0f2d4c1e-3333-4a2b-9c3d-5e6f7a8b9c0d".into());
        let ctx = SyncContext::new(
            &register,
            filled(Storage::Encoded, [copy.clone()]),
            vcsync_syncer::cache::empty(),
            "import-secrets",
        );

        // A request would hang on the listener, which never answers.
        let reconcile = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            importer.fake_sync(&ctx, Arc::new(copy)),
        );
        let err = reconcile.await.expect("no request made").unwrap_err();
        assert!(matches!(err, vcsync_syncer::Error::CacheDecode { .. }), "{err}");
        assert!(matches!(
            importer.desired(&key),
            Err(vcsync_syncer::Error::CacheDecode { .. })
        ));
        tokio::task::yield_now().await;
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing was deleted"
        );
    }
}
