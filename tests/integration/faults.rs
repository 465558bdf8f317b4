//! Faults during an install: the apiserver crashed while applying and restarted while waiting
//! (dropping every watch), etcd restarted, and API Priority and Fairness rejecting requests with 429.
//! Each run succeeds, or fails with a one-line message and a re-run converges to a clean install.
//!
//! The apiserver the faults hit is a second kube-apiserver this file starts (same etcd, flags and
//! certificates as the test control plane's, port 6444): stopping the shared one would fail the
//! cluster tests running in parallel, while this one serves only gridos-setup here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

use crate::interrupt::{
    assert_matches_clean_install, assert_rerun_changes_nothing, hold_load_balancer,
    install_command_with, release_load_balancer, spawn_lines, wait_exit, wait_line,
};
use crate::util::{client, cluster_lock, kubeconfig, reset, stderr, stdout};

const PORT: u16 = 6444;

fn state() -> PathBuf {
    PathBuf::from(std::env::var_os("GRIDOS_TESTENV_STATE").expect("GRIDOS_TESTENV_STATE"))
}

/// A kube-apiserver of this test's own, which it may stop, crash and restart.
struct OwnApiserver {
    child: Option<Child>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log: PathBuf,
}

impl OwnApiserver {
    fn start() -> Self {
        // `scripts/testenv` records each component's command (printf %q-quoted) for its restarts.
        let cmd = std::fs::read_to_string(state().join("cmd/kube-apiserver")).expect("cmd");
        let mut args: Vec<String> = cmd
            .split_whitespace()
            .map(|a| a.replace("\\,", ","))
            .collect();
        let port = args
            .iter()
            .position(|a| a == "--secure-port")
            .expect("--secure-port");
        args[port + 1] = PORT.to_string();
        // Leave the `kubernetes` Service's endpoints to the shared apiserver (they name its port).
        args.push("--endpoint-reconciler-type=none".into());
        let kc_text = std::fs::read_to_string(kubeconfig())
            .expect("kubeconfig")
            .replace(":6443", &format!(":{PORT}"));
        let kc = state().join("faults.kubeconfig");
        std::fs::write(&kc, kc_text).expect("write kubeconfig");
        let mut s = OwnApiserver {
            child: None,
            args,
            kubeconfig: kc,
            log: state().join("logs/faults-apiserver.log"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new(&self.args[0])
            .args(&self.args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            let ok = Command::new("kubectl")
                .args(["get", "--raw", "/readyz", "--kubeconfig"])
                .arg(&self.kubeconfig)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "own kube-apiserver not ready after 60 s; see {}",
            self.log.display()
        );
    }

    /// Stops it: SIGTERM (graceful, as a rolling restart does) or SIGKILL (a crash).
    fn stop(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", sig, &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn restart(&mut self, sig: &str, down: Duration) {
        self.stop(sig);
        std::thread::sleep(down);
        self.spawn();
    }
}

impl Drop for OwnApiserver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn testenv(args: &[&str]) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv"))
        .args(args)
        .output()
        .expect("scripts/testenv");
    assert!(
        out.status.success(),
        "scripts/testenv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What became of one faulted run.
#[derive(Debug, PartialEq)]
enum Verdict {
    Succeeded,
    FailedThenConverged,
}

/// Finishes a faulted run: exit 0, or a one-line error followed by a re-run that exits 0. Either
/// way the cluster then matches a clean install and another run changes nothing.
async fn settle(c: &Client, kc: &Path, name: &str, code: Option<i32>, err: &str) -> Verdict {
    let verdict = if code == Some(0) {
        Verdict::Succeeded
    } else {
        let errors: Vec<_> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(
            errors.len(),
            1,
            "{name}: one error line, exit {code:?}: {err}"
        );
        eprintln!("{name}: failed with exit {code:?}: {}", errors[0]);
        let again = install_command_with(kc, &[]).output().expect("re-run");
        assert_eq!(
            again.status.code(),
            Some(0),
            "{name}: re-run: {}",
            stderr(&again)
        );
        Verdict::FailedThenConverged
    };
    assert_matches_clean_install(c).await;
    assert_rerun_changes_nothing();
    let count = |what: &str| err.lines().filter(|l| l.contains(what)).count();
    eprintln!(
        "{name}: {verdict:?} ({} requests retried, {} watches re-opened)",
        count("retrying in"),
        count("watching again")
    );
    verdict
}

fn finish(child: &mut Child, secs: u64) -> (Option<i32>, String) {
    let (code, _) = wait_exit(child, secs);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (code, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_apiserver_and_etcd_restarts_during_apply_and_wait_then_the_run_converges() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let mut api = OwnApiserver::start();
    let kc = api.kubeconfig.clone();
    let mut verdicts = Vec::new();

    // 1. The apiserver crashes as the first writes go out (everything is read and rendered, the
    //    target announced), and is back 2 s later. Over HTTP/2 a fresh install applies all its
    //    CRDs within tens of ms, so waiting for the first object event would often miss the
    //    apply phase and hit the CRD wait instead.
    reset(&c).await;
    let (mut child, lines) = spawn_lines(install_command_with(&kc, &["-v"]));
    wait_line(&lines, 120, |l| l.contains("\"event\":\"target\""));
    api.restart("KILL", Duration::from_secs(2));
    let (code, err) = finish(&mut child, 240);
    assert!(
        err.contains("retrying") || code != Some(0),
        "the crash hit the apply phase (a retry was logged): {err}"
    );
    verdicts.push(settle(&c, &kc, "apiserver crash while applying", code, &err).await);

    // 2. The apiserver restarts (gracefully, down 3 s) while the run waits for the load balancer:
    //    every watch drops and must be re-opened.
    reset(&c).await;
    hold_load_balancer(&c, "never").await;
    let (mut child, lines) = spawn_lines(install_command_with(&kc, &["-v"]));
    wait_line(&lines, 120, |l| l.contains("load-balancer address"));
    api.restart("TERM", Duration::from_secs(3));
    release_load_balancer(&c).await;
    let (code, err) = finish(&mut child, 240);
    assert!(
        err.contains("watching again") || code != Some(0),
        "the restart dropped the wait's watch: {err}"
    );
    verdicts.push(settle(&c, &kc, "apiserver restart while waiting", code, &err).await);

    // 3. etcd restarts (down 2 s) right after the first object is applied.
    reset(&c).await;
    let (mut child, lines) = spawn_lines(install_command_with(&kc, &["-v"]));
    wait_line(&lines, 120, |l| l.contains("\"event\":\"object\""));
    testenv(&["restart", "etcd", "--down-for", "2"]);
    let (code, err) = finish(&mut child, 240);
    verdicts.push(settle(&c, &kc, "etcd restart while applying", code, &err).await);

    // 4. The apiserver goes away for good while applying: retries stop at --timeout (8 s), not
    //    after the 90 s retry budget, with one error line; once it is back a re-run converges.
    reset(&c).await;
    let (mut child, lines) = spawn_lines(install_command_with(&kc, &["-v", "--timeout", "8s"]));
    wait_line(&lines, 120, |l| l.contains("\"event\":\"object\""));
    let gone = Instant::now();
    api.stop("KILL");
    let (code, err) = finish(&mut child, 60);
    let took = gone.elapsed();
    assert_ne!(code, Some(0), "nothing to install with: {err}");
    assert!(
        took < Duration::from_secs(12),
        "gave up at the deadline, {took:?} after the apiserver went: {err}"
    );
    eprintln!("apiserver gone while applying: exit {code:?} {took:?} after it went");
    api.spawn();
    verdicts.push(settle(&c, &kc, "apiserver gone past --timeout", code, &err).await);

    let ok = verdicts
        .iter()
        .filter(|v| **v == Verdict::Succeeded)
        .count();
    eprintln!(
        "restart cases: {} tried, {ok} succeeded, {} failed cleanly and converged on re-run",
        verdicts.len(),
        verdicts.len() - ok
    );
}

/// Everything this test's ServiceAccount asks for goes to a priority level with one seat that
/// rejects instead of queueing, so install's concurrent requests get 429s.
const APF: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gridos-faults"}},
 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "throttled", "namespace": "gridos-faults"}},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "gridos-faults-throttled"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
  "subjects": [{"kind": "ServiceAccount", "name": "throttled", "namespace": "gridos-faults"}]},
 {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": {"name": "gridos-faults"},
  "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1, "lendablePercent": 0, "limitResponse": {"type": "Reject"}}}},
 {"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": "gridos-faults"},
  "spec": {"priorityLevelConfiguration": {"name": "gridos-faults"}, "matchingPrecedence": 100, "distinguisherMethod": {"type": "ByUser"},
   "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": "throttled", "namespace": "gridos-faults"}}],
     "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}],
     "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}
]}"#;

fn kubectl(kc: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .arg("--kubeconfig")
        .arg(kc)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(i) = input {
        use std::io::Write;
        let _ = child.stdin.take().expect("stdin").write_all(i.as_bytes());
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
    out
}

/// Requests of the flow schema the apiserver rejected (429), from its metrics.
fn rejected(kc: &Path) -> u64 {
    let metrics = stdout(&kubectl(kc, &["get", "--raw", "/metrics"], None));
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_rejected_requests_total")
                && l.contains("flow_schema=\"gridos-faults\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_throttled_by_priority_and_fairness_the_install_still_converges() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let admin = kubeconfig();
    kubectl(&admin, &["apply", "-f", "-"], Some(APF));
    let token = stdout(&kubectl(
        &admin,
        &[
            "-n",
            "gridos-faults",
            "create",
            "token",
            "throttled",
            "--duration",
            "1h",
        ],
        None,
    ));
    // The same cluster and CA as the admin's kubeconfig, as the ServiceAccount (not system:masters,
    // which APF exempts).
    let text = std::fs::read_to_string(&admin).expect("kubeconfig");
    let head = text.split("\nusers:").next().expect("clusters");
    let kc = state().join("throttled.kubeconfig");
    std::fs::write(
        &kc,
        format!(
            "{head}\nusers:\n- name: throttled\n  user:\n    token: {}\ncontexts:\n- name: throttled\n  context:\n    cluster: gridos-testenv\n    user: throttled\ncurrent-context: throttled\n",
            token.trim()
        ),
    )
    .expect("write kubeconfig");
    reset(&c).await;
    let before = rejected(&admin);
    let t = Instant::now();
    let out = install_command_with(&kc, &["-v"])
        .output()
        .expect("install");
    let took = t.elapsed();
    let after = rejected(&admin);
    eprintln!(
        "APF: {} requests rejected with 429 during install; install exit {:?} in {took:?}",
        after - before,
        out.status.code()
    );
    assert!(
        after > before,
        "the flow schema rejected some of install's requests"
    );
    let verdict = settle(
        &c,
        &kc,
        "throttled by APF",
        out.status.code(),
        &stderr(&out),
    )
    .await;
    eprintln!("429 case: {verdict:?}");
    let _ = kubectl(
        &admin,
        &[
            "delete",
            "flowschema/gridos-faults",
            "prioritylevelconfiguration/gridos-faults",
            "clusterrolebinding/gridos-faults-throttled",
            "namespace/gridos-faults",
            "--wait=false",
        ],
        None,
    );
}
