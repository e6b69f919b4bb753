//! The `kubelet` section of `vcsync.yaml`: the kubelet API vcsync serves for its virtual nodes,
//! and where those nodes say it is.
//!
//! A virtual API server answers `kubectl logs`, `exec`, `attach` and `port-forward` by calling
//! the kubelet of the pod's node at the node's address and `daemonEndpoints.kubeletEndpoint`
//! port. vcsync's virtual nodes point there at vcsync's own endpoint (the server is in the
//! `vcsync` binary), which passes each call on to the host API server for the pod's host twin.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

/// The kubelet API's settings. Without `listen`, vcsync serves none and virtual nodes carry the
/// host nodes' addresses and no kubelet endpoint (logs and exec then fail in the virtual cluster).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletConfig {
    /// `host:port` to serve HTTPS on (a kubelet's port is 10250; port 0 picks a free port).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The InternalIP virtual nodes carry: where the virtual API server reaches the endpoint.
    /// Default: the `listen` address when it names one, else the `POD_IP` environment variable
    /// (the chart sets it from the downward API).
    #[serde(default)]
    pub advertise_address: Option<IpAddr>,
    /// PEM CA whose client certificates are accepted: the CA of the certificate the virtual API
    /// server presents to kubelets (`--kubelet-client-certificate`). Without it only bearer
    /// tokens authenticate (checked with a TokenReview).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// PEM serving certificate and key; without them a self-signed one is made at start (a
    /// kube-apiserver checks a kubelet's certificate only with `--kubelet-certificate-authority`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The serving certificate's key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Where virtual nodes say their kubelet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeletEndpoint {
    /// The nodes' InternalIP.
    pub address: IpAddr,
    /// `daemonEndpoints.kubeletEndpoint.Port`.
    pub port: u16,
}

/// The environment variable read when no advertise address is configured.
pub const POD_IP_ENV: &str = "POD_IP";

impl KubeletConfig {
    /// The endpoint virtual nodes advertise, or None when no kubelet API is served. `pod_ip` is
    /// the value of [`POD_IP_ENV`], if any.
    pub fn endpoint(&self, pod_ip: Option<&str>) -> Result<Option<KubeletEndpoint>, String> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        let address = match (self.advertise_address, listen.ip()) {
            (Some(address), _) => address,
            (None, ip) if !ip.is_unspecified() => ip,
            (None, _) => match pod_ip {
                Some(text) => text.trim().parse().map_err(|_| {
                    format!("kubelet.advertiseAddress: {POD_IP_ENV}={text:?} is not an IP address")
                })?,
                None => {
                    return Err(format!(
                        "kubelet.advertiseAddress is required when kubelet.listen ({listen}) names no \
                         single address and {POD_IP_ENV} is not set"
                    ));
                }
            },
        };
        if address.is_unspecified() {
            return Err(format!(
                "kubelet.advertiseAddress {address} is no address a virtual API server can reach"
            ));
        }
        Ok(Some(KubeletEndpoint {
            address,
            port: listen.port(),
        }))
    }

    /// Checks what can be checked without I/O: a certificate comes with its key.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("kubelet.certFile and kubelet.keyFile go together".to_string());
        }
        if self.listen.is_none()
            && (self.client_ca_file.is_some() || self.cert_file.is_some() || self.advertise_address.is_some())
        {
            return Err("kubelet settings without kubelet.listen: nothing would be served".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening(listen: &str) -> KubeletConfig {
        KubeletConfig {
            listen: Some(listen.parse().unwrap()),
            ..KubeletConfig::default()
        }
    }

    #[test]
    fn no_listen_address_serves_nothing() {
        assert_eq!(KubeletConfig::default().endpoint(Some("10.0.0.1")), Ok(None));
    }

    #[test]
    fn a_specific_listen_address_is_advertised_with_its_port() {
        let endpoint = listening("127.0.0.1:10250").endpoint(Some("10.0.0.1")).unwrap();
        assert_eq!(
            endpoint,
            Some(KubeletEndpoint {
                address: "127.0.0.1".parse().unwrap(),
                port: 10250
            })
        );
    }

    #[test]
    fn all_addresses_advertise_the_pod_ip_or_fail_clearly() {
        let config = listening("0.0.0.0:10250");
        let endpoint = config.endpoint(Some("10.1.2.3")).unwrap().unwrap();
        assert_eq!(endpoint.address, "10.1.2.3".parse::<IpAddr>().unwrap());
        let err = config.endpoint(None).unwrap_err();
        assert!(err.contains("kubelet.advertiseAddress is required"), "{err}");
        let err = config.endpoint(Some("not-an-ip")).unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
    }

    #[test]
    fn an_explicit_advertise_address_wins() {
        let config = KubeletConfig {
            advertise_address: Some("192.0.2.9".parse().unwrap()),
            ..listening("0.0.0.0:0")
        };
        let endpoint = config.endpoint(Some("10.1.2.3")).unwrap().unwrap();
        assert_eq!(endpoint.address, "192.0.2.9".parse::<IpAddr>().unwrap());
        let unspecified = KubeletConfig {
            advertise_address: Some("0.0.0.0".parse().unwrap()),
            ..listening("0.0.0.0:0")
        };
        assert!(unspecified.endpoint(None).is_err());
    }

    #[test]
    fn settings_without_a_listen_address_or_a_key_are_rejected() {
        let half = KubeletConfig {
            cert_file: Some("tls.crt".into()),
            ..listening("127.0.0.1:0")
        };
        assert!(half.validate().unwrap_err().contains("go together"));
        let idle = KubeletConfig {
            client_ca_file: Some("ca.crt".into()),
            ..KubeletConfig::default()
        };
        assert!(idle.validate().unwrap_err().contains("without kubelet.listen"));
        assert_eq!(listening("127.0.0.1:0").validate(), Ok(()));
    }
}
