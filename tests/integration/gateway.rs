//! The Gateway API path (`--traffic gateway-api`) against the test control plane, with the AKS-managed CRDs and the approuting-istio controller as stand-ins (see gateway_rig.rs).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::conditions;
use serde_json::{Value, json};

use crate::gateway_rig::{
    AppRoutingIstio, condition, enable_gateway_api, gateway_api, is_programmed,
};
use crate::util::{
    client, cluster_lock, create_namespace, delete_namespace, reset, unique_name, wait_for,
};

/// Applies a Gateway API object as a user would (manager `test`).
async fn apply_gw(c: &Client, kind: &str, ns: &str, obj: Value) -> DynamicObject {
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), ns, &gateway_api(kind));
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {kind} {ns}/{name}: {e}"))
}

async fn get_gw(c: &Client, kind: &str, ns: &str, name: &str) -> DynamicObject {
    Api::<DynamicObject>::namespaced_with(c.clone(), ns, &gateway_api(kind))
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{kind} {ns}/{name}: {e}"))
}

/// Polls until `f` holds for the object, or panics with the stand-in's log.
async fn eventually(
    c: &Client,
    kind: &str,
    ns: &str,
    name: &str,
    what: &str,
    rig: &AppRoutingIstio,
    f: impl Fn(&DynamicObject) -> bool,
) -> DynamicObject {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let o = get_gw(c, kind, ns, name).await;
        if f(&o) {
            return o;
        }
        assert!(
            Instant::now() < until,
            "{what}: not after 30s; status {}\n{}",
            o.data["status"],
            rig.proc.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stand-in does what AKS does for a Gateway of class `approuting-istio`, driven only through
/// the API: the four infrastructure objects named `<gw>-approuting-istio` and owned by the Gateway,
/// the infrastructure annotations copied (an internal load balancer), Programmed with the address,
/// and the status of an HTTPRoute attached to it.
#[tokio::test]
async fn cluster_gateway_standin_programs_a_gateway() {
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    let crd = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(c.clone())
        .get("gateways.gateway.networking.k8s.io")
        .await
        .expect("Gateway CRD");
    let annotations = crd.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations["gateway.networking.k8s.io/bundle-version"],
        "v1.4.1"
    );
    assert_eq!(annotations["gateway.networking.k8s.io/channel"], "standard");
    let rig = AppRoutingIstio::start(&c).await;
    let ns = unique_name("gw");
    create_namespace(&c, &ns, &[]).await;
    let internal = "service.beta.kubernetes.io/azure-load-balancer-internal";
    apply_gw(&c, "Gateway", &ns, json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "gatewayClassName": "approuting-istio",
            "infrastructure": {"annotations": {internal: "true"}, "labels": {"team": "grid"}},
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}],
        },
    }))
    .await;
    let gw = eventually(
        &c,
        "Gateway",
        &ns,
        "web",
        "Gateway web Programmed with an address",
        &rig,
        is_programmed,
    )
    .await;
    let address = gw.data["status"]["addresses"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        address.starts_with("198.51.100."),
        "internal address from the LB stand-in: {address}"
    );
    assert_eq!(gw.data["status"]["addresses"][0]["type"], "IPAddress");
    assert_eq!(condition(&gw, "Accepted").unwrap()["status"], "True");
    assert_eq!(gw.data["status"]["listeners"][0]["attachedRoutes"], 0);

    let name = "web-approuting-istio";
    let owned_by_gw =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default().iter().any(|r| {
                r.kind == "Gateway" && r.name == "web" && Some(&r.uid) == gw.metadata.uid.as_ref()
            })
        };
    let svc = Api::<Service>::namespaced(c.clone(), &ns)
        .get(name)
        .await
        .expect("Service");
    assert!(
        owned_by_gw(svc.metadata.owner_references.clone()),
        "Service owned by the Gateway"
    );
    assert_eq!(
        svc.metadata.annotations.clone().unwrap_or_default()[internal],
        "true"
    );
    assert_eq!(
        svc.metadata.labels.clone().unwrap_or_default()["team"],
        "grid"
    );
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert!(
        spec.ports.unwrap_or_default().iter().any(|p| p.port == 80),
        "listener port on the Service"
    );
    let dep = Api::<Deployment>::namespaced(c.clone(), &ns)
        .get(name)
        .await
        .expect("Deployment");
    assert!(owned_by_gw(dep.metadata.owner_references.clone()));
    let pod_annotations = dep
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap_or_default();
    assert_eq!(pod_annotations["prometheus.io/port"], "15020");
    assert_eq!(pod_annotations["prometheus.io/path"], "/stats/prometheus");
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(c.clone(), &ns)
        .get(name)
        .await
        .expect("HPA");
    assert!(owned_by_gw(hpa.metadata.owner_references.clone()));
    let pdb = Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns)
        .get(name)
        .await
        .expect("PDB");
    assert!(owned_by_gw(pdb.metadata.owner_references.clone()));

    // A route to a Service that does not exist: accepted by the listener, its backend unresolved.
    apply_gw(
        &c,
        "HTTPRoute",
        &ns,
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {
                "parentRefs": [{"name": "web"}],
                "hostnames": ["app.example.com"],
                "rules": [{"backendRefs": [{"name": "missing", "port": 80}]}],
            },
        }),
    )
    .await;
    let route = eventually(&c, "HTTPRoute", &ns, "app", "HTTPRoute status", &rig, |r| {
        r.data["status"]["parents"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    })
    .await;
    let parent = &route.data["status"]["parents"][0];
    let cond = |t: &str| -> Value {
        parent["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond("Accepted")["status"], "True", "{parent}");
    assert_eq!(
        cond("ResolvedRefs")["reason"],
        "BackendNotFound",
        "{parent}"
    );
    eventually(&c, "Gateway", &ns, "web", "one attached route", &rig, |g| {
        g.data["status"]["listeners"][0]["attachedRoutes"] == 1
    })
    .await;

    // Deleting the Gateway takes its infrastructure with it (owner references, garbage collector).
    let uid = svc.metadata.uid.clone().unwrap();
    Api::<DynamicObject>::namespaced_with(c.clone(), &ns, &gateway_api("Gateway"))
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete Gateway");
    wait_for(
        Api::<Service>::namespaced(c.clone(), &ns),
        name,
        60,
        "gateway Service collected",
        conditions::is_deleted(&uid),
    )
    .await;
    drop(rig);
    delete_namespace(&c, &ns).await;
    reset(&c).await;
    eprintln!(
        "gateway test: stand-in programmed a Gateway; {:.1}s in all",
        t0.elapsed().as_secs_f64()
    );
}
