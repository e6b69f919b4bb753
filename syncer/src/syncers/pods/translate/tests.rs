//! Translation rules, one table per rule, and a snapshot of a fully translated pod.

use rstest::rstest;
use serde_json::{Value, json};
use vcsync_translators::Ownership;

use super::*;
use crate::syncers::pods::{environment::ServiceLink, token::TokenMount};

fn translator(config: Value) -> PodTranslator {
    PodTranslator::new(
        NamespacedTranslator::new(Ownership::new("tenant-a").unwrap(), "host-ns"),
        serde_json::from_value(config).unwrap(),
    )
}

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "team", "uid": "uid-1"},
        "spec": spec
    }))
    .unwrap()
}

/// The host pod of a pod with `spec`, as JSON, in an empty environment.
fn host(spec: Value) -> Value {
    host_with(&translator(json!({})), spec, &PodEnvironment::default())
}

fn host_with(translator: &PodTranslator, spec: Value, env: &PodEnvironment) -> Value {
    serde_json::to_value(translator.host_pod(&pod(spec), env)).unwrap()
}

/// A pod exercising every rule: what tenants write, plus what a real API server's admission
/// adds (the kube-api-access volume, default tolerations).
fn rich_pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-0", "namespace": "shop", "uid": "0c1d-uid", "resourceVersion": "42",
            "labels": {"app": "web", "vcsync.dev/managed-by": "forged"},
            "annotations": {"team": "blue", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "ss-uid"}],
            "finalizers": ["example.com/keep"]
        },
        "spec": {
            "serviceAccountName": "builder",
            "serviceAccount": "builder",
            "nodeName": "node-1",
            "priorityClassName": "gold",
            "priority": 1000,
            "preemptionPolicy": "PreemptLowerPriority",
            "hostname": "web-0",
            "subdomain": "web",
            "imagePullSecrets": [{"name": "registry"}],
            "readinessGates": [{"conditionType": "example.com/lb-ready"}],
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}
                    ],
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 10, "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}]},
                            "namespaces": ["shop", "data"], "topologyKey": "topology.kubernetes.io/zone"}}
                    ]
                }
            },
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash", "vcsync.dev/x"]}
            ],
            "initContainers": [{"name": "migrate", "image": "web:1",
                "envFrom": [{"configMapRef": {"name": "settings"}}]}],
            "containers": [{
                "name": "app", "image": "web:1",
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "kube-api-access-x1", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
                ]
            }],
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}}
            ]
        },
        "status": {"phase": "Pending"}
    }))
    .unwrap()
}

#[test]
fn rich_pod_snapshot() {
    let translator = translator(json!({
        "extraTolerations": [{"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}],
        "extraNodeSelector": {"pool": "tenants"}
    }))
    .with_priority_classes(true);
    let env = PodEnvironment {
        kubernetes: Some(ServiceLink::kubernetes("10.96.0.1", 443)),
        services: vec![ServiceLink {
            name: "web".into(),
            host: "10.96.0.20".into(),
            ports: vec![crate::syncers::pods::environment::LinkPort {
                name: Some("http".into()),
                port: 80,
                protocol: "TCP".into(),
            }],
        }],
        dns_server: Some("10.96.0.10".into()),
        token: Some(TokenMount {
            secret_name: "web-0-x-shop.sa-token".into(),
            ca_cert: true,
        }),
        default_token_mount: false,
    };
    insta::assert_yaml_snapshot!(translator.host_pod(&rich_pod(), &env));
}

#[test]
fn host_metadata_is_translated_and_unforgeable() {
    let out = serde_json::to_value(translator(json!({})).host_pod(&rich_pod(), &PodEnvironment::default()))
        .unwrap();
    let meta = &out["metadata"];
    assert_eq!(meta["name"], "web-0-x-shop");
    assert_eq!(meta["namespace"], "host-ns");
    assert_eq!(meta["labels"]["vcsync.dev/managed-by"], "tenant-a");
    assert_eq!(meta["labels"]["vcsync.dev/namespace"], "shop");
    assert_eq!(meta["annotations"]["vcsync.dev/object-uid"], "0c1d-uid");
    assert_eq!(meta["annotations"][MANAGED_ANNOTATIONS], "team");
    assert_eq!(meta["annotations"][MANAGED_LABELS], "app");
    for absent in ["uid", "resourceVersion", "ownerReferences", "finalizers"] {
        assert!(meta.get(absent).is_none(), "{absent} copied to the host");
    }
    assert!(out.get("status").is_none());
}

#[rstest]
#[case::default_account(json!({"containers": []}), "default")]
#[case::named_account(json!({"serviceAccountName": "builder", "containers": []}), "default")]
fn host_pods_never_use_a_host_token(#[case] spec: Value, #[case] account: &str) {
    let out = host(spec);
    assert_eq!(out["spec"]["serviceAccountName"], account);
    assert_eq!(out["spec"]["automountServiceAccountToken"], false);
    assert!(out["spec"].get("serviceAccount").is_none());
}

#[test]
fn synced_service_accounts_are_translated() {
    let translator = translator(json!({})).with_service_accounts(true);
    let out = host_with(
        &translator,
        json!({"serviceAccountName": "builder", "containers": []}),
        &PodEnvironment::default(),
    );
    assert_eq!(out["spec"]["serviceAccountName"], "builder-x-team");
}

#[rstest]
#[case::dropped_when_not_synced(false, Some("gold"), None)]
#[case::translated(true, Some("gold"), Some("vcsync-tenant-a-x-gold"))]
#[case::system_node_critical_translated(
    true,
    Some("system-node-critical"),
    Some("vcsync-tenant-a-x-system-node-critical")
)]
#[case::system_cluster_critical_translated(
    true,
    Some("system-cluster-critical"),
    Some("vcsync-tenant-a-x-system-cluster-critical")
)]
#[case::system_dropped_when_not_synced(false, Some("system-node-critical"), None)]
#[case::none(true, None, None)]
fn priority_classes(#[case] synced: bool, #[case] class: Option<&str>, #[case] expected: Option<&str>) {
    let translator = translator(json!({})).with_priority_classes(synced);
    let out = host_with(
        &translator,
        json!({"priorityClassName": class, "priority": 5, "preemptionPolicy": "Never", "containers": []}),
        &PodEnvironment::default(),
    );
    assert_eq!(
        out["spec"].get("priorityClassName").and_then(Value::as_str),
        expected
    );
    assert!(
        out["spec"].get("priority").is_none(),
        "the host computes priority"
    );
    assert!(out["spec"].get("preemptionPolicy").is_none());
}

#[rstest]
#[case::kept(json!({"containers": [], "nodeSelector": {"a": "1"}}), json!({}), json!({"a": "1"}))]
#[case::extra(json!({"containers": []}), json!({"extraNodeSelector": {"pool": "t"}}), json!({"pool": "t"}))]
#[case::config_wins(json!({"containers": [], "nodeSelector": {"pool": "mine", "a": "1"}}),
    json!({"extraNodeSelector": {"pool": "t"}}), json!({"pool": "t", "a": "1"}))]
fn node_selectors(#[case] spec: Value, #[case] config: Value, #[case] expected: Value) {
    let out = host_with(&translator(config), spec, &PodEnvironment::default());
    assert_eq!(out["spec"]["nodeSelector"], expected);
}

#[rstest]
#[case::allowed_kept_and_extra(
    json!([{"key": "a", "operator": "Exists"}]),
    json!({"extraTolerations": [{"key": "t", "operator": "Exists"}], "tolerations": {"allow": [{"key": "a"}]}}),
    json!([{"key": "a", "operator": "Exists"}, {"key": "t", "operator": "Exists"}]))]
#[case::no_duplicates(
    json!([{"key": "t", "operator": "Exists"}]),
    json!({"extraTolerations": [{"key": "t", "operator": "Exists"}]}),
    json!([{"key": "t", "operator": "Exists"}]))]
#[case::default_keeps_default_toleration_seconds(
    json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
    json!({}),
    json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]))]
#[case::tolerate_everything_dropped(
    json!([{"operator": "Exists"}, {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]),
    json!({}),
    Value::Null)]
#[case::dropped_but_extra_stays(
    json!([{"operator": "Exists"}]),
    json!({"extraTolerations": [{"key": "t", "operator": "Exists"}]}),
    json!([{"key": "t", "operator": "Exists"}]))]
fn tolerations_are_filtered_plus_configured(
    #[case] tolerations: Value,
    #[case] config: Value,
    #[case] expected: Value,
) {
    let out = host_with(
        &translator(config),
        json!({"containers": [], "tolerations": tolerations}),
        &PodEnvironment::default(),
    );
    assert_eq!(out["spec"]["tolerations"], expected);
}

fn term(extra: Value) -> Value {
    let mut term = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"});
    json_patch::merge(&mut term, &extra);
    term
}

#[rstest]
#[case::own_namespace(json!({}), json!({"app": "db", "vcsync.dev/managed-by": "tenant-a", "vcsync.dev/namespace": "team"}), None)]
#[case::listed_own(json!({"namespaces": ["team"]}),
    json!({"app": "db", "vcsync.dev/managed-by": "tenant-a", "vcsync.dev/namespace": "team"}), None)]
#[case::listed_others(json!({"namespaces": ["team", "data"]}),
    json!({"app": "db", "vcsync.dev/managed-by": "tenant-a"}),
    Some(json!([{"key": "vcsync.dev/namespace", "operator": "In", "values": ["data", "team"]}])))]
#[case::all_namespaces(json!({"namespaceSelector": {}}),
    json!({"app": "db", "vcsync.dev/managed-by": "tenant-a"}), None)]
#[case::labelled_namespaces_mean_own(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}),
    json!({"app": "db", "vcsync.dev/managed-by": "tenant-a", "vcsync.dev/namespace": "team"}), None)]
fn affinity_terms_select_the_same_pods_on_the_host(
    #[case] extra: Value,
    #[case] match_labels: Value,
    #[case] match_expressions: Option<Value>,
) {
    let out = host(json!({"containers": [], "affinity": {
        "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term(extra.clone())]},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": term(extra)}]}
    }}));
    let affinity = &out["spec"]["affinity"];
    for translated in [
        &affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0],
        &affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"],
    ] {
        assert_eq!(translated["labelSelector"]["matchLabels"], match_labels);
        assert_eq!(
            translated["labelSelector"].get("matchExpressions"),
            match_expressions.as_ref()
        );
        assert!(translated.get("namespaces").is_none() && translated.get("namespaceSelector").is_none());
        assert_eq!(translated["topologyKey"], "zone");
    }
}

#[test]
fn nil_affinity_selector_stays_nil() {
    let out = host(json!({"containers": [], "affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}}}));
    let term = &out["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert!(term.get("labelSelector").is_none());
}

#[test]
fn topology_spread_selectors_are_translated() {
    let out = host(json!({"containers": [], "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev", "vcsync.dev/namespace"]}]}));
    let constraint = &out["spec"]["topologySpreadConstraints"][0];
    assert_eq!(
        constraint["labelSelector"]["matchLabels"],
        json!({"app": "web", "vcsync.dev/managed-by": "tenant-a", "vcsync.dev/namespace": "team"})
    );
    assert_eq!(constraint["matchLabelKeys"], json!(["rev"]));
}

#[rstest]
#[case::no_affinity(json!({"containers": [], "nodeName": "n1"}),
    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]))]
#[case::anded_with_existing_terms(json!({"containers": [], "nodeName": "n1", "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}),
    json!([
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
         "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}],
         "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]))]
fn a_preset_node_name_becomes_a_node_affinity(#[case] spec: Value, #[case] terms: Value) {
    let out = host(spec);
    assert!(out["spec"].get("nodeName").is_none(), "the host schedules");
    assert_eq!(
        out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        terms
    );
}

/// The documented rule: naming a host node never bypasses the host scheduler, and only
/// narrows what the configured node selector and the filtered tolerations allow.
#[test]
fn naming_a_host_node_only_narrows_where_the_host_scheduler_may_place_the_pod() {
    let translator = translator(json!({"extraNodeSelector": {"pool": "tenants"}}));
    let out = host_with(
        &translator,
        json!({"containers": [], "nodeName": "control-plane-1",
            "nodeSelector": {"pool": "system", "kubernetes.io/hostname": "control-plane-1"},
            "tolerations": [{"operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["control-plane-1"]}]}]}}}}),
        &PodEnvironment::default(),
    );
    assert!(out["spec"].get("nodeName").is_none(), "never bound directly");
    assert_eq!(
        out["spec"]["nodeSelector"],
        json!({"pool": "tenants", "kubernetes.io/hostname": "control-plane-1"}),
        "the configured selector wins and is ANDed with the tenant's"
    );
    assert_eq!(
        out["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["control-plane-1"]}],
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["control-plane-1"]}]}])
    );
    assert!(
        out["spec"].get("tolerations").is_none(),
        "the tolerate-everything toleration is dropped"
    );
}

#[test]
fn daemon_set_pods_keep_their_node_affinity() {
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}]}}});
    let out = host(json!({"containers": [], "affinity": affinity.clone()}));
    assert_eq!(out["spec"]["affinity"], affinity);
}

#[rstest]
#[case::cluster_first(json!({"containers": []}), true)]
#[case::explicit_cluster_first(json!({"containers": [], "dnsPolicy": "ClusterFirst"}), true)]
#[case::default_policy(json!({"containers": [], "dnsPolicy": "Default"}), false)]
#[case::host_network(json!({"containers": [], "hostNetwork": true}), false)]
fn dns_goes_to_the_virtual_cluster_for_cluster_first_pods(#[case] spec: Value, #[case] virtual_dns: bool) {
    let env = PodEnvironment {
        dns_server: Some("10.0.0.10".into()),
        ..PodEnvironment::default()
    };
    let out = host_with(&translator(json!({})), spec.clone(), &env);
    if virtual_dns {
        assert_eq!(out["spec"]["dnsPolicy"], "None");
        assert_eq!(out["spec"]["dnsConfig"]["nameservers"], json!(["10.0.0.10"]));
        assert_eq!(out["spec"]["dnsConfig"]["searches"][0], "team.svc.cluster.local");
    } else {
        assert_eq!(out["spec"].get("dnsPolicy"), spec.get("dnsPolicy"));
        assert!(out["spec"].get("dnsConfig").is_none());
    }
}

#[test]
fn without_a_dns_service_the_pods_settings_stay() {
    let out = host(json!({"containers": [], "dnsPolicy": "ClusterFirst"}));
    assert_eq!(out["spec"]["dnsPolicy"], "ClusterFirst");
}

#[rstest]
#[case::links(json!({"containers": [{"name": "c"}]}), true)]
#[case::no_links(json!({"containers": [{"name": "c"}], "enableServiceLinks": false}), false)]
fn service_variables(#[case] spec: Value, #[case] links: bool) {
    let env = PodEnvironment {
        kubernetes: Some(ServiceLink::kubernetes("10.0.0.1", 443)),
        services: vec![ServiceLink::kubernetes("10.0.0.2", 80)]
            .into_iter()
            .map(|mut s| {
                s.name = "api".into();
                s
            })
            .collect(),
        ..PodEnvironment::default()
    };
    let out = host_with(&translator(json!({})), spec, &env);
    assert_eq!(out["spec"]["enableServiceLinks"], false, "no host service links");
    let names: Vec<&str> = out["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"KUBERNETES_SERVICE_HOST"),
        "always, like the kubelet's master service"
    );
    assert_eq!(names.contains(&"API_SERVICE_HOST"), links);
}

#[rstest]
#[case::name("web-0", json!({}), Some("web-0"), None)]
#[case::own_hostname("web-0", json!({"hostname": "h"}), Some("h"), None)]
#[case::dotted_name("web.v2", json!({}), None, None)]
#[case::subdomain("web-0", json!({"subdomain": "web"}), Some("web-0"), Some("web-x-team"))]
fn hostnames_are_the_virtual_ones(
    #[case] name: &str,
    #[case] extra: Value,
    #[case] hostname: Option<&str>,
    #[case] subdomain: Option<&str>,
) {
    let mut spec = json!({"containers": []});
    json_patch::merge(&mut spec, &extra);
    let mut virt = pod(spec);
    virt.metadata.name = Some(name.into());
    let out =
        serde_json::to_value(translator(json!({})).host_pod(&virt, &PodEnvironment::default())).unwrap();
    assert_eq!(out["spec"].get("hostname").and_then(Value::as_str), hostname);
    assert_eq!(out["spec"].get("subdomain").and_then(Value::as_str), subdomain);
}

#[test]
fn fields_the_host_owns_or_refuses_are_dropped() {
    let out = host(json!({
        "containers": [{"name": "c"}],
        "ephemeralContainers": [{"name": "debug"}],
        "overhead": {"cpu": "10m"},
        "readinessGates": [{"conditionType": "x"}]
    }));
    for absent in ["ephemeralContainers", "overhead", "readinessGates", "nodeName"] {
        assert!(out["spec"].get(absent).is_none(), "{absent} sent to the host");
    }
}

#[test]
fn mutable_fields_cover_images_of_all_containers() {
    let fields = translator(json!({})).mutable_fields(&pod(json!({
        "containers": [{"name": "app", "image": "app:2"}],
        "initContainers": [{"name": "init", "image": "init:1"}],
        "activeDeadlineSeconds": 60,
        "schedulingGates": [{"name": "wait"}]
    })));
    assert_eq!(
        fields.images,
        BTreeMap::from([("app".into(), "app:2".into()), ("init".into(), "init:1".into())])
    );
    assert_eq!(fields.active_deadline_seconds, Some(60));
    assert_eq!(fields.scheduling_gates.len(), 1);
    assert_eq!(fields.annotations[SERVICE_ACCOUNT_ANNOTATION], "default");
}
