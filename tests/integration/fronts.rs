//! Behind each front on the test control plane: the stable-address annotations, the controller's
//! PodDisruptionBudget and spread over nodes and zones, and which proxies nginx takes forwarded
//! client addresses from (in its ConfigMap, as the running controller reads it).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::util::{client, cluster_lock, gridos_k, ok, reset};

const HOST: &str = "app.example.com";
const NS: &str = "ingress-nginx";
const CONTROLLER: &str = "ingress-nginx-controller";
const SELECTOR: &str =
    "app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller";

fn install(profile: &str, sets: &[&str]) -> String {
    let mut args = vec!["install", "--profile", profile, "--host", HOST, "--yes"];
    for s in sets {
        args.extend(["--set", s]);
    }
    ok(&gridos_k(&args))
}

/// The ConfigMap the running controller reads: its `--configmap` argument, with `$(POD_NAMESPACE)`
/// resolved the way the kubelet does, from the env var's fieldRef (the pod's namespace).
async fn controller_config(c: &Client) -> std::collections::BTreeMap<String, String> {
    let d = Api::<Deployment>::namespaced(c.clone(), NS)
        .get(CONTROLLER)
        .await
        .unwrap();
    let container = &d.spec.unwrap().template.spec.unwrap().containers[0];
    let env = container.env.clone().unwrap_or_default();
    let pod_ns = env
        .iter()
        .find(|e| e.name == "POD_NAMESPACE")
        .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(pod_ns.as_deref(), Some("metadata.namespace"));
    let arg = container
        .args
        .clone()
        .unwrap_or_default()
        .into_iter()
        .find_map(|a| a.strip_prefix("--configmap=").map(String::from))
        .expect("the controller reads a --configmap");
    let (ns, name) = arg.split_once('/').unwrap();
    assert_eq!(ns, "$(POD_NAMESPACE)");
    Api::<ConfigMap>::namespaced(c.clone(), NS)
        .get(name)
        .await
        .unwrap()
        .data
        .unwrap_or_default()
}

async fn annotations(c: &Client) -> std::collections::BTreeMap<String, String> {
    Api::<Service>::namespaced(c.clone(), NS)
        .get(CONTROLLER)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
}

/// `check` after install: the line about the address's stability.
fn stability_line() -> String {
    let out = gridos_k(&["check"]);
    let text = crate::util::stdout(&out);
    text.lines()
        .find(|l| l.contains("stable address"))
        .unwrap_or_else(|| panic!("no stable-address check in:\n{text}"))
        .to_string()
}

#[tokio::test]
async fn cluster_fronts_stable_address_availability_and_forwarded_trust() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;

    // Front Door, public origin, with a pre-created public IP in another resource group and a DNS label.
    install(
        "frontdoor",
        &[
            "ingressController.service.publicIpName=gridos-ingress",
            "ingressController.service.publicIpResourceGroup=net-rg",
            "ingressController.service.dnsLabel=gridos-app",
        ],
    );
    let a = annotations(&c).await;
    for (k, v) in [
        (
            "service.beta.kubernetes.io/azure-pip-name",
            "gridos-ingress",
        ),
        (
            "service.beta.kubernetes.io/azure-load-balancer-resource-group",
            "net-rg",
        ),
        (
            "service.beta.kubernetes.io/azure-dns-label-name",
            "gridos-app",
        ),
        (
            "service.beta.kubernetes.io/azure-allowed-service-tags",
            "AzureFrontDoor.Backend",
        ),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k} in {a:?}");
    }
    let cfg = controller_config(&c).await;
    assert_eq!(cfg["use-forwarded-headers"], "true", "{cfg:?}");
    assert_eq!(
        cfg["proxy-real-ip-cidr"],
        "147.243.0.0/16,2a01:111:2050::/44"
    );
    assert_eq!(cfg["forwarded-for-header"], "X-Forwarded-For");
    assert!(stability_line().contains("[pass]"), "{}", stability_line());

    // The PodDisruptionBudget is admitted and the disruption controller counts both replicas; the
    // spread put them on different nodes in different zones, and the rollout finished (install waited).
    let pdb = Api::<PodDisruptionBudget>::namespaced(c.clone(), NS)
        .get(CONTROLLER)
        .await
        .expect("the controller's PodDisruptionBudget");
    let spec = pdb.spec.clone().unwrap();
    assert_eq!(
        spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), NS);
    crate::util::wait_for(
        pdbs,
        CONTROLLER,
        60,
        "PDB status",
        |p: Option<&PodDisruptionBudget>| {
            p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                s.expected_pods == 2 && s.current_healthy == 2 && s.disruptions_allowed == 1
            })
        },
    )
    .await;
    let d = Api::<Deployment>::namespaced(c.clone(), NS)
        .get(CONTROLLER)
        .await
        .unwrap();
    let keys: Vec<String> = d
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .topology_spread_constraints
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.topology_key, t.when_unsatisfiable))
        .collect();
    assert_eq!(
        keys,
        [
            "kubernetes.io/hostname:DoNotSchedule",
            "topology.kubernetes.io/zone:ScheduleAnyway"
        ]
    );
    let pods = Api::<Pod>::namespaced(c.clone(), NS)
        .list(&ListParams::default().labels(SELECTOR))
        .await
        .unwrap();
    let nodes: Vec<String> = pods
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert_ne!(nodes[0], nodes[1], "both replicas on one node");
    let node_api = Api::<Node>::all(c.clone());
    let mut zones = Vec::new();
    for n in &nodes {
        let node = node_api.get(n).await.unwrap();
        zones.push(node.metadata.labels.unwrap_or_default()["topology.kubernetes.io/zone"].clone());
    }
    assert_ne!(zones[0], zones[1], "both replicas in one zone: {zones:?}");

    // Application Gateway: internal address pinned, forwarded headers from the VNet only (narrowed here).
    install(
        "appgw",
        &[
            "ingressController.service.privateIp=10.224.0.250",
            "ingressController.realClientIp.trustedCidrs=[10.225.0.0/24]",
        ],
    );
    let a = annotations(&c).await;
    assert_eq!(
        a.get("service.beta.kubernetes.io/azure-load-balancer-ipv4")
            .map(String::as_str),
        Some("10.224.0.250")
    );
    assert!(
        !a.contains_key("service.beta.kubernetes.io/azure-pip-name"),
        "{a:?}"
    );
    let cfg = controller_config(&c).await;
    assert_eq!(cfg["proxy-real-ip-cidr"], "10.225.0.0/24");
    assert!(stability_line().contains("[pass]"));

    // Nothing in front: no forwarded header is trusted, and the address is AKS-managed (check warns).
    install("nginx", &[]);
    let cfg = controller_config(&c).await;
    assert_eq!(cfg["use-forwarded-headers"], "false", "{cfg:?}");
    assert!(!cfg.contains_key("proxy-real-ip-cidr"), "{cfg:?}");
    let a = annotations(&c).await;
    assert!(
        !a.keys()
            .any(|k| k.contains("azure-pip-name") || k.contains("ipv4")),
        "{a:?}"
    );
    let line = stability_line();
    assert!(
        line.contains("[warn]") && line.contains("AKS-managed"),
        "{line}"
    );
    reset(&c).await;
}

/// Bad front values are refused before anything connects: exit 2, one line naming the value and the fix.
#[test]
fn bad_front_values_exit_2_before_connecting() {
    for (profile, set, says) in [
        (
            "appgw",
            "ingressController.realClientIp.trustedCidrs=[0.0.0.0/0]",
            "forge",
        ),
        (
            "appgw",
            "ingressController.realClientIp.trustedCidrs=[10.1.0.0/33]",
            "prefix length",
        ),
        (
            "appgw",
            "ingressController.realClientIp.trustedCidrs=[gateway]",
            "not a CIDR",
        ),
        (
            "nginx",
            "ingressController.realClientIp.enabled=on",
            "no front",
        ),
        (
            "appgw",
            "ingressController.service.publicIpName=ingress-ip",
            "internal",
        ),
        (
            "nginx",
            "ingressController.service.publicIpName=-bad",
            "public IP name",
        ),
        (
            "nginx",
            "ingressController.service.publicIpResourceGroup=net-rg",
            "publicIpName is empty",
        ),
        (
            "nginx",
            "ingressController.service.dnsLabel=Gridos",
            "DNS label",
        ),
        (
            "nginx",
            "ingressController.service.privateIp=10.0.0.9",
            "internal load balancer",
        ),
        (
            "appgw",
            "ingressController.service.privateIp=8.8.8.8",
            "private IPv4",
        ),
        (
            "frontdoor",
            "ingressController.service.allowedServiceTags=[Azure Front Door]",
            "service tag",
        ),
        ("frontdoor", "frontDoor.id=not-a-guid", "GUID"),
        (
            "nginx",
            "frontDoor.originProtocol=http",
            "only behind Azure Front Door",
        ),
        ("nginx", "prometheus.storageSize=100Mi", "256Mi"),
    ] {
        let out = crate::util::gridos(&[
            "install",
            "--profile",
            profile,
            "--host",
            HOST,
            "--yes",
            "--set",
            set,
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ]);
        let err = crate::util::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{set}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{set}: {err}"
        );
    }
}

/// With the Front Door ID set, the load test sends it as X-Azure-FDID, quoted for the load tester's `sh -c`.
#[test]
fn the_load_test_passes_the_origin_lock() {
    let id = "0f3c4a1e-7b2d-4c5e-9a8b-1d2e3f4a5b6c";
    let out = crate::util::gridos(&[
        "render",
        "--profile",
        "frontdoor",
        "--host",
        HOST,
        "--set",
        &format!("frontDoor.id={id}"),
    ]);
    let yaml = ok(&out);
    let line = yaml
        .lines()
        .find(|l| l.contains("hey -z"))
        .expect("the load test command");
    assert!(line.contains(&format!("-H 'X-Azure-FDID: {id}'")), "{line}");
    let plain = ok(&crate::util::gridos(&[
        "render",
        "--profile",
        "frontdoor",
        "--host",
        HOST,
    ]));
    assert!(!plain.contains("X-Azure-FDID"));
}
