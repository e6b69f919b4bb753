//! The other kinds that go down: ServiceAccounts, PersistentVolumeClaims, Ingresses,
//! NetworkPolicies, PodDisruptionBudgets and PriorityClasses, each behind a config switch.
//!
//! Choices worth knowing:
//! - Ingress TLS secrets are translated but, like every secret, only synced while a pod
//!   references them unless `sync.secrets.all` is set.
//! - NetworkPolicy peers: pod selectors are translated; a namespace selector that selects all
//!   namespaces, or one namespace by `kubernetes.io/metadata.name`, becomes the matching
//!   virtual-namespace label; other namespace selectors select only this virtual cluster's
//!   pods (never another tenant's). The policy's own pod selector always includes the
//!   ownership label, so it never applies to foreign pods.
//! - PriorityClasses never become the host's global default, and their value is capped below
//!   the range Kubernetes reserves for system classes, so a tenant cannot preempt the host's
//!   system pods.

use k8s_openapi::{
    api::{
        core::v1::{LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec, ServiceAccount},
        networking::v1::{
            Ingress, IngressBackend, IngressSpec, NetworkPolicy, NetworkPolicyPeer, NetworkPolicySpec,
        },
        policy::v1::PodDisruptionBudget,
        scheduling::v1::PriorityClass,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use vcsync_translators::{
    NAMESPACE_LABEL, NameTranslator, Ownership, VirtualKey, host_label_selector, safe_label_value,
};

use super::down::DownKind;

/// The highest priority a tenant's class gets on the host; Kubernetes reserves values above
/// one billion for system classes.
pub const MAX_TENANT_PRIORITY: i32 = 1_000_000_000;

/// Annotations of a claim that the host's volume binder, provisioners, resizer and scheduler
/// write (`pv.kubernetes.io/bind-completed`, `volume.kubernetes.io/selected-node`, ...): on
/// the host copy they are the host's, never the tenant's.
const HOST_CLAIM_ANNOTATION_PREFIXES: [&str; 3] = [
    "pv.kubernetes.io/",
    "volume.kubernetes.io/",
    "volume.beta.kubernetes.io/storage-provisioner",
];

/// The label every namespace carries with its own name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

impl DownKind for ServiceAccount {
    const NAME: &'static str = "serviceaccounts";

    /// Host pods never mount the host copy's token (the pod syncer mounts a virtual token).
    fn with_payload(&self, metadata: ObjectMeta, translator: &dyn NameTranslator) -> Self {
        let ns = namespace_of(&self.metadata).to_string();
        ServiceAccount {
            image_pull_secrets: self.image_pull_secrets.as_ref().map(|secrets| {
                secrets
                    .iter()
                    .map(|s| LocalObjectReference {
                        name: host_ref(translator, &ns, &s.name),
                    })
                    .collect()
            }),
            automount_service_account_token: Some(false),
            secrets: None,
            metadata,
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.image_pull_secrets == other.image_pull_secrets
            && self.automount_service_account_token == other.automount_service_account_token
    }
}

impl DownKind for PersistentVolumeClaim {
    const NAME: &'static str = "persistentvolumeclaims";

    /// The claim as the tenant wrote it; a statically named volume is the host's business.
    fn with_payload(&self, metadata: ObjectMeta, translator: &dyn NameTranslator) -> Self {
        let ownership = translator.ownership();
        let ns = namespace_of(&self.metadata).to_string();
        let mut spec = self.spec.clone().unwrap_or_default();
        spec.volume_name = None;
        spec.selector = spec.selector.map(|s| host_label_selector(ownership, &ns, &s));
        PersistentVolumeClaim {
            metadata,
            spec: Some(spec),
            status: None,
        }
    }

    /// A claim's spec is immutable after creation but for its requests and volume attributes
    /// class; the host fills in the rest (its volume once bound, its default class), and its
    /// volume binder, provisioner and scheduler annotate it. An update keeps all of that:
    /// Kubernetes refuses to unset a volume or class, and without the binder's annotations the
    /// claim would be bound again.
    fn keep_host_owned(&mut self, host: &Self) {
        if let Some(host_spec) = &host.spec {
            let desired = self.spec.take().unwrap_or_default();
            let mut spec = host_spec.clone();
            let mut resources = spec.resources.take().unwrap_or_default();
            resources.requests = desired.resources.and_then(|r| r.requests);
            spec.resources = Some(resources);
            spec.volume_attributes_class_name = desired.volume_attributes_class_name;
            self.spec = Some(spec);
        }
        let host_owned = |key: &str| {
            HOST_CLAIM_ANNOTATION_PREFIXES
                .iter()
                .any(|prefix| key.starts_with(prefix))
        };
        let mut annotations = self.metadata.annotations.take().unwrap_or_default();
        annotations.retain(|key, _| !host_owned(key));
        annotations.extend(
            host.metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(key, _)| host_owned(key))
                .map(|(key, value)| (key.clone(), value.clone())),
        );
        self.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    }

    /// Only what the tenant can change after creation: the requested size.
    fn payload_eq(&self, other: &Self) -> bool {
        let requests = |pvc: &Self| {
            pvc.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref()?.requests.clone())
        };
        requests(self) == requests(other)
    }

    fn status_up(&self, host: &Self) -> Option<Self> {
        (self.status != host.status).then(|| PersistentVolumeClaim {
            status: host.status.clone(),
            ..self.clone()
        })
    }

    /// The claim's class, size, access and volume modes; its selector and data source name
    /// host objects and are dropped, the volume it is bound to stays the host's business.
    fn restored(&self, metadata: ObjectMeta) -> Option<Self> {
        let spec = self.spec.as_ref()?;
        Some(PersistentVolumeClaim {
            metadata,
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: spec.access_modes.clone(),
                resources: spec.resources.clone(),
                storage_class_name: spec.storage_class_name.clone(),
                volume_mode: spec.volume_mode.clone(),
                volume_attributes_class_name: spec.volume_attributes_class_name.clone(),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: None,
        })
    }
}

/// Host name of the object `name` in virtual namespace `ns` that a virtual object references.
fn host_ref(translator: &dyn NameTranslator, ns: &str, name: &str) -> String {
    translator.host_key(&VirtualKey::namespaced(ns, name)).name
}

fn host_backend(translator: &dyn NameTranslator, backend: &IngressBackend, ns: &str) -> IngressBackend {
    let mut backend = backend.clone();
    if let Some(service) = backend.service.as_mut() {
        service.name = host_ref(translator, ns, &service.name);
    }
    backend
}

impl DownKind for Ingress {
    const NAME: &'static str = "ingresses";
    const NAMES_SECRETS: bool = true;

    fn named_secrets(&self) -> Vec<String> {
        let tls = self.spec.iter().flat_map(|s| s.tls.iter().flatten());
        tls.filter_map(|t| t.secret_name.clone()).collect()
    }

    /// The TLS entry stays (its hosts), without the Secret: the host's ingress controller then
    /// serves its default certificate for them, never someone else's.
    fn forget_secret(&mut self, name: &str) {
        let tls = self.spec.iter_mut().flat_map(|s| s.tls.iter_mut().flatten());
        for entry in tls.filter(|t| t.secret_name.as_deref() == Some(name)) {
            entry.secret_name = None;
        }
    }

    fn with_payload(&self, metadata: ObjectMeta, translator: &dyn NameTranslator) -> Self {
        let ns = namespace_of(&self.metadata).to_string();
        let mut spec: IngressSpec = self.spec.clone().unwrap_or_default();
        spec.default_backend = spec
            .default_backend
            .as_ref()
            .map(|b| host_backend(translator, b, &ns));
        for path in spec
            .rules
            .iter_mut()
            .flatten()
            .filter_map(|r| r.http.as_mut())
            .flat_map(|h| h.paths.iter_mut())
        {
            path.backend = host_backend(translator, &path.backend, &ns);
        }
        for tls in spec.tls.iter_mut().flatten() {
            tls.secret_name = tls
                .secret_name
                .as_deref()
                .map(|name| host_ref(translator, &ns, name));
        }
        Ingress {
            metadata,
            spec: Some(spec),
            status: None,
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn status_up(&self, host: &Self) -> Option<Self> {
        (self.status != host.status).then(|| Ingress {
            status: host.status.clone(),
            ..self.clone()
        })
    }
}

/// Which virtual namespaces a network policy peer selects.
enum PeerNamespaces {
    One(String),
    All,
    /// A selector on namespace labels vcsync does not mirror: selects nothing, rather than too much.
    Untranslatable,
}

/// A peer of a virtual network policy, for the host: always within this virtual cluster's pods.
fn host_peer(peer: &NetworkPolicyPeer, ownership: &Ownership, ns: &str) -> NetworkPolicyPeer {
    if peer.ip_block.is_some() {
        return peer.clone();
    }
    let scope = match &peer.namespace_selector {
        None => PeerNamespaces::One(ns.to_string()),
        Some(selector) if selector.match_expressions.is_some() => PeerNamespaces::Untranslatable,
        Some(selector) => match selector.match_labels.as_ref() {
            None => PeerNamespaces::All,
            Some(labels) if labels.is_empty() => PeerNamespaces::All,
            Some(labels) if labels.len() == 1 && labels.contains_key(NAMESPACE_NAME_LABEL) => {
                PeerNamespaces::One(labels[NAMESPACE_NAME_LABEL].clone())
            }
            Some(_) => PeerNamespaces::Untranslatable,
        },
    };
    let mut selector = host_label_selector(ownership, ns, &peer.pod_selector.clone().unwrap_or_default());
    let labels = selector.match_labels.get_or_insert_with(Default::default);
    match scope {
        PeerNamespaces::One(target) => labels.insert(NAMESPACE_LABEL.into(), safe_label_value(&target)),
        PeerNamespaces::All => labels.remove(NAMESPACE_LABEL),
        // Host pods always carry a non-empty namespace label.
        PeerNamespaces::Untranslatable => labels.insert(NAMESPACE_LABEL.into(), String::new()),
    };
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        namespace_selector: None,
        ip_block: None,
    }
}

impl DownKind for NetworkPolicy {
    const NAME: &'static str = "networkpolicies";

    fn with_payload(&self, metadata: ObjectMeta, translator: &dyn NameTranslator) -> Self {
        let ownership = translator.ownership();
        let ns = namespace_of(&self.metadata).to_string();
        let mut spec: NetworkPolicySpec = self.spec.clone().unwrap_or_default();
        spec.pod_selector = Some(host_label_selector(
            ownership,
            &ns,
            &spec.pod_selector.unwrap_or_default(),
        ));
        for rule in spec.ingress.iter_mut().flatten() {
            rule.from = rule
                .from
                .as_ref()
                .map(|peers| peers.iter().map(|p| host_peer(p, ownership, &ns)).collect());
        }
        for rule in spec.egress.iter_mut().flatten() {
            rule.to = rule
                .to
                .as_ref()
                .map(|peers| peers.iter().map(|p| host_peer(p, ownership, &ns)).collect());
        }
        NetworkPolicy {
            metadata,
            spec: Some(spec),
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl DownKind for PodDisruptionBudget {
    const NAME: &'static str = "poddisruptionbudgets";

    fn with_payload(&self, metadata: ObjectMeta, translator: &dyn NameTranslator) -> Self {
        let ownership = translator.ownership();
        let ns = namespace_of(&self.metadata).to_string();
        let mut spec = self.spec.clone().unwrap_or_default();
        spec.selector = Some(host_label_selector(
            ownership,
            &ns,
            &spec.selector.unwrap_or_default(),
        ));
        PodDisruptionBudget {
            metadata,
            spec: Some(spec),
            status: None,
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn status_up(&self, host: &Self) -> Option<Self> {
        let host_status = host.status.clone()?;
        let mut status = host_status;
        // Generations are per object; the virtual one keeps its own.
        status.observed_generation = self.metadata.generation;
        (self.status.as_ref() != Some(&status)).then(|| PodDisruptionBudget {
            status: Some(status),
            ..self.clone()
        })
    }
}

/// Virtual namespaces in the per-namespace mapping: each gets its host namespace (registered with
/// [`HostNamespaceTranslator`](vcsync_translators::HostNamespaceTranslator)). Only the metadata
/// (ownership label, object annotations) is vcsync's; spec and status belong to the host.
impl DownKind for k8s_openapi::api::core::v1::Namespace {
    const NAME: &'static str = "namespaces";

    /// The API server labels every namespace `kubernetes.io/metadata.name=<name>`; the desired
    /// object says so too, or it would never be in sync.
    fn with_payload(&self, mut metadata: ObjectMeta, _translator: &dyn NameTranslator) -> Self {
        let name = metadata.name.clone().unwrap_or_default();
        metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name);
        k8s_openapi::api::core::v1::Namespace {
            metadata,
            spec: None,
            status: None,
        }
    }

    fn payload_eq(&self, _other: &Self) -> bool {
        true
    }
}

impl DownKind for PriorityClass {
    const NAME: &'static str = "priorityclasses";

    fn with_payload(&self, metadata: ObjectMeta, _translator: &dyn NameTranslator) -> Self {
        PriorityClass {
            metadata,
            value: self.value.map(|value| value.min(MAX_TENANT_PRIORITY)),
            global_default: Some(false),
            description: self.description.clone(),
            preemption_policy: self.preemption_policy.clone(),
        }
    }

    fn payload_eq(&self, other: &Self) -> bool {
        self.value == other.value
            && self.global_default.unwrap_or(false) == other.global_default.unwrap_or(false)
            && self.description == other.description
            && self
                .preemption_policy
                .as_deref()
                .unwrap_or("PreemptLowerPriority")
                == other
                    .preemption_policy
                    .as_deref()
                    .unwrap_or("PreemptLowerPriority")
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;
    use vcsync_translators::{MANAGED_BY_LABEL, host_name};

    use super::*;

    fn ownership() -> Ownership {
        Ownership::new("t").unwrap()
    }

    fn translator() -> vcsync_translators::NamespacedTranslator {
        vcsync_translators::NamespacedTranslator::new(ownership(), "host")
    }

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("host-name".into()),
            ..Default::default()
        }
    }

    #[test]
    fn ingress_backends_and_tls_secrets_point_at_host_names() {
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                     "tls": [{"hosts": ["a.example"], "secretName": "cert"}],
                     "rules": [{"host": "a.example", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}
        }))
        .unwrap();
        let host = ingress.with_payload(meta(), &translator());
        let spec = host.spec.unwrap();
        assert_eq!(
            spec.default_backend.unwrap().service.unwrap().name,
            host_name("shop", "fallback")
        );
        assert_eq!(
            spec.tls.unwrap()[0].secret_name.as_deref(),
            Some(host_name("shop", "cert").as_str())
        );
        let rules = spec.rules.unwrap();
        let path = &rules[0].http.as_ref().unwrap().paths[0];
        assert_eq!(
            path.backend.service.as_ref().unwrap().name,
            host_name("shop", "web")
        );
    }

    #[rstest]
    #[case::same_namespace(json!({"podSelector": {"matchLabels": {"role": "db"}}}), Some("shop"))]
    #[case::named_namespace(json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}), Some("ops"))]
    #[case::all_namespaces(json!({"namespaceSelector": {}}), None)]
    #[case::untranslatable(json!({"namespaceSelector": {"matchLabels": {"team": "x"}}}), Some(""))]
    fn network_policy_peers_stay_inside_this_virtual_cluster(
        #[case] peer: serde_json::Value,
        #[case] namespace_label: Option<&str>,
    ) {
        let peer: NetworkPolicyPeer = serde_json::from_value(peer).unwrap();
        let host = host_peer(&peer, &ownership(), "shop");
        assert_eq!(host.namespace_selector, None);
        let labels = host.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "t");
        assert_eq!(
            labels.get(NAMESPACE_LABEL).map(String::as_str),
            namespace_label.map(|ns| if ns.is_empty() { "" } else { ns })
        );
    }

    #[test]
    fn network_policy_applies_only_to_this_clusters_pods() {
        let policy: NetworkPolicy = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": {"podSelector": {}}}),
        )
        .unwrap();
        let host = policy.with_payload(meta(), &translator());
        let labels = host.spec.unwrap().pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(
            (
                labels[MANAGED_BY_LABEL].as_str(),
                labels[NAMESPACE_LABEL].as_str()
            ),
            ("t", "shop")
        );
    }

    #[test]
    fn priority_classes_are_capped_and_never_global_default() {
        let class = PriorityClass {
            value: Some(2_000_000_000),
            global_default: Some(true),
            ..Default::default()
        };
        let host = class.with_payload(meta(), &translator());
        assert_eq!(host.value, Some(MAX_TENANT_PRIORITY));
        assert_eq!(host.global_default, Some(false));
    }

    #[test]
    fn a_claim_bound_on_the_host_keeps_its_volume_class_and_binder_annotations() {
        let virt: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "n", "annotations": {"team": "a",
                "volume.kubernetes.io/storage-provisioner": "virtual.example"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}
        }))
        .unwrap();
        let host: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "host-name", "annotations": {"team": "a",
                "pv.kubernetes.io/bind-completed": "yes", "volume.beta.kubernetes.io/storage-provisioner": "csi.example"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": "pvc-1", "storageClassName": "standard", "volumeMode": "Filesystem"}
        }))
        .unwrap();
        let mut desired = virt.with_payload(virt.metadata.clone(), &translator());
        desired.keep_host_owned(&host);
        let spec = desired.spec.as_ref().unwrap();
        assert_eq!(spec.volume_name.as_deref(), Some("pvc-1"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "2Gi"
        );
        assert_eq!(
            desired.metadata.annotations.unwrap(),
            [
                ("team", "a"),
                ("pv.kubernetes.io/bind-completed", "yes"),
                ("volume.beta.kubernetes.io/storage-provisioner", "csi.example"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into()
        );
    }

    #[test]
    fn pvc_status_comes_up_once() {
        let virt: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data", "namespace": "n"}, "spec": {}}))
                .unwrap();
        let host: PersistentVolumeClaim = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": {}, "status": {"phase": "Bound"}}),
        )
        .unwrap();
        let updated = virt.status_up(&host).unwrap();
        assert_eq!(updated.status.as_ref().unwrap().phase.as_deref(), Some("Bound"));
        assert!(updated.status_up(&host).is_none());
    }

    #[test]
    fn service_account_tokens_are_not_automounted_from_the_host_copy() {
        let sa: ServiceAccount = serde_json::from_value(
            json!({"metadata": {"name": "app", "namespace": "n"}, "imagePullSecrets": [{"name": "regcred"}]}),
        )
        .unwrap();
        let host = sa.with_payload(meta(), &translator());
        assert_eq!(host.automount_service_account_token, Some(false));
        assert_eq!(
            host.image_pull_secrets.unwrap()[0].name,
            host_name("n", "regcred")
        );
    }
}
