//! The kubelet endpoint's TLS: its serving certificate (configured, or self-signed at start),
//! the client certificates it accepts (those of the configured CA, as a kubelet's
//! `--client-ca-file`), and who a verified client certificate names.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tokio_rustls::rustls::{
    RootCertStore, ServerConfig,
    crypto::ring::default_provider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use vcsync_syncer::kubelet_config::KubeletConfig;

use super::auth::Caller;

/// The TLS settings the endpoint serves with. `names` go into a self-signed certificate's
/// subject alternative names (the advertised address, say).
pub fn server_config(config: &KubeletConfig, names: &[String]) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key) = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => (read_chain(cert)?, read_key(key)?),
        _ => self_signed(names)?,
    };
    let provider = Arc::new(default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &config.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_chain(path)? {
                roots.add(cert).with_context(|| {
                    format!("kubelet.clientCaFile {}: not a CA certificate", path.display())
                })?;
            }
            // A caller without a certificate may still bring a bearer token; one with a
            // certificate this CA did not sign fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .context("kubelet client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .context("the kubelet serving certificate and key do not match")?;
    // HTTP/1.1 only: upgrades (exec, attach, port-forward) exist only there.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{}: holds no certificate", path.display());
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("{}: no PEM private key", path.display()))
}

/// A certificate for `names`, signed by its own key (ECDSA P-256).
fn self_signed(names: &[String]) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut names = names.to_vec();
    names.push("vcsync-kubelet".to_string());
    let certified =
        rcgen::generate_simple_self_signed(names).context("making a self-signed kubelet certificate")?;
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|err| anyhow::anyhow!("self-signed kubelet key: {err}"))?;
    Ok((vec![certified.cert.der().clone()], key))
}

/// The caller a verified client certificate names, as a kube-apiserver reads one: the common
/// name is the user, each organization a group.
pub fn certificate_caller(der: &CertificateDer<'_>) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject = cert.subject();
    let text = |attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attribute.as_str().ok().map(str::to_string)
    };
    let user = subject.iter_common_name().next().and_then(text)?;
    let groups = subject.iter_organization().filter_map(text).collect();
    Some(Caller {
        user,
        groups,
        ..Caller::default()
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    #[test]
    fn a_client_certificate_names_its_user_and_groups() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "kube-apiserver-kubelet-client");
        subject.push(DnType::OrganizationName, "system:masters");
        params.distinguished_name = subject;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let caller = certificate_caller(cert.der()).unwrap();
        assert_eq!(caller.user, "kube-apiserver-kubelet-client");
        assert_eq!(caller.groups, vec!["system:masters".to_string()]);
    }

    #[test]
    fn a_certificate_without_a_common_name_names_nobody() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        assert_eq!(certificate_caller(cert.der()), None);
    }

    #[test]
    fn a_self_signed_certificate_serves_and_configured_files_must_exist() {
        let config = KubeletConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..KubeletConfig::default()
        };
        let server = server_config(&config, &["127.0.0.1".to_string()]).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let missing = KubeletConfig {
            client_ca_file: Some("/nonexistent/ca.crt".into()),
            ..config
        };
        let err = format!("{:#}", server_config(&missing, &[]).unwrap_err());
        assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    }
}
