//! Service-account tokens for host pods, pure part: which tokens a pod needs, how they are
//! mounted, and the host Secret that holds them.
//!
//! A host pod must never run with a token of the host: it runs as the host namespace's
//! `default` account with `automountServiceAccountToken: false`. The tokens its containers
//! see are issued by the *virtual* API server (TokenRequest, bound to the virtual pod) and kept
//! in one host Secret per pod, named [`token_secret_name`]. That Secret is not the copy of a
//! virtual object: it has the ownership label but no `vcsync.dev/object-name` annotation, so the
//! Secret syncer never maps it to a virtual key and never deletes it; the pod syncer does.
//!
//! Two shapes of pods need tokens:
//! - pods with `serviceAccountToken` projections (the `kube-api-access-*` volume a real API
//!   server's ServiceAccount admission injects, or a tenant's own audience-scoped tokens): each
//!   projection becomes a secret projection of the key [`token_key`] of its audience;
//! - pods that would automount a token but carry no volume for it (virtual API servers without
//!   ServiceAccount admission, such as the embedded one): they get [`TOKEN_VOLUME`] with
//!   `token`, `namespace` and, when known, `ca.crt`, mounted at [`TOKEN_MOUNT_PATH`] in every
//!   container.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::{
        KeyToPath, Pod, PodSpec, ProjectedVolumeSource, Secret, SecretProjection, Volume, VolumeMount,
        VolumeProjection,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use vcsync_translators::{MANAGED_BY_LABEL, NAMESPACE_LABEL, Ownership, safe_label_value};

/// Where Kubernetes mounts a pod's service-account credentials.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name of the volume vcsync adds for pods whose virtual API server injected none.
pub const TOKEN_VOLUME: &str = "vcsync-sa-token";
/// Lifetime requested for the default token (the projection's own for others).
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
/// The shortest lifetime the TokenRequest API accepts.
const MIN_TOKEN_SECONDS: i64 = 600;

/// Annotation on a token Secret: the host pod it belongs to.
pub const TOKEN_POD_ANNOTATION: &str = "vcsync.dev/token-for-pod";
/// Annotation on a token Secret: namespace of the virtual pod.
pub const TOKEN_POD_NAMESPACE_ANNOTATION: &str = "vcsync.dev/token-pod-namespace";
/// Annotation on a token Secret: name of the virtual pod.
pub const TOKEN_POD_NAME_ANNOTATION: &str = "vcsync.dev/token-pod-name";
/// Annotation on a token Secret: uid of the virtual pod the tokens are bound to.
pub const TOKEN_POD_UID_ANNOTATION: &str = "vcsync.dev/token-pod-uid";
/// Annotation on a token Secret: the audiences it holds tokens for and their lifetimes (JSON).
pub const TOKEN_AUDIENCES_ANNOTATION: &str = "vcsync.dev/token-audiences";
/// Annotation on a token Secret: when its tokens are to be renewed (RFC 3339).
pub const TOKEN_REFRESH_ANNOTATION: &str = "vcsync.dev/token-refresh-at";

/// Audience (`""`: the API server's default) -> token lifetime in seconds.
pub type Audiences = BTreeMap<String, i64>;

/// The token Secret a host pod mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenMount {
    /// Name of the host Secret.
    pub secret_name: String,
    /// Whether it holds `ca.crt` (the virtual cluster's CA).
    pub ca_cert: bool,
}

/// Name of the host Secret holding the tokens of host pod `host_pod`. Translated names are DNS
/// labels (no dot), so this name can never be that of a synced virtual Secret.
pub fn token_secret_name(host_pod: &str) -> String {
    format!("{host_pod}.sa-token")
}

/// Key of the token for `audience` in the token Secret: `token` for the default audience,
/// else `token.` + a label-safe (injective) form of the audience.
pub fn token_key(audience: &str) -> String {
    if audience.is_empty() {
        "token".to_string()
    } else {
        format!("token.{}", safe_label_value(audience))
    }
}

/// Whether `pod` would get the default token mounted by a kubelet but carries no volume for it:
/// it does not opt out, and no container mounts anything at [`TOKEN_MOUNT_PATH`]. Whether its
/// service account opts out is checked by the caller, which can read it.
pub fn wants_default_mount(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.automount_service_account_token != Some(false)
        && !spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.mount_path.trim_end_matches('/') == TOKEN_MOUNT_PATH)
}

/// The tokens `spec` needs: one per audience of its token projections (the shortest lifetime
/// asked for wins), plus the default audience when `default_mount`.
pub fn token_audiences(spec: &PodSpec, default_mount: bool) -> Audiences {
    let mut audiences = Audiences::new();
    let projections = spec
        .volumes
        .iter()
        .flatten()
        .flat_map(|v| v.projected.iter())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref());
    for projection in projections {
        let seconds = projection
            .expiration_seconds
            .unwrap_or(DEFAULT_TOKEN_SECONDS)
            .max(MIN_TOKEN_SECONDS);
        let audience = projection.audience.clone().unwrap_or_default();
        audiences
            .entry(audience)
            .and_modify(|s| *s = (*s).min(seconds))
            .or_insert(seconds);
    }
    if default_mount {
        audiences.entry(String::new()).or_insert(DEFAULT_TOKEN_SECONDS);
    }
    audiences
}

/// Rewrites the token projections of `spec` into projections of the token Secret and, when
/// `default_mount`, adds [`TOKEN_VOLUME`] mounted in every container. Without a token Secret the
/// projections are dropped: passed down as they are, the host would fill them with tokens of a
/// host service account.
pub fn mount_tokens(spec: &mut PodSpec, token: Option<&TokenMount>, default_mount: bool) {
    for volume in spec.volumes.iter_mut().flatten() {
        let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) else {
            continue;
        };
        sources.retain_mut(|source| {
            let Some(projection) = source.service_account_token.take() else {
                return true;
            };
            let Some(token) = token else {
                return false;
            };
            source.secret = Some(SecretProjection {
                name: token.secret_name.clone(),
                items: Some(vec![KeyToPath {
                    key: token_key(projection.audience.as_deref().unwrap_or_default()),
                    path: projection.path,
                    ..KeyToPath::default()
                }]),
                optional: None,
            });
            true
        });
    }
    let Some(token) = token.filter(|_| default_mount) else {
        return;
    };
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    let mut name = TOKEN_VOLUME.to_string();
    let mut suffix = 1;
    while volumes.iter().any(|v| v.name == name) {
        suffix += 1;
        name = format!("{TOKEN_VOLUME}-{suffix}");
    }
    let mut items = vec![KeyToPath {
        key: token_key(""),
        path: "token".into(),
        ..KeyToPath::default()
    }];
    if token.ca_cert {
        items.push(KeyToPath {
            key: "ca.crt".into(),
            path: "ca.crt".into(),
            ..KeyToPath::default()
        });
    }
    items.push(KeyToPath {
        key: "namespace".into(),
        path: "namespace".into(),
        ..KeyToPath::default()
    });
    volumes.push(Volume {
        name: name.clone(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![VolumeProjection {
                secret: Some(SecretProjection {
                    name: token.secret_name.clone(),
                    items: Some(items),
                    optional: None,
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    });
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: name.clone(),
                mount_path: TOKEN_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
}

/// Whether `pod` mounts the Secret named `secret` (a volume or a projected source).
pub fn mounts_secret(pod: &Pod, secret: &str) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret)
            || v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .any(|s| s.secret.as_ref().is_some_and(|s| s.name == secret))
    })
}

/// Tokens issued by the virtual API server for one pod, ready to be stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuedTokens {
    /// Audience -> token.
    pub tokens: BTreeMap<String, String>,
    /// Audience -> requested lifetime in seconds.
    pub audiences: Audiences,
    /// When the soonest-expiring token is to be renewed: at 80% of its lifetime, as a kubelet does.
    pub refresh_at: jiff::Timestamp,
    /// The virtual cluster's CA bundle, if known.
    pub ca_cert: Option<String>,
}

/// Who a token Secret is for.
#[derive(Clone, Copy, Debug)]
pub struct TokenOwner<'a> {
    /// This instance.
    pub ownership: &'a Ownership,
    /// The host namespace.
    pub host_namespace: &'a str,
    /// Name of the host pod.
    pub host_pod: &'a str,
    /// Namespace of the virtual pod (also the `namespace` file).
    pub namespace: &'a str,
    /// Name of the virtual pod.
    pub name: &'a str,
    /// Uid of the virtual pod.
    pub uid: &'a str,
}

/// The host Secret holding `issued` for `owner`.
pub fn token_secret(owner: TokenOwner<'_>, issued: &IssuedTokens) -> Secret {
    let labels = BTreeMap::from([
        (
            MANAGED_BY_LABEL.to_string(),
            owner.ownership.instance().to_string(),
        ),
        (NAMESPACE_LABEL.to_string(), safe_label_value(owner.namespace)),
    ]);
    let annotations = BTreeMap::from([
        (TOKEN_POD_ANNOTATION.to_string(), owner.host_pod.to_string()),
        (
            TOKEN_POD_NAMESPACE_ANNOTATION.to_string(),
            owner.namespace.to_string(),
        ),
        (TOKEN_POD_NAME_ANNOTATION.to_string(), owner.name.to_string()),
        (TOKEN_POD_UID_ANNOTATION.to_string(), owner.uid.to_string()),
        (
            TOKEN_AUDIENCES_ANNOTATION.to_string(),
            serde_json::to_string(&issued.audiences).unwrap_or_default(),
        ),
        (
            TOKEN_REFRESH_ANNOTATION.to_string(),
            issued.refresh_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
    ]);
    let mut data: BTreeMap<String, ByteString> = issued
        .tokens
        .iter()
        .map(|(audience, token)| (token_key(audience), ByteString(token.clone().into_bytes())))
        .collect();
    data.insert(
        "namespace".into(),
        ByteString(owner.namespace.as_bytes().to_vec()),
    );
    if let Some(ca) = &issued.ca_cert {
        data.insert("ca.crt".into(), ByteString(ca.clone().into_bytes()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(owner.host_pod)),
            namespace: Some(owner.host_namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// What a token Secret on the host says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSecretState {
    /// Uid of the virtual pod its tokens are bound to.
    pub pod_uid: String,
    /// The audiences it holds tokens for.
    pub audiences: Audiences,
    /// When to renew them; None if unreadable (renew now).
    pub refresh_at: Option<jiff::Timestamp>,
    /// Whether it holds `ca.crt`.
    pub ca_cert: bool,
}

/// Blanks the values of a token Secret, keeping its keys: nothing vcsync decides reads a
/// token once written (the state is in the annotations and which keys there are), so the
/// host cache need not keep a kilobyte or two of tokens and CA per pod. Other Secrets are
/// left as they are.
pub fn blank_token_values(secret: &mut Secret) {
    let annotations = secret.metadata.annotations.as_ref();
    if !annotations.is_some_and(|a| a.contains_key(TOKEN_POD_ANNOTATION)) {
        return;
    }
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        value.0.clear();
    }
}

impl TokenSecretState {
    /// Reads the annotations vcsync wrote on a token Secret.
    pub fn of(secret: &Secret) -> Self {
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let data = secret.data.as_ref();
        TokenSecretState {
            pod_uid: annotations
                .get(TOKEN_POD_UID_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            audiences: annotations
                .get(TOKEN_AUDIENCES_ANNOTATION)
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default(),
            refresh_at: annotations
                .get(TOKEN_REFRESH_ANNOTATION)
                .and_then(|t| t.parse().ok()),
            ca_cert: data.is_some_and(|d| d.contains_key("ca.crt")),
        }
    }

    /// Whether the Secret serves a pod of uid `pod_uid` needing `audiences` at time `now`.
    pub fn is_fresh_for(&self, pod_uid: &str, audiences: &Audiences, now: jiff::Timestamp) -> bool {
        self.pod_uid == pod_uid
            && audiences.keys().all(|a| self.audiences.contains_key(a))
            && self.refresh_at.is_some_and(|at| at > now)
    }
}

/// When tokens issued at `issued` expiring at `expires` are to be renewed: at 80% of their
/// lifetime, as a kubelet renews projected tokens.
pub fn refresh_time(issued: jiff::Timestamp, expires: jiff::Timestamp) -> jiff::Timestamp {
    let lifetime = expires.duration_since(issued);
    issued + lifetime.mul_f64(0.8)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::{Value, json};

    use super::*;

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec})).unwrap()
    }

    /// What a real API server's ServiceAccount admission injects.
    fn injected() -> Value {
        json!({
            "containers": [{"name": "c", "volumeMounts": [{"name": "kube-api-access-abcde",
                "mountPath": TOKEN_MOUNT_PATH, "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}]
        })
    }

    #[rstest]
    #[case::plain(json!({"containers": [{"name": "c"}]}), true)]
    #[case::opted_out(json!({"automountServiceAccountToken": false, "containers": [{"name": "c"}]}), false)]
    #[case::injected(injected(), false)]
    #[case::own_mount_with_slash(json!({"containers": [{"name": "c", "volumeMounts": [
        {"name": "mine", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount/"}]}]}), false)]
    fn default_mount_is_wanted_only_where_nothing_provides_a_token(
        #[case] spec: Value,
        #[case] wanted: bool,
    ) {
        assert_eq!(wants_default_mount(&pod(spec)), wanted);
    }

    #[rstest]
    #[case::nothing(json!({"containers": []}), false, json!({}))]
    #[case::default_only(json!({"containers": []}), true, json!({"": 3600}))]
    #[case::injected(injected(), false, json!({"": 3607}))]
    #[case::audiences_shortest_wins(json!({"containers": [], "volumes": [
        {"name": "a", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "expirationSeconds": 7200, "path": "t"}}]}},
        {"name": "b", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "expirationSeconds": 900, "path": "t"}}]}}
    ]}), true, json!({"": 3600, "vault": 900}))]
    fn audiences(#[case] spec: Value, #[case] default_mount: bool, #[case] expected: Value) {
        let audiences = token_audiences(pod(spec).spec.as_ref().unwrap(), default_mount);
        assert_eq!(serde_json::to_value(audiences).unwrap(), expected);
    }

    #[test]
    fn injected_token_projection_becomes_a_secret_projection() {
        let mut spec = pod(injected()).spec.unwrap();
        let token = TokenMount {
            secret_name: "p-x-team.sa-token".into(),
            ca_cert: false,
        };
        mount_tokens(&mut spec, Some(&token), false);
        let out = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            out["volumes"][0]["projected"]["sources"][0],
            json!({"secret": {"name": "p-x-team.sa-token", "items": [{"key": "token", "path": "token"}]}})
        );
        assert_eq!(out["volumes"].as_array().unwrap().len(), 1, "no second volume");
    }

    #[test]
    fn without_a_token_secret_projections_are_dropped_never_passed_down() {
        let mut spec = pod(injected()).spec.unwrap();
        mount_tokens(&mut spec, None, true);
        let out = serde_json::to_value(&spec).unwrap();
        let sources = out["volumes"][0]["projected"]["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 2);
        assert!(sources.iter().all(|s| s.get("serviceAccountToken").is_none()));
    }

    #[test]
    fn default_mount_goes_into_every_container_under_a_free_name() {
        let mut spec = pod(json!({
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}],
            "volumes": [{"name": TOKEN_VOLUME, "emptyDir": {}}]
        }))
        .spec
        .unwrap();
        let token = TokenMount {
            secret_name: "s".into(),
            ca_cert: true,
        };
        mount_tokens(&mut spec, Some(&token), true);
        let out = serde_json::to_value(&spec).unwrap();
        let added = &out["volumes"][1];
        assert_eq!(added["name"], "vcsync-sa-token-2");
        let paths: Vec<&str> = added["projected"]["sources"][0]["secret"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["token", "ca.crt", "namespace"]);
        for pointer in ["/containers/0", "/containers/1", "/initContainers/0"] {
            assert_eq!(
                out.pointer(pointer).unwrap()["volumeMounts"][0],
                json!({"name": "vcsync-sa-token-2", "mountPath": TOKEN_MOUNT_PATH, "readOnly": true})
            );
        }
    }

    #[rstest]
    #[case("", "token")]
    #[case("vault", "token.vault")]
    #[case("https://sts.amazonaws.com", "token.https---sts.amazonaws.com-")]
    fn token_keys_are_valid_secret_keys(#[case] audience: &str, #[case] prefix: &str) {
        let key = token_key(audience);
        assert!(key.starts_with(prefix), "{key}");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
            "{key}"
        );
    }

    #[test]
    fn secret_round_trips_its_state() {
        let ownership = Ownership::new("tenant").unwrap();
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let issued = IssuedTokens {
            tokens: BTreeMap::from([("".into(), "jwt".into())]),
            audiences: Audiences::from([("".into(), 3600)]),
            refresh_at: refresh_time(now, now + jiff::SignedDuration::from_secs(3600)),
            ca_cert: None,
        };
        let secret = token_secret(
            TokenOwner {
                ownership: &ownership,
                host_namespace: "host",
                host_pod: "p-x-team",
                namespace: "team",
                name: "p",
                uid: "u1",
            },
            &issued,
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("p-x-team.sa-token"));
        assert!(ownership.owns(&secret.metadata));
        let annotations = secret.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(vcsync_translators::OBJECT_NAME_ANNOTATION));
        let state = TokenSecretState::of(&secret);
        assert_eq!(state.refresh_at, Some("2030-01-01T00:48:00Z".parse().unwrap()));
        let needs = Audiences::from([("".into(), 3600)]);
        assert!(state.is_fresh_for("u1", &needs, now));
        assert!(!state.is_fresh_for("u2", &needs, now), "another pod's tokens");
        assert!(!state.is_fresh_for("u1", &Audiences::from([("vault".into(), 600)]), now));
        assert!(!state.is_fresh_for("u1", &needs, "2030-01-01T00:48:00Z".parse().unwrap()));
        assert_eq!(secret.data.as_ref().unwrap()["namespace"].0, b"team");

        // What the host cache keeps: the same state, no token.
        let mut cached = secret.clone();
        blank_token_values(&mut cached);
        assert_eq!(TokenSecretState::of(&cached), TokenSecretState::of(&secret));
        let data = cached.data.as_ref().unwrap();
        assert!(data.contains_key("token") && data.values().all(|v| v.0.is_empty()));
    }

    #[test]
    fn only_token_secrets_are_blanked() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([("password".into(), ByteString(b"pw".to_vec()))])),
            ..Secret::default()
        };
        let before = secret.clone();
        blank_token_values(&mut secret);
        assert_eq!(secret, before);
    }
}
