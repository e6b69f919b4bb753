//! The kubelets on real sockets: Rust clients for each protocol ([`protocols`]), the stats
//! endpoints ([`stats`]), and kubectl through a real kube-apiserver ([`kubectl`], when its
//! binaries are there).

mod kubectl;
mod protocols;
mod spdy;
mod stats;

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use super::{Kubelets, Stopping};
use crate::{ApiServer, ServerConfig};

/// An embedded server (for its store of pods) and kubelets for some nodes.
pub(super) struct Fixture {
    pub(super) server: ApiServer,
    pub(super) ports: Vec<u16>,
    stop: watch::Sender<bool>,
    kubelets: Option<Kubelets>,
}

impl Fixture {
    /// Kubelets for `nodes` (name, address) trusting `client_ca_pem` (default: the server's
    /// kubelet client CA).
    pub(super) async fn start(nodes: &[(&str, Ipv4Addr)], client_ca_pem: Option<&str>) -> Fixture {
        let server = ApiServer::start(ServerConfig::default())
            .await
            .expect("an embedded server");
        let ca = client_ca_pem
            .unwrap_or(server.kubelet_client_ca_pem())
            .to_string();
        let (stop, stopped) = watch::channel(false);
        let nodes: Vec<(String, Ipv4Addr)> = nodes.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
        let stopping = Stopping::new(stopped, server.inner.shared.shutdown.clone());
        let (kubelets, ports) = Kubelets::start(&nodes, &ca, server.inner.shared.objects.clone(), stopping);
        let ports = ports.into_iter().map(|p| p.expect("a kubelet listens")).collect();
        Fixture {
            server,
            ports,
            stop,
            kubelets: Some(kubelets),
        }
    }

    /// Stores pod `namespace/name` bound to `node` with `containers`.
    pub(super) fn add_pod(
        &self,
        namespace: &str,
        name: &str,
        node: &str,
        containers: &[&str],
    ) -> Arc<serde_json::Value> {
        let objects = &self.server.inner.shared.objects;
        let pods = objects
            .registry
            .find("", "v1", "pods")
            .expect("pods are built in");
        let containers: Vec<_> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "busybox"}))
            .collect();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "containers": containers}});
        objects.create(&pods, namespace, pod).expect("the pod is stored")
    }

    /// The client certificate and key the embedded server presents to kubelets (PEM).
    pub(super) fn client_identity(&self) -> crate::kubelet::identity::KubeletClientIdentity {
        (*self.server.inner.shared.kubelet_identity).clone()
    }

    /// Stops the kubelets and waits for their listeners to close.
    pub(super) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(kubelets) = self.kubelets.take() {
            kubelets.stopped().await;
        }
        self.server.clone().shutdown().await;
    }
}
