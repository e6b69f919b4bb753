//! Who calls the kubelet endpoint and whether they may: as a kubelet in webhook mode does it.
//!
//! A verified client certificate names the caller (the virtual API server's
//! `--kubelet-client-certificate`); otherwise a bearer token is checked with a TokenReview on the
//! virtual API server. Every request is then authorised with a SubjectAccessReview there, on the
//! node's `proxy`, `log`, `stats`, `metrics`, `healthz` or `pods` subresource, the verb read from
//! the HTTP method. Nothing unauthenticated or unauthorised is ever forwarded.
//!
//! Answers are remembered as a kubelet's webhook caches remember them (its default TTLs): a
//! token's review for two minutes, an allowed access for five, a denied one for thirty seconds.
//! A review the virtual API server could not answer is not remembered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, header::AUTHORIZATION};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

use super::ttl_cache::TtlCache;

/// How long a token's review holds (the kubelet's `--authentication-token-webhook-cache-ttl`).
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed access holds (`--authorization-webhook-cache-authorized-ttl`).
const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied access holds (`--authorization-webhook-cache-unauthorized-ttl`).
const DENIED_TTL: Duration = Duration::from_secs(30);

/// An authenticated caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request is refused, as the HTTP status it gets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: no credentials, or ones the virtual API server does not accept.
    #[error("Unauthorized")]
    Unauthenticated,
    /// 403: the caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 500: the virtual API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// What a request does to the node, in a SubjectAccessReview's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAccess {
    pub verb: &'static str,
    /// Subresources to try in order: the fine-grained one, then `proxy` (a kubelet's fallback).
    pub subresources: Vec<&'static str>,
}

/// The access a kubelet request asks for: the verb from the method, the subresource from the
/// path (`/stats` → stats, `/metrics` → metrics, `/logs` → log, `/healthz` and `/pods` → their
/// own then proxy, everything else, exec and container logs included → proxy).
pub fn node_access(method: &Method, path: &str) -> NodeAccess {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    let subresources = match first {
        "stats" => vec!["stats"],
        "metrics" => vec!["metrics"],
        "logs" => vec!["log"],
        "healthz" => vec!["healthz", "proxy"],
        "pods" | "runningpods" => vec!["pods", "proxy"],
        _ => vec!["proxy"],
    };
    NodeAccess { verb, subresources }
}

/// Asks the virtual API server who a caller is and what they may do, remembering the answers.
pub struct Reviewer {
    virtual_client: Client,
    /// Token → the caller it names (None: not authenticated).
    tokens: TtlCache<String, Option<Caller>>,
    /// (caller, verb, subresource, node) → allowed.
    decisions: TtlCache<(Caller, &'static str, &'static str, Option<String>), bool>,
}

impl Reviewer {
    pub fn new(virtual_client: Client) -> Self {
        Reviewer {
            virtual_client,
            tokens: TtlCache::default(),
            decisions: TtlCache::default(),
        }
    }

    /// The caller: the certificate's, else the bearer token's as the virtual API server
    /// reviews it.
    pub async fn authenticate(
        &self,
        certificate: Option<&Caller>,
        headers: &HeaderMap,
    ) -> Result<Caller, Refusal> {
        if let Some(caller) = certificate {
            return Ok(caller.clone());
        }
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(Refusal::Unauthenticated)?;
        let caller = match self.tokens.get(&token.to_string(), Instant::now()) {
            Some(caller) => caller,
            None => {
                let caller = self.review_token(token).await?;
                self.tokens
                    .insert(token.to_string(), caller.clone(), TOKEN_TTL, Instant::now());
                caller
            }
        };
        caller.ok_or(Refusal::Unauthenticated)
    }

    async fn review_token(&self, token: &str) -> Result<Option<Caller>, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.virtual_client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| Refusal::Unavailable(format!("reviewing the bearer token: {err}")))?;
        let status = reviewed.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true));
        Ok(user.map(|user| Caller {
            user: user.username.unwrap_or_default(),
            uid: user.uid,
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        }))
    }

    /// Whether `caller` may `access` node `node` (None: any node, for a request about a pod
    /// the virtual cluster does not have, or about all its nodes), asked of the virtual API
    /// server: the fine-grained subresource first, then `proxy`.
    pub async fn authorize(
        &self,
        caller: &Caller,
        access: &NodeAccess,
        node: Option<&str>,
    ) -> Result<(), Refusal> {
        for subresource in &access.subresources {
            let key = (
                caller.clone(),
                access.verb,
                *subresource,
                node.map(str::to_string),
            );
            let allowed = match self.decisions.get(&key, Instant::now()) {
                Some(allowed) => allowed,
                None => {
                    let allowed = self.review_access(caller, access.verb, subresource, node).await?;
                    let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                    self.decisions.insert(key, allowed, ttl, Instant::now());
                    allowed
                }
            };
            if allowed {
                return Ok(());
            }
        }
        let subresource = access.subresources.last().copied().unwrap_or("proxy");
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={subresource})",
            caller.user, access.verb
        )))
    }

    async fn review_access(
        &self,
        caller: &Caller,
        verb: &str,
        subresource: &str,
        node: Option<&str>,
    ) -> Result<bool, Refusal> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.user.clone()),
                uid: caller.uid.clone(),
                groups: Some(caller.groups.clone()),
                extra: Some(caller.extra.clone()).filter(|extra| !extra.is_empty()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    group: Some(String::new()),
                    version: Some("v1".to_string()),
                    resource: Some("nodes".to_string()),
                    subresource: Some(subresource.to_string()),
                    name: node.map(str::to_string),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviewed = Api::<SubjectAccessReview>::all(self.virtual_client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| Refusal::Unavailable(format!("authorising the request: {err}")))?;
        Ok(reviewed.status.is_some_and(|status| status.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_streams_and_container_logs_need_node_proxy_by_method() {
        for path in [
            "/exec/ns/p/c",
            "/attach/ns/p/c",
            "/portForward/ns/p",
            "/containerLogs/ns/p/c",
        ] {
            assert_eq!(
                node_access(&Method::GET, path).subresources,
                vec!["proxy"],
                "{path}"
            );
        }
        assert_eq!(node_access(&Method::POST, "/exec/ns/p/c").verb, "create");
        assert_eq!(node_access(&Method::GET, "/exec/ns/p/c").verb, "get");
        assert_eq!(node_access(&Method::HEAD, "/healthz").verb, "get");
        assert_eq!(node_access(&Method::DELETE, "/x").verb, "delete");
    }

    #[test]
    fn stats_metrics_and_health_have_their_own_subresources() {
        assert_eq!(
            node_access(&Method::GET, "/stats/summary").subresources,
            vec!["stats"]
        );
        assert_eq!(
            node_access(&Method::GET, "/metrics/resource").subresources,
            vec!["metrics"]
        );
        assert_eq!(node_access(&Method::GET, "/logs/").subresources, vec!["log"]);
        assert_eq!(
            node_access(&Method::GET, "/healthz").subresources,
            vec!["healthz", "proxy"]
        );
        assert_eq!(
            node_access(&Method::GET, "/runningpods/").subresources,
            vec!["pods", "proxy"]
        );
    }

    #[tokio::test]
    async fn a_request_without_credentials_is_refused_before_any_review() {
        // An address nothing listens on: a review would fail with Unavailable, not 401.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let reviewer = Reviewer::new(Client::try_from(config).unwrap());
        let mut headers = HeaderMap::new();
        assert_eq!(
            reviewer.authenticate(None, &headers).await,
            Err(Refusal::Unauthenticated)
        );
        headers.insert(AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(
            reviewer.authenticate(None, &headers).await,
            Err(Refusal::Unauthenticated)
        );
        headers.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(
            reviewer.authenticate(None, &headers).await,
            Err(Refusal::Unauthenticated)
        );
        let caller = Caller {
            user: "kube-apiserver-kubelet-client".into(),
            ..Caller::default()
        };
        assert_eq!(reviewer.authenticate(Some(&caller), &headers).await, Ok(caller));
    }

    #[tokio::test]
    async fn reviews_are_asked_once_and_then_remembered() {
        use vcsync_apiserver::{ApiServer, ServerConfig};
        let server = ApiServer::start(ServerConfig::default()).await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let reviewer = Reviewer::new(Client::try_from(config).unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer not-a-token-it-issued".parse().unwrap());
        let caller = Caller {
            user: "someone".into(),
            ..Caller::default()
        };
        let access = node_access(&Method::GET, "/stats/summary");
        for _ in 0..3 {
            assert_eq!(
                reviewer.authenticate(None, &headers).await,
                Err(Refusal::Unauthenticated)
            );
            assert_eq!(reviewer.authorize(&caller, &access, Some("n1")).await, Ok(()));
        }
        let counters = server.counters();
        assert_eq!(counters.get("create", "tokenreviews"), 1);
        assert_eq!(counters.get("create", "subjectaccessreviews"), 1);
        // Another node is another question.
        assert_eq!(reviewer.authorize(&caller, &access, Some("n2")).await, Ok(()));
        assert_eq!(server.counters().get("create", "subjectaccessreviews"), 2);
        server.shutdown().await;
    }
}
