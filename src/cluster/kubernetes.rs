//! The `kubernetes` driver: a virtual cluster in a namespace of a host cluster. It applies
//! the objects [`render`] makes (Namespace, ServiceAccount, RBAC, config Secret, Service, and a
//! StatefulSet running a k3s control plane with vcsync as sidecar); `vcsync cluster render`
//! prints the same objects, and `deploy/manifests/` is that output for the example values.
//!
//! Every object it creates carries `vcsync.dev/cluster=<name>`; status is derived from the
//! StatefulSet, Service and Secret; pause scales to zero and deletes the cluster's synced pods
//! on the host (ownership label) and keeps the control plane's datastore claim; delete removes
//! every rendered object, the datastore claims, every host object with the ownership label, and
//! the namespace when this driver created it. Without `controlPlane.serviceCidr`, create
//! detects the host's service CIDR ([`detect_service_cidr`]), or leaves it to the pod's init
//! container.
//!
//! The host namespace it creates is labelled for Pod Security Admission
//! ([`pod_security_labels`], `enforce: baseline` by default) and vcsync's own gate
//! (`sync.pods.podSecurityStandard`) is set to the same level; a namespace it did not create
//! keeps its labels, and `create` says how to label it.
//!
//! Synced pods (k3s's CoreDNS among them) reach the virtual API server at the cluster IP of the
//! cluster's Service (`sync.pods.kubernetesService.hostService` in the rendered vcsync.yaml):
//! the virtual `default/kubernetes` IP is the host's own API server on the host. An init
//! container waits for that IP ([`wait_for_service_ip`]) and k3s's serving certificate names it
//! (`--tls-san`).

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PodSecurityContext, PodSpec, PodTemplateSpec, Secret, SecurityContext, Service, ServiceAccount,
            ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
        },
        networking::v1::ServiceCIDR,
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use vcsync_syncer::config::ServiceAddress;

use super::{
    Changed, ClusterError, ClusterStatus, Created, Driver, DriverOptions, DriverRegistration, Phase,
    Progress, Result, Values,
    common::{replace_server, synced_counts},
};

inventory::submit! {
    DriverRegistration {
        name: "kubernetes",
        about: "a k3s control plane with vcsync as sidecar in a namespace of the host cluster (current kubeconfig)",
        factory: |options| Ok(Box::new(KubernetesDriver { options: options.clone() })),
    }
}

/// The control plane image unless `controlPlane.image` says otherwise.
pub const DEFAULT_CONTROL_PLANE_IMAGE: &str = "rancher/k3s:v1.33.1-k3s1";
/// The vcsync image unless `vcsync.image` says otherwise (built from deploy/Dockerfile).
pub const DEFAULT_VCSYNC_IMAGE: &str = "vcsync:0.1.0";
/// Size of the control plane's datastore claim unless `persistence.size` says otherwise.
pub const DEFAULT_PERSISTENCE_SIZE: &str = "5Gi";
/// Label on every object the driver creates: the cluster's name.
pub const CLUSTER_LABEL: &str = "vcsync.dev/cluster";
/// The k3s argument that takes the service CIDR the init container detected (the start script
/// reads it into `$SERVICE_CIDR`); the only argument quoted for the shell to expand.
const DETECTED_CIDR_ARG: &str = "--service-cidr=$SERVICE_CIDR";
/// The k3s argument that takes the cluster IP of the cluster's Service, which the init container
/// `service-ip` wrote (the start script reads it into `$SERVICE_IP`): synced pods reach the
/// virtual API server at that IP, so its serving certificate must name it.
const SERVICE_IP_ARG: &str = "--tls-san=$SERVICE_IP";
/// Where the init containers write what they detected (an emptyDir, volume [`DETECTED_VOLUME`]).
const DETECTED_CIDR_DIR: &str = "/run/vcsync";
const DETECTED_CIDR_FILE: &str = "/run/vcsync/service-cidr";
const SERVICE_IP_FILE: &str = "/run/vcsync/service-ip";
const DETECTED_VOLUME: &str = "detected";
/// Port of the cluster's Service (the virtual API server's 6443 behind it).
const SERVICE_PORT: u16 = 443;

/// Where vcsync serves the kubelet API of the virtual nodes: loopback, for k3s in the same pod.
const KUBELET_LISTEN: &str = "127.0.0.1:10250";

/// The CA of k3s's client certificates, its API server's kubelet client certificate among them.
const K3S_CLIENT_CA: &str = "/data/k3s/server/tls/client-ca.crt";
/// The message the status carries when the datastore is on an emptyDir.
pub const NO_PERSISTENCE: &str = "persistence: none (state is lost on restart)";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vcsync-cluster");
/// Prefix of the Pod Security Admission labels of a namespace.
const POD_SECURITY_LABEL: &str = "pod-security.kubernetes.io/";
/// The level the host namespace enforces unless `podSecurity.enforce` says otherwise: the
/// default of vcsync's own gate too.
pub const DEFAULT_POD_SECURITY_LEVEL: &str = "baseline";
/// The Pod Security levels, loosest first.
const POD_SECURITY_LEVELS: [&str; 3] = ["privileged", "baseline", "restricted"];
const RESUME_REPLICAS: &str = "vcsync.dev/resume-replicas";

/// Names of a cluster's objects.
fn base_name(name: &str) -> String {
    format!("vcsync-{name}")
}
fn config_secret(name: &str) -> String {
    format!("vcsync-{name}-config")
}
/// The Secret the control plane publishes its kubeconfig in (key `config`).
pub fn kubeconfig_secret(name: &str) -> String {
    format!("vcsync-{name}-kubeconfig")
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vcsync".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        (MANAGED_BY.0.into(), MANAGED_BY.1.into()),
        (CLUSTER_LABEL.into(), name.into()),
    ])
}

fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "vcsync".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
    ])
}

/// Labels of the datastore claims: the same whoever renders the StatefulSet (chart or driver),
/// so `cluster delete` finds the claims of a Helm release too.
fn claim_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(CLUSTER_LABEL.into(), name.into());
    labels
}

/// The values' service CIDR; None (or empty): detected from the host.
fn explicit_service_cidr(values: &Values) -> Option<&str> {
    values
        .control_plane
        .service_cidr
        .as_deref()
        .filter(|cidr| !cidr.is_empty())
}

fn persistence_enabled(values: &Values) -> bool {
    values.persistence.enabled.unwrap_or(true)
}

/// The host namespace of cluster `name`.
pub fn namespace_of(name: &str, values: &Values) -> String {
    values
        .namespace
        .clone()
        .unwrap_or_else(|| format!("vcsync-{name}"))
}

/// A Pod Security level of the values (`podSecurity.<mode>`): unset is `default`, `""` none.
fn pod_security_level(
    mode: &str,
    level: Option<&str>,
    default: Option<&'static str>,
) -> Result<Option<&'static str>> {
    match level {
        None => Ok(default),
        Some("") => Ok(None),
        Some(level) => POD_SECURITY_LEVELS
            .into_iter()
            .find(|known| *known == level)
            .map(Some)
            .ok_or_else(|| {
                ClusterError::BadInput(format!(
                    "values: podSecurity.{mode}: {level:?} is not a Pod Security level (privileged, baseline, \
                     restricted, or \"\" for no label)"
                ))
            }),
    }
}

/// The level the host namespace enforces (`podSecurity.enforce`, default baseline); None: no
/// label. `restricted` is refused: the control plane's k3s runs as root.
fn enforced_pod_security(values: &Values) -> Result<Option<&'static str>> {
    let level = pod_security_level(
        "enforce",
        values.pod_security.enforce.as_deref(),
        Some(DEFAULT_POD_SECURITY_LEVEL),
    )?;
    if level == Some("restricted") {
        return Err(ClusterError::BadInput(
            "values: podSecurity.enforce: restricted would refuse the control plane's own pod (k3s runs \
             as root); enforce baseline on the host and set config.sync.pods.podSecurityStandard: \
             restricted to hold the tenant's pods to restricted"
                .into(),
        ));
    }
    Ok(level)
}

/// The Pod Security Admission labels of the host namespace: `pod-security.kubernetes.io/<mode>`
/// and `<mode>-version` for each mode with a level.
pub fn pod_security_labels(values: &Values) -> Result<BTreeMap<String, String>> {
    let pod_security = &values.pod_security;
    let version = pod_security.version.as_deref().unwrap_or("latest");
    let valid_version = version == "latest"
        || version
            .strip_prefix("v1.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
    if !valid_version {
        return Err(ClusterError::BadInput(format!(
            "values: podSecurity.version: {version:?} is not a version of the Pod Security Standards \
             (latest or v1.N)"
        )));
    }
    let levels = [
        ("enforce", enforced_pod_security(values)?),
        (
            "warn",
            pod_security_level("warn", pod_security.warn.as_deref(), None)?,
        ),
        (
            "audit",
            pod_security_level("audit", pod_security.audit.as_deref(), None)?,
        ),
    ];
    let mut labels = BTreeMap::new();
    for (mode, level) in levels {
        if let Some(level) = level {
            labels.insert(format!("{POD_SECURITY_LABEL}{mode}"), level.to_string());
            labels.insert(format!("{POD_SECURITY_LABEL}{mode}-version"), version.to_string());
        }
    }
    Ok(labels)
}

/// The values with `config.sync.pods.podSecurityStandard` set to the level the host namespace
/// enforces, so vcsync's gate and the host's agree; a level the config sets itself is kept
/// when it is as strict or stricter, and refused when looser (the host would refuse pods
/// vcsync lets through).
fn with_pod_security_standard(values: &Values) -> Result<Values> {
    let mut values = values.clone();
    let Some(enforced) = enforced_pod_security(&values)? else {
        return Ok(values);
    };
    let rank = |level: &str| POD_SECURITY_LEVELS.iter().position(|known| *known == level);
    let config = values.config.get_or_insert_with(Default::default);
    let sync = config
        .entry("sync".into())
        .or_insert_with(|| serde_yaml_ng::Mapping::new().into());
    // Anything else than mappings is for the config's own check to refuse.
    let Some(pods) = sync.as_mapping_mut().map(|sync| {
        sync.entry("pods".into())
            .or_insert_with(|| serde_yaml_ng::Mapping::new().into())
    }) else {
        return Ok(values);
    };
    let Some(pods) = pods.as_mapping_mut() else {
        return Ok(values);
    };
    match pods.get("podSecurityStandard").and_then(|level| level.as_str()) {
        Some(own) if rank(own).is_some_and(|own| Some(own) < rank(enforced)) => {
            Err(ClusterError::BadInput(format!(
                "values: config.sync.pods.podSecurityStandard: {own} is looser than podSecurity.enforce: \
                 {enforced}: the host would refuse pods vcsync lets through (set it to {enforced} or \
                 stricter, or leave it unset)"
            )))
        }
        Some(_) => Ok(values),
        None if pods.contains_key("podSecurityStandard") => Ok(values),
        None => {
            pods.insert("podSecurityStandard".into(), enforced.into());
            Ok(values)
        }
    }
}

/// The host objects of cluster `name`, in apply order, as JSON.
pub fn render(name: &str, values: &Values) -> Result<Vec<Value>> {
    render_with(name, values, None)
}

/// [`render`], with the service CIDR `cluster create` detected (the stored values stay the
/// requested ones, so the same request later compares equal).
fn render_with(name: &str, values: &Values, detected_cidr: Option<&str>) -> Result<Vec<Value>> {
    let stored = values;
    let mut effective;
    let values = match detected_cidr {
        Some(cidr) if explicit_service_cidr(values).is_none() => {
            effective = values.clone();
            effective.control_plane.service_cidr = Some(cidr.to_string());
            &effective
        }
        _ => values,
    };
    let detects = explicit_service_cidr(values).is_none();
    let ns = namespace_of(name, values);
    let base = base_name(name);
    let mut config = with_pod_security_standard(values)?.syncer_config(name, &ns)?;
    config.virtual_cluster.kubeconfig = Some("/data/kubeconfig.yaml".into());
    // Synced pods reach the virtual API server through the cluster's Service, unless the values
    // say otherwise.
    config
        .sync
        .pods
        .kubernetes_service
        .get_or_insert_with(|| ServiceAddress::host_service(&base, SERVICE_PORT));
    // The kubelet API of the virtual nodes (kubectl logs, exec, port-forward), unless the values
    // have a kubelet section of their own.
    if !values.config.as_ref().is_some_and(|c| c.contains_key("kubelet")) {
        config.kubelet.listen = Some(KUBELET_LISTEN.parse().expect("a socket address"));
        config.kubelet.client_ca_file = Some(K3S_CLIENT_CA.into());
    }
    let config_yaml = serde_yaml_ng::to_string(&config).context("config")?;
    let meta = |object_name: &str, namespaced: bool| ObjectMeta {
        name: Some(object_name.into()),
        namespace: namespaced.then(|| ns.clone()),
        labels: Some(labels(name)),
        ..ObjectMeta::default()
    };
    let mut objects: Vec<Value> = Vec::new();
    let mut push = |kind: &str, api_version: &str, object: Value| {
        let mut object = object;
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        // Fixed key order for readable manifests.
        let mut ordered = serde_json::Map::new();
        for key in ["apiVersion", "kind", "metadata"] {
            ordered.insert(key.into(), object[key].take());
        }
        if let Value::Object(rest) = object {
            for (k, v) in rest {
                if !ordered.contains_key(&k) {
                    ordered.insert(k, v);
                }
            }
        }
        objects.push(Value::Object(ordered));
    };
    let to_json = |v: &dyn erased::Ser| v.to_json();

    let mut namespace_meta = meta(&ns, false);
    namespace_meta
        .labels
        .get_or_insert_with(Default::default)
        .extend(pod_security_labels(values)?);
    push(
        "Namespace",
        "v1",
        to_json(&Namespace {
            metadata: namespace_meta,
            ..Default::default()
        }),
    );
    push(
        "ServiceAccount",
        "v1",
        to_json(&ServiceAccount {
            metadata: meta(&base, true),
            ..Default::default()
        }),
    );
    let rbac = vcsync_syncer::rbac::host_rbac(&config, &base);
    let relabel = |mut m: ObjectMeta| {
        m.labels = Some(labels(name));
        m
    };
    if let Some((mut role, mut binding)) = rbac.role {
        role.metadata = relabel(role.metadata);
        binding.metadata = relabel(binding.metadata);
        push("Role", "rbac.authorization.k8s.io/v1", to_json(&role));
        push("RoleBinding", "rbac.authorization.k8s.io/v1", to_json(&binding));
    }
    if let Some((mut role, mut binding)) = rbac.cluster_role {
        role.metadata = relabel(role.metadata);
        if detects {
            // The init container reads the host's ServiceCIDR objects.
            role.rules.get_or_insert_with(Vec::new).push(PolicyRule {
                api_groups: Some(vec!["networking.k8s.io".into()]),
                resources: Some(vec!["servicecidrs".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..Default::default()
            });
        }
        binding.metadata = relabel(binding.metadata);
        push("ClusterRole", "rbac.authorization.k8s.io/v1", to_json(&role));
        push(
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io/v1",
            to_json(&binding),
        );
    }
    // The control plane publishes its kubeconfig in one Secret of the namespace; the init
    // container `service-ip` (and vcsync, for the pods' KUBERNETES_SERVICE_HOST) reads the
    // cluster's Service; detecting the service CIDR, the init container creates a Service in
    // dry-run mode (the host's answer names the valid range).
    let cp = format!("{base}-control-plane");
    let mut cp_rules = vec![
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["create".into(), "get".into(), "patch".into(), "update".into()],
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into()]),
            resource_names: Some(vec![base.clone()]),
            verbs: vec!["get".into()],
            ..Default::default()
        },
    ];
    if detects {
        cp_rules.push(PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        });
    }
    push(
        "Role",
        "rbac.authorization.k8s.io/v1",
        to_json(&Role {
            metadata: meta(&cp, true),
            rules: Some(cp_rules),
        }),
    );
    push(
        "RoleBinding",
        "rbac.authorization.k8s.io/v1",
        to_json(&RoleBinding {
            metadata: meta(&cp, true),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: cp.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: base.clone(),
                namespace: Some(ns.clone()),
                ..Default::default()
            }]),
        }),
    );
    push(
        "Secret",
        "v1",
        to_json(&Secret {
            metadata: meta(&config_secret(name), true),
            data: Some(BTreeMap::from([
                ("vcsync.yaml".to_string(), ByteString(config_yaml.into_bytes())),
                (
                    "values.yaml".to_string(),
                    ByteString(stored.to_yaml().into_bytes()),
                ),
            ])),
            ..Default::default()
        }),
    );
    push(
        "Service",
        "v1",
        to_json(&Service {
            metadata: meta(&base, true),
            spec: Some(ServiceSpec {
                selector: Some(selector_labels(name)),
                ports: Some(vec![ServicePort {
                    name: Some("https".into()),
                    port: SERVICE_PORT.into(),
                    target_port: Some(IntOrString::Int(6443)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    push("StatefulSet", "apps/v1", to_json(&statefulset(name, &ns, values)));
    Ok(objects)
}

/// The k3s server arguments; the service CIDR is [`DETECTED_CIDR_ARG`] when it is detected,
/// and the serving certificate names the Service's cluster IP ([`SERVICE_IP_ARG`]).
fn k3s_args(name: &str, ns: &str, values: &Values) -> Vec<String> {
    let base = base_name(name);
    let service_cidr = match explicit_service_cidr(values) {
        Some(cidr) => format!("--service-cidr={cidr}"),
        None => DETECTED_CIDR_ARG.to_string(),
    };
    // k3s's bundled CoreDNS serves the virtual cluster (`kube-system/kube-dns`, cluster IP: the
    // service CIDR's tenth address, which k3s derives from --service-cidr) unless dns.enabled
    // is false; vcsync syncs its pods to the host and points synced pods at it.
    let disabled = if values.dns.enabled.unwrap_or(true) {
        "--disable=traefik,servicelb,metrics-server,local-storage"
    } else {
        "--disable=traefik,servicelb,metrics-server,local-storage,coredns"
    };
    let mut args = vec![
        "server".to_string(),
        "--data-dir=/data/k3s".into(),
        "--write-kubeconfig=/data/kubeconfig.yaml".into(),
        "--write-kubeconfig-mode=0644".into(),
        "--disable-agent".into(),
        disabled.into(),
        "--disable-network-policy".into(),
        "--flannel-backend=none".into(),
        service_cidr,
        format!("--tls-san={base}.{ns}.svc"),
        SERVICE_IP_ARG.into(),
        // vcsync mirrors endpoints from the host; no node IPAM or node lifecycle of its own.
        "--kube-controller-manager-arg=controllers=*,-nodeipam,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle,-endpoint,-endpointslice,-endpointslicemirroring".into(),
    ];
    args.extend(values.control_plane.extra_args.iter().cloned());
    args
}

/// A shell word of a k3s argument: single-quoted, but for the detected service CIDR and the
/// Service's cluster IP, which the shell expands.
fn shell_word(arg: &str) -> String {
    if arg == DETECTED_CIDR_ARG || arg == SERVICE_IP_ARG {
        format!("\"{arg}\"")
    } else {
        format!("'{arg}'")
    }
}

fn statefulset(name: &str, ns: &str, values: &Values) -> StatefulSet {
    let base = base_name(name);
    let server = format!("https://{base}.{ns}.svc:443");
    let detects = explicit_service_cidr(values).is_none();
    let persistent = persistence_enabled(values);
    let quoted: Vec<String> = k3s_args(name, ns, values).iter().map(|a| shell_word(a)).collect();
    // k3s server in the background (with the service CIDR the init container detected, if it
    // is not given, and the Service's cluster IP it waited for); once it wrote its kubeconfig (a
    // stale one from the volume is removed first), publish it (server set to the Service) in
    // the kubeconfig Secret with the pod's service account, then wait on k3s.
    let mut read_detected = String::new();
    if detects {
        read_detected.push_str(&format!("SERVICE_CIDR=$(cat {DETECTED_CIDR_FILE})\n"));
    }
    read_detected.push_str(&format!("SERVICE_IP=$(cat {SERVICE_IP_FILE})\n"));
    let script = format!(
        "set -e\n{read_detected}rm -f /data/kubeconfig.yaml\n/bin/k3s {args} &\nK3S=$!\nuntil [ -s /data/kubeconfig.yaml ]; do sleep 1; done\n\
         sed 's#https://127.0.0.1:6443#{server}#' /data/kubeconfig.yaml > /tmp/kubeconfig\n\
         SA=/var/run/secrets/kubernetes.io/serviceaccount\n\
         K=\"/bin/k3s kubectl --kubeconfig=/dev/null --server=https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT --token=$(cat $SA/token) --certificate-authority=$SA/ca.crt -n {ns}\"\n\
         $K create secret generic {secret} --from-file=config=/tmp/kubeconfig --dry-run=client -o yaml | $K apply -f -\n\
         wait $K3S\n",
        args = quoted.join(" "),
        secret = kubeconfig_secret(name),
    );
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    };
    let vcsync_image = values
        .vcsync
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_VCSYNC_IMAGE.into());
    let vcsync_security = SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        ..Default::default()
    };
    let mut control_plane_mounts = vec![mount("data", "/data", false)];
    let mut volumes = Vec::new();
    if !persistent {
        volumes.push(Volume {
            name: "data".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: "config".into(),
        secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
            secret_name: Some(config_secret(name)),
            ..Default::default()
        }),
        ..Default::default()
    });
    control_plane_mounts.push(mount(DETECTED_VOLUME, DETECTED_CIDR_DIR, true));
    volumes.push(Volume {
        name: DETECTED_VOLUME.into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    });
    let init_container = |name: &str, args: &[&str]| Container {
        name: name.into(),
        image: Some(vcsync_image.clone()),
        args: Some(args.iter().map(|a| a.to_string()).collect()),
        security_context: Some(vcsync_security.clone()),
        volume_mounts: Some(vec![mount(DETECTED_VOLUME, DETECTED_CIDR_DIR, false)]),
        ..Default::default()
    };
    let mut init_containers = Vec::new();
    if detects {
        init_containers.push(init_container(
            "detect-service-cidr",
            &[
                "cluster",
                "detect-service-cidr",
                "--namespace",
                ns,
                "--output",
                DETECTED_CIDR_FILE,
            ],
        ));
    }
    init_containers.push(init_container(
        "service-ip",
        &[
            "cluster",
            "service-ip",
            &base,
            "--namespace",
            ns,
            "--output",
            SERVICE_IP_FILE,
        ],
    ));
    let volume_claim_templates = persistent.then(|| {
        let persistence = &values.persistence;
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                labels: Some(claim_labels(name)),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(
                    persistence
                        .access_modes
                        .clone()
                        .filter(|modes| !modes.is_empty())
                        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                ),
                storage_class_name: persistence
                    .storage_class
                    .clone()
                    .filter(|class| !class.is_empty()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(
                            persistence
                                .size
                                .clone()
                                .filter(|size| !size.is_empty())
                                .unwrap_or_else(|| DEFAULT_PERSISTENCE_SIZE.into()),
                        ),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]
    });
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(base.clone()),
            namespace: Some(ns.into()),
            labels: Some(labels(name)),
            ..Default::default()
        },
        spec: StatefulSetSpec {
            replicas: Some(values.replicas.unwrap_or(1)),
            service_name: Some(base.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            },
            // The claims go with the cluster (`cluster delete`, `helm uninstall`) and stay
            // while it is paused (scaled to zero).
            persistent_volume_claim_retention_policy: persistent.then(|| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                }
            }),
            volume_claim_templates,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(base.clone()),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(65532),
                        ..Default::default()
                    }),
                    init_containers: Some(init_containers),
                    containers: vec![
                        Container {
                            name: "control-plane".into(),
                            image: Some(
                                values
                                    .control_plane
                                    .image
                                    .clone()
                                    .unwrap_or_else(|| DEFAULT_CONTROL_PLANE_IMAGE.into()),
                            ),
                            command: Some(vec!["/bin/sh".into(), "-c".into(), script]),
                            ports: Some(vec![ContainerPort {
                                name: Some("https".into()),
                                container_port: 6443,
                                ..Default::default()
                            }]),
                            volume_mounts: Some(control_plane_mounts),
                            ..Default::default()
                        },
                        Container {
                            name: "vcsync".into(),
                            image: Some(vcsync_image),
                            args: Some(vec![
                                "run".into(),
                                "--config".into(),
                                "/etc/vcsync/vcsync.yaml".into(),
                            ]),
                            env: Some(vec![EnvVar {
                                name: "RUST_LOG".into(),
                                value: Some("info".into()),
                                ..Default::default()
                            }]),
                            security_context: Some(vcsync_security),
                            volume_mounts: Some(vec![
                                mount("data", "/data", true),
                                mount("config", "/etc/vcsync", true),
                            ]),
                            ..Default::default()
                        },
                    ],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

mod erased {
    /// Serialization to JSON of any k8s-openapi object, for the one closure in `render`.
    pub trait Ser {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("objects serialize")
        }
    }
}

/// [`render`] as a multi-document YAML stream.
pub fn render_yaml(name: &str, values: &Values) -> Result<String> {
    let mut out = String::new();
    for object in render(name, values)? {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object).context("yaml")?);
    }
    Ok(out)
}

/// The first CIDR a kube-apiserver names as the valid range when it refuses a Service's cluster
/// IP: "... the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is
/// 10.96.0.0/12" (with several ServiceCIDRs, 1.31+, the ranges follow separated by spaces).
pub fn parse_service_cidr_error(message: &str) -> Option<String> {
    const MARKER: &str = "range of valid ips is";
    let start = message.to_ascii_lowercase().find(MARKER)? + MARKER.len();
    message[start..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|token| token.trim_matches(|c: char| !(c.is_ascii_hexdigit() || c == ':')))
        .find_map(parse_cidr)
}

/// `token` as a CIDR (`address/prefix`, IPv4 or IPv6), normalized to the text it was.
fn parse_cidr(token: &str) -> Option<String> {
    let (address, prefix) = token.split_once('/')?;
    let address: std::net::IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then(|| format!("{address}/{prefix}"))
}

/// Cluster IPs no host service range is expected to hold, tried in turn.
const PROBE_IPS: [&str; 2] = ["1.1.1.1", "203.0.113.1"];

/// The host cluster's service CIDR: the `kubernetes` ServiceCIDR (networking.k8s.io/v1, 1.33+)
/// when it can be listed, else the range the API server names when refusing, in a dry run, a
/// Service in `namespace` with a cluster IP out of it (nothing is created either way).
pub async fn detect_service_cidr(client: &Client, namespace: &str) -> Result<String> {
    if let Ok(list) = Api::<ServiceCIDR>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        let mut items = list.items;
        // The default one first.
        items.sort_by_key(|c| c.metadata.name.as_deref() != Some("kubernetes"));
        if let Some(cidr) = items
            .into_iter()
            .filter_map(|c| c.spec?.cidrs?.into_iter().next())
            .find_map(|c| parse_cidr(&c))
        {
            return Ok(cidr);
        }
    }
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut answers = Vec::new();
    for ip in PROBE_IPS {
        let probe = Service {
            metadata: ObjectMeta {
                generate_name: Some("vcsync-service-cidr-probe-".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(vec![ServicePort {
                    port: 443,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        match services.create(&params, &probe).await {
            // In range: the dry run was accepted; try the next address.
            Ok(_) => answers.push(format!("{ip}: accepted")),
            Err(kube::Error::Api(status)) => match parse_service_cidr_error(&status.message) {
                Some(cidr) => return Ok(cidr),
                None => answers.push(format!("{ip}: {} {}", status.code, status.message)),
            },
            Err(err) => {
                return Err(anyhow::Error::from(err)
                    .context(format!(
                        "creating a probe Service in namespace {namespace} (dry run)"
                    ))
                    .into());
            }
        }
    }
    Err(anyhow::anyhow!(
        "cannot detect the host's service CIDR (no ServiceCIDR could be listed, and the API server's \
         answers to out-of-range cluster IPs name no range: {}); set controlPlane.serviceCidr",
        answers.join("; ")
    )
    .into())
}

/// The cluster IP of Service `name` in `namespace`, waiting (polling every 2 s) until the
/// Service exists and has one, at most `timeout`. A headless Service is an error at once.
pub async fn wait_for_service_ip(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match services.get_opt(name).await {
            Ok(Some(service)) => {
                let ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
                if ip == "None" {
                    return Err(anyhow::anyhow!(
                        "Service {namespace}/{name} is headless: it has no cluster IP"
                    )
                    .into());
                }
                if !ip.is_empty() {
                    return Ok(ip);
                }
                "it has no cluster IP yet".to_string()
            }
            Ok(None) => "it does not exist".to_string(),
            Err(err) => format!("reading it failed: {err}"),
        };
        if tokio::time::Instant::now() + std::time::Duration::from_secs(2) > deadline {
            return Err(anyhow::anyhow!(
                "no cluster IP of Service {namespace}/{name} within {}s: {last}",
                timeout.as_secs()
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// `vcsync cluster service-ip`: [`wait_for_service_ip`] with the driver's host client.
pub async fn wait_for_service_ip_with(
    options: &DriverOptions,
    namespace: &str,
    name: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let driver = KubernetesDriver {
        options: options.clone(),
    };
    wait_for_service_ip(&driver.client().await?, namespace, name, timeout).await
}

/// `vcsync cluster detect-service-cidr`: [`detect_service_cidr`] with the driver's host client.
pub async fn detect_service_cidr_with(options: &DriverOptions, namespace: &str) -> Result<String> {
    let driver = KubernetesDriver {
        options: options.clone(),
    };
    detect_service_cidr(&driver.client().await?, namespace).await
}

/// The `kubernetes` driver.
pub struct KubernetesDriver {
    options: DriverOptions,
}

fn api_resource(object: &Value) -> (ApiResource, bool) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Secret" => "secrets",
        "Service" => "services",
        _ => "statefulsets",
    };
    let namespaced = !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
    (
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    )
}

fn is_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

impl KubernetesDriver {
    async fn client(&self) -> Result<Client> {
        let missing = |detail: String| ClusterError::MissingDriverConfig {
            driver: "kubernetes".into(),
            detail,
        };
        let options = kube::config::KubeConfigOptions {
            context: self.options.context.clone(),
            ..Default::default()
        };
        let config = match &self.options.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|err| missing(format!("kubeconfig {}: {err}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|err| missing(format!("kubeconfig {}: {err}", path.display())))?
            }
            None if self.options.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|err| missing(format!("kubeconfig: {err}")))?,
            None => kube::Config::infer().await.map_err(|err| {
                missing(format!(
                    "no host cluster: pass --kubeconfig, set KUBECONFIG or run in a cluster ({err})"
                ))
            })?,
        };
        Ok(Client::try_from(config).context("building the host client")?)
    }

    /// The cluster's StatefulSet.
    async fn find(&self, client: &Client, name: &str) -> Result<Option<StatefulSet>> {
        let params = ListParams::default().labels(&format!(
            "{CLUSTER_LABEL}={name},{}={}",
            MANAGED_BY.0, MANAGED_BY.1
        ));
        let list = Api::<StatefulSet>::all(client.clone())
            .list(&params)
            .await
            .context("listing StatefulSets")?;
        Ok(list.items.into_iter().next())
    }

    /// Where the control plane keeps its state, for the status message.
    async fn persistence(&self, client: &Client, name: &str, ns: &str, sts: &StatefulSet) -> Result<String> {
        let Some(template) = sts
            .spec
            .volume_claim_templates
            .as_ref()
            .and_then(|t| t.iter().find(|t| t.metadata.name.as_deref() == Some("data")))
        else {
            return Ok(NO_PERSISTENCE.to_string());
        };
        let size = template
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage").cloned())
            .map(|q| q.0)
            .unwrap_or_default();
        let prefix = format!("data-{}-", base_name(name));
        let mut claims: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .context("listing PersistentVolumeClaims")?
            .items
            .into_iter()
            .filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
            .map(|c| {
                let phase = c.status.and_then(|s| s.phase).unwrap_or_else(|| "Pending".into());
                format!("{} ({phase})", c.metadata.name.unwrap_or_default())
            })
            .collect();
        claims.sort();
        Ok(if claims.is_empty() {
            format!("persistence: PersistentVolumeClaim per replica ({size}), none created yet")
        } else {
            format!("persistence: {size} PersistentVolumeClaim {}", claims.join(", "))
        })
    }

    async fn running_values(&self, client: &Client, name: &str, ns: &str) -> Result<Option<Values>> {
        match Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&config_secret(name))
            .await
            .context("reading the config Secret")?
        {
            Some(secret) => {
                let bytes = secret
                    .data
                    .and_then(|d| d.get("values.yaml").cloned())
                    .map(|b| b.0)
                    .unwrap_or_default();
                Ok(Some(Values::parse(
                    &String::from_utf8_lossy(&bytes),
                    "values.yaml",
                )?))
            }
            None => Ok(None),
        }
    }

    /// A namespace that exists at `create`: one this driver created for the cluster (an
    /// interrupted create) gets the rendered labels, Pod Security ones included; one it did not
    /// create is the operator's and keeps its labels, and create says how to label it when its
    /// Pod Security labels are not the requested ones (vcsync's own gate still checks pods).
    async fn existing_namespace(
        &self,
        client: &Client,
        name: &str,
        rendered: &Value,
        progress: &Progress,
    ) -> Result<()> {
        let ns = rendered["metadata"]["name"].as_str().unwrap_or_default();
        let namespaces = Api::<Namespace>::all(client.clone());
        let Some(existing) = namespaces.get_opt(ns).await.context("reading the namespace")? else {
            return Ok(());
        };
        let have = existing.metadata.labels.unwrap_or_default();
        if have.get(CLUSTER_LABEL).is_some_and(|v| v == name) {
            let patch = json!({"metadata": {"labels": rendered["metadata"]["labels"]}});
            namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("labelling Namespace {ns}"))?;
            return Ok(());
        }
        let missing: Vec<String> = rendered["metadata"]["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(key, value)| {
                key.starts_with(POD_SECURITY_LABEL) && have.get(*key).map(String::as_str) != value.as_str()
            })
            .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
            .collect();
        if !missing.is_empty() {
            progress.step(format!(
                "note: namespace {ns} was not created by vcsync, its Pod Security labels are left as they \
                 are; to have the host enforce the same level as vcsync: kubectl label --overwrite \
                 namespace {ns} {}",
                missing.join(" ")
            ));
        }
        Ok(())
    }

    async fn delete_synced(&self, client: &Client, name: &str, pods_only: bool) -> Result<()> {
        let params =
            ListParams::default().labels(&format!("{}={name}", vcsync_translators::MANAGED_BY_LABEL));
        let kinds: &[(&str, &str, &str, &str)] = if pods_only {
            &[("", "v1", "Pod", "pods")]
        } else {
            &[
                ("", "v1", "Pod", "pods"),
                ("", "v1", "ConfigMap", "configmaps"),
                ("", "v1", "Secret", "secrets"),
                ("", "v1", "Service", "services"),
                ("", "v1", "Endpoints", "endpoints"),
                ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
                ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
                ("", "v1", "ServiceAccount", "serviceaccounts"),
                ("networking.k8s.io", "v1", "Ingress", "ingresses"),
                ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
                ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
                ("", "v1", "Namespace", "namespaces"),
            ]
        };
        for (group, version, kind, plural) in kinds {
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
            let Ok(list) = Api::<DynamicObject>::all_with(client.clone(), &ar)
                .list_metadata(&params)
                .await
            else {
                continue; // a kind the host does not serve
            };
            for item in list.items {
                let object_name = item.metadata.name.unwrap_or_default();
                let api = match &item.metadata.namespace {
                    Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
                    None => Api::<DynamicObject>::all_with(client.clone(), &ar),
                };
                let params = DeleteParams {
                    grace_period_seconds: pods_only.then_some(0),
                    ..Default::default()
                };
                match api.delete(&object_name, &params).await {
                    Ok(_) => {}
                    Err(err) if is_code(&err, 404) => {}
                    Err(err) => {
                        return Err(anyhow::Error::from(err)
                            .context(format!("deleting {kind} {object_name}"))
                            .into());
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Driver for KubernetesDriver {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn create(&self, name: &str, values: &Values, progress: &Progress) -> Result<Created> {
        render(name, values)?; // bad values fail before anything is read or written
        let client = self.client().await?;
        if let Some(sts) = self.find(&client, name).await? {
            let ns = sts.metadata.namespace.unwrap_or_default();
            let running = self.running_values(&client, name, &ns).await?.unwrap_or_default();
            return match values.mismatch(&running) {
                None => Ok(Created::Unchanged),
                Some(detail) => Err(ClusterError::ConfigMismatch {
                    name: name.into(),
                    detail,
                }),
            };
        }
        // Without controlPlane.serviceCidr, the host's is detected here; when that fails (the
        // host's answers name no range), the pod's init container tries again in the namespace.
        let detected = match explicit_service_cidr(values) {
            Some(_) => None,
            None => {
                progress.step("detecting the host's service CIDR");
                let probe_namespace = match Api::<Namespace>::all(client.clone())
                    .get_opt(&namespace_of(name, values))
                    .await
                {
                    Ok(Some(_)) => namespace_of(name, values),
                    _ => "default".to_string(),
                };
                match detect_service_cidr(&client, &probe_namespace).await {
                    Ok(cidr) => {
                        progress.step(format!("host service CIDR: {cidr}"));
                        Some(cidr)
                    }
                    Err(err) => {
                        progress.step(format!(
                            "{err:#}; the control plane's init container will detect it"
                        ));
                        None
                    }
                }
            }
        };
        let objects = render_with(name, values, detected.as_deref())?;
        for object in &objects {
            let (ar, namespaced) = api_resource(object);
            let kind = object["kind"].as_str().unwrap_or_default();
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            progress.step(format!("creating {kind} {object_name}"));
            let api = if namespaced {
                let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            } else {
                Api::<DynamicObject>::all_with(client.clone(), &ar)
            };
            let dynamic: DynamicObject = serde_json::from_value(object.clone()).context("object")?;
            match api.create(&PostParams::default(), &dynamic).await {
                Ok(_) => {}
                // An existing namespace is used (and kept on delete, unless this driver created
                // it); leftovers of an interrupted create are replaced.
                Err(err) if is_code(&err, 409) && kind == "Namespace" => {
                    self.existing_namespace(&client, name, object, progress).await?;
                }
                Err(err) if is_code(&err, 409) => {
                    api.patch(object_name, &PatchParams::default(), &Patch::Merge(object))
                        .await
                        .with_context(|| format!("updating {kind} {object_name}"))?;
                }
                Err(err) => {
                    return Err(anyhow::Error::from(err)
                        .context(format!("creating {kind} {object_name}"))
                        .into());
                }
            }
        }
        Ok(Created::New)
    }

    async fn delete(&self, name: &str, progress: &Progress) -> Result<()> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        let ns = sts.metadata.namespace.unwrap_or_default();
        let values = self.running_values(&client, name, &ns).await?.unwrap_or(Values {
            namespace: Some(ns.clone()),
            ..Default::default()
        });
        let objects = render(name, &values)?;
        // The StatefulSet (last applied) goes first, the namespace last.
        for object in objects.iter().rev() {
            let (ar, namespaced) = api_resource(object);
            let kind = object["kind"].as_str().unwrap_or_default();
            let object_name = object["metadata"]["name"].as_str().unwrap_or_default();
            if kind == "Namespace" {
                continue;
            }
            progress.step(format!("deleting {kind} {object_name}"));
            let api = if namespaced {
                Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
            } else {
                Api::<DynamicObject>::all_with(client.clone(), &ar)
            };
            match api.delete(object_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if is_code(&err, 404) => {}
                Err(err) => {
                    return Err(anyhow::Error::from(err)
                        .context(format!("deleting {kind} {object_name}"))
                        .into());
                }
            }
        }
        // The control plane's datastore claims: the StatefulSet's retention policy deletes them
        // too (whenDeleted), but only where the host runs that controller; a paused cluster's
        // claims are kept until here.
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
        let claim_selector = claim_labels(name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        for claim in claims
            .list_metadata(&ListParams::default().labels(&claim_selector))
            .await
            .context("listing the control plane's claims")?
            .items
        {
            let claim_name = claim.metadata.name.unwrap_or_default();
            progress.step(format!("deleting PersistentVolumeClaim {claim_name}"));
            match claims.delete(&claim_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(err) if is_code(&err, 404) => {}
                Err(err) => {
                    return Err(anyhow::Error::from(err)
                        .context(format!("deleting PersistentVolumeClaim {claim_name}"))
                        .into());
                }
            }
        }
        match Api::<Secret>::namespaced(client.clone(), &ns)
            .delete(&kubeconfig_secret(name), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(err) if is_code(&err, 404) => {}
            Err(err) => {
                return Err(anyhow::Error::from(err)
                    .context("deleting the kubeconfig Secret")
                    .into());
            }
        }
        progress.step(format!("deleting the host objects synced by {name}"));
        self.delete_synced(&client, name, false).await?;
        let namespaces = Api::<Namespace>::all(client.clone());
        if let Some(namespace) = namespaces.get_opt(&ns).await.context("reading the namespace")? {
            let ours = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CLUSTER_LABEL))
                .is_some_and(|v| v == name);
            if ours {
                progress.step(format!("deleting Namespace {ns}"));
                match namespaces.delete(&ns, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(err) if is_code(&err, 404) => {}
                    Err(err) => {
                        return Err(anyhow::Error::from(err).context("deleting the namespace").into());
                    }
                }
            }
        }
        Ok(())
    }

    async fn pause(&self, name: &str, progress: &Progress) -> Result<Changed> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let replicas = sts.spec.replicas.unwrap_or(1);
        let changed = if replicas > 0 {
            progress.step(format!("scaling StatefulSet {} to 0", base_name(name)));
            let patch = json!({
                "metadata": {"annotations": {RESUME_REPLICAS: replicas.to_string()}},
                "spec": {"replicas": 0},
            });
            Api::<StatefulSet>::namespaced(client.clone(), &ns)
                .patch(&base_name(name), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .context("scaling the StatefulSet to 0")?;
            Changed::Yes
        } else {
            Changed::AlreadySo
        };
        // Also when already paused: pods synced before are not left running.
        progress.step(format!("deleting the host pods synced by {name}"));
        self.delete_synced(&client, name, true).await?;
        Ok(changed)
    }

    async fn resume(&self, name: &str, values: Option<&Values>, progress: &Progress) -> Result<Changed> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let running = self.running_values(&client, name, &ns).await?.unwrap_or_default();
        if let Some(values) = values
            && let Some(detail) = values.mismatch(&running)
        {
            return Err(ClusterError::ConfigMismatch {
                name: name.into(),
                detail,
            });
        }
        if sts.spec.replicas.unwrap_or(1) > 0 {
            return Ok(Changed::AlreadySo);
        }
        let replicas: i32 = sts
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESUME_REPLICAS))
            .and_then(|r| r.parse().ok())
            .unwrap_or(running.replicas.unwrap_or(1));
        progress.step(format!("scaling StatefulSet {} to {replicas}", base_name(name)));
        let patch = json!({
            "metadata": {"annotations": {RESUME_REPLICAS: null}},
            "spec": {"replicas": replicas},
        });
        Api::<StatefulSet>::namespaced(client, &ns)
            .patch(&base_name(name), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("scaling the StatefulSet up")?;
        Ok(Changed::Yes)
    }

    async fn list(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        let params =
            ListParams::default().labels(&format!("{}={},{CLUSTER_LABEL}", MANAGED_BY.0, MANAGED_BY.1));
        let list = Api::<StatefulSet>::all(client)
            .list_metadata(&params)
            .await
            .context("listing StatefulSets")?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|s| s.metadata.labels.and_then(|l| l.get(CLUSTER_LABEL).cloned()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(self.find(&client, name).await?.is_some())
    }

    async fn status(&self, name: &str) -> Result<ClusterStatus> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let desired = sts.spec.replicas.unwrap_or(1).max(0) as u32;
        let ready = sts
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            .max(0) as u32;
        let service = Api::<Service>::namespaced(client.clone(), &ns)
            .get_opt(&base_name(name))
            .await
            .context("reading the Service")?;
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&config_secret(name))
            .await
            .context("reading the config Secret")?;
        let missing: Vec<&str> = [
            ("Service", service.is_some()),
            ("config Secret", secret.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(what, _)| what)
        .collect();
        let (phase, message) = if !missing.is_empty() {
            (
                Phase::Failed,
                format!("missing {} in namespace {ns}", missing.join(", ")),
            )
        } else if desired == 0 {
            (Phase::Paused, "scaled to zero".to_string())
        } else if ready >= desired {
            (
                Phase::Running,
                format!("{ready}/{desired} control-plane replicas ready in namespace {ns}"),
            )
        } else {
            (
                Phase::Pending,
                format!("{ready}/{desired} control-plane replicas ready in namespace {ns}"),
            )
        };
        let persistence = self.persistence(&client, name, &ns, &sts).await?;
        let message = format!("{message}; {persistence}");
        let control_plane_ready = phase == Phase::Running;
        Ok(ClusterStatus {
            name: name.into(),
            driver: "kubernetes".into(),
            phase,
            ready: control_plane_ready,
            control_plane_ready,
            nodes_total: desired,
            nodes_ready: ready.min(desired),
            synced_objects: synced_counts(&client, name).await,
            message,
        })
    }

    async fn kubeconfig(&self, name: &str, server: Option<&str>) -> Result<String> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        if sts.spec.replicas == Some(0) {
            return Err(ClusterError::NotRunning(name.into()));
        }
        let ns = sts.metadata.namespace.unwrap_or_default();
        let secret = Api::<Secret>::namespaced(client, &ns)
            .get_opt(&kubeconfig_secret(name))
            .await
            .context("reading the kubeconfig Secret")?;
        let text = secret
            .and_then(|s| s.data)
            .and_then(|d| d.get("config").cloned())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| ClusterError::NotReady {
                name: name.into(),
                detail: format!(
                    "the control plane has not published its kubeconfig (Secret {ns}/{}) yet",
                    kubeconfig_secret(name)
                ),
            })?;
        match server {
            Some(url) => replace_server(&text, url),
            None => Ok(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_cidr_is_read_from_the_api_servers_out_of_range_answers() {
        // kube-apiserver before the ServiceCIDR allocator, with the IP in the message or not.
        for message in [
            "Service \"p\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to \
             allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of \
             valid IPs is 10.96.0.0/12",
            "spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocated ip:1.1.1.1 \
             with error:provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
        ] {
            assert_eq!(parse_service_cidr_error(message).as_deref(), Some("10.96.0.0/12"));
        }
        // The ServiceCIDR allocator (1.31+): every range, space-separated, trailing space.
        let multi = "Service \"p\" is invalid: spec.clusterIPs[0]: Invalid value: \"1.1.1.1\": failed to \
                     allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The \
                     range of valid IPs is 10.43.0.0/16 10.45.0.0/24 ";
        assert_eq!(parse_service_cidr_error(multi).as_deref(), Some("10.43.0.0/16"));
        // IPv6, quoted, at the end of a sentence.
        assert_eq!(
            parse_service_cidr_error("... The range of valid IPs is \"fd00:10:96::/108\".").as_deref(),
            Some("fd00:10:96::/108")
        );
        // Other answers name no range.
        for message in [
            "spec.clusterIP: Invalid value: \"1.1.1.1\": the provided IP (1.1.1.1) is not in the valid range",
            "provided port is not in the valid range. The range of valid ports is 30000-32767",
            "The range of valid IPs is 10.96.0.0/33",
            "The range of valid IPs is 300.96.0.0/12",
            "",
        ] {
            assert_eq!(parse_service_cidr_error(message), None, "{message}");
        }
    }

    #[test]
    fn claims_are_labelled_for_delete_and_empty_values_mean_unset() {
        assert_eq!(
            claim_labels("c1"),
            BTreeMap::from([
                ("app.kubernetes.io/instance".to_string(), "c1".to_string()),
                ("app.kubernetes.io/name".to_string(), "vcsync".to_string()),
                (CLUSTER_LABEL.to_string(), "c1".to_string()),
            ])
        );
        let values = Values::parse("controlPlane:\n  serviceCidr: \"\"\n", "v").unwrap();
        assert_eq!(explicit_service_cidr(&values), None);
        // A detected CIDR is rendered, but the stored values stay the requested ones.
        let objects = render_with("c1", &values, Some("10.43.0.0/16")).unwrap();
        let text = serde_json::to_string(&objects).unwrap();
        assert!(text.contains("--service-cidr=10.43.0.0/16") && !text.contains("detect-service-cidr"));
        let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
        let stored: ByteString = serde_json::from_value(secret["data"]["values.yaml"].clone()).unwrap();
        assert_eq!(
            Values::parse(&String::from_utf8(stored.0).unwrap(), "stored").unwrap(),
            values
        );
    }

    fn rendered(values: &str) -> Result<Vec<Value>> {
        render("c1", &Values::parse(values, "v").unwrap())
    }

    fn namespace_labels(objects: &[Value]) -> BTreeMap<String, String> {
        serde_json::from_value(objects[0]["metadata"]["labels"].clone()).unwrap()
    }

    /// vcsync.yaml's `sync.pods.podSecurityStandard` as rendered.
    fn gate(objects: &[Value]) -> Value {
        let secret = objects.iter().find(|o| o["kind"] == "Secret").unwrap();
        let text: ByteString = serde_json::from_value(secret["data"]["vcsync.yaml"].clone()).unwrap();
        let config = vcsync_syncer::Config::from_yaml(&String::from_utf8(text.0).unwrap(), "c").unwrap();
        serde_json::to_value(&config.sync.pods).unwrap()["podSecurityStandard"].clone()
    }

    #[test]
    fn the_host_namespace_enforces_baseline_by_default_and_vcsyncs_gate_agrees() {
        let objects = rendered("").unwrap();
        assert_eq!(objects[0]["kind"], "Namespace");
        let labels = namespace_labels(&objects);
        let psa: BTreeMap<&str, &str> = labels
            .iter()
            .filter(|(k, _)| k.starts_with(POD_SECURITY_LABEL))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            psa,
            BTreeMap::from([
                ("pod-security.kubernetes.io/enforce", "baseline"),
                ("pod-security.kubernetes.io/enforce-version", "latest"),
            ])
        );
        assert_eq!(labels[CLUSTER_LABEL], "c1");
        assert_eq!(gate(&objects), "baseline");

        // warn / audit / version; privileged is labelled too, and turns vcsync's gate off.
        let objects = rendered(
            "podSecurity:\n  enforce: privileged\n  warn: restricted\n  audit: baseline\n  version: v1.33\n",
        )
        .unwrap();
        let labels = namespace_labels(&objects);
        for (key, value) in [
            ("enforce", "privileged"),
            ("enforce-version", "v1.33"),
            ("warn", "restricted"),
            ("warn-version", "v1.33"),
            ("audit", "baseline"),
            ("audit-version", "v1.33"),
        ] {
            assert_eq!(labels[&format!("{POD_SECURITY_LABEL}{key}")], value, "{key}");
        }
        assert_eq!(gate(&objects), "privileged");

        // "": no label, and the config's own gate (its default) decides.
        let objects = rendered("podSecurity:\n  enforce: \"\"\n").unwrap();
        assert!(
            !namespace_labels(&objects)
                .keys()
                .any(|k| k.starts_with(POD_SECURITY_LABEL))
        );
        assert_eq!(gate(&objects), gate(&render("c1", &Values::default()).unwrap()));
    }

    #[test]
    fn a_stricter_gate_of_the_config_is_kept_and_a_looser_one_or_a_bad_level_refused() {
        let objects =
            rendered("config:\n  sync:\n    pods:\n      podSecurityStandard: restricted\n").unwrap();
        assert_eq!(gate(&objects), "restricted");
        assert_eq!(
            namespace_labels(&objects)["pod-security.kubernetes.io/enforce"],
            "baseline"
        );
        for (values, expected) in [
            (
                "config:\n  sync:\n    pods:\n      podSecurityStandard: privileged\n",
                "privileged is looser than podSecurity.enforce: baseline",
            ),
            ("podSecurity:\n  enforce: restricted\n", "k3s runs as root"),
            (
                "podSecurity:\n  warn: strict\n",
                "podSecurity.warn: \"strict\" is not a Pod Security level",
            ),
            (
                "podSecurity:\n  version: \"1.30\"\n",
                "podSecurity.version: \"1.30\"",
            ),
            ("podSecurity:\n  level: baseline\n", "unknown field `level`"),
        ] {
            let err = Values::parse(values, "v")
                .and_then(|v| render("c1", &v))
                .unwrap_err();
            assert!(matches!(err, ClusterError::BadInput(_)), "{err}");
            assert!(err.to_string().contains(expected), "{values}: {err}");
        }
    }

    /// The control plane's own pod (k3s and vcsync) is admissible where the host enforces
    /// baseline (no privileged container, host namespace, hostPath or added capability); it is
    /// not under restricted (k3s runs as root), which `podSecurity.enforce` refuses.
    #[test]
    fn the_control_plane_pod_meets_baseline() {
        use vcsync_syncer::syncers::pods::security::{PodSecurityLevel, violations};
        for values in [
            "",
            "persistence:\n  enabled: false\ncontrolPlane:\n  serviceCidr: 10.43.0.0/16\n",
        ] {
            let values = Values::parse(values, "v").unwrap();
            let set = statefulset("c1", "vcsync-c1", &values);
            let pod = set.spec.template.spec.unwrap();
            assert_eq!(
                violations(PodSecurityLevel::Baseline, &pod, None),
                Vec::<String>::new()
            );
            assert!(!violations(PodSecurityLevel::Restricted, &pod, None).is_empty());
        }
    }

    /// `vcsync cluster service-ip` (the control plane's init container) against a real HTTP
    /// API server: it waits for the Service, answers its cluster IP, and says why it gave up.
    #[tokio::test]
    async fn the_service_ip_is_waited_for_and_a_missing_or_headless_service_is_explained() {
        use vcsync_apiserver::{ApiServer, ServerConfig};
        let server = ApiServer::start(ServerConfig::default()).await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = Client::try_from(config).unwrap();
        let services = Api::<Service>::namespaced(client.clone(), "default");
        let service = |name: &str, cluster_ip: Option<&str>| Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: cluster_ip.map(String::from),
                ports: Some(vec![ServicePort {
                    port: 443,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let timeout = std::time::Duration::from_secs(20);

        // Created while it waits (Helm and the driver create the Service before the pod).
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { wait_for_service_ip(&client, "default", "vcsync-c1", timeout).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let created = services
            .create(&PostParams::default(), &service("vcsync-c1", None))
            .await
            .unwrap();
        let ip = created.spec.unwrap().cluster_ip.unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), ip);

        let missing = wait_for_service_ip(&client, "default", "absent", std::time::Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("no cluster IP of Service default/absent within 1s: it does not exist"),
            "{missing}"
        );

        services
            .create(&PostParams::default(), &service("headless", Some("None")))
            .await
            .unwrap();
        let headless = wait_for_service_ip(&client, "default", "headless", timeout)
            .await
            .unwrap_err()
            .to_string();
        assert!(headless.contains("is headless"), "{headless}");
        server.shutdown().await;
    }
}
