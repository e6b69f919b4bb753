//! Server-side printing: `meta.k8s.io/v1` Table responses, which kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns are NAME, a few per-kind
//! columns for the common kinds, and AGE.

use serde_json::{Value, json};

use crate::resources::ResourceDef;

type Cell = fn(&Value) -> Value;

/// Extra (name, type, cell) columns between NAME and AGE.
fn columns(def: &ResourceDef) -> Vec<(&'static str, &'static str, Cell)> {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => vec![
            ("Ready", "string", |o| {
                let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                let ready = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
                json!(format!("{ready}/{total}"))
            }),
            ("Status", "string", |o| {
                if o["metadata"]["deletionTimestamp"].is_null() {
                    o["status"]["phase"].clone()
                } else {
                    json!("Terminating")
                }
            }),
            ("Restarts", "integer", |o| {
                let restarts: i64 = o["status"]["containerStatuses"]
                    .as_array()
                    .map_or(0, |s| s.iter().filter_map(|c| c["restartCount"].as_i64()).sum());
                json!(restarts)
            }),
        ],
        ("", "ConfigMap") | ("", "Secret") => vec![("Data", "integer", |o| {
            let count = |k: &str| o[k].as_object().map_or(0, |m| m.len());
            json!(count("data") + count("binaryData"))
        })],
        ("", "Node") => vec![
            ("Status", "string", |o| {
                let ready = o["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                json!(if ready { "Ready" } else { "NotReady" })
            }),
            ("Version", "string", |o| {
                o["status"]["nodeInfo"]["kubeletVersion"].clone()
            }),
        ],
        ("", "Namespace") | ("", "PersistentVolumeClaim") => {
            vec![("Status", "string", |o| o["status"]["phase"].clone())]
        }
        ("", "Service") => vec![
            ("Type", "string", |o| o["spec"]["type"].clone()),
            ("Cluster-IP", "string", |o| o["spec"]["clusterIP"].clone()),
            ("External-IP", "string", |o| {
                let ingress: Vec<&str> = o["status"]["loadBalancer"]["ingress"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                    .chain(
                        o["spec"]["externalIPs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    )
                    .collect();
                json!(match (ingress.is_empty(), o["spec"]["type"].as_str()) {
                    (false, _) => ingress.join(","),
                    (true, Some("LoadBalancer")) => "<pending>".to_string(),
                    (true, _) => "<none>".to_string(),
                })
            }),
            ("Port(s)", "string", |o| {
                let ports: Vec<String> = o["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let protocol = p["protocol"].as_str().unwrap_or("TCP");
                        match p["nodePort"].as_i64() {
                            Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                            None => format!("{}/{protocol}", p["port"]),
                        }
                    })
                    .collect();
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                })
            }),
        ],
        ("", "Endpoints") => vec![("Endpoints", "string", |o| {
            let endpoints: Vec<String> = o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|subset| {
                    let ports: Vec<i64> = subset["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["port"].as_i64())
                        .collect();
                    let ips: Vec<&str> = subset["addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a["ip"].as_str())
                        .collect();
                    ips.into_iter().flat_map(move |ip| {
                        let ports = if ports.is_empty() {
                            vec![None]
                        } else {
                            ports.iter().map(|p| Some(*p)).collect()
                        };
                        ports.into_iter().map(move |p| match p {
                            Some(p) => format!("{ip}:{p}"),
                            None => ip.to_string(),
                        })
                    })
                })
                .collect();
            json!(match endpoints.len() {
                0 => "<none>".to_string(),
                n if n > 3 => format!("{} + {} more...", endpoints[..3].join(","), n - 3),
                _ => endpoints.join(","),
            })
        })],
        ("apps", "Deployment") => vec![
            ("Ready", "string", |o| {
                let ready = o["status"]["readyReplicas"].as_i64().unwrap_or(0);
                json!(format!("{ready}/{}", o["spec"]["replicas"].as_i64().unwrap_or(0)))
            }),
            ("Up-to-date", "integer", |o| {
                json!(o["status"]["updatedReplicas"].as_i64().unwrap_or(0))
            }),
            ("Available", "integer", |o| {
                json!(o["status"]["availableReplicas"].as_i64().unwrap_or(0))
            }),
        ],
        _ => Vec::new(),
    }
}

/// A Table of `objects`. `with_columns` is false for watch events after the first, as the real
/// server sends column definitions once per watch.
pub(crate) fn render(def: &ResourceDef, objects: &[&Value], metadata: Value, with_columns: bool) -> Value {
    let extra = columns(def);
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            cells.extend(extra.iter().map(|(_, _, cell)| cell(object)));
            cells.push(json!(age(now, &object["metadata"]["creationTimestamp"])));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    let mut table =
        json!({ "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "rows": rows });
    if with_columns {
        let mut definitions = vec![
            json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
            "description": "Name must be unique within a namespace."}),
        ];
        definitions.extend(extra.iter().map(|(name, kind, _)| {
            json!({"name": name, "type": kind, "format": "", "priority": 0, "description": ""})
        }));
        definitions.push(json!({"name": "Age", "type": "string", "format": "", "priority": 0,
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}));
        table["columnDefinitions"] = json!(definitions);
    }
    table
}

/// kubectl-style short age: 45s, 3m, 5h, 2d.
fn age(now: jiff::Timestamp, created: &Value) -> String {
    let Some(created) = created.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".to_string();
    };
    let seconds = now.as_second().saturating_sub(created.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 2 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn renders_rows_with_per_kind_columns() {
        let registry = Registry::builtin();
        let def = registry.find("", "v1", "configmaps").unwrap();
        let cm = json!({"metadata": {"name": "x", "creationTimestamp": "2020-01-01T00:00:00Z"}, "data": {"a": "1"}});
        let table = render(&def, &[&cm], json!({}), true);
        assert_eq!(table["columnDefinitions"].as_array().unwrap().len(), 3);
        assert_eq!(table["rows"][0]["cells"][0], "x");
        assert_eq!(table["rows"][0]["cells"][1], 1);
        assert!(table["rows"][0]["cells"][2].as_str().unwrap().ends_with('d'));
    }

    #[test]
    fn service_and_endpoints_columns() {
        let registry = Registry::builtin();
        let services = registry.find("", "v1", "services").unwrap();
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.5",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}, "status": {"loadBalancer": {}}});
        let cells = &render(&services, &[&lb], json!({}), false)["rows"][0]["cells"];
        assert_eq!(cells[3], "<pending>");
        assert_eq!(cells[4], "80:30080/TCP");
        let endpoints = registry.find("", "v1", "endpoints").unwrap();
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"},
            {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 81}]}]});
        let cells = &render(&endpoints, &[&ep], json!({}), false)["rows"][0]["cells"];
        assert_eq!(cells[1], "10.0.0.1:80,10.0.0.1:81,10.0.0.2:80 + 1 more...");
    }
}
