//! Where host pods reach the virtual API server when `sync.pods.kubernetesService.hostService`
//! names a host Service: its cluster IP, read at start and followed.

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use tokio::sync::watch;

use crate::{Clients, Registrar};

/// How often the cluster IP of `kubernetesService.hostService` is read again once known (a
/// changed IP reaches the pods created afterwards, as a kubelet's variables would).
const HOST_SERVICE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);
/// How often it is read, and a pod waiting for it is tried again, while it is not known.
pub(super) const HOST_SERVICE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The cluster IP of the host Service that `sync.pods.kubernetesService.hostService` names:
/// None until it was first read, then Some(the IP, or None while the Service is missing or has
/// none). Read at start (the controllers wait for that first answer) and every
/// [`HOST_SERVICE_REFRESH`] after, on every replica.
pub(super) type HostServiceIp = watch::Receiver<Option<Option<String>>>;

/// Starts following the cluster IP of host Service `name` in the host namespace, in a task of
/// `registrar`'s, which waits for the first answer.
pub(super) fn follow(clients: &Clients, registrar: &Registrar, name: &str) -> HostServiceIp {
    let (tx, rx) = watch::channel(None);
    let api = Api::<Service>::namespaced(clients.host_client().clone(), clients.host_namespace());
    let service = format!("{}/{name}", clients.host_namespace());
    registrar.spawn_background(read_host_service(api, name.to_string(), service, tx));
    let mut first = rx.clone();
    registrar.add_readiness(async move {
        // Err: the reader is gone (shutting down); nothing to wait for.
        let _ = first.wait_for(Option::is_some).await;
    });
    rx
}

/// The loop behind [`follow`]. A missing Service, or one without a cluster IP,
/// makes new pods wait (with a warning now and then); a failed read keeps what was known.
async fn read_host_service(
    api: Api<Service>,
    name: String,
    service: String,
    tx: watch::Sender<Option<Option<String>>>,
) {
    let mut misses: u32 = 0;
    loop {
        let read = match api.get_opt(&name).await {
            Ok(service) => Ok(service.as_ref().and_then(host_service_ip)),
            Err(err) => Err(err),
        };
        let known = tx.borrow().clone().flatten();
        let ip = match read {
            Ok(Some(ip)) => {
                misses = 0;
                if known.as_deref() != Some(ip.as_str()) {
                    tracing::info!(
                        service,
                        ip,
                        "host pods reach the virtual API server at this host Service's cluster IP"
                    );
                }
                Some(ip)
            }
            Ok(None) => {
                if misses.is_multiple_of(15) {
                    tracing::warn!(
                        service,
                        "sync.pods.kubernetesService.hostService: the host Service is missing or has no \
                         cluster IP; new pods wait for it"
                    );
                }
                misses += 1;
                None
            }
            Err(err) => {
                if misses.is_multiple_of(15) {
                    tracing::warn!(
                        service,
                        error = %err,
                        "cannot read the host Service of sync.pods.kubernetesService.hostService"
                    );
                }
                misses += 1;
                known
            }
        };
        let delay = if ip.is_some() {
            HOST_SERVICE_REFRESH
        } else {
            HOST_SERVICE_RETRY
        };
        tx.send_replace(Some(ip));
        tokio::time::sleep(delay).await;
    }
}

/// A Service's cluster IP, None for headless and ExternalName ones.
fn host_service_ip(service: &Service) -> Option<String> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}
