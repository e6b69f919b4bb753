//! Tests of the `sync.services` policy (`policy.rs`).

use k8s_openapi::api::core::v1::EndpointAddress;
use rstest::rstest;
use serde_json::json;

use super::*;

fn config(yaml: &str) -> ServicesConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[rstest]
#[case("203.0.113.0/24", "203.0.113.7", true)]
#[case("203.0.113.0/24", "203.0.114.1", false)]
#[case("203.0.113.9", "203.0.113.9", true)]
#[case("203.0.113.9", "203.0.113.8", false)]
#[case("0.0.0.0/0", "8.8.8.8", true)]
#[case("0.0.0.0/0", "2001:db8::1", false)]
#[case("10.0.0.0/8", "::ffff:10.1.2.3", true)]
#[case("2001:db8::/32", "2001:db8:ffff::1", true)]
#[case("2001:db8::/32", "2001:db9::1", false)]
#[case("::/0", "fe80::1", true)]
fn ranges_contain_addresses(#[case] range: &str, #[case] ip: &str, #[case] inside: bool) {
    let range: IpRange = range.parse().unwrap();
    assert_eq!(range.contains(ip.parse().unwrap()), inside, "{range} {ip}");
}

#[rstest]
#[case("203.0.113.0/33", "the prefix length must be 0 to 32")]
#[case("2001:db8::/129", "the prefix length must be 0 to 128")]
#[case("203.0.113.0/x", "the prefix length must be 0 to 32")]
#[case("203.0.113/24", "\"203.0.113\" is not an IP address")]
#[case("example.com", "is not an IP address")]
#[case("203.0.113.5/24", "host bits are set (the range is 203.0.113.0/24)")]
fn bad_ranges_are_named(#[case] text: &str, #[case] error: &str) {
    let err = text.parse::<IpRange>().unwrap_err();
    assert!(err.contains(&format!("{text:?}")), "{err}");
    assert!(err.contains(error), "{err}");
}

#[test]
fn a_bad_range_in_the_configuration_is_a_config_error_naming_it() {
    let err = crate::Config::from_yaml(
        "instance: a\nhostNamespace: b\nsync:\n  services:\n    allowedExternalIPs: [203.0.113.0/24, 10.0.0.1/8]\n",
        "f.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("f.yaml:5:"), "{err}");
    assert!(err.contains("sync.services.allowedExternalIPs"), "{err}");
    assert!(err.contains("\"10.0.0.1/8\""), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn defaults_and_a_full_section() {
    let default = crate::Config::from_yaml("instance: a\nhostNamespace: b\n", "f").unwrap();
    assert_eq!(default.sync.services, ServicesConfig::default());
    let full = config(
        "enabled: true\nallowedExternalIPs: [203.0.113.0/24]\nallowedTypes: [ClusterIP, ExternalName]\n\
         allowedLoadBalancerClasses: [example.com/lb]\nallowedAnnotations: [prometheus.io/*]\n\
         allowedEndpointRanges: [192.0.2.0/24, 169.254.20.10/32]\n",
    );
    assert_eq!(
        full.allowed_types,
        [ServiceType::ClusterIP, ServiceType::ExternalName]
    );
    assert_eq!(full.allowed_endpoint_ranges.len(), 2);
    // Written back, it reads the same.
    assert_eq!(config(&serde_yaml_ng::to_string(&full).unwrap()), full);
    assert!(serde_yaml_ng::from_str::<ServicesConfig>("allowedTypes: [Nodeport]").is_err());
}

fn spec(value: serde_json::Value) -> ServiceSpec {
    serde_json::from_value(value).unwrap()
}

#[rstest]
#[case::refused_by_default("", &["8.8.8.8"], None, &["8.8.8.8"])]
#[case::allowed_by_a_range(
    "allowedExternalIPs: [203.0.113.0/24]",
    &["203.0.113.5", "8.8.8.8"],
    Some(&["203.0.113.5"][..]),
    &["8.8.8.8"]
)]
#[case::all_allowed("allowedExternalIPs: [203.0.113.0/24]", &["203.0.113.5"], Some(&["203.0.113.5"][..]), &[])]
#[case::not_an_address("allowedExternalIPs: [0.0.0.0/0]", &["nonsense"], None, &["nonsense"])]
fn external_ips(
    #[case] yaml: &str,
    #[case] ips: &[&str],
    #[case] kept: Option<&[&str]>,
    #[case] refused: &[&str],
) {
    let mut spec = spec(json!({"externalIPs": ips, "ports": [{"port": 80}]}));
    let refusals = police_service_spec(&config(yaml), &mut spec, None);
    assert_eq!(
        spec.external_ips,
        kept.map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    );
    assert_eq!(refusals.external_ips, refused);
}

#[rstest]
#[case::cluster_ip_always("allowedTypes: []", "ClusterIP", "ClusterIP", false)]
#[case::node_port_by_default("", "NodePort", "NodePort", false)]
#[case::load_balancer_by_default("", "LoadBalancer", "LoadBalancer", false)]
#[case::external_name_not_by_default("", "ExternalName", "ClusterIP", true)]
#[case::external_name_allowed("allowedTypes: [ExternalName]", "ExternalName", "ExternalName", false)]
#[case::node_port_refused("allowedTypes: [ClusterIP]", "NodePort", "ClusterIP", true)]
#[case::load_balancer_refused("allowedTypes: [ClusterIP, NodePort]", "LoadBalancer", "ClusterIP", true)]
fn types(#[case] yaml: &str, #[case] type_: &str, #[case] host_type: &str, #[case] refused: bool) {
    let mut spec = spec(json!({"type": type_, "externalName": "db.example.com",
        "externalTrafficPolicy": "Local", "allocateLoadBalancerNodePorts": true,
        "loadBalancerSourceRanges": ["0.0.0.0/0"], "healthCheckNodePort": 30000,
        "ports": [{"port": 80, "nodePort": 30001}]}));
    let refusals = police_service_spec(&config(yaml), &mut spec, None);
    assert_eq!(spec.type_.as_deref(), Some(host_type));
    assert_eq!(refusals.type_.is_some(), refused);
    if refused {
        assert_eq!(spec.external_traffic_policy, None);
        assert_eq!(spec.allocate_load_balancer_node_ports, None);
        assert_eq!(spec.load_balancer_source_ranges, None);
        assert_eq!(spec.health_check_node_port, None);
        assert_eq!(spec.ports.as_ref().unwrap()[0].node_port, None);
        assert!(refusals.events()[0].0, "a Warning");
        assert_eq!(refusals.events()[0].1, "ServiceTypeRefused");
    }
    if type_ == "ExternalName" && refused {
        assert_eq!(spec.external_name, None);
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    }
}

#[test]
fn a_refused_type_keeps_the_hosts_defaults_so_they_are_no_drift() {
    // Still externally accessible through an allowed external IP: the host defaulted the
    // policy of the ClusterIP service it got, and that stays.
    let config = config("allowedTypes: [ClusterIP]\nallowedExternalIPs: [203.0.113.0/24]");
    let observed = ServiceSpec {
        type_: Some("ClusterIP".into()),
        external_ips: Some(vec!["203.0.113.5".into()]),
        external_traffic_policy: Some("Cluster".into()),
        ..Default::default()
    };
    let mut spec = spec(json!({"type": "NodePort", "externalTrafficPolicy": "Local",
        "externalIPs": ["203.0.113.5"], "ports": [{"port": 80}]}));
    police_service_spec(&config, &mut spec, Some(&observed));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
}

/// What a real virtual API server defaults (`externalTrafficPolicy: Cluster` for a
/// ClusterIP service with external IPs) goes with the external IPs the policy refused: the
/// host API server refuses the policy on a service that is not externally accessible.
#[rstest]
#[case::all_external_ips_refused("", "ClusterIP", None)]
#[case::an_external_ip_kept("allowedExternalIPs: [203.0.113.0/24]", "ClusterIP", Some("Cluster"))]
#[case::a_node_port_service("", "NodePort", Some("Cluster"))]
fn the_traffic_policy_goes_with_the_refused_external_ips(
    #[case] yaml: &str,
    #[case] type_: &str,
    #[case] policy: Option<&str>,
) {
    let mut spec = spec(json!({"type": type_, "externalIPs": ["203.0.113.5", "8.8.8.8"],
        "externalTrafficPolicy": "Cluster", "ports": [{"port": 80}]}));
    police_service_spec(&config(yaml), &mut spec, None);
    assert_eq!(spec.external_traffic_policy.as_deref(), policy);
}

#[test]
fn load_balancer_fields_stay_only_on_a_load_balancer() {
    let mut spec = spec(json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 30000, "allocateLoadBalancerNodePorts": true,
        "loadBalancerSourceRanges": ["10.0.0.0/8"], "ports": [{"port": 80}]}));
    let kept = spec.clone();
    police_service_spec(&config(""), &mut spec, None);
    assert_eq!(spec, kept, "an allowed LoadBalancer keeps them all");
}

#[rstest]
#[case::dropped_by_default("", Some("example.com/lb"), None)]
#[case::allowed(
    "allowedLoadBalancerClasses: [example.com/lb]",
    Some("example.com/lb"),
    Some("example.com/lb")
)]
#[case::other_dropped("allowedLoadBalancerClasses: [example.com/lb]", Some("evil.com/lb"), None)]
#[case::none("", None, None)]
fn load_balancer_classes(#[case] yaml: &str, #[case] class: Option<&str>, #[case] kept: Option<&str>) {
    let mut spec = spec(json!({"type": "LoadBalancer", "loadBalancerClass": class, "ports": [{"port": 80}]}));
    let refusals = police_service_spec(&config(yaml), &mut spec, None);
    assert_eq!(spec.load_balancer_class.as_deref(), kept);
    assert_eq!(
        refusals.load_balancer_class.as_deref(),
        if kept.is_none() { class } else { None }
    );
}

#[rstest]
#[case("prometheus.io/scrape", "prometheus.io/scrape", true)]
#[case("prometheus.io/scrape", "prometheus.io/scraper", false)]
#[case("prometheus.io/*", "prometheus.io/port", true)]
#[case("prometheus.io/*", "xprometheus.io/port", false)]
#[case(
    "service.beta.kubernetes.io/aws-load-balancer-*",
    "service.beta.kubernetes.io/aws-load-balancer-type",
    true
)]
#[case(
    "service.beta.kubernetes.io/aws-load-balancer-*",
    "service.beta.kubernetes.io/azure-dns-label-name",
    false
)]
#[case("*", "anything/at-all", true)]
#[case("*.example.com/*", "lb.example.com/zone", true)]
#[case("*.example.com/*", "example.com/zone", false)]
#[case("a*b*c", "abc", true)]
#[case("a*b*c", "acb", false)]
#[case("a*a", "a", false)]
fn annotation_patterns(#[case] pattern: &str, #[case] key: &str, #[case] matches: bool) {
    assert_eq!(key_matches(pattern, key), matches);
}

#[test]
fn annotations_pass_only_when_allowed_and_vcsyncs_own_always() {
    let mut annotations = Some(BTreeMap::from([
        (
            "service.beta.kubernetes.io/aws-load-balancer-scheme".to_string(),
            "internet-facing".to_string(),
        ),
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("vcsync.dev/object-name".to_string(), "web".to_string()),
    ]));
    let refused = filter_annotations(&config("allowedAnnotations: [prometheus.io/*]"), &mut annotations);
    assert_eq!(refused, ["service.beta.kubernetes.io/aws-load-balancer-scheme"]);
    let kept: Vec<_> = annotations.unwrap().into_keys().collect();
    assert_eq!(kept, ["prometheus.io/scrape", "vcsync.dev/object-name"]);
}

#[test]
fn refusals_are_summarised_and_told() {
    let refusals = ServiceRefusals {
        external_ips: vec!["8.8.8.8".into()],
        type_: Some("NodePort".into()),
        load_balancer_class: None,
        annotations: vec!["a".into(), "b".into()],
    };
    assert_eq!(
        refusals.summary().as_deref(),
        Some("externalIPs=8.8.8.8;type=NodePort;annotations=a,b")
    );
    let events = refusals.events();
    let reasons: Vec<_> = events.iter().map(|e| e.1).collect();
    assert_eq!(
        reasons,
        ["ExternalIPsRefused", "ServiceTypeRefused", "AnnotationsNotSynced"]
    );
    assert!(events[0].2.contains("8.8.8.8") && events[0].2.contains("sync.services.allowedExternalIPs"));
    assert!(!events[2].0, "dropped annotations are Normal events");
    assert_eq!(ServiceRefusals::default().summary(), None);
    assert!(ServiceRefusals::default().is_empty());
}

#[rstest]
#[case::metadata_service("", "169.254.169.254", false)]
#[case::loopback("", "127.0.0.1", false)]
#[case::ipv6_link_local("", "fe80::1", false)]
#[case::ipv6_loopback("", "::1", false)]
#[case::mapped_metadata("", "::ffff:169.254.169.254", false)]
#[case::unspecified("", "0.0.0.0", false)]
#[case::multicast("", "224.0.0.1", false)]
#[case::any_other_by_default("", "192.0.2.10", false)]
#[case::not_an_address("allowedEndpointRanges: [0.0.0.0/0]", "nonsense", false)]
#[case::owned_pod("", "10.244.0.5", true)]
#[case::allowed_range("allowedEndpointRanges: [192.0.2.0/24]", "192.0.2.10", true)]
#[case::outside_the_range("allowedEndpointRanges: [192.0.2.0/24]", "198.51.100.1", false)]
#[case::wide_range_not_metadata("allowedEndpointRanges: [0.0.0.0/0]", "169.254.169.254", false)]
#[case::wide_range_other("allowedEndpointRanges: [0.0.0.0/0]", "198.51.100.1", true)]
#[case::node_local_dns("allowedEndpointRanges: [169.254.20.10/32]", "169.254.20.10", true)]
#[case::node_local_dns_not_metadata("allowedEndpointRanges: [169.254.20.10/32]", "169.254.169.254", false)]
fn endpoint_addresses(#[case] yaml: &str, #[case] ip: &str, #[case] allowed: bool) {
    let owned = |ip: IpAddr| ip == "10.244.0.5".parse::<IpAddr>().unwrap();
    assert_eq!(endpoint_address_allowed(&config(yaml), ip, owned), allowed);
}

#[test]
fn refused_endpoint_addresses_are_dropped_and_named() {
    let address = |ip: &str| EndpointAddress {
        ip: ip.into(),
        ..Default::default()
    };
    let subset = |ips: &[&str], not_ready: &[&str]| EndpointSubset {
        addresses: Some(ips.iter().map(|ip| address(ip)).collect()),
        not_ready_addresses: Some(not_ready.iter().map(|ip| address(ip)).collect()),
        ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
            port: 80,
            ..Default::default()
        }]),
    };
    let mut subsets = Some(vec![
        subset(&["169.254.169.254", "10.244.0.5"], &["169.254.169.254"]),
        subset(&["127.0.0.1"], &[]),
    ]);
    let owned = |ip: IpAddr| ip == "10.244.0.5".parse::<IpAddr>().unwrap();
    let refused = police_endpoint_subsets(&ServicesConfig::default(), &mut subsets, owned);
    assert_eq!(refused, ["169.254.169.254", "127.0.0.1"]);
    let subsets = subsets.unwrap();
    assert_eq!(subsets.len(), 1, "a subset without addresses goes");
    assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.244.0.5");
    assert_eq!(subsets[0].not_ready_addresses, None);
    let (reason, message) = endpoints_event(&refused);
    assert_eq!(reason, "EndpointsRefused");
    assert!(message.contains("169.254.169.254, 127.0.0.1") && message.contains("allowedEndpointRanges"));

    let mut only_refused = Some(vec![subset(&["169.254.169.254"], &[])]);
    police_endpoint_subsets(&ServicesConfig::default(), &mut only_refused, owned);
    assert_eq!(only_refused, None);
}
