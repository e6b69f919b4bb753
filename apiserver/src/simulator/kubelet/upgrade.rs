//! Which streaming protocol an upgrade request gets, decided from its headers alone, and the
//! `101 Switching Protocols` that says so: a WebSocket with a channel subprotocol (or the
//! SPDY tunnel for port forwarding), else SPDY/3.1 with `X-Stream-Protocol-Version` — as a
//! kubelet negotiates: the client's first protocol the server supports wins.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::routes::Refusal;

/// What is being upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// exec and attach
    RemoteCommand,
    PortForward,
}

/// The SPDY stream protocol versions of exec and attach, preferred first.
pub(crate) const REMOTE_COMMAND_VERSIONS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The SPDY stream protocol of port forwarding.
pub(crate) const PORT_FORWARD_VERSION: &str = "portforward.k8s.io";
/// WebSocket subprotocols of exec and attach.
pub(crate) const CHANNEL_SUBPROTOCOLS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// The WebSocket subprotocol that carries a port-forwarding SPDY connection.
pub(crate) const PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// WebSocket subprotocols of port forwarding: the SPDY tunnel (kubectl), and the binary and
/// base64 channel framings a kubelet serves too (kube-rs asks for v5 first, which a kubelet's
/// port forwarding does not speak, then v4).
pub(crate) const PORT_FORWARD_SUBPROTOCOLS: [&str; 3] = [
    PORT_FORWARD_TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
];

/// The negotiated upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// A WebSocket; `protocol` is `None` when the client named none (channel.k8s.io then).
    WebSocket {
        protocol: Option<String>,
        accept: String,
    },
    Spdy {
        version: String,
    },
}

/// Decides the upgrade of a request for `service`.
pub(crate) fn negotiate(headers: &HeaderMap, service: Service) -> Result<Upgrade, Refusal> {
    let bad = |message: String| Refusal::new(StatusCode::BAD_REQUEST, message);
    let connection_upgrade = values(headers, header::CONNECTION)
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if connection_upgrade && upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(|| bad("unable to upgrade: no Sec-WebSocket-Key".to_string()))?;
        if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
            return Err(bad(
                "unable to upgrade: Sec-WebSocket-Version must be 13".to_string()
            ));
        }
        let requested = values(headers, header::SEC_WEBSOCKET_PROTOCOL);
        let supported: &[&str] = match service {
            Service::RemoteCommand => &CHANNEL_SUBPROTOCOLS,
            Service::PortForward => &PORT_FORWARD_SUBPROTOCOLS,
        };
        let protocol = match requested.iter().find(|p| supported.contains(&p.as_str())) {
            Some(protocol) => Some(protocol.clone()),
            None if requested.is_empty() && service == Service::RemoteCommand => None,
            None => {
                return Err(bad(format!(
                    "unable to upgrade: requested protocol(s) are not supported: {requested:?}; supports {supported:?}"
                )));
            }
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Upgrade::WebSocket { protocol, accept });
    }
    let supported: &[&str] = match service {
        Service::RemoteCommand => &REMOTE_COMMAND_VERSIONS,
        Service::PortForward => &[PORT_FORWARD_VERSION],
    };
    let requested = values(headers, "x-stream-protocol-version");
    if requested.is_empty() {
        return Err(bad(
            "unable to upgrade: header X-Stream-Protocol-Version does not exist in request".to_string(),
        ));
    }
    let Some(version) = requested.iter().find(|p| supported.contains(&p.as_str())) else {
        let mut refusal = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {requested:?}, server accepts {supported:?}"
            ),
        );
        refusal.accepted_versions = match service {
            Service::RemoteCommand => &REMOTE_COMMAND_VERSIONS,
            Service::PortForward => &[PORT_FORWARD_VERSION],
        };
        return Err(refusal);
    };
    if !connection_upgrade || !upgrade.to_ascii_lowercase().contains("spdy/3.1") {
        return Err(bad(
            "unable to upgrade: missing upgrade headers in request".to_string()
        ));
    }
    Ok(Upgrade::Spdy {
        version: version.clone(),
    })
}

/// The headers of the `101 Switching Protocols` for `upgrade`.
pub(crate) fn switching_headers(upgrade: &Upgrade) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = |text: &str| HeaderValue::from_str(text).expect("negotiated values are header-safe");
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    match upgrade {
        Upgrade::WebSocket { protocol, accept } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, value(accept));
            if let Some(protocol) = protocol {
                headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value(protocol));
            }
        }
        Upgrade::Spdy { version } => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            headers.insert("x-stream-protocol-version", value(version));
        }
    }
    headers
}

/// Every comma-separated value of every `name` header, trimmed.
fn values(headers: &HeaderMap, name: impl header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in list {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const WEBSOCKET: [(&str, &str); 4] = [
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn websockets_take_the_clients_first_supported_subprotocol() {
        let mut request = headers(&WEBSOCKET);
        request.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v6.channel.k8s.io, v4.channel.k8s.io"),
        );
        request.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        let upgrade = negotiate(&request, Service::RemoteCommand).unwrap();
        assert_eq!(
            upgrade,
            Upgrade::WebSocket {
                protocol: Some("v4.channel.k8s.io".into()),
                // RFC 6455's own example.
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
        let response = switching_headers(&upgrade);
        assert_eq!(response["sec-websocket-protocol"], "v4.channel.k8s.io");
        assert_eq!(response["upgrade"], "websocket");

        let bare = negotiate(&headers(&WEBSOCKET), Service::RemoteCommand).unwrap();
        assert!(matches!(bare, Upgrade::WebSocket { protocol: None, .. }));
        assert!(!switching_headers(&bare).contains_key("sec-websocket-protocol"));
        assert!(negotiate(&headers(&WEBSOCKET), Service::PortForward).is_err());
        let mut kube_rs = headers(&WEBSOCKET);
        kube_rs.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("v5.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert!(
            matches!(negotiate(&kube_rs, Service::PortForward),
                Ok(Upgrade::WebSocket { protocol: Some(p), .. }) if p == "v4.channel.k8s.io"),
            "port forwarding speaks v4, not v5"
        );

        let mut tunnel = headers(&WEBSOCKET);
        tunnel.append(
            "sec-websocket-protocol",
            HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
        );
        assert!(matches!(
            negotiate(&tunnel, Service::PortForward),
            Ok(Upgrade::WebSocket { protocol: Some(p), .. }) if p == PORT_FORWARD_TUNNEL
        ));
        assert_eq!(
            negotiate(&tunnel, Service::RemoteCommand).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn spdy_takes_the_clients_first_supported_version() {
        let request = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v5.channel.k8s.io"),
            ("x-stream-protocol-version", "v4.channel.k8s.io,channel.k8s.io"),
        ]);
        let upgrade = negotiate(&request, Service::RemoteCommand).unwrap();
        assert_eq!(
            upgrade,
            Upgrade::Spdy {
                version: "v4.channel.k8s.io".into()
            }
        );
        assert_eq!(
            switching_headers(&upgrade)["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
        let refused = negotiate(&request, Service::PortForward).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.accepted_versions, ["portforward.k8s.io"]);
        assert_eq!(
            negotiate(
                &headers(&[("x-stream-protocol-version", "portforward.k8s.io")]),
                Service::PortForward
            )
            .unwrap_err()
            .message,
            "unable to upgrade: missing upgrade headers in request"
        );
        assert_eq!(
            negotiate(&HeaderMap::new(), Service::RemoteCommand)
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}
