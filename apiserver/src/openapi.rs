//! Minimal OpenAPI v3 documents: exactly what kubectl needs to see that the server supports
//! server-side field validation (a PATCH operation per kind, tagged with
//! `x-kubernetes-group-version-kind`, accepting the `fieldValidation` query parameter).
//!
//! No schemas are served, so kubectl falls back to its built-in types to compute strategic merge
//! patches (apply, edit), and `kubectl explain` is not supported. `/openapi/v2` is not served;
//! kubectl tolerates that when v3 is present.

use serde_json::{Value, json};

use crate::resources::Registry;

/// A fixed hash: the documents only change with the code.
const HASH: &str = "vcsync-0";

/// `/openapi/v3`: the discovery document listing one path per group version.
pub(crate) fn root(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for def in registry.all() {
        let prefix = gv_path(&def.group, &def.version);
        paths.insert(
            prefix.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{prefix}?hash={HASH}") }),
        );
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub(crate) fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves(group, version) {
        return None;
    }
    let prefix = gv_path(group, version);
    let mut paths = serde_json::Map::new();
    for def in registry
        .all()
        .filter(|d| d.group == group && d.version == version)
    {
        let scope = if def.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let path = format!("/{prefix}/{scope}{}/{{name}}", def.plural);
        let gvk = json!({ "group": def.group, "version": def.version, "kind": def.kind });
        let parameters = json!([
            { "name": "name", "in": "path", "required": true, "schema": { "type": "string" } },
            { "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
            { "name": "fieldManager", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
            { "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
        ]);
        let operation = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", def.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": parameters,
                "responses": { "200": { "description": "OK" } },
            })
        };
        paths.insert(
            path,
            json!({ "get": operation("get"), "put": operation("put"), "patch": operation("patch") }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::MAJOR, crate::discovery::MINOR) },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_points_at_group_versions() {
        let registry = Registry::builtin();
        let root = root(&registry);
        assert_eq!(
            root["paths"]["api/v1"]["serverRelativeURL"],
            "/openapi/v3/api/v1?hash=vcsync-0"
        );
        let apps = group_version(&registry, "apps", "v1").unwrap();
        let path = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(
            path["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(group_version(&registry, "apps", "v9").is_none());
    }
}
