//! The controller manager: starts informers, waits for caches, runs every controller, and
//! shuts down cleanly.

use std::{sync::Arc, time::Duration};

use futures::{FutureExt, future::Shared};
use tokio::task::JoinSet;

use crate::{
    Result,
    context::RegisterContext,
    leader::Campaign,
    metrics::{Metrics, Role},
};

/// Runs everything registered on `ctx` until `shutdown` resolves, then lets in-flight
/// reconciles finish. Controllers start only once every informer and index has its first
/// full list, so nothing is created or deleted on partial knowledge; with leader election on,
/// only once this replica holds the lease (see [`crate::leader`]). Fails when leader election
/// cannot start or the lease is lost.
pub async fn run(ctx: RegisterContext, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    run_with_metrics(ctx, Arc::new(Metrics::new()), shutdown).await
}

/// [`run`], recording into `metrics` and reporting readiness on its [`Metrics::status`]. In-flight
/// reconciles get `controllers.shutdownTimeoutSeconds` to finish after `shutdown` resolves.
pub async fn run_with_metrics(
    ctx: RegisterContext,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown: Shared<futures::future::BoxFuture<'static, ()>> = {
        let metrics = metrics.clone();
        shutdown
            .map(move |()| metrics.status().set_shutting_down())
            .boxed()
            .shared()
    };
    let grace = Duration::from_secs(ctx.clients().config().controllers.shutdown_timeout_seconds);
    let informers = ctx.caches().informers().start();
    let mut background = JoinSet::new();
    for task in ctx.registrar().take_background() {
        background.spawn(task);
    }

    tracing::info!("waiting for caches to sync");
    let ready = ctx.wait_until_ready();
    tokio::select! {
        _ = ready => metrics.status().set_caches_synced(true),
        _ = shutdown.clone() => {
            tracing::info!("shut down before caches synced");
            stop(informers, background).await;
            return Ok(());
        }
    }

    let election = &ctx.clients().config().leader_election;
    let mut campaign = None;
    if election.enabled {
        metrics.status().set_role(Role::Standby);
        let mut started = match Campaign::start(
            ctx.clients().virtual_client().clone(),
            &ctx.clients().config().instance,
            election,
        )
        .await
        {
            Ok(started) => started,
            Err(err) => {
                stop(informers, background).await;
                return Err(err);
            }
        };
        tracing::info!(
            identity = started.identity(),
            "caches synced; standby until this replica holds the lease"
        );
        tokio::select! {
            acquired = started.acquired() => if let Err(err) = acquired {
                stop(informers, background).await;
                return Err(err);
            },
            _ = shutdown.clone() => {
                tracing::info!("shut down as a standby");
                started.release(grace).await;
                stop(informers, background).await;
                return Ok(());
            }
        }
        tracing::info!(identity = started.identity(), "acquired the leader lease");
        metrics.status().set_role(Role::Leader);
        campaign = Some(started);
    }
    // Controllers stop on shutdown, and on losing the lease.
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_controllers: Shared<futures::future::BoxFuture<'static, ()>> = {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown => {}
                _ = lost_rx => {}
            }
        }
        .boxed()
        .shared()
    };
    let shutdown = stop_controllers;

    let mut controllers = JoinSet::new();
    let names: Vec<String> = ctx
        .registrar()
        .take_controllers()
        .into_iter()
        .map(|prepared| {
            let name = prepared.name.clone();
            controllers.spawn((prepared.run)(shutdown.clone(), metrics.clone()));
            name
        })
        .collect();
    for (name, task) in ctx.registrar().take_leader_tasks() {
        let shutdown = shutdown.clone();
        controllers.spawn(async move {
            tokio::select! {
                _ = task => tracing::info!(task = %name, "task ended"),
                _ = shutdown => {}
            }
        });
    }
    metrics.status().set_controllers_started(true);
    crate::writes::mark_started();
    tracing::info!(controllers = ?names, "caches synced; controllers started");
    let mut lost = false;
    // Held until the controllers stopped: dropping it would stop them.
    let mut lost_tx = Some(lost_tx);
    match campaign.as_mut() {
        Some(campaign) => {
            let watch_lease = async {
                campaign.lost().await;
                tracing::error!("lost the leader lease; stopping the controllers");
                lost = true;
                if let Some(tx) = lost_tx.take() {
                    let _ = tx.send(());
                }
                futures::future::pending::<()>().await
            };
            tokio::select! {
                () = drain(&mut controllers, shutdown, grace) => {}
                () = watch_lease => {}
            }
        }
        None => drain(&mut controllers, shutdown, grace).await,
    }
    metrics.status().set_controllers_started(false);
    tracing::info!("controllers stopped");
    if let Some(campaign) = campaign {
        campaign.release(grace).await;
    }
    stop(informers, background).await;
    if lost {
        return Err(crate::Error::LeaderElection(
            "lost the leader lease; restart as a standby".into(),
        ));
    }
    Ok(())
}

/// Waits for every controller to end; once `shutdown` resolved, for at most `grace`, then
/// aborts the reconciles still running.
async fn drain(controllers: &mut JoinSet<()>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let all_done = async { while controllers.join_next().await.is_some() {} };
    let bounded = async {
        shutdown.await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = all_done => return,
        () = bounded => {}
    }
    tracing::warn!(
        remaining = controllers.len(),
        grace = ?grace,
        "reconciles still running after the shutdown timeout; aborting them"
    );
    controllers.abort_all();
    while controllers.join_next().await.is_some() {}
}

async fn stop(informers: Vec<tokio::task::JoinHandle<()>>, mut background: JoinSet<()>) {
    for informer in informers {
        informer.abort();
    }
    background.abort_all();
    while background.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_controllers_then_aborts_after_the_grace_period() {
        let mut controllers = JoinSet::new();
        controllers.spawn(tokio::time::sleep(Duration::from_secs(3)));
        let started = tokio::time::Instant::now();
        drain(&mut controllers, std::future::ready(()), Duration::from_secs(10)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "waited for the controller"
        );

        controllers.spawn(futures::future::pending());
        let started = tokio::time::Instant::now();
        drain(&mut controllers, std::future::ready(()), Duration::from_secs(10)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "bounded by the grace period"
        );
        assert!(controllers.is_empty());
    }
}
