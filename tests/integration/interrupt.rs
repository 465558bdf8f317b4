//! Interruption: SIGINT and SIGTERM stop an install with exit 130 within 2 s, and SIGKILL at 20 seeded
//! moments of a fresh install leaves nothing a re-run cannot converge from.
//!
//! The convergence check is shared with the fault tests: the live cluster must match what the
//! install renders (every rendered field, same value), the ApplySet record must list exactly the
//! rendered objects, and a further run must change nothing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use gridos_setup::apply::Resolver;
use gridos_setup::applyset;
use gridos_setup::cluster::ConnectRequest;
use gridos_setup::install::InstallRequest;
use gridos_setup::profile::{ProfileSource, ValuesRequest};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::Scope;

use crate::util::{client, cluster_lock, kubeconfig, ok, reset, stderr, stdout};

pub const HOST: &str = "app.example.com";
pub const PROFILE: &str = "nginx";

/// `install` as the tests run it: the nginx profile, JSON events on stdout, no prompt.
pub fn install_command(extra: &[&str]) -> Command {
    install_command_with(&kubeconfig(), extra)
}

/// [`install_command`] through another kubeconfig (another apiserver or user).
pub fn install_command_with(kubeconfig: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args([
        "install",
        "--profile",
        PROFILE,
        "--host",
        HOST,
        "--yes",
        "-o",
        "json",
    ])
    .args(extra)
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .env_remove("GRIDOS_PROFILE")
    .stdin(Stdio::null());
    cmd
}

/// Starts an install whose stdout lines arrive on the returned channel.
pub fn spawn_install(extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    spawn_lines(install_command(extra))
}

/// Starts a command whose stdout lines arrive on the returned channel (stderr is piped).
pub fn spawn_lines(mut cmd: Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gridos-setup");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the first stdout line for which `pred` holds.
pub fn wait_line(rx: &mpsc::Receiver<String>, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pred(&l) => return l,
            Ok(_) => {}
            Err(e) => panic!("no such line within {secs}s: {e}"),
        }
    }
}

/// Runs install to the end and returns the JSON summary (asserting exit 0).
pub fn install_summary() -> serde_json::Value {
    let out = install_command(&[]).output().expect("run gridos-setup");
    let text = ok(&out);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["event"], "summary", "{last}");
    v
}

/// A re-run changes nothing: every object is reported unchanged.
pub fn assert_rerun_changes_nothing() {
    let s = install_summary();
    let changed: Vec<_> = s["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["result"] != "unchanged")
        .collect();
    assert!(changed.is_empty(), "a further run changed {changed:?}");
}

/// Paths where `want` is not contained in `live`: maps may hold more keys (server defaults),
/// lists must have the same length and each element must contain the rendered one.
fn uncontained(
    want: &serde_json::Value,
    live: &serde_json::Value,
    path: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => {
            for (k, wv) in w {
                match l.get(k) {
                    Some(lv) => uncontained(wv, lv, &format!("{path}.{k}"), out),
                    // The apiserver omits zero values of `omitempty` fields (minReadySeconds: 0).
                    None if is_zero(wv) => {}
                    None => out.push(format!("{path}.{k} missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(l)) if w.len() == l.len() => {
            for (i, (wv, lv)) in w.iter().zip(l).enumerate() {
                uncontained(wv, lv, &format!("{path}[{i}]"), out);
            }
        }
        (w, l) if w == l => {}
        // 99.0 in a template is 99 once stored.
        (Value::Number(w), Value::Number(l)) if w.as_f64() == l.as_f64() => {}
        (w, l) => out.push(format!("{path}: rendered {w}, live {l}")),
    }
}

fn is_zero(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The cluster matches a clean install: every rendered object's rendered fields are live with the
/// same values, the webhook trusts the CA of the Secret it serves from, and the ApplySet record lists
/// exactly the rendered objects. Rendering goes through the library with the cluster's own inputs
/// (the webhook certificate in the Secret, the ServiceMonitor groups served), as install does.
pub async fn assert_matches_clean_install(c: &Client) {
    let req = InstallRequest {
        values: ValuesRequest {
            profile: Some(ProfileSource::parse(PROFILE)),
            values_files: Vec::new(),
            sets: Vec::new(),
            host: Some(HOST.into()),
        },
        connect: ConnectRequest {
            kubeconfig: Some(kubeconfig()),
            context: None,
        },
        dry_run: true,
        no_wait: true,
        timeout: Duration::from_secs(60),
        force_conflicts: false,
        lock_wait: None,
        adopt_helm: false,
        keep_helm_history: false,
        allow_address_change: false,
    };
    let p = gridos_setup::install::plan(&req)
        .await
        .unwrap_or_else(|e| panic!("render against the cluster: {}", e.one_line()));
    let resolver = Resolver::new(c, None).await.expect("discovery");
    let mut problems = Vec::new();
    for o in &p.objects {
        let (ar, caps) = resolver
            .resolve(o)
            .unwrap_or_else(|e| panic!("{}: {e}", o.id()));
        let api: Api<DynamicObject> = match (caps.scope, o.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(c.clone(), ns, &ar),
            _ => Api::all_with(c.clone(), &ar),
        };
        let Some(live) = api.get_opt(o.name()).await.expect("get") else {
            problems.push(format!("{} is missing", o.id()));
            continue;
        };
        let live = serde_json::to_value(&live).expect("json");
        let mut diffs = Vec::new();
        uncontained(&o.data, &live, "", &mut diffs);
        for d in diffs {
            problems.push(format!("{}: {d}", o.id()));
        }
    }
    assert!(
        problems.is_empty(),
        "differs from a clean install:\n{}",
        problems.join("\n")
    );
    let record = applyset::read(c, None).await.expect("record");
    let rendered: BTreeSet<String> = p.objects.iter().map(applyset::member_id).collect();
    assert_eq!(
        record.members, rendered,
        "the ApplySet record lists exactly the rendered objects"
    );
    // The install-time input: whatever certificate the runs chose, the webhook trusts its CA.
    let secret = Api::<Secret>::namespaced(c.clone(), "ingress-nginx")
        .get(gridos_setup::plan::ADMISSION_SECRET)
        .await
        .expect("webhook Secret");
    let ca = secret
        .data
        .unwrap_or_default()
        .get("ca.crt")
        .cloned()
        .expect("ca.crt")
        .0;
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(c.clone())
        .get("ingress-nginx-admission")
        .await
        .expect("webhook configuration");
    for w in webhooks.webhooks.unwrap_or_default() {
        let bundle = w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(&bundle),
            base64::engine::general_purpose::STANDARD.encode(&ca),
            "webhook {} trusts the Secret's CA",
            w.name
        );
    }
}

/// Holds the load-balancer stand-in (no address until deleted), to keep a run in its wait phase.
pub async fn hold_load_balancer(c: &Client, delay: &str) {
    Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .patch(
            "gridos-lb-standin",
            &PatchParams::apply("test"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gridos-lb-standin"},
                "data": {"delay": delay}
            })),
        )
        .await
        .expect("lb stand-in delay");
}

pub async fn release_load_balancer(c: &Client) {
    let _ = Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .delete("gridos-lb-standin", &Default::default())
        .await;
}

pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -s {sig}");
}

/// Waits for exit, returning the exit code and how long it took.
pub fn wait_exit(child: &mut Child, secs: u64) -> (Option<i32>, Duration) {
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return (st.code(), t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("still running {secs}s after the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigint_and_sigterm_stop_an_install_with_130_within_2s_and_a_rerun_resumes() {
    let _lock = cluster_lock().await;
    let c = client().await;
    // SIGINT while objects are being applied, SIGTERM while waiting for the load-balancer address.
    for (sig, moment) in [
        ("INT", "\"event\":\"object\""),
        ("TERM", "load-balancer address"),
    ] {
        reset(&c).await;
        hold_load_balancer(&c, "never").await;
        let (mut child, lines) = spawn_install(&[]);
        let line = wait_line(&lines, 120, |l| l.contains(moment));
        signal(&child, sig);
        let (code, took) = wait_exit(&mut child, 10);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert_eq!(code, Some(130), "SIG{sig} after {line}: {err}");
        assert!(
            took < Duration::from_secs(2),
            "SIG{sig}: exit took {took:?}"
        );
        let msg = err
            .lines()
            .find(|l| l.starts_with("error: interrupted"))
            .unwrap_or_else(|| panic!("an interruption message: {err}"));
        assert!(msg.contains("re-run"), "{msg}");
        eprintln!("SIG{sig} during {moment}: exit 130 in {took:?}: {msg}");
        release_load_balancer(&c).await;
        install_summary();
        assert_matches_clean_install(&c).await;
        assert_rerun_changes_nothing();
    }
}

/// splitmix64: a fixed seed gives the same kill moments on every machine.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigkill_at_20_seeded_moments_of_a_fresh_install_then_reruns_converge() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let seed: u64 = std::env::var("GRIDOS_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_126);
    reset(&c).await;
    let t = Instant::now();
    install_summary();
    let clean = t.elapsed();
    eprintln!("kill points: seed {seed} (GRIDOS_KILL_SEED), clean install {clean:?}");
    let mut state = seed;
    let mut delays: Vec<Duration> = (0..20)
        .map(|_| clean.mul_f64((next(&mut state) >> 11) as f64 / (1u64 << 53) as f64))
        .collect();
    delays.sort();
    let (mut converged, mut failed) = (0, Vec::new());
    for (i, d) in delays.iter().enumerate() {
        reset(&c).await;
        let mut child = install_command(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start");
        std::thread::sleep(*d);
        let finished_first = child.try_wait().expect("wait").is_some();
        let _ = child.kill();
        let _ = child.wait();
        let out = install_command(&[]).output().expect("re-run");
        if out.status.code() != Some(0) {
            failed.push(format!(
                "kill point {i} at {d:?}: re-run exit {:?}: {}{}",
                out.status.code(),
                stderr(&out),
                stdout(&out)
            ));
            continue;
        }
        assert_matches_clean_install(&c).await;
        assert_rerun_changes_nothing();
        converged += 1;
        eprintln!(
            "kill point {i} at {d:?}: converged{}",
            if finished_first {
                " (install had already finished)"
            } else {
                ""
            }
        );
    }
    eprintln!(
        "kill points: {} tried, {converged} converged, {} failed",
        delays.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigint_stops_an_uninstall_with_130_and_a_rerun_finishes_it() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    install_summary();
    let kc = kubeconfig();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridos-setup"))
        .args(["uninstall", "--yes", "--kubeconfig"])
        .arg(&kc)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("uninstall");
    // Custom resources go first and the namespaces last (~10 s): once the Canary is gone the run is
    // mid-uninstall, deleting or waiting.
    let canaries: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), "gridos", &gridos_setup::canary::resource());
    let started = Instant::now();
    while canaries
        .get_opt("gridos")
        .await
        .expect("read the Canary")
        .is_some()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "uninstall never started deleting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "INT");
    let (code, took) = wait_exit(&mut child, 10);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    assert!(err.contains("error: interrupted"), "{err}");
    let out = crate::util::gridos_k(&["uninstall", "--yes"]);
    ok(&out);
    // Only the CRDs stay (kept without --purge-crds), as after an uninstall never interrupted.
    let record = applyset::read(&c, None).await.expect("record");
    let left: Vec<_> = record
        .members
        .iter()
        .filter(|m| !m.contains(" CustomResourceDefinition "))
        .collect();
    assert!(
        left.is_empty(),
        "the re-run finished the uninstall, yet {left:?} remain: {}",
        stdout(&out)
    );
    for ns in ["ingress-nginx", "flagger-system", "gridos"] {
        let live = Api::<k8s_openapi::api::core::v1::Namespace>::all(c.clone())
            .get_opt(ns)
            .await
            .expect("get");
        assert!(live.is_none(), "namespace {ns} is gone");
    }
    reset(&c).await;
}
