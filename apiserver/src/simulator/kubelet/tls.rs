//! A simulated kubelet's TLS: a self-signed serving certificate for its node's address (a
//! kube-apiserver without `--kubelet-certificate-authority` does not check it), and client
//! certificates required under the CA it is given, as a kubelet's `--client-ca-file` with
//! anonymous access off.

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// The client certificate check for certificates under `ca_pem`.
pub(crate) fn client_verifier(ca_pem: &str) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|err| format!("the kubelet client CA is not PEM: {err}"))?;
        roots
            .add(cert)
            .map_err(|err| format!("the kubelet client CA is not a CA certificate: {err}"))?;
    }
    if roots.is_empty() {
        return Err("the kubelet client CA holds no certificate".to_string());
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
        .build()
        .map_err(|err| format!("kubelet client certificate verifier: {err}"))
}

/// The server side of node `ip`'s kubelet.
pub(crate) fn server_config(
    ip: Ipv4Addr,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, String> {
    let names = vec![
        "localhost".to_string(),
        Ipv4Addr::LOCALHOST.to_string(),
        ip.to_string(),
    ];
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|err| format!("serving certificate: {err}"))?;
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|err| format!("serving key: {err}"))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS versions: {err}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .map_err(|err| format!("serving certificate: {err}"))?;
    // HTTP/1.1 only: upgrades (exec, attach, port-forward) exist only there.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
