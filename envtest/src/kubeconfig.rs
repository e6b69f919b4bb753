//! The kubeconfig of one plane: its server, CA and a client certificate, all inline (no paths,
//! so the file can be copied anywhere while the plane runs).

use std::path::Path;

use anyhow::Context;

use super::certificates::{Pair, write_private};

/// Standard base64, as kubeconfigs carry certificate data (k8s-openapi's `ByteString`
/// serializes that way, so no base64 crate is needed for three fields).
fn base64(text: &str) -> String {
    match serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())) {
        Ok(serde_json::Value::String(encoded)) => encoded,
        other => unreachable!("ByteString serializes to a string, not {other:?}"),
    }
}

/// The kubeconfig text: one cluster, user and context named `name`, current.
pub(crate) fn render(name: &str, server: &str, ca_cert: &str, client: &Pair) -> String {
    let (ca, cert, key) = (base64(ca_cert), base64(&client.cert), base64(&client.key));
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {name}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}
current-context: {name}
"
    )
}

/// Writes [`render`]'s text to `path` (owner only: it holds a private key).
pub(crate) fn write(
    path: &Path,
    name: &str,
    server: &str,
    ca_cert: &str,
    client: &Pair,
) -> anyhow::Result<()> {
    write_private(path, &render(name, server, ca_cert, client))
        .with_context(|| format!("writing the kubeconfig {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_standard_with_padding() {
        assert_eq!(base64(""), "");
        assert_eq!(base64("f"), "Zg==");
        assert_eq!(base64("foob"), "Zm9vYg==");
        assert_eq!(base64("\u{ff}\u{fe}"), "w7/Dvg==");
    }

    #[test]
    fn kube_reads_it_back() {
        let client = Pair {
            cert: "CERT".into(),
            key: "KEY".into(),
        };
        let text = render("host", "https://127.0.0.1:6443", "CA", &client);
        let config = kube::config::Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(config.current_context.as_deref(), Some("host"));
        let cluster = config.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = config.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate_data.as_deref(), Some("Q0VSVA=="));
    }
}
