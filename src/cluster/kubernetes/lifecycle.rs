//! The lifecycle of a cluster through the host API: create, delete, pause, resume, list,
//! status, kubeconfig.

use anyhow::Context;
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{Namespace, PersistentVolumeClaim, Secret, Service},
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::cluster::{
    Changed, ClusterError, ClusterStatus, Created, Driver, Phase, Progress, Result, Values,
    common::{replace_server, synced_counts},
    port_forward::{Forward, start as start_forward},
};

use super::{host::*, names::*, render::*, service_cidr::*};

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
        let secret = Api::<Secret>::namespaced(client.clone(), &ns)
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
            Some(url) => replace_server(&text, url, None),
            None => match self.reached_at(&client, name, &ns).await? {
                Some((url, tls_server_name)) => replace_server(&text, &url, tls_server_name.as_deref()),
                None => Ok(text),
            },
        }
    }

    /// A port-forward to the control plane's pod (its API server's port). Asked for only when
    /// the kubeconfig names the in-cluster Service: an exposed cluster's names its external
    /// address ([`Driver::kubeconfig`]).
    async fn forward_api_server(&self, name: &str, local_port: u16) -> Result<Option<Forward>> {
        let client = self.client().await?;
        let Some(sts) = self.find(&client, name).await? else {
            return Err(ClusterError::NotFound(name.into()));
        };
        let ns = sts.metadata.namespace.clone().unwrap_or_default();
        let pod = self.control_plane_pod(&client, name, &sts).await?;
        Ok(Some(
            start_forward(client, &ns, &pod, API_SERVER_PORT, local_port).await?,
        ))
    }
}
