//! What kube-controller-manager puts into every open namespace, done here synchronously as the
//! namespace is created (and again when the object is deleted while the namespace lives): the
//! `default` ServiceAccount (service-account controller) and the `kube-root-ca.crt` ConfigMap
//! (root-ca-cert-publisher).

use serde_json::{Value, json};

use crate::objects::{NAMESPACES, Objects, check_namespace_open};
use crate::resources::ResourceDef;
use crate::store::State;

/// The service account every namespace gets.
pub(crate) const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The ConfigMap with the cluster's CA bundle every namespace gets.
pub(crate) const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The key of the CA bundle in [`ROOT_CA_CONFIG_MAP`].
pub(crate) const ROOT_CA_KEY: &str = "ca.crt";

/// The annotation kube-controller-manager sets on [`ROOT_CA_CONFIG_MAP`].
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the \
    kube-apiserver when using internal endpoints such as the internal service IP or \
    kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes \
    clusters.";

/// The embedded server serves plain HTTP and has no CA; clients that read `ca.crt` get this
/// self-signed certificate instead (its key was thrown away: it verifies nothing). A real PEM
/// certificate, so that anything that parses the bundle accepts it.
pub(crate) const PLACEHOLDER_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIB2zCCAYGgAwIBAgIUGjMTMDBZU/RDvvyfaMtPt7OzaCcwCgYIKoZIzj0EAwIw
QjFAMD4GA1UEAww3dmNzeW5jIGVtYmVkZGVkIEFQSSBzZXJ2ZXIgKHBsYWluIEhU
VFAsIHBsYWNlaG9sZGVyIENBKTAgFw0yNjEyMDcwMDUyNDdaGA8yMTI2MTExMzAw
NTI0N1owQjFAMD4GA1UEAww3dmNzeW5jIGVtYmVkZGVkIEFQSSBzZXJ2ZXIgKHBs
YWluIEhUVFAsIHBsYWNlaG9sZGVyIENBKTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABA+eZS4QBn8I5snQW+bPZFZ9eJeqkHW1xzH8p+Ho1QXc8TVO6A35PNt8aeZE
gGEDmRbUF61ibRSAPPkutV+HhFujUzBRMB0GA1UdDgQWBBTRI19ZsBSNQQ90Nih4
URlbe7IAcDAfBgNVHSMEGDAWgBTRI19ZsBSNQQ90Nih4URlbe7IAcDAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQD3I4DExJqbnomjVhMHt03W6JYX
NH0JudTcx+EDLzjftwIgVYWg8izc2zCtXgY57A7qpMoQNTPW2uxgZBAD5+SNgiY=
-----END CERTIFICATE-----
";

impl Objects {
    /// Fills every open namespace with what it lacks (after a restore of a state written before
    /// the namespace contents were published).
    pub(crate) fn fill_all_namespaces(&self) {
        let mut state = self.store.lock();
        let names: Vec<String> = state
            .list(NAMESPACES, None, None)
            .map(|((_, name), _)| name.clone())
            .collect();
        for name in names {
            self.fill_namespace(&mut state, &name);
        }
    }

    /// Creates the default ServiceAccount and the root CA ConfigMap of `namespace` where missing.
    pub(crate) fn fill_namespace(&self, state: &mut State, namespace: &str) {
        self.ensure_default_service_account(state, namespace);
        self.ensure_root_ca_config_map(state, namespace);
    }

    /// Creates the `default` ServiceAccount of a namespace that is open and lacks one, as the
    /// service-account controller does.
    pub(crate) fn ensure_default_service_account(&self, state: &mut State, namespace: &str) {
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace}});
        self.ensure(state, "serviceaccounts", namespace, body);
    }

    /// Creates the `kube-root-ca.crt` ConfigMap of a namespace that is open and lacks one, as
    /// kube-controller-manager's root-ca-cert-publisher does.
    pub(crate) fn ensure_root_ca_config_map(&self, state: &mut State, namespace: &str) {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": namespace,
                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
            "data": {ROOT_CA_KEY: PLACEHOLDER_CA_PEM}});
        self.ensure(state, "configmaps", namespace, body);
    }

    fn ensure(&self, state: &mut State, plural: &str, namespace: &str, body: Value) {
        let Some(def) = self.registry.find("", "v1", plural) else {
            return;
        };
        let name = body["metadata"]["name"].as_str().unwrap_or_default();
        if state.get(&def.store_key(), namespace, name).is_some()
            || check_namespace_open(state, namespace).is_err()
        {
            return;
        }
        let name = name.to_string();
        if let Err(e) = self.create_in(state, &def, namespace, body) {
            tracing::warn!(namespace, name, error = %e.message, "could not fill the namespace");
        }
    }
}

/// Whether deleting `name` of kind `def` takes something a namespace always holds, which the
/// controllers put back while the namespace lives.
pub(crate) fn is_namespace_content(def: &ResourceDef, name: &str) -> bool {
    def.group.is_empty()
        && match def.kind.as_str() {
            "ServiceAccount" => name == DEFAULT_SERVICE_ACCOUNT,
            "ConfigMap" => name == ROOT_CA_CONFIG_MAP,
            _ => false,
        }
}
