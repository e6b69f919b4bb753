//! The `kubernetes` driver applies the opt-in isolation objects of the values (ResourceQuota,
//! LimitRange, NetworkPolicy) into the host namespace, and `delete` removes them.

use k8s_openapi::api::{
    core::v1::{LimitRange, Namespace, ResourceQuota},
    networking::v1::NetworkPolicy,
};
use kube::Api;

use crate::cluster::{create_namespace, host_for_the_driver, vcsync};

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_driver_applies_the_isolation_objects_and_delete_removes_them() {
    let (_host, dir, kc, client) = host_for_the_driver().await;
    // A namespace the driver did not create, so that delete keeps it and what is left shows.
    let ns = "tenant-iso";
    create_namespace(&client, ns).await;
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        format!(
            "namespace: {ns}\nisolation:\n  resourceQuota: {{enabled: true, hard: {{count/pods: \"7\"}}}}\n  \
             limitRange: {{enabled: true}}\n  networkPolicy: {{enabled: true}}\n"
        ),
    )
    .unwrap();
    let kc_s = kc.display().to_string();
    let values_s = values.display().to_string();
    let (code, _, err) = vcsync(
        &[],
        &["--kubeconfig", &kc_s, "-q", "create", "iso", "-f", &values_s],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), ns);
    let limits = Api::<LimitRange>::namespaced(client.clone(), ns);
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), ns);
    let quota = quotas.get("vcsync-iso").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["count/pods"].0, "7");
    let limit = limits.get("vcsync-iso").await.unwrap();
    assert_eq!(limit.spec.unwrap().limits[0].type_, "Container");
    let policy = policies.get("vcsync-iso-workloads").await.unwrap();
    assert_eq!(
        policy.spec.unwrap().pod_selector.unwrap().match_labels.unwrap()["vcsync.dev/managed-by"],
        "iso"
    );

    let (code, _, err) = vcsync(&[], &["--kubeconfig", &kc_s, "-q", "delete", "iso"]).await;
    assert_eq!(code, 0, "{err}");
    Api::<Namespace>::all(client.clone()).get(ns).await.expect("kept");
    assert!(quotas.get_opt("vcsync-iso").await.unwrap().is_none());
    assert!(limits.get_opt("vcsync-iso").await.unwrap().is_none());
    assert!(policies.get_opt("vcsync-iso-workloads").await.unwrap().is_none());
}
