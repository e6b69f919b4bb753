//! The host simulator: scheduling, pod life, graceful deletion, endpoints, load balancers and
//! node leases, observed through kube-rs. Embedded server only (a real cluster has its own
//! kubelets and controllers).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use vcsync_apiserver::{Simulator, SimulatorConfig};

use crate::env::{Env, embedded, eventually, object};

/// How long anything the simulator does may take in these tests.
const LIMIT: Duration = Duration::from_secs(10);

/// Starts a simulator on the case's embedded server.
fn start(env: &Env, config: SimulatorConfig) -> Simulator {
    env.embedded_server().start_simulator(config)
}

fn pod(name: &str, labels: Value, spec: Value) -> Pod {
    let mut full = json!({"containers": [{"name": "app", "image": "nginx:1",
        "ports": [{"name": "http", "containerPort": 8080}]}]});
    json_patch::merge(&mut full, &spec);
    object(json!({"metadata": {"name": name, "labels": labels}, "spec": full}))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the pod satisfies `check`, returning it.
async fn wait_pod(api: &Api<Pod>, name: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    eventually(LIMIT, || async {
        api.get_opt(name).await.ok().flatten().filter(|p| check(p))
    })
    .await
    .unwrap_or_else(|| panic!("pod {name} did not reach the expected state"))
}

async fn wait_gone(api: &Api<Pod>, name: &str) {
    let gone = eventually(LIMIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
    assert!(gone.is_some(), "pod {name} was not deleted");
}

embedded! {
    async fn pods_are_bound_and_run_on_simulated_nodes(env: Env) -> TestResult {
        let simulator = start(&env, SimulatorConfig::default());
        let server = env.embedded_server().clone();
        assert_eq!(simulator.node_names(), ["sim-node-0", "sim-node-1", "sim-node-2"]);
        let nodes: Api<Node> = Api::all(env.client.clone());
        let node = nodes.get("sim-node-0").await?;
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels["node.kubernetes.io/instance-type"], "sim");
        let status = node.status.unwrap();
        assert_eq!(status.node_info.unwrap().kubelet_version, "v1.37.0-sim");
        assert_eq!(status.capacity.unwrap()["pods"].0, "110");
        let conditions = status.conditions.unwrap();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );

        server.reset_counters();
        let api = env.api::<Pod>();
        for i in 0..6 {
            api.create(
                &PostParams::default(),
                &pod(&format!("p{i}"), json!({}), json!({})),
            )
            .await?;
        }
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        let mut ips = Vec::new();
        for i in 0..6 {
            let running = wait_pod(&api, &format!("p{i}"), is_ready).await;
            let status = running.status.unwrap();
            assert_eq!(status.phase.as_deref(), Some("Running"));
            let ip = status.pod_ip.unwrap();
            assert!(ip.starts_with("10.244."), "{ip}");
            ips.push(ip);
            // The node's address, where its kubelet API listens.
            let node = running.spec.as_ref().unwrap().node_name.clone().unwrap();
            let index: u8 = node.strip_prefix("sim-node-").unwrap().parse().unwrap();
            assert_eq!(status.host_ip.unwrap(), format!("127.0.1.{}", index + 1));
            assert!(status.start_time.is_some());
            let container = &status.container_statuses.unwrap()[0];
            assert!(container.ready && container.started == Some(true));
            assert!(container.container_id.as_deref().unwrap().starts_with("sim://"));
            assert!(container.state.as_ref().unwrap().running.is_some());
            *per_node
                .entry(running.spec.unwrap().node_name.unwrap())
                .or_default() += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 6, "unique pod IPs");
        // The simulator's writes are not HTTP requests: only the six creates were counted.
        assert_eq!(server.counters().writes(), 6);
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn node_selectors_and_capacity_are_honoured(env: Env) -> TestResult {
        let config = SimulatorConfig {
            nodes: 2,
            max_pods_per_node: 1,
            ..Default::default()
        };
        let simulator = start(&env, config);
        let api = env.api::<Pod>();
        let on_one = json!({"nodeSelector": {"kubernetes.io/hostname": "sim-node-1"}});
        api.create(&PostParams::default(), &pod("pinned", json!({}), on_one))
            .await?;
        let pinned = wait_pod(&api, "pinned", is_ready).await;
        assert_eq!(pinned.spec.unwrap().node_name.as_deref(), Some("sim-node-1"));

        let nowhere = json!({"nodeSelector": {"zone": "moon"}});
        api.create(&PostParams::default(), &pod("lost", json!({}), nowhere))
            .await?;
        let unschedulable = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.type_ == "PodScheduled"
                            && c.status == "False"
                            && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        };
        let lost = wait_pod(&api, "lost", unschedulable).await;
        assert!(lost.spec.unwrap().node_name.is_none());

        // A node that gains the label takes the pod.
        let nodes: Api<Node> = Api::all(env.client.clone());
        let zone = Patch::Merge(json!({"metadata": {"labels": {"zone": "moon"}}}));
        nodes.patch("sim-node-0", &PatchParams::default(), &zone).await?;
        let found = wait_pod(&api, "lost", is_ready).await;
        assert_eq!(found.spec.unwrap().node_name.as_deref(), Some("sim-node-0"));

        // Both nodes are full now (one pod each); the next pod waits for room.
        api.create(&PostParams::default(), &pod("third", json!({}), json!({})))
            .await?;
        let waiting = wait_pod(&api, "third", unschedulable).await;
        let message = waiting.status.unwrap().conditions.unwrap()[0]
            .message
            .clone()
            .unwrap();
        assert!(message.contains("Too many pods"), "{message}");
        api.delete("pinned", &DeleteParams::default().grace_period(0))
            .await?;
        let placed = wait_pod(&api, "third", is_ready).await;
        assert_eq!(placed.spec.unwrap().node_name.as_deref(), Some("sim-node-1"));
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn failing_images_stay_pending(env: Env) -> TestResult {
        let config = SimulatorConfig {
            fail_images: vec!["broken/*".to_string()],
            start_delay: Duration::from_millis(50),
            ..Default::default()
        };
        let simulator = start(&env, config);
        let api = env.api::<Pod>();
        let broken = json!({"containers": [{"name": "app", "image": "broken/app:1"}]});
        api.create(&PostParams::default(), &pod("broken", json!({}), broken))
            .await?;
        api.create(&PostParams::default(), &pod("fine", json!({}), json!({})))
            .await?;
        wait_pod(&api, "fine", is_ready).await;
        let waiting = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| !c.is_empty())
        };
        let failed = wait_pod(&api, "broken", waiting).await;
        let status = failed.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let container = &status.container_statuses.unwrap()[0];
        assert!(!container.ready);
        let reason = container
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .clone();
        assert_eq!(reason.as_deref(), Some("ErrImagePull"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn graceful_deletion_finishes_after_the_grace_period(env: Env) -> TestResult {
        let simulator = start(&env, SimulatorConfig::default());
        let api = env.api::<Pod>();
        let quick = json!({"terminationGracePeriodSeconds": 1});
        api.create(&PostParams::default(), &pod("quick", json!({}), quick))
            .await?;
        wait_pod(&api, "quick", is_ready).await;
        let started = std::time::Instant::now();
        api.delete("quick", &DeleteParams::default()).await?;
        let terminating = api.get("quick").await?;
        assert!(terminating.metadata.deletion_timestamp.is_some());
        assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(1));
        wait_gone(&api, "quick").await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "the grace period is honoured: {:?}",
            started.elapsed()
        );

        // A shorter grace period on a second delete moves the end forward.
        api.create(&PostParams::default(), &pod("slow", json!({}), json!({})))
            .await?;
        wait_pod(&api, "slow", is_ready).await;
        api.delete("slow", &DeleteParams::default()).await?;
        api.delete("slow", &DeleteParams::default().grace_period(1))
            .await?;
        wait_gone(&api, "slow").await;
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

/// IPs listed by an Endpoints object, sorted.
fn endpoint_ips(endpoints: &Endpoints) -> Vec<String> {
    let mut ips: Vec<String> = endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    ips.sort();
    ips
}

embedded! {
    async fn endpoints_follow_ready_pods_and_write_only_changes(env: Env) -> TestResult {
        let config = SimulatorConfig {
            fail_images: vec!["broken/*".to_string()],
            // No periodic writes during the test: it counts the simulator's writes.
            lease_renew: Duration::from_secs(3600),
            node_heartbeat: Duration::from_secs(3600),
            ..Default::default()
        };
        let simulator = start(&env, config);
        let services = env.api::<Service>();
        let service: Service = object(
            json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        );
        services.create(&PostParams::default(), &service).await?;
        let api = env.api::<Pod>();
        let web = json!({"app": "web"});
        for name in ["a", "b"] {
            api.create(&PostParams::default(), &pod(name, web.clone(), json!({})))
                .await?;
        }
        let broken = json!({"containers": [{"name": "app", "image": "broken/x"}]});
        api.create(&PostParams::default(), &pod("unready", web.clone(), broken))
            .await?;
        api.create(
            &PostParams::default(),
            &pod("other", json!({"app": "db"}), json!({})),
        )
        .await?;
        let mut pod_ips = Vec::new();
        for name in ["a", "b", "other"] {
            let pod = wait_pod(&api, name, is_ready).await;
            pod_ips.push(pod.status.unwrap().pod_ip.unwrap());
        }
        let mut web_ips = pod_ips[..2].to_vec();
        web_ips.sort();

        let endpoints_api = env.api::<Endpoints>();
        let endpoints = eventually(LIMIT, || async {
            endpoints_api
                .get_opt("web")
                .await
                .ok()
                .flatten()
                .filter(|e| endpoint_ips(e) == web_ips)
        })
        .await
        .expect("Endpoints list the two ready web pods");
        let subset = &endpoints.subsets.as_ref().unwrap()[0];
        let port = &subset.ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let address = &subset.addresses.as_ref().unwrap()[0];
        assert_eq!(address.target_ref.as_ref().unwrap().kind.as_deref(), Some("Pod"));
        assert!(address.node_name.as_deref().unwrap().starts_with("sim-node-"));

        let slices = env.api::<EndpointSlice>();
        let slice = slices.get("web-sim").await?;
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
            "web"
        );
        let mut slice_ips: Vec<String> = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.addresses[0].clone())
            .collect();
        slice_ips.sort();
        assert_eq!(slice_ips, web_ips);
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));

        // Changes that do not touch endpoint content write nothing: watch the Endpoints from now,
        // make such changes, then one that does (a third web pod); the first event must be that one.
        let since = endpoints.metadata.resource_version.clone().unwrap();
        let writes_before = simulator.writes();
        let annotate = Patch::Merge(json!({"metadata": {"annotations": {"note": "irrelevant"}}}));
        api.patch("a", &PatchParams::default(), &annotate).await?;
        api.patch("other", &PatchParams::default(), &annotate).await?;
        api.create(
            &PostParams::default(),
            &pod("other2", json!({"app": "db"}), json!({})),
        )
        .await?;
        wait_pod(&api, "other2", is_ready).await;
        // The simulator handles events in order, so by now it has handled the annotations too: it
        // bound and started the new pod, and wrote nothing else (not even no-op updates).
        assert_eq!(simulator.writes() - writes_before, 2);
        api.create(&PostParams::default(), &pod("c", web.clone(), json!({})))
            .await?;
        let params = WatchParams::default().fields("metadata.name=web");
        let mut events = endpoints_api.watch(&params, &since).await?.boxed();
        let first = tokio::time::timeout(LIMIT, events.try_next())
            .await??
            .expect("an event");
        let WatchEvent::Modified(changed) = first else {
            panic!("expected MODIFIED, got {first:?}");
        };
        assert_eq!(
            endpoint_ips(&changed).len(),
            3,
            "the first write is the new pod's"
        );
        drop(events);

        // A deleted pod leaves; a deleted service takes its objects along.
        api.delete("a", &DeleteParams::default().grace_period(0)).await?;
        let left = eventually(LIMIT, || async {
            endpoints_api
                .get_opt("web")
                .await
                .ok()
                .flatten()
                .filter(|e| endpoint_ips(e).len() == 2)
        })
        .await;
        assert!(left.is_some());
        services.delete("web", &DeleteParams::default()).await?;
        let cleaned = eventually(LIMIT, || async {
            let endpoints = endpoints_api.get_opt("web").await.ok()?;
            let slice = slices.get_opt("web-sim").await.ok()?;
            (endpoints.is_none() && slice.is_none()).then_some(())
        })
        .await;
        assert!(cleaned.is_some(), "Endpoints and EndpointSlice removed");
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn load_balancers_get_addresses(env: Env) -> TestResult {
        let simulator = start(&env, SimulatorConfig::default());
        let services = env.api::<Service>();
        let service: Service = object(json!({"metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}}));
        services.create(&PostParams::default(), &service).await?;
        let ingress_ip = |s: &Service| {
            s.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .and_then(|i| i.first())
                .and_then(|i| i.ip.clone())
        };
        let balanced = eventually(LIMIT, || async {
            services.get("lb").await.ok().filter(|s| ingress_ip(s).is_some())
        })
        .await
        .expect("an ingress address");
        assert!(ingress_ip(&balanced).unwrap().starts_with("192.0.2."));
        let to_cluster_ip = Patch::Merge(json!({"spec": {"type": "ClusterIP"}}));
        services
            .patch("lb", &PatchParams::default(), &to_cluster_ip)
            .await?;
        let cleared = eventually(LIMIT, || async {
            services.get("lb").await.ok().filter(|s| ingress_ip(s).is_none())
        })
        .await;
        assert!(cleared.is_some(), "status cleared when the type changes");
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn nodes_name_their_kubelet_endpoints(env: Env) -> TestResult {
        let simulator = start(&env, SimulatorConfig { nodes: 2, ..Default::default() });
        let nodes: Api<Node> = Api::all(env.client.clone());
        let mut endpoints = Vec::new();
        for (index, name) in simulator.node_names().iter().enumerate() {
            let status = nodes.get(name).await?.status.unwrap();
            let addresses: Vec<(String, String)> = status
                .addresses
                .unwrap()
                .into_iter()
                .map(|a| (a.type_, a.address))
                .collect();
            let ip = format!("127.0.1.{}", index + 1);
            // Only the InternalIP: kube-apiserver would try a Hostname first.
            assert_eq!(addresses, [("InternalIP".to_string(), ip.clone())]);
            let port = status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port;
            assert_ne!(port, 10250, "a port of its own");
            endpoints.push((ip, port as u16));
        }
        for (ip, port) in &endpoints {
            // The kubelet API listens there (TLS, client certificates required: see the
            // simulator's kubelet tests for what it serves).
            tokio::net::TcpStream::connect((ip.as_str(), *port)).await?;
        }
        simulator.stop().await;
        for (ip, port) in &endpoints {
            assert!(tokio::net::TcpStream::connect((ip.as_str(), *port)).await.is_err(), "closed at stop");
        }
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn node_leases_are_renewed(env: Env) -> TestResult {
        let config = SimulatorConfig {
            nodes: 1,
            lease_renew: Duration::from_millis(50),
            node_heartbeat: Duration::from_millis(50),
            ..Default::default()
        };
        let simulator = start(&env, config);
        let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
        let lease = leases.get("sim-node-0").await?;
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("sim-node-0"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let first = spec.renew_time.unwrap();
        let renewed = eventually(LIMIT, || async {
            let spec = leases.get("sim-node-0").await.ok()?.spec?;
            spec.renew_time.filter(|t| *t != first)
        })
        .await;
        assert!(renewed.is_some(), "renewTime moves on");
        simulator.stop().await;
        env.finish().await;
        Ok(())
    }
}

embedded! {
    async fn restarts_and_compaction_resume_without_rewrites(env: Env) -> TestResult {
        let simulator = start(&env, SimulatorConfig::default());
        let server = env.embedded_server().clone();
        let api = env.api::<Pod>();
        api.create(&PostParams::default(), &pod("before", json!({}), json!({})))
            .await?;
        let before = wait_pod(&api, "before", is_ready).await;
        simulator.stop().await;

        // A pod created while no simulator runs waits; a new simulator takes over.
        api.create(&PostParams::default(), &pod("between", json!({}), json!({})))
            .await?;
        let simulator = server.start_simulator(SimulatorConfig::default());
        let between = wait_pod(&api, "between", is_ready).await;
        assert_ne!(
            between.status.unwrap().pod_ip,
            before.status.as_ref().unwrap().pod_ip,
            "the running pod's IP is kept reserved"
        );
        assert_eq!(
            api.get("before").await?.metadata.resource_version,
            before.metadata.resource_version,
            "a running pod is not written again"
        );

        // After a compaction the simulator lists and watches again.
        server.compact();
        api.create(&PostParams::default(), &pod("after", json!({}), json!({})))
            .await?;
        wait_pod(&api, "after", is_ready).await;
        // Shutting the server down ends a simulator whose handle was dropped.
        drop(simulator);
        let shutdown = tokio::time::timeout(LIMIT, env.finish()).await;
        assert!(shutdown.is_ok());
        Ok(())
    }
}
