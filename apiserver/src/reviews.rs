//! The review kinds a kubelet and `kubectl auth` ask an API server: TokenReview and
//! SelfSubjectReview (authentication.k8s.io), SubjectAccessReview, LocalSubjectAccessReview and
//! SelfSubjectAccessReview (authorization.k8s.io). Created and answered, never stored.
//!
//! The embedded server authenticates no one and authorises everything, and its reviews say so:
//! a token it issued (`serviceaccounts/{name}/token`, unsigned, unexpired) names its service
//! account; any other token is not authenticated; every access review is allowed; the caller of
//! a self review is the admin of the kubeconfig the server hands out.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};

/// The issuer of the tokens the server issues (crate::tokens).
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Whether `def` is a review kind (created only, not stored).
pub(crate) fn is_review(def: &ResourceDef) -> bool {
    matches!(
        (def.group.as_str(), def.kind.as_str()),
        ("authentication.k8s.io", "TokenReview" | "SelfSubjectReview")
            | (
                "authorization.k8s.io",
                "SubjectAccessReview" | "LocalSubjectAccessReview" | "SelfSubjectAccessReview"
            )
    )
}

/// The answered review: `request` with its `status` filled in (and the namespace of a local one).
pub(crate) fn answer(def: &ResourceDef, namespace: Option<&str>, mut request: Value) -> ApiResult<Value> {
    if !request.is_object() {
        return Err(ApiError::bad_request(format!("a {} must be an object", def.kind)));
    }
    request["apiVersion"] = json!(def.api_version());
    request["kind"] = json!(def.kind);
    let status = match def.kind.as_str() {
        "TokenReview" => {
            let token = request["spec"]["token"].as_str().unwrap_or_default();
            token_status(token, jiff::Timestamp::now().as_second())
        }
        "SelfSubjectReview" => json!({"userInfo": admin()}),
        _ => {
            if let (Some(namespace), "LocalSubjectAccessReview") = (namespace, def.kind.as_str()) {
                let asked = request["spec"]["resourceAttributes"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace);
                if asked != namespace {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match metadata.namespace: {asked} != {namespace}"
                    )));
                }
                request["metadata"]["namespace"] = json!(namespace);
            }
            json!({"allowed": true, "reason": "the embedded API server authorises every request"})
        }
    };
    request["status"] = status;
    Ok(request)
}

/// The user of the server's own kubeconfig.
fn admin() -> Value {
    json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]})
}

/// A TokenReview's status for `token` at `now` (Unix seconds).
fn token_status(token: &str, now: i64) -> Value {
    let claims =
        claims_of(token).filter(|c| c["iss"] == ISSUER && c["exp"].as_i64().is_some_and(|exp| exp > now));
    let account = claims.as_ref().and_then(|c| {
        let namespace = c["kubernetes.io"]["namespace"].as_str()?;
        let name = c["kubernetes.io"]["serviceaccount"]["name"].as_str()?;
        Some((c.clone(), namespace.to_string(), name.to_string()))
    });
    match account {
        Some((claims, namespace, name)) => json!({
            "authenticated": true,
            "user": {
                "username": format!("system:serviceaccount:{namespace}:{name}"),
                "uid": claims["kubernetes.io"]["serviceaccount"]["uid"],
                "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
            },
            "audiences": claims["aud"],
        }),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    }
}

/// The claims of a JWT-shaped token, unverified (the server signs nothing).
fn claims_of(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, claims) = (parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: Value) -> String {
        let encode = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", encode(&json!({"alg": "none"})), encode(&claims))
    }

    fn claims(exp: i64) -> Value {
        json!({"iss": ISSUER, "exp": exp, "aud": [ISSUER],
            "kubernetes.io": {"namespace": "team", "serviceaccount": {"name": "bot", "uid": "u1"}}})
    }

    #[test]
    fn a_token_the_server_issued_names_its_service_account_until_it_expires() {
        let status = token_status(&token(claims(2_000)), 1_000);
        assert_eq!(status["authenticated"], true);
        assert_eq!(status["user"]["username"], "system:serviceaccount:team:bot");
        assert_eq!(status["user"]["groups"][1], "system:serviceaccounts:team");
        assert_eq!(token_status(&token(claims(900)), 1_000)["authenticated"], false);
    }

    #[test]
    fn any_other_token_is_not_authenticated() {
        for other in [
            "",
            "not-a-jwt",
            "a.b.c",
            &token(json!({"iss": "elsewhere", "exp": 9_999_999_999_i64})),
        ] {
            let status = token_status(other, 1_000);
            assert_eq!(status["authenticated"], false, "{other}");
            assert_eq!(status["error"], "invalid bearer token");
        }
    }
}
