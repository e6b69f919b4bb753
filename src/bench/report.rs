//! The report of a scenario as a table.

use std::collections::BTreeMap;

use k8s_openapi::serde_json::Value;

/// The figures of `out` as a table, the syncer's requests (nested objects) last.
pub(super) fn to_table(out: &BTreeMap<String, Value>) -> String {
    let mut text = String::from("vcsync bench report\n");
    let width = out.keys().map(String::len).max().unwrap_or(0);
    let mut nested = Vec::new();
    for (key, value) in out {
        match value {
            Value::Object(map) => nested.push((key, map)),
            Value::String(s) => text.push_str(&format!("  {key:<width$}  {s}\n")),
            other => text.push_str(&format!("  {key:<width$}  {other}\n")),
        }
    }
    for (key, map) in nested {
        // The kubelet scenario counts the syncer's requests per request through it.
        let per = match map.values().next() {
            Some(v) if v.get("per_request").is_some() => "per_request",
            _ => "per_pod",
        };
        text.push_str(&format!(
            "  {key} (syncer only; cluster verb resource: count, {})\n",
            per.replace('_', " ")
        ));
        for (what, v) in map {
            text.push_str(&format!("    {what:<40} {:>8}  {:>8}\n", v["count"], v[per]));
        }
    }
    text
}
