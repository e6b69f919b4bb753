//! Criterion micro-benchmarks of the translators: names, labels, pod references and the indices
//! fed by watch events (`cargo bench -p vcsync-translators`). Pod translation itself lives in the
//! syncer crate (it needs the syncer's configuration) and is measured end to end by `vcsync bench`.

use std::{collections::BTreeMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use vcsync_translators::{
    NameTranslator, NamespacedTranslator, Ownership, ReferenceIndex, VirtualKey, host_annotations,
    host_labels, host_name, pod_references,
};

fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-7d9f8c6b5-x2x4z", "namespace": "team-a",
                     "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5", "tier": "frontend"}},
        "spec": {
            "serviceAccountName": "web",
            "imagePullSecrets": [{"name": "registry"}],
            "containers": [{
                "name": "app", "image": "nginx:1.27",
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "web-env"}}],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "web-config"}},
                {"name": "tls", "secret": {"secretName": "web-tls"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}}
            ]
        }
    }))
    .expect("a pod")
}

fn names(c: &mut Criterion) {
    c.bench_function("host_name/plain", |b| {
        b.iter(|| host_name(black_box("team-a"), black_box("web-7d9f8c6b5-x2x4z")))
    });
    let long = "a".repeat(60);
    c.bench_function("host_name/hashed", |b| {
        b.iter(|| host_name(black_box("team-a"), black_box(&long)))
    });
    let translator = NamespacedTranslator::new(Ownership::new("bench").expect("instance"), "vc-bench");
    let key = VirtualKey::namespaced("team-a", "web-7d9f8c6b5-x2x4z");
    c.bench_function("NamespacedTranslator::host_key", |b| {
        b.iter(|| translator.host_key(black_box(&key)))
    });
}

fn labels(c: &mut Criterion) {
    let own = Ownership::new("bench").expect("instance");
    let labels: BTreeMap<String, String> = [
        ("app", "web"),
        ("pod-template-hash", "7d9f8c6b5"),
        ("tier", "frontend"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    c.bench_function("host_labels/3", |b| {
        b.iter(|| host_labels(black_box(&own), Some("team-a"), Some(black_box(&labels))))
    });
    let meta = ObjectMeta {
        name: Some("web-7d9f8c6b5-x2x4z".into()),
        namespace: Some("team-a".into()),
        uid: Some("0b6e3c2a-1f4d-4c55-9a3e-2d8f7c6b5a41".into()),
        ..Default::default()
    };
    c.bench_function("host_annotations", |b| {
        b.iter(|| host_annotations(black_box("Pod"), black_box(&meta)))
    });
}

fn references(c: &mut Criterion) {
    let pod = pod();
    c.bench_function("pod_references", |b| b.iter(|| pod_references(black_box(&pod))));
    let index = ReferenceIndex::new();
    for i in 0..10_000 {
        let key = VirtualKey::namespaced("team-a", format!("pod-{i}"));
        let mut p = pod.clone();
        p.metadata.name = Some(format!("pod-{i}"));
        index.apply(key, pod_references(&p));
    }
    let key = VirtualKey::namespaced("team-a", "pod-5000");
    let refs = pod_references(&pod);
    c.bench_function("ReferenceIndex::apply/10k pods", |b| {
        b.iter(|| index.apply(black_box(key.clone()), black_box(refs.clone())))
    });
}

criterion_group!(benches, names, labels, references);
criterion_main!(benches);
