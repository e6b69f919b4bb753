//! `vcsync soak`: SIGKILLs during a churn lose nothing (a short run; RELIABILITY.md has the full
//! one).

use std::process::Command;

#[test]
fn a_short_soak_with_kills_loses_nothing() {
    // VCSYNC_SOAK_SEED replays another seed; the default is fixed so that a failure reproduces.
    let seed = std::env::var("VCSYNC_SOAK_SEED").unwrap_or_else(|_| "20261123".into());
    let output = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args([
            "soak",
            "--objects",
            "150",
            "--kills",
            "3",
            "--json",
            "--seed",
            &seed,
        ])
        .output()
        .expect("running vcsync soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vcsync soak failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let count = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} missing in {report:#}"))
    };
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
        "violations",
    ] {
        assert_eq!(count(field), 0, "{field} in {report:#}");
    }
    assert_eq!(report["crashes"].as_array().map(Vec::len), Some(0), "{report:#}");
    assert_eq!(
        count("synced") + count("blockedByForeign"),
        count("finalObjects"),
        "{report:#}"
    );
    assert!(report["convergenceSeconds"].is_number(), "{report:#}");
}
