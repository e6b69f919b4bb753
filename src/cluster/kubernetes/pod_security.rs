//! Pod Security: the labels of the host namespace and the level of vcsync's own gate.

use std::collections::BTreeMap;

use crate::cluster::{ClusterError, Result, Values};

use super::names::*;

/// A Pod Security level of the values (`podSecurity.<mode>`): unset is `default`, `""` none.
pub(super) fn pod_security_level(
    mode: &str,
    level: Option<&str>,
    default: Option<&'static str>,
) -> Result<Option<&'static str>> {
    match level {
        None => Ok(default),
        Some("") => Ok(None),
        Some(level) => POD_SECURITY_LEVELS
            .into_iter()
            .find(|known| *known == level)
            .map(Some)
            .ok_or_else(|| {
                ClusterError::BadInput(format!(
                    "values: podSecurity.{mode}: {level:?} is not a Pod Security level (privileged, baseline, \
                     restricted, or \"\" for no label)"
                ))
            }),
    }
}

/// The level the host namespace enforces (`podSecurity.enforce`, default baseline); None: no
/// label. `restricted` is refused: the control plane's k3s runs as root.
pub(super) fn enforced_pod_security(values: &Values) -> Result<Option<&'static str>> {
    let level = pod_security_level(
        "enforce",
        values.pod_security.enforce.as_deref(),
        Some(DEFAULT_POD_SECURITY_LEVEL),
    )?;
    if level == Some("restricted") {
        return Err(ClusterError::BadInput(
            "values: podSecurity.enforce: restricted would refuse the control plane's own pod (k3s runs \
             as root); enforce baseline on the host and set config.sync.pods.podSecurityStandard: \
             restricted to hold the tenant's pods to restricted"
                .into(),
        ));
    }
    Ok(level)
}

/// The Pod Security Admission labels of the host namespace: `pod-security.kubernetes.io/<mode>`
/// and `<mode>-version` for each mode with a level.
pub fn pod_security_labels(values: &Values) -> Result<BTreeMap<String, String>> {
    let pod_security = &values.pod_security;
    let version = pod_security.version.as_deref().unwrap_or("latest");
    let valid_version = version == "latest"
        || version
            .strip_prefix("v1.")
            .is_some_and(|minor| !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit()));
    if !valid_version {
        return Err(ClusterError::BadInput(format!(
            "values: podSecurity.version: {version:?} is not a version of the Pod Security Standards \
             (latest or v1.N)"
        )));
    }
    let levels = [
        ("enforce", enforced_pod_security(values)?),
        (
            "warn",
            pod_security_level("warn", pod_security.warn.as_deref(), None)?,
        ),
        (
            "audit",
            pod_security_level("audit", pod_security.audit.as_deref(), None)?,
        ),
    ];
    let mut labels = BTreeMap::new();
    for (mode, level) in levels {
        if let Some(level) = level {
            labels.insert(format!("{POD_SECURITY_LABEL}{mode}"), level.to_string());
            labels.insert(format!("{POD_SECURITY_LABEL}{mode}-version"), version.to_string());
        }
    }
    Ok(labels)
}

/// The values with `config.sync.pods.podSecurityStandard` set to the level the host namespace
/// enforces, so vcsync's gate and the host's agree; a level the config sets itself is kept
/// when it is as strict or stricter, and refused when looser (the host would refuse pods
/// vcsync lets through).
pub(super) fn with_pod_security_standard(values: &Values) -> Result<Values> {
    let mut values = values.clone();
    let Some(enforced) = enforced_pod_security(&values)? else {
        return Ok(values);
    };
    let rank = |level: &str| POD_SECURITY_LEVELS.iter().position(|known| *known == level);
    let config = values.config.get_or_insert_with(Default::default);
    let sync = config
        .entry("sync".into())
        .or_insert_with(|| serde_yaml_ng::Mapping::new().into());
    // Anything else than mappings is for the config's own check to refuse.
    let Some(pods) = sync.as_mapping_mut().map(|sync| {
        sync.entry("pods".into())
            .or_insert_with(|| serde_yaml_ng::Mapping::new().into())
    }) else {
        return Ok(values);
    };
    let Some(pods) = pods.as_mapping_mut() else {
        return Ok(values);
    };
    match pods.get("podSecurityStandard").and_then(|level| level.as_str()) {
        Some(own) if rank(own).is_some_and(|own| Some(own) < rank(enforced)) => {
            Err(ClusterError::BadInput(format!(
                "values: config.sync.pods.podSecurityStandard: {own} is looser than podSecurity.enforce: \
                 {enforced}: the host would refuse pods vcsync lets through (set it to {enforced} or \
                 stricter, or leave it unset)"
            )))
        }
        Some(_) => Ok(values),
        None if pods.contains_key("podSecurityStandard") => Ok(values),
        None => {
            pods.insert("podSecurityStandard".into(), enforced.into());
            Ok(values)
        }
    }
}
