//! Runs an API server until Ctrl-C and prints its kubeconfig path, for poking at it with kubectl:
//! `cargo run -p vcsync-apiserver --example serve`, or with `-- --simulate` for simulated nodes
//! that run pods.

use vcsync_apiserver::{ApiServer, ServerConfig, SimulatorConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let server = ApiServer::start(ServerConfig {
        name: "example".into(),
        ..Default::default()
    })
    .await?;
    let simulator = std::env::args()
        .any(|a| a == "--simulate")
        .then(|| server.start_simulator(SimulatorConfig::default()));
    let path = std::env::temp_dir().join(format!("vcsync-apiserver-{}.kubeconfig", server.addr().port()));
    std::fs::write(&path, server.kubeconfig())?;
    tracing::info!(url = %server.url(), kubeconfig = %path.display(), "serving; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    if let Some(simulator) = simulator {
        simulator.stop().await;
    }
    server.shutdown().await;
    Ok(())
}
