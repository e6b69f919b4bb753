//! What `vcsync cluster connect` does with a cluster's kubeconfig besides printing it: trade the
//! admin's certificate for a service account's token, run a command against the cluster, or
//! merge it into the user's kubeconfig file.

use std::{
    io::Write,
    os::unix::{fs::OpenOptionsExt, process::ExitStatusExt},
    path::Path,
    process::Command,
};

use anyhow::Context;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use super::{ClusterError, Result, kubeconfig};

/// `--service-account NS/NAME [--cluster-role ROLE]`: whose token the kubeconfig carries.
pub struct AccountRequest {
    /// The account's namespace.
    pub namespace: String,
    /// The account's name.
    pub name: String,
    /// A ClusterRole to bind the account to (`vcsync-connect-<ns>-<name>-<role>`).
    pub cluster_role: Option<String>,
    /// How long the token is valid (the API server may cap it).
    pub expiration: std::time::Duration,
}

impl AccountRequest {
    /// Parses `NS/NAME`.
    pub fn parse(
        account: &str,
        cluster_role: Option<String>,
        expiration: std::time::Duration,
    ) -> Result<Self> {
        match account.split_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(AccountRequest {
                    namespace: namespace.into(),
                    name: name.into(),
                    cluster_role,
                    expiration,
                })
            }
            _ => Err(ClusterError::BadInput(format!(
                "--service-account {account:?}: expected NAMESPACE/NAME"
            ))),
        }
    }
}

/// `kubeconfig` (the admin's) with a token of the requested service account instead: the
/// account is created when missing, bound to the ClusterRole when one is asked for, and a token
/// requested for it, all through `kubeconfig` itself.
pub async fn for_service_account(kubeconfig: &str, request: &AccountRequest) -> Result<String> {
    let client = kubeconfig::client_of(kubeconfig).await?;
    let (namespace, name) = (request.namespace.as_str(), request.name.as_str());
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    create_or_keep(accounts.create(&PostParams::default(), &account).await)
        .with_context(|| format!("creating service account {namespace}/{name}"))?;
    if let Some(role) = &request.cluster_role {
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("vcsync-connect-{namespace}-{name}-{role}")),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(namespace.into()),
                ..Default::default()
            }]),
        };
        create_or_keep(
            Api::<ClusterRoleBinding>::all(client.clone())
                .create(&PostParams::default(), &binding)
                .await,
        )
        .with_context(|| format!("binding {namespace}/{name} to cluster role {role}"))?;
    }
    let token_request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(request.expiration.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request(name, &PostParams::default(), &token_request)
        .await
        .with_context(|| format!("requesting a token for {namespace}/{name}"))?
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .with_context(|| format!("the token request for {namespace}/{name} came back without a token"))?;
    kubeconfig::with_token(kubeconfig, &token)
}

/// A create's outcome, an existing object (409) being as good as a new one.
fn create_or_keep<K>(created: kube::Result<K>) -> kube::Result<()> {
    match created {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err),
    }
}

/// Writes `text` to `path`, readable by its owner only (it holds credentials).
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs `command` with `KUBECONFIG` set to a private copy of cluster `name`'s `kubeconfig`
/// (removed afterwards); the command's exit status becomes vcsync's
/// ([`ClusterError::CommandExited`]; 128 + the signal when one ended it).
pub fn run_with(name: &str, kubeconfig: &str, command: &[String]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vcsync-connect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.kubeconfig"));
    write_private(&path, kubeconfig)?;
    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("KUBECONFIG", &path)
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    let status = status.with_context(|| format!("running {}", command[0]))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(ClusterError::CommandExited(u8::try_from(code).unwrap_or(1))),
        None => Err(ClusterError::CommandExited(
            status
                .signal()
                .map_or(1, |signal| 128u8.saturating_add(signal as u8)),
        )),
    }
}

/// Merges cluster `name`'s `kubeconfig` into `file` (created, with its folder, when missing)
/// as context `vcsync-<name>`, made current.
pub fn update_current(name: &str, kubeconfig: &str, file: &Path) -> Result<()> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(anyhow::anyhow!("reading {}: {err}", file.display()).into()),
    };
    let merged = kubeconfig::merge(&existing, kubeconfig, &kubeconfig::context_name(name))?;
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    write_private(file, &merged)
}
