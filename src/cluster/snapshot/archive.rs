//! The snapshot archive: gzip-compressed JSON lines, a [`Manifest`] first, then one [`Entry`]
//! per object in the order a restore creates them.
//!
//! One object per line keeps the format streamable and readable with `zcat | jq`; the manifest's
//! count lets a reader tell a truncated archive from a complete one.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
};

use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use serde::{Deserialize, Serialize};

/// What the first line's `format` says.
pub const FORMAT: &str = "vcsync.dev/snapshot";
/// The archive version this binary writes and reads.
pub const VERSION: u32 = 1;

/// The archive's first line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The archive version ([`VERSION`]).
    pub version: u32,
    /// The virtual cluster's name.
    pub cluster: String,
    /// The UID of the cluster's `kube-system` namespace when the snapshot was taken (its
    /// identity, see the syncer's host guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_uid: Option<String>,
    /// When the snapshot was taken (RFC 3339).
    pub created: String,
    /// The virtual API server's version (`gitVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// How many objects follow.
    pub objects: usize,
    /// Objects by `apiVersion/Kind`.
    pub counts: BTreeMap<String, usize>,
}

/// The API resource an object is served as.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// API group, empty for the core group.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// The plural the API serves it under.
    pub plural: String,
    /// Whether it lives in namespaces.
    pub namespaced: bool,
}

impl Resource {
    /// `group/version` (`version` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// What the manifest counts it under: `apiVersion/Kind`.
    pub fn count_key(&self) -> String {
        format!("{}/{}", self.api_version(), self.kind)
    }

    /// kube's description of it, for dynamic clients.
    pub fn api_resource(&self) -> kube::core::ApiResource {
        kube::core::ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

/// One object of the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Where it is served.
    pub resource: Resource,
    /// The object, server-set fields and status removed (its UID kept: restores link by it).
    pub object: serde_json::Value,
}

impl Entry {
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace`, for namespaced objects.
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"].as_str()
    }

    /// `metadata.uid` as it was in the snapshotted cluster.
    pub fn uid(&self) -> Option<&str> {
        self.object["metadata"]["uid"].as_str()
    }

    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn display(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {}/{}", self.resource.kind, ns, self.name()),
            None => format!("{} {}", self.resource.kind, self.name()),
        }
    }
}

/// Why an archive cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or decompressing failed.
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not a vcsync snapshot manifest.
    #[error("not a vcsync snapshot (line 1: {0})")]
    NotASnapshot(String),
    /// Written by a newer vcsync.
    #[error("snapshot version {found} is newer than this vcsync reads ({VERSION}); use a newer vcsync")]
    Version {
        /// The archive's version.
        found: u32,
    },
    /// An object line does not parse.
    #[error("line {line}: {detail}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// Fewer or more objects than the manifest counts: cut short, or not one archive.
    #[error(
        "the manifest counts {expected} objects but the archive holds {found}: it is truncated or damaged"
    )]
    Count {
        /// The manifest's count.
        expected: usize,
        /// Objects read.
        found: usize,
    },
}

/// Writes `manifest` and `entries` as a gzip-compressed archive to `out`.
pub fn write(out: impl Write, manifest: &Manifest, entries: &[Entry]) -> std::io::Result<()> {
    let mut gz = GzEncoder::new(std::io::BufWriter::new(out), Compression::default());
    serde_json::to_writer(&mut gz, manifest)?;
    gz.write_all(b"\n")?;
    for entry in entries {
        serde_json::to_writer(&mut gz, entry)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()?.flush()
}

/// Reads an archive [`write`] wrote, checking its manifest and count.
pub fn read(input: impl Read) -> Result<(Manifest, Vec<Entry>), ArchiveError> {
    let mut lines = BufReader::new(GzDecoder::new(input)).lines();
    let first = lines
        .next()
        .ok_or_else(|| ArchiveError::NotASnapshot("empty".into()))??;
    let manifest: Manifest =
        serde_json::from_str(&first).map_err(|err| ArchiveError::NotASnapshot(err.to_string()))?;
    if manifest.format != FORMAT {
        return Err(ArchiveError::NotASnapshot(format!(
            "format {:?}",
            manifest.format
        )));
    }
    if manifest.version > VERSION {
        return Err(ArchiveError::Version {
            found: manifest.version,
        });
    }
    let mut entries = Vec::with_capacity(manifest.objects.min(1 << 20));
    for (index, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = serde_json::from_str(&line).map_err(|err| ArchiveError::Line {
            line: index + 2,
            detail: err.to_string(),
        })?;
        if entry.name().is_empty() {
            return Err(ArchiveError::Line {
                line: index + 2,
                detail: "an object without metadata.name".into(),
            });
        }
        entries.push(entry);
    }
    if entries.len() != manifest.objects {
        return Err(ArchiveError::Count {
            expected: manifest.objects,
            found: entries.len(),
        });
    }
    Ok((manifest, entries))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            resource: Resource {
                group: String::new(),
                version: "v1".into(),
                kind: "ConfigMap".into(),
                plural: "configmaps".into(),
                namespaced: true,
            },
            object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}")},
                "data": {"k": "v"}}),
        }
    }

    fn manifest(objects: usize) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            cluster: "demo".into(),
            cluster_uid: Some("ks-uid".into()),
            created: "2026-12-07T20:00:00Z".into(),
            server_version: Some("v1.37.0".into()),
            objects,
            counts: BTreeMap::from([("v1/ConfigMap".into(), objects)]),
        }
    }

    #[test]
    fn an_archive_reads_back_as_written() {
        let entries = vec![entry("a"), entry("b")];
        let mut bytes = Vec::new();
        write(&mut bytes, &manifest(2), &entries).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
        let (read_manifest, read_entries) = read(bytes.as_slice()).unwrap();
        assert_eq!(read_manifest, manifest(2));
        assert_eq!(read_entries, entries);
        assert_eq!(read_entries[1].display(), "ConfigMap default/b");
        assert_eq!(read_entries[1].uid(), Some("u-b"));
    }

    #[test]
    fn a_truncated_or_foreign_or_newer_archive_is_refused_with_what_is_wrong() {
        let mut bytes = Vec::new();
        write(&mut bytes, &manifest(3), &[entry("a"), entry("b")]).unwrap();
        let err = read(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                ArchiveError::Count {
                    expected: 3,
                    found: 2
                }
            ),
            "{err}"
        );

        let mut cut = Vec::new();
        write(&mut cut, &manifest(2), &[entry("a"), entry("b")]).unwrap();
        cut.truncate(cut.len() - 12);
        assert!(read(cut.as_slice()).is_err(), "a cut gzip stream");

        assert!(matches!(
            read(&b"not gzip at all"[..]).unwrap_err(),
            ArchiveError::Io(_)
        ));

        let mut plain = Vec::new();
        let mut gz = GzEncoder::new(&mut plain, Compression::default());
        gz.write_all(b"{\"kind\":\"List\"}\n").unwrap();
        gz.finish().unwrap();
        assert!(matches!(
            read(plain.as_slice()).unwrap_err(),
            ArchiveError::NotASnapshot(_)
        ));

        let mut newer = manifest(0);
        newer.version = VERSION + 1;
        let mut bytes = Vec::new();
        write(&mut bytes, &newer, &[]).unwrap();
        let err = read(bytes.as_slice()).unwrap_err();
        assert!(err.to_string().contains("use a newer vcsync"), "{err}");

        let mut bad_line = Vec::new();
        let mut gz = GzEncoder::new(&mut bad_line, Compression::default());
        serde_json::to_writer(&mut gz, &manifest(1)).unwrap();
        gz.write_all(b"\n{\"resource\": 1}\n").unwrap();
        gz.finish().unwrap();
        let err = read(bad_line.as_slice()).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
