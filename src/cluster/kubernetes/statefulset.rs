//! The StatefulSet of a cluster: the k3s control plane with vcsync as its sidecar, and the
//! init containers that detect the service CIDR and the Service's cluster IP.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec,
            PodSecurityContext, PodSpec, PodTemplateSpec, SecurityContext, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::LabelSelector},
};
use kube::api::ObjectMeta;

use crate::cluster::Values;

use super::names::*;

/// The k3s server arguments; the service CIDR is [`DETECTED_CIDR_ARG`] when it is detected,
/// and the serving certificate names the Service's cluster IP ([`SERVICE_IP_ARG`]).
pub(super) fn k3s_args(name: &str, ns: &str, values: &Values) -> Vec<String> {
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
    args.extend(
        super::expose::certificate_names(values)
            .into_iter()
            .map(|san| format!("--tls-san={san}")),
    );
    args.extend(values.control_plane.extra_args.iter().cloned());
    args
}

/// A shell word of a k3s argument: single-quoted, but for the detected service CIDR and the
/// Service's cluster IP, which the shell expands.
pub(super) fn shell_word(arg: &str) -> String {
    if arg == DETECTED_CIDR_ARG || arg == SERVICE_IP_ARG {
        format!("\"{arg}\"")
    } else {
        format!("'{arg}'")
    }
}

pub(super) fn statefulset(name: &str, ns: &str, values: &Values) -> StatefulSet {
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
