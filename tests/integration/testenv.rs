//! The test control plane itself: real workloads roll out on kwok nodes, the load-balancer stand-in
//! assigns addresses, namespaces are deleted completely, Pod Security admission is enforced.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;

use crate::util::{client, create_namespace, delete_namespace, unique_name, wait_for};

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app", "image": "registry.example/app:1",
                    "securityContext": {
                        "runAsNonRoot": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}
                    }
                }]}
            }
        }
    }))
    .expect("deployment")
}

fn load_balancer(name: &str, internal: bool) -> Service {
    let annotations = if internal {
        serde_json::json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"})
    } else {
        serde_json::json!({})
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]}
    }))
    .expect("service")
}

/// Available means rolled out: the current generation observed and every replica updated and available.
fn rolled_out(replicas: i32) -> impl Fn(Option<&Deployment>) -> bool {
    move |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            let s = d.status.clone().unwrap_or_default();
            s.observed_generation == d.metadata.generation
                && s.updated_replicas == Some(replicas)
                && s.available_replicas == Some(replicas)
                && s.ready_replicas == Some(replicas)
        })
    }
}

#[tokio::test]
async fn cluster_reports_the_pinned_kubernetes_version() {
    let gomod = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testenv/kube-apiserver/go.mod"
    ))
    .unwrap();
    let pinned = gomod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|v| format!("v{v}"))
        .expect("k8s.io/kubernetes is required in the wrapper's go.mod");
    let v = client().await.apiserver_version().await.expect("version");
    assert_eq!(
        v.git_version, pinned,
        "the apiserver reports the version the wrapper module pins"
    );
}

#[tokio::test]
async fn cluster_has_three_ready_aks_like_nodes() {
    let c = client().await;
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(c)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 3);
    for n in &nodes.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("kubernetes.azure.com/agentpool")
                .map(String::as_str),
            Some("nodepool1")
        );
        assert!(labels.contains_key("topology.kubernetes.io/zone"));
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(ready, "node {:?} is Ready", n.metadata.name);
    }
}

#[tokio::test]
async fn cluster_two_replica_deployment_becomes_available() {
    let c = client().await;
    let ns = unique_name("deploy");
    create_namespace(&c, &ns, &[]).await;
    let api: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    api.create(&PostParams::default(), &deployment("web", 2))
        .await
        .unwrap();
    wait_for(
        api.clone(),
        "web",
        60,
        "Deployment web rolled out",
        rolled_out(2),
    )
    .await;
    let pods = Api::<Pod>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for p in &pods.items {
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(
            p.spec
                .as_ref()
                .unwrap()
                .node_name
                .as_deref()
                .unwrap_or("")
                .starts_with("aks-nodepool1-")
        );
    }
    delete_namespace(&c, &ns).await;
}

async fn assigned_address(c: &kube::Client, ns: &str, name: &str) -> String {
    let api: Api<Service> = Api::namespaced(c.clone(), ns);
    let has_address = |s: Option<&Service>| {
        s.and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| i.iter().any(|e| e.ip.is_some()))
    };
    wait_for(
        api.clone(),
        name,
        30,
        "a load-balancer address",
        has_address,
    )
    .await;
    let svc = api.get(name).await.unwrap();
    svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
        .ip
        .clone()
        .unwrap()
}

#[tokio::test]
async fn cluster_load_balancer_gets_a_public_address_and_events() {
    let c = client().await;
    let ns = unique_name("lb");
    create_namespace(&c, &ns, &[]).await;
    let api: Api<Service> = Api::namespaced(c.clone(), &ns);
    api.create(&PostParams::default(), &load_balancer("public", false))
        .await
        .unwrap();
    let ip = assigned_address(&c, &ns, "public").await;
    assert!(
        ip.starts_with("203.0.113."),
        "public address from 203.0.113.0/24, got {ip}"
    );
    let events = Api::<Event>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let reasons: Vec<_> = events
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(
        reasons.contains(&"EnsuringLoadBalancer".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"EnsuredLoadBalancer".to_string()),
        "{reasons:?}"
    );
    delete_namespace(&c, &ns).await;
}

#[tokio::test]
async fn cluster_internal_load_balancer_gets_an_internal_address() {
    let c = client().await;
    let ns = unique_name("ilb");
    create_namespace(&c, &ns, &[]).await;
    let api: Api<Service> = Api::namespaced(c.clone(), &ns);
    api.create(&PostParams::default(), &load_balancer("internal", true))
        .await
        .unwrap();
    let ip = assigned_address(&c, &ns, "internal").await;
    assert!(
        ip.starts_with("198.51.100."),
        "internal address from 198.51.100.0/24, got {ip}"
    );
    delete_namespace(&c, &ns).await;
}

#[tokio::test]
async fn cluster_namespace_with_pods_is_deleted_completely() {
    let c = client().await;
    let ns = unique_name("gone");
    create_namespace(&c, &ns, &[]).await;
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    deployments
        .create(&PostParams::default(), &deployment("busy", 3))
        .await
        .unwrap();
    wait_for(
        deployments,
        "busy",
        60,
        "Deployment busy rolled out",
        rolled_out(3),
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let uid = namespaces.get(&ns).await.unwrap().metadata.uid.unwrap();
    namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        namespaces.clone(),
        &ns,
        90,
        "the namespace to be deleted",
        conditions::is_deleted(&uid),
    )
    .await;
    assert!(namespaces.get_opt(&ns).await.unwrap().is_none());
    let pods = Api::<Pod>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(pods.items.is_empty(), "no pod is left behind");
}

#[tokio::test]
async fn cluster_pod_security_restricted_rejects_a_violating_pod() {
    let c = client().await;
    let ns = unique_name("psa");
    create_namespace(
        &c,
        &ns,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let bad: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                 "securityContext": {"privileged": true}}]}
    }))
    .unwrap();
    let err = pods
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the apiserver refuses the pod");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message
                    .contains("violates PodSecurity \"restricted:latest\""),
                "{}",
                s.message
            );
        }
        other => panic!("expected a 403 from Pod Security admission, got {other}"),
    }
    // The same pod made compliant is admitted: the label, not something else, refused it.
    let good: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ok"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                 "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                                                     "capabilities": {"drop": ["ALL"]},
                                                     "seccompProfile": {"type": "RuntimeDefault"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &good)
        .await
        .expect("a restricted-compliant pod is admitted");
    delete_namespace(&c, &ns).await;
}
