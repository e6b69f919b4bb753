//! The command line's handling of bad input.

use std::process::Command;

fn run_with_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vcsync.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr)
        .unwrap()
        .replace(&path.display().to_string(), "vcsync.yaml");
    (out.status.code().unwrap(), stderr)
}

#[test]
fn unknown_config_key_is_one_line_with_location_and_exit_2() {
    let (code, stderr) = run_with_config("instance: a\nhostNamespace: b\nsyncc:\n  all: true\n");
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("vcsync: vcsync.yaml:3:1: unknown field `syncc`"),
        "{stderr}"
    );
}

#[test]
fn wrong_type_is_one_line_with_location_and_exit_2() {
    let (code, stderr) =
        run_with_config("instance: a\nhostNamespace: b\nsync:\n  configMaps:\n    all: maybe\n");
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("vcsync.yaml:5:10:"), "{stderr}");
}

#[test]
fn missing_config_file_is_a_clear_error_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["run", "--config", "/nonexistent/vcsync.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/vcsync.yaml: cannot read"),
        "{stderr}"
    );
}

#[test]
fn invalid_instance_name_is_rejected_with_exit_2() {
    let (code, stderr) = run_with_config("instance: Not A Label!\nhostNamespace: b\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("instance"), "{stderr}");
}

#[test]
fn a_section_for_a_plugin_this_binary_lacks_is_rejected_with_exit_2() {
    let (code, stderr) =
        run_with_config("instance: a\nhostNamespace: b\nplugins:\n  no-such-plugin:\n    config: {}\n");
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("plugins.no-such-plugin: this binary has no such plugin"),
        "{stderr}"
    );
}
