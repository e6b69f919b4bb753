//! Tests of the services syncer: which Services are synced, and a host pod that does not decode.

use super::*;

#[test]
fn the_virtual_api_servers_own_service_is_never_synced() {
    let mut service = Service::default();
    service.metadata.namespace = Some("default".into());
    service.metadata.name = Some("kubernetes".into());
    assert!(!is_synced(&service));
    service.metadata.namespace = Some("other".into());
    assert!(is_synced(&service));
}

/// A host pod that does not decode once read as absent: its address was left out and
/// the virtual Endpoints overwritten without it. Now the mirror fails (the reconcile is
/// retried) and writes nothing.
#[tokio::test]
async fn a_host_pod_that_does_not_decode_fails_the_mirror_and_drops_no_address() {
    use std::sync::atomic::Ordering;

    use crate::{
        Error,
        cache::{Storage, empty, filled},
        config::Config,
    };

    let (client, connections) = crate::testing::silent_api_server().await;
    let register = RegisterContext::new(client.clone(), client, Config::new("demo", "vc-demo")).unwrap();
    let clients = register.clients();
    let mapping = clients.namespace_mapping().clone();
    let (host_ns, host_pod) = (
        mapping.host_namespace("team"),
        mapping.host_object_name("team", "web"),
    );
    let translator: Arc<dyn NameTranslator> = Arc::from(clients.namespaced_translator());

    let virt_pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "team", "uid": "0f2d4c1e-6666-4a2b-9c3d-5e6f7a8b9c0d"}
    }))
    .unwrap();
    let pod = Pod {
        metadata: translator.host_metadata("Pod", &virt_pod.metadata),
        ..Pod::default()
    };
    let host_pods = filled(Storage::Encoded, [pod]);
    host_pods.corrupt(&kube::runtime::reflector::ObjectRef::new(&host_pod).within(&host_ns));
    let virt: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "team"},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}
    }))
    .unwrap();
    let host = Service {
        metadata: translator.host_metadata("Service", &virt.metadata),
        ..virt.clone()
    };
    let host_endpoints: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": host.name_any(), "namespace": host_ns},
        "subsets": [{
            "addresses": [{"ip": "10.1.2.3", "targetRef": {"kind": "Pod", "name": host_pod, "namespace": host_ns}}],
            "ports": [{"port": 5432}]
        }]
    }))
    .unwrap();
    // The virtual Endpoints as mirrored while the pod decoded, with the address.
    let virtual_endpoints: Endpoints = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "team", "labels": mirrored_endpoints_labels(&virt)},
        "subsets": [{
            "addresses": [{"ip": "10.1.2.3", "targetRef": {"kind": "Pod", "name": "web", "namespace": "team"}}],
            "ports": [{"port": 5432}]
        }]
    }))
    .unwrap();
    let syncer = ServiceSyncer {
        translator,
        host_services: filled(Storage::Typed, [host.clone()]),
        host_endpoints: filled(Storage::Typed, [host_endpoints]),
        virtual_endpoints: filled(Storage::Typed, [virtual_endpoints]),
        host_pods,
        host_slices: empty(),
        virtual_slices: empty(),
        virtual_services: filled(Storage::Typed, [virt.clone()]),
        adoption_failed: DashSet::new(),
        policy: clients.config().sync.services.clone(),
    };
    let ctx = SyncContext::new(
        &register,
        filled(Storage::Typed, [virt.clone()]),
        filled(Storage::Typed, [host.clone()]),
        "services",
    );

    // A request would hang on the listener, which never answers.
    let mirror = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        syncer.mirror_endpoints(&ctx, &virt, &host),
    );
    let err = mirror.await.expect("no request made").unwrap_err();
    assert!(matches!(err, Error::CacheDecode { .. }), "{err}");
    tokio::task::yield_now().await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was written");
}
