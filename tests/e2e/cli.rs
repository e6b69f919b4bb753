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

#[test]
fn deploy_rbac_is_what_vcsync_rbac_prints_for_the_example_config_and_parses_into_rbac_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .args(["rbac", "--service-account", "vcsync", "--config"])
        .arg(root.join("deploy/vcsync.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(root.join("deploy/rbac.yaml")).unwrap();
    let body = committed
        .split_once("---\n")
        .map(|(_, body)| body)
        .expect("a comment header, then the documents");
    assert_eq!(
        body, printed,
        "regenerate deploy/rbac.yaml with the command in its header"
    );

    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use serde::Deserialize;
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(body) {
        let value = serde_json::Value::deserialize(doc).unwrap();
        let kind = value["kind"].as_str().unwrap().to_string();
        match kind.as_str() {
            "Role" => drop(serde_json::from_value::<Role>(value).unwrap()),
            "RoleBinding" => drop(serde_json::from_value::<RoleBinding>(value).unwrap()),
            "ClusterRole" => drop(serde_json::from_value::<ClusterRole>(value).unwrap()),
            "ClusterRoleBinding" => drop(serde_json::from_value::<ClusterRoleBinding>(value).unwrap()),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    );
}

/// The product build (`--no-default-features`, as deploy/Dockerfile builds the image) links
/// neither the embedded API server nor the real control planes of the development tools.
#[test]
fn the_product_build_links_no_embedded_server() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "vcsync",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.contains("vcsync-syncer"), "{tree}");
    for dev_only in ["vcsync-apiserver", "vcsync-envtest"] {
        assert!(
            !tree.lines().any(|line| line.starts_with(dev_only)),
            "the product build depends on {dev_only}:\n{tree}"
        );
    }
}

/// The default build (with the `dev-tools` feature) has the development subcommands.
#[test]
fn the_default_build_has_the_dev_tools() {
    let out = Command::new(env!("CARGO_BIN_EXE_vcsync"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["run", "rbac", "cluster", "dev", "bench", "soak"] {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "no {command} in:\n{help}"
        );
    }
}
