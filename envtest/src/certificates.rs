//! The key material of one control plane, as kubeadm lays it out: a cluster CA, the API server's
//! serving certificate, client certificates (the admin in `system:masters`, the controller
//! manager as `system:kube-controller-manager`), the service-account signing key, and a
//! front-proxy CA with its client certificate (for aggregated API servers). ECDSA P-256 keys,
//! PKCS#8 PEM, as kube-apiserver, kube-controller-manager and rustls all accept.

use std::{fs, net::IpAddr, path::Path};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub(crate) struct Pair {
    pub cert: String,
    pub key: String,
}

/// Every file a plane needs, in memory; [`Material::write`] puts them in a folder.
pub(crate) struct Material {
    /// The cluster CA (clients and the serving certificate chain to it).
    pub ca: Pair,
    /// The API server's serving certificate (127.0.0.1, localhost, the `kubernetes` Service).
    pub serving: Pair,
    /// `kubernetes-admin` in `system:masters`.
    pub admin: Pair,
    /// `system:kube-controller-manager`.
    pub controller_manager: Pair,
    /// `kube-apiserver-kubelet-client` in `system:masters`: the API server's identity at kubelets.
    pub kubelet_client: Pair,
    /// The service-account token signing key (private, PKCS#8) and its public half.
    pub service_account_key: String,
    pub service_account_pub: String,
    /// The front-proxy CA and the API server's client certificate under it.
    pub front_proxy_ca: Pair,
    pub front_proxy_client: Pair,
}

/// Paths of the written files (see [`Material::write`]).
pub(crate) struct Files {
    pub ca_cert: std::path::PathBuf,
    pub ca_key: std::path::PathBuf,
    pub serving_cert: std::path::PathBuf,
    pub serving_key: std::path::PathBuf,
    pub kubelet_client_cert: std::path::PathBuf,
    pub kubelet_client_key: std::path::PathBuf,
    pub service_account_key: std::path::PathBuf,
    pub service_account_pub: std::path::PathBuf,
    pub front_proxy_ca_cert: std::path::PathBuf,
    pub front_proxy_client_cert: std::path::PathBuf,
    pub front_proxy_client_key: std::path::PathBuf,
}

/// The first address of the service CIDR: the `kubernetes` Service's cluster IP.
fn kubernetes_service_ip(service_cidr: &str) -> Option<IpAddr> {
    let network: std::net::Ipv4Addr = service_cidr.split_once('/')?.0.parse().ok()?;
    Some(IpAddr::V4((u32::from(network) + 1).into()))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    if let Some(organization) = organization {
        name.push(DnType::OrganizationName, organization);
    }
    name.push(DnType::CommonName, common_name);
    name
}

fn new_ca(common_name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().context("generating a CA key")?;
    CertifiedIssuer::self_signed(params, key).context("signing a CA certificate")
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    distinguished_name: DistinguishedName,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<Pair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params.signed_by(&key, issuer).context("signing a certificate")?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn dns(name: &str) -> anyhow::Result<SanType> {
    Ok(SanType::DnsName(
        name.try_into().with_context(|| format!("{name} as a DNS name"))?,
    ))
}

impl Material {
    /// Fresh keys and certificates for one plane whose Services live in `service_cidr`.
    pub fn generate(service_cidr: &str) -> anyhow::Result<Self> {
        let ca = new_ca("kubernetes")?;
        let mut sans = vec![
            SanType::IpAddress(IpAddr::from([127, 0, 0, 1])),
            dns("localhost")?,
            dns("kubernetes")?,
            dns("kubernetes.default")?,
            dns("kubernetes.default.svc")?,
            dns("kubernetes.default.svc.cluster.local")?,
        ];
        sans.extend(kubernetes_service_ip(service_cidr).map(SanType::IpAddress));
        let serving = leaf(
            &ca,
            name("kube-apiserver", None),
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = leaf(
            &ca,
            name("kubernetes-admin", Some("system:masters")),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let controller_manager = leaf(
            &ca,
            name("system:kube-controller-manager", None),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        // What the API server presents to kubelets (kubeadm's `apiserver-kubelet-client`).
        let kubelet_client = leaf(
            &ca,
            name("kube-apiserver-kubelet-client", Some("system:masters")),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let service_account = KeyPair::generate().context("generating the service-account key")?;
        let front_proxy_ca = new_ca("front-proxy-ca")?;
        let front_proxy_client = leaf(
            &front_proxy_ca,
            name("front-proxy-client", None),
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Self {
            ca: Pair {
                cert: ca.pem(),
                key: ca.key().serialize_pem(),
            },
            serving,
            admin,
            controller_manager,
            kubelet_client,
            service_account_key: service_account.serialize_pem(),
            service_account_pub: service_account.public_key_pem(),
            front_proxy_ca: Pair {
                cert: front_proxy_ca.pem(),
                key: front_proxy_ca.key().serialize_pem(),
            },
            front_proxy_client,
        })
    }

    /// Writes the files the processes read into `dir` (private keys readable by the owner only).
    pub fn write(&self, dir: &Path) -> anyhow::Result<Files> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let put = |file: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
            let path = dir.join(file);
            write_private(&path, text)?;
            Ok(path)
        };
        Ok(Files {
            ca_cert: put("ca.crt", &self.ca.cert)?,
            ca_key: put("ca.key", &self.ca.key)?,
            serving_cert: put("apiserver.crt", &self.serving.cert)?,
            serving_key: put("apiserver.key", &self.serving.key)?,
            kubelet_client_cert: put("apiserver-kubelet-client.crt", &self.kubelet_client.cert)?,
            kubelet_client_key: put("apiserver-kubelet-client.key", &self.kubelet_client.key)?,
            service_account_key: put("sa.key", &self.service_account_key)?,
            service_account_pub: put("sa.pub", &self.service_account_pub)?,
            front_proxy_ca_cert: put("front-proxy-ca.crt", &self.front_proxy_ca.cert)?,
            front_proxy_client_cert: put("front-proxy-client.crt", &self.front_proxy_client.cert)?,
            front_proxy_client_key: put("front-proxy-client.key", &self.front_proxy_client.key)?,
        })
    }
}

/// Writes `text` to `path`, readable and writable by the owner only.
pub(crate) fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubernetes_service_ip_is_the_first_of_the_range() {
        assert_eq!(
            kubernetes_service_ip("10.96.0.0/16"),
            Some(IpAddr::from([10, 96, 0, 1]))
        );
        assert_eq!(kubernetes_service_ip("nonsense"), None);
    }

    #[test]
    fn material_is_pem() {
        let material = Material::generate("10.96.0.0/16").unwrap();
        for cert in [&material.ca.cert, &material.serving.cert, &material.admin.cert] {
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        }
        assert!(material.admin.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(
            material
                .service_account_pub
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert_ne!(material.ca.cert, material.front_proxy_ca.cert);
    }
}
