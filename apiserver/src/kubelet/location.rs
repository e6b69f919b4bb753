//! Where kube-apiserver sends `pods/log`, `exec`, `attach` and `portforward`: the kubelet of the
//! pod's node, at a path and query of the kubelet API (pure: a pod, its node and the request's
//! options in, a location or the API error kube-apiserver gives out).

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The subresources served through a kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodStream {
    Log,
    Exec,
    Attach,
    PortForward,
}

impl PodStream {
    /// The subresource of this name, if it is one.
    pub fn of(sub: &str) -> Option<Self> {
        match sub {
            "log" => Some(Self::Log),
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }

    /// Whether the request upgrades its connection (all but logs).
    pub fn upgrades(self) -> bool {
        self != Self::Log
    }
}

/// A kubelet request: where to connect and what to ask. `host` None: the pod has no node, and
/// its log is empty (kube-apiserver answers such a log request with nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletLocation {
    pub host: Option<(String, u16)>,
    pub path_and_query: String,
}

/// The node address kinds kube-apiserver tries, in its default order
/// (`--kubelet-preferred-address-types`).
const PREFERRED_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// The kubelet port when a node names none (`--kubelet-port`).
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// The pairs of a raw query string.
fn pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn flag(query: &[(String, String)], name: &str) -> bool {
    query
        .iter()
        .any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

fn first<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Every container name of `pod`: its containers, init containers and ephemeral containers.
fn container_names(pod: &Value) -> Vec<&str> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| pod["spec"][field].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container a request means: the one named, or the pod's only container.
fn container(pod: &Value, named: Option<&str>) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    match named.filter(|n| !n.is_empty()) {
        Some(named) if container_names(pod).contains(&named) => Ok(named.to_string()),
        Some(named) => Err(ApiError::bad_request(format!(
            "container {named} is not valid for pod {name}"
        ))),
        None => match pod["spec"]["containers"].as_array().map(Vec::as_slice) {
            Some([only]) => Ok(only["name"].as_str().unwrap_or_default().to_string()),
            None | Some([]) => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            Some(_) => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                container_names(pod).join(" ")
            ))),
        },
    }
}

/// The kubelet address and port of `node`, as kube-apiserver picks them.
pub fn node_connection(node: &Value) -> ApiResult<(String, u16)> {
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = PREFERRED_ADDRESS_TYPES.iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a["type"].as_str() == Some(kind))
            .and_then(|a| a["address"].as_str())
            .filter(|a| !a.is_empty())
    });
    let address = address.ok_or_else(|| {
        ApiError::internal(format!(
            "no preferred addresses found; known addresses: {}",
            Value::Array(addresses.clone())
        ))
    })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((address.to_string(), port))
}

/// The kubelet location of `stream` for `pod` (on `node`, None when unbound) with the API
/// request's raw `query`.
pub fn locate(
    stream: PodStream,
    pod: &Value,
    node: Option<&Value>,
    query: &str,
) -> ApiResult<KubeletLocation> {
    let query = pairs(query);
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let mut params = form_urlencoded::Serializer::new(String::new());
    let path = match stream {
        PodStream::Log => {
            let container = container(pod, first(&query, "container"))?;
            for option in ["follow", "previous", "timestamps"] {
                if flag(&query, option) {
                    params.append_pair(option, "true");
                }
            }
            for option in ["sinceSeconds", "sinceTime", "tailLines", "limitBytes", "stream"] {
                if let Some(value) = first(&query, option) {
                    params.append_pair(option, value);
                }
            }
            format!("/containerLogs/{namespace}/{name}/{container}")
        }
        PodStream::Exec | PodStream::Attach => {
            let container = container(pod, first(&query, "container"))?;
            let streams = [("stdin", "input"), ("stdout", "output"), ("stderr", "error")];
            if !streams.iter().any(|(api, _)| flag(&query, api)) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr".to_string(),
                ));
            }
            for (api, kubelet) in streams.into_iter().chain([("tty", "tty")]) {
                if flag(&query, api) {
                    params.append_pair(kubelet, "1");
                }
            }
            let verb = if stream == PodStream::Exec {
                "exec"
            } else {
                "attach"
            };
            if stream == PodStream::Exec {
                let commands: Vec<&str> = query
                    .iter()
                    .filter(|(k, _)| k == "command")
                    .map(|(_, v)| v.as_str())
                    .collect();
                if commands.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container".to_string(),
                    ));
                }
                for command in commands {
                    params.append_pair("command", command);
                }
            }
            format!("/{verb}/{namespace}/{name}/{container}")
        }
        PodStream::PortForward => {
            let ports: Vec<&str> = query
                .iter()
                .filter(|(k, _)| k == "ports")
                .map(|(_, v)| v.as_str())
                .collect();
            if !ports.is_empty() {
                params.append_pair("port", &ports.join(","));
            }
            format!("/portForward/{namespace}/{name}")
        }
    };
    let host = match node {
        Some(node) => Some(node_connection(node)?),
        None if stream == PodStream::Log => None,
        None => {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
    };
    let params = params.finish();
    let path_and_query = if params.is_empty() {
        path
    } else {
        format!("{path}?{params}")
    };
    Ok(KubeletLocation { host, path_and_query })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(containers: &[&str]) -> Value {
        let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
        json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"nodeName": "n1", "containers": containers, "initContainers": [{"name": "init"}]}})
    }

    fn node() -> Value {
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.1.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 41000}}}})
    }

    #[test]
    fn logs_name_the_only_container_and_pass_their_options() {
        let location = locate(
            PodStream::Log,
            &pod(&["app"]),
            Some(&node()),
            "follow=true&tailLines=3&x=y",
        )
        .unwrap();
        assert_eq!(location.host, Some(("127.0.1.1".to_string(), 41000)));
        assert_eq!(
            location.path_and_query,
            "/containerLogs/shop/web/app?follow=true&tailLines=3"
        );
    }

    #[test]
    fn a_container_must_be_chosen_and_must_exist() {
        let err = locate(PodStream::Log, &pod(&["a", "b"]), Some(&node()), "").unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod web, choose one of: [a b init]"
        );
        let err = locate(
            PodStream::Exec,
            &pod(&["a"]),
            Some(&node()),
            "container=z&command=ls&stdout=true",
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (400, "container z is not valid for pod web")
        );
        assert!(locate(PodStream::Log, &pod(&["a", "b"]), Some(&node()), "container=init").is_ok());
    }

    #[test]
    fn exec_options_become_the_kubelets_and_need_a_stream_and_a_command() {
        let location = locate(
            PodStream::Exec,
            &pod(&["app"]),
            Some(&node()),
            "command=sh&command=-c&command=exit+3&stdin=true&stdout=true&tty=true",
        )
        .unwrap();
        assert_eq!(
            location.path_and_query,
            "/exec/shop/web/app?input=1&output=1&tty=1&command=sh&command=-c&command=exit+3"
        );
        let err = locate(PodStream::Exec, &pod(&["app"]), Some(&node()), "command=ls").unwrap_err();
        assert!(
            err.message.contains("at least 1 of stdin, stdout, stderr"),
            "{}",
            err.message
        );
        let err = locate(PodStream::Exec, &pod(&["app"]), Some(&node()), "stdout=true").unwrap_err();
        assert!(err.message.contains("at least one command"), "{}", err.message);
        let attach = locate(
            PodStream::Attach,
            &pod(&["app"]),
            Some(&node()),
            "stdin=1&stdout=1",
        )
        .unwrap();
        assert_eq!(attach.path_and_query, "/attach/shop/web/app?input=1&output=1");
    }

    #[test]
    fn port_forward_joins_its_ports_and_unbound_pods_have_no_kubelet() {
        let location = locate(
            PodStream::PortForward,
            &pod(&["app"]),
            Some(&node()),
            "ports=80&ports=443",
        )
        .unwrap();
        assert_eq!(location.path_and_query, "/portForward/shop/web?port=80%2C443");
        let err = locate(PodStream::PortForward, &pod(&["app"]), None, "").unwrap_err();
        assert_eq!(err.message, "pod web does not have a host assigned");
        let log = locate(PodStream::Log, &pod(&["app"]), None, "").unwrap();
        assert_eq!(log.host, None, "an unbound pod's log is empty, not an error");
    }

    #[test]
    fn the_node_address_is_picked_as_kube_apiserver_does() {
        let node = json!({"status": {"addresses": [
            {"type": "ExternalIP", "address": "203.0.113.1"},
            {"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(node_connection(&node).unwrap(), ("10.0.0.1".to_string(), 10250));
        let bare = json!({"status": {}});
        assert!(
            node_connection(&bare)
                .unwrap_err()
                .message
                .starts_with("no preferred addresses found")
        );
    }
}
