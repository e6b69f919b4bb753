//! Objects a pod depends on.
//!
//! A pod can only start on the host once the ConfigMaps, Secrets, ServiceAccount and claims it
//! names exist there too, and a change to one of them must reach the host. The syncer keeps a
//! [`crate::ReferenceIndex`] of these references to know what to sync and when to stop syncing it.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, Pod, Volume};
use serde::{Deserialize, Serialize};

use crate::keys::VirtualKey;

/// Kinds of objects a pod can reference by name in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RefKind {
    /// A ConfigMap (volumes, projected volumes, env, envFrom).
    ConfigMap,
    /// A Secret (volumes, projected volumes, env, envFrom, imagePullSecrets, volume driver secrets).
    Secret,
    /// The pod's ServiceAccount.
    ServiceAccount,
    /// A PersistentVolumeClaim (claim volumes and generic ephemeral volumes).
    PersistentVolumeClaim,
}

/// One object referenced by a pod: its kind and virtual key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RefTarget {
    /// What kind of object is referenced.
    pub kind: RefKind,
    /// The referenced object, always in the pod's namespace.
    pub key: VirtualKey,
}

impl RefTarget {
    /// Target of `kind` named `name` in namespace `ns`.
    pub fn new(kind: RefKind, ns: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            key: VirtualKey::namespaced(ns, name),
        }
    }
}

/// Name of the ServiceAccount a pod without one runs as; admission requires it to exist.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Every object `pod` references, in the pod's namespace (`""` if the pod has none).
///
/// Covered: volumes (configMap, secret, projected configMap/secret sources, persistentVolumeClaim,
/// the claim `<pod>-<volume>` of a generic ephemeral volume, and the secrets of csi, cephfs, rbd,
/// iscsi, flexVolume, scaleIO, storageos and azureFile volumes), `env[].valueFrom` config map and
/// secret keys and `envFrom[]` of containers, init containers and ephemeral containers,
/// imagePullSecrets, and the ServiceAccount (`default` when unset, which is still a reference).
/// Optional references are included: the object is still wanted on the host when it exists.
/// Empty names are skipped (invalid, the API server rejects them).
pub fn pod_references(pod: &Pod) -> BTreeSet<RefTarget> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut refs = References {
        ns,
        refs: BTreeSet::new(),
    };
    let Some(spec) = &pod.spec else {
        return refs.refs;
    };

    let service_account = spec
        .service_account_name
        .as_deref()
        .or(spec.service_account.as_deref())
        .filter(|sa| !sa.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
    refs.add(RefKind::ServiceAccount, service_account);

    for secret in spec.image_pull_secrets.iter().flatten() {
        refs.add(RefKind::Secret, &secret.name);
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    for volume in spec.volumes.iter().flatten() {
        refs.volume(pod_name, volume);
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        refs.container(container);
    }
    for container in spec.ephemeral_containers.iter().flatten() {
        refs.env(
            container.env.iter().flatten(),
            container.env_from.iter().flatten(),
        );
    }
    refs.refs
}

/// Accumulator for [`pod_references`].
struct References<'a> {
    ns: &'a str,
    refs: BTreeSet<RefTarget>,
}

impl References<'_> {
    fn add(&mut self, kind: RefKind, name: &str) {
        if !name.is_empty() {
            self.refs.insert(RefTarget::new(kind, self.ns, name));
        }
    }

    fn volume(&mut self, pod_name: &str, volume: &Volume) {
        if let Some(cm) = &volume.config_map {
            self.add(RefKind::ConfigMap, &cm.name);
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()) {
            self.add(RefKind::Secret, name);
        }
        for source in volume.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                self.add(RefKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &source.secret {
                self.add(RefKind::Secret, &secret.name);
            }
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            self.add(RefKind::PersistentVolumeClaim, &claim.claim_name);
        }
        // The ephemeral volume controller names the claim `<pod>-<volume>`; the pod cannot start on
        // the host before that claim is there.
        if volume
            .ephemeral
            .as_ref()
            .is_some_and(|e| e.volume_claim_template.is_some())
            && !pod_name.is_empty()
        {
            self.add(
                RefKind::PersistentVolumeClaim,
                &format!("{pod_name}-{}", volume.name),
            );
        }
        let driver_secrets = [
            volume
                .csi
                .as_ref()
                .and_then(|v| v.node_publish_secret_ref.as_ref()),
            volume.cephfs.as_ref().and_then(|v| v.secret_ref.as_ref()),
            volume.rbd.as_ref().and_then(|v| v.secret_ref.as_ref()),
            volume.iscsi.as_ref().and_then(|v| v.secret_ref.as_ref()),
            volume.flex_volume.as_ref().and_then(|v| v.secret_ref.as_ref()),
            volume.scale_io.as_ref().map(|v| &v.secret_ref),
            volume.storageos.as_ref().and_then(|v| v.secret_ref.as_ref()),
        ];
        for secret in driver_secrets.into_iter().flatten() {
            self.add(RefKind::Secret, &secret.name);
        }
        if let Some(azure) = &volume.azure_file {
            self.add(RefKind::Secret, &azure.secret_name);
        }
    }

    fn container(&mut self, container: &Container) {
        self.env(
            container.env.iter().flatten(),
            container.env_from.iter().flatten(),
        );
    }

    fn env<'e>(
        &mut self,
        env: impl Iterator<Item = &'e EnvVar>,
        env_from: impl Iterator<Item = &'e EnvFromSource>,
    ) {
        for source in env.filter_map(|e| e.value_from.as_ref()) {
            if let Some(cm) = &source.config_map_key_ref {
                self.add(RefKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &source.secret_key_ref {
                self.add(RefKind::Secret, &secret.name);
            }
        }
        for source in env_from {
            if let Some(cm) = &source.config_map_ref {
                self.add(RefKind::ConfigMap, &cm.name);
            }
            if let Some(secret) = &source.secret_ref {
                self.add(RefKind::Secret, &secret.name);
            }
        }
    }
}
