//! No credential ever reaches the output: a token user runs install, plan, status and uninstall, and
//! error paths, at every verbosity; stdout and stderr are searched for the token, the admin
//! kubeconfig's client key and certificate, and the webhook's private key.

use std::process::{Command, Output};

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::util::{
    client, cluster_lock, delete_token_user, kubeconfig, reset, stderr, stdout, token_kubeconfig,
    unique_name,
};

const HOST: &str = "app.example.com";

fn run(kc: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridos-setup"))
        .args(args)
        .args(["--kubeconfig", kc])
        .env_remove("GRIDOS_PROFILE")
        .env_remove("GRIDOS_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run gridos-setup")
}

/// The strings that must never appear: each secret whole, base64-encoded, and every line of a PEM
/// body (a log that wrapped or re-encoded the PEM would still show its lines).
fn needles(name: &str, secret: &str) -> Vec<(String, String)> {
    let mut out = vec![
        (name.to_string(), secret.to_string()),
        (
            format!("{name} (base64)"),
            base64::engine::general_purpose::STANDARD.encode(secret),
        ),
    ];
    for line in secret.lines().map(str::trim) {
        if line.len() >= 16 && !line.starts_with("-----") {
            out.push((format!("{name} (a PEM line)"), line.to_string()));
        }
    }
    out
}

/// A variant of the token the server rejects: same length and shape, last signature bytes changed.
fn tampered(token: &str) -> String {
    let mut t: Vec<char> = token.chars().collect();
    let n = t.len();
    for c in &mut t[n - 6..] {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    t.into_iter().collect()
}

#[tokio::test]
async fn cluster_no_secret_in_any_output_at_any_verbosity() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let user = unique_name("leak-test");
    let (kc_path, token) = token_kubeconfig(&c, &user).await;
    let kc = kc_path.to_string_lossy().into_owned();

    let mut runs: Vec<(String, Output)> = Vec::new();
    let mut record = |label: &str, out: Output| runs.push((label.to_string(), out));
    let install = ["install", "--profile", "nginx", "--host", HOST, "--yes"];
    let plan = [
        "plan",
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--show-objects",
    ];

    let first = run(&kc, &[&install[..], &["-vv"]].concat());
    assert_eq!(
        first.status.code(),
        Some(0),
        "the token user installs: {}",
        stderr(&first)
    );
    record("install -vv", first);
    record("install (re-run)", run(&kc, &install));
    record(
        "install -v -o json",
        run(&kc, &[&install[..], &["-v", "-o", "json"]].concat()),
    );
    for v in [None, Some("-v"), Some("-vv")] {
        let extra: Vec<&str> = v.into_iter().collect();
        record(
            &format!("plan {extra:?}"),
            run(&kc, &[&plan[..], &extra].concat()),
        );
        record(
            &format!("status {extra:?}"),
            run(&kc, &[&["status"][..], &extra].concat()),
        );
        record(
            &format!("status -o json {extra:?}"),
            run(&kc, &[&["status", "-o", "json"][..], &extra].concat()),
        );
    }

    // Error paths: a rejected token (401), the token sent to a server that does not answer, a bad value.
    let text = std::fs::read_to_string(&kc_path).unwrap();
    let bad = kc_path.with_file_name("kubeconfig-bad-token");
    std::fs::write(&bad, text.replace(&token, &tampered(&token))).unwrap();
    let closed = kc_path.with_file_name("kubeconfig-closed-port");
    std::fs::write(&closed, text.replace("127.0.0.1:6443", "127.0.0.1:1")).unwrap();
    for v in ["-v", "-vv"] {
        let out = run(&bad.to_string_lossy(), &[&install[..], &[v]].concat());
        assert_eq!(out.status.code(), Some(2), "401: {}", stderr(&out));
        assert!(stderr(&out).contains("401"), "{}", stderr(&out));
        record(&format!("install {v} with a rejected token"), out);
        let out = run(&closed.to_string_lossy(), &[&["status"][..], &[v]].concat());
        assert_eq!(out.status.code(), Some(1), "refused: {}", stderr(&out));
        record(&format!("status {v} against a closed port"), out);
        let out = run(
            &kc,
            &[&install[..], &[v, "--set", "canary.threshold=x"]].concat(),
        );
        assert_eq!(out.status.code(), Some(2), "bad value: {}", stderr(&out));
        record(&format!("install {v} with a bad value"), out);
    }

    // Read after the runs above: the re-runs reuse the key, so this is the key they all could have shown.
    let webhook_key = Api::<Secret>::namespaced(c.clone(), "ingress-nginx")
        .get("ingress-nginx-admission")
        .await
        .expect("admission Secret")
        .data
        .and_then(|d| d.get("tls.key").cloned())
        .map(|k| String::from_utf8(k.0).unwrap())
        .expect("tls.key");
    record("uninstall -vv", run(&kc, &["uninstall", "--yes", "-vv"]));

    let admin: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap();
    let admin_user = &admin["users"][0]["user"];
    let read = |data: &str, file: &str| -> String {
        match admin_user[data].as_str() {
            Some(d) => {
                String::from_utf8(base64::engine::general_purpose::STANDARD.decode(d).unwrap())
                    .unwrap()
            }
            None => std::fs::read_to_string(admin_user[file].as_str().unwrap()).unwrap(),
        }
    };
    let mut secrets = needles("the token", &token);
    // The JWT's signature alone would be enough to recognise (and, with the rest, replay) it.
    let signature = token.rsplit('.').next().unwrap().to_string();
    secrets.push(("the token's signature".into(), signature));
    secrets.push(("the rejected token".into(), tampered(&token)));
    secrets.extend(needles(
        "the admin client key",
        &read("client-key-data", "client-key"),
    ));
    secrets.extend(needles(
        "the admin client certificate",
        &read("client-certificate-data", "client-certificate"),
    ));
    secrets.extend(needles("the webhook's tls.key", &webhook_key));

    let mut bytes = 0;
    for (label, out) in &runs {
        let all = format!("{}\n{}", stdout(out), stderr(out));
        bytes += all.len();
        for (what, s) in &secrets {
            assert!(
                !all.contains(s.as_str()),
                "{what} appears in the output of `{label}`"
            );
        }
    }
    // The search covered real output, debug logs included (-vv logs every request).
    assert!(runs.len() >= 19, "{} runs", runs.len());
    assert!(bytes > 10_000, "only {bytes} bytes of output searched");
    eprintln!("searched {} runs, {bytes} bytes of output", runs.len());
    delete_token_user(&c, &user).await;
}
