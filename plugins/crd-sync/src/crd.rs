//! Making a CRD available in the virtual cluster: copied from the host (server fields and
//! status stripped) or read from a file; created when missing, updated when it differs.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, ObjectMeta},
};
use vcsync_syncer::{
    Error, RegisterContext, Result, Side,
    error::api_error,
    writes::{labels_and_annotations_match, write_params},
};

use crate::config::{CrdSource, NAME, ResourceConfig};

/// What the syncers need to know about a served custom resource type.
#[derive(Clone, Debug)]
pub struct Served {
    /// Group, version, kind, plural.
    pub resource: ApiResource,
    /// Namespaced (else cluster-scoped).
    pub namespaced: bool,
    /// The version declares a `status` subresource.
    pub has_status: bool,
}

/// How long to wait for the virtual API server to serve a new CRD.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

fn registration(resource: &ResourceConfig, reason: impl Into<String>) -> Error {
    Error::Registration {
        name: format!(
            "{} {}/{} {}",
            NAME, resource.group, resource.version, resource.kind
        ),
        reason: reason.into(),
    }
}

/// The CRD to put into the virtual cluster for `resource`.
async fn source_crd(ctx: &RegisterContext, resource: &ResourceConfig) -> Result<CustomResourceDefinition> {
    match resource.crd_source {
        CrdSource::File => {
            let path = resource
                .crd_file
                .as_deref()
                .ok_or_else(|| registration(resource, "crdSource: file needs crdFile"))?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| registration(resource, format!("reading {path}: {e}")))?;
            serde_yaml_ng::from_str(&text)
                .map_err(|e| registration(resource, format!("{path}: not a CustomResourceDefinition: {e}")))
        }
        CrdSource::Host => {
            let crds: Api<CustomResourceDefinition> = Api::all(ctx.clients().host_client().clone());
            let list = crds.list(&ListParams::default()).await.map_err(api_error(
                Side::Host,
                "list",
                "CustomResourceDefinition",
                "",
            ))?;
            list.items
                .into_iter()
                .find(|crd| matches(crd, resource))
                .ok_or_else(|| {
                    registration(
                        resource,
                        "the host has no CustomResourceDefinition of this group and kind; create it there or use crdSource: file",
                    )
                })
        }
    }
}

fn matches(crd: &CustomResourceDefinition, resource: &ResourceConfig) -> bool {
    crd.spec.group == resource.group
        && crd.spec.names.kind == resource.kind
        && resource
            .plural
            .as_ref()
            .is_none_or(|p| *p == crd.spec.names.plural)
}

/// The virtual copy of a CRD: name, labels, annotations and spec only.
pub fn desired_crd(source: &CustomResourceDefinition) -> CustomResourceDefinition {
    let keep = |m: &Option<std::collections::BTreeMap<String, String>>| {
        m.as_ref().map(|m| {
            m.iter()
                .filter(|(k, _)| !vcsync_translators::is_reserved_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        })
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: source.metadata.name.clone(),
            labels: keep(&source.metadata.labels),
            annotations: keep(&source.metadata.annotations)
                .map(|mut a| {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    a
                })
                .filter(|a| !a.is_empty()),
            ..ObjectMeta::default()
        },
        spec: source.spec.clone(),
        status: None,
    }
}

/// What `crd` serves for `resource`'s version.
pub fn served(crd: &CustomResourceDefinition, resource: &ResourceConfig) -> Option<Served> {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == resource.version && v.served)?;
    Some(Served {
        resource: ApiResource {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            api_version: format!("{}/{}", crd.spec.group, version.name),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        },
        namespaced: crd.spec.scope == "Namespaced",
        has_status: version.subresources.as_ref().is_some_and(|s| s.status.is_some()),
    })
}

/// Makes the CRD of `resource` available in the virtual cluster and waits until it is served.
pub async fn ensure_crd(ctx: &RegisterContext, resource: &ResourceConfig) -> Result<Served> {
    let source = source_crd(ctx, resource).await?;
    let desired = desired_crd(&source);
    let served = served(&desired, resource).ok_or_else(|| {
        registration(
            resource,
            format!("the CRD does not serve version {}", resource.version),
        )
    })?;
    let name = desired.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(ctx.clients().virtual_client().clone());
    let kind = "CustomResourceDefinition";
    let params = write_params();
    let existing = crds
        .get_opt(&name)
        .await
        .map_err(api_error(Side::Virtual, "get", kind, &name))?;
    match existing {
        None => {
            crds.create(&params, &desired)
                .await
                .map_err(api_error(Side::Virtual, "create", kind, &name))?;
            tracing::info!(crd = %name, "created the CRD in the virtual cluster");
        }
        Some(existing) => {
            let same_spec =
                serde_json::to_value(&existing.spec).ok() == serde_json::to_value(&desired.spec).ok();
            if !same_spec || !labels_and_annotations_match(&existing.metadata, &desired.metadata) {
                let mut update = desired.clone();
                update.metadata.resource_version = existing.metadata.resource_version.clone();
                crds.replace(&name, &params, &update).await.map_err(api_error(
                    Side::Virtual,
                    "update",
                    kind,
                    &name,
                ))?;
                tracing::info!(crd = %name, "updated the CRD in the virtual cluster");
            }
        }
    }
    let api: Api<DynamicObject> = Api::all_with(ctx.clients().virtual_client().clone(), &served.resource);
    let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(served),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(registration(
                    resource,
                    format!("the virtual cluster does not serve it: {err}"),
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;
    use crate::config::{Direction, ResourceConfig};

    fn host_crd() -> CustomResourceDefinition {
        serde_json::from_value(json!({
            "metadata": {"name": "widgets.example.com", "uid": "u", "resourceVersion": "5",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 2,
                "labels": {"team": "a", "vcsync.dev/managed-by": "other"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v2", "served": true, "storage": false},
                    {"name": "v0", "served": false, "storage": false}]},
            "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget"}, "storedVersions": ["v1"]}
        }))
        .unwrap()
    }

    fn resource(version: &str, plural: Option<&str>) -> ResourceConfig {
        ResourceConfig {
            group: "example.com".into(),
            version: version.into(),
            kind: "Widget".into(),
            plural: plural.map(str::to_string),
            direction: Direction::ToHost,
            crd_source: CrdSource::Host,
            crd_file: None,
            status_up: true,
            virtual_namespace: "default".into(),
            references: Vec::new(),
        }
    }

    #[test]
    fn the_virtual_copy_has_no_server_fields_or_status() {
        let copy = desired_crd(&host_crd());
        assert_eq!(copy.metadata.name.as_deref(), Some("widgets.example.com"));
        assert_eq!(copy.metadata.uid, None);
        assert_eq!(copy.metadata.resource_version, None);
        assert_eq!(copy.metadata.creation_timestamp, None);
        assert_eq!(copy.metadata.managed_fields, None);
        assert_eq!(copy.metadata.annotations, None);
        assert_eq!(
            copy.metadata.labels.unwrap().into_iter().collect::<Vec<_>>(),
            [("team".to_string(), "a".to_string())]
        );
        assert!(copy.status.is_none());
        assert_eq!(copy.spec, host_crd().spec);
    }

    #[rstest]
    #[case::status_version("v1", None, true, true)]
    #[case::plain_version("v2", Some("widgets"), true, false)]
    #[case::not_served("v0", None, false, false)]
    #[case::unknown("v9", None, false, false)]
    fn served_types(
        #[case] version: &str,
        #[case] plural: Option<&str>,
        #[case] found: bool,
        #[case] status: bool,
    ) {
        let served = served(&host_crd(), &resource(version, plural));
        assert_eq!(served.is_some(), found);
        if let Some(served) = served {
            assert_eq!(served.resource.api_version, format!("example.com/{version}"));
            assert_eq!(served.resource.plural, "widgets");
            assert!(served.namespaced);
            assert_eq!(served.has_status, status);
        }
    }

    #[rstest]
    #[case(None, true)]
    #[case(Some("widgets"), true)]
    #[case(Some("gadgets"), false)]
    fn a_configured_plural_must_match(#[case] plural: Option<&str>, #[case] expected: bool) {
        assert_eq!(matches(&host_crd(), &resource("v1", plural)), expected);
    }
}
