//! `install` on a real pseudo-terminal: the profile picker, the host question, the plan and its confirmation; and the refusal without a terminal.

use std::process::Command;
use std::time::{Duration, Instant};

use gridos_setup::applyset::{PARENT_NAME, PARENT_NAMESPACE};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::Api;
use rexpect::process::WaitStatus;
use rexpect::session::PtySession;

use crate::util::{client, cluster_lock, gridos, kubeconfig, reset, stderr};

const HOST: &str = "app.example.com";
const DOWN: &str = "\x1b[B";

/// The binary on a fresh pseudo-terminal, against the test control plane through $KUBECONFIG.
fn spawn_on_pty(args: &[&str]) -> PtySession {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig())
        .env("TERM", "xterm")
        .env_remove("GRIDOS_PROFILE");
    // Generous per step: the last one covers a whole install on a shared 2-core machine.
    rexpect::session::spawn_command(cmd, Some(240_000)).expect("spawn on a pty")
}

fn exit_code(p: &PtySession) -> i32 {
    match p.process().wait().expect("wait for gridos-setup") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("gridos-setup ended with {other:?}"),
    }
}

#[tokio::test]
async fn cluster_prompt_pick_appgw_type_host_confirm_plan_installs() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;

    // Enter at the confirmation takes the default, No: nothing is written.
    let mut p = spawn_on_pty(&["install", "--profile", "nginx", "--host", HOST]);
    p.exp_string("Plan for profile nginx with host app.example.com")
        .unwrap();
    p.exp_string("Deployment/ingress-nginx/ingress-nginx-controller")
        .unwrap();
    p.exp_string(" to create, 0 to change, 0 unchanged, 0 to prune")
        .unwrap();
    p.exp_string("Apply these changes").unwrap();
    p.send("\r").unwrap();
    p.flush().unwrap();
    p.exp_string("Nothing was changed.").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(exit_code(&p), 1, "declining exits 1");
    let parents: Api<ConfigMap> = Api::namespaced(c.clone(), PARENT_NAMESPACE);
    assert!(
        parents.get_opt(PARENT_NAME).await.unwrap().is_none(),
        "declining wrote no ApplySet record"
    );

    // No --profile, no --host: pick appgw (one Down from nginx), type the host, accept the plan.
    let started = Instant::now();
    let mut p = spawn_on_pty(&["install"]);
    p.exp_string("Which front does the cluster sit behind?")
        .unwrap();
    p.exp_string("frontdoor").unwrap();
    p.send(DOWN).unwrap();
    p.flush().unwrap();
    // Give the picker a moment to draw the move before Enter, as a person would.
    std::thread::sleep(Duration::from_millis(300));
    p.send("\r").unwrap();
    p.flush().unwrap();
    // Then the traffic layer: Enter keeps the default, ingress-nginx.
    p.exp_string("Which traffic layer routes the app").unwrap();
    p.exp_string("gateway-api").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send("\r").unwrap();
    p.flush().unwrap();
    p.exp_string("Host the app is served on").unwrap();
    // A bad host is refused with --host's own reason, and asked again.
    p.send("App.Example.com\r").unwrap();
    p.flush().unwrap();
    p.exp_string("only lower-case letters").unwrap();
    p.exp_string("Host the app is served on").unwrap();
    p.send(&format!("{HOST}\r")).unwrap();
    p.flush().unwrap();
    p.exp_string("Plan for profile appgw with host app.example.com")
        .unwrap();
    let plan = p
        .exp_string("Apply these changes and wait until everything is ready?")
        .unwrap();
    assert!(
        plan.contains("Service/ingress-nginx/ingress-nginx-controller")
            && plan.contains("Canary/gridos/gridos")
            && plan.contains(" to create, 0 to change, 0 unchanged, 0 to prune"),
        "the plan lists what will be created: {plan}"
    );
    p.send("y\r").unwrap();
    p.flush().unwrap();
    let (_, address_line) = p
        .exp_regex(r"Ingress address \(internal\): 198\.51\.100\.\d+")
        .unwrap();
    let rest = p.exp_eof().unwrap();
    assert_eq!(
        exit_code(&p),
        0,
        "install exits 0; after the address:\n{rest}"
    );
    assert!(
        rest.contains("Next steps"),
        "guidance after the install: {rest}"
    );

    let svc = Api::<Service>::namespaced(c.clone(), "ingress-nginx")
        .get("ingress-nginx-controller")
        .await
        .unwrap();
    let ip = gridos_setup::wait::service_address(&svc).unwrap();
    assert!(
        address_line.ends_with(&ip),
        "{address_line} is the Service's {ip}"
    );
    let annotations = svc.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations
            .get("service.beta.kubernetes.io/azure-load-balancer-internal")
            .map(String::as_str),
        Some("true"),
        "the picked profile (appgw) was installed"
    );
    eprintln!(
        "picker install took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    reset(&c).await;
}

/// A signal while a question waits (a pipeline cancelling, `kill -INT`) ends the run at once,
/// not after main's 1.8 s fallback, and gives the cursor the picker hid back.
#[test]
fn a_signal_at_the_picker_exits_130_at_once_and_shows_the_cursor() {
    use rexpect::process::Signal;
    for (sig, signal) in [("INT", Signal::SIGINT), ("TERM", Signal::SIGTERM)] {
        let mut p = spawn_on_pty(&["install", "--host", HOST]);
        p.exp_string("Which front does the cluster sit behind?")
            .unwrap();
        // Let the picker finish drawing, so the output after the signal is only the ending.
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        p.process_mut().signal(signal).expect("signal");
        let rest = p.exp_eof().unwrap();
        let took = t0.elapsed();
        assert_eq!(exit_code(&p), 130, "SIG{sig}: {rest}");
        assert!(
            took < Duration::from_millis(1000),
            "SIG{sig}: took {took:?}"
        );
        // Exactly once: the run's own error and the signal handler race to report it, and
        // `console` answers the interrupted read by raising a second SIGINT.
        assert_eq!(
            rest.matches("error: interrupted: stopped at a question, before anything was written")
                .count(),
            1,
            "SIG{sig}: {rest}"
        );
        assert!(
            rest.contains("\x1b[?25h"),
            "SIG{sig}: the cursor is shown again: {rest:?}"
        );
        eprintln!("SIG{sig} at the picker: exit 130 in {took:?}");
    }
}

#[test]
fn no_terminal_no_profile_exits_2_fast_naming_the_choices() {
    let started = Instant::now();
    let out = gridos(&["install", "--host", HOST]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for word in ["--profile", "nginx", "appgw", "frontdoor"] {
        assert!(err.contains(word), "names {word}: {err}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn no_terminal_no_yes_exits_2_before_connecting() {
    let out = gridos(&[
        "install",
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--yes") && err.lines().count() == 1, "{err}");
}
