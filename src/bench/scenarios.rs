//! The scenarios: burst, steady, restart and churn.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    serde_json::{Value, json},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};

use super::{args::*, figures::*, harness::*, objects::*, watches::*};

pub(super) async fn burst(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.pods;
    // Direct: the same client creates the same objects on the host, before the syncer runs.
    let (own_before, _) = bench.cpu();
    let direct = create_all(
        &bench.host,
        "host",
        DIRECT_NAMESPACE,
        0..n,
        args.concurrency,
        &bench.client,
    )
    .await?;
    out.insert("direct_s".into(), json!(round3(direct.as_secs_f64())));
    out.insert(
        "direct_servers_and_client_cpu_s".into(),
        json!(round3(bench.cpu().0 - own_before)),
    );
    bench.start_syncer(out).await?;
    let idle = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    bench.reset_counters().await?;
    let (on_host, running, (servers_cpu, syncer_cpu)) = bench.sync_pods(n, args.concurrency).await?;
    out.insert("sync_s".into(), json!(round3(on_host.as_secs_f64())));
    out.insert(
        "sync_direct_ratio".into(),
        json!(round3(on_host.as_secs_f64() / direct.as_secs_f64())),
    );
    // What bounds the ratio on a machine the servers share with the syncer: the CPU of the
    // sync phase. Even a syncer costing nothing would wait for the servers' share of it.
    out.insert("sync_servers_and_client_cpu_s".into(), json!(round3(servers_cpu)));
    out.insert("sync_syncer_cpu_s".into(), json!(round3(syncer_cpu)));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    out.insert(
        "servers_bound_ratio".into(),
        json!(round3(servers_cpu / cores / direct.as_secs_f64())),
    );
    out.insert(
        "all_running_virtual_s".into(),
        json!(round3(running.as_secs_f64())),
    );
    bench.settle(Duration::from_secs(2)).await?;
    let stats = bench.record_process(out, n, "")?;
    out.insert("syncer_cpu_s".into(), json!(round3(stats.cpu_s - idle.cpu_s)));
    bench.record_requests(out, n, "").await?;
    let metrics = crate::child::syncer_metrics(bench.metrics).await?;
    out.insert("reconciles_per_pod".into(), reconciles_per_pod(&metrics, n));
    out.insert("cache_bytes_per_pod".into(), cache_bytes_per_pod(&metrics, n));
    let seen = lock(&bench.seen);
    out.insert(
        "pods_synced".into(),
        json!(seen.pods.values().filter(|p| p.host_seen.is_some()).count()),
    );
    out.insert(
        "pods_running_virtual".into(),
        json!(seen.pods.values().filter(|p| p.virtual_running.is_some()).count()),
    );
    out.insert("host_data_objects".into(), json!(seen.host_data_objects));
    Ok(())
}

/// Creates `total` pods (without references) in `namespace` at `rate` per second, each
/// create in a task of its own at its due time; returns when each was sent, by name, and how
/// long the sending took.
pub(super) async fn create_paced(
    client: &Client,
    namespace: &'static str,
    total: usize,
    rate: u32,
) -> anyhow::Result<(HashMap<String, Instant>, Duration)> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, sent) = (client.clone(), sent.clone());
        tasks.spawn(async move {
            let pod = pod(i, namespace, false);
            let at = Instant::now();
            sent.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(pod_name(i), at);
            Api::<Pod>::namespaced(client, namespace)
                .create(&PostParams::default(), &pod)
                .await
                .context("creating a pod")
                .map(|_| ())
        });
    }
    let sending = start.elapsed();
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|p| p.into_inner()));
    Ok((sent, sending))
}

pub(super) async fn steady(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let total = args.rate as usize * args.seconds as usize;
    // Baseline, before the syncer starts: pods at the same rate created directly on the host,
    // seen by a host watch: one API round trip and one watch event, the floor of any
    // syncer's down latency on these servers at this load.
    let direct_watch = spawn_watch(
        Api::<Pod>::namespaced(bench.host.clone(), DIRECT_NAMESPACE),
        watcher::Config::default(),
        &bench.seen,
        |pod| pod.metadata.name.clone(),
        |seen, name, _, _, now| {
            seen.direct_seen.entry(name).or_insert(now);
        },
    );
    // Three seconds of it are enough samples; more would leave the host (and its simulated
    // kubelets) busier for the synced run than the synced pods alone make it.
    let direct_total = total.min(3 * args.rate as usize);
    let (direct_sent, _) = create_paced(&bench.host, DIRECT_NAMESPACE, direct_total, args.rate).await?;
    bench.client.add("host", "create", "pods", direct_total as u64);
    wait_for(&bench.seen, "all direct pods", bench.timeout, |s| {
        s.direct_seen.len() >= direct_total
    })
    .await?;
    direct_watch.abort();
    let direct: Vec<f64> = {
        let seen = lock(&bench.seen);
        direct_sent
            .iter()
            .filter_map(|(name, at)| Some(ms(seen.direct_seen.get(name)?.saturating_duration_since(*at))))
            .collect()
    };

    bench.start_syncer(out).await?;
    let idle = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    bench.reset_counters().await?;
    let (sent, sending) = create_paced(&bench.virt, VIRTUAL_NAMESPACE, total, args.rate).await?;
    bench.client.add("virtual", "create", "pods", total as u64);
    out.insert("offered_rate".into(), json!(args.rate));
    out.insert(
        "achieved_rate".into(),
        json!(round3(total as f64 / sending.as_secs_f64())),
    );
    wait_for(&bench.seen, "all virtual pods Running", bench.timeout, |s| {
        s.pods.values().filter(|p| p.virtual_running.is_some()).count() >= total
    })
    .await?;
    bench.settle(Duration::from_secs(2)).await?;
    let (mut down, mut up) = (Vec::new(), Vec::new());
    {
        let seen = lock(&bench.seen);
        for (name, at) in sent.iter() {
            let Some(times) = seen.pods.get(name) else {
                continue;
            };
            if let Some(host) = times.host_seen {
                down.push(ms(host.saturating_duration_since(*at)));
            }
            if let (Some(h), Some(v)) = (times.host_running, times.virtual_running) {
                up.push(ms(v.saturating_duration_since(h)));
            }
        }
    }
    latency_fields("down", down, out);
    latency_fields("up", up, out);
    latency_fields("direct", direct, out);
    let p50 = |prefix: &str| out.get(&format!("{prefix}_p50_ms")).and_then(Value::as_f64);
    if let (Some(d), Some(b)) = (p50("down"), p50("direct")) {
        out.insert("down_direct_p50_ratio".into(), json!(round3(d / b)));
    }
    let stats = bench.record_process(out, total, "")?;
    out.insert("syncer_cpu_s".into(), json!(round3(stats.cpu_s - idle.cpu_s)));
    bench.record_requests(out, total, "").await?;
    out.insert("pods_synced".into(), json!(total));
    out.insert("pods".into(), json!(total));
    Ok(())
}

pub(super) async fn restart(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.pods;
    bench.start_syncer(out).await?;
    bench.reset_counters().await?;
    let (on_host, running, _) = bench.sync_pods(n, args.concurrency).await?;
    out.insert("sync_s".into(), json!(round3(on_host.as_secs_f64())));
    out.insert(
        "all_running_virtual_s".into(),
        json!(round3(running.as_secs_f64())),
    );
    bench.settle(Duration::from_secs(2)).await?;
    bench.record_process(out, n, "before_restart_")?;
    bench.record_requests(out, n, "").await?;
    out.insert("pods_synced".into(), json!(n));

    bench.syncer.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    bench.reset_counters().await?;
    bench.syncer.start()?;
    let ready = bench
        .syncer
        .wait_started(bench.timeout, Duration::from_millis(5))
        .await?;
    out.insert("restart_ready_s".into(), json!(round3(ready.as_secs_f64())));
    // The resync: every object reconciled once after the start; a window well past it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests = bench.record_requests(out, n, "restart_").await?;
    out.insert("restart_writes".into(), json!(requests.object_writes()));
    let stats = bench.record_process(out, n, "restart_")?;
    out.insert("restart_cpu_s".into(), json!(round3(stats.cpu_s)));
    let metrics = crate::child::syncer_metrics(bench.metrics).await?;
    out.insert(
        "restart_cache_bytes_per_pod".into(),
        cache_bytes_per_pod(&metrics, n),
    );
    // After a restart the caches hold just the objects: the cleaner figure of memory per pod.
    out.insert(
        "rss_per_pod_bytes".into(),
        json!(stats.rss.saturating_sub(bench.baseline.rss) / n.max(1) as u64),
    );
    Ok(())
}

pub(super) async fn churn(
    args: &BenchArgs,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.pods;
    bench.start_syncer(out).await?;
    bench.sync_pods(n, args.concurrency).await?;
    bench.settle(Duration::from_secs(2)).await?;

    // Updates: every ConfigMap's value 1 -> 2.
    bench.reset_counters().await?;
    let sent: Mutex<HashMap<String, Instant>> = Mutex::default();
    let start = Instant::now();
    let results: Vec<kube::Result<ConfigMap>> = stream::iter(0..n)
        .map(|i| {
            let api = Api::<ConfigMap>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE);
            let sent = &sent;
            async move {
                let name = format!("cm-{i}");
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), Instant::now());
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"v": "2"}})),
                )
                .await
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .collect::<kube::Result<Vec<_>>>()
        .context("updating config maps")?;
    bench.client.add("virtual", "patch", "configmaps", n as u64);
    let done = wait_for(&bench.seen, "all updates on the host", bench.timeout, |s| {
        s.config_maps.values().filter(|v| v.contains_key("2")).count() >= n
    })
    .await?;
    out.insert("update_all_s".into(), json!(round3((done - start).as_secs_f64())));
    bench.settle(Duration::from_secs(1)).await?;
    let mut latencies = Vec::new();
    {
        let seen = lock(&bench.seen);
        for (name, at) in sent.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(host) = seen.config_maps.get(name).and_then(|v| v.get("2")) {
                latencies.push(ms(host.saturating_duration_since(*at)));
            }
        }
    }
    latency_fields("update", latencies, out);
    bench.record_requests(out, n, "update_").await?;

    // Deletes: every pod; its host copy goes, then its config map and secret (last reference).
    bench.reset_counters().await?;
    let start = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| {
            let api = Api::<Pod>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE);
            async move {
                api.delete(&pod_name(i), &DeleteParams::default())
                    .await
                    .context("deleting a pod")
                    .map(|_| ())
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    bench.client.add("virtual", "delete", "pods", n as u64);
    let host_gone = wait_for(&bench.seen, "all host pods deleted", bench.timeout, |s| {
        s.pods.values().filter(|p| p.host_gone.is_some()).count() >= n
    })
    .await?;
    let virtual_gone = wait_for(&bench.seen, "all virtual pods gone", bench.timeout, |s| {
        s.pods.values().filter(|p| p.virtual_gone.is_some()).count() >= n
    })
    .await?;
    let data_gone = wait_for(
        &bench.seen,
        "host config maps and secrets removed",
        bench.timeout,
        |s| s.host_data_objects == 0,
    )
    .await?;
    out.insert(
        "delete_host_pods_s".into(),
        json!(round3((host_gone - start).as_secs_f64())),
    );
    out.insert(
        "delete_virtual_pods_s".into(),
        json!(round3((virtual_gone - start).as_secs_f64())),
    );
    out.insert(
        "delete_host_data_s".into(),
        json!(round3((data_gone - start).as_secs_f64())),
    );
    bench.settle(Duration::from_secs(1)).await?;
    bench.record_requests(out, n, "delete_").await?;
    bench.record_process(out, 0, "")?;
    out.insert("pods_synced".into(), json!(n));
    Ok(())
}
