//! `vcsync soak`: SIGKILLs during a churn lose nothing, and a virtual cluster that comes back
//! empty mid-churn costs no host copy made for it until the prune run (short runs;
//! RELIABILITY.md has the full ones).

use std::process::Command;

use serde_json::Value;

/// Runs `vcsync soak --json` with `flags` and the seed (VCSYNC_SOAK_SEED replays another; the
/// default is fixed so that a failure reproduces); asserts it passed and returns the report.
fn soak(flags: &[&str]) -> Value {
    let seed = std::env::var("VCSYNC_SOAK_SEED").unwrap_or_else(|_| "20261123".into());
    let output = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .arg("soak")
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
    assert_eq!(count("created"), 150, "{report:#}");
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
}

#[test]
fn a_short_soak_with_kills_loses_nothing() {
    let report = soak(&["--objects", "150", "--kills", "3"]);
    assert_clean(&report);
    assert_eq!(number(&report, "emptyVirtualRestarts"), 0, "{report:#}");
    assert_eq!(number(&report, "blockedByEarlier"), 0, "{report:#}");
    assert!(report["prune"].is_null(), "{report:#}");
}

#[test]
fn a_virtual_cluster_restarted_empty_mid_soak_keeps_its_host_copies_until_pruned() {
    let report = soak(&[
        "--objects",
        "150",
        "--kills",
        "3",
        "--empty-virtual-restarts",
        "2",
    ]);
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
    assert_eq!(pruned("currentCopiesKept"), count("synced"), "{report:#}");
    assert_eq!(pruned("violations"), 0, "{report:#}");
    assert_eq!(
        pruned("synced") + pruned("blockedByForeign"),
        pruned("checked"),
        "{report:#}"
    );
    assert!(pruned("checked") >= count("finalObjects"), "{report:#}");
    assert!(prune["convergenceSeconds"].is_number(), "{report:#}");
}
