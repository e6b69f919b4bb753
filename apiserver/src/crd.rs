//! CustomResourceDefinitions: a stored CRD makes its group/version/plural served, with the same
//! generic storage, list/watch, selectors, patches and (when declared) `status` subresource as
//! built-in kinds. The CRD itself is marked `Established` at once (there is no controller to
//! wait for). Not done: schema validation, pruning, defaulting, conversion, `scale`; deleting a
//! CRD stops serving its types but does not delete their objects.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

/// Group of CustomResourceDefinitions.
pub(crate) const GROUP: &str = "apiextensions.k8s.io";
/// Plural of CustomResourceDefinitions.
pub(crate) const PLURAL: &str = "customresourcedefinitions";

/// Whether `def` is the CustomResourceDefinition type itself.
pub(crate) fn is_crd(def: &ResourceDef) -> bool {
    def.group == GROUP && def.plural == PLURAL
}

/// The resource types a CRD defines: one per served version. Errors say what is invalid.
pub(crate) fn defs_of(crd: &Value) -> Result<Vec<ResourceDef>, String> {
    let spec = &crd["spec"];
    let text = |v: &Value, field: &str| -> Result<String, String> {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("{field}: Required value"))
    };
    let group = text(&spec["group"], "spec.group")?;
    let names = &spec["names"];
    let plural = text(&names["plural"], "spec.names.plural")?;
    let kind = text(&names["kind"], "spec.names.kind")?;
    let singular = names["singular"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map_or_else(|| kind.to_lowercase(), str::to_string);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => return Err("spec.scope: Unsupported value: must be Namespaced or Cluster".into()),
    };
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != format!("{plural}.{group}") {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"
        ));
    }
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    let mut defs = Vec::new();
    for version in versions {
        let name = text(&version["name"], "spec.versions[].name")?;
        if version["served"].as_bool() != Some(true) {
            continue;
        }
        let subresources = version["subresources"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(sub, _)| *sub == "status")
            .map(|(sub, _)| sub.clone())
            .collect();
        defs.push(ResourceDef {
            group: group.clone(),
            version: name,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            subresources,
            categories: strings(&names["categories"]),
            crd: None,
        });
    }
    Ok(defs)
}

/// Sets what the apiextensions controllers would: accepted names, `NamesAccepted` and
/// `Established` conditions, stored versions. Deterministic (the transition time is the
/// creation time), so rewriting an unchanged CRD stays a no-op.
pub(crate) fn accept(crd: &mut Value) {
    let since = crd["metadata"]["creationTimestamp"].clone();
    let mut names = crd["spec"]["names"].clone();
    if names["singular"].as_str().is_none_or(str::is_empty) {
        names["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "True", "lastTransitionTime": since,
            "reason": reason, "message": message})
    };
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    if !crd["status"].is_object() {
        crd["status"] = json!({});
    }
    let status = &mut crd["status"];
    status["acceptedNames"] = names;
    status["conditions"] = json!([
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted"
        ),
    ]);
    let mut stored = status["storedVersions"].as_array().cloned().unwrap_or_default();
    for version in storage {
        if !stored.contains(&version) {
            stored.push(version);
        }
    }
    status["storedVersions"] = json!(stored);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widgets() -> Value {
        json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v2", "served": false, "storage": false}]}})
    }

    #[test]
    fn served_versions_become_types() {
        let defs = defs_of(&widgets()).unwrap();
        assert_eq!(defs.len(), 1);
        let def = &defs[0];
        assert_eq!(
            (def.api_version(), def.kind.as_str(), def.singular.as_str()),
            ("example.com/v1".into(), "Widget", "widget")
        );
        assert!(def.namespaced && def.has_status());
        assert_eq!(def.short_names, ["wd"]);
    }

    #[test]
    fn name_must_be_plural_dot_group() {
        let mut crd = widgets();
        crd["metadata"]["name"] = json!("widgets");
        assert!(defs_of(&crd).unwrap_err().starts_with("metadata.name"));
    }

    #[test]
    fn accept_is_deterministic() {
        let mut once = widgets();
        accept(&mut once);
        let mut twice = once.clone();
        accept(&mut twice);
        assert_eq!(once, twice);
        assert_eq!(once["status"]["conditions"][1]["type"], "Established");
        assert_eq!(once["status"]["acceptedNames"]["singular"], "widget");
        assert_eq!(once["status"]["storedVersions"], json!(["v1"]));
    }
}
