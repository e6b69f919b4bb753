//! ConfigMap and Secret validation, after k8s.io/kubernetes pkg/apis/core/validation/
//! validation.go `ValidateConfigMap`, `ValidateConfigMapUpdate`, `ValidateSecret` and
//! `ValidateSecretUpdate`: data keys, the 1 MiB size limit, the keys each Secret type requires,
//! immutable data once `immutable: true`, and the Secret's `type`. (Whether a
//! `kubernetes.io/dockercfg` payload is JSON is left out.)

use base64::Engine as _;
use serde_json::{Value, json};

use super::field::{self, Errors, push_invalid, str_of};

/// `core.MaxSecretSize`, which ConfigMaps share.
const MAX_SIZE: usize = 1024 * 1024;

fn decoded_len(value: &Value) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(str_of(value))
        .map(|bytes| bytes.len())
        .unwrap_or_else(|_| str_of(value).len())
}

/// Errors of a ConfigMap; `old` on update.
pub(crate) fn validate_config_map(config_map: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::new();
    if let Some(old) = old {
        immutable(&mut errors, config_map, old, &["data", "binaryData"]);
    }
    let empty = serde_json::Map::new();
    let data = config_map["data"].as_object().unwrap_or(&empty);
    let binary = config_map["binaryData"].as_object().unwrap_or(&empty);
    let mut total = 0;
    for (key, value) in data {
        push_invalid(
            &mut errors,
            &format!("data[{key}]"),
            key,
            field::config_map_key(key),
        );
        if binary.contains_key(key) {
            errors.push(field::invalid_str(
                &format!("data[{key}]"),
                key,
                "duplicate of key present in binaryData",
            ));
        }
        total += str_of(value).len();
    }
    for (key, value) in binary {
        push_invalid(
            &mut errors,
            &format!("binaryData[{key}]"),
            key,
            field::config_map_key(key),
        );
        total += decoded_len(value);
    }
    if total > MAX_SIZE {
        errors.push(field::too_long("", MAX_SIZE));
    }
    errors
}

/// Errors of a Secret; `old` on update.
pub(crate) fn validate_secret(secret: &Value, old: Option<&Value>) -> Errors {
    let mut errors = Errors::new();
    if let Some(old) = old {
        if secret["type"] != old["type"] {
            errors.push(field::invalid("type", &secret["type"], "field is immutable"));
        }
        immutable(&mut errors, secret, old, &["data"]);
    }
    let empty = serde_json::Map::new();
    let data = secret["data"].as_object().unwrap_or(&empty);
    let mut total = 0;
    for (key, value) in data {
        push_invalid(
            &mut errors,
            &format!("data[{key}]"),
            key,
            field::config_map_key(key),
        );
        total += decoded_len(value);
    }
    if total > MAX_SIZE {
        errors.push(field::too_long("data", MAX_SIZE));
    }
    let has = |key: &str| data.contains_key(key);
    let require = |errors: &mut Errors, key: &str| errors.push(field::required(&format!("data[{key}]"), ""));
    match str_of(&secret["type"]) {
        "kubernetes.io/service-account-token" => {
            let name = &secret["metadata"]["annotations"]["kubernetes.io/service-account.name"];
            if str_of(name).is_empty() {
                errors.push(field::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => require(&mut errors, ".dockercfg"),
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            require(&mut errors, ".dockerconfigjson")
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            require(&mut errors, "username");
            require(&mut errors, "password");
        }
        "kubernetes.io/ssh-auth"
            if decoded_len(&data.get("ssh-privatekey").cloned().unwrap_or(json!(""))) == 0 =>
        {
            require(&mut errors, "ssh-privatekey")
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    require(&mut errors, key);
                }
            }
        }
        _ => {}
    }
    errors
}

/// Once `immutable` is true it stays, and so do the data fields.
fn immutable(errors: &mut Errors, new: &Value, old: &Value, fields: &[&str]) {
    if old["immutable"] != true {
        return;
    }
    let message = "field is immutable when `immutable` is set";
    if new["immutable"] != true {
        errors.push(field::forbidden("immutable", message));
    }
    let empty = json!({});
    let or_empty = |v: &'_ Value| -> Value { if v.is_null() { empty.clone() } else { v.clone() } };
    for key in fields {
        if or_empty(&new[*key]) != or_empty(&old[*key]) {
            errors.push(field::forbidden(key, message));
        }
    }
}
