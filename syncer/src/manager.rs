//! The controller manager: starts informers, waits for caches, runs every controller, and
//! shuts down cleanly.

use futures::{FutureExt, future::Shared};
use tokio::task::JoinSet;

use crate::context::RegisterContext;

/// Runs everything registered on `ctx` until `shutdown` resolves, then lets in-flight
/// reconciles finish. Controllers start only once every informer and index has its first
/// full list, so nothing is created or deleted on partial knowledge.
pub async fn run(ctx: RegisterContext, shutdown: impl Future<Output = ()> + Send + 'static) {
    let shutdown: Shared<futures::future::BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let informers = ctx.informers().start();
    let mut background = JoinSet::new();
    for task in ctx.take_background() {
        background.spawn(task);
    }

    tracing::info!("waiting for caches to sync");
    let ready = ctx.wait_until_ready();
    tokio::select! {
        _ = ready => {}
        _ = shutdown.clone() => {
            tracing::info!("shut down before caches synced");
            stop(informers, background).await;
            return;
        }
    }

    let mut controllers = JoinSet::new();
    let names: Vec<String> = ctx
        .take_controllers()
        .into_iter()
        .map(|prepared| {
            let name = prepared.name.clone();
            controllers.spawn((prepared.run)(shutdown.clone()));
            name
        })
        .collect();
    for (name, task) in ctx.take_leader_tasks() {
        let shutdown = shutdown.clone();
        controllers.spawn(async move {
            tokio::select! {
                _ = task => tracing::info!(task = %name, "task ended"),
                _ = shutdown => {}
            }
        });
    }
    tracing::info!(controllers = ?names, "caches synced; controllers started");
    while controllers.join_next().await.is_some() {}
    tracing::info!("controllers stopped");
    stop(informers, background).await;
}

async fn stop(informers: Vec<tokio::task::JoinHandle<()>>, mut background: JoinSet<()>) {
    for informer in informers {
        informer.abort();
    }
    background.abort_all();
    while background.join_next().await.is_some() {}
}
