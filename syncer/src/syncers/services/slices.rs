//! EndpointSlices of selector services, mirrored up from the host like Endpoints.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, ResourceExt, api::DeleteParams};
use vcsync_translators::VirtualKey;

use super::translate::{MIRRORED_LABEL, pod_reference_up};
use crate::cache::Cache;
use crate::{Result, Side, error::api_error, writes::write_params};

/// The label that ties a slice to its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const SLICE_MANAGER: &str = "vcsync.dev";

/// The virtual slices a virtual service should have, one per host slice of its host service,
/// with pod references translated (endpoints of pods that are not this instance's are dropped).
pub fn virtual_slices(
    service: &Service,
    host_service: &str,
    host_slices: &[Arc<EndpointSlice>],
    virtual_pod: impl Fn(&str) -> Option<VirtualKey>,
) -> Vec<EndpointSlice> {
    let name = service.name_any();
    host_slices
        .iter()
        .filter(|slice| slice.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(host_service))
        .map(|slice| {
            let suffix = slice
                .name_any()
                .strip_prefix(&format!("{host_service}-"))
                .map(str::to_string);
            let suffix = suffix.unwrap_or_else(|| slice.name_any());
            let endpoints: Vec<_> = slice
                .endpoints
                .iter()
                .flatten()
                .filter_map(|endpoint| {
                    let mut endpoint = endpoint.clone();
                    pod_reference_up(endpoint.target_ref.as_mut(), &virtual_pod).then_some(endpoint)
                })
                .collect();
            let mut virt = EndpointSlice {
                address_type: slice.address_type.clone(),
                endpoints: slice.endpoints.as_ref().map(|_| endpoints),
                ports: slice.ports.clone(),
                ..EndpointSlice::default()
            };
            virt.metadata.name = Some(format!("{name}-{suffix}"));
            virt.metadata.namespace = service.metadata.namespace.clone();
            virt.metadata.labels = Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), name.clone()),
                (SLICE_MANAGED_BY_LABEL.to_string(), SLICE_MANAGER.to_string()),
                (MIRRORED_LABEL.to_string(), "true".to_string()),
            ]));
            virt
        })
        .collect()
}

fn same_content(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && a.ports == b.ports
        && a.metadata.labels == b.metadata.labels
}

/// Brings the virtual slices of `service` to `desired`: creates, replaces and deletes only
/// what differs. Returns whether anything was written.
pub async fn apply_virtual_slices(
    api: &Api<EndpointSlice>,
    observed_store: &Cache<EndpointSlice>,
    service: &Service,
    desired: Vec<EndpointSlice>,
) -> Result<bool> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let observed: Vec<Arc<EndpointSlice>> = observed_store.state_filter(|slice| {
        slice.namespace().as_deref() == Some(namespace.as_str())
            && slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
            && slice.labels().contains_key(MIRRORED_LABEL)
    });
    let key = |slice: &EndpointSlice| format!("{namespace}/{}", slice.name_any());
    let params = write_params();
    let mut wrote = false;
    for slice in &desired {
        match observed.iter().find(|o| o.name_any() == slice.name_any()) {
            Some(current) if same_content(current, slice) => {}
            Some(current) => {
                let mut updated = slice.clone();
                updated.metadata.resource_version = current.metadata.resource_version.clone();
                api.replace(&slice.name_any(), &params, &updated)
                    .await
                    .map_err(api_error(Side::Virtual, "update", "EndpointSlice", &key(slice)))?;
                wrote = true;
            }
            None => {
                api.create(&params, slice).await.map_err(api_error(
                    Side::Virtual,
                    "create",
                    "EndpointSlice",
                    &key(slice),
                ))?;
                wrote = true;
            }
        }
    }
    for stale in observed
        .iter()
        .filter(|o| !desired.iter().any(|d| d.name_any() == o.name_any()))
    {
        match api.delete(&stale.name_any(), &DeleteParams::default()).await {
            Ok(_) => wrote = true,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => {
                return Err(api_error(Side::Virtual, "delete", "EndpointSlice", &key(stale))(
                    err,
                ));
            }
        }
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn one_virtual_slice_per_host_slice_with_translated_pods() {
        let service: Service =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "shop"}})).unwrap();
        let host_slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-x-shop-abc12", "labels": {SERVICE_NAME_LABEL: "web-x-shop"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.5"], "targetRef": {"kind": "Pod", "name": "web-1-x-shop", "namespace": "host"}},
                {"addresses": ["10.244.0.6"], "targetRef": {"kind": "Pod", "name": "someone-else", "namespace": "host"}}
            ],
            "ports": [{"port": 8080}]
        }))
        .unwrap();
        let other: EndpointSlice = serde_json::from_value(
            json!({"metadata": {"name": "db-1", "labels": {SERVICE_NAME_LABEL: "db-x-shop"}}, "addressType": "IPv4", "endpoints": []}),
        )
        .unwrap();
        let slices = virtual_slices(
            &service,
            "web-x-shop",
            &[Arc::new(host_slice), Arc::new(other)],
            |pod| (pod == "web-1-x-shop").then(|| VirtualKey::namespaced("shop", "web-1")),
        );
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!(slice.metadata.name.as_deref(), Some("web-abc12"));
        assert_eq!(slice.labels()[SERVICE_NAME_LABEL], "web");
        let endpoints = slice.endpoints.as_ref().unwrap();
        assert_eq!(endpoints.len(), 1);
        let target = endpoints[0].target_ref.as_ref().unwrap();
        assert_eq!(
            (target.name.as_deref(), target.namespace.as_deref()),
            (Some("web-1"), Some("shop"))
        );
    }
}
