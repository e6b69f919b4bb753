//! The `kubelet` scenario: `logs`, `exec` and `port-forward` of one pod through the syncer's
//! kubelet API (virtual API server -> vcsync -> host API server -> host kubelet, the pod by its
//! virtual name) against the same requests directly on the host (host API server -> host
//! kubelet, the host twin by its host name), in the same run.
//!
//! Logs and exec are sent from this process, so that a sample is the request alone
//! ([`requests`]); the through and direct samples alternate, so both paths see the same
//! machine ([`samples`]). Port-forward goes through `kubectl port-forward`, as a user runs it
//! ([`kubectl`]), and pushes bytes through the fake container's echo ([`forward`]).

use kube::api::ListParams;
use vcsync_translators::OBJECT_NAMESPACE_ANNOTATION;

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, bail};
use k8s_openapi::{
    api::core::v1::Pod,
    serde_json::{Value, json},
};
use kube::{Api, Client, api::PostParams};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION};

use self::{requests::*, samples::*, target::*};
use super::{args::*, harness::*, objects::*, watches::*};

mod forward;
mod kubectl;
mod requests;
mod samples;
mod target;

pub(super) use self::kubectl::find_kubectl;

/// Runs the scenario on `bench`, its figures into `out`.
pub(super) async fn kubelet(
    args: &BenchArgs,
    kubectl: Option<&Path>,
    dir: &Path,
    bench: &mut Bench,
    out: &mut BTreeMap<String, Value>,
) -> anyhow::Result<()> {
    let n = args.requests;
    if n == 0 || args.forward_mib == 0 {
        bail!("--requests and --forward-mib must be positive");
    }
    // Found before the servers started, so that its absence is said at once.
    let kubectl = match kubectl {
        Some(kubectl) => kubectl.to_path_buf(),
        None => find_kubectl()?,
    };
    out.insert("pods".into(), json!(1));
    out.insert("requests_each_way".into(), json!(n));
    out.insert("forward_mib".into(), json!(args.forward_mib));
    out.remove("concurrency");
    bench.start_syncer(out).await?;

    let name = pod_name(0);
    Api::<Pod>::namespaced(bench.virt.clone(), VIRTUAL_NAMESPACE)
        .create(&PostParams::default(), &pod(0, VIRTUAL_NAMESPACE, false))
        .await
        .context("creating the virtual pod")?;
    bench.client.add("virtual", "create", "pods", 1);
    wait_for(&bench.seen, "the pod Running on both sides", bench.timeout, |s| {
        s.pods
            .get(&name)
            .is_some_and(|p| p.host_running.is_some() && p.virtual_running.is_some())
    })
    .await?;
    let host_name = host_twin(&bench.host, &name).await?;
    let through = Target {
        label: "through",
        client: bench.virt.clone(),
        kubeconfig: dir.join("virtual.kubeconfig"),
        namespace: VIRTUAL_NAMESPACE.into(),
        pod: name,
    };
    let direct = Target {
        label: "direct",
        client: bench.host.clone(),
        kubeconfig: dir.join("host.kubeconfig"),
        namespace: HOST_NAMESPACE.into(),
        pod: host_name,
    };

    // Both paths answer before anything is timed: through the syncer that waits until the
    // virtual node names vcsync's endpoint; the first requests also open the connections.
    let expected = until_ok(&direct, bench.timeout, "logs", logs_once).await?;
    let via_syncer = until_ok(&through, bench.timeout, "logs", logs_once).await?;
    if via_syncer != expected {
        bail!("logs through the syncer {via_syncer:?}, directly {expected:?}: not the same container");
    }
    until_ok(&direct, bench.timeout, "exec", exec_once).await?;
    until_ok(&through, bench.timeout, "exec", exec_once).await?;
    for _ in 0..3 {
        logs_once(&through).await?;
        logs_once(&direct).await?;
        exec_once(&through).await?;
        exec_once(&direct).await?;
    }

    // 1. logs --tail=1.
    bench.reset_counters().await?;
    let cpu = bench.cpu();
    let expected = &expected;
    let (through_ms, direct_ms) = alternate(n, &through, &direct, |target| async move {
        let text = logs_once(target).await?;
        if text != *expected {
            bail!("logs {}: {text:?}, expected {expected:?}", target.label);
        }
        Ok(())
    })
    .await?;
    bench.client.add("virtual", "get", "pods/log", n as u64);
    bench.client.add("host", "get", "pods/log", n as u64);
    record_phase(bench, out, "logs", cpu, through_ms, direct_ms).await?;

    // 2. exec -- echo hi.
    bench.reset_counters().await?;
    let cpu = bench.cpu();
    let (through_ms, direct_ms) = alternate(n, &through, &direct, exec_once).await?;
    bench.client.add("virtual", "get", "pods/exec", n as u64);
    bench.client.add("host", "get", "pods/exec", n as u64);
    record_phase(bench, out, "exec", cpu, through_ms, direct_ms).await?;

    // 3. port-forward: kubectl on each side, the same bytes pushed through each echo, in
    // alternating rounds on a new connection each; the median round of each side.
    let bytes = args.forward_mib * 1024 * 1024;
    forward::forward_phase(&kubectl, [&direct, &through], dir, bytes, bench, out).await?;
    let stats = bench.record_process(&mut BTreeMap::new(), 0, "")?;
    out.insert("rss_bytes".into(), json!(stats.rss));
    out.insert("peak_rss_bytes".into(), json!(stats.hwm));
    Ok(())
}

/// The host twin of virtual pod `name` in the bench's namespace, found by its ownership
/// annotations.
async fn host_twin(host: &Client, name: &str) -> anyhow::Result<String> {
    let selector = format!("{MANAGED_BY_LABEL}={INSTANCE}");
    let pods = Api::<Pod>::namespaced(host.clone(), HOST_NAMESPACE)
        .list(&ListParams::default().labels(&selector))
        .await
        .context("listing the host pods")?;
    pods.items
        .into_iter()
        .find(|pod| {
            let annotations = pod.metadata.annotations.as_ref();
            let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
            get(OBJECT_NAME_ANNOTATION) == Some(name)
                && get(OBJECT_NAMESPACE_ANNOTATION) == Some(VIRTUAL_NAMESPACE)
        })
        .and_then(|pod| pod.metadata.name)
        .with_context(|| format!("no host pod in {HOST_NAMESPACE} is the twin of {VIRTUAL_NAMESPACE}/{name}"))
}
