//! Which virtual cluster a host object was made for, and the host-side record of it.
//!
//! A virtual cluster's identity is the UID (and creation time) of its `kube-system`
//! namespace: an emptied or replaced datastore gets a new one. Pure: the record is read and
//! written by [`super::record`].

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::ConfigMap,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use vcsync_translators::CLUSTER_UID_ANNOTATION;

/// Label on the identity record, naming the instance it is for.
pub const RECORD_LABEL: &str = "vcsync.dev/identity-of";
const UID_KEY: &str = "virtualClusterUID";
const CREATED_KEY: &str = "virtualClusterCreated";
const EARLIER_KEY: &str = "earlierClusters";

/// The identity of one virtual cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// UID of the virtual `kube-system` namespace.
    pub uid: String,
    /// When that namespace was created (by the virtual API server's clock), if known.
    pub created: Option<jiff::Timestamp>,
}

impl ClusterIdentity {
    /// The identity a namespace's metadata gives.
    pub fn of_namespace(meta: &ObjectMeta) -> Option<Self> {
        Some(Self {
            uid: meta.uid.clone()?,
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        })
    }
}

/// Whether a host object belongs to the virtual cluster being synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lineage {
    /// Made for the current virtual cluster (or unknown: no identity to compare with).
    Current,
    /// Made for an earlier virtual cluster of the same instance, whose datastore was emptied
    /// or replaced; its UID if the object names it.
    Earlier {
        /// The earlier cluster's UID, None for copies made before vcsync stamped one.
        uid: Option<String>,
    },
}

/// The lineage of `host` against `current`. A stamped object names its cluster; an unstamped one
/// (made by an older vcsync) is earlier if it was created before the current cluster existed,
/// since no copy of one of its objects can be older than the cluster itself. Clock skew between
/// the two API servers errs on the safe side: a copy made in the skew looks earlier and is kept.
pub fn lineage(current: Option<&ClusterIdentity>, host: &ObjectMeta) -> Lineage {
    let Some(current) = current else {
        return Lineage::Current;
    };
    match host
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLUSTER_UID_ANNOTATION))
    {
        Some(uid) if *uid == current.uid => Lineage::Current,
        Some(uid) => Lineage::Earlier {
            uid: Some(uid.clone()),
        },
        None => match (&host.creation_timestamp, current.created) {
            (Some(Time(made)), Some(born)) if *made < born => Lineage::Earlier { uid: None },
            _ => Lineage::Current,
        },
    }
}

/// What the host-side record says: the cluster this instance syncs, and those it replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityRecord {
    /// The cluster synced last.
    pub current: Option<ClusterIdentity>,
    /// Clusters that were replaced, oldest first; their copies may still be on the host.
    pub earlier: Vec<ClusterIdentity>,
}

/// What starting against `current` means, given the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Startup {
    /// No record: the first start of this instance (or of a vcsync that keeps one).
    First,
    /// The recorded cluster: nothing was replaced.
    Same,
    /// The recorded cluster is not the one served now: its datastore was emptied or replaced.
    Replaced {
        /// The cluster the record named.
        previous: ClusterIdentity,
    },
}

impl IdentityRecord {
    /// Compares the record with the cluster served now.
    pub fn startup(&self, current: &ClusterIdentity) -> Startup {
        match &self.current {
            None => Startup::First,
            Some(recorded) if recorded.uid == current.uid => Startup::Same,
            Some(recorded) => Startup::Replaced {
                previous: recorded.clone(),
            },
        }
    }

    /// The record after starting against `current`: it becomes the current cluster, the one it
    /// replaced joins the earlier ones.
    pub fn advanced(&self, current: &ClusterIdentity) -> IdentityRecord {
        let mut next = self.clone();
        if let Startup::Replaced { previous } = self.startup(current) {
            next.earlier
                .retain(|e| e.uid != previous.uid && e.uid != current.uid);
            next.earlier.push(previous);
        }
        next.current = Some(current.clone());
        next
    }

    /// The record kept in `config_map`'s data.
    pub fn from_config_map(config_map: &ConfigMap) -> IdentityRecord {
        let empty = BTreeMap::new();
        let data = config_map.data.as_ref().unwrap_or(&empty);
        let identity = |uid: &str, created: Option<&str>| ClusterIdentity {
            uid: uid.to_string(),
            created: created.and_then(|c| c.parse().ok()),
        };
        IdentityRecord {
            current: data
                .get(UID_KEY)
                .map(|uid| identity(uid, data.get(CREATED_KEY).map(String::as_str))),
            earlier: data
                .get(EARLIER_KEY)
                .map(|lines| {
                    lines
                        .lines()
                        .filter_map(|line| {
                            let mut parts = line.split_whitespace();
                            Some(identity(parts.next()?, parts.next()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The data of the record's ConfigMap: readable with `kubectl get configmap -o yaml`.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::new();
        let created =
            |identity: &ClusterIdentity| identity.created.map(|c| c.to_string()).unwrap_or_default();
        if let Some(current) = &self.current {
            data.insert(UID_KEY.to_string(), current.uid.clone());
            data.insert(CREATED_KEY.to_string(), created(current));
        }
        if !self.earlier.is_empty() {
            let lines: Vec<String> = self
                .earlier
                .iter()
                .map(|e| format!("{} {}", e.uid, created(e)).trim_end().to_string())
                .collect();
            data.insert(EARLIER_KEY.to_string(), lines.join("\n") + "\n");
        }
        data
    }
}

/// Name of the record's ConfigMap in the host namespace. A dot keeps it apart from every
/// translated name (DNS labels, no dots); the instance is lower-cased and `_` replaced, as a
/// ConfigMap name requires.
pub fn record_name(instance: &str) -> String {
    let clean: String = instance
        .chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    format!("vcsync-identity.{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(uid: &str, created: &str) -> ClusterIdentity {
        ClusterIdentity {
            uid: uid.into(),
            created: Some(created.parse().unwrap()),
        }
    }

    fn host(stamp: Option<&str>, created: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: stamp.map(|uid| [(CLUSTER_UID_ANNOTATION.to_string(), uid.to_string())].into()),
            creation_timestamp: Some(Time(created.parse().unwrap())),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_stamped_copy_belongs_to_the_cluster_it_names() {
        let now = identity("b", "2026-12-01T10:00:00Z");
        assert_eq!(
            lineage(Some(&now), &host(Some("b"), "2026-12-01T09:00:00Z")),
            Lineage::Current,
            "the stamp wins over the clock"
        );
        assert_eq!(
            lineage(Some(&now), &host(Some("a"), "2026-12-01T11:00:00Z")),
            Lineage::Earlier {
                uid: Some("a".into())
            }
        );
    }

    #[test]
    fn an_unstamped_copy_older_than_the_cluster_is_earlier() {
        let now = identity("b", "2026-12-01T10:00:00Z");
        assert_eq!(
            lineage(Some(&now), &host(None, "2026-12-01T09:59:59Z")),
            Lineage::Earlier { uid: None }
        );
        assert_eq!(
            lineage(Some(&now), &host(None, "2026-12-01T10:00:00Z")),
            Lineage::Current
        );
        assert_eq!(
            lineage(None, &host(Some("a"), "2026-12-01T09:00:00Z")),
            Lineage::Current,
            "no identity, nothing to compare with"
        );
    }

    #[test]
    fn the_record_tells_first_same_and_replaced_starts_apart() {
        let a = identity("a", "2026-12-01T10:00:00Z");
        let b = identity("b", "2026-12-02T10:00:00Z");
        let none = IdentityRecord::default();
        assert_eq!(none.startup(&a), Startup::First);
        let first = none.advanced(&a);
        assert_eq!(first.startup(&a), Startup::Same);
        assert_eq!(first.advanced(&a), first, "a same start changes nothing");
        assert_eq!(first.startup(&b), Startup::Replaced { previous: a.clone() });
        let replaced = first.advanced(&b);
        assert_eq!(replaced.current, Some(b.clone()));
        assert_eq!(replaced.earlier, vec![a.clone()]);
        // Back to a (a restored backup): b becomes earlier, a is not listed twice.
        let back = replaced.advanced(&a);
        assert_eq!(back.current, Some(a));
        assert_eq!(back.earlier, vec![b]);
    }

    #[test]
    fn the_record_round_trips_through_a_config_map() {
        let record = IdentityRecord {
            current: Some(identity("c", "2026-12-03T10:00:00Z")),
            earlier: vec![
                identity("a", "2026-12-01T10:00:00Z"),
                ClusterIdentity {
                    uid: "b".into(),
                    created: None,
                },
            ],
        };
        let config_map = ConfigMap {
            data: Some(record.to_data()),
            ..ConfigMap::default()
        };
        assert_eq!(IdentityRecord::from_config_map(&config_map), record);
        assert_eq!(
            IdentityRecord::from_config_map(&ConfigMap::default()),
            IdentityRecord::default()
        );
    }

    #[test]
    fn record_names_are_config_map_names_apart_from_translated_ones() {
        assert_eq!(record_name("Tenant_A"), "vcsync-identity.tenant-a");
        assert!(record_name("x-default").contains('.'));
    }
}
