//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the
//! kinds kubectl's typed clients send that way (`kubectl create configmap|secret|namespace|
//! serviceaccount|service|deployment|token`). client-go does not fall back to JSON on 415, so these
//! commands need it.
//!
//! The envelope is the magic `k8s\0` followed by a `runtime.Unknown` message whose `raw` field is
//! the object. Schemas are small field tables (field number, JSON name, type) transcribed from the
//! Kubernetes generated.proto files, covering what those commands send. Empty and zero fields are
//! dropped, as JSON `omitempty` would; a non-empty field missing from a table is an error (the
//! client is told to send JSON) rather than silently lost.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The type of one field.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Msg(&'static Schema),
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>` (base64 in JSON).
    BytesMap,
    /// `map<string, resource.Quantity>`.
    QuantityMap,
    /// `metav1.Time`: seconds + nanos, as RFC 3339.
    Time,
    /// `intstr.IntOrString`: type, intVal, strVal.
    IntOrStr,
    /// `resource.Quantity`: a string in field 1.
    Quantity,
}

/// (field number, JSON name, repeated, type).
type Schema = [(u64, &'static str, bool, Kind)];

use Kind::*;

const OBJECT_META: &Schema = &[
    (1, "name", false, Str),
    (2, "generateName", false, Str),
    (3, "namespace", false, Str),
    (5, "uid", false, Str),
    (6, "resourceVersion", false, Str),
    (7, "generation", false, Int),
    (8, "creationTimestamp", false, Time),
    (11, "labels", false, StrMap),
    (12, "annotations", false, StrMap),
    (13, "ownerReferences", true, Msg(OWNER_REFERENCE)),
    (14, "finalizers", true, Str),
];
const OWNER_REFERENCE: &Schema = &[
    (1, "kind", false, Str),
    (3, "name", false, Str),
    (4, "uid", false, Str),
    (5, "apiVersion", false, Str),
    (6, "controller", false, Bool),
    (7, "blockOwnerDeletion", false, Bool),
];
const CONFIG_MAP: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "data", false, StrMap),
    (3, "binaryData", false, BytesMap),
    (4, "immutable", false, Bool),
];
const SECRET: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "data", false, BytesMap),
    (3, "type", false, Str),
    (4, "stringData", false, StrMap),
    (5, "immutable", false, Bool),
];
const NAMESPACE: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "spec", false, Msg(NAMESPACE_SPEC)),
    (3, "status", false, Msg(PHASE_STATUS)),
];
const NAMESPACE_SPEC: &Schema = &[(1, "finalizers", true, Str)];
const PHASE_STATUS: &Schema = &[(1, "phase", false, Str)];
const NAME_REF: &Schema = &[(1, "name", false, Str)];
const SERVICE_ACCOUNT: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (3, "imagePullSecrets", true, Msg(NAME_REF)),
    (4, "automountServiceAccountToken", false, Bool),
];
const SERVICE: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "spec", false, Msg(SERVICE_SPEC)),
    (3, "status", false, Msg(EMPTY)),
];
const SERVICE_SPEC: &Schema = &[
    (1, "ports", true, Msg(SERVICE_PORT)),
    (2, "selector", false, StrMap),
    (3, "clusterIP", false, Str),
    (4, "type", false, Str),
    (5, "externalIPs", true, Str),
    (7, "sessionAffinity", false, Str),
    (8, "loadBalancerIP", false, Str),
    (10, "externalName", false, Str),
    (11, "externalTrafficPolicy", false, Str),
    (18, "clusterIPs", true, Str),
    (19, "ipFamilies", true, Str),
];
const SERVICE_PORT: &Schema = &[
    (1, "name", false, Str),
    (2, "protocol", false, Str),
    (3, "port", false, Int),
    (4, "targetPort", false, IntOrStr),
    (5, "nodePort", false, Int),
    (6, "appProtocol", false, Str),
];
const DEPLOYMENT: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "spec", false, Msg(DEPLOYMENT_SPEC)),
    (3, "status", false, Msg(EMPTY)),
];
const DEPLOYMENT_SPEC: &Schema = &[
    (1, "replicas", false, Int),
    (2, "selector", false, Msg(LABEL_SELECTOR)),
    (3, "template", false, Msg(POD_TEMPLATE)),
    (4, "strategy", false, Msg(STRATEGY)),
    (5, "minReadySeconds", false, Int),
    (6, "revisionHistoryLimit", false, Int),
    (7, "paused", false, Bool),
    (9, "progressDeadlineSeconds", false, Int),
];
const LABEL_SELECTOR: &Schema = &[(1, "matchLabels", false, StrMap)];
const STRATEGY: &Schema = &[(1, "type", false, Str)];
const POD_TEMPLATE: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "spec", false, Msg(POD_SPEC)),
];
const POD_SPEC: &Schema = &[
    (2, "containers", true, Msg(CONTAINER)),
    (3, "restartPolicy", false, Str),
    (4, "terminationGracePeriodSeconds", false, Int),
    (6, "dnsPolicy", false, Str),
    (7, "nodeSelector", false, StrMap),
    (8, "serviceAccountName", false, Str),
    (10, "nodeName", false, Str),
    (15, "imagePullSecrets", true, Msg(NAME_REF)),
    (16, "hostname", false, Str),
    (17, "subdomain", false, Str),
    (19, "schedulerName", false, Str),
    (20, "initContainers", true, Msg(CONTAINER)),
];
const CONTAINER: &Schema = &[
    (1, "name", false, Str),
    (2, "image", false, Str),
    (3, "command", true, Str),
    (4, "args", true, Str),
    (5, "workingDir", false, Str),
    (6, "ports", true, Msg(CONTAINER_PORT)),
    (7, "env", true, Msg(ENV_VAR)),
    (8, "resources", false, Msg(RESOURCES)),
    (13, "terminationMessagePath", false, Str),
    (14, "imagePullPolicy", false, Str),
    (16, "stdin", false, Bool),
    (17, "stdinOnce", false, Bool),
    (18, "tty", false, Bool),
    (20, "terminationMessagePolicy", false, Str),
];
const CONTAINER_PORT: &Schema = &[
    (1, "name", false, Str),
    (2, "hostPort", false, Int),
    (3, "containerPort", false, Int),
    (4, "protocol", false, Str),
    (5, "hostIP", false, Str),
];
const ENV_VAR: &Schema = &[(1, "name", false, Str), (2, "value", false, Str)];
const RESOURCES: &Schema = &[
    (1, "limits", false, QuantityMap),
    (2, "requests", false, QuantityMap),
];
const TOKEN_REQUEST: &Schema = &[
    (1, "metadata", false, Msg(OBJECT_META)),
    (2, "spec", false, Msg(TOKEN_REQUEST_SPEC)),
    (3, "status", false, Msg(EMPTY)),
];
const TOKEN_REQUEST_SPEC: &Schema = &[
    (1, "audiences", true, Str),
    (3, "boundObjectRef", false, Msg(BOUND_OBJECT_REFERENCE)),
    (4, "expirationSeconds", false, Int),
];
const BOUND_OBJECT_REFERENCE: &Schema = &[
    (1, "kind", false, Str),
    (2, "apiVersion", false, Str),
    (3, "name", false, Str),
    (4, "uid", false, Str),
];
const EMPTY: &Schema = &[];

/// The schema of a kind sent as protobuf, by (apiVersion, kind).
fn schema_for(api_version: &str, kind: &str) -> Option<&'static Schema> {
    Some(match (api_version, kind) {
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        // `kubectl create token`.
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        _ => return None,
    })
}

/// One decoded wire field.
enum Wire<'a> {
    Varint(u64),
    Len(&'a [u8]),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("truncated varint")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint too long".to_string())
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                let end = self
                    .at
                    .checked_add(len)
                    .filter(|e| *e <= self.bytes.len())
                    .ok_or("truncated field")?;
                let slice = &self.bytes[self.at..end];
                self.at = end;
                Wire::Len(slice)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn fields(bytes: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut reader = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    while let Some(field) = reader.next()? {
        out.push(field);
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_string())
}

/// A `map<string, X>` entry: key 1, value 2.
fn entry(bytes: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut key, mut value) = (String::new(), &[][..]);
    for (number, wire) in fields(bytes)? {
        match (number, wire) {
            (1, Wire::Len(b)) => key = text(b)?,
            (2, Wire::Len(b)) => value = b,
            _ => return Err("malformed map entry".to_string()),
        }
    }
    Ok((key, value))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

fn decode_message(bytes: &[u8], schema: &'static Schema, path: &str) -> Result<Value, String> {
    let mut object = Map::new();
    for (number, wire) in fields(bytes)? {
        let Some((_, name, repeated, kind)) = schema.iter().find(|(n, ..)| *n == number) else {
            let empty = match &wire {
                Wire::Varint(v) => *v == 0,
                Wire::Len(b) => b.is_empty() || fields(b).is_ok_and(|f| f.is_empty()),
            };
            if empty {
                continue;
            }
            return Err(format!(
                "field {number} of {path} is not supported in protobuf; send JSON"
            ));
        };
        let field_path = format!("{path}.{name}");
        match kind {
            StrMap | BytesMap | QuantityMap => {
                let Wire::Len(b) = wire else {
                    return Err(format!("{field_path}: expected a map entry"));
                };
                let (key, value) = entry(b)?;
                let value = match kind {
                    StrMap => json!(text(value)?),
                    QuantityMap => decode_scalar(Quantity, &Wire::Len(value), &field_path)?,
                    _ => json!(base64::engine::general_purpose::STANDARD.encode(value)),
                };
                let map = object.entry(name.to_string()).or_insert_with(|| json!({}));
                map[key] = value;
            }
            _ => {
                let value = decode_scalar(*kind, &wire, &field_path)?;
                if *repeated {
                    let list = object.entry(name.to_string()).or_insert_with(|| json!([]));
                    if let Value::Array(items) = list {
                        items.push(value);
                    }
                } else if !is_empty(&value) {
                    object.insert(name.to_string(), value);
                }
            }
        }
    }
    Ok(Value::Object(object))
}

fn decode_scalar(kind: Kind, wire: &Wire<'_>, path: &str) -> Result<Value, String> {
    let wrong = || format!("{path}: unexpected wire type");
    Ok(match (kind, wire) {
        (Str, Wire::Len(b)) => json!(text(b)?),
        (Int, Wire::Varint(v)) => json!(*v as i64),
        (Bool, Wire::Varint(v)) => json!(*v != 0),
        (Msg(schema), Wire::Len(b)) => decode_message(b, schema, path)?,
        (Time, Wire::Len(b)) => {
            let seconds = fields(b)?.iter().find_map(|(n, w)| match (n, w) {
                (1, Wire::Varint(s)) => Some(*s as i64),
                _ => None,
            });
            match seconds.and_then(|s| jiff::Timestamp::from_second(s).ok()) {
                Some(ts) => json!(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                None => Value::Null,
            }
        }
        (IntOrStr, Wire::Len(b)) => {
            let parts = fields(b)?;
            let is_string = parts.iter().any(|(n, w)| matches!((n, w), (1, Wire::Varint(1))));
            let int = parts.iter().find_map(|(n, w)| match (n, w) {
                (2, Wire::Varint(v)) => Some(*v as i64),
                _ => None,
            });
            let string = parts.iter().find_map(|(n, w)| match (n, w) {
                (3, Wire::Len(s)) => text(s).ok(),
                _ => None,
            });
            if is_string {
                json!(string.unwrap_or_default())
            } else {
                json!(int.unwrap_or(0))
            }
        }
        (Quantity, Wire::Len(b)) => {
            let value = fields(b)?.iter().find_map(|(n, w)| match (n, w) {
                (1, Wire::Len(s)) => text(s).ok(),
                _ => None,
            });
            json!(value.unwrap_or_default())
        }
        _ => return Err(wrong()),
    })
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, wire) in fields(unknown)? {
        match (number, wire) {
            (1, Wire::Len(type_meta)) => {
                for (n, w) in fields(type_meta)? {
                    match (n, w) {
                        (1, Wire::Len(v)) => api_version = text(v)?,
                        (2, Wire::Len(k)) => kind = text(k)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Len(bytes)) => raw = bytes,
            _ => {}
        }
    }
    let schema = schema_for(&api_version, &kind)
        .ok_or_else(|| format!("protobuf bodies of {api_version} {kind} are not supported; send JSON"))?;
    let mut object = decode_message(raw, schema, &kind)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a length-delimited field.
    fn len(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn decodes_a_configmap_as_kubectl_sends_it() {
        let meta = [len(1, b"x"), len(2, b""), vec![7 << 3, 0], len(8, b"")].concat();
        let data = [len(1, b"a"), len(2, b"b")].concat();
        let object = [len(1, &meta), len(2, &data)].concat();
        let type_meta = [len(1, b"v1"), len(2, b"ConfigMap")].concat();
        let body = [
            b"k8s\0".to_vec(),
            len(1, &type_meta),
            len(2, &object),
            len(3, b""),
            len(4, b""),
        ]
        .concat();
        let value = decode(&body).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn decodes_a_token_request() {
        let spec = [len(1, b"a"), len(1, b"b"), vec![4 << 3, 0x90, 0x38]].concat();
        let object = [len(1, &len(1, b"default")), len(2, &spec), len(3, b"")].concat();
        let type_meta = [len(1, b"authentication.k8s.io/v1"), len(2, b"TokenRequest")].concat();
        let body = [b"k8s\0".to_vec(), len(1, &type_meta), len(2, &object)].concat();
        let value = decode(&body).unwrap();
        assert_eq!(
            value["spec"],
            json!({"audiences": ["a", "b"], "expirationSeconds": 7184})
        );
    }

    #[test]
    fn refuses_unknown_kinds_and_fields() {
        let type_meta = [len(1, b"v1"), len(2, b"Pod")].concat();
        let body = [b"k8s\0".to_vec(), len(1, &type_meta)].concat();
        assert!(decode(&body).unwrap_err().contains("send JSON"));
        let type_meta = [len(1, b"v1"), len(2, b"ConfigMap")].concat();
        let object = len(9, b"zz");
        let body = [b"k8s\0".to_vec(), len(1, &type_meta), len(2, &object)].concat();
        assert!(decode(&body).unwrap_err().contains("field 9"));
    }
}
