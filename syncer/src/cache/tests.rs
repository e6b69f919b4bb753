//! Tests of the cache: reads, re-lists, the encoded storage and decode failures.

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Pod, Secret},
};
use kube::api::ObjectMeta;
use rstest::rstest;

use super::{
    encoding::{MAX_DICTIONARY_BYTES, MAX_SAMPLES},
    *,
};
use crate::metrics::{CACHE_DECODE_ERRORS, KindLabels};

fn config_map(ns: &str, name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), value.to_string())].into()),
        ..ConfigMap::default()
    }
}

#[rstest]
#[case::typed(Storage::Typed)]
#[case::encoded(Storage::Encoded)]
fn reads_back_what_was_applied_and_forgets_what_was_deleted(#[case] storage: Storage) {
    let (cache, mut writer) = cache::<ConfigMap>(storage);
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "one", "1")));
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("b", "one", "2")));
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "one", "3")));
    let got = cache.get(&ObjectRef::new("one").within("a")).unwrap();
    assert_eq!(*got, config_map("a", "one", "3"));
    assert_eq!(cache.len(), 2);
    writer.apply_watcher_event(&watcher::Event::Delete(config_map("a", "one", "3")));
    assert!(cache.get(&ObjectRef::new("one").within("a")).is_none());
    assert_eq!(*cache.state()[0], config_map("b", "one", "2"));
}

#[tokio::test]
async fn a_relist_replaces_the_objects_only_when_it_is_complete() {
    let (cache, mut writer) = cache::<ConfigMap>(Storage::Encoded);
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(config_map("a", "old", "1")));
    assert!(cache.is_empty(), "a list in progress is not visible");
    writer.apply_watcher_event(&watcher::Event::InitDone);
    cache.wait_until_ready().await;
    assert_eq!(cache.len(), 1);

    // After a 410 the watch lists again: the old objects stay readable until it ends.
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(config_map("a", "new", "2")));
    assert!(cache.get(&ObjectRef::new("old").within("a")).is_some());
    writer.apply_watcher_event(&watcher::Event::InitDone);
    assert!(cache.get(&ObjectRef::new("old").within("a")).is_none());
    assert!(cache.get(&ObjectRef::new("new").within("a")).is_some());
}

#[test]
fn cluster_scoped_objects_are_found_by_name() {
    let mut pod = Pod::default();
    pod.metadata.name = Some("n".into());
    let cache = filled(Storage::Encoded, [pod.clone()]);
    assert_eq!(*cache.get(&ObjectRef::new("n")).unwrap(), pod);
    assert!(cache.get(&ObjectRef::new("n").within("x")).is_none());
}

#[rstest]
#[case::typed(Storage::Typed)]
#[case::encoded(Storage::Encoded)]
fn virtual_keys_name_every_object_as_virtual_key_of_does(#[case] storage: Storage) {
    let mut cluster_scoped = Pod::default();
    cluster_scoped.metadata.name = Some("no-namespace".into());
    let pod = Pod {
        metadata: config_map("team-a", "web.v1", "").metadata,
        ..Pod::default()
    };
    let objects = [cluster_scoped, pod];
    let cache = filled(storage, objects.clone());
    let mut keys = cache.virtual_keys();
    keys.sort();
    let mut expected: Vec<VirtualKey> = objects.iter().map(crate::resource::virtual_key_of).collect();
    expected.sort();
    assert_eq!(keys, expected);
}

/// The compressed bytes held for every cached object, summed.
fn stored_bytes<K>(cache: &Cache<K>) -> usize {
    let objects = cache.shared.objects.read().unwrap();
    objects
        .values()
        .map(|stored| match stored {
            Stored::Encoded { bytes, .. } => bytes.len(),
            Stored::Typed(..) => panic!("not encoded"),
        })
        .sum()
}

fn labelled_pod(i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "team", "uid": format!("{i:08}-90d1-480f-9986-c0825444fe3a"),
                     "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx:1.27",
                 "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"}, {"name": "KUBERNETES_SERVICE_PORT", "value": "443"}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}]}],
                 "volumes": [{"name": "config", "configMap": {"name": format!("cm-{i}")}}]},
        "status": {"phase": "Running", "podIP": format!("10.244.0.{}", i % 250)}
    }))
    .unwrap()
}

#[test]
fn objects_alike_are_kept_in_a_fraction_of_their_json() {
    let pods: Vec<Pod> = (0..200).map(labelled_pod).collect();
    let json: usize = pods.iter().map(|p| serde_json::to_vec(p).unwrap().len()).sum();
    let cache = filled(Storage::Encoded, pods.clone());
    let stored = stored_bytes(&cache);
    assert!(
        stored * 4 < json,
        "{stored} bytes stored for {json} bytes of JSON"
    );
    for pod in &pods {
        let reference = ObjectRef::from_obj(pod);
        assert_eq!(*cache.get(&reference).unwrap(), *pod);
    }
}

#[test]
fn the_dictionary_stays_small_whatever_the_objects() {
    // Values that do not compress: every object is a poor fit for the dictionary.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut noise = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect()
    };
    let maps: Vec<ConfigMap> = (0..50)
        .map(|i| config_map("a", &format!("m{i}"), &noise(3000)))
        .collect();
    let (cache, mut writer) = cache::<ConfigMap>(Storage::Encoded);
    for map in &maps {
        writer.apply_watcher_event(&watcher::Event::Apply(map.clone()));
    }
    assert!(writer.samples <= MAX_SAMPLES);
    assert!(writer.dictionary.0.len() <= MAX_DICTIONARY_BYTES);
    assert_eq!(*cache.get(&ObjectRef::new("m49").within("a")).unwrap(), maps[49]);
}

#[test]
fn a_secret_sampled_into_the_dictionary_leaves_its_values_out() {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "namespace": "team"},
        "data": {"password": ByteString(b"correct-horse-battery-staple".to_vec())},
        "stringData": {"token": "never-stored-either"}
    }))
    .unwrap();
    let (cache, mut writer) = cache::<Secret>(Storage::Encoded);
    writer.apply_watcher_event(&watcher::Event::Apply(secret.clone()));
    assert_eq!(writer.samples, 1);
    let dictionary = String::from_utf8_lossy(&writer.dictionary.0).into_owned();
    assert!(
        dictionary.contains("\"password\""),
        "the keys are sampled: {dictionary}"
    );
    for value in ["correct-horse", "Y29ycmVjdC1ob3Jz", "never-stored"] {
        assert!(!dictionary.contains(value), "{value} in {dictionary}");
    }
    assert_eq!(*cache.get(&ObjectRef::from_obj(&secret)).unwrap(), secret);
}

#[test]
fn an_object_that_does_not_decode_is_an_error_and_counted_never_an_absence() {
    let count = || {
        CACHE_DECODE_ERRORS
            .get_or_create(&KindLabels {
                kind: "ConfigMap".into(),
            })
            .get()
    };
    let before = count();
    let cache = filled(
        Storage::Encoded,
        [config_map("a", "bad", "1"), config_map("a", "good", "2")],
    );
    let bad = ObjectRef::new("bad").within("a");
    cache.corrupt(&bad);
    let err = cache.try_get(&bad).unwrap_err();
    assert_eq!(
        (err.kind.as_str(), err.namespace.as_deref(), err.name.as_str()),
        ("ConfigMap", Some("a"), "bad")
    );
    assert!(
        crate::Error::from(err)
            .to_string()
            .starts_with("cached ConfigMap a/bad does not decode: ")
    );
    assert!(
        cache
            .try_get(&ObjectRef::new("gone").within("a"))
            .unwrap()
            .is_none()
    );
    assert!(
        cache
            .try_get(&ObjectRef::new("good").within("a"))
            .unwrap()
            .is_some()
    );
    let mapped = cache.try_map(|cm| cm.metadata.name.clone());
    assert_eq!(mapped.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!(count() - before, 2);
    let text = crate::metrics::Metrics::new().encode();
    assert!(
        text.contains(&format!(
            r#"vcsync_cache_decode_errors_total{{kind="ConfigMap"}} {}"#,
            count()
        )),
        "{text}"
    );
}

#[test]
fn the_kinds_with_one_or_more_objects_per_pod_are_encoded() {
    assert_eq!(Storage::for_kind("Pod"), Storage::Encoded);
    assert_eq!(Storage::for_kind("Secret"), Storage::Encoded);
    assert_eq!(Storage::for_kind("Service"), Storage::Typed);
}

#[rstest]
#[case::typed(Storage::Typed, "test/typed-ConfigMap")]
#[case::encoded(Storage::Encoded, "test/encoded-ConfigMap")]
fn the_bytes_gauge_follows_what_the_cache_holds(#[case] storage: Storage, #[case] label: &str) {
    use crate::metrics::{CACHE_BYTES, CacheLabels};
    let gauge = || {
        CACHE_BYTES
            .get_or_create(&CacheLabels {
                cache: label.to_string(),
            })
            .get()
    };
    let (_cache, mut writer) = cache::<ConfigMap>(storage);
    writer.count_bytes_as(label.to_string());
    assert_eq!(gauge(), 0);
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "one", "1")));
    let one = gauge();
    assert!(one > "a/one".len() as i64, "{one}");
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "two", "2")));
    let two = gauge();
    assert!(two > one, "{two} after {one}");
    // The same object again: the key is counted once, the object's bytes replaced.
    writer.apply_watcher_event(&watcher::Event::Apply(config_map("a", "two", "2")));
    assert_eq!(gauge(), two);
    writer.apply_watcher_event(&watcher::Event::Delete(config_map("a", "two", "2")));
    assert_eq!(gauge(), one);
    // A re-list replaces the count once it completes.
    writer.apply_watcher_event(&watcher::Event::Init);
    writer.apply_watcher_event(&watcher::Event::InitApply(config_map("a", "two", "2")));
    assert_eq!(
        gauge(),
        one,
        "the cache still holds the objects from before the list"
    );
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let dictionary = writer.dictionary.0.len() as i64;
    assert_eq!(
        gauge() - dictionary,
        two - one,
        "one object, of the size the second one had"
    );
    writer.apply_watcher_event(&watcher::Event::Delete(config_map("a", "two", "2")));
    assert_eq!(gauge(), dictionary, "an empty cache counts only its dictionary");
}
