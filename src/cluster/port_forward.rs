//! A loopback port forwarded to a pod's port through the host API server (`pods/portforward`
//! over a WebSocket), as `kubectl port-forward` does, so that `vcsync cluster connect` reaches a
//! control plane that is only reachable inside its host cluster. Each accepted connection gets
//! a forward of its own; the listener stops when the [`Forward`] is dropped.

use std::net::SocketAddr;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};

/// A running forward: connections to `local` reach the pod's port.
pub struct Forward {
    /// The loopback address that reaches the pod's port.
    pub local: SocketAddr,
    /// `namespace/pod:port`, for messages.
    pub target: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts forwarding `127.0.0.1:local_port` (0: any free port) to `port` of pod
/// `namespace/pod`, through `client`'s API server.
pub async fn start(
    client: Client,
    namespace: &str,
    pod: &str,
    port: u16,
    local_port: u16,
) -> anyhow::Result<Forward> {
    let listener = TcpListener::bind(("127.0.0.1", local_port))
        .await
        .with_context(|| format!("listening on 127.0.0.1:{local_port}"))?;
    let local = listener.local_addr().context("the forward's local address")?;
    let target = format!("{namespace}/{pod}:{port}");
    let pods = Api::<Pod>::namespaced(client, namespace);
    let pod = pod.to_string();
    let task = tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let (pods, pod) = (pods.clone(), pod.clone());
            tokio::spawn(async move {
                if let Err(err) = relay(&pods, &pod, port, connection).await {
                    eprintln!("vcsync: port-forward to {pod}:{port}: {err:#}");
                }
            });
        }
    });
    Ok(Forward { local, target, task })
}

/// Carries one local connection to the pod's port and back until either side ends.
async fn relay(pods: &Api<Pod>, pod: &str, port: u16, mut connection: TcpStream) -> anyhow::Result<()> {
    let mut forwarder = pods
        .portforward(pod, &[port])
        .await
        .context("opening the forward")?;
    let mut upstream = forwarder
        .take_stream(port)
        .context("the forward carries no stream for the port")?;
    // Either side closing ends both: an API server closes connections, a client may too.
    let _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
    drop(upstream);
    forwarder.abort();
    Ok(())
}
