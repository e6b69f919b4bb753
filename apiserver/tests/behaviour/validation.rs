//! Validation: 422 Invalid with kube-apiserver's message and `details.causes` (reason and field
//! of each error), after k8s.io/kubernetes pkg/apis/core/validation/validation.go
//! (`ValidatePodCreate`, `validateService`, `ValidateConfigMapUpdate`, `ValidateSecretUpdate`,
//! `ValidatePersistentVolumeClaimSpec` and `...Update`), pkg/apis/scheduling/validation
//! (`ValidatePriorityClass`), pkg/apis/networking/validation (`validateHTTPIngressPath`) and
//! k8s.io/apimachinery pkg/api/validation/objectmeta.go (`ValidateAnnotations`), as
//! apimachinery's `errors.NewInvalid` reports them.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::defaulting::post;
use crate::env::{Env, both, object};

/// (code, reason, message, causes as (reason, field)) of an API error.
fn invalid(err: kube::Error) -> (u16, String, String, Vec<(String, String)>) {
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    let causes = status
        .details
        .map(|d| d.causes.into_iter().map(|c| (c.reason, c.field)).collect())
        .unwrap_or_default();
    (status.code, status.reason, status.message, causes)
}

fn causes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(r, f)| (r.to_string(), f.to_string())).collect()
}

async fn refused(env: &Env, path: &str, body: Value) -> (u16, String, String, Vec<(String, String)>) {
    invalid(
        post(env, path, body)
            .await
            .expect_err("the server refuses the object"),
    )
}

both! {
    async fn a_pod_without_an_image_is_invalid(env: Env) -> TestResult {
        let path = format!("/api/v1/namespaces/{}/pods", env.ns);
        let (code, reason, message, found) = refused(&env, &path,
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app"}]}})).await;
        assert_eq!((code, reason.as_str()), (422, "Invalid"));
        assert_eq!(message, "Pod \"p\" is invalid: spec.containers[0].image: Required value");
        assert_eq!(found, causes(&[("FieldValueRequired", "spec.containers[0].image")]));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn several_pod_errors_are_reported_together(env: Env) -> TestResult {
        let path = format!("/api/v1/namespaces/{}/pods", env.ns);
        let (code, _, message, found) = refused(&env, &path, json!({
            "metadata": {"name": "p", "labels": {"bad key": "v"}},
            "spec": {"restartPolicy": "Sometimes", "containers": [
                {"name": "App", "image": "x", "imagePullPolicy": "Sometimes",
                 "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}]},
                {"name": "b", "image": "x", "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}
            ]}})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[
            ("FieldValueInvalid", "metadata.labels"),
            ("FieldValueInvalid", "spec.containers[0].name"),
            ("FieldValueInvalid", "spec.containers[0].ports[0].containerPort"),
            ("FieldValueNotSupported", "spec.containers[0].ports[1].protocol"),
            ("FieldValueNotSupported", "spec.containers[0].imagePullPolicy"),
            ("FieldValueNotFound", "spec.containers[1].volumeMounts[0].name"),
            ("FieldValueNotSupported", "spec.restartPolicy"),
        ]));
        assert!(message.starts_with("Pod \"p\" is invalid: [metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters"), "{message}");
        for part in [
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[1].volumeMounts[0].name: Not found: \"missing\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"]",
        ] {
            assert!(message.contains(part), "{part} not in {message}");
        }
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn service_ports_types_and_cluster_ip_are_validated(env: Env) -> TestResult {
        let path = format!("/api/v1/namespaces/{}/services", env.ns);
        let (code, _, message, found) = refused(&env, &path,
            json!({"metadata": {"name": "s"}, "spec": {"type": "Internal"}})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueRequired", "spec.ports"), ("FieldValueNotSupported", "spec.type")]));
        assert!(message.ends_with("spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"]"), "{message}");
        let (_, _, _, found) = refused(&env, &path, json!({"metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}, {"port": 0, "name": "b"}]}})).await;
        assert_eq!(found, causes(&[("FieldValueRequired", "spec.ports[0].name"),
            ("FieldValueInvalid", "spec.ports[1].port"), ("FieldValueInvalid", "spec.ports[1].targetPort")]));

        // The cluster IP may not change once set.
        let services = env.api::<Service>();
        let service: Service = object(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}));
        let created = services.create(&PostParams::default(), &service).await?;
        let ip = created.spec.unwrap().cluster_ip.unwrap();
        let other = if ip.ends_with(".77") { ip.replace(".77", ".78") } else {
            format!("{}.77", ip.rsplit_once('.').unwrap().0)
        };
        let err = services.patch("s", &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"clusterIP": other, "clusterIPs": [other]}}))).await.unwrap_err();
        let (code, _, message, found) = invalid(err);
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueInvalid", "spec.clusterIPs[0]")]));
        assert_eq!(message, format!("Service \"s\" is invalid: spec.clusterIPs[0]: Invalid value: [\"{other}\"]: may not change once set"));
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn config_maps_and_secrets_keep_keys_types_and_immutable_data(env: Env) -> TestResult {
        let ns = &env.ns;
        let (_, _, message, found) = refused(&env, &format!("/api/v1/namespaces/{ns}/configmaps"),
            json!({"metadata": {"name": "c"}, "data": {"a b": "x"}})).await;
        assert_eq!(found, causes(&[("FieldValueInvalid", "data[a b]")]));
        assert_eq!(message, "ConfigMap \"c\" is invalid: data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");

        let config_maps = env.api::<ConfigMap>();
        let immutable: ConfigMap = object(json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "immutable": true}));
        config_maps.create(&PostParams::default(), &immutable).await?;
        let err = config_maps.patch("c", &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}}))).await.unwrap_err();
        let (code, _, message, found) = invalid(err);
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueForbidden", "data")]));
        assert_eq!(message, "ConfigMap \"c\" is invalid: data: Forbidden: field is immutable when `immutable` is set");
        // Labels may still change.
        config_maps.patch("c", &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}}))).await?;

        let secrets = env.api::<Secret>();
        let (_, _, _, found) = refused(&env, &format!("/api/v1/namespaces/{ns}/secrets"),
            json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}})).await;
        assert_eq!(found, causes(&[("FieldValueRequired", "data[tls.key]")]));
        let secret: Secret = object(json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}}));
        secrets.create(&PostParams::default(), &secret).await?;
        let err = secrets.patch("s", &PatchParams::default(),
            &Patch::Merge(json!({"type": "example.com/other"}))).await.unwrap_err();
        let (_, _, message, found) = invalid(err);
        assert_eq!(found, causes(&[("FieldValueInvalid", "type")]));
        assert_eq!(message, "Secret \"s\" is invalid: type: Invalid value: \"example.com/other\": field is immutable");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn claims_need_access_modes_and_storage_and_keep_their_spec(env: Env) -> TestResult {
        let path = format!("/api/v1/namespaces/{}/persistentvolumeclaims", env.ns);
        let (code, _, message, found) = refused(&env, &path,
            json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteSometimes"]}})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueNotSupported", "spec.accessModes"),
            ("FieldValueRequired", "spec.resources[storage]")]));
        assert!(message.contains("spec.accessModes: Unsupported value: \"ReadWriteSometimes\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""), "{message}");

        let claims = env.api::<PersistentVolumeClaim>();
        let claim: PersistentVolumeClaim = object(json!({"metadata": {"name": "c"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}));
        claims.create(&PostParams::default(), &claim).await?;
        let err = claims.patch("c", &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"accessModes": ["ReadWriteMany"]}}))).await.unwrap_err();
        let (code, _, message, found) = invalid(err);
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueForbidden", "spec")]));
        assert!(message.starts_with("PersistentVolumeClaim \"c\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"), "{message}");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn user_priority_classes_are_capped_and_annotations_limited(env: Env) -> TestResult {
        let name = format!("{}-high", env.ns);
        let (code, _, message, found) = refused(&env, "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"metadata": {"name": name}, "value": 1_000_000_001})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueForbidden", "value")]));
        assert_eq!(message, format!("PriorityClass.scheduling.k8s.io \"{name}\" is invalid: value: Forbidden: maximum allowed value of a user defined priority is 1000000000"));

        let big = "x".repeat(256 * 1024);
        let (code, _, message, found) = refused(&env, &format!("/api/v1/namespaces/{}/configmaps", env.ns),
            json!({"metadata": {"name": "c", "annotations": {"big": big}}})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueTooLong", "metadata.annotations")]));
        assert_eq!(message, "ConfigMap \"c\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes");
        env.finish().await;
        Ok(())
    }
}

both! {
    async fn ingress_paths_need_a_path_type(env: Env) -> TestResult {
        let path = format!("/apis/networking.k8s.io/v1/namespaces/{}/ingresses", env.ns);
        let backend = json!({"service": {"name": "s", "port": {"number": 80}}});
        let (code, _, message, found) = refused(&env, &path, json!({"metadata": {"name": "i"},
            "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
                {"path": "/", "backend": backend},
                {"path": "relative", "pathType": "Prefix", "backend": backend}
            ]}}]}})).await;
        assert_eq!(code, 422);
        assert_eq!(found, causes(&[("FieldValueRequired", "spec.rules[0].http.paths[0].pathType"),
            ("FieldValueInvalid", "spec.rules[0].http.paths[1].path")]));
        assert!(message.starts_with("Ingress.networking.k8s.io \"i\" is invalid: [spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified, "), "{message}");
        env.finish().await;
        Ok(())
    }
}
