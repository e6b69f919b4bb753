//! The switchable kinds that go down (ServiceAccounts, PVCs, ...).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::env::{Env, eventually, get};

#[tokio::test]
async fn pvc_goes_down_and_its_bound_status_comes_up() {
    let mut env = Env::new().await;
    env.start_syncer("").await;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    env.virt_api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let host_name = env.host_name("data");
    eventually("host claim", || async {
        get(&env.host_api::<PersistentVolumeClaim>(), &host_name).await
    })
    .await;

    // What the host's volume binder would do.
    let bound = Patch::Merge(json!({"status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}}));
    env.host_api::<PersistentVolumeClaim>()
        .patch_status(&host_name, &PatchParams::default(), &bound)
        .await
        .unwrap();
    eventually("bound status in the virtual cluster", || async {
        get(&env.virt_api::<PersistentVolumeClaim>(), "data")
            .await
            .filter(|pvc| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
    })
    .await;
}

#[tokio::test]
async fn service_accounts_sync_only_when_switched_on() {
    let mut env = Env::new().await;
    env.start_syncer("sync:\n  serviceAccounts:\n    enabled: true\n")
        .await;
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap();
    env.virt_api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let host = eventually("host service account", || async {
        get(&env.host_api::<ServiceAccount>(), &env.host_name("builder")).await
    })
    .await;
    assert_eq!(host.automount_service_account_token, Some(false));
}
