//! `check --pre` and `check` on the test control plane: a fresh cluster passes, a Helm-managed
//! ingress-nginx fails with its fix, and after install every component, CRD, the address and the
//! Canary are checked.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};

use crate::util::{
    client, cluster_lock, create_namespace, delete_namespace, gridos_k, ok, reset, stdout,
    unique_name,
};

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test]
async fn cluster_check_pre_passes_on_a_fresh_control_plane() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let started = std::time::Instant::now();
    let text = ok(&gridos_k(&["check", "--pre"]));
    eprintln!("check --pre: {:?}", started.elapsed());
    for name in [
        "credentials",
        "API server",
        "AKS",
        "ServiceMonitor",
        "Helm installs",
        "AKS app routing",
        "IngressClass",
        "permissions (objects)",
        "permissions (rbac)",
    ] {
        assert!(
            text.lines().any(
                |l| l.starts_with("[pass] ") && l.contains(&format!("] {name}: "))
                    || l.starts_with("[warn] ") && l.contains(&format!("] {name}: "))
            ),
            "{name} reported:\n{text}"
        );
    }
    assert!(!text.contains("[FAIL]"), "{text}");
    assert!(text.contains("Kubernetes v1.35"), "{text}");

    let lines = json_lines(&ok(&gridos_k(&["check", "--pre", "-o", "json"])));
    let (summary, checks) = lines.split_last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["result"], "pass");
    assert_eq!(summary["failed"], 0);
    assert!(checks.len() >= 9);
    for c in checks {
        assert_eq!(c["event"], "check");
        assert!(
            ["pass", "warn"].contains(&c["result"].as_str().unwrap()),
            "{c}"
        );
    }
}

#[tokio::test]
async fn cluster_check_pre_fails_on_a_helm_managed_ingress_nginx() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = unique_name("helm-nginx");
    create_namespace(&c, &ns, &[]).await;
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "ingress-nginx-controller",
            "labels": {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "edge"},
            "annotations": {"meta.helm.sh/release-name": "edge", "meta.helm.sh/release-namespace": ns},
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(c.clone(), &ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let out = gridos_k(&["check", "--pre"]);
    // Gone at once (a namespace takes seconds), so the next test's cluster has no Helm release.
    Api::<Deployment>::namespaced(c.clone(), &ns)
        .delete("ingress-nginx-controller", &DeleteParams::default())
        .await
        .unwrap();
    delete_namespace(&c, &ns).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("[FAIL] Helm installs: "))
        .unwrap_or_else(|| panic!("a failed Helm check:\n{text}"));
    assert!(
        line.contains(&format!("Deployment {ns}/ingress-nginx-controller"))
            && line.contains(&format!("release edge (namespace {ns})")),
        "{line}"
    );
    assert!(
        text.contains("hint: `gridos-setup install --adopt-helm` takes them over")
            && text.contains("do not `helm uninstall` them first (it deletes the controller Service, which frees the address"),
        "{text}"
    );
    // Only that check fails.
    assert_eq!(text.matches("[FAIL]").count(), 1, "{text}");
}

#[tokio::test]
async fn cluster_check_after_install() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let before = gridos_k(&["check"]);
    assert_eq!(before.status.code(), Some(1));
    assert!(
        stdout(&before).contains("[FAIL] installed: gridos-setup has not installed anything here"),
        "{}",
        stdout(&before)
    );
    ok(&crate::util::install_nginx());
    let text = ok(&gridos_k(&["check"]));
    for want in [
        "[pass] CRD canaries.flagger.app: Established",
        "[pass] CRD metrictemplates.flagger.app: Established",
        "[pass] Deployment ingress-nginx/ingress-nginx-controller: ready ",
        "[pass] Deployment flagger-system/flagger: ready",
        "[pass] address: Service ingress-nginx/ingress-nginx-controller has public address 203.0.113.",
        "[warn] ingress-nginx: ingress-nginx was retired in March 2026",
        "[pass] webhook certificate: valid until ",
        "[pass] Canary gridos/gridos: phase ",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    let lines = json_lines(&ok(&gridos_k(&["check", "-o", "json"])));
    assert_eq!(lines.last().unwrap()["result"], "pass");

    // A webhook certificate inside its last 30 days warns (install would renew it).
    let short = gridos_setup::certs::generate(
        "ingress-nginx-controller-admission",
        "ingress-nginx",
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(10 * 24 * 3600),
    )
    .unwrap();
    Api::<Secret>::namespaced(c.clone(), "ingress-nginx")
        .patch(
            "ingress-nginx-admission",
            &PatchParams::apply("test-expiry").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "data": {"ca.crt": short.ca_crt, "tls.crt": short.tls_crt, "tls.key": short.tls_key},
            })),
        )
        .await
        .unwrap();
    // As a renewal would, the webhook trusts the new CA (else check fails on the mismatch).
    crate::util::set_webhook_ca_bundle(&c, &short.ca_bundle).await;
    let text = ok(&gridos_k(&["check"]));
    assert!(
        text.contains("[pass] webhook CA: the webhook trusts the CA of Secret ingress-nginx/ingress-nginx-admission"),
        "{text}"
    );
    assert!(
        text.contains("[warn] webhook certificate: expires on ")
            && text.contains("hint: re-run `gridos-setup install` to renew it"),
        "{text}"
    );

    // A missing Canary is a failure with its fix.
    let resolver = gridos_setup::apply::Resolver::new(&c, None).await.unwrap();
    let (ar, _) = resolver
        .resolve_gvk("flagger.app/v1beta1", "Canary")
        .unwrap();
    Api::<DynamicObject>::namespaced_with(c.clone(), "gridos", &ar)
        .delete("gridos", &DeleteParams::default())
        .await
        .unwrap();
    let out = gridos_k(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(
            "[FAIL] Canary gridos/gridos: missing\n       hint: re-run install to create it"
        ),
        "{}",
        stdout(&out)
    );
    reset(&c).await;
}

#[test]
fn check_pre_names_a_missing_exec_plugin() {
    // No cluster needed: the plugin is checked before the API server is asked anything.
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "aks", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "kubelogin-not-installed", "args": ["get-token"], "interactiveMode": "Never"}}}],
        "contexts": [{"name": "aks", "context": {"cluster": "aks", "user": "u"}}],
        "current-context": "aks",
    });
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique_name("exec")));
    std::fs::write(&path, kc.to_string()).unwrap();
    let out = crate::util::gridos(&["check", "--pre", "--kubeconfig", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] credentials: the kubeconfig's exec plugin kubelogin-not-installed is not on PATH\n       hint: install kubelogin-not-installed or put it on PATH"),
        "{text}"
    );
    assert!(text.contains("[FAIL] API server: "), "{text}");
}

/// Without a network policy engine (AKS's default) `check --pre` warns that the load tester's
/// NetworkPolicy is not enforced; with one of the DaemonSets AKS runs for an engine (here Azure
/// NPM's `azure-npm` in kube-system, and Calico's `calico-node` in `calico-system`) it passes. The
/// DaemonSets select no node, so no pod is made: only their presence is what check reads.
#[tokio::test]
async fn cluster_check_warns_without_a_network_policy_engine() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let engine = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .find(|l| l["event"] == "check" && l["name"] == "network policy engine")
            .cloned()
            .unwrap_or_else(|| panic!("a network policy engine line: {lines:?}"))
    };
    let none = engine(&json_lines(&ok(&gridos_k(&[
        "check", "--pre", "-o", "json",
    ]))));
    assert_eq!(none["result"], "warn", "{none}");
    assert!(
        none["detail"].as_str().unwrap().contains("load tester"),
        "{none}"
    );
    for (ns, name, shown) in [
        ("kube-system", "azure-npm", "Azure Network Policy Manager"),
        ("calico-system", "calico-node", "Calico"),
    ] {
        if ns != "kube-system" {
            create_namespace(&c, ns, &[]).await;
        }
        let ds: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"k8s-app": name}},
                "template": {
                    "metadata": {"labels": {"k8s-app": name}},
                    "spec": {
                        "nodeSelector": {"gridos-test/no-such-node": "true"},
                        "containers": [{"name": name, "image": "example.invalid/engine@sha256:0000000000000000000000000000000000000000000000000000000000000000"}],
                    },
                },
            },
        }))
        .unwrap();
        let api: Api<DaemonSet> = Api::namespaced(c.clone(), ns);
        api.create(&PostParams::default(), &ds).await.unwrap();
        let found = engine(&json_lines(&ok(&gridos_k(&[
            "check", "--pre", "-o", "json",
        ]))));
        let _ = api.delete(name, &DeleteParams::default()).await;
        if ns != "kube-system" {
            let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
            let uid = namespaces.get(ns).await.unwrap().metadata.uid.unwrap();
            delete_namespace(&c, ns).await;
            crate::util::wait_for(
                namespaces,
                ns,
                60,
                "namespace deleted",
                kube::runtime::wait::conditions::is_deleted(&uid),
            )
            .await;
        }
        assert_eq!(found["result"], "pass", "{ns}/{name}: {found}");
        assert!(found["detail"].as_str().unwrap().contains(shown), "{found}");
    }
}
