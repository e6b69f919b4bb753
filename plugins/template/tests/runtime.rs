//! The template plugin under the syncer's manager, against the embedded API servers and, when
//! `VCSYNC_KUBE_ASSETS` names the binaries (as `tests/run.sh` does), a pair of real control
//! planes: each optional SDK trait the template implements is called by the runtime, and the
//! test of each fails when the runtime stops calling it (the kind check refuses nothing, tenant
//! ConfigMaps are overwritten, the info or status ConfigMap never appears).

use std::{collections::BTreeMap, future::Future, path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use vcsync_apiserver::{ApiServer, ServerConfig};
use vcsync_envtest::SharedPlanes;
use vcsync_plugin_template::{
    HostStatus, InfoSyncer, TemplateConfig, TemplatePlugin,
    info::{INFO_NAME, INFO_NAMESPACE},
    status::status_name,
};
use vcsync_syncer::{
    Config, Plugin, PluginConfig, RegisterContext, manager, register_controller_starter, register_fake_syncer,
};

/// A virtual and a host API server, and what keeps them running.
struct Servers {
    virt: Client,
    host: Client,
    _keep: Box<dyn Send>,
}

async fn embedded() -> Servers {
    let start = |name: &str| {
        ApiServer::start(ServerConfig {
            name: name.to_string(),
            ..ServerConfig::default()
        })
    };
    let (virt, host) = (start("virtual").await.unwrap(), start("host").await.unwrap());
    let client =
        |server: &ApiServer| Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    Servers {
        virt: client(&virt),
        host: client(&host),
        _keep: Box::new((virt, host)),
    }
}

/// The real planes of this run (None, saying so, without `VCSYNC_KUBE_ASSETS`).
async fn real() -> Option<Servers> {
    let Some(assets) = std::env::var_os("VCSYNC_KUBE_ASSETS").filter(|a| !a.is_empty()) else {
        eprintln!("VCSYNC_KUBE_ASSETS is not set: the real-control-plane case is skipped");
        return None;
    };
    let planes = SharedPlanes::pair(&PathBuf::from(assets), "template-plugin")
        .await
        .unwrap();
    let client = |path: &std::path::Path| {
        let kubeconfig = Kubeconfig::read_from(path).unwrap();
        async move {
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
            Client::try_from(config).unwrap()
        }
    };
    Some(Servers {
        virt: client(planes.virtual_kubeconfig()).await,
        host: client(planes.host_kubeconfig()).await,
        _keep: Box::new(planes),
    })
}

/// A register context for a fresh instance `instance`, its host namespace created.
async fn context(servers: &Servers, instance: &str) -> RegisterContext {
    let host_namespace = format!("vc-{instance}");
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(host_namespace.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(servers.host.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    RegisterContext::new(
        servers.virt.clone(),
        servers.host.clone(),
        Config::new(instance, &host_namespace),
    )
    .unwrap()
}

/// `check`'s value once it returns one, within 30 s.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    for _ in 0..600 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..ConfigMap::default()
    }
}

/// `name` in `api` once its data is `data`.
async fn has_data(api: &Api<ConfigMap>, name: &str, data: &BTreeMap<String, String>) -> ConfigMap {
    eventually(&format!("{name} with {data:?}"), || async {
        let found = api.get_opt(name).await.unwrap()?;
        (found.data.as_ref() == Some(data)).then_some(found)
    })
    .await
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The fake syncer creates, repairs and recreates the info ConfigMap, triggered once at start
/// by its controller modifier; its starter lets only that key through (a tenant's ConfigMap in
/// the same namespace keeps its data) and sees every reconcile end; the free-form controller
/// keeps the status ConfigMap on the host the same way.
async fn fake_syncer_and_free_form_controller(servers: Servers, instance: &str) {
    let ctx = context(&servers, instance).await;
    let host_namespace = ctx.clients().host_namespace().to_string();
    let virtual_api: Api<ConfigMap> = Api::namespaced(servers.virt.clone(), INFO_NAMESPACE);
    let host_api: Api<ConfigMap> = Api::namespaced(servers.host.clone(), &host_namespace);
    let tenant = [("owner", "tenant")];
    virtual_api
        .create(&PostParams::default(), &config_map("tenant-settings", &tenant))
        .await
        .unwrap();

    let config = TemplateConfig {
        annotation: "example.com/by".to_string(),
        kinds: vec!["ConfigMap".to_string(), "Secret".to_string()],
    };
    let syncer = InfoSyncer::new(instance, &config);
    let tally = syncer.tally();
    register_fake_syncer(&ctx, syncer).await.unwrap();
    register_controller_starter(&ctx, HostStatus::new(config))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let manager = tokio::spawn(manager::run(ctx, async move {
        let _ = stopped.await;
    }));

    let info = data(&[("instance", instance), ("stampedKinds", "ConfigMap,Secret")]);
    has_data(&virtual_api, INFO_NAME, &info).await;
    let status_data = data(&[
        ("instance", instance),
        ("annotation", "example.com/by"),
        ("kinds", "ConfigMap,Secret"),
    ]);
    let status = status_name(instance);
    has_data(&host_api, &status, &status_data).await;

    // Edited: put back. Deleted: recreated. Both for either object.
    for (api, name, want) in [
        (&virtual_api, INFO_NAME, &info),
        (&host_api, status.as_str(), &status_data),
    ] {
        let mut edited = api.get(name).await.unwrap();
        edited.data = Some(data(&[("instance", "someone-else")]));
        api.replace(name, &PostParams::default(), &edited).await.unwrap();
        has_data(api, name, want).await;
        let uid = api.get(name).await.unwrap().metadata.uid;
        api.delete(name, &DeleteParams::default()).await.unwrap();
        let recreated = has_data(api, name, want).await;
        assert_ne!(recreated.metadata.uid, uid, "{name} was not recreated");
    }

    // The tenant's ConfigMap reached the controller but not the syncer.
    let settings = virtual_api.get("tenant-settings").await.unwrap();
    assert_eq!(settings.data, Some(data(&tenant)));
    assert!(tally.skipped() >= 1, "the starter saw no other key");
    assert!(
        tally.passed() >= 3,
        "created, repaired, recreated: {}",
        tally.passed()
    );
    eventually("every reconcile's end", || async {
        (tally.ended() == tally.passed() + tally.skipped()).then_some(())
    })
    .await;

    stop.send(()).unwrap();
    manager.await.unwrap().unwrap();
}

/// The initializer reads the host's kinds before the controller exists, and a kind the host
/// does not serve stops the plugin's registration with a message that names it.
async fn an_unserved_kind_stops_the_registration(servers: Servers, instance: &str) {
    let ctx = context(&servers, instance).await;
    let text = "plugins:\n  template:\n    config:\n      annotation: example.com/by\n      kinds: [ConfigMap, Widget]\n";
    let err = TemplatePlugin
        .register(&ctx, &PluginConfig::new("template", "vcsync.yaml", text))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"Widget\"") && !err.contains("\"ConfigMap\""),
        "{err}"
    );

    let served = text.replace(", Widget", "");
    TemplatePlugin
        .register(&ctx, &PluginConfig::new("template", "vcsync.yaml", &served))
        .await
        .unwrap();
}

#[tokio::test]
async fn fake_syncer_and_free_form_controller_embedded() {
    fake_syncer_and_free_form_controller(embedded().await, "tpl-keep").await;
}

#[tokio::test]
async fn fake_syncer_and_free_form_controller_real() {
    if let Some(servers) = real().await {
        fake_syncer_and_free_form_controller(servers, "tpl-keep").await;
    }
}

#[tokio::test]
async fn an_unserved_kind_stops_the_registration_embedded() {
    an_unserved_kind_stops_the_registration(embedded().await, "tpl-kinds").await;
}

#[tokio::test]
async fn an_unserved_kind_stops_the_registration_real() {
    if let Some(servers) = real().await {
        an_unserved_kind_stops_the_registration(servers, "tpl-kinds").await;
    }
}
