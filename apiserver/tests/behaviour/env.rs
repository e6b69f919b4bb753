//! The environment a behaviour case runs in. Every case that a client can observe is written once
//! with [`both!`] and runs twice: `<case>::embedded` against the embedded server and
//! `<case>::kube_apiserver` against a real kube-apiserver (the one [`real_kubeconfig`] names; the
//! variant passes, saying why on stderr, when there is none). Cases about the embedded server's
//! own machinery (fault injection, counters, compaction, the simulator, persistence) use
//! [`embedded!`] and exist only as `<case>::embedded`. Every case gets a fresh namespace, filled
//! as kube-controller-manager fills one (its `default` ServiceAccount and `kube-root-ca.crt`
//! ConfigMap exist before the case starts).

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use vcsync_apiserver::{ApiServer, ServerConfig};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The ConfigMap kube-controller-manager publishes in every namespace (the embedded server too).
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// The real kube-apiserver's kubeconfig, if there is one to test against: the file that
/// `VCSYNC_TEST_KUBECONFIG` names (a server started elsewhere), or else a control plane started
/// from the binaries in `VCSYNC_KUBE_ASSETS` by the first case of the run and shared by all of
/// them (`vcsync_envtest::SharedPlanes`). The one place that decides where the real server
/// comes from.
pub async fn real_kubeconfig() -> Option<PathBuf> {
    let given = std::env::var_os("VCSYNC_TEST_KUBECONFIG").filter(|path| !path.is_empty());
    if let Some(path) = given {
        return Some(PathBuf::from(path));
    }
    let assets = std::env::var_os("VCSYNC_KUBE_ASSETS").filter(|dir| !dir.is_empty())?;
    let plane = vcsync_envtest::SharedPlanes::single(std::path::Path::new(&assets), "behaviour")
        .await
        .expect("starting the real control plane of VCSYNC_KUBE_ASSETS");
    Some(plane.host_kubeconfig().to_path_buf())
}

/// Which server a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Embedded,
    KubeApiserver,
}

/// Runs `case` against `target` in a fresh namespace named after the case; against a real
/// kube-apiserver that is not configured, says so on stderr and passes.
pub async fn run<F, Fut>(target: Target, case_name: &str, case: F) -> TestResult
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let env = match target {
        Target::Embedded => Env::embedded(case_name).await,
        Target::KubeApiserver => match real_kubeconfig().await {
            Some(path) => Env::real(path, case_name).await,
            None => {
                eprintln!(
                    "{case_name}::kube_apiserver skipped: no real kube-apiserver (set \
                     VCSYNC_KUBE_ASSETS to the folder tests/control-plane/build.sh prints, or \
                     VCSYNC_TEST_KUBECONFIG)"
                );
                return Ok(());
            }
        },
    };
    case(env).await
}

/// Defines a case that runs against both servers: `async fn name(env: Env) -> TestResult {..}`
/// becomes the tests `name::embedded` and `name::kube_apiserver`. A leading `multi_thread;` runs
/// them on a two-worker runtime.
macro_rules! both {
    (multi_thread; async fn $name:ident($env:ident: Env) -> TestResult $body:block) => {
        $crate::env::both!(@flavor [(flavor = "multi_thread", worker_threads = 2)]
            async fn $name($env: Env) -> TestResult $body);
    };
    (async fn $name:ident($env:ident: Env) -> TestResult $body:block) => {
        $crate::env::both!(@flavor [] async fn $name($env: Env) -> TestResult $body);
    };
    (@flavor [$($flavor:tt)*] async fn $name:ident($env:ident: Env) -> TestResult $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn case($env: $crate::env::Env) -> $crate::env::TestResult $body

            #[tokio::test $($flavor)*]
            async fn embedded() -> $crate::env::TestResult {
                $crate::env::run($crate::env::Target::Embedded, stringify!($name), case).await
            }

            #[tokio::test $($flavor)*]
            async fn kube_apiserver() -> $crate::env::TestResult {
                $crate::env::run($crate::env::Target::KubeApiserver, stringify!($name), case).await
            }
        }
    };
}
pub(crate) use both;

/// Defines a case about the embedded server's own machinery: the test `name::embedded` only.
/// `async fn name(env: Env)` gets a fresh namespace on a fresh server; `async fn name()` starts
/// what it needs itself. Outer attributes (`#[ignore]`) go on the test; a leading
/// `multi_thread;` runs it on a multi-threaded runtime.
macro_rules! embedded {
    (multi_thread; $(#[$attr:meta])* async fn $name:ident() -> TestResult $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            $(#[$attr])*
            async fn embedded() -> $crate::env::TestResult $body
        }
    };
    ($(#[$attr:meta])* async fn $name:ident() -> TestResult $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test]
            $(#[$attr])*
            async fn embedded() -> $crate::env::TestResult $body
        }
    };
    (async fn $name:ident($env:ident: Env) -> TestResult $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn case($env: $crate::env::Env) -> $crate::env::TestResult $body

            #[tokio::test]
            async fn embedded() -> $crate::env::TestResult {
                $crate::env::run($crate::env::Target::Embedded, stringify!($name), case).await
            }
        }
    };
}
pub(crate) use embedded;

pub struct Env {
    pub client: Client,
    /// A namespace created for this case.
    pub ns: String,
    server: Option<ApiServer>,
    /// The kubeconfig of the server (for kubectl).
    kubeconfig: PathBuf,
}

impl Env {
    /// A fresh embedded server and the case's namespace in it.
    async fn embedded(case_name: &str) -> Env {
        let server = ApiServer::start(ServerConfig::default())
            .await
            .expect("start the embedded API server");
        let url = server.url().parse().expect("url");
        let client = Client::try_from(kube::Config::new(url)).expect("client");
        let kubeconfig = std::env::temp_dir().join(format!(
            "vcsync-apiserver-{}-{case_name}-kubeconfig",
            std::process::id()
        ));
        std::fs::write(&kubeconfig, server.kubeconfig()).expect("write the kubeconfig");
        Self::with_namespace(client, Some(server), kubeconfig, case_name).await
    }

    /// The real server `kubeconfig` points at, and the case's namespace in it.
    async fn real(kubeconfig: PathBuf, case_name: &str) -> Env {
        let parsed = kube::config::Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
            .await
            .expect("kubeconfig");
        let client = Client::try_from(config).expect("client");
        Self::with_namespace(client, None, kubeconfig, case_name).await
    }

    /// Creates the namespace `vt-{case}-{suffix}` and waits until kube-controller-manager (or the
    /// embedded server) has filled it.
    async fn with_namespace(
        client: Client,
        server: Option<ApiServer>,
        kubeconfig: PathBuf,
        case_name: &str,
    ) -> Env {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let short: String = case_name.replace('_', "-").chars().take(24).collect();
        let ns = format!("vt-{}-{:05}", short.trim_end_matches('-'), nanos % 100_000);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(&PostParams::default(), &object(json!({"metadata": {"name": ns}})))
            .await
            .expect("create the test namespace");
        let filled = eventually(Duration::from_secs(30), || {
            let (config_maps, accounts) = (
                Api::<ConfigMap>::namespaced(client.clone(), &ns),
                Api::<ServiceAccount>::namespaced(client.clone(), &ns),
            );
            async move {
                let root_ca = config_maps.get_opt(ROOT_CA).await.ok().flatten()?;
                accounts.get_opt("default").await.ok().flatten()?;
                Some(root_ca)
            }
        })
        .await;
        assert!(
            filled.is_some(),
            "namespace {ns} got no {ROOT_CA} and default ServiceAccount"
        );
        Env {
            client,
            ns,
            server,
            kubeconfig,
        }
    }

    /// The embedded server; only cases defined with [`embedded!`] may ask.
    pub fn embedded_server(&self) -> &ApiServer {
        self.server
            .as_ref()
            .expect("an embedded! case runs against the embedded server")
    }

    /// The kubeconfig file of the server.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// A namespaced API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Deletes the test namespace and stops the embedded server.
    pub async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        if let Some(server) = self.server {
            let _ = std::fs::remove_file(&self.kubeconfig);
            server.shutdown().await;
        }
    }
}

/// Builds a typed object from JSON.
pub fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).expect("valid object JSON")
}

/// The HTTP status code of a kube API error.
pub fn status_code(error: &kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The reason of a kube API error.
pub fn reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.reason.clone(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `check` every 10ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    tokio::time::timeout(limit, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .ok()
}
