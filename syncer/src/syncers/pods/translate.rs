//! The host pod of a virtual pod: a pure function of the pod, the configuration and what the
//! syncer read from its caches beforehand ([`PodEnvironment`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{
        Affinity, EphemeralContainer, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
        PodAffinityTerm, PodSchedulingGate, PodSpec, Toleration,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta},
};
use std::sync::Arc;

use vcsync_translators::{
    NAMESPACE_LABEL, NameTranslator, NamespaceMapping, NamespacedTranslator, host_cluster_name,
    host_label_selector, is_reserved_key, safe_label_value,
};

use super::{
    environment::{ServiceLink, add_env, cluster_dns, service_env, uses_cluster_dns},
    references::{SERVICE_ACCOUNT_ANNOTATION, translate_references},
    token::{TokenMount, mount_tokens},
    tolerations::tenant_tolerations,
};
use crate::config::PodsConfig;

/// Annotation on host pods listing the tenant annotation keys vcsync copied (comma-separated),
/// so that annotations host components add (a CNI's, say) are left alone by updates.
pub const MANAGED_ANNOTATIONS: &str = "vcsync.dev/managed-annotations";
/// Annotation on host pods listing the tenant label keys vcsync copied (comma-separated).
pub const MANAGED_LABELS: &str = "vcsync.dev/managed-labels";
/// The service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// What a host pod depends on besides the virtual pod, read from the caches by the syncer.
#[derive(Clone, Debug, Default)]
pub struct PodEnvironment {
    /// Where in-pod clients reach the virtual API server (`KUBERNETES_*`); None leaves the
    /// host's variables in place.
    pub kubernetes: Option<ServiceLink>,
    /// Services of the pod's virtual namespace, for service links.
    pub services: Vec<ServiceLink>,
    /// Cluster IP of the virtual cluster's DNS service; None keeps the pod's DNS settings.
    pub dns_server: Option<String>,
    /// The token Secret the pod mounts, if it needs and got one.
    pub token: Option<TokenMount>,
    /// Whether the default token is mounted by vcsync (the virtual API server injected none).
    pub default_token_mount: bool,
}

/// The fields of a host pod that may change after creation and follow the virtual pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MutableFields {
    /// Labels (translated).
    pub labels: BTreeMap<String, String>,
    /// Annotations (translated, with vcsync's own).
    pub annotations: BTreeMap<String, String>,
    /// Image per container name (containers and init containers).
    pub images: BTreeMap<String, String>,
    /// `spec.activeDeadlineSeconds`.
    pub active_deadline_seconds: Option<i64>,
    /// Tolerations (the pod's plus the configured ones); the host only accepts additions.
    pub tolerations: Vec<Toleration>,
    /// Scheduling gates; the host only accepts removals.
    pub scheduling_gates: Vec<PodSchedulingGate>,
}

/// Translates virtual pods into host pods for one instance and configuration.
#[derive(Clone)]
pub struct PodTranslator {
    translator: Arc<dyn NameTranslator>,
    mapping: NamespaceMapping,
    config: PodsConfig,
    priority_classes: bool,
    service_accounts: bool,
}

impl PodTranslator {
    /// A translator into the host namespace of `translator`, with the pod options of `config`.
    pub fn new(translator: NamespacedTranslator, config: PodsConfig) -> Self {
        Self {
            mapping: NamespaceMapping::Single {
                host_namespace: translator.host_namespace().to_string(),
            },
            translator: Arc::new(translator),
            config,
            priority_classes: false,
            service_accounts: false,
        }
    }

    /// Translate for `mapping` (names and namespaces of the pods and of everything they reference).
    pub fn with_mapping(mut self, mapping: NamespaceMapping) -> Self {
        self.translator = Arc::from(mapping.translator(self.translator.ownership().clone()));
        self.mapping = mapping;
        self
    }

    /// Priority classes are synced: translate `priorityClassName` instead of dropping it.
    pub fn with_priority_classes(mut self, synced: bool) -> Self {
        self.priority_classes = synced;
        self
    }

    /// Service accounts are synced: run host pods as the translated account instead of the
    /// host namespace's `default`.
    pub fn with_service_accounts(mut self, synced: bool) -> Self {
        self.service_accounts = synced;
        self
    }

    /// The name translator.
    pub fn translator(&self) -> &dyn NameTranslator {
        self.translator.as_ref()
    }

    /// Where namespaced virtual objects land.
    pub fn mapping(&self) -> &NamespaceMapping {
        &self.mapping
    }

    /// The fields of the host pod that follow the virtual pod after creation.
    pub fn mutable_fields(&self, virt: &Pod) -> MutableFields {
        let meta = self.translator.host_metadata("Pod", &virt.metadata);
        let labels = meta.labels.unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert(SERVICE_ACCOUNT_ANNOTATION.into(), service_account_of(virt).into());
        let tenant_keys = |map: &BTreeMap<String, String>| {
            map.keys()
                .filter(|k| !is_reserved_key(k))
                .cloned()
                .collect::<Vec<_>>()
                .join(",")
        };
        let (managed_annotations, managed_labels) = (tenant_keys(&annotations), tenant_keys(&labels));
        if !managed_annotations.is_empty() {
            annotations.insert(MANAGED_ANNOTATIONS.into(), managed_annotations);
        }
        if !managed_labels.is_empty() {
            annotations.insert(MANAGED_LABELS.into(), managed_labels);
        }
        let spec = virt.spec.as_ref();
        let images = spec
            .iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
            .collect();
        // Only the tolerations `sync.pods.tolerations` allows: the others would let the pod
        // onto host nodes whose taints keep tenants off (the syncer reports the dropped ones).
        let (mut tolerations, _dropped) = tenant_tolerations(
            &self.config.tolerations,
            &self.config.extra_tolerations,
            spec.iter().flat_map(|s| s.tolerations.iter().flatten()),
        );
        for extra in &self.config.extra_tolerations {
            if !tolerations.contains(extra) {
                tolerations.push(extra.clone());
            }
        }
        MutableFields {
            labels,
            annotations,
            images,
            active_deadline_seconds: spec.and_then(|s| s.active_deadline_seconds),
            tolerations,
            scheduling_gates: spec.and_then(|s| s.scheduling_gates.clone()).unwrap_or_default(),
        }
    }

    /// The ephemeral containers of `virt`, translated for the host (references renamed as in
    /// [`Self::host_pod`]); empty when it has none.
    pub fn host_ephemeral_containers(&self, virt: &Pod) -> Vec<EphemeralContainer> {
        let ns = virt.metadata.namespace.as_deref().unwrap_or_default();
        let ephemeral = virt.spec.as_ref().and_then(|s| s.ephemeral_containers.clone());
        let Some(ephemeral) = ephemeral.filter(|e| !e.is_empty()) else {
            return Vec::new();
        };
        let mut spec = PodSpec {
            ephemeral_containers: Some(ephemeral),
            ..PodSpec::default()
        };
        translate_references(&self.mapping, ns, &mut spec);
        spec.ephemeral_containers.unwrap_or_default()
    }

    /// The host pod of `virt` in `env`.
    pub fn host_pod(&self, virt: &Pod, env: &PodEnvironment) -> Pod {
        let ns = virt.metadata.namespace.as_deref().unwrap_or_default();
        let name = virt.metadata.name.as_deref().unwrap_or_default();
        let fields = self.mutable_fields(virt);
        let mut spec = virt.spec.clone().unwrap_or_default();

        // The host schedules (a preset node becomes a node affinity below); the host's admission
        // computes priority and overhead from its own classes; ephemeral containers cannot be
        // created with a pod; readiness gates are evaluated on the virtual pod (status.rs).
        let virtual_node = spec.node_name.take().filter(|n| !n.is_empty());
        spec.service_account = None;
        spec.priority = None;
        spec.preemption_policy = None;
        spec.overhead = None;
        spec.ephemeral_containers = None;
        spec.readiness_gates = None;

        spec.service_account_name = Some(if self.service_accounts {
            self.mapping.host_object_name(ns, service_account_of(virt))
        } else {
            DEFAULT_SERVICE_ACCOUNT.into()
        });
        spec.automount_service_account_token = Some(false);
        let links = spec.enable_service_links != Some(false);
        spec.enable_service_links = Some(false);

        translate_references(&self.mapping, ns, &mut spec);
        mount_tokens(&mut spec, env.token.as_ref(), env.default_token_mount);
        let vars = service_env(env.kubernetes.as_ref(), &env.services, links);
        for container in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            add_env(container, &vars);
        }
        if let Some(server) = &env.dns_server
            && uses_cluster_dns(spec.dns_policy.as_deref(), spec.host_network == Some(true))
        {
            spec.dns_config = Some(cluster_dns(ns, server, spec.dns_config.as_ref()));
            spec.dns_policy = Some("None".into());
        }
        if spec.hostname.is_none() {
            spec.hostname = pod_hostname(name);
        }
        if let Some(subdomain) = spec.subdomain.as_mut().filter(|s| !s.is_empty()) {
            *subdomain = self.mapping.host_object_name(ns, subdomain);
        }

        self.translate_scheduling(ns, &mut spec, virtual_node.as_deref());
        spec.tolerations = (!fields.tolerations.is_empty()).then_some(fields.tolerations);

        let host_key = self
            .translator
            .host_key(&vcsync_translators::VirtualKey::namespaced(ns, name));
        Pod {
            metadata: ObjectMeta {
                name: Some(host_key.name),
                namespace: host_key.namespace,
                labels: Some(fields.labels),
                annotations: Some(fields.annotations),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        }
    }

    /// Where the host pod may run. The rule that keeps a tenant off host nodes it should not
    /// use: the host scheduler always decides. A tenant's `spec.nodeName` never reaches the host
    /// pod (it would bypass the scheduler, taints and the host's node admission); it becomes a
    /// required node affinity on `metadata.name`, and the tenant's own node affinity (on
    /// `kubernetes.io/hostname`, `metadata.name` or anything else, as DaemonSet pods carry) is
    /// kept as is. A required node affinity only narrows the nodes the scheduler may pick: it
    /// is ANDed with `extraNodeSelector` (which wins over the tenant's nodeSelector), and the
    /// node's taints still apply, tolerated only by the allowed and configured tolerations. So
    /// naming a host node lands a pod there only where it could have landed anyway, and a pod
    /// pinned to a node it may not use stays Pending.
    fn translate_scheduling(&self, ns: &str, spec: &mut PodSpec, virtual_node: Option<&str>) {
        if !self.config.extra_node_selector.is_empty() {
            let selector = spec.node_selector.get_or_insert_with(BTreeMap::new);
            selector.extend(self.config.extra_node_selector.clone());
        }
        if let Some(affinity) = spec.affinity.as_mut() {
            self.translate_affinity(ns, affinity);
        }
        if let Some(node) = virtual_node {
            pin_to_node(&mut spec.affinity, node);
        }
        for constraint in spec.topology_spread_constraints.iter_mut().flatten() {
            if let Some(selector) = constraint.label_selector.as_mut() {
                *selector = host_label_selector(self.translator.ownership(), ns, selector);
            }
            retain_tenant_keys(&mut constraint.match_label_keys);
        }
        // System classes too: the PriorityClass syncer copies them like any other, with the
        // value capped below the host's system range, so a tenant never outranks host system pods.
        spec.priority_class_name = spec
            .priority_class_name
            .take()
            .filter(|_| self.priority_classes)
            .map(|class| host_cluster_name(self.translator.ownership().instance(), &class));
    }

    fn translate_affinity(&self, ns: &str, affinity: &mut Affinity) {
        let mut terms: Vec<&mut PodAffinityTerm> = Vec::new();
        if let Some(a) = affinity.pod_affinity.as_mut() {
            terms.extend(
                a.required_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten(),
            );
            terms.extend(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.pod_affinity_term),
            );
        }
        if let Some(a) = affinity.pod_anti_affinity.as_mut() {
            terms.extend(
                a.required_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten(),
            );
            terms.extend(
                a.preferred_during_scheduling_ignored_during_execution
                    .iter_mut()
                    .flatten()
                    .map(|w| &mut w.pod_affinity_term),
            );
        }
        for term in terms {
            self.translate_affinity_term(ns, term);
        }
    }

    /// A pod (anti-)affinity term for the host, where every pod lives in the host namespace:
    /// the namespaces the term means become a requirement on the virtual-namespace label.
    fn translate_affinity_term(&self, ns: &str, term: &mut PodAffinityTerm) {
        let scope = term_namespaces(ns, term);
        term.namespaces = None;
        term.namespace_selector = None;
        retain_tenant_keys(&mut term.match_label_keys);
        retain_tenant_keys(&mut term.mismatch_label_keys);
        // A nil selector matches no pod; it stays nil.
        let Some(selector) = term.label_selector.as_mut() else {
            return;
        };
        let mut host = host_label_selector(self.translator.ownership(), ns, selector);
        match scope {
            TermNamespaces::Own => {}
            TermNamespaces::All => {
                host.match_labels.get_or_insert_default().remove(NAMESPACE_LABEL);
            }
            TermNamespaces::Listed(list) => {
                host.match_labels.get_or_insert_default().remove(NAMESPACE_LABEL);
                host.match_expressions
                    .get_or_insert_default()
                    .push(LabelSelectorRequirement {
                        key: NAMESPACE_LABEL.into(),
                        operator: "In".into(),
                        values: Some(list.iter().map(|n| safe_label_value(n)).collect()),
                    });
            }
        }
        *selector = host;
    }
}

/// Which virtual namespaces a pod affinity term applies to.
#[derive(Debug, PartialEq, Eq)]
enum TermNamespaces {
    /// The pod's own.
    Own,
    /// Every namespace (an empty `namespaceSelector`).
    All,
    /// These (sorted).
    Listed(BTreeSet<String>),
}

/// The namespaces of `term` for a pod of `ns`. A non-empty `namespaceSelector` would need the
/// virtual namespaces' labels: it counts as the pod's own namespace (plus any listed ones).
fn term_namespaces(ns: &str, term: &PodAffinityTerm) -> TermNamespaces {
    let listed: BTreeSet<String> = term
        .namespaces
        .iter()
        .flatten()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    let selects_all = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    });
    if selects_all {
        return TermNamespaces::All;
    }
    let mut listed = listed;
    if term.namespace_selector.is_some() || listed.is_empty() {
        listed.insert(ns.to_string());
    }
    if listed.len() == 1 && listed.contains(ns) {
        TermNamespaces::Own
    } else {
        TermNamespaces::Listed(listed)
    }
}

/// Drops vcsync's keys from label-key lists (`matchLabelKeys` and the like).
fn retain_tenant_keys(keys: &mut Option<Vec<String>>) {
    if let Some(list) = keys.as_mut() {
        list.retain(|k| !is_reserved_key(k));
    }
}

/// Adds "node name is `node`" to every required node-selector term (creating one if needed):
/// a virtual pod created with `spec.nodeName` runs on the host node of that name, placed there
/// by the host scheduler rather than bypassing it.
fn pin_to_node(affinity: &mut Option<Affinity>, node: &str) {
    let requirement = NodeSelectorRequirement {
        key: "metadata.name".into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let required = affinity
        .get_or_insert_default()
        .node_affinity
        .get_or_insert_default()
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        term.match_fields
            .get_or_insert_default()
            .push(requirement.clone());
    }
}

/// The virtual pod's service account.
pub fn service_account_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref().or(s.service_account.as_deref()))
        .filter(|sa| !sa.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
}

/// The hostname a kubelet gives a pod named `name` (its name, cut to 63 characters), when that
/// is a valid `spec.hostname`; otherwise None and the host pod's name is used.
fn pod_hostname(name: &str) -> Option<String> {
    let cut = &name[..name.len().min(63)];
    let cut = cut.trim_end_matches(['-', '.']);
    let valid = !cut.is_empty()
        && cut
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !cut.starts_with('-');
    valid.then(|| cut.to_string())
}

#[cfg(test)]
mod tests;
