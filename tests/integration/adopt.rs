//! Clusters set up by install-flagger.sh (Helm releases ingress-nginx, flagger, flagger-loadtester):
//! install refuses them with nothing written and names each release once; `--adopt-helm` takes
//! them over keeping the controller Service (same uid, same address), leaves no Helm marks or
//! release records, deletes only the releases' own leftovers, and a following run is a no-op.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};

use crate::helm_state::{create_helm_state, delete_helm_state};
use crate::util::{client, cluster_lock, gridos_k, ok, reset, stderr, stdout};

const HOST: &str = "app.example.com";

/// Everything an install could touch, without what controllers keep writing (status, and the
/// resourceVersion that moves with it): cluster-scoped kinds, the namespaces' content, and
/// kube-system's ConfigMaps (where the ApplySet record would go).
async fn snapshot(c: &Client) -> BTreeMap<String, serde_json::Value> {
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
    let mut out = BTreeMap::new();
    for (av, kind) in [
        ("v1", "Namespace"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        ("networking.k8s.io/v1", "IngressClass"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "ServiceAccount"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ] {
        let (ar, _) = resolver.resolve_gvk(av, kind).unwrap();
        let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
        for o in api.list(&ListParams::default()).await.unwrap().items {
            let ns = o.metadata.namespace.clone();
            if ns.as_deref().is_some_and(|n| {
                ![
                    "ingress-nginx",
                    "test",
                    "kube-system",
                    "flagger-system",
                    "gridos",
                ]
                .contains(&n)
            }) {
                continue;
            }
            let id = format!(
                "{kind}/{}/{}",
                ns.unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default()
            );
            let mut v = serde_json::to_value(&o).unwrap();
            if let Some(m) = v.as_object_mut() {
                m.remove("status");
            }
            if let Some(meta) = v["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
                if let Some(mf) = meta.get_mut("managedFields").and_then(|m| m.as_array_mut()) {
                    mf.retain(|e| e.get("subresource").is_none());
                }
            }
            out.insert(id, v);
        }
    }
    out
}

/// The Helm state once its controllers have settled (Deployments rolled out, the address set),
/// so that what changes afterwards is what the command under test did.
async fn settled(c: &Client) {
    use k8s_openapi::api::apps::v1::Deployment;
    controller_address(c).await;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let all = Api::<Deployment>::all(c.clone())
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=Helm"))
            .await
            .unwrap();
        if all
            .items
            .iter()
            .all(gridos_setup::wait::deployment_is_rolled_out)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the Helm state's Deployments never rolled out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The ids that differ between two snapshots: created, deleted or changed.
fn assert_same(
    before: &BTreeMap<String, serde_json::Value>,
    after: &BTreeMap<String, serde_json::Value>,
    what: &str,
) {
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "{what} wrote nothing, yet these changed: {changed:?}"
    );
}

async fn fresh_helm_state(c: &Client, internal: bool) -> crate::helm_state::HelmState {
    reset(c).await;
    delete_helm_state(c).await;
    create_helm_state(c, internal).await
}

/// The controller Service once the load-balancer stand-in gave it an address: (uid, address).
async fn controller_address(c: &Client) -> (String, String) {
    let api: Api<Service> = Api::namespaced(c.clone(), "ingress-nginx");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let s = api.get("ingress-nginx-controller").await.unwrap();
        if let Some(a) = gridos_setup::wait::service_address(&s) {
            return (s.metadata.uid.unwrap_or_default(), a);
        }
        assert!(Instant::now() < end, "the stand-in never gave an address");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn release_mentions(text: &str, release: &str) -> usize {
    text.matches(&format!("release {release} (namespace "))
        .count()
}

#[tokio::test]
async fn cluster_adopt_the_helm_start_state_is_refused_with_nothing_written_naming_each_release_once()
 {
    let _lock = cluster_lock().await;
    let c = client().await;
    fresh_helm_state(&c, false).await;
    settled(&c).await;
    let before = snapshot(&c).await;

    let out = gridos_k(&["install", "--profile", "nginx", "--host", HOST, "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(line.starts_with("error: installed by Helm: "), "{line}");
    for r in ["ingress-nginx", "flagger", "flagger-loadtester"] {
        assert_eq!(release_mentions(line, r), 1, "{r} named once: {line}");
    }
    assert!(
        line.contains("nothing was written") && line.contains("--adopt-helm"),
        "{line}"
    );
    assert_same(&before, &snapshot(&c).await, "a refused install");

    // check --pre names each release once and offers the adoption.
    let out = gridos_k(&["check", "--pre"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let helm = text
        .lines()
        .find(|l| l.starts_with("[FAIL] Helm installs: "))
        .unwrap_or_else(|| panic!("{text}"));
    for r in ["ingress-nginx", "flagger", "flagger-loadtester"] {
        assert_eq!(release_mentions(helm, r), 1, "{r} named once: {helm}");
    }
    assert!(
        text.contains("`gridos-setup install --adopt-helm`"),
        "{text}"
    );

    // plan --adopt-helm shows the adoption and writes nothing either.
    let out = gridos_k(&["plan", "--profile", "nginx", "--host", HOST, "--adopt-helm"]);
    let text = ok(&out);
    for want in [
        "adopt Helm releases ",
        "Service/ingress-nginx/ingress-nginx-controller taken over from Helm",
        "Deployment/ingress-nginx/flagger deleted",
        "Deployment/test/flagger-loadtester deleted",
        "Job/ingress-nginx/ingress-nginx-admission-create deleted",
        "Secret/ingress-nginx/ingress-nginx-admission replaced",
        "Helm release record Secret/ingress-nginx/sh.helm.release.v1.ingress-nginx.v2 deleted",
    ] {
        assert!(text.contains(want), "plan shows {want:?}:\n{text}");
    }
    assert!(
        !text.contains("team-settings") && !text.contains("podinfo"),
        "{text}"
    );
    assert_same(&before, &snapshot(&c).await, "a plan");

    reset(&c).await;
    delete_helm_state(&c).await;
}

/// Adopts the Helm state for `profile` and checks the result; `interrupted`: a first adoption is
/// SIGKILLed once it has started writing, and the same command run again finishes it.
async fn adopt_and_check(profile: &str, internal: bool, interrupted: bool) {
    let c = client().await;
    let state = fresh_helm_state(&c, internal).await;
    let (uid, address) = controller_address(&c).await;
    if interrupted {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
        cmd.args([
            "install",
            "--profile",
            profile,
            "--host",
            HOST,
            "--yes",
            "--adopt-helm",
        ])
        .args(["-o", "json", "--kubeconfig"])
        .arg(crate::util::kubeconfig())
        .stdin(std::process::Stdio::null());
        let (mut child, lines) = crate::interrupt::spawn_lines(cmd);
        crate::interrupt::wait_line(&lines, 120, |l| l.contains("\"event\":\"object\""));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    let out = gridos_k(&[
        "install",
        "--profile",
        profile,
        "--host",
        HOST,
        "--yes",
        "--adopt-helm",
    ]);
    let text = ok(&out);
    assert!(
        text.contains(&format!(
            "Ingress address ({}): {address}",
            if internal { "internal" } else { "public" }
        )),
        "{text}\n{}",
        stderr(&out)
    );
    let (uid_after, address_after) = controller_address(&c).await;
    assert_eq!(uid_after, uid, "the same Service object");
    assert_eq!(address_after, address, "the same load-balancer address");

    // No Helm marks (labels, annotations, field manager) on any object gridos-setup now owns.
    let record = gridos_setup::applyset::read(&c, None).await.unwrap();
    let resolver = gridos_setup::apply::Resolver::new(&c, None).await.unwrap();
    let mut marked = Vec::new();
    for m in &record.members {
        let s = gridos_setup::applyset::parse_member(m).unwrap();
        let (ar, caps) = resolver.resolve_gvk(&s.api_version, &s.kind).unwrap();
        let api: Api<DynamicObject> = match (caps.scope, &s.namespace) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(c.clone(), ns, &ar)
            }
            _ => Api::all_with(c.clone(), &ar),
        };
        let o = api
            .get(&s.name)
            .await
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        let pod_labels = &o.data["spec"]["template"]["metadata"]["labels"];
        // A namespace `helm install --create-namespace` made is no release's object: only
        // objects of the releases lose Helm's field manager.
        let helm_fields = gridos_setup::adopt::helm_manages(&o.metadata) && s.kind != "Namespace";
        if gridos_setup::adopt::claimed_by_helm(&o.metadata)
            || helm_fields
            || pod_labels.get("helm.sh/chart").is_some()
        {
            marked.push(s.id());
        }
    }
    assert!(marked.is_empty(), "still marked as Helm's: {marked:?}");
    // Release objects gridos-setup does not render are gone; others' objects stay.
    for id in &state.release_objects {
        let parts: Vec<&str> = id.split('/').collect();
        let rendered = record.members.iter().any(|m| {
            let s = gridos_setup::applyset::parse_member(m).unwrap();
            s.id() == *id
        });
        if rendered || parts[0] == "Namespace" {
            continue;
        }
        let kind = parts[0];
        let (ns, name) = if parts.len() == 3 {
            (Some(parts[1]), parts[2])
        } else {
            (None, parts[1])
        };
        let av = match kind {
            "Deployment" => "apps/v1",
            "Job" => "batch/v1",
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
                "rbac.authorization.k8s.io/v1"
            }
            _ => "v1",
        };
        let (ar, _) = resolver.resolve_gvk(av, kind).unwrap();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
            None => Api::all_with(c.clone(), &ar),
        };
        let left = api.get_opt(name).await.unwrap();
        assert!(
            left.is_none_or(|o| o.metadata.deletion_timestamp.is_some()),
            "{id} (a release object gridos-setup does not render) is deleted"
        );
    }
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.clone(), "ingress-nginx");
    assert!(
        cms.get_opt("team-settings").await.unwrap().is_some(),
        "another release's object stays"
    );
    let records: Vec<String> = Api::<Secret>::all(c.clone())
        .list_metadata(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(
        records,
        ["sh.helm.release.v1.podinfo.v1"],
        "only the other release's record is left"
    );
    assert!(state.foreign.len() == 2);

    // A following install changes nothing, and check --pre passes.
    let again = gridos_k(&[
        "install",
        "--profile",
        profile,
        "--host",
        HOST,
        "--yes",
        "-o",
        "json",
    ]);
    let text = ok(&again);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let changed: Vec<_> = summary["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["result"] != "unchanged")
        .collect();
    assert!(
        changed.is_empty(),
        "the run after adoption changed {changed:?}"
    );
    let pre = gridos_k(&["check", "--pre", "--profile", profile, "--host", HOST]);
    assert_eq!(pre.status.code(), Some(0), "{}", stdout(&pre));
    reset(&c).await;
    delete_helm_state(&c).await;
}

#[tokio::test]
async fn cluster_adopt_nginx_keeps_the_service_uid_and_public_address() {
    let _lock = cluster_lock().await;
    adopt_and_check("nginx", false, false).await;
}

#[tokio::test]
async fn cluster_adopt_appgw_interrupted_resumes_and_keeps_the_service_uid_and_internal_address() {
    let _lock = cluster_lock().await;
    adopt_and_check("appgw", true, true).await;
}
