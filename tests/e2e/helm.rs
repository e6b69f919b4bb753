//! The Helm chart (deploy/chart/vcsync) renders, with real `helm template`, the same host
//! objects as `vcsync cluster render` (the `kubernetes` driver) for the same values, every
//! document parsing into its k8s-openapi type.
//!
//! helm is taken from `VCSYNC_HELM` or `PATH`; CI installs it from the npm registry (.ci/run).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount},
    networking::v1::{Ingress, NetworkPolicy},
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde::Deserialize;
use serde_json::Value;
use vcsync_syncer::config::ServiceAddress;

pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn helm() -> String {
    std::env::var("VCSYNC_HELM").unwrap_or_else(|_| "helm".into())
}

fn output(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err} (install helm or set VCSYNC_HELM)"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every document, checked against its k8s-openapi type, keyed by kind, namespace and name.
fn documents(yaml: &str) -> BTreeMap<(String, String, String), Value> {
    let mut objects = BTreeMap::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_string();
        // Round trip through the typed object: unknown or mistyped fields fail here, and both
        // sides end up in one canonical form.
        fn typed<K: serde::de::DeserializeOwned + serde::Serialize>(value: Value) -> Value {
            serde_json::to_value(serde_json::from_value::<K>(value).unwrap()).unwrap()
        }
        let canonical = match kind.as_str() {
            "Namespace" => typed::<Namespace>(value),
            "ServiceAccount" => typed::<ServiceAccount>(value),
            "Role" => typed::<Role>(value),
            "RoleBinding" => typed::<RoleBinding>(value),
            "ClusterRole" => typed::<ClusterRole>(value),
            "ClusterRoleBinding" => typed::<ClusterRoleBinding>(value),
            "Secret" => typed::<Secret>(value),
            "ConfigMap" => typed::<ConfigMap>(value),
            "Service" => typed::<Service>(value),
            "StatefulSet" => typed::<StatefulSet>(value),
            "ResourceQuota" => typed::<ResourceQuota>(value),
            "LimitRange" => typed::<LimitRange>(value),
            "NetworkPolicy" => typed::<NetworkPolicy>(value),
            "Ingress" => typed::<Ingress>(value),
            other => panic!("unexpected kind {other}"),
        };
        let meta = &canonical["metadata"];
        let key = (
            kind,
            meta["namespace"].as_str().unwrap_or_default().to_string(),
            meta["name"].as_str().unwrap().to_string(),
        );
        objects.insert(key, canonical);
    }
    objects
}

/// What may differ between the two renderings: who manages the objects, the order and grouping
/// of RBAC rules (compared as (group, resource, verb, names) grants), the text of vcsync.yaml
/// (compared as the configuration it parses into) and the driver's copy of its values.
fn normalize(kind: &str, mut object: Value) -> Value {
    for labels in [object.pointer_mut("/metadata/labels")].into_iter().flatten() {
        labels
            .as_object_mut()
            .unwrap()
            .remove("app.kubernetes.io/managed-by");
    }
    if let Some(labels) = object.pointer_mut("/spec/template/metadata/labels") {
        labels
            .as_object_mut()
            .unwrap()
            .remove("app.kubernetes.io/managed-by");
    }
    match kind {
        "Role" | "ClusterRole" => {
            let rules: Vec<PolicyRule> = serde_json::from_value(object["rules"].take()).unwrap_or_default();
            let grants: BTreeSet<(String, String, String, Vec<String>)> = rules
                .iter()
                .flat_map(|rule| {
                    let groups = rule.api_groups.clone().unwrap_or_default();
                    let resources = rule.resources.clone().unwrap_or_default();
                    let names = rule.resource_names.clone().unwrap_or_default();
                    groups.into_iter().flat_map(move |g| {
                        let names = names.clone();
                        let verbs = rule.verbs.clone();
                        resources.clone().into_iter().flat_map(move |r| {
                            let (g, names) = (g.clone(), names.clone());
                            verbs
                                .clone()
                                .into_iter()
                                .map(move |v| (g.clone(), r.clone(), v, names.clone()))
                        })
                    })
                })
                .collect();
            object["rules"] = serde_json::to_value(grants).unwrap();
        }
        "Secret" => {
            let data = object["data"].as_object_mut().unwrap();
            data.remove("values.yaml");
            let encoded = data
                .remove("vcsync.yaml")
                .expect("the config secret holds vcsync.yaml");
            let bytes: k8s_openapi::ByteString = serde_json::from_value(encoded).unwrap();
            let text = String::from_utf8(bytes.0).unwrap();
            let config = vcsync_syncer::Config::from_yaml(&text, "vcsync.yaml").unwrap();
            object["data"]["vcsync.yaml"] = serde_json::to_value(config).unwrap();
        }
        _ => {}
    }
    object
}

fn compare(values: &Path) {
    compare_in("vcluster-my-vcluster", values);
}

/// `helm template` of the chart with `values`, the release in `release_namespace`.
fn chart(release_namespace: &str, values: &Path) -> Command {
    let mut command = Command::new(helm());
    command
        .args(["template", "my-vcluster"])
        .arg(root().join("deploy/chart/vcsync"))
        .args(["--namespace", release_namespace, "-f"])
        .arg(values);
    command
}

fn driver_render(values: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vcsync"));
    command
        .args(["cluster", "render", "my-vcluster", "-q", "-f"])
        .arg(values);
    command
}

/// The chart (release in `release_namespace`) and the driver render the same objects for
/// `values`; the driver's Namespace only when the chart renders one (`createNamespace`).
fn compare_in(release_namespace: &str, values: &Path) {
    let chart = output(&mut chart(release_namespace, values));
    let driver = output(&mut driver_render(values));
    let mut from_driver = documents(&driver);
    let from_chart = documents(&chart);
    // Helm installs into an existing namespace unless the values ask it to make it; the driver
    // always makes it.
    if !from_chart.keys().any(|(kind, _, _)| kind == "Namespace") {
        from_driver.retain(|(kind, _, _), _| kind != "Namespace");
    }
    assert_eq!(
        from_chart.keys().collect::<Vec<_>>(),
        from_driver.keys().collect::<Vec<_>>(),
        "the chart and the driver make the same objects"
    );
    for ((kind, namespace, name), object) in from_chart {
        let key = (kind.clone(), namespace, name);
        let expected = normalize(&kind, from_driver[&key].clone());
        assert_eq!(normalize(&kind, object), expected, "{key:?} differs");
    }
}

#[test]
fn the_chart_renders_what_the_kubernetes_driver_applies_for_the_example_values() {
    compare(&root().join("deploy/examples/values.yaml"));
}

#[test]
fn the_chart_and_driver_own_the_host_copies_by_a_config_map_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    let owner_of = |objects: &BTreeMap<(String, String, String), Value>| {
        let owner = objects
            .keys()
            .find(|(kind, _, _)| kind == "ConfigMap")
            .map(|(_, _, name)| name.clone());
        let config = objects
            .iter()
            .find(|((kind, _, name), _)| kind == "Secret" && name.ends_with("-config"))
            .map(|(_, secret)| secret["data"]["vcsync.yaml"].clone())
            .unwrap();
        (owner, config["hostOwner"].as_str().map(str::to_string))
    };
    for (text, expected) in [
        (
            "namespace: vcluster-my-vcluster
",
            (Some("vcsync-my-vcluster-owner"), Some("vcsync-my-vcluster-owner")),
        ),
        (
            "namespace: vcluster-my-vcluster
setOwner: false
",
            (None, None),
        ),
        (
            "namespace: vcluster-my-vcluster
config:
  hostOwner: my-anchor
",
            (None, Some("my-anchor")),
        ),
    ] {
        std::fs::write(&values, text).unwrap();
        compare(&values);
        let rendered: BTreeMap<_, _> = documents(&output(&mut driver_render(&values)))
            .into_iter()
            .map(|(key, object)| {
                let object = normalize(&key.0, object);
                (key, object)
            })
            .collect();
        let (owner, configured) = owner_of(&rendered);
        assert_eq!((owner.as_deref(), configured.as_deref()), expected, "{text}");
    }
}

#[test]
fn the_chart_follows_the_config_into_rbac_in_the_per_namespace_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "namespace: vcluster-my-vcluster\nreplicas: 2\ncontrolPlane:\n  extraArgs: [--debug]\n\
         config:\n  namespaceMapping: perNamespace\n  sync:\n    events: {enabled: false}\n    \
         priorityClasses: {enabled: true}\n    ingresses: {enabled: true}\n    storageClasses: {enabled: false}\n",
    )
    .unwrap();
    compare(&values);
}

#[test]
fn the_chart_and_driver_render_the_isolation_objects_alike_with_values_merged_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "namespace: vcluster-my-vcluster\nisolation:\n  resourceQuota:\n    enabled: true\n    hard:\n      \
         count/pods: \"10\"\n      services.loadbalancers: null\n  limitRange:\n    enabled: true\n    \
         default: {memory: 2Gi}\n  networkPolicy:\n    enabled: true\n    outgoingExcept: [10.0.0.0/8]\n",
    )
    .unwrap();
    compare(&values);
    let objects = documents(&output(&mut chart("vcluster-my-vcluster", &values)));
    let get = |kind: &str, name: &str| {
        objects[&(
            kind.to_string(),
            "vcluster-my-vcluster".to_string(),
            name.to_string(),
        )]
            .clone()
    };
    let hard = &get("ResourceQuota", "vcsync-my-vcluster")["spec"]["hard"];
    assert_eq!(
        (hard["count/pods"].as_str(), hard["requests.cpu"].as_str()),
        (Some("10"), Some("10"))
    );
    assert!(
        hard.get("services.loadbalancers").is_none(),
        "null removes a default"
    );
    let limits = &get("LimitRange", "vcsync-my-vcluster")["spec"]["limits"][0];
    assert_eq!(
        (
            limits["default"]["memory"].as_str(),
            limits["default"]["cpu"].as_str()
        ),
        (Some("2Gi"), Some("1"))
    );
    let policy = get("NetworkPolicy", "vcsync-my-vcluster-workloads");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["vcsync.dev/managed-by"],
        "my-vcluster"
    );
    assert_eq!(
        policy["spec"]["egress"][2]["to"][0]["ipBlock"]["except"],
        serde_json::json!(["10.0.0.0/8"])
    );
}

#[test]
fn the_chart_and_driver_expose_the_api_server_alike() {
    let rendered = render_checked(
        "namespace: vcsync-my-vcluster\ncontrolPlane:\n  service:\n    type: LoadBalancer\n    nodePort: 31443\n    annotations: {lb.example/internal: \"true\"}\n  \
         extraSans: [203.0.113.7]\n  ingress:\n    enabled: true\n    host: demo.example.com\n    ingressClassName: nginx\n",
    );
    let script = script(&rendered.set);
    assert!(
        script.contains("'--tls-san=203.0.113.7' '--tls-san=demo.example.com'"),
        "{script}"
    );
}

/// What [`render_checked`] returns of the driver's objects.
struct Rendered {
    set: StatefulSet,
    role: Role,
    cluster_role: ClusterRole,
    config: vcsync_syncer::Config,
}

/// Renders `values` with `vcsync cluster render` after checking the chart makes the same
/// objects; returns the driver's StatefulSet, control-plane Role, ClusterRole and vcsync.yaml.
fn render_checked(values: &str) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, values).unwrap();
    compare(&path);
    let driver = output(
        Command::new(env!("CARGO_BIN_EXE_vcsync"))
            .args(["cluster", "render", "my-vcluster", "-q", "-f"])
            .arg(&path),
    );
    let objects = documents(&driver);
    let get = |kind: &str, ns: &str, name: &str| {
        objects[&(kind.to_string(), ns.to_string(), name.to_string())].clone()
    };
    let ns = "vcsync-my-vcluster";
    let secret: Secret = serde_json::from_value(get("Secret", ns, "vcsync-my-vcluster-config")).unwrap();
    let config = String::from_utf8(secret.data.unwrap()["vcsync.yaml"].0.clone()).unwrap();
    Rendered {
        set: serde_json::from_value(get("StatefulSet", ns, "vcsync-my-vcluster")).unwrap(),
        role: serde_json::from_value(get("Role", ns, "vcsync-my-vcluster-control-plane")).unwrap(),
        cluster_role: serde_json::from_value(get("ClusterRole", "", "vcsync-my-vcluster")).unwrap(),
        config: vcsync_syncer::Config::from_yaml(&config, "vcsync.yaml").unwrap(),
    }
}

fn script(set: &StatefulSet) -> String {
    let pod = set.spec.template.spec.clone().unwrap();
    pod.containers[0].command.as_ref().unwrap()[2].clone()
}

fn grants(rules: &Option<Vec<PolicyRule>>, resource: &str) -> Vec<String> {
    rules
        .iter()
        .flatten()
        .filter(|r| r.resources.iter().flatten().any(|x| x == resource))
        .flat_map(|r| r.verbs.clone())
        .collect()
}

#[test]
fn the_chart_and_driver_keep_the_datastore_on_a_claim_detect_the_service_cidr_and_run_dns_by_default() {
    let Rendered {
        set,
        role,
        cluster_role,
        ..
    } = render_checked("namespace: vcsync-my-vcluster\n");
    let spec = &set.spec;
    let claims = spec.volume_claim_templates.as_ref().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
    let claim = claims[0].spec.as_ref().unwrap();
    assert_eq!(
        claim.access_modes.as_deref(),
        Some(&["ReadWriteOnce".to_string()][..])
    );
    assert_eq!(claim.storage_class_name, None, "the host's default class");
    assert_eq!(
        claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
        "5Gi"
    );
    let policy = spec.persistent_volume_claim_retention_policy.as_ref().unwrap();
    assert_eq!(
        (policy.when_deleted.as_deref(), policy.when_scaled.as_deref()),
        (Some("Delete"), Some("Retain"))
    );
    let pod = spec.template.spec.as_ref().unwrap();
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert!(
        !volumes.contains(&"data"),
        "no emptyDir for the datastore: {volumes:?}"
    );
    // The service CIDR: detected by the init container, read by the start script.
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(init[0].image.as_deref(), Some("vcsync:0.1.0"));
    assert_eq!(
        init[0].args.as_deref().unwrap(),
        [
            "cluster",
            "detect-service-cidr",
            "--namespace",
            "vcsync-my-vcluster",
            "--output",
            "/run/vcsync/service-cidr"
        ]
    );
    let script = script(&set);
    assert!(
        script.contains("SERVICE_CIDR=$(cat /run/vcsync/service-cidr)")
            && script.contains("\"--service-cidr=$SERVICE_CIDR\""),
        "{script}"
    );
    assert!(script.contains("rm -f /data/kubeconfig.yaml"), "{script}");
    // DNS: k3s's CoreDNS is not disabled.
    assert!(
        script.contains("'--disable=traefik,servicelb,metrics-server,local-storage'"),
        "{script}"
    );
    assert!(!script.contains("coredns"), "{script}");
    // The rights the probe needs (and the reads of the cluster's Service).
    assert_eq!(grants(&role.rules, "services"), ["get", "create"]);
    assert_eq!(grants(&cluster_role.rules, "servicecidrs"), ["get", "list"]);
}

#[test]
fn the_chart_and_driver_render_throwaway_clusters_an_explicit_service_cidr_and_no_dns() {
    let Rendered {
        set,
        role,
        cluster_role,
        ..
    } = render_checked(
        "namespace: vcsync-my-vcluster\ncontrolPlane:\n  serviceCidr: 10.43.0.0/16\n\
         persistence:\n  enabled: false\ndns:\n  enabled: false\n",
    );
    let spec = &set.spec;
    assert_eq!(spec.volume_claim_templates, None);
    assert_eq!(spec.persistent_volume_claim_retention_policy, None);
    let pod = spec.template.spec.as_ref().unwrap();
    let data = pod.volumes.iter().flatten().find(|v| v.name == "data").unwrap();
    assert!(data.empty_dir.is_some());
    let init: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["service-ip"], "nothing to detect but the Service's IP");
    let script = script(&set);
    assert!(script.contains("'--service-cidr=10.43.0.0/16'"), "{script}");
    assert!(!script.contains("SERVICE_CIDR"), "{script}");
    assert!(script.contains(",coredns'"), "{script}");
    assert_eq!(grants(&role.rules, "services"), ["get"]);
    assert!(grants(&cluster_role.rules, "servicecidrs").is_empty());
}

#[test]
fn the_chart_and_driver_take_the_claims_size_class_and_access_modes() {
    let Rendered { set, .. } = render_checked(
        "namespace: vcsync-my-vcluster\npersistence:\n  size: 20Gi\n  storageClass: fast\n  \
         accessModes: [ReadWriteOncePod]\n",
    );
    let claim = set.spec.volume_claim_templates.unwrap()[0].spec.clone().unwrap();
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(claim.access_modes.unwrap(), ["ReadWriteOncePod"]);
    assert_eq!(claim.resources.unwrap().requests.unwrap()["storage"].0, "20Gi");
}

/// Synced pods (CoreDNS among them) reach the virtual API server at the cluster IP of the
/// cluster's Service, not at the virtual `default/kubernetes` IP (the host's own API server on
/// the host); the init container `service-ip` waits for that IP and k3s's certificate names it.
#[test]
fn the_chart_and_driver_point_synced_pods_at_the_service_in_front_of_the_virtual_api_server() {
    for extra in ["", "controlPlane:\n  serviceCidr: 10.43.0.0/16\n"] {
        points_synced_pods_at_the_service(extra);
    }
}

fn points_synced_pods_at_the_service(extra: &str) {
    let Rendered {
        set, role, config, ..
    } = render_checked(&format!("namespace: vcsync-my-vcluster\n{extra}"));
    assert_eq!(
        config.sync.pods.kubernetes_service,
        Some(ServiceAddress::host_service("vcsync-my-vcluster", 443))
    );
    let pod = set.spec.template.spec.clone().unwrap();
    let init = pod.init_containers.as_ref().unwrap();
    let service_ip = init.last().unwrap();
    assert_eq!(service_ip.name, "service-ip");
    assert_eq!(
        service_ip.args.as_deref().unwrap(),
        [
            "cluster",
            "service-ip",
            "vcsync-my-vcluster",
            "--namespace",
            "vcsync-my-vcluster",
            "--output",
            "/run/vcsync/service-ip"
        ]
    );
    // The init containers write into a volume the control plane reads.
    for container in init.iter().chain(&pod.containers[..1]) {
        let mounts = container.volume_mounts.as_ref().unwrap();
        let detected = mounts.iter().find(|m| m.name == "detected").unwrap();
        assert_eq!(detected.mount_path, "/run/vcsync", "{}", container.name);
        assert_eq!(
            detected.read_only,
            (container.name == "control-plane").then_some(true),
            "{}",
            container.name
        );
    }
    assert!(
        pod.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "detected" && v.empty_dir.is_some())
    );
    let script = script(&set);
    assert!(
        script.contains("SERVICE_IP=$(cat /run/vcsync/service-ip)\n")
            && script
                .contains("'--tls-san=vcsync-my-vcluster.vcsync-my-vcluster.svc' \"--tls-san=$SERVICE_IP\""),
        "{script}"
    );
    // Reading the Service: that one only.
    let rule = role
        .rules
        .iter()
        .flatten()
        .find(|r| r.resources.iter().flatten().any(|x| x == "services") && r.verbs == ["get"])
        .unwrap();
    assert_eq!(
        rule.resource_names.as_deref(),
        Some(&["vcsync-my-vcluster".to_string()][..])
    );
}

#[test]
fn the_chart_and_driver_keep_a_kubernetes_service_the_config_names() {
    let Rendered { config, .. } = render_checked(
        "namespace: vcsync-my-vcluster\nconfig:\n  sync:\n    pods:\n      \
         kubernetesService: {host: 10.0.0.9, port: 6443}\n      extraNodeSelector: {pool: tenants}\n",
    );
    assert_eq!(
        config.sync.pods.kubernetes_service,
        Some(ServiceAddress::host("10.0.0.9", 6443))
    );
    assert_eq!(config.sync.pods.extra_node_selector["pool"], "tenants");
}

/// vcsync.yaml's `sync.pods.podSecurityStandard`, as configured.
fn pod_security_standard(config: &vcsync_syncer::Config) -> Value {
    serde_json::to_value(&config.sync.pods).unwrap()["podSecurityStandard"].clone()
}

fn pod_security_labels(namespace: &Namespace) -> BTreeMap<String, String> {
    namespace
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .collect()
}

/// Both gates agree: the host namespace enforces baseline (Pod Security Admission labels) and
/// vcsync's own gate is baseline too; the chart renders the namespace when asked to (for a
/// namespace other than the release's), with the same labels as the driver.
#[test]
fn the_chart_and_driver_label_the_host_namespace_for_pod_security_and_set_vcsyncs_gate_alike() {
    let Rendered { config, .. } = render_checked("namespace: vcsync-my-vcluster\n");
    assert_eq!(pod_security_standard(&config), "baseline");

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    for (text, labels, gate) in [
        (
            "",
            vec![("enforce", "baseline"), ("enforce-version", "latest")],
            "baseline",
        ),
        (
            "podSecurity:\n  enforce: privileged\n  warn: restricted\n  version: v1.33\n",
            vec![
                ("enforce", "privileged"),
                ("enforce-version", "v1.33"),
                ("warn", "restricted"),
                ("warn-version", "v1.33"),
            ],
            "privileged",
        ),
        (
            "podSecurity:\n  audit: restricted\nconfig:\n  sync:\n    pods:\n      podSecurityStandard: restricted\n",
            vec![
                ("enforce", "baseline"),
                ("enforce-version", "latest"),
                ("audit", "restricted"),
                ("audit-version", "latest"),
            ],
            "restricted",
        ),
        ("podSecurity:\n  enforce: \"\"\n", vec![], "baseline"),
    ] {
        std::fs::write(
            &values,
            format!("namespace: tenant-a\ncreateNamespace: true\n{text}"),
        )
        .unwrap();
        compare_in("vcsync-system", &values);
        let objects = documents(&output(&mut chart("vcsync-system", &values)));
        let namespace: Namespace =
            serde_json::from_value(objects[&("Namespace".into(), String::new(), "tenant-a".into())].clone())
                .unwrap();
        let expected: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (format!("pod-security.kubernetes.io/{k}"), v.to_string()))
            .collect();
        assert_eq!(pod_security_labels(&namespace), expected, "{text}");
        let secret: Secret = serde_json::from_value(
            objects[&(
                "Secret".into(),
                "tenant-a".into(),
                "vcsync-my-vcluster-config".into(),
            )]
                .clone(),
        )
        .unwrap();
        let config = String::from_utf8(secret.data.unwrap()["vcsync.yaml"].0.clone()).unwrap();
        let config = vcsync_syncer::Config::from_yaml(&config, "vcsync.yaml").unwrap();
        assert_eq!(pod_security_standard(&config), gate, "{text}");
    }
}

/// Both refuse the same values: levels they do not know, a host that would refuse the control
/// plane's own pod (restricted), a vcsync gate looser than the host's, and (the chart) a
/// namespace to create that Helm's release record needs before.
#[test]
fn the_chart_and_driver_refuse_pod_security_values_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    for (text, expected) in [
        ("podSecurity:\n  enforce: restricted\n", "k3s runs as root"),
        (
            "podSecurity:\n  warn: strict\n",
            "podSecurity.warn: \"strict\" is not a Pod Security level",
        ),
        (
            "podSecurity:\n  version: \"1.30\"\n",
            "podSecurity.version: \"1.30\" is not a version",
        ),
        (
            "config:\n  sync:\n    pods:\n      podSecurityStandard: privileged\n",
            "privileged is looser than podSecurity.enforce: baseline",
        ),
        (
            "isolation:\n  resourceQuota: {enabled: true}\n",
            "enable isolation.limitRange too",
        ),
        (
            "controlPlane:\n  service: {type: External}\n",
            "controlPlane.service.type: \"External\" is not one of",
        ),
        (
            "controlPlane:\n  ingress: {enabled: true}\n",
            "controlPlane.ingress.enabled needs controlPlane.ingress.host",
        ),
        (
            "controlPlane:\n  extraSans: [\"a b\"]\n",
            "controlPlane.extraSans: \"a b\" is not a DNS name",
        ),
    ] {
        std::fs::write(&values, text).unwrap();
        for mut command in [chart("vcsync-system", &values), driver_render(&values)] {
            let out = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains(expected),
                "{command:?} {text}: {stderr}"
            );
        }
    }
    std::fs::write(&values, "namespace: vcsync-system\ncreateNamespace: true\n").unwrap();
    let out = chart("vcsync-system", &values).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Helm keeps the release in namespace vcsync-system"),
        "{stderr}"
    );
}
