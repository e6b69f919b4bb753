//! The `serviceaccounts/{name}/token` subresource (TokenRequest).
//!
//! Tokens are JWT-shaped but unsigned (`alg: none`, empty signature): they carry the claims a
//! client may want to read (namespace, service account, audiences, expiry), and nothing verifies
//! them, because the server does no authentication.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::objects::{Objects, format_timestamp, now_rfc3339};
use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};

/// The issuer and default audience, as on a kubeadm or kind cluster.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// `spec.expirationSeconds` when the request leaves it out.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest expiration Kubernetes accepts (10 minutes).
const MIN_EXPIRATION_SECONDS: i64 = 600;

impl Objects {
    /// POST serviceaccounts/{name}/token: the TokenRequest with `status.token` and
    /// `status.expirationTimestamp` filled in.
    pub fn request_token(
        &self,
        def: &ResourceDef,
        namespace: &str,
        name: &str,
        request: Value,
    ) -> ApiResult<Value> {
        let account = self
            .store
            .lock()
            .get(&def.store_key(), namespace, name)
            .ok_or_else(|| ApiError::not_found("", &def.plural, name))?;
        let invalid = |e: String| ApiError::invalid("authentication.k8s.io", "TokenRequest", name, e);
        let spec = &request["spec"];
        let expiration = match &spec["expirationSeconds"] {
            Value::Null => DEFAULT_EXPIRATION_SECONDS,
            value => value
                .as_i64()
                .ok_or_else(|| invalid(format!("spec.expirationSeconds: Invalid value: {value}")))?,
        };
        if expiration < MIN_EXPIRATION_SECONDS {
            return Err(invalid(format!(
                "spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration less than 10 minutes"
            )));
        }
        if expiration > 1 << 32 {
            return Err(invalid(format!(
                "spec.expirationSeconds: Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            )));
        }
        let audiences = match spec["audiences"].as_array() {
            Some(list) if !list.is_empty() => Value::Array(list.clone()),
            _ => json!([ISSUER]),
        };
        let now = jiff::Timestamp::now();
        let expires = now + jiff::SignedDuration::from_secs(expiration);
        let mut kubernetes = json!({
            "namespace": namespace,
            "serviceaccount": { "name": name, "uid": account["metadata"]["uid"] },
        });
        let bound = &spec["boundObjectRef"];
        if let Some(kind) = bound["kind"].as_str() {
            kubernetes[kind.to_lowercase()] = json!({ "name": bound["name"], "uid": bound["uid"] });
        }
        let claims = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": audiences,
            "iat": now.as_second(),
            "nbf": now.as_second(),
            "exp": expires.as_second(),
            "kubernetes.io": kubernetes,
        });
        let mut response = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "name": name, "namespace": namespace, "creationTimestamp": now_rfc3339() },
            "spec": { "audiences": audiences, "expirationSeconds": expiration },
            "status": { "token": unsigned_jwt(&claims), "expirationTimestamp": format_timestamp(expires) },
        });
        if !bound.is_null() {
            response["spec"]["boundObjectRef"] = bound.clone();
        }
        Ok(response)
    }
}

/// `header.claims.` with an empty signature, both parts base64url without padding.
fn unsigned_jwt(claims: &Value) -> String {
    let encode = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = json!({ "alg": "none", "typ": "JWT" });
    format!("{}.{}.", encode(&header), encode(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_to_their_claims() {
        let token = unsigned_jwt(&json!({"sub": "system:serviceaccount:a:b"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        let claims: Value = serde_json::from_slice(&claims).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:a:b");
    }
}
