//! Which host pod a kubelet request for a virtual pod reaches: the virtual pod read from the
//! virtual API server, its host twin through the syncer's name translator, and that twin accepted
//! only when it carries this instance's marker and names this very virtual pod (name, namespace
//! and UID). A pod the virtual cluster does not own never answers.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use vcsync_translators::{HostKey, NameTranslator, OBJECT_UID_ANNOTATION, VirtualKey};

/// A virtual pod and its host twin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPair {
    /// The node the virtual pod is bound to (whose kubelet the caller called).
    pub node: Option<String>,
    pub host: HostKey,
}

/// Why a pod request goes nowhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoPod {
    /// 404: no such virtual pod, or no host twin of it.
    #[error("{0}")]
    NotFound(String),
    /// 500: an API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads virtual pods and finds their host twins.
pub struct PodResolver {
    pub virtual_client: Client,
    pub host_client: Client,
    pub translator: Box<dyn NameTranslator>,
}

impl PodResolver {
    /// The virtual pod `key` (with `uid` when the caller named one), or why not.
    pub async fn virtual_pod(&self, key: &VirtualKey, uid: Option<&str>) -> Result<Pod, NoPod> {
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let pod = Api::<Pod>::namespaced(self.virtual_client.clone(), namespace)
            .get_opt(&key.name)
            .await
            .map_err(|err| NoPod::Unavailable(format!("reading virtual pod {key}: {err}")))?;
        let pod = pod.ok_or_else(|| NoPod::NotFound(format!("pod {key} not found")))?;
        match uid {
            Some(uid) if pod.metadata.uid.as_deref() != Some(uid) => {
                Err(NoPod::NotFound(format!("pod {key} with UID {uid} not found")))
            }
            _ => Ok(pod),
        }
    }

    /// The host twin of `pod` (read from the virtual API server as `key`).
    pub async fn host_twin(&self, key: &VirtualKey, pod: &Pod) -> Result<PodPair, NoPod> {
        let host = self.translator.host_key(key);
        let namespace = host.namespace.as_deref().unwrap_or_default();
        let twin = Api::<Pod>::namespaced(self.host_client.clone(), namespace)
            .get_opt(&host.name)
            .await
            .map_err(|err| NoPod::Unavailable(format!("reading host pod {host}: {err}")))?;
        let no_twin = || NoPod::NotFound(format!("pod {key} has no copy on the host"));
        let twin = twin.ok_or_else(no_twin)?;
        if !is_twin(self.translator.as_ref(), key, pod, &twin) {
            return Err(no_twin());
        }
        Ok(PodPair {
            node: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
            host,
        })
    }
}

/// Whether host pod `twin` is this instance's copy of virtual pod `pod` (key `key`): the marker,
/// the name and namespace it names, and the UID it was made from.
pub fn is_twin(translator: &dyn NameTranslator, key: &VirtualKey, pod: &Pod, twin: &Pod) -> bool {
    let named = translator.virtual_key(&twin.metadata);
    let made_from = twin
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(OBJECT_UID_ANNOTATION));
    named.as_ref() == Some(key) && made_from.is_some() && made_from == pod.metadata.uid.as_ref()
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;
    use vcsync_translators::{
        MANAGED_BY_LABEL, NamespaceMapping, OBJECT_NAME_ANNOTATION, OBJECT_NAMESPACE_ANNOTATION, Ownership,
    };

    use super::*;

    fn virtual_pod(uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn host_pod(instance: &str, name: &str, uid: &str) -> Pod {
        let annotations = [
            (OBJECT_NAME_ANNOTATION, name),
            (OBJECT_NAMESPACE_ANNOTATION, "shop"),
            (OBJECT_UID_ANNOTATION, uid),
        ];
        Pod {
            metadata: ObjectMeta {
                labels: Some([(MANAGED_BY_LABEL.to_string(), instance.to_string())].into()),
                annotations: Some(annotations.map(|(k, v)| (k.to_string(), v.to_string())).into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn only_this_instances_copy_of_this_very_pod_is_its_twin() {
        let mapping = NamespaceMapping::Single {
            host_namespace: "vc".into(),
        };
        let translator = mapping.translator(Ownership::new("demo").unwrap());
        let key = VirtualKey::namespaced("shop", "web");
        let pod = virtual_pod("u1");
        assert!(is_twin(
            translator.as_ref(),
            &key,
            &pod,
            &host_pod("demo", "web", "u1")
        ));
        // Another instance's pod, a copy of another pod, a copy of an earlier pod of that name.
        assert!(!is_twin(
            translator.as_ref(),
            &key,
            &pod,
            &host_pod("other", "web", "u1")
        ));
        assert!(!is_twin(
            translator.as_ref(),
            &key,
            &pod,
            &host_pod("demo", "api", "u1")
        ));
        assert!(!is_twin(
            translator.as_ref(),
            &key,
            &pod,
            &host_pod("demo", "web", "u0")
        ));
        let mut unmarked = host_pod("demo", "web", "u1");
        unmarked.metadata.labels = None;
        assert!(!is_twin(translator.as_ref(), &key, &pod, &unmarked));
    }
}
