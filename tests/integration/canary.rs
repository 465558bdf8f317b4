//! `canary wait` against the test control plane, with `flagger-standin` writing the Canary's status
//! as Flagger would: promotion, rollback, a stalled analysis, an idle canary, an apiserver restart
//! in the middle of a wait, and the JSON stream.
//!
//! Every test that needs Flagger's CRD holds the cluster lock for its whole run: other tests'
//! `reset` deletes the CRD, and with it every Canary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gridos_setup::apply::{ApplyOptions, Resolver, apply_one};
use gridos_setup::applyset::with_membership;
use gridos_setup::profile::{ProfileSource, ValuesRequest, resolve};
use gridos_setup::render::{Object, RenderInputs, render};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::wait::conditions;

use crate::util::{
    client, cluster_lock, create_namespace, delete_namespace, gridos, gridos_k, kubeconfig, stderr,
    stdout, unique_name, wait_for,
};

const CANARY: &str = "gridos";

/// Applies Flagger's Canary CRD as install renders it (with the ApplySet label, so `reset` finds
/// it) and waits until it is Established.
async fn canary_crd(c: &Client) {
    let req = ValuesRequest {
        profile: Some(ProfileSource::Builtin("nginx".into())),
        host: Some("app.example.com".into()),
        ..Default::default()
    };
    let v = resolve(&req).expect("values");
    let crd = render(&v, &RenderInputs::offline(&v))
        .expect("render")
        .into_iter()
        .find(|o| o.kind() == "CustomResourceDefinition" && o.name() == "canaries.flagger.app")
        .expect("the render has the canaries CRD");
    let resolver = Resolver::new(c, None).await.expect("discovery");
    apply_one(
        c,
        &resolver,
        &with_membership(&crd),
        ApplyOptions::default(),
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    wait_for(
        crds,
        "canaries.flagger.app",
        30,
        "the canaries CRD Established",
        conditions::is_crd_established(),
    )
    .await;
}

/// A namespace of its own with the CRD in place and a Canary `gridos` (the full fixture's spec,
/// threshold 5) that Flagger has not seen yet.
async fn canary_namespace(c: &Client) -> String {
    canary_crd(c).await;
    let ns = unique_name("canary");
    create_namespace(c, &ns, &[]).await;
    let path = format!(
        "{}/tests/integration/fixtures/canary-full.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut data: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("yaml");
    data["metadata"]["name"] = CANARY.into();
    data["metadata"]["namespace"] = ns.clone().into();
    data["spec"]["analysis"]["threshold"] = 5.into();
    let obj = Object {
        template: "canary-full.yaml".into(),
        data: data.clone(),
    };
    let canary: DynamicObject = serde_json::from_value(obj.data).expect("canary object");
    let api: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), &ns, &gridos_setup::canary::resource());
    // Just after Established the new resource can still answer 404 for a moment.
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        match api.create(&PostParams::default(), &canary).await {
            Ok(_) => break,
            Err(e) if Instant::now() < give_up => {
                eprintln!("creating the canary: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("creating the canary: {e}"),
        }
    }
    ns
}

fn standin(ns: &str, scenario: &str, step_ms: u64) -> Command {
    let mut cmd = Command::new(crate::util::standin_bin("flagger-standin"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--namespace", ns, "--name", CANARY, "--scenario", scenario])
        .arg("--step-ms")
        .arg(step_ms.to_string());
    cmd
}

fn canary_wait(ns: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args(["canary", "wait", CANARY, "-n", ns])
        .args(extra)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .env_remove("GRIDOS_PROFILE");
    cmd
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

enum Line {
    Text(Stream, String),
    Closed,
}

/// A child process whose stdout and stderr are read line by line as they come.
struct Running {
    what: String,
    child: std::process::Child,
    lines: mpsc::Receiver<Line>,
    out: Vec<String>,
    err: Vec<String>,
    open: usize,
}

impl Running {
    fn start(what: &str, cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        fn pump(r: impl std::io::Read + Send + 'static, s: Stream, tx: mpsc::Sender<Line>) {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    let _ = tx.send(Line::Text(s, line));
                }
                let _ = tx.send(Line::Closed);
            });
        }
        pump(
            child.stdout.take().expect("stdout"),
            Stream::Out,
            tx.clone(),
        );
        pump(child.stderr.take().expect("stderr"), Stream::Err, tx);
        Running {
            what: what.into(),
            child,
            lines,
            out: Vec::new(),
            err: Vec::new(),
            open: 2,
        }
    }

    fn output(&self) -> String {
        format!(
            "{}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.out.join("\n"),
            self.err.join("\n")
        )
    }

    /// Takes the next line; false when both streams are closed.
    fn next(&mut self, until: Instant) -> bool {
        if self.open == 0 {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(Line::Text(Stream::Out, l)) => self.out.push(l),
            Ok(Line::Text(Stream::Err, l)) => self.err.push(l),
            Ok(Line::Closed) => self.open -= 1,
            Err(_) => {
                let _ = self.child.kill();
                panic!("timed out waiting for {}", self.output());
            }
        }
        true
    }

    /// Waits until a line on `stream` matches.
    fn wait_for_line(&mut self, stream: Stream, secs: u64, pred: impl Fn(&str) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let lines = if stream == Stream::Out {
                &self.out
            } else {
                &self.err
            };
            if lines.iter().any(|l| pred(l)) {
                return;
            }
            if !self.next(until) {
                panic!("no matching line before {} ended", self.output());
            }
        }
    }

    /// Waits for the process to end; its exit code, stdout and stderr.
    fn finish(mut self, secs: u64) -> (Option<i32>, String, String) {
        let until = Instant::now() + Duration::from_secs(secs);
        while self.next(until) {}
        let status = self.child.wait().expect("wait for the child");
        (status.code(), self.out.join("\n"), self.err.join("\n"))
    }
}

/// Starts `canary wait` and returns once it has printed its first state: from then on its watch
/// delivers every later change (the first object comes from the list the watch continues from).
fn start_wait(ns: &str, extra: &[&str]) -> Running {
    let json = extra.contains(&"json");
    let mut w = Running::start("canary wait", &mut canary_wait(ns, extra));
    if json {
        w.wait_for_line(Stream::Out, 30, |l| l.contains("\"event\":\"canary\""));
    } else {
        w.wait_for_line(Stream::Err, 30, |l| l.starts_with("canary "));
    }
    w
}

fn run_standin(ns: &str, scenario: &str, step_ms: u64) -> Running {
    Running::start(
        &format!("flagger-standin {scenario}"),
        &mut standin(ns, scenario, step_ms),
    )
}

fn assert_standin_ok(s: Running) {
    let (code, out, err) = s.finish(180);
    assert_eq!(
        code,
        Some(0),
        "flagger-standin\nstdout:\n{out}\nstderr:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_exits_0_when_promoted_and_names_each_weight() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let wait = start_wait(&ns, &["--timeout", "60s"]);
    let standin = run_standin(&ns, "succeed", 300);
    assert_standin_ok(standin);
    let (code, out, err) = wait.finish(60);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            "canary {ns}/{CANARY}: Succeeded after weights 10, 25, 50"
        )),
        "final line names every weight: {out}"
    );
    for state in [
        "Initialized: no rollout in progress",
        "Progressing, weight 10%, 0 failed checks",
        "Progressing, weight 25%, 0 failed checks",
        "Progressing, weight 50%, 0 failed checks",
        "Promoting, weight 0%",
        "Succeeded, weight 0%",
    ] {
        assert!(err.contains(state), "a line per change ({state}):\n{err}");
    }
    // One plain line per change, no repeats.
    let lines: Vec<&str> = err.lines().collect();
    let mut dedup = lines.clone();
    dedup.dedup();
    assert_eq!(lines, dedup, "no line repeats a state:\n{err}");
    delete_namespace(&c, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_exits_1_on_rollback_with_checks_messages_and_warnings() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let wait = start_wait(&ns, &["--timeout", "60s"]);
    assert_standin_ok(run_standin(&ns, "fail", 200));
    let (code, out, err) = wait.finish(60);
    assert_eq!(code, Some(1), "stdout:\n{out}\nstderr:\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: canary {ns}/{CANARY} failed after weights 10 with 5 failed checks"
        )),
        "one error line naming the failed checks: {last}"
    );
    for part in [
        "Flagger: Canary analysis failed, Deployment scaled to zero; recent warnings: ",
        "Halt advancement no values found for nginx metric request-success-rate",
        "(5 times)",
        &format!("Rolling back {CANARY}.{ns} failed checks threshold reached 5"),
        &format!("Canary failed! Scaling down {CANARY}.{ns}"),
        "kubectl -n",
    ] {
        assert!(last.contains(part), "{part:?} in: {last}");
    }
    assert!(
        err.contains("Progressing, weight 10%, 5 failed checks"),
        "{err}"
    );
    delete_namespace(&c, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_times_out_with_3_naming_phase_and_weight() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let t0 = Instant::now();
    let wait = start_wait(&ns, &["--timeout", "10s"]);
    assert_standin_ok(run_standin(&ns, "stall", 200));
    let (code, out, err) = wait.finish(30);
    let took = t0.elapsed();
    assert_eq!(code, Some(3), "stdout:\n{out}\nstderr:\n{err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "timed out after 10s waiting for canary {ns}/{CANARY}: still Progressing at weight 25%"
        )),
        "{last}"
    );
    assert!(last.contains("weights seen: 10, 25"), "{last}");
    assert!(last.contains("--timeout"), "the hint names the fix: {last}");
    delete_namespace(&c, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_stops_on_sigint_with_130_before_the_fallback_exit() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let wait = start_wait(&ns, &["--timeout", "60s"]);
    let t0 = Instant::now();
    crate::interrupt::signal(&wait.child, "INT");
    let (code, out, err) = wait.finish(10);
    let took = t0.elapsed();
    assert_eq!(code, Some(130), "stdout:\n{out}\nstderr:\n{err}");
    // main's fallback exits 130 by itself 1.8 s after a signal; well before that, the wait ended.
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: interrupted: the canary wait stopped"),
        "{last}"
    );
    eprintln!("canary wait: SIGINT -> exit 130 in {took:?}");
    delete_namespace(&c, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_allow_idle_accepts_an_initialized_canary() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    assert_standin_ok(run_standin(&ns, "idle", 50));
    let kc = kubeconfig().to_string_lossy().into_owned();

    let out = gridos(&[
        "canary",
        "wait",
        "-n",
        &ns,
        "--allow-idle",
        "--kubeconfig",
        &kc,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "canary {ns}/{CANARY}: no rollout in progress (Initialized)"
        )),
        "{}",
        stdout(&out)
    );

    // Without --allow-idle it waits for a rollout to start, and says so at the deadline.
    let t0 = Instant::now();
    let out = gridos_k(&["canary", "wait", "-n", &ns, "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(t0.elapsed() >= Duration::from_secs(2));
    let err = stderr(&out);
    assert!(
        err.contains("no rollout in progress (phase Initialized)"),
        "{err}"
    );
    assert!(err.contains("--allow-idle"), "{err}");
    delete_namespace(&c, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_json_is_one_object_per_line_ending_with_the_summary() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let wait = start_wait(&ns, &["--timeout", "60s", "-o", "json"]);
    assert_standin_ok(run_standin(&ns, "succeed", 200));
    let (code, out, err) = wait.finish(60);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (summary, events) = objects.split_last().expect("some output");
    assert_eq!(summary["event"], "summary", "{summary}");
    assert_eq!(summary["result"], "succeeded");
    assert_eq!(summary["phase"], "Succeeded");
    assert_eq!(summary["weights_seen"], serde_json::json!([10, 25, 50]));
    assert_eq!(summary["canary"], format!("{ns}/{CANARY}"));
    for e in events {
        assert_eq!(e["event"], "canary", "{e}");
        assert!(e["weight"].is_i64() && e["failedChecks"].is_i64(), "{e}");
        assert!(e.get("phase").is_some(), "{e}");
    }
    assert!(
        events
            .iter()
            .any(|e| e["phase"] == "Progressing" && e["weight"] == 25),
        "{out}"
    );
    delete_namespace(&c, &ns).await;
}

/// The watch survives an apiserver restart: kube-runtime's watcher reconnects with its backoff.
/// The restart disturbs every test running at the same time; tests that take the cluster lock
/// are kept out, the others (testenv::) may see a connection error for a few seconds.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_reconnects_when_the_apiserver_restarts() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    let wait = start_wait(&ns, &["--timeout", "3m", "-v"]);
    // Slow steps, so the restart falls inside the rollout; the stand-in retries its writes.
    let standin = run_standin(&ns, "succeed", 1500);
    let mut wait = wait;
    wait.wait_for_line(Stream::Err, 60, |l| l.contains("weight 10%"));

    let restart = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testenv"))
        .args(["restart", "kube-apiserver", "--down-for", "2"])
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/testenv restart");
    assert!(
        restart.status.success(),
        "scripts/testenv restart kube-apiserver:\n{}",
        String::from_utf8_lossy(&restart.stderr)
    );

    assert_standin_ok(standin);
    let (code, out, err) = wait.finish(120);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!("canary {ns}/{CANARY}: Succeeded after weights 10")),
        "{out}"
    );
    // Whether the watcher logged an error depends on when it retried; the verdict is what counts.
    eprintln!("canary wait's log:\n{err}");
    // The client of this test predates the restart; a fresh one proves the server is back.
    delete_namespace(&client().await, &ns).await;
}

#[tokio::test]
async fn cluster_canary_wait_names_a_missing_canary_and_the_fix() {
    let ns = unique_name("canary-missing");
    let out = gridos_k(&["canary", "wait", "nope", "-n", &ns, "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("error: canary {ns}/nope not found")),
        "{err}"
    );
    assert!(err.contains("install first (gridos-setup install"), "{err}");
}

#[test]
fn canary_wait_refuses_a_bad_timeout_before_connecting() {
    let out = gridos(&[
        "canary",
        "wait",
        "--timeout",
        "soon",
        "--kubeconfig",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_canary_wait_ignores_a_verdict_older_than_the_targets_last_change() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = canary_namespace(&c).await;
    // The previous rollout's verdict, then a new image: what a pipeline sees right after
    // `kubectl set image`, before Flagger notices the new revision.
    let api: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), &ns, &gridos_setup::canary::resource());
    let old = serde_json::json!({"status": {"phase": "Succeeded", "canaryWeight": 0, "failedChecks": 0,
        "lastTransitionTime": "2026-01-01T00:00:00Z"}});
    api.patch_status(CANARY, &Default::default(), &kube::api::Patch::Merge(&old))
        .await
        .unwrap();
    let target: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "podinfo"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                 "template": {"metadata": {"labels": {"app": "podinfo"}},
                              "spec": {"containers": [{"name": "podinfo", "image": "registry.example/podinfo:2"}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), &ns)
        .create(&PostParams::default(), &target)
        .await
        .unwrap();
    let out = gridos_k(&["canary", "wait", "-n", &ns, "--timeout", "3s"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a stale Succeeded is not the answer: {}",
        stderr(&out)
    );
    // Flagger's new decision counts.
    let wait = start_wait(&ns, &["--timeout", "60s"]);
    assert_standin_ok(run_standin(&ns, "succeed", 100));
    let (code, out, err) = wait.finish(60);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    delete_namespace(&c, &ns).await;
}
