//! Clusters set up by install-flagger.sh, made by the real Helm with the real charts (see
//! `helm_real`): install refuses them with nothing written and names each release once;
//! `--adopt-helm` takes them over keeping the controller Service (same uid, same address), leaves
//! no Helm marks, release records or old workloads, and a following run is a no-op; an adoption
//! interrupted or killed is resumed, never reported as done; the old script run again afterwards
//! is caught by `check` and repaired by `install`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};

use crate::helm_real::{Helm, certgen, delete_helm_state};
use crate::interrupt::{signal, spawn_lines, wait_exit, wait_line};
use crate::util::{TempDir, client, cluster_lock, gridos_k, ok, reset, stderr, stdout};

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

/// A clean cluster, then the old script's three Helm calls (and certgen's two writes); prints how
/// long Helm took.
async fn old_script_state(c: &Client, internal: bool, what: &str) -> Helm {
    reset(c).await;
    delete_helm_state(c).await;
    let helm = Helm::new();
    let took = helm.old_script(internal);
    eprintln!("{what}: the old script's helm calls took {took:?}");
    let dir = TempDir::new("certgen");
    certgen(c, &dir.0).await;
    helm
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

fn adopt_args<'a>(profile: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "install",
        "--profile",
        profile,
        "--host",
        HOST,
        "--yes",
        "--adopt-helm",
    ];
    a.extend_from_slice(extra);
    a
}

/// `gridos-setup install --adopt-helm ...` spawned with JSON events on stdout.
fn adopt_command(profile: &str, adopt: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args(["install", "--profile", profile, "--host", HOST, "--yes"]);
    if adopt {
        cmd.arg("--adopt-helm");
    }
    cmd.args(["-o", "json", "--kubeconfig"])
        .arg(crate::util::kubeconfig())
        .stdin(std::process::Stdio::null());
    cmd
}

/// A Deployment of the old releases still there (their own, not gridos-setup's).
async fn old_workloads(c: &Client) -> Vec<String> {
    let mut left = Vec::new();
    for (ns, name) in [
        ("ingress-nginx", "flagger"),
        ("ingress-nginx", "flagger-prometheus"),
        ("test", "flagger-loadtester"),
    ] {
        let d = Api::<Deployment>::namespaced(c.clone(), ns)
            .get_opt(name)
            .await
            .unwrap();
        if d.is_some_and(|d| {
            d.metadata.deletion_timestamp.is_none()
                && !gridos_setup::applyset::is_member(d.metadata.labels.as_ref())
        }) {
            left.push(format!("{ns}/{name}"));
        }
    }
    left
}

/// What an adoption must leave: the same Service and address, nothing of Helm on gridos-setup's
/// objects or their ReplicaSets, no release (records or workloads), `check` passing, and a further
/// run that changes nothing.
async fn assert_adopted(c: &Client, helm: &Helm, profile: &str, uid: &str, address: &str) {
    let (uid_after, address_after) = controller_address(c).await;
    assert_eq!(uid_after, uid, "the same Service object");
    assert_eq!(address_after, address, "the same load-balancer address");
    assert_eq!(
        helm.releases(),
        Vec::<String>::new(),
        "helm list -A is empty"
    );
    let records = Api::<Secret>::all(c.clone())
        .list_metadata(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items;
    assert!(records.is_empty(), "release records left: {records:?}");
    assert_eq!(
        old_workloads(c).await,
        Vec::<String>::new(),
        "old workloads"
    );

    // No Helm marks (labels, annotations, field manager) on any object gridos-setup now owns.
    let record = gridos_setup::applyset::read(c, None).await.unwrap();
    assert!(record.adopting.is_empty(), "the adoption is recorded done");
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
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
        let keep = o
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(gridos_setup::adopt::KEEP_POLICY));
        if gridos_setup::adopt::claimed_by_helm(&o.metadata)
            || gridos_setup::adopt::helm_manages(&o.metadata)
            || keep
            || pod_labels.get("helm.sh/chart").is_some()
        {
            marked.push(s.id());
        }
        if s.kind == "Deployment" {
            let rs: Api<ReplicaSet> =
                Api::namespaced(c.clone(), s.namespace.as_deref().unwrap_or_default());
            for r in rs
                .list_metadata(&ListParams::default())
                .await
                .unwrap()
                .items
            {
                let owned = r
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Deployment" && o.name == s.name);
                if owned && gridos_setup::adopt::claimed_by_helm(&r.metadata) {
                    marked.push(format!(
                        "ReplicaSet/{}",
                        r.metadata.name.clone().unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(marked.is_empty(), "still marked as Helm's: {marked:?}");

    let out = gridos_k(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
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
}

async fn finish(c: &Client) {
    reset(c).await;
    delete_helm_state(c).await;
}

#[tokio::test]
async fn cluster_adopt_real_state_is_refused_with_nothing_written_and_check_pre_offers_adoption() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let _helm = old_script_state(&c, false, "refusal").await;
    controller_address(&c).await;
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
        line.contains("nothing was written") && err.contains("--adopt-helm"),
        "{err}"
    );
    assert_same(&before, &snapshot(&c).await, "a refused install");

    // check --pre names each release once, offers the adoption, and no hint deletes what the
    // adoption keeps (`helm uninstall` is only named as what not to do).
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
    for l in text.lines().filter(|l| l.contains("helm uninstall")) {
        assert!(l.contains("do not `helm uninstall`"), "{l}");
    }
    assert!(text.contains("which frees the address"), "{text}");
    let ic = text
        .lines()
        .skip_while(|l| !l.starts_with("[FAIL] IngressClass"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        ic.is_empty() || (ic.contains("--adopt-helm") && !ic.contains("--force-conflicts")),
        "{ic}"
    );

    // plan --adopt-helm shows the adoption, the chart's CRDs included, and writes nothing either.
    let out = gridos_k(&["plan", "--profile", "nginx", "--host", HOST, "--adopt-helm"]);
    let text = ok(&out);
    for want in [
        "adopt Helm releases ",
        "Service/ingress-nginx/ingress-nginx-controller taken over from Helm",
        "CustomResourceDefinition/canaries.flagger.app taken over from Helm (applied from a chart's crds/",
        "Deployment/ingress-nginx/flagger deleted",
        "Deployment/test/flagger-loadtester deleted",
        "Secret/ingress-nginx/ingress-nginx-admission replaced",
        "Helm release record Secret/ingress-nginx/sh.helm.release.v1.ingress-nginx.v1 deleted",
        // What stays, and why.
        "namespace test stays (`helm --create-namespace` made it",
        "namespace ingress-nginx keeps its label name=ingress-nginx",
        "ReplicaSets of the Deployments taken over: Helm's labels and annotations removed",
    ] {
        assert!(text.contains(want), "plan shows {want:?}:\n{text}");
    }
    assert_same(&before, &snapshot(&c).await, "a plan");

    // A profile with the other kind of load balancer is refused before any write, naming both.
    let out = gridos_k(&adopt_args("appgw", &[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("public load balancer")
            && err.contains("from public to internal")
            && err.contains("--allow-address-change"),
        "{err}"
    );
    assert_same(&before, &snapshot(&c).await, "a refused adoption");
    finish(&c).await;
    eprintln!("real-Helm test (refusal): {:?}", t.elapsed());
}

#[tokio::test]
async fn cluster_adopt_real_nginx_keeps_the_service_uid_and_public_address() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let helm = old_script_state(&c, false, "nginx").await;
    let (uid, address) = controller_address(&c).await;
    let out = gridos_k(&adopt_args("nginx", &[]));
    let text = ok(&out);
    assert!(
        text.contains(&format!("Ingress address (public): {address}")),
        "{text}\n{}",
        stderr(&out)
    );
    assert_adopted(&c, &helm, "nginx", &uid, &address).await;
    // The controller rolled out once: Helm's ReplicaSet and gridos-setup's, no third.
    let rs = Api::<ReplicaSet>::namespaced(c.clone(), "ingress-nginx")
        .list_metadata(&ListParams::default())
        .await
        .unwrap()
        .items;
    let controller: Vec<_> = rs
        .iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.name == "ingress-nginx-controller")
        })
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    assert_eq!(controller.len(), 2, "one rollout: {controller:?}");
    finish(&c).await;
    eprintln!("real-Helm test (nginx): {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_adopt_real_appgw_interrupted_by_sigint_then_rerun_converges() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let helm = old_script_state(&c, true, "appgw").await;
    let (uid, address) = controller_address(&c).await;
    let (mut child, lines) = spawn_lines(adopt_command("appgw", true));
    wait_line(&lines, 120, |l| l.contains("\"event\":\"object\""));
    signal(&child, "INT");
    let (code, _) = wait_exit(&mut child, 10);
    assert_eq!(code, Some(130), "SIGINT stops the adoption");
    let out = gridos_k(&adopt_args("appgw", &[]));
    let text = ok(&out);
    assert!(
        text.contains(&format!("Ingress address (internal): {address}")),
        "{text}\n{}",
        stderr(&out)
    );
    assert_adopted(&c, &helm, "appgw", &uid, &address).await;
    finish(&c).await;
    eprintln!("real-Helm test (appgw, SIGINT): {:?}", t.elapsed());
}

/// An adoption SIGKILLed late (while it waits for the rollouts): `check` and `status` fail
/// naming the releases, and a plain `install` (no `--adopt-helm`) never exits 0 with them left:
/// it resumes the recorded adoption and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_adopt_real_killed_late_is_never_reported_done() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let helm = old_script_state(&c, false, "killed late").await;
    let (uid, address) = controller_address(&c).await;
    let (mut child, lines) = spawn_lines(adopt_command("nginx", true));
    // Late: Helm's objects already applied over, the rollouts being waited for; the releases'
    // leftovers and records go only after them.
    let line = wait_line(&lines, 300, |l| l.contains("waiting for Deployment"));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    eprintln!("killed at: {line}");
    assert!(!helm.releases().is_empty(), "the releases are still listed");

    let out = gridos_k(&["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.starts_with("[FAIL] Helm installs: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        fail.contains("was started and not finished") && fail.contains("release flagger"),
        "{fail}"
    );
    // The chart's Flagger still runs beside gridos-setup's: two Flaggers on the same Canaries.
    assert!(
        fail.contains(
            "another Flagger runs beside gridos-setup's: Deployment ingress-nginx/flagger"
        ),
        "{fail}"
    );
    let status = gridos_k(&["status"]);
    assert_eq!(status.status.code(), Some(1), "{}", stdout(&status));
    assert!(stdout(&status).contains("Helm: "), "{}", stdout(&status));

    let out = gridos_k(&["install", "--profile", "nginx", "--host", HOST, "--yes"]);
    let err = stderr(&out);
    if out.status.code() == Some(0) {
        assert!(err.contains("resuming the adoption"), "{err}");
        assert_adopted(&c, &helm, "nginx", &uid, &address).await;
    } else {
        assert!(err.contains("--adopt-helm"), "{err}");
        assert!(!helm.releases().is_empty());
    }
    finish(&c).await;
    eprintln!("real-Helm test (killed late): {:?}", t.elapsed());
}

/// splitmix64: a fixed seed gives the same kill moments on every machine.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SIGKILL at seeded moments of an adoption (fractions of a clean adoption's time), then the same
/// command again: every time the same adopted state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_adopt_real_sigkill_at_seeded_moments_then_rerun_converges() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let seed: u64 = std::env::var("GRIDOS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_206);
    let points: usize = std::env::var("GRIDOS_ADOPT_KILL_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    // The time of a clean adoption, measured once.
    let helm = old_script_state(&c, false, "seeded kills (clean)").await;
    let t0 = Instant::now();
    ok(&gridos_k(&adopt_args("nginx", &[])));
    let clean = t0.elapsed();
    drop(helm);
    let mut state = seed;
    eprintln!("adoption kill points: seed {seed}, clean adoption {clean:?}");
    for i in 0..points {
        let d = clean.mul_f64((next(&mut state) >> 11) as f64 / (1u64 << 53) as f64);
        let helm = old_script_state(&c, false, "seeded kill").await;
        let (uid, address) = controller_address(&c).await;
        let mut child = adopt_command("nginx", true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start");
        std::thread::sleep(d);
        let _ = child.kill();
        let _ = child.wait();
        let out = gridos_k(&adopt_args("nginx", &[]));
        assert_eq!(
            out.status.code(),
            Some(0),
            "kill point {i} at {d:?}: {}",
            stderr(&out)
        );
        assert_adopted(&c, &helm, "nginx", &uid, &address).await;
        eprintln!("kill point {i} at {d:?}: converged");
    }
    finish(&c).await;
    eprintln!("real-Helm test (seeded kills): {:?}", t.elapsed());
}

/// The old script run again after the adoption, as Helm >= 3.17 allows (`--take-ownership`):
/// `check` fails naming the releases; `install` takes the objects over again, removes the new
/// release records and marks, and says what happened.
#[tokio::test]
async fn cluster_adopt_real_old_script_again_is_caught_by_check_and_repaired_by_install() {
    let _lock = cluster_lock().await;
    let t = Instant::now();
    let c = client().await;
    let helm = old_script_state(&c, false, "take-ownership").await;
    let (uid, address) = controller_address(&c).await;
    ok(&gridos_k(&adopt_args("nginx", &[])));

    let (took, script) = helm.old_script_again(false);
    eprintln!(
        "the old script again with --take-ownership took {took:?} (exit {:?}): {}",
        script.status.code(),
        stderr(&script)
            .lines()
            .filter(|l| l.starts_with("Error"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let listed = helm.releases();
    assert!(listed.contains(&"ingress-nginx".to_string()), "{listed:?}");
    let out = gridos_k(&["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.starts_with("[FAIL] Helm installs: "))
        .unwrap_or_else(|| panic!("{text}"));
    for r in &listed {
        assert_eq!(release_mentions(fail, r), 1, "{r} named once: {fail}");
    }

    let out = gridos_k(&["install", "--profile", "nginx", "--host", HOST, "--yes"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("Helm took back"), "{err}");
    assert_adopted(&c, &helm, "nginx", &uid, &address).await;
    finish(&c).await;
    eprintln!("real-Helm test (take-ownership): {:?}", t.elapsed());
}
