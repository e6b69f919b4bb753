//! Keeping one ConfigMap at the content it should have: the one write both of the template's
//! controllers make. Compares first, so a restart or a repeated event writes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, api::ObjectMeta};
use vcsync_syncer::{
    Result, Side,
    error::{api_error, status_code},
    writes::write_params,
};

/// The label the template puts on what it creates, so that nobody mistakes it for theirs
/// (and vcsync's own ownership label stays off it: a host object with that label and no
/// virtual twin would be deleted as a leftover).
pub const CREATED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The value of [`CREATED_BY_LABEL`].
pub const CREATED_BY: &str = "vcsync-plugin-template";

/// What the ConfigMap `name` should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The ConfigMap's name.
    pub name: String,
    /// Its `data`.
    pub data: BTreeMap<String, String>,
}

impl Desired {
    /// The object to create.
    fn object(&self) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    CREATED_BY_LABEL.to_string(),
                    CREATED_BY.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(self.data.clone()),
            ..ConfigMap::default()
        }
    }

    /// Whether `existing` already holds what it should.
    pub fn is_met_by(&self, existing: &ConfigMap) -> bool {
        existing.data.as_ref() == Some(&self.data)
    }
}

/// What [`keep`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// It held what it should already: nothing written.
    Unchanged,
    /// It was missing and is created.
    Created,
    /// Its data differed and is replaced (on the version read, so a concurrent write conflicts).
    Updated,
}

/// Makes the ConfigMap of `desired` in `api`'s namespace hold `desired.data`, given what is
/// there now (`existing`, None: absent). A conflict or an AlreadyExists is returned as an error
/// so that the caller looks again.
pub async fn keep(
    api: &Api<ConfigMap>,
    side: Side,
    existing: Option<&ConfigMap>,
    desired: &Desired,
) -> Result<Kept> {
    let params = write_params();
    match existing {
        Some(existing) if desired.is_met_by(existing) => Ok(Kept::Unchanged),
        Some(existing) => {
            let mut updated = existing.clone();
            updated.data = Some(desired.data.clone());
            api.replace(&desired.name, &params, &updated)
                .await
                .map_err(api_error(side, "update", "ConfigMap", &desired.name))?;
            Ok(Kept::Updated)
        }
        None => {
            api.create(&params, &desired.object()).await.map_err(api_error(
                side,
                "create",
                "ConfigMap",
                &desired.name,
            ))?;
            Ok(Kept::Created)
        }
    }
}

/// Reads the ConfigMap `name` live (None: it does not exist).
pub async fn read(api: &Api<ConfigMap>, side: Side, name: &str) -> Result<Option<ConfigMap>> {
    match api.get(name).await {
        Ok(config_map) => Ok(Some(config_map)),
        Err(err) if status_code(&err) == Some(404) => Ok(None),
        Err(err) => Err(api_error(side, "get", "ConfigMap", name)(err)),
    }
}
