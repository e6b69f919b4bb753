//! Per-kind defaulting as kube-apiserver's scheme defaults (k8s.io/kubernetes
//! pkg/apis/core/v1/defaults.go, pkg/apis/apps/v1/defaults.go, ...) and the statuses its
//! registry strategies reset on create.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::resources::ResourceDef;

/// Defaults applied on create only (status is reset, as the registries do).
pub(crate) fn default_on_create(def: &ResourceDef, object: &mut Value) {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => {
            let qos = pod_qos_class(&object["spec"]);
            object["status"] = json!({ "phase": "Pending", "qosClass": qos });
        }
        ("", "Namespace") => {
            let name = object["metadata"]["name"].clone();
            ensure_map(&mut object["metadata"], "labels").insert("kubernetes.io/metadata.name".into(), name);
            object["status"] = json!({ "phase": "Active" });
        }
        ("", "Service") => object["status"] = json!({ "loadBalancer": {} }),
        ("", "PersistentVolumeClaim") => object["status"] = json!({ "phase": "Pending" }),
        ("", "PersistentVolume") => object["status"] = json!({ "phase": "Pending" }),
        ("apps", "Deployment") => object["status"] = json!({}),
        // The statuses an empty Go status struct serializes to (non-omitempty counters).
        ("apps", "ReplicaSet") => object["status"] = json!({ "replicas": 0 }),
        ("apps", "StatefulSet") => object["status"] = json!({ "replicas": 0, "availableReplicas": 0 }),
        ("apps", "DaemonSet") => {
            object["status"] = json!({ "currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0 })
        }
        ("networking.k8s.io", "Ingress") => object["status"] = json!({ "loadBalancer": {} }),
        ("policy", "PodDisruptionBudget") => {
            object["status"] = json!({ "disruptionsAllowed": 0, "currentHealthy": 0,
                "desiredHealthy": 0, "expectedPods": 0 })
        }
        _ => {}
    }
}

/// Defaults applied on every write (create, update, patch): fields the API server fills when a
/// client leaves them out.
pub(crate) fn default_on_write(def: &ResourceDef, object: &mut Value) {
    if !def.group.is_empty() {
        match (def.group.as_str(), def.kind.as_str()) {
            ("apps", "Deployment") => default_deployment(object),
            ("apps", "ReplicaSet") => default_replica_set(object),
            ("apps", "StatefulSet") => default_stateful_set(object),
            ("apps", "DaemonSet") => default_daemon_set(object),
            ("storage.k8s.io", "StorageClass") => {
                set_default(object, "reclaimPolicy", json!("Delete"));
                set_default(object, "volumeBindingMode", json!("Immediate"));
            }
            ("networking.k8s.io", "NetworkPolicy") => default_network_policy(object),
            ("scheduling.k8s.io", "PriorityClass") => {
                set_default(object, "preemptionPolicy", json!("PreemptLowerPriority"))
            }
            _ => {}
        }
        return;
    }
    match def.kind.as_str() {
        "Secret" => default_secret(object),
        "Pod" => default_pod_spec(&mut object["spec"]),
        "Service" => default_service(object),
        "PersistentVolumeClaim" if object["spec"].is_object() => {
            set_default(&mut object["spec"], "volumeMode", json!("Filesystem"))
        }
        "PersistentVolume" if object["spec"].is_object() => {
            set_default(
                &mut object["spec"],
                "persistentVolumeReclaimPolicy",
                json!("Retain"),
            );
            set_default(&mut object["spec"], "volumeMode", json!("Filesystem"));
        }
        "Endpoints" => {
            for subset in object["subsets"].as_array_mut().into_iter().flatten() {
                for port in subset["ports"].as_array_mut().into_iter().flatten() {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
        }
        _ => {}
    }
}

fn ensure_map<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !parent[key].is_object() {
        parent[key] = Value::Object(Map::new());
    }
    parent[key].as_object_mut().expect("just made an object")
}

fn set_default(object: &mut Value, key: &str, value: Value) {
    if object.get(key).is_none_or(Value::is_null) {
        object[key] = value;
    }
}

/// `stringData` is write-only: merged into `data` as base64 and dropped.
fn default_secret(secret: &mut Value) {
    set_default(secret, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = secret.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    let data = ensure_map(secret, "data");
    for (key, value) in string_data {
        let text = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
}

/// `SetDefaults_PodSpec`, `SetDefaults_Pod`, `SetDefaults_Container`, `SetDefaults_Volume` and
/// the volume sources', probes' and field selectors' defaults.
pub(crate) fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    if spec["serviceAccountName"].as_str().is_none_or(str::is_empty)
        && let Some(account) = spec["serviceAccount"].as_str().filter(|s| !s.is_empty())
    {
        spec["serviceAccountName"] = json!(account);
    }
    match spec["serviceAccountName"].as_str().filter(|s| !s.is_empty()) {
        Some(account) => spec["serviceAccount"] = json!(account),
        None => {
            if let Some(map) = spec.as_object_mut() {
                map.remove("serviceAccount");
            }
        }
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    if spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|s| s < 0)
    {
        spec["terminationGracePeriodSeconds"] = json!(1);
    }
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    let host_network = spec["hostNetwork"] == true;
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers {
            default_container(container, host_network && list != "ephemeralContainers");
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        volumes.iter_mut().for_each(default_volume);
    }
}

fn default_container(container: &mut Value, host_network: bool) {
    if !container.is_object() {
        return;
    }
    set_default(container, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(container, "terminationMessagePolicy", json!("File"));
    let policy = if image_tag(container["image"].as_str().unwrap_or_default()) == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(container, "imagePullPolicy", json!(policy));
    set_default(container, "resources", json!({}));
    // Limits without requests are requested as well.
    if let Some(limits) = container["resources"]["limits"].as_object().cloned() {
        let requests = ensure_map(&mut container["resources"], "requests");
        for (resource, quantity) in limits {
            requests.entry(resource).or_insert(quantity);
        }
    }
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
            if host_network {
                let number = port["containerPort"].clone();
                if port["hostPort"].as_i64().unwrap_or(0) == 0 {
                    port["hostPort"] = number;
                }
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = container.get_mut(probe).filter(|p| p.is_object()) else {
            continue;
        };
        for (key, value) in [
            ("timeoutSeconds", 1),
            ("periodSeconds", 10),
            ("successThreshold", 1),
            ("failureThreshold", 3),
        ] {
            if probe[key].as_i64().unwrap_or(0) == 0 {
                probe[key] = json!(value);
            }
        }
        if probe["httpGet"].is_object() {
            set_default(&mut probe["httpGet"], "path", json!("/"));
            set_default(&mut probe["httpGet"], "scheme", json!("HTTP"));
        }
    }
    if let Some(Value::Array(env)) = container.get_mut("env") {
        for var in env {
            if var["valueFrom"]["fieldRef"].is_object() {
                set_default(&mut var["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(map) = container["resources"].as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
}

/// The tag `ParseImageName` finds: "latest" when the reference has neither tag nor digest.
fn image_tag(image: &str) -> &str {
    if image.is_empty() {
        return "";
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

fn default_volume(volume: &mut Value) {
    let Some(map) = volume.as_object_mut() else {
        return;
    };
    if map.keys().all(|k| k == "name") {
        map.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if volume[source].is_object() {
            set_default(&mut volume[source], "defaultMode", json!(420));
        }
    }
    if volume["hostPath"].is_object() {
        set_default(&mut volume["hostPath"], "type", json!(""));
    }
    let items_of = |v: &mut Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
    if volume["downwardAPI"].is_object() {
        let mut items = items_of(&mut volume["downwardAPI"]["items"]);
        default_field_refs(&mut items);
        if !items.is_empty() {
            volume["downwardAPI"]["items"] = json!(items);
        }
    }
    if let Some(Value::Array(sources)) = volume.get_mut("projected").and_then(|p| p.get_mut("sources")) {
        for source in sources {
            if source["serviceAccountToken"].is_object() {
                set_default(
                    &mut source["serviceAccountToken"],
                    "expirationSeconds",
                    json!(3600),
                );
            }
            if source["downwardAPI"].is_object() {
                let mut items = items_of(&mut source["downwardAPI"]["items"]);
                default_field_refs(&mut items);
                if !items.is_empty() {
                    source["downwardAPI"]["items"] = json!(items);
                }
            }
        }
    }
}

fn default_field_refs(items: &mut [Value]) {
    for item in items {
        if item["fieldRef"].is_object() {
            set_default(&mut item["fieldRef"], "apiVersion", json!("v1"));
        }
    }
}

fn default_service(service: &mut Value) {
    let spec = &mut service["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    if spec["sessionAffinity"] == "None"
        && let Some(map) = spec.as_object_mut()
    {
        map.remove("sessionAffinityConfig");
    }
    if spec["sessionAffinity"] == "ClientIP"
        && spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].is_null()
    {
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
    }
    if spec["type"] != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    // Type-dependent fields: defaulted for the types that use them, dropped for the others (as
    // Kubernetes drops them when the type changes).
    let external = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    let load_balancer = spec["type"] == "LoadBalancer";
    if external {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if load_balancer {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(spec) = spec.as_object_mut() {
        if !external {
            spec.remove("externalTrafficPolicy");
        }
        if !load_balancer {
            spec.remove("allocateLoadBalancerNodePorts");
            spec.remove("loadBalancerClass");
        }
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
            let number = port["port"].clone();
            set_default(port, "targetPort", number);
        }
    }
}

fn default_deployment(deployment: &mut Value) {
    let spec = &mut deployment["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn default_replica_set(replica_set: &mut Value) {
    let spec = &mut replica_set["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "replicas", json!(1));
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn default_stateful_set(stateful_set: &mut Value) {
    let spec = &mut stateful_set["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    );
    set_default(
        spec,
        "persistentVolumeClaimRetentionPolicy",
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
    );
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn default_daemon_set(daemon_set: &mut Value) {
    let spec = &mut daemon_set["spec"];
    if !spec.is_object() {
        return;
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    );
    default_pod_spec(&mut spec["template"]["spec"]);
}

/// `policyTypes` defaults to Ingress, plus Egress when egress rules are given.
fn default_network_policy(policy: &mut Value) {
    let spec = &mut policy["spec"];
    if !spec.is_object() {
        return;
    }
    let egress = spec.get("egress").is_some_and(|e| !e.is_null());
    let types = if egress {
        json!(["Ingress", "Egress"])
    } else {
        json!(["Ingress"])
    };
    set_default(spec, "policyTypes", types);
}

/// BestEffort without any requests/limits; Guaranteed when every container has cpu and memory
/// limits equal to its requests; Burstable otherwise.
fn pod_qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect();
    let resources = |c: &Value, what: &str, res: &str| c["resources"][what][res].clone();
    let any = containers.iter().any(|c| {
        ["requests", "limits"]
            .iter()
            .any(|w| c["resources"][w].as_object().is_some_and(|m| !m.is_empty()))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = resources(c, "limits", r);
            let request = resources(c, "requests", r);
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn secret_string_data_becomes_data() {
        let registry = Registry::builtin();
        let def = registry.find("", "v1", "secrets").unwrap();
        let mut secret = json!({"data": {"a": "eA=="}, "stringData": {"b": "hello"}});
        default_on_write(&def, &mut secret);
        assert_eq!(
            secret,
            json!({"type": "Opaque", "data": {"a": "eA==", "b": "aGVsbG8="}})
        );
    }

    #[test]
    fn pod_defaults_and_qos() {
        let registry = Registry::builtin();
        let def = registry.find("", "v1", "pods").unwrap();
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "nginx",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        default_on_write(&def, &mut pod);
        default_on_create(&def, &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        assert_eq!(
            pod_qos_class(&json!({"containers": [{"name": "a"}]})),
            "BestEffort"
        );
    }
}
