//! The vendored documents (`apiserver/openapi/`): compiled in gzip-compressed, decompressed on
//! first use and kept, so a server that is never asked for OpenAPI never parses any of it.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use super::schema::Schemas;

/// The compressed files, by name (`index.json` names them).
const FILES: &[(&str, &[u8])] = &[
    ("api__v1.json.gz", include_bytes!("../../openapi/api__v1.json.gz")),
    (
        "apis__apiextensions.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__apiextensions.k8s.io__v1.json.gz"),
    ),
    (
        "apis__apps__v1.json.gz",
        include_bytes!("../../openapi/apis__apps__v1.json.gz"),
    ),
    (
        "apis__authentication.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__authentication.k8s.io__v1.json.gz"),
    ),
    (
        "apis__authorization.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__authorization.k8s.io__v1.json.gz"),
    ),
    (
        "apis__coordination.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__coordination.k8s.io__v1.json.gz"),
    ),
    (
        "apis__discovery.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__discovery.k8s.io__v1.json.gz"),
    ),
    (
        "apis__networking.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__networking.k8s.io__v1.json.gz"),
    ),
    (
        "apis__policy__v1.json.gz",
        include_bytes!("../../openapi/apis__policy__v1.json.gz"),
    ),
    (
        "apis__scheduling.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__scheduling.k8s.io__v1.json.gz"),
    ),
    (
        "apis__storage.k8s.io__v1.json.gz",
        include_bytes!("../../openapi/apis__storage.k8s.io__v1.json.gz"),
    ),
    ("swagger.json.gz", include_bytes!("../../openapi/swagger.json.gz")),
];

const INDEX: &str = include_str!("../../openapi/index.json");

#[derive(Deserialize)]
struct IndexFile {
    v2: IndexEntry,
    v3: HashMap<String, IndexEntry>,
}

#[derive(Deserialize)]
struct IndexEntry {
    file: String,
    hash: String,
}

/// One vendored document.
pub(crate) struct Document {
    compressed: &'static [u8],
    /// SHA-512 of the decompressed bytes, upper-case hex, as kube-apiserver's `hash`.
    pub hash: String,
    bytes: OnceLock<Arc<Vec<u8>>>,
    schemas: OnceLock<Arc<Schemas>>,
}

impl Document {
    fn new(entry: IndexEntry) -> Self {
        let compressed = FILES
            .iter()
            .find(|(name, _)| *name == entry.file)
            .map(|(_, data)| *data)
            .unwrap_or_else(|| panic!("openapi/index.json names {} which is not compiled in", entry.file));
        Document {
            compressed,
            hash: entry.hash,
            bytes: OnceLock::new(),
            schemas: OnceLock::new(),
        }
    }

    fn decompress(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.compressed.len() * 12);
        flate2::read::GzDecoder::new(self.compressed)
            .read_to_end(&mut out)
            .expect("a vendored OpenAPI document is valid gzip");
        out
    }

    /// The document as served (decompressed once, then kept).
    pub fn bytes(&self) -> Arc<Vec<u8>> {
        self.bytes.get_or_init(|| Arc::new(self.decompress())).clone()
    }

    /// The structural part of its schemas (descriptions and the rest dropped), parsed once.
    pub fn schemas(&self) -> Arc<Schemas> {
        self.schemas
            .get_or_init(|| {
                let bytes = match self.bytes.get() {
                    Some(kept) => kept.clone(),
                    None => Arc::new(self.decompress()),
                };
                Arc::new(Schemas::from_document(&bytes).expect("a vendored OpenAPI document parses"))
            })
            .clone()
    }
}

/// All vendored documents: v3 by group-version path (`api/v1`, `apis/apps/v1`) and v2.
pub(crate) struct Vendored {
    pub v3: HashMap<String, Document>,
    pub v2: Document,
}

/// The process-wide set (the documents are the same for every server).
pub(crate) fn vendored() -> &'static Vendored {
    static VENDORED: OnceLock<Vendored> = OnceLock::new();
    VENDORED.get_or_init(|| {
        let index: IndexFile = serde_json::from_str(INDEX).expect("openapi/index.json parses");
        Vendored {
            v3: index
                .v3
                .into_iter()
                .map(|(path, entry)| (path, Document::new(entry)))
                .collect(),
            v2: Document::new(index.v2),
        }
    })
}

/// The v3 document of `group/version`, if vendored.
pub(crate) fn v3(group: &str, version: &str) -> Option<&'static Document> {
    vendored().v3.get(&super::gv_path(group, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_builtin_group_version_is_vendored_with_its_hash() {
        let registry = crate::resources::Registry::builtin();
        for def in registry.all() {
            let doc = v3(&def.group, &def.version)
                .unwrap_or_else(|| panic!("{} is not vendored", def.api_version()));
            assert_eq!(doc.hash.len(), 128);
        }
        let core = v3("", "v1").unwrap();
        let value: serde_json::Value = serde_json::from_slice(&core.bytes()).unwrap();
        assert!(
            value["components"]["schemas"]["io.k8s.api.core.v1.ConfigMap"]["properties"]["data"].is_object()
        );
        assert!(vendored().v2.bytes().starts_with(b"{"));
    }
}
