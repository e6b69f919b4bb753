//! What the soak did and found, as a table or JSON.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::serde_json::{Value, json};

use super::{EXAMPLES, check::Findings};

/// What the soak did and found.
pub(super) struct Report {
    pub(super) seed: u64,
    pub(super) namespaces: usize,
    pub(super) operations: usize,
    pub(super) created: usize,
    pub(super) updated: usize,
    pub(super) deleted: usize,
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
    pub(super) dir: PathBuf,
}

impl Report {
    pub(super) fn violations(&self) -> usize {
        self.findings.violations() + self.crashes.len() + usize::from(self.convergence.is_none())
    }

    pub(super) fn to_json(&self) -> Value {
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

    pub(super) fn to_text(&self) -> String {
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
