//! The default admission plugins of kube-apiserver that fill in a pod (k8s.io/kubernetes
//! plugin/pkg/admission): `Priority` (the pod's `priority` and `preemptionPolicy` from its
//! PriorityClass, or from the global default class, refusing an unknown class), and
//! `DefaultTolerationSeconds` (the not-ready and unreachable NoExecute tolerations, 300 s), and
//! the part of `ServiceAccount` that names the `default` account; and, for Services, the
//! strategy's dropping of node ports when the type no longer uses them. Left out of `ServiceAccount`:
//! the check that the account exists and the projected `kube-api-access-*` token volume.

use serde_json::{Value, json};

use crate::resources::ResourceDef;
use crate::status::{ApiError, ApiResult};
use crate::store::State;

use super::cluster::SYSTEM_CLASSES;

const PRIORITY_CLASSES: &str = "scheduling.k8s.io/priorityclasses";

/// Admits a pod being created (`old` None) or updated.
pub(crate) fn admit_create(
    state: &State,
    def: &ResourceDef,
    object: &mut Value,
    old: Option<&Value>,
) -> ApiResult<()> {
    if def.group.is_empty() && def.kind == "Service" {
        if let Some(old) = old {
            drop_node_ports(object, old);
        }
        return Ok(());
    }
    if !(def.group.is_empty() && def.kind == "Pod" && object["spec"].is_object()) {
        return Ok(());
    }
    let spec = &mut object["spec"];
    if let Some(old) = old {
        for key in ["priority", "preemptionPolicy"] {
            if spec[key].is_null() && !old["spec"][key].is_null() {
                spec[key] = old["spec"][key].clone();
            }
        }
    } else {
        if spec["serviceAccountName"].as_str().is_none_or(str::is_empty) {
            spec["serviceAccountName"] = json!("default");
            spec["serviceAccount"] = json!("default");
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        priority(state, &name, &mut object["spec"])?;
    }
    default_tolerations(&mut object["spec"]);
    Ok(())
}

fn priority(state: &State, pod: &str, spec: &mut Value) -> ApiResult<()> {
    let forbidden = |why: String| ApiError::forbidden(format!("pods \"{pod}\" is forbidden: {why}"));
    let class_name = spec["priorityClassName"].as_str().unwrap_or_default().to_string();
    let (name, value, policy) = if class_name.is_empty() {
        let default = state
            .list(PRIORITY_CLASSES, None, None)
            .map(|(_, class)| class)
            .filter(|class| class["globalDefault"] == true)
            .min_by_key(|class| class["value"].as_i64().unwrap_or(0));
        match default {
            Some(class) => (
                class["metadata"]["name"].as_str().unwrap_or_default().to_string(),
                class["value"].as_i64().unwrap_or(0),
                class["preemptionPolicy"].clone(),
            ),
            None => (String::new(), 0, json!("PreemptLowerPriority")),
        }
    } else {
        match state.get(PRIORITY_CLASSES, "", &class_name) {
            Some(class) => (
                class_name.clone(),
                class["value"].as_i64().unwrap_or(0),
                class["preemptionPolicy"].clone(),
            ),
            None => match SYSTEM_CLASSES.iter().find(|(n, _)| *n == class_name) {
                Some((_, value)) => (class_name.clone(), *value, json!("PreemptLowerPriority")),
                None => {
                    return Err(forbidden(format!(
                        "no PriorityClass with name {class_name} was found"
                    )));
                }
            },
        }
    };
    if !name.is_empty() {
        spec["priorityClassName"] = json!(name);
    }
    if let Some(given) = spec["priority"].as_i64().filter(|given| *given != value) {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority \
             admission controller computed {value} from the given PriorityClass name"
        )));
    }
    spec["priority"] = json!(value);
    if let Some(policy) = policy.as_str() {
        if let Some(given) = spec["preemptionPolicy"].as_str().filter(|given| given != &policy) {
            return Err(forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; \
                 priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
        spec["preemptionPolicy"] = json!(policy);
    }
    Ok(())
}

/// `DefaultTolerationSeconds`: tolerate `not-ready` and `unreachable` NoExecute taints for 300 s
/// unless a toleration covers them already.
fn default_tolerations(spec: &mut Value) {
    let tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let covers = |taint: &str| {
        tolerations.iter().any(|t| {
            let key = t["key"].as_str().unwrap_or_default();
            let effect = t["effect"].as_str().unwrap_or_default();
            (key == taint || key.is_empty()) && (effect == "NoExecute" || effect.is_empty())
        })
    };
    let mut added = tolerations.clone();
    for taint in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !covers(taint) {
            added.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": 300}));
        }
    }
    if added.len() != tolerations.len() {
        spec["tolerations"] = json!(added);
    }
}

/// The Service strategy's `dropTypeDependentFields`: a type change away from NodePort or
/// LoadBalancer drops the node ports the update left as they were.
fn drop_node_ports(service: &mut Value, old: &Value) {
    let external = |s: &Value| matches!(s["spec"]["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    if external(service) || !external(old) {
        return;
    }
    let old_ports: Vec<Value> = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    for port in service["spec"]["ports"].as_array_mut().into_iter().flatten() {
        let kept = old_ports.iter().any(|o| o["nodePort"] == port["nodePort"]);
        if kept && let Some(map) = port.as_object_mut() {
            map.remove("nodePort");
        }
    }
}
