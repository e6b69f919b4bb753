//! What the soak did and found, as a table or JSON.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::serde_json::{Value, json};

use super::{args::EXAMPLES, check::Findings, earlier::Pruned};

/// What the soak did and found.
pub(super) struct Report {
    pub(super) seed: u64,
    /// What served the clusters: embedded, kube-apiserver or given.
    pub(super) clusters: &'static str,
    pub(super) namespaces: usize,
    pub(super) operations: usize,
    pub(super) created: usize,
    pub(super) updated: usize,
    pub(super) deleted: usize,
    pub(super) pods_created: usize,
    pub(super) final_objects: usize,
    pub(super) runs: usize,
    pub(super) kills: usize,
    pub(super) kills_running: usize,
    pub(super) kills_starting: usize,
    pub(super) crashes: Vec<String>,
    pub(super) foreign: usize,
    pub(super) churn: Duration,
    pub(super) convergence: Option<Duration>,
    pub(super) findings: Findings,
    /// Host pods replaced while their virtual pod lived, as the host watch saw them.
    pub(super) recreations: Vec<String>,
    /// Token Secrets that outlived their pod while the syncer ran.
    pub(super) late_tokens: Vec<String>,
    /// The longest of those lags.
    pub(super) longest_token_lag: Duration,
    /// The restart over the converged state (None: it did not converge).
    pub(super) quiet: Option<QuietReport>,
    /// Times the virtual cluster came back empty.
    pub(super) empty_restarts: usize,
    /// Host copies made for the clusters those restarts replaced.
    pub(super) earlier_copies: usize,
    /// The prune run, after empty restarts (None without, or when the final run did not
    /// converge).
    pub(super) prune: Option<PruneReport>,
    pub(super) dir: PathBuf,
}

/// The syncer restarted over the converged state: what it wrote to the host meanwhile.
pub(super) struct QuietReport {
    /// Whether its controllers started.
    pub(super) started: bool,
    pub(super) seconds: u64,
    /// Its host writes (`verb resource: n`); None: its count could not be read.
    pub(super) host_writes: Option<Vec<String>>,
    /// The full check at the end of it.
    pub(super) findings: Findings,
}

impl QuietReport {
    /// From the syncer's own request counts by (cluster, verb, resource).
    pub(super) fn new(
        started: bool,
        seconds: u64,
        requests: Option<BTreeMap<(String, String, String), u64>>,
        findings: Findings,
    ) -> Self {
        let host_writes = requests.map(|requests| {
            requests
                .into_iter()
                .filter(|((cluster, verb, _), n)| {
                    cluster == "host" && *n > 0 && !matches!(verb.as_str(), "get" | "list" | "watch")
                })
                .map(|((_, verb, resource), n)| format!("{verb} {resource}: {n}"))
                .collect()
        });
        Self {
            started,
            seconds,
            host_writes,
            findings,
        }
    }

    fn writes(&self) -> Vec<String> {
        match &self.host_writes {
            Some(writes) => writes.clone(),
            None => vec!["the syncer's request count could not be read".into()],
        }
    }

    fn violations(&self) -> usize {
        usize::from(!self.started) + self.writes().len() + self.findings.violations()
    }
}

/// The last run, with `safety.earlierCopies.prune`.
pub(super) struct PruneReport {
    /// The full check after it (no earlier copy may be left).
    pub(super) findings: Findings,
    pub(super) pruned: Pruned,
    pub(super) convergence: Option<Duration>,
    /// The prune run's host deletes by its own count (None: not read).
    pub(super) host_deletes: Option<u64>,
    pub(super) earlier_copies: usize,
}

/// Host deletes per earlier copy the prune run may make, on average. One each, and now and then
/// a second for a pod whose first delete the cache did not show yet; what this catches is a
/// pod deleted again and again through its grace period.
const DELETES_PER_EARLIER_COPY: f64 = 1.25;

impl PruneReport {
    /// Whether the prune run deleted too often (or its count is unknown).
    fn deleted_too_often(&self) -> bool {
        self.host_deletes
            .is_none_or(|n| n as f64 > DELETES_PER_EARLIER_COPY * self.earlier_copies as f64)
    }

    fn violations(&self) -> usize {
        self.findings.violations()
            + self.pruned.violations()
            + usize::from(self.convergence.is_none())
            + usize::from(self.deleted_too_often())
    }
}

fn examples(list: &[String]) -> &[String] {
    &list[..list.len().min(EXAMPLES)]
}

fn seconds(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{:.2} s", d.as_secs_f64()),
        None => "NOT CONVERGED".into(),
    }
}

fn findings_examples(f: &Findings) -> Value {
    json!({
        "losses": examples(&f.losses),
        "wrongCopies": examples(&f.wrong),
        "orphans": examples(&f.orphans),
        "duplicates": examples(&f.duplicates),
        "foreignTouched": examples(&f.foreign_touched),
        "virtualDrift": examples(&f.virtual_drift),
        "earlierTouched": examples(&f.earlier_touched),
        "leftoverTokenSecrets": examples(&f.leftover_tokens),
    })
}

/// The findings' violations by kind, as (table row, example label, list).
fn violation_rows(f: &Findings) -> [(&'static str, &'static str, &Vec<String>); 8] {
    [
        ("losses", "loss", &f.losses),
        ("wrong host copies", "wrong", &f.wrong),
        ("orphans", "orphan", &f.orphans),
        ("duplicates", "duplicate", &f.duplicates),
        ("foreign objects touched", "foreign touched", &f.foreign_touched),
        (
            "virtual objects changed by the syncer",
            "virtual drift",
            &f.virtual_drift,
        ),
        (
            "earlier clusters' copies touched",
            "earlier touched",
            &f.earlier_touched,
        ),
        (
            "token Secrets left without their pod",
            "leftover token Secret",
            &f.leftover_tokens,
        ),
    ]
}

impl Report {
    pub(super) fn violations(&self) -> usize {
        self.findings.violations()
            + self.crashes.len()
            + self.recreations.len()
            + self.late_tokens.len()
            + usize::from(self.convergence.is_none())
            + self.quiet.as_ref().map_or(0, QuietReport::violations)
            + self.prune.as_ref().map_or(0, PruneReport::violations)
    }

    pub(super) fn to_json(&self) -> Value {
        let f = &self.findings;
        let prune = self.prune.as_ref().map(|p| {
            json!({
                "earlierCopiesDeleted": p.pruned.deleted,
                "hostDeletes": p.host_deletes,
                "earlierCopiesLeft": p.pruned.left.len(),
                "currentCopiesKept": p.pruned.current_kept,
                "currentCopiesTouched": p.pruned.current_touched.len(),
                "convergenceSeconds": p.convergence.map(|d| d.as_secs_f64()),
                "checked": p.findings.checked,
                "synced": p.findings.synced,
                "blockedByForeign": p.findings.blocked,
                "violations": p.violations(),
                "examples": {
                    "earlierCopiesLeft": examples(&p.pruned.left),
                    "currentCopiesTouched": examples(&p.pruned.current_touched),
                    "check": findings_examples(&p.findings),
                },
            })
        });
        let quiet = self.quiet.as_ref().map(|q| {
            json!({
                "started": q.started,
                "seconds": q.seconds,
                "hostWrites": q.writes().len(),
                "violations": q.violations(),
                "examples": {
                    "hostWrites": examples(&q.writes()),
                    "check": findings_examples(&q.findings),
                },
            })
        });
        let mut report = json!({
            "seed": self.seed,
            "clusters": self.clusters,
            "namespaces": self.namespaces,
            "operations": self.operations,
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "podsCreated": self.pods_created,
            "finalObjects": self.final_objects,
            "runs": self.runs,
            "kills": self.kills,
            "killsAfterStartup": self.kills_running,
            "killsDuringStartup": self.kills_starting,
            "crashes": self.crashes,
            "foreignObjects": self.foreign,
            "emptyVirtualRestarts": self.empty_restarts,
            "earlierCopies": self.earlier_copies,
            "churnSeconds": self.churn.as_secs_f64(),
            "convergenceSeconds": self.convergence.map(|d| d.as_secs_f64()),
            "recreatedHostPods": self.recreations.len(),
            "lateTokenSecrets": self.late_tokens.len(),
            "longestTokenLagSeconds": self.longest_token_lag.as_secs_f64(),
            "quietRestart": quiet,
            "prune": prune,
            "violations": self.violations(),
            "recreationExamples": examples(&self.recreations),
            "lateTokenExamples": examples(&self.late_tokens),
            "dir": self.dir.display().to_string(),
        });
        let findings = json!({
            "checked": f.checked,
            "synced": f.synced,
            "blockedByForeign": f.blocked,
            "blockedByEarlier": f.blocked_by_earlier,
            "earlierKept": f.earlier_kept,
            "losses": f.losses.len(),
            "wrongCopies": f.wrong.len(),
            "orphans": f.orphans.len(),
            "duplicates": f.duplicates.len(),
            "foreignTouched": f.foreign_touched.len(),
            "virtualDrift": f.virtual_drift.len(),
            "earlierTouched": f.earlier_touched.len(),
            "leftoverTokenSecrets": f.leftover_tokens.len(),
            "examples": findings_examples(f),
        });
        if let (Some(report), Value::Object(findings)) = (report.as_object_mut(), findings) {
            report.extend(findings);
        }
        report
    }

    pub(super) fn to_text(&self) -> String {
        let f = &self.findings;
        let mut rows = vec![
            ("seed", self.seed.to_string()),
            ("clusters", self.clusters.to_string()),
            ("virtual namespaces", self.namespaces.to_string()),
            ("churn operations", self.operations.to_string()),
            ("  objects created", self.created.to_string()),
            ("  objects updated", self.updated.to_string()),
            ("  objects deleted", self.deleted.to_string()),
            ("  of the creates, pods", self.pods_created.to_string()),
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
            ("empty virtual restarts", self.empty_restarts.to_string()),
            (
                "  host copies of earlier clusters",
                self.earlier_copies.to_string(),
            ),
            ("churn time", format!("{:.2} s", self.churn.as_secs_f64())),
            ("convergence after the final restart", seconds(self.convergence)),
            ("foreign host objects", self.foreign.to_string()),
            ("virtual objects checked", f.checked.to_string()),
            ("  with their one correct host copy", f.synced.to_string()),
            ("  blocked by a foreign object (expected)", f.blocked.to_string()),
            (
                "  blocked by an earlier copy (expected)",
                f.blocked_by_earlier.to_string(),
            ),
            (
                "earlier clusters' copies kept untouched",
                f.earlier_kept.to_string(),
            ),
        ];
        for (row, _, list) in violation_rows(f) {
            rows.push((row, list.len().to_string()));
        }
        rows.push((
            "host pods recreated while their virtual pod lived",
            self.recreations.len().to_string(),
        ));
        rows.push((
            "token Secrets outliving their pod (syncer up)",
            format!(
                "{} (longest {:.1} s)",
                self.late_tokens.len(),
                self.longest_token_lag.as_secs_f64()
            ),
        ));
        if let Some(q) = &self.quiet {
            rows.extend([
                ("restart over the converged state: started", q.started.to_string()),
                (
                    "  host writes in the next seconds",
                    format!("{} in {} s", q.writes().len(), q.seconds),
                ),
                (
                    "  violations of the full check after",
                    q.findings.violations().to_string(),
                ),
            ]);
        }
        if let Some(p) = &self.prune {
            rows.extend([
                ("prune run: convergence", seconds(p.convergence)),
                ("  earlier copies deleted", p.pruned.deleted.to_string()),
                (
                    "  host deletes (at most 1.25 per earlier copy)",
                    p.host_deletes.map_or("unknown".into(), |n| n.to_string()),
                ),
                ("  earlier copies left", p.pruned.left.len().to_string()),
                (
                    "  current copies kept untouched",
                    p.pruned.current_kept.to_string(),
                ),
                (
                    "  current copies touched",
                    p.pruned.current_touched.len().to_string(),
                ),
                ("  virtual objects with their copy", p.findings.synced.to_string()),
                (
                    "  violations of the full check",
                    p.findings.violations().to_string(),
                ),
            ]);
        }
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
        let mut lists: Vec<(String, &Vec<String>)> = violation_rows(f)
            .into_iter()
            .map(|(_, what, list)| (what.to_string(), list))
            .collect();
        lists.push(("crash".into(), &self.crashes));
        lists.push(("recreated".into(), &self.recreations));
        lists.push(("late token Secret".into(), &self.late_tokens));
        let quiet_writes = self.quiet.as_ref().map(QuietReport::writes).unwrap_or_default();
        lists.push(("host write after the restart".into(), &quiet_writes));
        if let Some(p) = &self.prune {
            lists.push(("prune: earlier copy left".into(), &p.pruned.left));
            lists.push(("prune: current copy touched".into(), &p.pruned.current_touched));
            for (_, what, list) in violation_rows(&p.findings) {
                lists.push((format!("prune: {what}"), list));
            }
        }
        for (what, list) in lists {
            for example in examples(list) {
                out.push_str(&format!("  {what}: {example}\n"));
            }
        }
        out
    }
}
