//! How a command reaches a cluster's API server: the kubeconfig its driver gives, through a
//! port-forward to the control plane's pod when that kubeconfig names an address only the
//! cluster's host resolves (a `kubernetes` cluster without an external address).

use super::{Driver, Progress, Result, kubeconfig, port_forward::Forward};

/// A kubeconfig of cluster `name` that works from here, and the forward it goes through (it
/// works while that lives). `server` replaces the cluster's own address and skips the forward;
/// `local_port` is the forward's (0: any free port).
pub async fn reach(
    driver: &dyn Driver,
    name: &str,
    server: Option<&str>,
    local_port: u16,
    progress: &Progress,
) -> Result<(String, Option<Forward>)> {
    let config = driver.kubeconfig(name, server).await?;
    if server.is_some() || !kubeconfig::only_inside_its_host(&config) {
        return Ok((config, None));
    }
    let Some(forward) = driver.forward_api_server(name, local_port).await? else {
        return Ok((config, None));
    };
    progress.step(format!("forwarding {} to {}", forward.local, forward.target));
    let config = kubeconfig::through_local_port(&config, forward.local.port())?;
    Ok((config, Some(forward)))
}
