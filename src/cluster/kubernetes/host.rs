//! The driver's access to the host cluster: its client, finding a cluster's objects, the values
//! it runs with, applying and deleting objects.

use anyhow::Context;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Namespace, Node, PersistentVolumeClaim, Pod, Secret, Service},
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};

use crate::cluster::{ClusterError, DriverOptions, DriverRegistration, Progress, Result, Values};

use super::{
    expose::{Reach, https_url, node_address, reach},
    names::*,
};

inventory::submit! {
    DriverRegistration {
        name: "kubernetes",
        about: "a k3s control plane with vcsync as sidecar in a namespace of the host cluster (current kubeconfig)",
        factory: |options| Ok(Box::new(KubernetesDriver { options: options.clone() })),
    }
}

/// The `kubernetes` driver.
pub struct KubernetesDriver {
    pub(super) options: DriverOptions,
}

pub(super) fn api_resource(object: &Value) -> (ApiResource, bool) {
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
        "ConfigMap" => "configmaps",
        "Service" => "services",
        "ResourceQuota" => "resourcequotas",
        "LimitRange" => "limitranges",
        "NetworkPolicy" => "networkpolicies",
        "Ingress" => "ingresses",
        "StatefulSet" => "statefulsets",
        other => unreachable!("the driver renders no {other}"),
    };
    let namespaced = !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding");
    (
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
        namespaced,
    )
}

pub(super) fn is_code(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

impl KubernetesDriver {
    pub(super) async fn client(&self) -> Result<Client> {
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
    pub(super) async fn find(&self, client: &Client, name: &str) -> Result<Option<StatefulSet>> {
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

    /// A running pod of the cluster's control plane (a ready one first), by name.
    pub(super) async fn control_plane_pod(
        &self,
        client: &Client,
        name: &str,
        sts: &StatefulSet,
    ) -> Result<String> {
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let selector = sts
            .spec
            .selector
            .match_labels
            .as_ref()
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let pods = Api::<Pod>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels(&selector))
            .await
            .context("listing the control plane's pods")?;
        let running: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        let ready = |pod: &Pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        running
            .iter()
            .copied()
            .find(|pod| ready(pod))
            .or(running.first().copied())
            .and_then(|pod| pod.metadata.name.clone())
            .ok_or_else(|| ClusterError::NotReady {
                name: name.into(),
                detail: format!("no running control-plane pod in namespace {ns} to forward to"),
            })
    }

    /// Where the control plane keeps its state, for the status message.
    pub(super) async fn persistence(
        &self,
        client: &Client,
        name: &str,
        ns: &str,
        sts: &StatefulSet,
    ) -> Result<String> {
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

    /// Where a client outside the host cluster reaches cluster `name`'s API server (see
    /// [`reach`]): the URL, and the name to check the certificate against when the URL's host
    /// is not in it. None: only from inside the host cluster.
    pub(super) async fn reached_at(
        &self,
        client: &Client,
        name: &str,
        ns: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        let values = self.running_values(client, name, ns).await?;
        let service = Api::<Service>::namespaced(client.clone(), ns)
            .get_opt(&base_name(name))
            .await
            .context("reading the cluster's Service")?;
        let in_cluster_name = Some(format!("{}.{ns}.svc", base_name(name)));
        Ok(match reach(values.as_ref(), service.as_ref()) {
            Reach::Ingress(host) => Some((format!("https://{host}"), None)),
            Reach::LoadBalancer(address) => Some((https_url(&address, SERVICE_PORT.into()), in_cluster_name)),
            Reach::NodePort(port) => {
                let nodes = Api::<Node>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .context("listing the host's nodes for the node port's address")?;
                node_address(&nodes.items).map(|address| (https_url(&address, port), in_cluster_name))
            }
            Reach::InCluster => None,
        })
    }

    pub(super) async fn running_values(
        &self,
        client: &Client,
        name: &str,
        ns: &str,
    ) -> Result<Option<Values>> {
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
    pub(super) async fn existing_namespace(
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

    pub(super) async fn delete_synced(&self, client: &Client, name: &str, pods_only: bool) -> Result<()> {
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
