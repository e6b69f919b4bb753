//! `vcsync soak`: SIGKILLs during a churn of ConfigMaps, Secrets and pods lose nothing, leave
//! no token Secret behind and recreate no host pod, a restart over the converged state writes
//! nothing to the host, and a virtual cluster that comes back empty mid-churn costs no host copy
//! made for it until the prune run (short runs; RELIABILITY.md has the full ones).
//!
//! On the embedded servers the soak starts its own; against real control planes
//! (`VCSYNC_KUBE_ASSETS`) the short soak runs on this run's leased pair (or the pair given by
//! `VCSYNC_E2E_*_KUBECONFIG`), and the empty-restart soak starts real planes of its own, whose
//! virtual cluster it can replace.

use std::process::Command;

use serde_json::Value;

use crate::env::Env;

/// The churn of every test: small, with pods.
const CHURN: [&str; 8] = [
    "--objects",
    "150",
    "--pods",
    "60",
    "--kills",
    "3",
    "--quiet-seconds",
    "5",
];

/// Runs `vcsync soak --json` with `flags` and the seed (VCSYNC_SOAK_SEED replays another; the
/// default is fixed so that a failure reproduces); asserts it passed and returns the report.
fn soak(flags: &[&str]) -> Value {
    let seed = std::env::var("VCSYNC_SOAK_SEED").unwrap_or_else(|_| "20261123".into());
    let output = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .arg("soak")
        .args(CHURN)
        .args(flags)
        .args(["--json", "--seed", &seed])
        .output()
        .expect("running vcsync soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vcsync soak failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(&stdout).expect("a JSON report")
}

fn number(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {report:#}"))
}

/// What every passing report shows: the churn happened, nothing was violated.
fn assert_clean(report: &Value) {
    let count = |field: &str| number(report, field);
    assert_eq!(count("podsCreated"), 60, "{report:#}");
    // The ConfigMaps and Secrets of their own, the pods, and the pods' own references.
    assert!(count("created") > 150 + 60, "{report:#}");
    assert!(count("updated") > 0 && count("deleted") > 0, "{report:#}");
    assert!(count("kills") >= 3, "{report:#}");
    assert!(count("runs") >= 5, "{report:#}");
    assert!(count("foreignObjects") > 0, "{report:#}");
    for field in [
        "losses",
        "wrongCopies",
        "orphans",
        "duplicates",
        "foreignTouched",
        "virtualDrift",
        "earlierTouched",
        "leftoverTokenSecrets",
        "recreatedHostPods",
        "lateTokenSecrets",
        "violations",
    ] {
        assert_eq!(count(field), 0, "{field} in {report:#}");
    }
    assert_eq!(report["crashes"].as_array().map(Vec::len), Some(0), "{report:#}");
    // Every virtual object checked (the churn's, and the root CA each namespace is given) is
    // synced or blocked by an object that is not this cluster's to touch.
    assert_eq!(
        count("synced") + count("blockedByForeign") + count("blockedByEarlier"),
        count("checked"),
        "{report:#}"
    );
    assert!(count("checked") >= count("finalObjects"), "{report:#}");
    assert!(report["convergenceSeconds"].is_number(), "{report:#}");
    // Restarted over the converged state, the syncer wrote nothing to the host.
    let quiet = &report["quietRestart"];
    assert_eq!(quiet["started"], Value::Bool(true), "{report:#}");
    assert_eq!(number(quiet, "hostWrites"), 0, "{report:#}");
    assert_eq!(number(quiet, "violations"), 0, "{report:#}");
}

#[tokio::test]
async fn a_short_soak_with_kills_loses_nothing() {
    let env = Env::new().await;
    let report = match env.embedded() {
        Some(_) => soak(&[]),
        None => {
            let (host, virt) = (env.host_kubeconfig(), env.virtual_kubeconfig());
            let given = ["--host-kubeconfig", host.to_str().unwrap()];
            soak(&[&given[..], &["--virtual-kubeconfig", virt.to_str().unwrap()]].concat())
        }
    };
    let expected = if env.embedded().is_some() {
        "embedded"
    } else {
        "given"
    };
    assert_eq!(report["clusters"], Value::String(expected.into()), "{report:#}");
    assert_clean(&report);
    assert_eq!(number(&report, "emptyVirtualRestarts"), 0, "{report:#}");
    assert_eq!(number(&report, "blockedByEarlier"), 0, "{report:#}");
    assert!(report["prune"].is_null(), "{report:#}");
}

#[test]
fn a_virtual_cluster_restarted_empty_mid_soak_keeps_its_host_copies_until_pruned() {
    let assets = std::env::var("VCSYNC_KUBE_ASSETS").ok();
    let real = assets.as_deref().map(|assets| ["--kube-assets", assets]);
    let report = soak(
        &[
            &["--empty-virtual-restarts", "2"][..],
            real.as_ref().map_or(&[], |r| &r[..]),
        ]
        .concat(),
    );
    let expected = if real.is_some() {
        "kube-apiserver"
    } else {
        "embedded"
    };
    assert_eq!(report["clusters"], Value::String(expected.into()), "{report:#}");
    assert_clean(&report);
    let count = |field: &str| number(&report, field);
    assert_eq!(count("emptyVirtualRestarts"), 2, "{report:#}");
    // The earlier clusters left copies, all kept as they were and none counted as an orphan.
    let earlier = count("earlierCopies");
    assert!(earlier > 0, "{report:#}");
    assert_eq!(count("earlierKept"), earlier, "{report:#}");

    // The prune run deleted exactly those: the current cluster's copies and the foreign
    // objects stayed, and namesakes of earlier copies got their own.
    let prune = &report["prune"];
    let pruned = |field: &str| number(prune, field);
    assert_eq!(pruned("earlierCopiesDeleted"), earlier, "{report:#}");
    assert_eq!(pruned("earlierCopiesLeft"), 0, "{report:#}");
    assert_eq!(pruned("currentCopiesTouched"), 0, "{report:#}");
    // Every synced object's copy, and the token Secrets of the synced pods.
    assert!(pruned("currentCopiesKept") >= count("synced"), "{report:#}");
    assert_eq!(pruned("violations"), 0, "{report:#}");
    assert_eq!(
        pruned("synced") + pruned("blockedByForeign"),
        pruned("checked"),
        "{report:#}"
    );
    assert!(pruned("checked") >= count("finalObjects"), "{report:#}");
    assert!(prune["convergenceSeconds"].is_number(), "{report:#}");
}
