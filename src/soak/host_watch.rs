//! Watching the host during the soak: host pods replaced while their virtual pod lives
//! (recreations), and token Secrets that outlive their pod.
//!
//! [`History`] is the plain record the watch events are applied to (tested without a server);
//! [`HostWatch`] feeds it from watches of the host namespace.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client, api::ObjectMeta, runtime::watcher};
use vcsync_syncer::syncers::pods::token::{TOKEN_POD_ANNOTATION, TOKEN_POD_UID_ANNOTATION};
use vcsync_translators::{MANAGED_BY_LABEL, OBJECT_UID_ANNOTATION};

/// How long a token Secret may outlive its host pod while the syncer runs: it goes with the
/// pod, so anything near the 60 s sweep is the defect this catches.
pub(super) const TOKEN_LATE: Duration = Duration::from_secs(5);

/// A host pod as (host pod name, virtual pod UID).
type PodId = (String, String);

/// What the host watches saw.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Host UID of each host pod last seen, by (name, virtual UID).
    host_uids: HashMap<PodId, String>,
    /// Host pods replaced by another while their virtual pod lived.
    pub(super) recreations: Vec<String>,
    /// When each host pod went.
    pods_gone: HashMap<PodId, Instant>,
    /// The pod each token Secret (by name) holds tokens for now.
    tokens: HashMap<String, PodId>,
    /// When each pod's token Secret went (deleted, or rewritten for another pod).
    tokens_gone: HashMap<PodId, Instant>,
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a String> {
    meta.annotations.as_ref()?.get(key)
}

impl History {
    /// A host pod added or changed (`gone`: deleted) at `now`.
    pub(super) fn pod(&mut self, meta: &ObjectMeta, gone: bool, now: Instant) {
        let (Some(name), Some(virtual_uid), Some(uid)) = (
            meta.name.clone(),
            annotation(meta, OBJECT_UID_ANNOTATION).cloned(),
            meta.uid.clone(),
        ) else {
            return;
        };
        let id = (name, virtual_uid);
        if gone {
            self.pods_gone.entry(id).or_insert(now);
            return;
        }
        if let Some(before) = self.host_uids.insert(id.clone(), uid.clone())
            && before != uid
        {
            self.recreations.push(format!(
                "host pod {} of virtual pod {} recreated (host uid {before} -> {uid})",
                id.0, id.1
            ));
        }
    }

    /// A token Secret added or changed (`gone`: deleted) at `now`.
    pub(super) fn token_secret(&mut self, meta: &ObjectMeta, gone: bool, now: Instant) {
        let (Some(name), Some(pod), Some(virtual_uid)) = (
            meta.name.clone(),
            annotation(meta, TOKEN_POD_ANNOTATION).cloned(),
            annotation(meta, TOKEN_POD_UID_ANNOTATION).cloned(),
        ) else {
            return;
        };
        let id = (pod, virtual_uid);
        let before = if gone {
            self.tokens.remove(&name)
        } else {
            self.tokens.insert(name, id.clone())
        };
        if let Some(before) = before
            && (gone || before != id)
        {
            self.tokens_gone.entry(before).or_insert(now);
        } else if gone {
            self.tokens_gone.entry(id).or_insert(now);
        }
    }

    /// Token Secrets that outlived their host pod by more than [`TOKEN_LATE`] (those still
    /// there count up to `now`), unless the syncer was killed in that time (`kills`: when): one
    /// line each; and the longest such lag of all.
    pub(super) fn late_tokens(&self, kills: &[Instant], now: Instant) -> (Vec<String>, Duration) {
        let mut late = Vec::new();
        let mut longest = Duration::ZERO;
        for (id, gone) in &self.pods_gone {
            let still_there = self.tokens.values().any(|held| held == id);
            let token_gone = match self.tokens_gone.get(id) {
                Some(at) => *at,
                None if still_there => now,
                // This pod's tokens were never seen: nothing to outlive it.
                None => continue,
            };
            let lag = token_gone.saturating_duration_since(*gone);
            if lag <= TOKEN_LATE {
                continue;
            }
            // A syncer killed around the pod's end leaves its tokens to the next start's sweep.
            let window = gone.checked_sub(Duration::from_secs(1)).unwrap_or(*gone)..=token_gone;
            if kills.iter().any(|kill| window.contains(kill)) {
                continue;
            }
            longest = longest.max(lag);
            late.push(format!(
                "the token Secret of host pod {} (virtual uid {}) went {:.1} s after it",
                id.0,
                id.1,
                lag.as_secs_f64()
            ));
        }
        late.sort();
        (late, longest)
    }
}

/// The host watches of one soak, feeding a shared [`History`].
pub(super) struct HostWatch {
    history: Arc<Mutex<History>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HostWatch {
    /// Watches the pods and Secrets of `instance` in `namespace` of the host.
    pub(super) fn start(host: &Client, namespace: &str, instance: &str) -> Self {
        let history = Arc::new(Mutex::new(History::default()));
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={instance}"));
        let tasks = vec![
            spawn(
                Api::<Pod>::namespaced(host.clone(), namespace),
                config.clone(),
                &history,
                History::pod,
            ),
            spawn(
                Api::<Secret>::namespaced(host.clone(), namespace),
                config,
                &history,
                History::token_secret,
            ),
        ];
        Self { history, tasks }
    }

    /// Runs `read` on what was seen so far.
    pub(super) fn read<T>(&self, read: impl FnOnce(&History) -> T) -> T {
        read(&self.history.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for HostWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn spawn<K>(
    api: Api<K>,
    config: watcher::Config,
    history: &Arc<Mutex<History>>,
    record: fn(&mut History, &ObjectMeta, bool, Instant),
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let history = history.clone();
    tokio::spawn(async move {
        let mut changes = std::pin::pin!(crate::watch_events::changes(api, config));
        while let Some((object, gone, now)) = changes.next().await {
            let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
            record(&mut history, object.meta(), gone, now);
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(name: &str, virtual_uid: &str, uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            uid: Some(uid.into()),
            annotations: Some(BTreeMap::from([(
                OBJECT_UID_ANNOTATION.to_string(),
                virtual_uid.to_string(),
            )])),
            ..Default::default()
        }
    }

    fn token(pod: &str, virtual_uid: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("{pod}.sa-token")),
            annotations: Some(BTreeMap::from([
                (TOKEN_POD_ANNOTATION.to_string(), pod.to_string()),
                (TOKEN_POD_UID_ANNOTATION.to_string(), virtual_uid.to_string()),
            ])),
            ..Default::default()
        }
    }

    #[test]
    fn a_host_pod_replaced_for_the_same_virtual_pod_is_a_recreation() {
        let now = Instant::now();
        let mut history = History::default();
        history.pod(&pod("a", "v1", "h1"), false, now);
        history.pod(&pod("a", "v1", "h1"), false, now);
        // A namesake virtual pod (another UID) gets a new host pod: no recreation.
        history.pod(&pod("a", "v1", "h1"), true, now);
        history.pod(&pod("a", "v2", "h2"), false, now);
        assert!(history.recreations.is_empty(), "{:?}", history.recreations);
        // The same virtual pod's host pod deleted and made again: a recreation.
        history.pod(&pod("a", "v2", "h2"), true, now);
        history.pod(&pod("a", "v2", "h3"), false, now);
        assert_eq!(history.recreations.len(), 1, "{:?}", history.recreations);
    }

    #[test]
    fn a_token_secret_outliving_its_pod_is_late_unless_the_syncer_was_killed() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut history = History::default();
        for (name, uid) in [("a", "v1"), ("b", "v2"), ("c", "v3"), ("d", "v4")] {
            history.pod(&pod(name, uid, &format!("h-{name}")), false, at(0));
            history.token_secret(&token(name, uid), false, at(0));
        }
        // a: its tokens go with it.
        history.pod(&pod("a", "v1", "h-a"), true, at(10));
        history.token_secret(&token("a", "v1"), true, at(11));
        // b: its tokens stay 30 s.
        history.pod(&pod("b", "v2", "h-b"), true, at(10));
        history.token_secret(&token("b", "v2"), true, at(40));
        // c: its Secret is rewritten for a namesake 20 s later: late too.
        history.pod(&pod("c", "v3", "h-c"), true, at(10));
        history.token_secret(&token("c", "v5"), false, at(30));
        // d: still there at the end, but the syncer was killed right after the pod went.
        history.pod(&pod("d", "v4", "h-d"), true, at(50));

        let (late, longest) = history.late_tokens(&[at(51)], at(70));
        assert_eq!(late.len(), 2, "{late:?}");
        assert!(
            late[0].contains("host pod b") && late[1].contains("host pod c"),
            "{late:?}"
        );
        assert_eq!(longest, Duration::from_secs(30));
        // Without the kill, d counts (20 s so far).
        let (late, _) = history.late_tokens(&[], at(70));
        assert_eq!(late.len(), 3, "{late:?}");
    }
}
