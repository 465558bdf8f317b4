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
    AppRoutingIstio, ISTIO_NAMESPACE, MeshMark, condition, disable_istio_mesh_marks,
    enable_gateway_api, enable_istio_mesh_mark, gateway_api, is_programmed, istiod_available,
};
use crate::util::{
    client, cluster_lock, create_namespace, delete_namespace, gridos_k, ok, reset, stderr, stdout,
    unique_name, wait_for,
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

/// `install --profile PROFILE --host app.example.com --traffic gateway-api --yes` plus `extra`.
fn install_gw(profile: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "install",
        "--profile",
        profile,
        "--host",
        HOST,
        "--traffic",
        "gateway-api",
        "--yes",
    ];
    args.extend_from_slice(extra);
    gridos_k(&args)
}

const HOST: &str = "app.example.com";
const GATEWAY_NS: &str = "gridos-gateway";
const TLS: &str = "gateway.tls.secretName=gridos-tls";

/// A re-run that changed nothing: the summary counts only unchanged objects.
fn assert_no_op(out: &str, what: &str) {
    assert!(
        out.contains("0 created, 0 configured,") && out.contains("unchanged, 0 pruned"),
        "{what}: a re-run changes nothing:\n{out}"
    );
}

/// `plan` (a server-side dry run of every object) of each Gateway API variant against the CRDs:
/// every front, with and without the HTTPS listener, and nothing written.
#[tokio::test]
async fn cluster_gateway_dry_run_of_every_variant_passes() {
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    let rig = AppRoutingIstio::start(&c).await;
    let before = crate::bad_input::snapshot(&c).await;
    for profile in ["nginx", "appgw", "frontdoor"] {
        for tls in [false, true] {
            let mut args = vec![
                "plan",
                "--profile",
                profile,
                "--host",
                HOST,
                "--traffic",
                "gateway-api",
                "--show-objects",
            ];
            if tls {
                args.extend(["--set", TLS]);
            }
            let out = gridos_k(&args);
            let text = format!("{}{}", ok(&out), stderr(&out));
            assert!(
                text.contains("Gateway/gridos-gateway/gridos")
                    && text.contains(" would be created"),
                "{profile} tls={tls}: the dry run takes the Gateway:\n{text}"
            );
            // The Ingress's limit-rps does not carry over: the plan says so (design.md §10).
            assert!(
                text.contains(gridos_setup::plan::GATEWAY_NO_RATE_LIMIT),
                "{profile} tls={tls}: the no-rate-limit notice:\n{text}"
            );
        }
    }
    assert_eq!(
        crate::bad_input::snapshot(&c).await,
        before,
        "plan wrote nothing"
    );
    drop(rig);
    reset(&c).await;
    eprintln!(
        "gateway test: 6 dry runs in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// Asserts `out` failed (non-zero), naming `fix` on stderr.
fn assert_refused(out: &std::process::Output, fix: &str, what: &str) {
    assert_ne!(
        out.status.code(),
        Some(0),
        "{what}: refused\n{}",
        stdout(out)
    );
    let all = format!("{}{}", stdout(out), stderr(out));
    assert!(all.contains(fix), "{what}: names `{fix}`:\n{all}");
}

/// Without what AKS provides (the CRDs, the GatewayClass) or with the Istio mesh add-on next to it
/// (its GatewayClass `istio`, and separately an Istio CRD), `check --pre` and `install` fail naming
/// the `az` command that fixes it, and install writes nothing.
#[tokio::test]
async fn cluster_gateway_missing_prerequisites_are_refused_before_any_write() {
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    let cases: [(&str, &str); 4] = [
        (
            "no Gateway API CRDs",
            "--enable-gateway-api --enable-app-routing-istio",
        ),
        (
            "no GatewayClass approuting-istio",
            "az aks approuting gateway istio enable",
        ),
        (
            "the mesh add-on's GatewayClass istio",
            "az aks mesh disable",
        ),
        ("the mesh add-on's Istio CRD", "az aks mesh disable"),
    ];
    let mut rig = None;
    for (i, (what, fix)) in cases.iter().enumerate() {
        match i {
            1 => enable_gateway_api(&c).await,
            2 => {
                rig = Some(AppRoutingIstio::start(&c).await);
                enable_istio_mesh_mark(&c, MeshMark::Class).await;
            }
            3 => {
                disable_istio_mesh_marks(&c).await;
                enable_istio_mesh_mark(&c, MeshMark::Crd).await;
            }
            _ => {}
        }
        let check = gridos_k(&[
            "check",
            "--pre",
            "--profile",
            "nginx",
            "--host",
            HOST,
            "--traffic",
            "gateway-api",
        ]);
        assert_refused(&check, fix, &format!("check --pre, {what}"));
        let before = crate::bad_input::snapshot(&c).await;
        let install = install_gw("nginx", &[]);
        assert_refused(&install, fix, &format!("install, {what}"));
        assert_eq!(
            install.status.code(),
            Some(1),
            "install, {what}: exit 1\n{}",
            stderr(&install)
        );
        assert_eq!(
            crate::bad_input::snapshot(&c).await,
            before,
            "install, {what}: nothing written"
        );
    }
    drop(rig);
    reset(&c).await;
    eprintln!(
        "gateway test: prerequisites refused in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// A cluster prepared as AKS prepares it (the managed CRDs labelled `app.kubernetes.io/managed-by:
/// aks`, GatewayClass `approuting-istio`, application routing's istiod in `aks-istio-system`)
/// passes `check --pre` and installs: that namespace is not the mesh add-on.
#[tokio::test]
async fn cluster_gateway_prepared_as_aks_passes_check_and_installs() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    let rig = AppRoutingIstio::start(&c).await;
    assert!(
        Api::<Namespace>::all(c.clone())
            .get_opt(ISTIO_NAMESPACE)
            .await
            .unwrap()
            .is_some()
            && istiod_available(&c).await,
        "istiod runs in {ISTIO_NAMESPACE}"
    );
    let crd = Api::<CustomResourceDefinition>::all(c.clone())
        .get("gateways.gateway.networking.k8s.io")
        .await
        .unwrap();
    assert!(
        gridos_setup::gateway::aks_managed(&crd),
        "labelled as AKS labels it"
    );
    let check = gridos_k(&[
        "check",
        "--pre",
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--traffic",
        "gateway-api",
        "-o",
        "json",
    ]);
    let report = ok(&check);
    let lines: Vec<Value> = report
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let result_of = |name: &str| {
        lines
            .iter()
            .find(|l| l["event"] == "check" && l["name"] == name)
            .unwrap_or_else(|| panic!("check {name} in:\n{report}"))
    };
    for name in [
        "Gateway API CRDs",
        "GatewayClass approuting-istio",
        "Istio service-mesh add-on",
    ] {
        assert_eq!(result_of(name)["result"], "pass", "{name}:\n{report}");
    }
    let text = ok(&install_gw("nginx", &[]));
    assert!(is_programmed(&gateway(&c).await), "installed:\n{text}");
    drop(rig);
    reset(&c).await;
    eprintln!(
        "gateway test: AKS-prepared cluster checked and installed in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// The Gateway `gridos` as the cluster has it.
async fn gateway(c: &Client) -> DynamicObject {
    get_gw(c, "Gateway", GATEWAY_NS, "gridos").await
}

/// Install per front: the Gateway is Programmed, its address is in the guidance, appgw's is
/// internal (the infrastructure annotation reaches the Service AKS makes), and a re-run is a no-op.
#[tokio::test]
async fn cluster_gateway_install_each_front_then_rerun_changes_nothing() {
    let _l = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    let rig = AppRoutingIstio::start(&c).await;
    for (profile, range) in [
        ("nginx", "203.0.113."),
        ("appgw", "198.51.100."),
        ("frontdoor", "203.0.113."),
    ] {
        let t0 = Instant::now();
        let text = ok(&install_gw(profile, &[]));
        let took = t0.elapsed();
        let gw = gateway(&c).await;
        assert!(
            is_programmed(&gw),
            "{profile}: Programmed: {}",
            gw.data["status"]
        );
        let address = gw.data["status"]["addresses"][0]["value"]
            .as_str()
            .unwrap_or_default();
        assert!(
            address.starts_with(range),
            "{profile}: address from {range}: {address}"
        );
        assert!(
            text.contains(address),
            "{profile}: the guidance names the address {address}:\n{text}"
        );
        let internal = gw.data["spec"]["infrastructure"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"]
            == "true";
        assert_eq!(
            internal,
            profile == "appgw",
            "{profile}: internal LB annotation: {}",
            gw.data["spec"]
        );
        assert!(
            Api::<k8s_openapi::api::networking::v1::IngressClass>::all(c.clone())
                .get_opt("nginx")
                .await
                .unwrap()
                .is_none(),
            "{profile}: no ingress-nginx on this layer"
        );
        let again = ok(&install_gw(profile, &[]));
        assert_no_op(&again, profile);
        eprintln!(
            "gateway test: {profile} installed in {:.1}s",
            took.as_secs_f64()
        );
    }
    // HTTPS: with the certificate Secret the user creates in the gateway namespace, the https
    // listener resolves it and AKS's Service gets port 443.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "gridos-tls", "namespace": GATEWAY_NS},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "", "tls.key": ""},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), GATEWAY_NS)
        .create(&Default::default(), &secret)
        .await
        .expect("TLS Secret");
    ok(&install_gw("frontdoor", &["--set", TLS]));
    let gw = gateway(&c).await;
    let https = gw.data["status"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["name"] == "https")
        .cloned()
        .unwrap_or_else(|| panic!("an https listener: {}", gw.data["status"]));
    assert!(
        https["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "ResolvedRefs" && c["status"] == "True"),
        "the certificate resolves: {https}"
    );
    let svc = Api::<Service>::namespaced(c.clone(), GATEWAY_NS)
        .get("gridos-approuting-istio")
        .await
        .expect("gateway Service");
    assert!(
        svc.spec
            .unwrap()
            .ports
            .unwrap_or_default()
            .iter()
            .any(|p| p.port == 443),
        "port 443 on the gateway Service"
    );
    assert_no_op(
        &ok(&install_gw("frontdoor", &["--set", TLS])),
        "frontdoor with TLS",
    );
    drop(rig);
    reset(&c).await;
}

/// Without the controller the Gateway is never Programmed: install gives up with exit 3, naming
/// the Gateway's conditions.
#[tokio::test]
async fn cluster_gateway_install_times_out_without_the_controller() {
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    // The stand-in makes GatewayClass approuting-istio Accepted, then stops: the class stays, the
    // controller is gone.
    drop(AppRoutingIstio::start(&c).await);
    let out = install_gw("nginx", &["--timeout", "10s"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit 3 on timeout:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("Gateway") && err.contains("gridos"),
        "names the Gateway: {err}"
    );
    assert!(
        err.contains("Programmed") || err.contains("Accepted") || err.contains("condition"),
        "names its conditions: {err}"
    );
    reset(&c).await;
    eprintln!(
        "gateway test: timeout case in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// One observed state of a layer, at the cluster revision (resourceVersion) it was written at.
#[derive(Clone, Debug)]
struct Seen {
    revision: u64,
    layer: &'static str,
    serving: bool,
}

/// Records every state of object `name` by watching it: `serving` says whether it serves traffic.
fn record_states<K>(
    api: Api<K>,
    name: &str,
    layer: &'static str,
    serving: fn(&K) -> bool,
    log: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use futures::StreamExt;
    use kube::runtime::watcher;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        while let Some(ev) = stream.next().await {
            let (o, alive) = match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => (o, true),
                Ok(watcher::Event::Delete(o)) => (o, false),
                _ => continue,
            };
            let revision = o
                .meta()
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let serving = alive && o.meta().deletion_timestamp.is_none() && serving(&o);
            if let Ok(mut l) = log.lock() {
                l.push(Seen {
                    revision,
                    layer,
                    serving,
                });
            }
        }
    })
}

/// nginx -> Gateway API -> nginx, one install each: every step converges and its re-run is a no-op,
/// and a watch on both layers' entry points (the controller Service with its address, the Gateway
/// Programmed with its address) never sees a moment, in the cluster's own order of writes, where
/// neither serves: the old layer goes only after the new one is Programmed.
#[tokio::test]
async fn cluster_gateway_switch_nginx_gateway_nginx_never_leaves_no_layer() {
    let _l = cluster_lock().await;
    let t0 = Instant::now();
    let c = client().await;
    reset(&c).await;
    enable_gateway_api(&c).await;
    let rig = AppRoutingIstio::start(&c).await;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watches = [
        record_states(
            Api::<Service>::namespaced(c.clone(), "ingress-nginx"),
            "ingress-nginx-controller",
            "ingress-nginx",
            |s| gridos_setup::wait::service_address(s).is_some(),
            log.clone(),
        ),
        record_states(
            Api::<DynamicObject>::namespaced_with(c.clone(), GATEWAY_NS, &gateway_api("Gateway")),
            "gridos",
            "gateway-api",
            is_programmed,
            log.clone(),
        ),
    ];
    let nginx = ["install", "--profile", "nginx", "--host", HOST, "--yes"];
    let steps: [(&str, Vec<&str>); 3] = [
        ("ingress-nginx", nginx.to_vec()),
        (
            "gateway-api",
            [&nginx[..], &["--traffic", "gateway-api"]].concat(),
        ),
        ("ingress-nginx", nginx.to_vec()),
    ];
    for (layer, args) in &steps {
        let t = Instant::now();
        ok(&gridos_k(args));
        let took = t.elapsed();
        let svc = Api::<Service>::namespaced(c.clone(), "ingress-nginx")
            .get_opt("ingress-nginx-controller")
            .await
            .unwrap()
            .filter(|s| s.metadata.deletion_timestamp.is_none());
        let gw =
            Api::<DynamicObject>::namespaced_with(c.clone(), GATEWAY_NS, &gateway_api("Gateway"))
                .get_opt("gridos")
                .await
                .unwrap()
                .filter(|g| g.metadata.deletion_timestamp.is_none());
        if *layer == "gateway-api" {
            assert!(gw.as_ref().is_some_and(is_programmed), "Gateway Programmed");
            assert!(svc.is_none(), "the controller Service is pruned");
        } else {
            assert!(
                svc.as_ref()
                    .and_then(gridos_setup::wait::service_address)
                    .is_some(),
                "the controller Service has its address"
            );
            assert!(gw.is_none(), "the Gateway is pruned");
        }
        assert_no_op(&ok(&gridos_k(args)), &format!("re-run on {layer}"));
        eprintln!(
            "gateway test: switch to {layer} in {:.1}s",
            took.as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for w in &watches {
        w.abort();
    }
    let mut seen = log.lock().unwrap().clone();
    seen.sort_by_key(|s| s.revision);
    let mut serving: std::collections::BTreeMap<&str, bool> = Default::default();
    let mut started = false;
    let mut changes = Vec::new();
    for s in &seen {
        if serving.get(s.layer) != Some(&s.serving) {
            changes.push(format!("{}@{}={}", s.layer, s.revision, s.serving));
        }
        serving.insert(s.layer, s.serving);
        let any = serving.values().any(|v| *v);
        started |= any;
        assert!(
            !started || any,
            "no layer served at revision {}: {changes:?}",
            s.revision
        );
    }
    // Both transitions were seen: the Gateway came and went, the controller went and came back.
    let ups = |layer: &str| {
        changes
            .iter()
            .filter(|c| c.starts_with(&format!("{layer}@")) && c.ends_with("=true"))
            .count()
    };
    assert!(
        ups("gateway-api") >= 1 && ups("ingress-nginx") >= 2,
        "{changes:?}"
    );
    drop(rig);
    reset(&c).await;
    eprintln!(
        "gateway test: switch nginx -> gateway -> nginx in {:.1}s ({changes:?})",
        t0.elapsed().as_secs_f64()
    );
}
