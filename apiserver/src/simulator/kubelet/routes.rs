//! The kubelet paths served, their query options, and the pods they may name: a pod must exist
//! and be bound to the node (the store says so: nothing is copied per pod), and a container
//! must be one of the pod's. Errors are plain text with a kubelet's status and wording.

use http::{Method, StatusCode};
use serde_json::Value;

use super::process::{Action, StreamOptions};

/// A request the kubelet serves. The pod UID segment of exec, attach and portForward is
/// optional, as on a kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Healthz,
    /// `/stats/summary`: the node's and its running pods' usage (stats/v1alpha1 `Summary`).
    StatsSummary,
    /// `/metrics/resource`: the same figures as Prometheus text.
    ResourceMetrics,
    /// `/runningpods/`: the running pods as the container runtime sees them.
    RunningPods,
    Logs {
        namespace: String,
        pod: String,
        container: String,
    },
    Exec {
        namespace: String,
        pod: String,
        uid: Option<String>,
        container: String,
    },
    Attach {
        namespace: String,
        pod: String,
        uid: Option<String>,
        container: String,
    },
    PortForward {
        namespace: String,
        pod: String,
        uid: Option<String>,
    },
}

/// An error response: status and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// For a failed SPDY negotiation: the versions the server accepts.
    pub(crate) accepted_versions: &'static [&'static str],
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal {
            status,
            message: message.into(),
            accepted_versions: &[],
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Refusal::new(StatusCode::NOT_FOUND, message)
    }
}

/// The route of `method` on `path` (a 404 or 405 as Go's ServeMux answers otherwise).
pub(crate) fn route(method: &Method, path: &str) -> Result<Route, Refusal> {
    let segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let streaming = matches!(*method, Method::GET | Method::POST);
    let reading = matches!(*method, Method::GET | Method::HEAD);
    let named = |names: &[&str]| names.iter().all(|n| !n.is_empty());
    let (route, allowed) = match parts.as_slice() {
        ["healthz"] => (Route::Healthz, reading),
        ["stats", "summary"] => (Route::StatsSummary, reading),
        ["metrics", "resource"] => (Route::ResourceMetrics, reading),
        ["runningpods", ""] => (Route::RunningPods, reading),
        ["containerLogs", ns, pod, container] if named(&[ns, pod, container]) => (
            Route::Logs {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                container: container.to_string(),
            },
            reading,
        ),
        [kind @ ("exec" | "attach"), ns, pod, rest @ ..]
            if matches!(rest.len(), 1 | 2) && named(rest) && named(&[ns, pod]) =>
        {
            let (uid, container) = match rest {
                [container] => (None, container.to_string()),
                [uid, container] => (Some(uid.to_string()), container.to_string()),
                _ => unreachable!("one or two segments"),
            };
            let (namespace, pod) = (ns.to_string(), pod.to_string());
            let route = if *kind == "exec" {
                Route::Exec {
                    namespace,
                    pod,
                    uid,
                    container,
                }
            } else {
                Route::Attach {
                    namespace,
                    pod,
                    uid,
                    container,
                }
            };
            (route, streaming)
        }
        ["portForward", ns, pod, rest @ ..] if rest.len() <= 1 && named(rest) && named(&[ns, pod]) => (
            Route::PortForward {
                namespace: ns.to_string(),
                pod: pod.to_string(),
                uid: rest.first().map(|u| u.to_string()),
            },
            streaming,
        ),
        _ => return Err(Refusal::not_found("404 page not found\n")),
    };
    if !allowed {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed\n",
        ));
    }
    Ok(route)
}

/// `%XX` escapes of a path segment decoded (an invalid escape stays as it is).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's pairs, decoded.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

/// Exec's and attach's stream options (`input`, `output`, `error`, `tty`: "1" is on).
pub(crate) fn stream_options(query: &[(String, String)]) -> Result<StreamOptions, Refusal> {
    let on = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, v)| v == "1")
    };
    let tty = on("tty");
    let options = StreamOptions {
        stdin: on("input"),
        stdout: on("output"),
        // No stderr with a terminal: its output shows on stdout.
        stderr: on("error") && !tty,
        tty,
    };
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    Ok(options)
}

/// Exec's `command` parameters.
pub(crate) fn exec_action(query: &[(String, String)]) -> Result<Action, Refusal> {
    let command: Vec<String> = query
        .iter()
        .filter(|(n, _)| n == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "no command given"));
    }
    Ok(Action::Exec(command))
}

/// What a request is checked against: which route asked (for the wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asking {
    Logs,
    Exec,
    PortForward,
}

/// Whether `pod` (as stored, if at all) runs on `node` with `uid` (when the path names one).
pub(crate) fn check_pod(
    pod: Option<&Value>,
    name: &str,
    node: &str,
    uid: Option<&str>,
    asking: Asking,
) -> Result<(), Refusal> {
    let bound = pod.filter(|p| p["spec"]["nodeName"].as_str() == Some(node));
    let Some(pod) = bound else {
        return Err(Refusal::not_found(match asking {
            Asking::Logs => format!("pod {name:?} does not exist"),
            Asking::Exec | Asking::PortForward => "pod does not exist".to_string(),
        }));
    };
    if uid.is_some_and(|uid| pod["metadata"]["uid"].as_str() != Some(uid)) {
        return Err(Refusal::not_found("pod not found"));
    }
    Ok(())
}

/// Whether the pod has `container` (a container, init container or ephemeral container).
pub(crate) fn check_container(
    pod: &Value,
    name: &str,
    container: &str,
    asking: Asking,
) -> Result<(), Refusal> {
    let found = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .any(|list| {
            pod["spec"][list]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some(container)))
        });
    if found {
        return Ok(());
    }
    Err(Refusal::not_found(match asking {
        Asking::Logs => format!("container {container:?} not found in pod {name:?}"),
        Asking::Exec | Asking::PortForward => format!("container not found ({container:?})"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kubelet_paths_route() {
        assert_eq!(route(&Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(route(&Method::GET, "/stats/summary"), Ok(Route::StatsSummary));
        assert_eq!(
            route(&Method::GET, "/metrics/resource"),
            Ok(Route::ResourceMetrics)
        );
        assert_eq!(route(&Method::GET, "/runningpods/"), Ok(Route::RunningPods));
        assert_eq!(
            route(&Method::POST, "/stats/summary").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::GET, "/containerLogs/ns/p%2Dx/c"),
            Ok(Route::Logs {
                namespace: "ns".into(),
                pod: "p-x".into(),
                container: "c".into()
            })
        );
        assert_eq!(
            route(&Method::POST, "/exec/ns/p/uid-1/c"),
            Ok(Route::Exec {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: Some("uid-1".into()),
                container: "c".into()
            })
        );
        assert_eq!(
            route(&Method::GET, "/attach/ns/p/c"),
            Ok(Route::Attach {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: None,
                container: "c".into()
            })
        );
        assert_eq!(
            route(&Method::POST, "/portForward/ns/p"),
            Ok(Route::PortForward {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: None
            })
        );
        for missing in [
            "/",
            "/exec/ns/p",
            "/exec/ns/p/a/b/c",
            "/containerLogs/ns/p",
            "/containerLogs/ns//c",
            "/runningpods",
            "/stats/summary/x",
        ] {
            assert_eq!(
                route(&Method::GET, missing).unwrap_err().status,
                StatusCode::NOT_FOUND,
                "{missing}"
            );
        }
        assert_eq!(
            route(&Method::POST, "/healthz").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route(&Method::PUT, "/exec/ns/p/c").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn stream_options_follow_the_kubelets() {
        let query = pairs(&[("input", "1"), ("output", "1"), ("error", "1"), ("tty", "1")]);
        assert_eq!(
            stream_options(&query),
            Ok(StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            })
        );
        assert_eq!(
            stream_options(&pairs(&[("output", "true"), ("tty", "1")]))
                .unwrap_err()
                .message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        let query = query_pairs(Some("command=sh&command=-c&command=echo%20a%3Bb&output=1"));
        assert_eq!(
            exec_action(&query),
            Ok(Action::Exec(vec!["sh".into(), "-c".into(), "echo a;b".into()]))
        );
        assert_eq!(exec_action(&[]).unwrap_err().message, "no command given");
    }

    #[test]
    fn pods_must_be_bound_here_and_have_the_container() {
        let pod = json!({"metadata": {"uid": "u1"}, "spec": {"nodeName": "n1",
            "containers": [{"name": "app"}], "initContainers": [{"name": "init"}]}});
        assert_eq!(check_pod(Some(&pod), "p", "n1", None, Asking::Exec), Ok(()));
        assert_eq!(
            check_pod(Some(&pod), "p", "n1", Some("u1"), Asking::PortForward),
            Ok(())
        );
        assert_eq!(
            check_pod(Some(&pod), "p", "n1", Some("u2"), Asking::PortForward)
                .unwrap_err()
                .message,
            "pod not found"
        );
        assert_eq!(
            check_pod(Some(&pod), "p", "n2", None, Asking::Logs).unwrap_err(),
            Refusal::not_found("pod \"p\" does not exist")
        );
        assert_eq!(
            check_pod(None, "p", "n1", None, Asking::Exec)
                .unwrap_err()
                .message,
            "pod does not exist"
        );
        assert_eq!(check_container(&pod, "p", "init", Asking::Logs), Ok(()));
        assert_eq!(
            check_container(&pod, "p", "db", Asking::Logs)
                .unwrap_err()
                .message,
            "container \"db\" not found in pod \"p\""
        );
        assert_eq!(
            check_container(&pod, "p", "db", Asking::Exec)
                .unwrap_err()
                .message,
            "container not found (\"db\")"
        );
    }
}
