//! Watching both clusters: when each pod appears on the host and runs on each side.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, Client, api::ObjectMeta, runtime::watcher};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION};

use super::args::*;

/// What the watches saw of one pod (keyed by its virtual name).
#[derive(Clone, Debug, Default)]
pub(super) struct PodTimes {
    pub(super) host_seen: Option<Instant>,
    pub(super) host_running: Option<Instant>,
    pub(super) host_gone: Option<Instant>,
    pub(super) virtual_running: Option<Instant>,
    pub(super) virtual_gone: Option<Instant>,
}

/// What the watches saw, shared with the watch tasks.
#[derive(Debug, Default)]
pub(super) struct Seen {
    pub(super) pods: HashMap<String, PodTimes>,
    /// Host config maps by virtual name: when each `data.v` value was first seen.
    pub(super) config_maps: HashMap<String, HashMap<String, Instant>>,
    /// Host config maps and secrets currently present (by virtual name).
    pub(super) host_data_objects: usize,
    /// Pods created directly on the host (steady's baseline): when each was first seen.
    pub(super) direct_seen: HashMap<String, Instant>,
}

pub(super) type Shared = Arc<Mutex<Seen>>;

pub(super) fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

pub(super) fn virtual_name_of(meta: &ObjectMeta) -> Option<String> {
    meta.annotations.as_ref()?.get(OBJECT_NAME_ANNOTATION).cloned()
}

/// Spawns a watch of `api` that hands each added, changed (`gone` false) or deleted (`gone`
/// true) object of a known virtual name to `record`, with the instant it was seen.
pub(super) fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    seen: &Shared,
    name_of: fn(&K) -> Option<String>,
    mut record: impl FnMut(&mut Seen, String, &K, bool, Instant) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let seen = seen.clone();
    tokio::spawn(async move {
        let mut changes = std::pin::pin!(crate::watch_events::changes(api, config));
        while let Some((object, gone, now)) = changes.next().await {
            let Some(name) = name_of(&object) else {
                continue;
            };
            record(&mut lock(&seen), name, &object, gone, now);
        }
    })
}

/// Watches the host's synced pods, config maps and secrets, and the virtual pods.
pub(super) fn start_watches(host: &Client, virt: &Client, seen: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
    let selector = format!("{MANAGED_BY_LABEL}={INSTANCE}");
    let config = watcher::Config::default().labels(&selector);
    let host_pods = spawn_watch(
        Api::<Pod>::namespaced(host.clone(), HOST_NAMESPACE),
        config.clone(),
        seen,
        |pod| virtual_name_of(&pod.metadata),
        |seen, name, pod, gone, now| {
            let times = seen.pods.entry(name).or_default();
            times.host_seen.get_or_insert(now);
            if is_running(pod) {
                times.host_running.get_or_insert(now);
            }
            if gone {
                times.host_gone.get_or_insert(now);
            }
        },
    );
    let virtual_pods = spawn_watch(
        Api::<Pod>::namespaced(virt.clone(), VIRTUAL_NAMESPACE),
        watcher::Config::default(),
        seen,
        |pod| pod.metadata.name.clone(),
        |seen, name, pod, gone, now| {
            let times = seen.pods.entry(name).or_default();
            if is_running(pod) {
                times.virtual_running.get_or_insert(now);
            }
            if gone {
                times.virtual_gone.get_or_insert(now);
            }
        },
    );
    let host_config_maps = spawn_watch(
        Api::<ConfigMap>::namespaced(host.clone(), HOST_NAMESPACE),
        config.clone(),
        seen,
        |cm| virtual_name_of(&cm.metadata),
        |seen, name, cm, gone, now| {
            if gone {
                if seen.config_maps.remove(&name).is_some() {
                    seen.host_data_objects -= 1;
                }
                return;
            }
            let value = cm
                .data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default();
            if !seen.config_maps.contains_key(&name) {
                seen.host_data_objects += 1;
            }
            seen.config_maps
                .entry(name)
                .or_default()
                .entry(value)
                .or_insert(now);
        },
    );
    let mut present = std::collections::HashSet::new();
    let host_secrets = spawn_watch(
        Api::<Secret>::namespaced(host.clone(), HOST_NAMESPACE),
        config,
        seen,
        |secret| virtual_name_of(&secret.metadata),
        move |seen, name, _, gone, _| {
            if gone {
                if present.remove(&name) {
                    seen.host_data_objects -= 1;
                }
            } else if present.insert(name) {
                seen.host_data_objects += 1;
            }
        },
    );
    vec![host_pods, virtual_pods, host_config_maps, host_secrets]
}

/// Polls `done` over the shared observations until it holds; fails after `timeout`.
pub(super) async fn wait_for(
    seen: &Shared,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        if done(&lock(seen)) {
            return Ok(Instant::now());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
