//! `vcsync dev control-plane`: a real host and virtual control plane for humans and CI, running
//! until Ctrl-C (or SIGTERM).

use std::path::PathBuf;

use anyhow::Context;

use vcsync_envtest::ControlPlanePair;

/// Development tools under `vcsync dev`.
#[derive(Debug, clap::Subcommand)]
pub enum DevTool {
    /// Start a real host and a real virtual control plane (etcd, kube-apiserver and
    /// kube-controller-manager each, on loopback ports), print their kubeconfigs and keep them
    /// running until Ctrl-C.
    ControlPlane(ControlPlaneArgs),
}

/// Flags of `vcsync dev control-plane`.
#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// The folder holding etcd, kube-apiserver and kube-controller-manager (the last line that
    /// tests/control-plane/build.sh prints).
    #[arg(long, env = "VCSYNC_KUBE_ASSETS")]
    pub kube_assets: PathBuf,
}

impl DevTool {
    /// Runs the tool to its end.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            DevTool::ControlPlane(args) => control_plane(args).await,
        }
    }
}

async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let pair = ControlPlanePair::start(&args.kube_assets).await?;
    println!("host kubeconfig:    {}", pair.host.kubeconfig().display());
    println!("virtual kubeconfig: {}", pair.virt.kubeconfig().display());
    println!(
        "started in {:.1} s (host {:.1} s, virtual {:.1} s); service CIDR {}",
        pair.started_in().as_secs_f64(),
        pair.host.started_in().as_secs_f64(),
        pair.virt.started_in().as_secs_f64(),
        vcsync_envtest::SERVICE_CIDR,
    );
    println!("Ctrl-C stops both planes and removes their folders");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    println!("stopping");
    drop(pair);
    Ok(())
}
