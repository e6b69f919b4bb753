//! Reads the virtual cluster's identity and keeps the host-side record of it up to date.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{Api, Client, Resource, api::ObjectMeta};

use super::identity::{ClusterIdentity, IdentityRecord, RECORD_LABEL, Startup, record_name};
use crate::{
    Side,
    error::{Error, Result, api_error, status_code},
    resource::write_params,
};

/// Namespaces every Kubernetes API server creates at start; the first one found names the
/// virtual cluster.
const IDENTITY_NAMESPACES: [&str; 2] = ["kube-system", "default"];

/// The identity of the virtual cluster `client` talks to.
pub async fn virtual_identity(client: &Client) -> Result<ClusterIdentity> {
    let api: Api<Namespace> = Api::all(client.clone());
    for name in IDENTITY_NAMESPACES {
        let found = api
            .get_opt(name)
            .await
            .map_err(api_error(Side::Virtual, "get", "Namespace", name))?;
        if let Some(identity) = found
            .as_ref()
            .and_then(|ns| ClusterIdentity::of_namespace(ns.meta()))
        {
            return Ok(identity);
        }
    }
    Err(Error::Identity(
        "the virtual cluster has neither a kube-system nor a default namespace, so vcsync cannot tell \
         it from an earlier one; is the virtual kubeconfig pointing at a Kubernetes API server?"
            .into(),
    ))
}

/// What [`establish`] found.
#[derive(Clone, Debug)]
pub struct Established {
    /// The virtual cluster served now.
    pub current: ClusterIdentity,
    /// How it compares with the record.
    pub startup: Startup,
    /// The record as it now stands.
    pub record: IdentityRecord,
    /// Reference to the record's ConfigMap, for host events.
    pub record_ref: k8s_openapi::api::core::v1::ObjectReference,
}

impl Established {
    /// The cluster served now, with no record to compare it with.
    pub fn unrecorded(current: ClusterIdentity) -> Self {
        Self {
            current,
            startup: Startup::First,
            record: IdentityRecord::default(),
            record_ref: k8s_openapi::api::core::v1::ObjectReference::default(),
        }
    }
}

/// Reads the record in `host_namespace` and brings it up to date with the cluster served now:
/// created on a first start, the replaced cluster moved to the earlier ones after a replacement.
/// Concurrent replicas agree: a conflict is read again.
pub async fn establish(
    virtual_client: &Client,
    host_client: &Client,
    host_namespace: &str,
    instance: &str,
) -> Result<Established> {
    let current = virtual_identity(virtual_client).await?;
    let api: Api<ConfigMap> = Api::namespaced(host_client.clone(), host_namespace);
    let name = record_name(instance);
    let key = format!("{host_namespace}/{name}");
    for _ in 0..5 {
        let existing = api
            .get_opt(&name)
            .await
            .map_err(api_error(Side::Host, "get", "ConfigMap", &key))?;
        let record = existing
            .as_ref()
            .map(IdentityRecord::from_config_map)
            .unwrap_or_default();
        let startup = record.startup(&current);
        let next = record.advanced(&current);
        let written = match existing {
            Some(mut config_map) if next != record => {
                config_map.data = Some(next.to_data());
                api.replace(&name, &write_params(), &config_map).await
            }
            Some(config_map) => Ok(config_map),
            None => {
                api.create(&write_params(), &new_record(&name, instance, &next))
                    .await
            }
        };
        match written {
            Ok(config_map) => {
                return Ok(Established {
                    current,
                    startup,
                    record: next,
                    record_ref: config_map.object_ref(&()),
                });
            }
            Err(err) if status_code(&err) == Some(409) => continue,
            Err(err) => return Err(api_error(Side::Host, "write", "ConfigMap", &key)(err)),
        }
    }
    Err(Error::Identity(format!(
        "the identity record {key} kept changing while vcsync tried to update it"
    )))
}

fn new_record(name: &str, instance: &str, record: &IdentityRecord) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some([(RECORD_LABEL.to_string(), instance.to_string())].into()),
            annotations: Some(
                [(
                    "vcsync.dev/about".to_string(),
                    "Which virtual cluster this vcsync instance syncs. Host objects made for an \
                     earlier one (an emptied or replaced datastore) are never deleted unless \
                     vcsync runs with --prune-previous."
                        .to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(record.to_data()),
        ..ConfigMap::default()
    }
}

/// Whether `err` says the record may not be read or written (least-privilege RBAC of an older
/// chart): the caller decides how to go on.
pub fn is_forbidden(err: &Error) -> bool {
    matches!(err, Error::Api { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 403))
}
