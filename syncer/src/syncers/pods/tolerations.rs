//! Which of a tenant's tolerations reach the host pod.
//!
//! A toleration lets a pod onto host nodes whose taints keep everyone else off, so only the
//! ones `sync.pods.tolerations.allow` matches reach the host pod ([`tenant_tolerations`]); the
//! others are dropped (the pod still runs, where the host scheduler puts it) and the virtual pod
//! gets a Normal event `TolerationsDropped` naming them (`report_dropped_tolerations`).

use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::Resource;

use crate::{
    SyncContext,
    config::{TolerationPattern, TolerationPolicy},
    events::EventType,
};

/// Splits a tenant pod's tolerations into the ones `policy` allows (kept, in order) and the
/// ones it does not (dropped). `extra` (the configured `extraTolerations`, added to every host
/// pod anyway) counts as allowed.
pub fn tenant_tolerations<'a>(
    policy: &TolerationPolicy,
    extra: &[Toleration],
    tolerations: impl IntoIterator<Item = &'a Toleration>,
) -> (Vec<Toleration>, Vec<Toleration>) {
    tolerations
        .into_iter()
        .cloned()
        .partition(|t| extra.contains(t) || policy.allow.iter().any(|p| pattern_allows(p, t)))
}

/// Whether a toleration tolerates no more than `pattern` allows: its key matches (exactly, by
/// prefix for `prefix*`, any key for `*`, the empty key that tolerates every taint only for
/// `*`); with a pattern value (or `operator: Equal`), only `Equal` tolerations of that value;
/// with a pattern effect, only tolerations of that effect (an empty effect tolerates all).
pub fn pattern_allows(pattern: &TolerationPattern, toleration: &Toleration) -> bool {
    let key = toleration.key.as_deref().unwrap_or_default();
    let key_matches = match pattern.key.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => !key.is_empty() && key.starts_with(prefix),
        None => !key.is_empty() && key == pattern.key,
    };
    let exists = toleration.operator.as_deref() == Some("Exists");
    let value_matches = match (pattern.operator.as_deref(), pattern.value.as_deref()) {
        (Some("Equal"), value) | (None, value @ Some(_)) => {
            !exists && toleration.value.as_deref().unwrap_or_default() == value.unwrap_or_default()
        }
        _ => true,
    };
    let effect_matches = pattern
        .effect
        .as_deref()
        .is_none_or(|effect| !effect.is_empty() && toleration.effect.as_deref() == Some(effect));
    key_matches && value_matches && effect_matches
}

/// One line per toleration, as `kubectl` would show them.
fn describe(tolerations: &[Toleration]) -> String {
    tolerations
        .iter()
        .map(|t| {
            let mut line = format!(
                "{{key: {:?}, operator: {}",
                t.key.as_deref().unwrap_or_default(),
                t.operator.as_deref().unwrap_or("Equal")
            );
            if let Some(value) = t.value.as_deref().filter(|v| !v.is_empty()) {
                line.push_str(&format!(", value: {value:?}"));
            }
            if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
                line.push_str(&format!(", effect: {effect}"));
            }
            line.push('}');
            line
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tells the virtual pod which of its tolerations its host pod does not get (a Normal event
/// `TolerationsDropped`; repeats are folded by the event recorder). Nothing when none is.
pub(super) async fn report_dropped_tolerations(ctx: &SyncContext<Pod>, virt: &Pod) {
    let config = &ctx.clients().config().sync.pods;
    let (_, dropped) = tenant_tolerations(
        &config.tolerations,
        &config.extra_tolerations,
        virt.spec.iter().flat_map(|s| s.tolerations.iter().flatten()),
    );
    if dropped.is_empty() {
        return;
    }
    let message = format!(
        "tolerations not allowed by sync.pods.tolerations, left off the host pod: {}",
        describe(&dropped)
    );
    ctx.events()
        .publish(
            &virt.object_ref(&()),
            EventType::Normal,
            "TolerationsDropped",
            &message,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use rstest::rstest;
    use serde_json::json;

    use super::*;

    fn toleration(value: serde_json::Value) -> Toleration {
        serde_json::from_value(value).unwrap()
    }

    fn policy(allow: serde_json::Value) -> TolerationPolicy {
        serde_json::from_value(json!({ "allow": allow })).unwrap()
    }

    #[rstest]
    // The default policy: what DefaultTolerationSeconds adds, nothing else.
    #[case::default_not_ready(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}), true)]
    #[case::default_unreachable(None, json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}), true)]
    #[case::default_everything(None, json!({"operator": "Exists"}), false)]
    #[case::default_every_effect_of_not_ready(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"}), false)]
    #[case::default_not_ready_no_schedule(None, json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}), false)]
    #[case::default_control_plane(None, json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}), false)]
    #[case::default_unschedulable(None, json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}), false)]
    // Configured patterns.
    #[case::exact_key(Some(json!([{"key": "gpu"}])), json!({"key": "gpu", "operator": "Exists"}), true)]
    #[case::exact_key_other(Some(json!([{"key": "gpu"}])), json!({"key": "gpus", "operator": "Exists"}), false)]
    #[case::prefix(Some(json!([{"key": "tenants.example.com/*"}])), json!({"key": "tenants.example.com/a", "value": "x", "effect": "NoSchedule"}), true)]
    #[case::prefix_other(Some(json!([{"key": "tenants.example.com/*"}])), json!({"key": "example.com/a", "operator": "Exists"}), false)]
    #[case::prefix_not_the_empty_key(Some(json!([{"key": "tenants.example.com/*"}])), json!({"operator": "Exists"}), false)]
    #[case::star_allows_all(Some(json!([{"key": "*"}])), json!({"operator": "Exists"}), true)]
    #[case::value_equal(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "operator": "Equal", "value": "a"}), true)]
    #[case::value_default_operator(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "value": "a"}), true)]
    #[case::value_other(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "value": "b"}), false)]
    #[case::value_exists_is_wider(Some(json!([{"key": "pool", "value": "a"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::operator_equal_empty_value(Some(json!([{"key": "pool", "operator": "Equal"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::effect(Some(json!([{"key": "pool", "effect": "NoSchedule"}])), json!({"key": "pool", "operator": "Exists", "effect": "NoSchedule"}), true)]
    #[case::effect_missing_is_wider(Some(json!([{"key": "pool", "effect": "NoSchedule"}])), json!({"key": "pool", "operator": "Exists"}), false)]
    #[case::nothing_allowed(Some(json!([])), json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}), false)]
    fn tolerations_pass_only_what_the_policy_allows(
        #[case] allow: Option<serde_json::Value>,
        #[case] tenant: serde_json::Value,
        #[case] kept: bool,
    ) {
        let policy = allow.map(policy).unwrap_or_default();
        let tenant = toleration(tenant);
        let (passed, dropped) = tenant_tolerations(&policy, &[], [&tenant]);
        assert_eq!(passed.len(), usize::from(kept), "{passed:?}");
        assert_eq!(dropped.len(), usize::from(!kept), "{dropped:?}");
    }

    #[test]
    fn configured_extra_tolerations_count_as_allowed_and_order_is_kept() {
        let extra = toleration(
            json!({"key": "dedicated", "operator": "Equal", "value": "tenant-a", "effect": "NoSchedule"}),
        );
        let tenant = [
            toleration(json!({"operator": "Exists"})),
            extra.clone(),
            toleration(
                json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
            ),
            toleration(json!({"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"})),
        ];
        let (kept, dropped) = tenant_tolerations(
            &TolerationPolicy::default(),
            std::slice::from_ref(&extra),
            &tenant,
        );
        assert_eq!(kept, vec![tenant[1].clone(), tenant[2].clone()]);
        assert_eq!(dropped, vec![tenant[0].clone(), tenant[3].clone()]);
        assert_eq!(
            describe(&dropped),
            "{key: \"\", operator: Exists}, {key: \"node-role.kubernetes.io/control-plane\", operator: Exists}"
        );
    }
}
