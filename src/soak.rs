//! `vcsync soak`: a bounded crash-consistency soak of the syncer.
//!
//! Starts a host and a virtual embedded API server in this process, runs `vcsync run` as a child
//! process between them, and drives a seeded create/update/delete churn of ConfigMaps and Secrets
//! over several virtual namespaces while killing the child with SIGKILL at random points and
//! restarting it. Foreign host objects (not this instance's, some at the very names the syncer
//! would use) are created first. After the churn the syncer is killed and restarted a last time,
//! and once it has converged (bounded wait) the state is checked:
//!
//! - every virtual object has exactly one host copy, under the translated name, with the virtual
//!   object's data, labels and UID (a virtual object whose host name is held by a foreign object
//!   has none, by design: it is counted as blocked);
//! - no owned host object without a virtual twin (orphans), none under a wrong name (duplicates);
//! - every foreign host object still exists with its original resourceVersion;
//! - the virtual objects are exactly what the churn made (the syncer never rewrote them);
//! - the syncer never exited on its own.
//!
//! The report is a table or JSON; any violation makes the command fail.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Secret},
    serde_json::{self, Value, json},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use vcsync_apiserver::ApiServer;
use vcsync_syncer::Config;
use vcsync_translators::{
    MANAGED_BY_LABEL, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, OBJECT_UID_ANNOTATION,
    RESERVED_PREFIX,
};

/// Instance name of the soaked syncer.
const INSTANCE: &str = "soak";
/// Host namespace of the soaked syncer.
const HOST_NAMESPACE: &str = "vcsync-soak";
/// Foreign host objects at names the syncer would use for virtual objects of the churn.
const FOREIGN_COLLISIONS: usize = 6;
/// Foreign host objects at unrelated names.
const FOREIGN_OTHERS: usize = 6;
/// Examples of each kind of violation kept in the report.
const EXAMPLES: usize = 5;

/// Flags of `vcsync soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Distinct virtual objects (ConfigMaps and Secrets) the churn creates.
    #[arg(long, default_value_t = 1000)]
    pub objects: usize,
    /// SIGKILLs of the syncer at random points of the churn (one more precedes the final run).
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Seed of the churn and of the kill schedule (default: from the clock; the report prints it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual namespaces the objects are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: usize,
    /// Pause between two churn operations, in milliseconds.
    #[arg(long, default_value_t = 2)]
    pub pace_ms: u64,
    /// Bound of the wait for convergence after the final restart, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Directory for the kubeconfigs, vcsync.yaml and the syncer's log (default: a fresh
    /// temporary directory, removed when the soak passes).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness and the churn plan

/// SplitMix64: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The kinds the soak churns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }
}

/// An object of either cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    kind: Kind,
    namespace: String,
    name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What the churn writes into a virtual object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Content {
    data: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

/// One churn operation on the virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Create(Key, Content),
    /// Key, content before, content after.
    Update(Key, Content, Content),
    Delete(Key),
}

fn virtual_namespace(i: usize) -> String {
    format!("tenant-{i}")
}

fn random_data(rng: &mut Rng) -> BTreeMap<String, String> {
    (0..1 + rng.below(3))
        .map(|j| (format!("k{j}"), format!("{:x}", rng.next())))
        .collect()
}

fn random_labels(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("app".to_string(), format!("a{}", rng.below(5)))]);
    if rng.chance(50) {
        labels.insert("tier".into(), format!("t{}", rng.below(3)));
    }
    if rng.chance(5) {
        // A tenant trying to forge ownership: the host copy must carry the real marker.
        labels.insert(MANAGED_BY_LABEL.into(), "forged".into());
    }
    labels
}

/// The churn of a seed: creates until `objects` objects were created, updates (data or labels)
/// and deletes in between; some names are reused after a delete (a new object, a new UID), some
/// are long or dotted so that they take the hashed host form.
fn plan(seed: u64, objects: usize, namespaces: usize) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut live: Vec<(Key, Content)> = Vec::new();
    let mut deleted: Vec<Key> = Vec::new();
    let mut ops = Vec::new();
    let mut created = 0;
    while created < objects {
        let roll = rng.below(100);
        if live.is_empty() || roll < 50 {
            let key = if !deleted.is_empty() && rng.chance(10) {
                deleted.swap_remove(rng.below(deleted.len()))
            } else {
                let kind = if rng.chance(50) {
                    Kind::ConfigMap
                } else {
                    Kind::Secret
                };
                let prefix = if kind == Kind::ConfigMap { "cm" } else { "sec" };
                let name = match rng.below(20) {
                    0 => format!("{prefix}-{created}-{}", "long".repeat(12)),
                    1 => format!("{prefix}.v1-{created}"),
                    _ => format!("{prefix}-{created}"),
                };
                Key {
                    kind,
                    namespace: virtual_namespace(rng.below(namespaces.max(1))),
                    name,
                }
            };
            let content = Content {
                data: random_data(&mut rng),
                labels: random_labels(&mut rng),
            };
            live.push((key.clone(), content.clone()));
            ops.push(Op::Create(key, content));
            created += 1;
        } else if roll < 80 {
            let i = rng.below(live.len());
            let before = live[i].1.clone();
            let mut after = before.clone();
            match rng.below(10) {
                0..=4 => after.data = random_data(&mut rng),
                5..=8 => after.labels = random_labels(&mut rng),
                _ => {
                    after.data = random_data(&mut rng);
                    after.labels = random_labels(&mut rng);
                }
            }
            live[i].1 = after.clone();
            ops.push(Op::Update(live[i].0.clone(), before, after));
        } else {
            let (key, _) = live.swap_remove(rng.below(live.len()));
            deleted.push(key.clone());
            ops.push(Op::Delete(key));
        }
    }
    ops
}

/// The virtual state the churn leaves.
fn final_state(ops: &[Op]) -> BTreeMap<Key, Content> {
    let mut state = BTreeMap::new();
    for op in ops {
        match op {
            Op::Create(key, content) | Op::Update(key, _, content) => {
                state.insert(key.clone(), content.clone());
            }
            Op::Delete(key) => {
                state.remove(key);
            }
        }
    }
    state
}

// ---------------------------------------------------------------------------------------------
// The checker

/// An object as listed from either cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Observed {
    uid: String,
    resource_version: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, String>,
}

/// Both clusters' ConfigMaps and Secrets (virtual: the soak's namespaces only).
#[derive(Clone, Debug, Default)]
struct Snapshot {
    virt: BTreeMap<Key, Observed>,
    host: BTreeMap<Key, Observed>,
}

/// Violations found by [`check`], each with a description; and the counts of what was fine.
#[derive(Clone, Debug, Default)]
struct Findings {
    /// Virtual objects checked.
    checked: usize,
    /// Virtual objects with their one correct host copy.
    synced: usize,
    /// Virtual objects whose host name a foreign object holds (no copy expected).
    blocked: usize,
    /// Virtual objects without a host copy.
    losses: Vec<String>,
    /// Host copies with the wrong data, labels, annotations or UID.
    wrong: Vec<String>,
    /// Owned host objects without a virtual twin.
    orphans: Vec<String>,
    /// Owned host objects of a virtual object under another name than the translated one.
    duplicates: Vec<String>,
    /// Foreign host objects deleted or modified.
    foreign_touched: Vec<String>,
    /// Virtual objects that differ from what the churn wrote.
    virtual_drift: Vec<String>,
}

impl Findings {
    fn violations(&self) -> usize {
        self.losses.len()
            + self.wrong.len()
            + self.orphans.len()
            + self.duplicates.len()
            + self.foreign_touched.len()
            + self.virtual_drift.len()
    }
}

fn without_reserved(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn host_key_of(config: &Config, key: &Key) -> Key {
    let host = config.namespace_mapping().host_key(&key.namespace, &key.name);
    Key {
        kind: key.kind,
        namespace: host.namespace.unwrap_or_default(),
        name: host.name,
    }
}

/// Checks `snapshot` against the churn's final virtual state `expected` and the `foreign` host
/// objects recorded before the syncer first ran.
fn check(
    config: &Config,
    expected: &BTreeMap<Key, Content>,
    foreign: &BTreeMap<Key, Observed>,
    snapshot: &Snapshot,
) -> Findings {
    let mut findings = Findings::default();

    // The virtual side is the churn's, untouched by the syncer.
    for (key, content) in expected {
        match snapshot.virt.get(key) {
            None => findings
                .virtual_drift
                .push(format!("{key}: missing in the virtual cluster")),
            Some(v) if v.data != content.data || v.labels != content.labels => findings
                .virtual_drift
                .push(format!("{key}: differs from what the churn wrote")),
            Some(_) => {}
        }
    }
    for key in snapshot.virt.keys().filter(|k| !expected.contains_key(k)) {
        findings
            .virtual_drift
            .push(format!("{key}: not made by the churn"));
    }

    let owned =
        |o: &Observed| o.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(config.instance.as_str());

    // Every virtual object: exactly its one correct copy.
    for (key, v) in &snapshot.virt {
        findings.checked += 1;
        let host_key = host_key_of(config, key);
        if foreign.contains_key(&host_key) {
            findings.blocked += 1;
            continue;
        }
        let Some(h) = snapshot.host.get(&host_key) else {
            findings.losses.push(format!("{key}: no host copy {host_key}"));
            continue;
        };
        if !owned(h) {
            findings
                .losses
                .push(format!("{key}: {host_key} exists but is not this instance's"));
            continue;
        }
        let mut problems = Vec::new();
        if h.annotations.get(OBJECT_NAME_ANNOTATION) != Some(&key.name)
            || h.annotations.get(OBJECT_NAMESPACE_ANNOTATION) != Some(&key.namespace)
        {
            problems.push("owner annotations");
        }
        if h.annotations.get(OBJECT_UID_ANNOTATION) != Some(&v.uid) {
            problems.push("UID (a stale copy)");
        }
        if h.data != v.data {
            problems.push("data");
        }
        if without_reserved(&h.labels) != without_reserved(&v.labels) {
            problems.push("labels");
        }
        if problems.is_empty() {
            findings.synced += 1;
        } else {
            findings.wrong.push(format!(
                "{key}: host copy {host_key} has the wrong {}",
                problems.join(", ")
            ));
        }
    }

    // Every owned host object: a copy of a living virtual object, under its translated name.
    for (host_key, h) in snapshot.host.iter().filter(|(_, h)| owned(h)) {
        let (Some(name), Some(namespace)) = (
            h.annotations.get(OBJECT_NAME_ANNOTATION),
            h.annotations.get(OBJECT_NAMESPACE_ANNOTATION),
        ) else {
            findings
                .orphans
                .push(format!("{host_key}: owned but names no virtual object"));
            continue;
        };
        let virtual_key = Key {
            kind: host_key.kind,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        if host_key_of(config, &virtual_key) != *host_key {
            findings
                .duplicates
                .push(format!("{host_key}: a copy of {virtual_key} under another name"));
        } else if !snapshot.virt.contains_key(&virtual_key) {
            findings
                .orphans
                .push(format!("{host_key}: its virtual object {virtual_key} is gone"));
        }
    }

    // Foreign objects: untouched.
    for (key, before) in foreign {
        match snapshot.host.get(key) {
            None => findings.foreign_touched.push(format!("{key}: deleted")),
            Some(now) if now.resource_version != before.resource_version || now != before => {
                findings.foreign_touched.push(format!(
                    "{key}: modified (resourceVersion {} -> {})",
                    before.resource_version, now.resource_version
                ))
            }
            Some(_) => {}
        }
    }
    findings
}

// ---------------------------------------------------------------------------------------------
// Talking to the clusters

fn observed(meta: &ObjectMeta, data: BTreeMap<String, String>) -> Observed {
    Observed {
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        data,
    }
}

fn key_of(kind: Kind, meta: &ObjectMeta) -> Key {
    Key {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Every ConfigMap and Secret of a cluster, optionally only of `namespaces`.
async fn list_all(
    client: &Client,
    namespaces: Option<&BTreeSet<String>>,
) -> anyhow::Result<BTreeMap<Key, Observed>> {
    let keep = |meta: &ObjectMeta| {
        namespaces.is_none_or(|set| set.contains(meta.namespace.as_deref().unwrap_or("")))
    };
    let mut all = BTreeMap::new();
    for cm in Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing config maps")?
    {
        if keep(&cm.metadata) {
            let data = cm.data.clone().unwrap_or_default();
            all.insert(
                key_of(Kind::ConfigMap, &cm.metadata),
                observed(&cm.metadata, data),
            );
        }
    }
    for secret in Api::<Secret>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing secrets")?
    {
        if keep(&secret.metadata) {
            all.insert(
                key_of(Kind::Secret, &secret.metadata),
                observed(&secret.metadata, secret_data(&secret)),
            );
        }
    }
    Ok(all)
}

async fn snapshot(host: &Client, virt: &Client, namespaces: &BTreeSet<String>) -> anyhow::Result<Snapshot> {
    Ok(Snapshot {
        virt: list_all(virt, Some(namespaces)).await?,
        host: list_all(host, None).await?,
    })
}

fn meta(key: &Key, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

async fn create(client: &Client, key: &Key, content: &Content) -> kube::Result<()> {
    let pp = PostParams::default();
    match key.kind {
        Kind::ConfigMap => {
            let cm = ConfigMap {
                metadata: meta(key, &content.labels),
                data: Some(content.data.clone()),
                ..Default::default()
            };
            Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                .create(&pp, &cm)
                .await?;
        }
        Kind::Secret => {
            let secret = Secret {
                metadata: meta(key, &content.labels),
                data: Some(
                    content
                        .data
                        .iter()
                        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                        .collect(),
                ),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            Api::<Secret>::namespaced(client.clone(), &key.namespace)
                .create(&pp, &secret)
                .await?;
        }
    }
    Ok(())
}

/// A JSON merge patch turning `before` into `after` (`encode` renders a data value).
fn merge_patch(before: &Content, after: &Content, encode: impl Fn(&str) -> Value) -> Value {
    fn diff(
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
        encode: &dyn Fn(&str) -> Value,
    ) -> Value {
        let mut patch = serde_json::Map::new();
        for k in before.keys().filter(|k| !after.contains_key(*k)) {
            patch.insert(k.clone(), Value::Null);
        }
        for (k, v) in after {
            patch.insert(k.clone(), encode(v));
        }
        Value::Object(patch)
    }
    json!({
        "metadata": {"labels": diff(&before.labels, &after.labels, &|v| Value::String(v.into()))},
        "data": diff(&before.data, &after.data, &encode),
    })
}

async fn apply(client: &Client, op: &Op) -> kube::Result<()> {
    match op {
        Op::Create(key, content) => create(client, key, content).await,
        Op::Update(key, before, after) => {
            let pp = PatchParams::default();
            match key.kind {
                Kind::ConfigMap => {
                    let patch = merge_patch(before, after, |v| Value::String(v.into()));
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .patch(&key.name, &pp, &Patch::Merge(patch))
                        .await?;
                }
                Kind::Secret => {
                    let patch = merge_patch(before, after, |v| {
                        serde_json::to_value(ByteString(v.as_bytes().to_vec())).unwrap_or(Value::Null)
                    });
                    Api::<Secret>::namespaced(client.clone(), &key.namespace)
                        .patch(&key.name, &pp, &Patch::Merge(patch))
                        .await?;
                }
            }
            Ok(())
        }
        Op::Delete(key) => {
            let dp = DeleteParams::default();
            match key.kind {
                Kind::ConfigMap => {
                    Api::<ConfigMap>::namespaced(client.clone(), &key.namespace)
                        .delete(&key.name, &dp)
                        .await?;
                }
                Kind::Secret => {
                    Api::<Secret>::namespaced(client.clone(), &key.namespace)
                        .delete(&key.name, &dp)
                        .await?;
                }
            }
            Ok(())
        }
    }
}

/// Applies `op`, retrying transient failures a few times.
async fn apply_with_retries(client: &Client, op: &Op) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match apply(client, op).await {
            Ok(()) => return Ok(()),
            Err(err) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(%err, "churn operation failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err).with_context(|| format!("churn operation {op:?}")),
        }
    }
}

/// Creates the foreign host objects: some at the host names of virtual objects the churn will
/// create (half of them labelled as another instance's), some at unrelated names. Returns them
/// as the host lists them.
async fn create_foreign(
    host: &Client,
    config: &Config,
    ops: &[Op],
    rng: &mut Rng,
) -> anyhow::Result<BTreeMap<Key, Observed>> {
    let created: Vec<&Key> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create(key, _) => Some(key),
            _ => None,
        })
        .collect();
    // One foreign object per name (the same virtual object may be picked twice).
    let mut keys = BTreeMap::new();
    for i in 0..FOREIGN_COLLISIONS.min(created.len()) {
        let host_key = host_key_of(config, created[rng.below(created.len())]);
        let mut labels = BTreeMap::from([("owner".to_string(), "someone-else".to_string())]);
        if i % 2 == 1 {
            labels.insert(MANAGED_BY_LABEL.into(), "another-instance".into());
        }
        keys.entry(host_key).or_insert(labels);
    }
    for i in 0..FOREIGN_OTHERS {
        let kind = if i % 2 == 0 { Kind::ConfigMap } else { Kind::Secret };
        let key = Key {
            kind,
            namespace: HOST_NAMESPACE.into(),
            name: format!("foreign-{i}"),
        };
        keys.insert(
            key,
            BTreeMap::from([("owner".to_string(), "someone-else".to_string())]),
        );
    }
    for (key, labels) in &keys {
        let content = Content {
            data: BTreeMap::from([("foreign".to_string(), "do not touch".to_string())]),
            labels: labels.clone(),
        };
        create(host, key, &content)
            .await
            .with_context(|| format!("creating foreign object {key}"))?;
    }
    Ok(list_all(host, None)
        .await?
        .into_iter()
        .filter(|(key, _)| keys.contains_key(key))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// The syncer child process

/// The syncer under test: `vcsync run` as a child process, its stderr appended to a log file.
struct SyncerProcess {
    config: PathBuf,
    log: Arc<Mutex<std::fs::File>>,
    child: Option<Child>,
    /// Whether the current run logged that its controllers started.
    started: crate::child::Started,
    runs: usize,
    crashes: Vec<String>,
}

impl SyncerProcess {
    fn start(&mut self) -> anyhow::Result<()> {
        self.runs += 1;
        let exe = std::env::current_exe().context("locating the vcsync binary")?;
        let (child, started) = crate::child::spawn_syncer(
            Command::new(exe),
            &self.config,
            self.log.clone(),
            format!("[run {}] ", self.runs),
        )?;
        if let Ok(mut file) = self.log.lock() {
            let _ = writeln!(file, "==== run {} (pid {})", self.runs, child.id());
        }
        self.started = started;
        self.child = Some(child);
        Ok(())
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILLs the child; returns whether its controllers had started.
    fn kill(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::child::has_started(&self.started)
    }

    /// Records (and forgets) a child that exited on its own: a crash of the syncer.
    fn reap_crash(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.crashes
                .push(format!("run {} exited on its own with {status}", self.runs));
            self.child = None;
        }
    }
}

impl Drop for SyncerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The soak

/// What the soak did and found.
struct Report {
    seed: u64,
    namespaces: usize,
    operations: usize,
    created: usize,
    updated: usize,
    deleted: usize,
    final_objects: usize,
    runs: usize,
    kills: usize,
    kills_running: usize,
    kills_starting: usize,
    crashes: Vec<String>,
    foreign: usize,
    churn: Duration,
    convergence: Option<Duration>,
    findings: Findings,
    dir: PathBuf,
}

impl Report {
    fn violations(&self) -> usize {
        self.findings.violations() + self.crashes.len() + usize::from(self.convergence.is_none())
    }

    fn to_json(&self) -> Value {
        let f = &self.findings;
        json!({
            "seed": self.seed,
            "namespaces": self.namespaces,
            "operations": self.operations,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "finalObjects": self.final_objects,
            "runs": self.runs,
            "kills": self.kills,
            "killsAfterStartup": self.kills_running,
            "killsDuringStartup": self.kills_starting,
            "crashes": self.crashes,
            "foreignObjects": self.foreign,
            "churnSeconds": self.churn.as_secs_f64(),
            "convergenceSeconds": self.convergence.map(|d| d.as_secs_f64()),
            "checked": f.checked,
            "synced": f.synced,
            "blockedByForeign": f.blocked,
            "losses": f.losses.len(),
            "wrongCopies": f.wrong.len(),
            "orphans": f.orphans.len(),
            "duplicates": f.duplicates.len(),
            "foreignTouched": f.foreign_touched.len(),
            "virtualDrift": f.virtual_drift.len(),
            "violations": self.violations(),
            "examples": {
                "losses": &f.losses[..f.losses.len().min(EXAMPLES)],
                "wrongCopies": &f.wrong[..f.wrong.len().min(EXAMPLES)],
                "orphans": &f.orphans[..f.orphans.len().min(EXAMPLES)],
                "duplicates": &f.duplicates[..f.duplicates.len().min(EXAMPLES)],
                "foreignTouched": &f.foreign_touched[..f.foreign_touched.len().min(EXAMPLES)],
                "virtualDrift": &f.virtual_drift[..f.virtual_drift.len().min(EXAMPLES)],
            },
            "dir": self.dir.display().to_string(),
        })
    }

    fn to_text(&self) -> String {
        let f = &self.findings;
        let convergence = match self.convergence {
            Some(d) => format!("{:.2} s", d.as_secs_f64()),
            None => "NOT CONVERGED".into(),
        };
        let mut rows = vec![
            ("seed", self.seed.to_string()),
            ("virtual namespaces", self.namespaces.to_string()),
            ("churn operations", self.operations.to_string()),
            ("  objects created", self.created.to_string()),
            ("  objects updated", self.updated.to_string()),
            ("  objects deleted", self.deleted.to_string()),
            ("virtual objects at the end", self.final_objects.to_string()),
            ("syncer runs", self.runs.to_string()),
            (
                "SIGKILLs",
                format!(
                    "{} ({} after start-up, {} during start-up)",
                    self.kills, self.kills_running, self.kills_starting
                ),
            ),
            ("syncer crashes", self.crashes.len().to_string()),
            ("churn time", format!("{:.2} s", self.churn.as_secs_f64())),
            ("convergence after the final restart", convergence),
            ("foreign host objects", self.foreign.to_string()),
            ("virtual objects checked", f.checked.to_string()),
            ("  with their one correct host copy", f.synced.to_string()),
            ("  blocked by a foreign object (expected)", f.blocked.to_string()),
            ("losses", f.losses.len().to_string()),
            ("wrong host copies", f.wrong.len().to_string()),
            ("orphans", f.orphans.len().to_string()),
            ("duplicates", f.duplicates.len().to_string()),
            ("foreign objects touched", f.foreign_touched.len().to_string()),
            (
                "virtual objects changed by the syncer",
                f.virtual_drift.len().to_string(),
            ),
        ];
        rows.push((
            "result",
            if self.violations() == 0 {
                "PASS".into()
            } else {
                format!(
                    "FAIL ({} violations; log in {})",
                    self.violations(),
                    self.dir.display()
                )
            },
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::from("vcsync soak report\n");
        for (k, v) in rows {
            out.push_str(&format!("  {k:<width$}  {v}\n"));
        }
        for (what, list) in [
            ("loss", &f.losses),
            ("wrong", &f.wrong),
            ("orphan", &f.orphans),
            ("duplicate", &f.duplicates),
            ("foreign touched", &f.foreign_touched),
            ("virtual drift", &f.virtual_drift),
            ("crash", &self.crashes),
        ] {
            for example in list.iter().take(EXAMPLES) {
                out.push_str(&format!("  {what}: {example}\n"));
            }
        }
        out
    }
}

/// Runs the soak; fails when any invariant does not hold.
pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let namespaces = args.namespaces.max(1);
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vcsync-soak-{}-{seed}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "vcsync soak: seed {seed}, {} objects, {} kills; files in {}",
        args.objects,
        args.kills,
        dir.display()
    );

    let (host_server, virt_server) = crate::dev::start_servers("virtual").await?;
    let result = soak(&args, seed, namespaces, &dir, &host_server, &virt_server).await;
    virt_server.shutdown().await;
    host_server.shutdown().await;
    let report = result?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    let violations = report.violations();
    if violations > 0 {
        bail!(
            "soak failed: {violations} violations (seed {seed}; syncer log in {})",
            dir.join("syncer.log").display()
        );
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn soak(
    args: &SoakArgs,
    seed: u64,
    namespaces: usize,
    dir: &Path,
    host_server: &ApiServer,
    virt_server: &ApiServer,
) -> anyhow::Result<Report> {
    let host_kubeconfig = dir.join("host.kubeconfig");
    let virtual_kubeconfig = dir.join("virtual.kubeconfig");
    crate::dev::write(&host_kubeconfig, &host_server.kubeconfig())?;
    crate::dev::write(&virtual_kubeconfig, &virt_server.kubeconfig())?;
    let host = crate::dev::client(&host_server.url())?;
    let virt = crate::dev::client(&virt_server.url())?;

    let config = Config::new(INSTANCE, HOST_NAMESPACE);
    let config_path = dir.join("vcsync.yaml");
    crate::dev::write(
        &config_path,
        &format!(
            "instance: {INSTANCE}\nhostNamespace: {HOST_NAMESPACE}\nhost:\n  kubeconfig: {}\n\
             virtual:\n  kubeconfig: {}\nsync:\n  configMaps:\n    all: true\n  secrets:\n    all: true\n",
            host_kubeconfig.display(),
            virtual_kubeconfig.display()
        ),
    )?;

    crate::dev::create_namespace(&host, HOST_NAMESPACE).await?;
    let virtual_namespaces: BTreeSet<String> = (0..namespaces).map(virtual_namespace).collect();
    for ns in &virtual_namespaces {
        crate::dev::create_namespace(&virt, ns).await?;
    }

    let ops = plan(seed, args.objects, namespaces);
    let expected = final_state(&ops);
    // A second stream for everything but the plan, so the plan of a seed does not depend on
    // the other flags.
    let mut rng = Rng(seed ^ 0x5eed_cafe_f00d_d00d);
    let foreign = create_foreign(&host, &config, &ops, &mut rng).await?;

    // Kill points: distinct operation indices; after a kill the syncer stays down for a few
    // operations, so that some changes happen while nobody watches.
    let mut kill_points: Vec<usize> = Vec::new();
    if !ops.is_empty() {
        let mut set = BTreeSet::new();
        while set.len() < args.kills.min(ops.len()) {
            set.insert(rng.below(ops.len()));
        }
        kill_points = set.into_iter().collect();
    }
    let log = std::fs::File::create(dir.join("syncer.log")).context("creating the syncer log")?;
    let mut syncer = SyncerProcess {
        config: config_path,
        log: Arc::new(Mutex::new(log)),
        child: None,
        started: Default::default(),
        runs: 0,
        crashes: Vec::new(),
    };
    let (mut kills, mut kills_running, mut kills_starting) = (0, 0, 0);
    // After a kill the syncer stays down for a few operations (`restart_at`), or (30%) until the
    // next kill point, which then starts it and kills it during its start-up.
    let mut restart_at: Option<usize> = None;
    let mut startup_kill_next = false;
    syncer.start()?;
    let churn_start = Instant::now();
    let mut next_kill = kill_points.iter().peekable();
    for (i, op) in ops.iter().enumerate() {
        syncer.reap_crash();
        let kill_here = next_kill.peek() == Some(&&i);
        if !syncer.running() && (kill_here || restart_at.is_none_or(|at| i >= at) && !startup_kill_next) {
            syncer.start()?;
            restart_at = None;
        }
        if kill_here {
            next_kill.next();
            if startup_kill_next {
                // Within its first moments: listing, filling caches, starting controllers.
                tokio::time::sleep(Duration::from_millis(rng.below(40) as u64)).await;
            } else if rng.chance(50) {
                // Otherwise half the kills land mid-churn, half after a pause (catching up or idle).
                tokio::time::sleep(Duration::from_millis(rng.below(1500) as u64)).await;
            }
            syncer.reap_crash();
            if syncer.running() {
                if syncer.kill() {
                    kills_running += 1;
                } else {
                    kills_starting += 1;
                }
                kills += 1;
                eprintln!(
                    "vcsync soak: SIGKILL {kills}/{} at operation {i}/{}",
                    args.kills,
                    ops.len()
                );
            }
            startup_kill_next = rng.chance(30);
            restart_at = (!startup_kill_next).then(|| i + rng.below(30));
        }
        apply_with_retries(&virt, op).await?;
        if args.pace_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.pace_ms)).await;
        }
    }
    let churn = churn_start.elapsed();

    // The final run: a last SIGKILL (if one is running) and a fresh start.
    syncer.reap_crash();
    if syncer.running() {
        if syncer.kill() {
            kills_running += 1;
        } else {
            kills_starting += 1;
        }
        kills += 1;
    }
    syncer.start()?;
    let final_start = Instant::now();
    let timeout = Duration::from_secs(args.timeout);
    let mut convergence = None;
    let mut findings;
    loop {
        let state = snapshot(&host, &virt, &virtual_namespaces).await?;
        findings = check(&config, &expected, &foreign, &state);
        if findings.violations() == 0 {
            convergence = Some(final_start.elapsed());
            break;
        }
        syncer.reap_crash();
        if final_start.elapsed() > timeout || !syncer.running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if convergence.is_some() {
        // Converged for good: the same verdict a little later.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let state = snapshot(&host, &virt, &virtual_namespaces).await?;
        findings = check(&config, &expected, &foreign, &state);
        if findings.violations() > 0 {
            convergence = None;
        }
    }
    syncer.reap_crash();
    syncer.kill();

    let count = |f: fn(&Op) -> bool| ops.iter().filter(|op| f(op)).count();
    Ok(Report {
        seed,
        namespaces,
        operations: ops.len(),
        created: count(|op| matches!(op, Op::Create(..))),
        updated: count(|op| matches!(op, Op::Update(..))),
        deleted: count(|op| matches!(op, Op::Delete(..))),
        final_objects: expected.len(),
        runs: syncer.runs,
        kills,
        kills_running,
        kills_starting,
        crashes: std::mem::take(&mut syncer.crashes),
        foreign: foreign.len(),
        churn,
        convergence,
        findings,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_plan_that_creates_the_requested_objects() {
        let a = plan(42, 300, 3);
        assert_eq!(a, plan(42, 300, 3));
        assert_ne!(a, plan(43, 300, 3));
        let creates = a.iter().filter(|op| matches!(op, Op::Create(..))).count();
        assert_eq!(creates, 300);
        assert!(a.iter().any(|op| matches!(op, Op::Update(..))));
        assert!(a.iter().any(|op| matches!(op, Op::Delete(..))));
        // Every update and delete is of a live object.
        let mut live = BTreeSet::new();
        for op in &a {
            match op {
                Op::Create(key, _) => assert!(live.insert(key.clone()), "{key} created twice"),
                Op::Update(key, ..) => assert!(live.contains(key)),
                Op::Delete(key) => assert!(live.remove(key)),
            }
        }
    }

    /// A consistent world: `expected`'s objects in the virtual cluster, their host copies, one
    /// foreign object at a colliding name and one elsewhere.
    fn world() -> (Config, BTreeMap<Key, Content>, BTreeMap<Key, Observed>, Snapshot) {
        let config = Config::new(INSTANCE, HOST_NAMESPACE);
        let ops = plan(7, 40, 2);
        let expected = final_state(&ops);
        let mut snapshot = Snapshot::default();
        for (i, (key, content)) in expected.iter().enumerate() {
            let uid = format!("uid-{i}");
            snapshot.virt.insert(
                key.clone(),
                Observed {
                    uid: uid.clone(),
                    resource_version: i.to_string(),
                    labels: content.labels.clone(),
                    annotations: BTreeMap::new(),
                    data: content.data.clone(),
                },
            );
            let mut labels = without_reserved(&content.labels);
            labels.insert(MANAGED_BY_LABEL.into(), INSTANCE.into());
            snapshot.host.insert(
                host_key_of(&config, key),
                Observed {
                    uid: format!("host-{uid}"),
                    resource_version: i.to_string(),
                    labels,
                    annotations: BTreeMap::from([
                        (OBJECT_NAME_ANNOTATION.into(), key.name.clone()),
                        (OBJECT_NAMESPACE_ANNOTATION.into(), key.namespace.clone()),
                        (OBJECT_UID_ANNOTATION.into(), uid),
                    ]),
                    data: content.data.clone(),
                },
            );
        }
        // A foreign object holds the host name of the first virtual object.
        let blocked = host_key_of(&config, expected.keys().next().unwrap());
        let foreign_object = Observed {
            uid: "foreign".into(),
            resource_version: "1".into(),
            data: BTreeMap::from([("foreign".into(), "yes".into())]),
            ..Default::default()
        };
        snapshot.host.insert(blocked.clone(), foreign_object.clone());
        let elsewhere = Key {
            kind: Kind::Secret,
            namespace: HOST_NAMESPACE.into(),
            name: "foreign-0".into(),
        };
        snapshot.host.insert(elsewhere.clone(), foreign_object.clone());
        let foreign = BTreeMap::from([(blocked, foreign_object.clone()), (elsewhere, foreign_object)]);
        (config, expected, foreign, snapshot)
    }

    #[test]
    fn a_consistent_world_passes() {
        let (config, expected, foreign, snapshot) = world();
        let findings = check(&config, &expected, &foreign, &snapshot);
        assert_eq!(findings.violations(), 0, "{findings:#?}");
        assert_eq!(findings.blocked, 1);
        assert_eq!(findings.synced, expected.len() - 1);
    }

    fn second_synced(config: &Config, expected: &BTreeMap<Key, Content>) -> (Key, Key) {
        let key = expected.keys().nth(1).unwrap().clone();
        let host_key = host_key_of(config, &key);
        (key, host_key)
    }

    #[test]
    fn a_missing_host_copy_is_a_loss() {
        let (config, expected, foreign, mut snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        snapshot.host.remove(&host_key);
        let findings = check(&config, &expected, &foreign, &snapshot);
        assert_eq!(findings.losses.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn stale_data_labels_or_uid_are_wrong_copies() {
        let (config, expected, foreign, snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        for broken in [
            |o: &mut Observed| {
                o.data.insert("k0".into(), "stale".into());
            },
            |o: &mut Observed| {
                o.labels.insert("app".into(), "stale".into());
            },
            |o: &mut Observed| {
                o.annotations
                    .insert(OBJECT_UID_ANNOTATION.into(), "an-older-object".into());
            },
        ] {
            let mut snapshot = snapshot.clone();
            broken(snapshot.host.get_mut(&host_key).unwrap());
            let findings = check(&config, &expected, &foreign, &snapshot);
            assert_eq!(findings.wrong.len(), 1, "{findings:#?}");
            assert_eq!(findings.violations(), 1);
        }
    }

    #[test]
    fn a_copy_left_after_the_virtual_delete_is_an_orphan() {
        let (config, mut expected, foreign, mut snapshot) = world();
        let (key, _) = second_synced(&config, &expected);
        expected.remove(&key);
        snapshot.virt.remove(&key);
        let findings = check(&config, &expected, &foreign, &snapshot);
        assert_eq!(findings.orphans.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn a_second_copy_under_another_name_is_a_duplicate() {
        let (config, expected, foreign, mut snapshot) = world();
        let (_, host_key) = second_synced(&config, &expected);
        let copy = snapshot.host[&host_key].clone();
        let other = Key {
            name: format!("{}-2", host_key.name),
            ..host_key
        };
        snapshot.host.insert(other, copy);
        let findings = check(&config, &expected, &foreign, &snapshot);
        assert_eq!(findings.duplicates.len(), 1, "{findings:#?}");
        assert_eq!(findings.violations(), 1);
    }

    #[test]
    fn an_overwritten_or_deleted_foreign_object_is_touched() {
        let (config, expected, foreign, snapshot) = world();
        let blocked = foreign.keys().next().unwrap().clone();
        let mut overwritten = snapshot.clone();
        let object = overwritten.host.get_mut(&blocked).unwrap();
        object.resource_version = "2".into();
        object.labels.insert(MANAGED_BY_LABEL.into(), INSTANCE.into());
        let findings = check(&config, &expected, &foreign, &overwritten);
        assert_eq!(findings.foreign_touched.len(), 1, "{findings:#?}");

        let mut deleted = snapshot;
        deleted.host.remove(&blocked);
        let findings = check(&config, &expected, &foreign, &deleted);
        assert_eq!(findings.foreign_touched.len(), 1, "{findings:#?}");
    }

    #[test]
    fn a_virtual_object_changed_behind_the_churn_is_drift() {
        let (config, expected, foreign, mut snapshot) = world();
        let (key, _) = second_synced(&config, &expected);
        snapshot
            .virt
            .get_mut(&key)
            .unwrap()
            .labels
            .insert("synced-up".into(), "oops".into());
        let findings = check(&config, &expected, &foreign, &snapshot);
        assert_eq!(findings.virtual_drift.len(), 1, "{findings:#?}");
    }

    #[test]
    fn the_merge_patch_removes_and_sets_keys() {
        let before = Content {
            data: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
            labels: BTreeMap::from([("app".into(), "x".into())]),
        };
        let after = Content {
            data: BTreeMap::from([("b".into(), "3".into())]),
            labels: BTreeMap::from([("tier".into(), "t".into())]),
        };
        let patch = merge_patch(&before, &after, |v| Value::String(v.into()));
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {"app": null, "tier": "t"}}, "data": {"a": null, "b": "3"}})
        );
    }
}
