//! The link between an object `vcsync cluster restore` recreated and the host copy made for the
//! object it was snapshotted from.
//!
//! A restore recreates virtual objects with new UIDs, usually in a new virtual cluster (the old
//! datastore was lost). Their host copies still exist, made for the old cluster and the old
//! objects, and the syncer leaves such copies alone unless told otherwise. The restore marks each
//! object it creates with [`RESTORED_UID_ANNOTATION`], the UID the object had when the snapshot
//! was taken; a host copy whose [`OBJECT_UID_ANNOTATION`] names that UID is the copy of exactly
//! this object, and is re-linked (updated in place) rather than kept aside or replaced.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::OBJECT_UID_ANNOTATION;

/// Annotation `vcsync cluster restore` puts on each virtual object it recreates: the UID the
/// object had in the snapshotted cluster. Under the reserved prefix, so it never reaches the host.
pub const RESTORED_UID_ANNOTATION: &str = "vcsync.dev/restored-uid";

/// Whether `host` is the copy made for the object `virtual_meta` was restored from.
pub fn is_copy_of_restored(virtual_meta: &ObjectMeta, host: &ObjectMeta) -> bool {
    let restored = virtual_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTORED_UID_ANNOTATION));
    let made_for = host
        .annotations
        .as_ref()
        .and_then(|a| a.get(OBJECT_UID_ANNOTATION));
    matches!((restored, made_for), (Some(a), Some(b)) if !a.is_empty() && a == b)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(key: &str, value: &str) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_host_copy_is_the_restored_objects_only_when_it_names_the_snapshotted_uid() {
        let restored = meta(RESTORED_UID_ANNOTATION, "old-uid");
        assert!(is_copy_of_restored(
            &restored,
            &meta(OBJECT_UID_ANNOTATION, "old-uid")
        ));
        assert!(!is_copy_of_restored(
            &restored,
            &meta(OBJECT_UID_ANNOTATION, "other-uid")
        ));
        assert!(!is_copy_of_restored(&restored, &ObjectMeta::default()));
        assert!(!is_copy_of_restored(
            &ObjectMeta::default(),
            &meta(OBJECT_UID_ANNOTATION, "old-uid")
        ));
        assert!(!is_copy_of_restored(
            &meta(RESTORED_UID_ANNOTATION, ""),
            &meta(OBJECT_UID_ANNOTATION, "")
        ));
    }
}
