//! Kubelet API requests for a pod of the virtual cluster, translated into requests for the host
//! API server's pod subresources.
//!
//! A virtual API server serves `kubectl logs`, `exec`, `attach` and `port-forward` by calling the
//! kubelet of the pod's node: `GET /containerLogs/{namespace}/{pod}/{container}`,
//! `/exec/{namespace}/{pod}[/{uid}]/{container}`, `/attach/...` and
//! `/portForward/{namespace}/{pod}[/{uid}]`, with the options as query parameters (kube-apiserver's
//! `LogLocation` and `streamParams`: `input`, `output`, `error`, `tty`, `command`, `port`). The
//! nodes of a virtual cluster are vcsync's fake nodes, so vcsync answers those calls; it does so
//! through the host API server's `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` of
//! the pod's host twin (namespaced rights only, never the host kubelet). This module is the pure
//! part: which request it is, for which virtual pod, and the host path and query it becomes.

use crate::keys::{HostKey, VirtualKey};

/// What a kubelet request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletVerb {
    /// `pods/log` of one container.
    ContainerLogs { container: String },
    /// `pods/exec` in one container.
    Exec { container: String },
    /// `pods/attach` to one container.
    Attach { container: String },
    /// `pods/portforward`.
    PortForward,
}

impl KubeletVerb {
    /// The host pod subresource the request goes to.
    pub fn subresource(&self) -> &'static str {
        match self {
            KubeletVerb::ContainerLogs { .. } => "log",
            KubeletVerb::Exec { .. } => "exec",
            KubeletVerb::Attach { .. } => "attach",
            KubeletVerb::PortForward => "portforward",
        }
    }

    /// Whether the request upgrades to a stream (SPDY or WebSocket) rather than a plain GET.
    pub fn streams(&self) -> bool {
        !matches!(self, KubeletVerb::ContainerLogs { .. })
    }
}

/// A kubelet request about one pod of the virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRequest {
    pub verb: KubeletVerb,
    /// The virtual pod.
    pub pod: VirtualKey,
    /// The pod UID the caller named (exec, attach and port-forward may carry it).
    pub uid: Option<String>,
    /// The options, as `(name, value)` pairs in the kubelet's terms, decoded.
    pub query: Vec<(String, String)>,
}

/// Why a path is no kubelet pod request vcsync serves.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KubeletPathError {
    /// Not a path the kubelet serves for pods (or one vcsync does not).
    #[error("no such kubelet endpoint: {0}")]
    NotFound(String),
    /// A known endpoint with the wrong number of segments, or an empty one.
    #[error("malformed kubelet path: {0}")]
    Malformed(String),
}

/// Reads a kubelet request from its path (without the query) and its raw query string.
pub fn parse_pod_request(path: &str, query: &str) -> Result<PodRequest, KubeletPathError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let malformed = || KubeletPathError::Malformed(path.to_string());
    if segments.iter().any(|s| s.is_empty()) {
        return Err(malformed());
    }
    let pod = |ns: &str, name: &str| VirtualKey::namespaced(ns, name);
    let (verb, pod, uid) = match segments.as_slice() {
        ["containerLogs", ns, name, container] => (
            KubeletVerb::ContainerLogs {
                container: container.to_string(),
            },
            pod(ns, name),
            None,
        ),
        [stream @ ("exec" | "attach"), ns, name, rest @ ..] => {
            let (uid, container) = match rest {
                [container] => (None, container),
                [uid, container] => (Some(uid.to_string()), container),
                _ => return Err(malformed()),
            };
            let container = container.to_string();
            let verb = match *stream {
                "exec" => KubeletVerb::Exec { container },
                _ => KubeletVerb::Attach { container },
            };
            (verb, pod(ns, name), uid)
        }
        ["portForward", ns, name, rest @ ..] => {
            let uid = match rest {
                [] => None,
                [uid] => Some(uid.to_string()),
                _ => return Err(malformed()),
            };
            (KubeletVerb::PortForward, pod(ns, name), uid)
        }
        ["containerLogs" | "exec" | "attach" | "portForward", ..] => return Err(malformed()),
        _ => return Err(KubeletPathError::NotFound(path.to_string())),
    };
    let query = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Ok(PodRequest {
        verb,
        pod,
        uid,
        query,
    })
}

/// Log options the kubelet and `pods/log` share, by the same names.
const LOG_OPTIONS: [&str; 8] = [
    "follow",
    "previous",
    "timestamps",
    "sinceSeconds",
    "sinceTime",
    "tailLines",
    "limitBytes",
    "stream",
];

/// A kubelet flag is on when present with a true value (`1`, `true`; kube-apiserver sends `1`).
fn on(value: &str) -> bool {
    matches!(value, "1" | "true" | "True" | "TRUE")
}

impl PodRequest {
    /// The host API path and query of this request for host pod `host`: the pod subresource,
    /// with the container and the options in the API's terms (`stdin`, `stdout`, `stderr`,
    /// `tty`, `command`, `ports`). Options neither side knows are dropped.
    pub fn host_path_and_query(&self, host: &HostKey) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let flag = |name: &str| self.query.iter().any(|(k, v)| k == name && on(v));
        match &self.verb {
            KubeletVerb::ContainerLogs { container } => {
                out.append_pair("container", container);
                for (k, v) in self
                    .query
                    .iter()
                    .filter(|(k, _)| LOG_OPTIONS.contains(&k.as_str()))
                {
                    out.append_pair(k, v);
                }
            }
            KubeletVerb::Exec { container } | KubeletVerb::Attach { container } => {
                out.append_pair("container", container);
                for (kubelet, api) in [
                    ("input", "stdin"),
                    ("output", "stdout"),
                    ("error", "stderr"),
                    ("tty", "tty"),
                ] {
                    if flag(kubelet) {
                        out.append_pair(api, "true");
                    }
                }
                if matches!(self.verb, KubeletVerb::Exec { .. }) {
                    for (_, command) in self.query.iter().filter(|(k, _)| k == "command") {
                        out.append_pair("command", command);
                    }
                }
            }
            KubeletVerb::PortForward => {
                let ports = self.query.iter().filter(|(k, _)| k == "port");
                for port in ports.flat_map(|(_, v)| v.split(',')).filter(|p| !p.is_empty()) {
                    out.append_pair("ports", port);
                }
            }
        }
        let query = out.finish();
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}/{}",
            host.namespace.as_deref().unwrap_or_default(),
            host.name,
            self.verb.subresource()
        );
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostKey {
        HostKey::namespaced("vcsync-host", "web-x-default")
    }

    #[test]
    fn logs_keep_their_options_and_name_the_container() {
        let request = parse_pod_request(
            "/containerLogs/default/web/nginx",
            "follow=true&tailLines=10&sinceTime=2030-01-01T00%3A00%3A00Z&bogus=1",
        )
        .unwrap();
        assert_eq!(request.pod, VirtualKey::namespaced("default", "web"));
        assert!(!request.verb.streams());
        assert_eq!(
            request.host_path_and_query(&host()),
            "/api/v1/namespaces/vcsync-host/pods/web-x-default/log?container=nginx&follow=true\
             &tailLines=10&sinceTime=2030-01-01T00%3A00%3A00Z"
        );
    }

    #[test]
    fn exec_turns_the_kubelets_stream_flags_into_the_apis_and_keeps_the_command_in_order() {
        let request = parse_pod_request(
            "/exec/default/web/nginx",
            "command=sh&command=-c&command=echo+a%26b&input=1&output=1&tty=1",
        )
        .unwrap();
        assert!(request.verb.streams());
        assert_eq!(
            request.host_path_and_query(&host()),
            "/api/v1/namespaces/vcsync-host/pods/web-x-default/exec?container=nginx&stdin=true\
             &stdout=true&tty=true&command=sh&command=-c&command=echo+a%26b"
        );
    }

    #[test]
    fn attach_and_port_forward_may_name_the_pod_uid() {
        let attach =
            parse_pod_request("/attach/default/web/0f1e/nginx", "output=1&error=1&command=x").unwrap();
        assert_eq!(attach.uid.as_deref(), Some("0f1e"));
        assert_eq!(
            attach.host_path_and_query(&host()),
            "/api/v1/namespaces/vcsync-host/pods/web-x-default/attach?container=nginx&stdout=true\
             &stderr=true",
            "attach runs no command"
        );
        let forward = parse_pod_request("/portForward/default/web", "port=80,8080").unwrap();
        assert_eq!(forward.uid, None);
        assert_eq!(
            forward.host_path_and_query(&host()),
            "/api/v1/namespaces/vcsync-host/pods/web-x-default/portforward?ports=80&ports=8080"
        );
        let with_uid = parse_pod_request("/portForward/default/web/0f1e", "").unwrap();
        assert_eq!(with_uid.uid.as_deref(), Some("0f1e"));
        assert_eq!(
            with_uid.host_path_and_query(&host()),
            "/api/v1/namespaces/vcsync-host/pods/web-x-default/portforward"
        );
    }

    #[test]
    fn other_paths_are_not_found_and_broken_ones_malformed() {
        for path in ["/pods", "/stats/summary", "/configz", "/run/default/web/nginx"] {
            assert!(
                matches!(parse_pod_request(path, ""), Err(KubeletPathError::NotFound(_))),
                "{path}"
            );
        }
        for path in [
            "/containerLogs/default/web",
            "/containerLogs/default/web/nginx/extra",
            "/exec/default/web",
            "/exec/default/web/a/b/c",
            "/portForward/default",
            "/exec/default//nginx",
        ] {
            assert!(
                matches!(parse_pod_request(path, ""), Err(KubeletPathError::Malformed(_))),
                "{path}"
            );
        }
    }
}
