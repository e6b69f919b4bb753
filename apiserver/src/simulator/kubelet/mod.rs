//! A kubelet API for each simulated node: HTTPS on the node's own loopback address (the port its
//! Node's `daemonEndpoints` names), client certificates required under the CA the embedded API
//! server presents one of, and the endpoints kube-apiserver calls for a pod's `log`, `exec`,
//! `attach` and `portforward` subresources, behaving as the Go fake kubelet of the real-cluster
//! tests does (`tests/control-plane/cmd/fake-kubelet`): `/containerLogs` ([`logs`]), `/exec`
//! and `/attach` ([`shell`]) over WebSocket channel protocols ([`websocket`]) or SPDY
//! ([`remotecommand`]), `/portForward` echoing every port over SPDY or the SPDY-in-WebSocket
//! tunnel ([`portforward`]) or the WebSocket channel framing ([`portforward_ws`], where a pod's
//! annotation may point a port at a loopback address instead), `/healthz`, and the usage of the running pods: `/stats/summary`
//! and `/runningpods/` ([`stats`]), `/metrics/resource` ([`resource_metrics`]).
//!
//! Only pods the store shows bound to the node are served (404 otherwise); nothing is kept per
//! pod, and nothing runs per pod until a request comes.

mod handlers;
mod logs;
mod portforward;
mod portforward_ws;
mod process;
mod remotecommand;
mod resource_metrics;
mod routes;
mod script;
mod shell;
mod spdy;
mod stats;
mod tls;
mod upgrade;
mod websocket;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::objects::Objects;
use handlers::Node;

/// How long a session waits for the client to close after the server's close.
pub(crate) const LINGER: Duration = Duration::from_secs(5);
/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The running kubelets of a simulator's nodes.
#[derive(Debug)]
pub(crate) struct Kubelets {
    tasks: Vec<JoinHandle<()>>,
}

/// When the kubelets stop: the simulator stops, or the server shuts down. A dropped simulator
/// handle does not stop them.
#[derive(Clone)]
pub(crate) struct Stopping {
    stop: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
}

impl Stopping {
    pub(crate) fn new(stop: watch::Receiver<bool>, shutdown: watch::Receiver<bool>) -> Self {
        Stopping { stop, shutdown }
    }

    async fn wait(&mut self) {
        tokio::select! {
            Ok(_) = self.stop.wait_for(|stop| *stop) => {}
            _ = self.shutdown.wait_for(|stop| *stop) => {}
        }
    }
}

impl Kubelets {
    /// Binds a listener for each node `(name, address)` on its address (port 0) and serves
    /// the kubelet API there, trusting client certificates under `client_ca_pem`. Returns the
    /// kubelets and each node's port (`None` where none could be served: the node keeps the
    /// usual port 10250 then, where nothing answers).
    pub(crate) fn start(
        nodes: &[(String, Ipv4Addr)],
        client_ca_pem: &str,
        objects: Arc<Objects>,
        stopping: Stopping,
    ) -> (Kubelets, Vec<Option<u16>>) {
        let mut tasks = Vec::new();
        let mut ports = vec![None; nodes.len()];
        let verifier = match tls::client_verifier(client_ca_pem) {
            Ok(verifier) => verifier,
            Err(err) => {
                tracing::warn!(error = %err, "simulated nodes get no kubelet API");
                return (Kubelets { tasks }, ports);
            }
        };
        let pods = objects
            .registry
            .find("", "v1", "pods")
            .expect("pods are built in");
        for ((name, ip), port) in nodes.iter().zip(&mut ports) {
            let bound = bind(*ip).and_then(|listener| {
                let config = tls::server_config(*ip, verifier.clone())?;
                Ok((listener, config))
            });
            let (listener, config) = match bound {
                Ok(bound) => bound,
                Err(err) => {
                    tracing::warn!(node = %name, %ip, error = %err, "a simulated node gets no kubelet API");
                    continue;
                }
            };
            *port = listener.local_addr().ok().map(|a| a.port());
            let node = Arc::new(Node {
                name: name.clone(),
                objects: objects.clone(),
                pods: pods.clone(),
                stopping: stopping.clone(),
            });
            tasks.push(tokio::spawn(serve_node(
                listener,
                TlsAcceptor::from(config),
                node,
            )));
        }
        (Kubelets { tasks }, ports)
    }

    /// Waits for the listeners to close (after the simulator's stop signal).
    pub(crate) async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn bind(ip: Ipv4Addr) -> Result<tokio::net::TcpListener, String> {
    let listener =
        std::net::TcpListener::bind(SocketAddr::from((ip, 0))).map_err(|err| format!("binding: {err}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|err| format!("binding: {err}"))?;
    tokio::net::TcpListener::from_std(listener).map_err(|err| format!("binding: {err}"))
}

/// Accepts connections until the kubelets stop; their connections end then too.
async fn serve_node(listener: tokio::net::TcpListener, tls: TlsAcceptor, node: Arc<Node>) {
    let mut stopping = node.stopping.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopping.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(serve_connection(tcp, tls.clone(), node.clone()));
                }
                Err(err) => {
                    tracing::debug!(node = %node.name, error = %err, "simulated kubelet: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    tracing::debug!(node = %node.name, "simulated kubelet stopped");
}

async fn serve_connection(tcp: tokio::net::TcpStream, tls: TlsAcceptor, node: Arc<Node>) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(node = %node.name, error = %err, "simulated kubelet: TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let service = hyper::service::service_fn(move |request| {
        let node = node.clone();
        async move { Ok::<_, Infallible>(node.handle(request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// A spawned task that is aborted when its handle is dropped.
pub(crate) struct Task(Option<JoinHandle<()>>);

impl Task {
    pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) -> Self {
        Task(Some(tokio::spawn(future)))
    }

    /// Waits for the task to end (at once if it was waited for before).
    pub(crate) async fn join(&mut self) {
        if let Some(handle) = self.0.as_mut() {
            let _ = handle.await;
            self.0 = None;
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests;
