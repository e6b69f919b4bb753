//! Query parameters of resource requests (list, watch and delete options).

use std::time::Duration;

use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::{ApiError, ApiResult};

/// The parsed query string of one request. Unknown parameters are ignored, as they are harmless
/// for an in-memory server (fieldValidation, pretty, ...).
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub grace_period_seconds: Option<i64>,
    pub dry_run: bool,
    /// `fieldManager` and `force` (server-side apply, crate::managed_fields).
    pub field_manager: Option<String>,
    pub force: Option<bool>,
}

impl Query {
    /// Parses a raw (percent-encoded) query string.
    pub fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let mut query = Query::default();
        let truthy = |v: &str| matches!(v, "true" | "1" | "True");
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let value = value.as_ref();
            match key.as_ref() {
                "watch" => query.watch = truthy(value),
                "resourceVersion" => {
                    query.resource_version = Some(value.to_string()).filter(|v| !v.is_empty())
                }
                "resourceVersionMatch" => query.resource_version_match = Some(value.to_string()),
                "labelSelector" => {
                    query.selectors.labels = LabelSelector::parse(value)
                        .map_err(|e| ApiError::bad_request(format!("unable to parse labelSelector: {e}")))?;
                }
                "fieldSelector" => {
                    query.selectors.fields = FieldSelector::parse(value)
                        .map_err(|e| ApiError::bad_request(format!("unable to parse fieldSelector: {e}")))?;
                }
                "limit" => query.limit = value.parse().ok().filter(|l| *l > 0),
                "continue" => query.continue_token = Some(value.to_string()).filter(|v| !v.is_empty()),
                "timeoutSeconds" => query.timeout = value.parse().ok().map(Duration::from_secs),
                "allowWatchBookmarks" => query.bookmarks = truthy(value),
                "sendInitialEvents" => query.send_initial_events = truthy(value),
                "gracePeriodSeconds" => query.grace_period_seconds = value.parse().ok(),
                "dryRun" => query.dry_run = !value.is_empty(),
                "fieldManager" => query.field_manager = Some(value.to_string()),
                "force" => query.force = Some(truthy(value)),
                _ => {}
            }
        }
        Ok(query)
    }

    /// The requested resourceVersion as a number; "0" and absent mean "any".
    pub fn resource_version_number(&self) -> ApiResult<Option<u64>> {
        match self.resource_version.as_deref() {
            None | Some("0") => Ok(None),
            Some(rv) => rv
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_list_and_watch_options() {
        let q = Query::parse(Some(
            "watch=1&resourceVersion=12&labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&limit=5&timeoutSeconds=3&allowWatchBookmarks=true",
        ))
        .unwrap();
        assert!(q.watch && q.bookmarks);
        assert_eq!(q.resource_version_number().unwrap(), Some(12));
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.timeout, Some(Duration::from_secs(3)));
        assert!(Query::parse(Some("labelSelector=a+in+b")).is_err());
        assert_eq!(
            Query::parse(None).unwrap().resource_version_number().unwrap(),
            None
        );
    }
}
