//! The embedded API server's identity at kubelets: a CA of its own and a client certificate
//! under it (`kube-apiserver-kubelet-client` in `system:masters`, as kubeadm names it), which it
//! presents when it calls a node's kubelet for `pods/log`, `exec`, `attach` and `portforward`.
//! Kubelets that trust the CA (the simulator's, vcsync's kubelet endpoint through
//! `kubelet.clientCaFile`) accept it.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose,
};

/// The CA and the client certificate, PEM.
#[derive(Clone, Debug)]
pub struct KubeletClientIdentity {
    /// The CA kubelets trust.
    pub ca_pem: String,
    /// The client certificate and its key.
    pub cert_pem: String,
    pub key_pem: String,
}

/// The user the client certificate names.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

impl KubeletClientIdentity {
    /// A fresh CA named after the server `name`, and the client certificate under it.
    pub fn generate(name: &str) -> Result<Self, rcgen::Error> {
        let mut ca_params = CertificateParams::default();
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, format!("{name}-kubelet-client-ca"));
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "system:masters");
        subject.push(DnType::CommonName, KUBELET_CLIENT_USER);
        params.distinguished_name = subject;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok(Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The file in a state directory that keeps the identity across restarts (a kubelet configured
/// with the CA must go on accepting the server).
const IDENTITY_FILE: &str = "kubelet-client.json";

impl KubeletClientIdentity {
    /// The identity kept in `state_dir`, or a fresh one (kept there if there is one).
    pub fn load_or_generate(name: &str, state_dir: Option<&std::path::Path>) -> crate::Result<Self> {
        let error = |what: String| crate::Error::KubeletIdentity(what);
        let Some(dir) = state_dir else {
            return Self::generate(name).map_err(|err| error(err.to_string()));
        };
        let path = dir.join(IDENTITY_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let [ca_pem, cert_pem, key_pem]: [String; 3] =
                serde_json::from_str(&text).map_err(|err| error(format!("{}: {err}", path.display())))?;
            return Ok(Self {
                ca_pem,
                cert_pem,
                key_pem,
            });
        }
        let identity = Self::generate(name).map_err(|err| error(err.to_string()))?;
        let text = serde_json::to_string(&[&identity.ca_pem, &identity.cert_pem, &identity.key_pem])
            .map_err(|err| error(err.to_string()))?;
        write_private(&path, &text).map_err(|err| error(format!("{}: {err}", path.display())))?;
        Ok(identity)
    }
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_a_ca_and_a_client_certificate_under_it() {
        let identity = KubeletClientIdentity::generate("host").unwrap();
        assert!(identity.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.key_pem.contains("PRIVATE KEY"));
        assert_ne!(identity.ca_pem, identity.cert_pem);
    }

    #[test]
    fn a_state_directory_keeps_the_identity_across_restarts() {
        let dir = std::env::temp_dir().join(format!("vcsync-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = KubeletClientIdentity::load_or_generate("host", Some(&dir)).unwrap();
        let again = KubeletClientIdentity::load_or_generate("host", Some(&dir)).unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(first.key_pem, again.key_pem);
        let fresh = KubeletClientIdentity::load_or_generate("host", None).unwrap();
        assert_ne!(first.ca_pem, fresh.ca_pem);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
