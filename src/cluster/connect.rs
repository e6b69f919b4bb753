//! `vcsync cluster connect`: a kubeconfig of the cluster that works from here (through a
//! port-forward when only the cluster's host reaches it), printed, written, merged into the
//! user's kubeconfig file, or handed to a command; optionally with a service account's token
//! instead of the admin's certificate.

use std::{
    io::Write,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
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

use clap::Args;

use super::{ClusterError, Driver, Progress, Result, kubeconfig, private_file, reach::reach};

/// Flags of `vcsync cluster connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Cluster name.
    pub name: String,
    /// Where to write it (`-`: stdout).
    #[arg(long, short = 'o', default_value = "-")]
    output: String,
    /// Server URL to put in it instead of the cluster's own; no port-forward then.
    #[arg(long)]
    server: Option<String>,
    /// The local port of the port-forward (`kubernetes` clusters reachable only inside their
    /// host); 0: any free port.
    #[arg(long, default_value_t = 0)]
    local_port: u16,
    /// Merge it into a kubeconfig file as context `vcsync-<name>` and make that current.
    #[arg(long, conflicts_with = "command")]
    update_current: bool,
    /// The file --update-current writes (default: KUBECONFIG's first file, else
    /// ~/.kube/config).
    #[arg(long = "kube-config", requires = "update_current")]
    kube_config: Option<PathBuf>,
    /// A kubeconfig with a token of this service account (NAMESPACE/NAME, created when
    /// missing) instead of the admin's certificate.
    #[arg(long)]
    service_account: Option<String>,
    /// Bind the service account to this ClusterRole (e.g. `view`, `cluster-admin`).
    #[arg(long, requires = "service_account")]
    cluster_role: Option<String>,
    /// How long the service account's token is valid: seconds, or with a unit (`90m`,
    /// `8760h`); the API server may cap it.
    #[arg(long, default_value = "8760h", value_parser = parse_duration, requires = "service_account")]
    token_expiration: Duration,
    /// A command to run with KUBECONFIG pointing at the cluster (after `--`).
    #[arg(last = true)]
    command: Vec<String>,
}

/// Runs `vcsync cluster connect` for cluster `args.name` of `driver`.
pub async fn connect(args: ConnectArgs, driver: &dyn Driver, progress: &mut Progress) -> Result<()> {
    let name = args.name.clone();
    let account = args
        .service_account
        .as_deref()
        .map(|account| AccountRequest::parse(account, args.cluster_role.clone(), args.token_expiration))
        .transpose()?;
    let (mut config, forward) =
        reach(driver, &name, args.server.as_deref(), args.local_port, progress).await?;
    if let Some(account) = &account {
        progress.step(format!(
            "a token of service account {}/{}",
            account.namespace, account.name
        ));
        config = for_service_account(&config, account).await?;
    }
    if !args.command.is_empty() {
        progress.finish();
        let command = args.command;
        // The forward serves on the runtime while the command runs on a thread of its own.
        let ran = tokio::task::spawn_blocking(move || run_with(&name, &config, &command))
            .await
            .map_err(|err| anyhow::anyhow!("running the command: {err}"))?;
        drop(forward);
        return ran;
    }
    if args.update_current {
        let file = kubeconfig::target_file(args.kube_config.as_deref())?;
        update_current(&name, &config, &file)?;
        progress.step(format!(
            "context {} of cluster {name} written to {} and made current",
            kubeconfig::context_name(&name),
            file.display()
        ));
    } else if args.output == "-" {
        print!("{config}");
        std::io::stdout().flush().context("writing the kubeconfig")?;
    } else {
        std::fs::write(&args.output, &config)
            .map_err(|err| anyhow::anyhow!("writing {}: {err}", args.output))?;
        progress.step(format!("kubeconfig of {name} written to {}", args.output));
    }
    if let Some(forward) = forward {
        progress.note(format!(
            "the kubeconfig reaches cluster {name} through {} while this runs; press Ctrl+C to stop",
            forward.local
        ));
        progress.finish();
        tokio::signal::ctrl_c().await.context("waiting for Ctrl+C")?;
    }
    Ok(())
}

/// A duration flag: seconds, or with a unit (`ms`, `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration {text:?} (units: ms, s, m, h)")),
    }
}

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
    private_file::create(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
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
