//! The `kubernetes` driver: a virtual cluster in a namespace of a host cluster. It applies
//! the objects [`render`] makes (Namespace, ServiceAccount, RBAC, config Secret, Service, and a
//! StatefulSet running a k3s control plane with vcsync as sidecar); `vcsync cluster render`
//! prints the same objects, and `deploy/manifests/` is that output for the example values.
//!
//! Every object it creates carries `vcsync.dev/cluster=<name>`; status is derived from the
//! StatefulSet, Service and Secret; pause scales to zero and deletes the cluster's synced pods
//! on the host (ownership label); delete removes every rendered object, every host object with
//! the ownership label, and the namespace when this driver created it.

use std::collections::BTreeMap;

use anyhow::Context;
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{StatefulSet, StatefulSetSpec},
        core::v1::{
            Container, ContainerPort, EnvVar, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec,
            Secret, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use super::{
    Changed, ClusterError, ClusterStatus, Created, Driver, DriverOptions, DriverRegistration, Phase,
    Progress, Result, Values,
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
/// Label on every object the driver creates: the cluster's name.
pub const CLUSTER_LABEL: &str = "vcsync.dev/cluster";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vcsync-cluster");
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

/// The host namespace of cluster `name`.
pub fn namespace_of(name: &str, values: &Values) -> String {
    values
        .namespace
        .clone()
        .unwrap_or_else(|| format!("vcsync-{name}"))
}

/// The host objects of cluster `name`, in apply order, as JSON.
pub fn render(name: &str, values: &Values) -> Result<Vec<Value>> {
    let ns = namespace_of(name, values);
    let base = base_name(name);
    let mut config = values.syncer_config(name, &ns)?;
    config.virtual_cluster.kubeconfig = Some("/data/kubeconfig.yaml".into());
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

    push(
        "Namespace",
        "v1",
        to_json(&Namespace {
            metadata: meta(&ns, false),
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
        binding.metadata = relabel(binding.metadata);
        push("ClusterRole", "rbac.authorization.k8s.io/v1", to_json(&role));
        push(
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io/v1",
            to_json(&binding),
        );
    }
    // The control plane publishes its kubeconfig in one Secret of the namespace.
    let cp = format!("{base}-control-plane");
    push(
        "Role",
        "rbac.authorization.k8s.io/v1",
        to_json(&Role {
            metadata: meta(&cp, true),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                verbs: vec!["create".into(), "get".into(), "patch".into(), "update".into()],
                ..Default::default()
            }]),
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
                    ByteString(values.to_yaml().into_bytes()),
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
                    port: 443,
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

fn statefulset(name: &str, ns: &str, values: &Values) -> StatefulSet {
    let base = base_name(name);
    let server = format!("https://{base}.{ns}.svc:443");
    let cidr = values
        .control_plane
        .service_cidr
        .clone()
        .unwrap_or_else(|| "10.96.0.0/12".into());
    let mut k3s_args = vec![
        "server".to_string(),
        "--data-dir=/data/k3s".into(),
        "--write-kubeconfig=/data/kubeconfig.yaml".into(),
        "--write-kubeconfig-mode=0644".into(),
        "--disable-agent".into(),
        "--disable=traefik,servicelb,metrics-server,local-storage,coredns".into(),
        "--disable-network-policy".into(),
        "--flannel-backend=none".into(),
        format!("--service-cidr={cidr}"),
        format!("--tls-san={base}.{ns}.svc"),
        // vcsync mirrors endpoints from the host; no node IPAM or node lifecycle of its own.
        "--kube-controller-manager-arg=controllers=*,-nodeipam,-persistentvolume-binder,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle,-endpoint,-endpointslice,-endpointslicemirroring".into(),
    ];
    k3s_args.extend(values.control_plane.extra_args.iter().cloned());
    let quoted: Vec<String> = k3s_args.iter().map(|a| format!("'{a}'")).collect();
    // k3s server in the background; once it wrote its kubeconfig, publish it (server set to
    // the Service) in the kubeconfig Secret with the pod's service account, then wait on k3s.
    let script = format!(
        "set -e\n/bin/k3s {args} &\nK3S=$!\nuntil [ -s /data/kubeconfig.yaml ]; do sleep 1; done\n\
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
                            volume_mounts: Some(vec![mount("data", "/data", false)]),
                            ..Default::default()
                        },
                        Container {
                            name: "vcsync".into(),
                            image: Some(
                                values
                                    .vcsync
                                    .image
                                    .clone()
                                    .unwrap_or_else(|| DEFAULT_VCSYNC_IMAGE.into()),
                            ),
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
                            security_context: Some(SecurityContext {
                                run_as_non_root: Some(true),
                                run_as_user: Some(65532),
                                allow_privilege_escalation: Some(false),
                                read_only_root_filesystem: Some(true),
                                ..Default::default()
                            }),
                            volume_mounts: Some(vec![
                                mount("data", "/data", true),
                                mount("config", "/etc/vcsync", true),
                            ]),
                            ..Default::default()
                        },
                    ],
                    volumes: Some(vec![
                        Volume {
                            name: "data".into(),
                            empty_dir: Some(Default::default()),
                            ..Default::default()
                        },
                        Volume {
                            name: "config".into(),
                            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                                secret_name: Some(config_secret(name)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ]),
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

/// Replaces the server URL of every cluster of a kubeconfig.
pub fn replace_server(kubeconfig: &str, url: &str) -> Result<String> {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(kubeconfig).context("parsing the kubeconfig")?;
    if let Some(clusters) = value.get_mut("clusters").and_then(|c| c.as_sequence_mut()) {
        for cluster in clusters {
            if let Some(c) = cluster.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
                c.insert("server".into(), url.into());
            }
        }
    }
    Ok(serde_yaml_ng::to_string(&value).context("kubeconfig")?)
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
        let objects = render(name, values)?;
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
                // An existing namespace is used as it is (and kept on delete); leftovers of an
                // interrupted create are replaced.
                Err(err) if is_code(&err, 409) && kind == "Namespace" => {}
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
        let control_plane_ready = phase == Phase::Running;
        Ok(ClusterStatus {
            name: name.into(),
            driver: "kubernetes".into(),
            phase,
            ready: control_plane_ready,
            control_plane_ready,
            nodes_total: desired,
            nodes_ready: ready.min(desired),
            synced_objects: super::local::synced_counts(&client, name).await,
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
