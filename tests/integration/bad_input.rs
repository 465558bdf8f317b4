//! Bad input refused before the first write, against the test control plane: each case exits with
//! the contract's code and one line naming the problem and the fix, and the cluster is unchanged
//! (every listable object's kind, namespace, name and resourceVersion, before and after).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, verbs};

use crate::util::{client, cluster_lock, kubeconfig, stderr, stdout, unique_name};

const HOST: &str = "app.example.com";

const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Namespaces install could write to, and the system ones. Objects in any other namespace belong to
/// tests that run alongside without the cluster lock (each in a namespace of its own).
fn watched(ns: &str) -> bool {
    SYSTEM_NAMESPACES.contains(&ns) || crate::util::INSTALL_NAMESPACES.contains(&ns)
}

/// Kinds the control plane itself rewrites all the time (heartbeats, events), whatever a client does.
fn volatile(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Event") | ("events.k8s.io", "Event") | ("coordination.k8s.io", "Lease")
    )
}

/// `group/kind namespace/name resourceVersion` of every listable object in scope.
pub(crate) async fn snapshot(c: &Client) -> BTreeSet<String> {
    let discovery = Discovery::new(c.clone()).run().await.expect("discovery");
    let mut out = BTreeSet::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) || volatile(&ar.group, &ar.kind) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
            let list = api
                .list_metadata(&ListParams::default())
                .await
                .unwrap_or_else(|e| panic!("list {}/{}: {e}", ar.group, ar.kind));
            for o in list.items {
                let ns = o.metadata.namespace.clone();
                let name = o.metadata.name.clone().unwrap_or_default();
                let in_scope = match (&ns, ar.kind.as_str()) {
                    (Some(ns), _) => watched(ns),
                    (None, "Namespace") => watched(&name),
                    (None, _) => true,
                };
                if in_scope {
                    out.insert(format!(
                        "{}/{} {}/{} {}",
                        ar.group,
                        ar.kind,
                        ns.unwrap_or_default(),
                        name,
                        o.metadata.resource_version.unwrap_or_default()
                    ));
                }
            }
        }
    }
    out
}

/// Runs gridos-setup with `args` (no stdin, `PATH` as given) and checks the contract for bad input:
/// exit `code`, nothing on stdout, one line on stderr containing each of `expect`, cluster unchanged.
/// Returns stderr and how long the run took.
async fn refused_with_env(
    args: &[&str],
    env: &[(&str, &str)],
    code: i32,
    expect: &[&str],
) -> (String, Duration) {
    let _lock = cluster_lock().await;
    let c = client().await;
    let before = snapshot(&c).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridos-setup"));
    cmd.args(args)
        .env_remove("GRIDOS_PROFILE")
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let out: Output = cmd.output().expect("run gridos-setup");
    let took = t0.elapsed();
    let after = snapshot(&c).await;
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit {code} for {args:?}; stderr: {err}"
    );
    assert!(
        stdout(&out).is_empty(),
        "nothing on stdout for {args:?}: {}",
        stdout(&out)
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line for {args:?}: {err}"
    );
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for e in expect {
        assert!(err.contains(e), "{args:?}: {err:?} should contain {e:?}");
    }
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{args:?} changed the cluster:\nnew or changed: {added:#?}\ngone or changed: {removed:#?}"
    );
    (err, took)
}

async fn refused(args: &[&str], code: i32, expect: &[&str]) -> (String, Duration) {
    refused_with_env(args, &[], code, expect).await
}

/// `install --profile nginx --host app.example.com --yes` against the test control plane, plus `extra`.
async fn install_refused(extra: &[&str], code: i32, expect: &[&str]) -> String {
    let kc = kubeconfig().to_string_lossy().into_owned();
    let mut args = vec!["install", "--kubeconfig", &kc, "--yes"];
    let has_profile = extra
        .iter()
        .any(|a| *a == "--profile" || *a == "@no-profile");
    if !has_profile {
        args.extend_from_slice(&["--profile", "nginx"]);
    }
    if !extra.iter().any(|a| *a == "--host" || *a == "@no-host") {
        args.extend_from_slice(&["--host", HOST]);
    }
    args.extend(extra.iter().filter(|a| !a.starts_with('@')));
    refused(&args, code, expect).await.0
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(unique_name("gridos-bad-input"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file(dir: &Path, name: &str, text: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

// ---- values (the render cases of render_cli.rs, through install) ----

#[tokio::test]
async fn cluster_bad_input_unknown_profile() {
    install_refused(
        &["--profile", "istio"],
        2,
        &["unknown profile \"istio\"", "nginx, appgw, frontdoor"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_no_profile() {
    install_refused(&["@no-profile"], 2, &["no profile given", "--profile"]).await;
}

#[tokio::test]
async fn cluster_bad_input_profile_file_not_yaml() {
    let p = file(
        &tempdir(),
        "broken-profile.yaml",
        b"name: x\nfront: nginx\ningressController: [unclosed\n",
    );
    install_refused(
        &["--profile", &p],
        2,
        &[&format!("{p}:"), "invalid YAML", "fix the YAML"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_values_file_not_yaml() {
    let p = file(
        &tempdir(),
        "broken.yaml",
        b"canary:\n  threshold: 3\n bad indent: [\n",
    );
    install_refused(&["--values", &p], 2, &[&format!("{p}:"), "invalid YAML"]).await;
}

#[tokio::test]
async fn cluster_bad_input_values_file_missing() {
    install_refused(
        &["--values", "/nonexistent/values.yaml"],
        2,
        &["cannot read /nonexistent/values.yaml", "check the path"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_unknown_key() {
    let p = file(
        &tempdir(),
        "typo.yaml",
        b"canary:\n  stepWeight: [10, 20]\n",
    );
    install_refused(
        &["-f", &p],
        2,
        &[
            "unknown key \"canary.stepWeight\"",
            "did you mean \"canary.stepWeights\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_unknown_top_level_key() {
    let p = file(&tempdir(), "typo-top.yaml", b"hots: app.example.com\n");
    install_refused(
        &["-f", &p],
        2,
        &["unknown key \"hots\"", "did you mean \"host\""],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_wrong_type() {
    let p = file(&tempdir(), "type.yaml", b"canary:\n  threshold: five\n");
    install_refused(&["-f", &p], 2, &["canary.threshold", "invalid type"]).await;
}

#[tokio::test]
async fn cluster_bad_input_host_not_a_dns_name() {
    install_refused(
        &["--host", "App_Server"],
        2,
        &["host \"App_Server\" is not a DNS name", "app.example.com"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_host_without_a_domain() {
    install_refused(
        &["--host", "localhost"],
        2,
        &["is not a DNS name", "domain"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_missing_host() {
    install_refused(&["@no-host"], 2, &["no host given", "--host"]).await;
}

#[tokio::test]
async fn cluster_bad_input_set_without_equals() {
    install_refused(
        &["--set", "canary.threshold"],
        2,
        &["--set \"canary.threshold\" has no '='", "key.path=value"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_set_unknown_path() {
    install_refused(
        &["--set", "canary.treshold=3"],
        2,
        &[
            "unknown key \"canary.treshold\"",
            "did you mean \"canary.threshold\"",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_success_rate_above_100() {
    install_refused(
        &["--set", "canary.successRateMin=101"],
        2,
        &["canary.successRateMin = 101", "0 to 100"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_step_weights_not_increasing() {
    install_refused(
        &["--set", "canary.stepWeights=[10, 50, 25]"],
        2,
        &["canary.stepWeights", "strictly increasing"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_analysis_interval_flagger_refuses() {
    // Flagger's CRD takes `^[0-9]+(m|s)` and Go durations: hours, days and bare numbers fail at
    // apply time, after other objects were written, so they are refused before.
    for interval in ["2h", "1d", "90", "2s"] {
        install_refused(
            &["--set", &format!("canary.interval={interval}")],
            2,
            &["canary.interval", "1m, 30s or 1m30s"],
        )
        .await;
    }
}

#[tokio::test]
async fn cluster_bad_input_step_weights_above_100() {
    install_refused(
        &["--set", "canary.stepWeights=[50, 120]"],
        2,
        &["canary.stepWeights", "from 1 to 100"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_private_link_outside_frontdoor() {
    install_refused(
        &["--profile", "appgw", "--set", "frontDoor.privateLink=true"],
        2,
        &["frontDoor.privateLink", "--profile frontdoor"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_service_monitor_group() {
    install_refused(
        &["--set", "serviceMonitor.group=example.com"],
        2,
        &["serviceMonitor.group", "azmonitoring.coreos.com"],
    )
    .await;
}

// ---- flags ----

#[tokio::test]
async fn cluster_bad_input_timeout_malformed() {
    install_refused(
        &["--timeout", "ten minutes"],
        2,
        &["--timeout", "not a duration", "10m"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_timeout_unknown_unit() {
    install_refused(&["--timeout", "5d"], 2, &["--timeout", "\"5d\"", "1h"]).await;
}

#[tokio::test]
async fn cluster_bad_input_dry_run_with_no_wait() {
    install_refused(
        &["--dry-run", "--no-wait"],
        2,
        &["--dry-run", "--no-wait", "only one of them"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_yes_is_not_a_plan_flag() {
    let kc = kubeconfig().to_string_lossy().into_owned();
    refused(
        &[
            "plan",
            "--kubeconfig",
            &kc,
            "--profile",
            "nginx",
            "--host",
            HOST,
            "--yes",
        ],
        2,
        &["'--yes'", "--help"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_no_terminal_and_no_yes() {
    let kc = kubeconfig().to_string_lossy().into_owned();
    refused(
        &[
            "install",
            "--kubeconfig",
            &kc,
            "--profile",
            "nginx",
            "--host",
            HOST,
        ],
        2,
        &["--yes was not given", "pass --yes"],
    )
    .await;
}

// ---- kubeconfig and the first contact with the server ----

/// The test control plane's kubeconfig with `edit` applied to its YAML, written to a temp file.
fn kubeconfig_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let mut v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    edit(&mut v);
    file(
        &tempdir(),
        "kubeconfig",
        serde_json::to_string(&v).unwrap().as_bytes(),
    )
}

fn install_with(kc: &str) -> Vec<String> {
    [
        "install",
        "--kubeconfig",
        kc,
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--yes",
    ]
    .map(String::from)
    .to_vec()
}

async fn kubeconfig_refused(kc: &str, code: i32, expect: &[&str]) -> (String, Duration) {
    let args = install_with(kc);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&args, code, expect).await
}

#[tokio::test]
async fn cluster_bad_input_kubeconfig_missing() {
    kubeconfig_refused(
        "/nonexistent/kubeconfig",
        2,
        &[
            "cannot read kubeconfig /nonexistent/kubeconfig",
            "--kubeconfig",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_kubeconfig_is_a_directory() {
    let d = tempdir();
    kubeconfig_refused(
        d.to_str().unwrap(),
        2,
        &[
            "cannot read kubeconfig",
            d.to_str().unwrap(),
            "--kubeconfig",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_kubeconfig_not_utf8() {
    let p = file(&tempdir(), "kubeconfig", b"\xff\xfe\x00garbage\x80\n");
    kubeconfig_refused(&p, 2, &["cannot read kubeconfig", &p]).await;
}

#[tokio::test]
async fn cluster_bad_input_kubeconfig_list_with_no_file() {
    refused_with_env(
        &["install", "--profile", "nginx", "--host", HOST, "--yes"],
        &[("KUBECONFIG", "/nonexistent/a:/nonexistent/b")],
        2,
        &["no kubeconfig found", "/nonexistent/a", "--kubeconfig"],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_unknown_context_lists_the_available_ones() {
    let kc = kubeconfig().to_string_lossy().into_owned();
    refused(
        &[
            "install",
            "--kubeconfig",
            &kc,
            "--context",
            "prod-aks",
            "--profile",
            "nginx",
            "--host",
            HOST,
            "--yes",
        ],
        2,
        &[
            "context \"prod-aks\"",
            "--context with one of: gridos-testenv",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_closed_port_fails_fast_naming_the_server() {
    // Port 1 on loopback: nothing listens there inside the test network namespace.
    let kc = kubeconfig_with(|v| {
        v["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1".into();
    });
    let (_, took) = kubeconfig_refused(
        &kc,
        1,
        &[
            "cannot reach https://127.0.0.1:1/",
            "connection refused",
            "network",
        ],
    )
    .await;
    assert!(
        took < Duration::from_secs(10),
        "failed within 10 s: {took:?}"
    );
}

#[tokio::test]
async fn cluster_bad_input_wrong_ca_is_named_a_tls_failure() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let dir = tempdir();
    let ca_path = file(&dir, "other-ca.crt", ca.pem().as_bytes());
    let kc = kubeconfig_with(|v| {
        v["clusters"][0]["cluster"]["certificate-authority"] = ca_path.clone().into();
    });
    kubeconfig_refused(
        &kc,
        2,
        &[
            "TLS verification of https://127.0.0.1:6443/ failed",
            "CA",
            "az aks get-credentials",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_insecure_skip_tls_verify_is_refused() {
    let kc = kubeconfig_with(|v| {
        let cluster = &mut v["clusters"][0]["cluster"];
        cluster["insecure-skip-tls-verify"] = true.into();
        if let Some(m) = cluster.as_object_mut() {
            m.remove("certificate-authority");
        }
    });
    kubeconfig_refused(
        &kc,
        2,
        &[
            "cluster \"gridos-testenv\"",
            "insecure-skip-tls-verify",
            "never turns TLS verification off",
            "certificate-authority-data",
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_bad_input_invalid_token_is_named_a_401() {
    let token = "gridos-test-invalid-token-0123456789abcdef";
    let kc = kubeconfig_with(|v| {
        v["users"][0]["user"] = serde_json::json!({ "token": token });
    });
    let (err, _) = kubeconfig_refused(
        &kc,
        2,
        &[
            "rejected the credentials of context \"gridos-testenv\"",
            "401",
            "az aks get-credentials",
        ],
    )
    .await;
    assert!(!err.contains(token), "the token is not echoed: {err}");
}

#[tokio::test]
async fn cluster_bad_input_exec_plugin_not_on_path() {
    let kc = kubeconfig_with(|v| {
        v["users"][0]["user"] = serde_json::json!({ "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin",
            "args": ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"],
            "interactiveMode": "Never",
        }});
    });
    let args = install_with(&kc);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused_with_env(
        &args,
        &[("PATH", "/nonexistent-bin")],
        2,
        &[
            "credential plugin \"kubelogin\"",
            "not on PATH",
            "az aks install-cli",
        ],
    )
    .await;
}

/// The snapshot notices a write, so an unchanged snapshot above means nothing was written.
#[tokio::test]
async fn cluster_bad_input_snapshot_sees_a_write() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let _lock = cluster_lock().await;
    let c = client().await;
    let before = snapshot(&c).await;
    let name = unique_name("snapshot-probe");
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&Default::default(), &cm).await.unwrap();
    let after = snapshot(&c).await;
    let _ = api.delete(&name, &Default::default()).await;
    let added: Vec<_> = after.difference(&before).collect();
    assert_eq!(added.len(), 1, "one new object: {added:?}");
    assert!(
        added[0].starts_with(&format!("/ConfigMap default/{name} ")),
        "{added:?}"
    );
}

/// A credential plugin that is installed but fails (a stand-in for kubelogin whose refresh token
/// expired): named with the plugin's own explanation, and without what it printed on stdout, where
/// a plugin writes its token.
#[tokio::test]
async fn cluster_bad_input_credential_plugin_fails() {
    let dir = tempdir();
    let secret = "half-written-token-0123456789abcdef";
    let plugin = dir.join("kubelogin-standin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho '{{\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{secret}\"'\n\
             echo 'AADSTS700082: The refresh token has expired due to inactivity.' >&2\nexit 1\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plugin_path = plugin.to_string_lossy().into_owned();
    let kc = kubeconfig_with(|v| {
        v["users"][0]["user"] = serde_json::json!({ "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": plugin_path,
            "interactiveMode": "Never",
        }});
    });
    let (err, _) = kubeconfig_refused(
        &kc,
        2,
        &[
            "getting credentials for context \"gridos-testenv\" failed",
            "AADSTS700082",
            "run the kubeconfig's credential command yourself",
        ],
    )
    .await;
    assert!(
        !err.contains(secret),
        "the plugin's stdout is not echoed: {err}"
    );
}

/// There is no flag that turns TLS verification off: none in any command's help, and the names
/// other tools use for one are unknown arguments.
#[test]
fn no_flag_turns_tls_verification_off() {
    for cmd in [
        vec!["--help"],
        vec!["install", "--help"],
        vec!["plan", "--help"],
        vec!["status", "--help"],
        vec!["uninstall", "--help"],
        vec!["canary", "wait", "--help"],
    ] {
        let help = crate::util::ok(&crate::util::gridos(&cmd)).to_lowercase();
        for word in ["insecure", "skip-tls", "tls-verify", "no-verify"] {
            assert!(!help.contains(word), "{cmd:?} help mentions {word}");
        }
    }
    for flag in [
        "--insecure-skip-tls-verify",
        "--insecure",
        "--skip-tls-verify",
    ] {
        let out = crate::util::gridos(&["status", flag]);
        assert_eq!(out.status.code(), Some(2), "{flag} is refused");
        assert!(
            stderr(&out).contains("unexpected argument"),
            "{flag}: {}",
            stderr(&out)
        );
    }
}

/// A kubeconfig that is not valid YAML: the position is named, the source line (here a token) is not.
#[tokio::test]
async fn cluster_bad_input_kubeconfig_not_yaml_does_not_quote_it() {
    let token = "gridos-test-token-in-broken-yaml-0123456789";
    let p = file(
        &tempdir(),
        "kubeconfig",
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {token}\n   bad: [\n"
        )
        .as_bytes(),
    );
    let (err, _) = kubeconfig_refused(
        &p,
        2,
        &[
            "cannot read kubeconfig",
            "line 7 column 4",
            "fix the kubeconfig's YAML",
        ],
    )
    .await;
    assert!(!err.contains(token), "the token is not quoted: {err}");
}

/// A server that accepts the connection and then says nothing (a black-holing proxy or firewall):
/// the first request gives up within 10 s, naming the server.
#[tokio::test]
async fn cluster_bad_input_silent_server_fails_within_10_s() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let kc = kubeconfig_with(|v| {
        v["clusters"][0]["cluster"]["server"] = format!("https://127.0.0.1:{port}").into();
    });
    let server = format!("https://127.0.0.1:{port}/");
    let (_, took) =
        kubeconfig_refused(&kc, 1, &[&server, "did not answer within 5 s", "network"]).await;
    assert!(
        took < Duration::from_secs(10),
        "failed within 10 s: {took:?}"
    );
    drop(listener);
}
