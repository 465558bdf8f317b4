//! Grafana, the optional component: the names other parts rely on (Service `grafana` port 80 to
//! 3000, ConfigMap `grafana-dashboards` key `canary.json`, the data source at our Prometheus), the
//! dashboard's panels and their variables, Pod Security, and switching it off.

use gridos_setup::profile::{ProfileSource, ValuesRequest, resolve};
use gridos_setup::render::{Object, RenderInputs, render};
use serde_json::Value;

fn objects(sets: &[&str]) -> Vec<Object> {
    let req = ValuesRequest {
        profile: Some(ProfileSource::Builtin("nginx".into())),
        host: Some("app.example.com".into()),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let v = resolve(&req).unwrap();
    render(&v, &RenderInputs::offline(&v)).unwrap()
}

fn find<'a>(objs: &'a [Object], kind: &str, ns: &str, name: &str) -> &'a Object {
    objs.iter()
        .find(|o| o.kind() == kind && o.name() == name && o.namespace() == Some(ns))
        .unwrap_or_else(|| panic!("{kind} {ns}/{name} is rendered"))
}

fn dashboard(objs: &[Object], ns: &str) -> Value {
    let cm = find(objs, "ConfigMap", ns, "grafana-dashboards");
    let text = cm.data["data"]["canary.json"]
        .as_str()
        .expect("key canary.json");
    serde_json::from_str(text).expect("canary.json is JSON")
}

/// Every `$name` / `${name}` in a PromQL expression.
fn variables(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
    }
    out
}

#[test]
fn grafana_keeps_the_names_the_dashboard_tests_use() {
    for flagger_ns in ["flagger-system", "observability"] {
        let objs = objects(&[&format!("namespaces.flagger={flagger_ns}")]);
        let svc = find(&objs, "Service", flagger_ns, "grafana");
        let deploy = find(&objs, "Deployment", flagger_ns, "grafana");
        let port = &svc.data["spec"]["ports"][0];
        assert_eq!(port["port"], 80);
        let container = &deploy.data["spec"]["template"]["spec"]["containers"][0];
        let target = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"] || p["containerPort"] == port["targetPort"])
            .expect("the Service's targetPort is a container port");
        assert_eq!(target["containerPort"], 3000);

        // The data source is the Prometheus Flagger and the MetricTemplates query.
        let prov = find(&objs, "ConfigMap", flagger_ns, "grafana-provisioning");
        let ds: Value =
            serde_saphyr::from_str(prov.data["data"]["datasources.yaml"].as_str().unwrap())
                .unwrap();
        let mt = find(&objs, "MetricTemplate", "gridos", "error-rate");
        assert_eq!(
            ds["datasources"][0]["url"],
            mt.data["spec"]["provider"]["address"]
        );
        assert_eq!(
            ds["datasources"][0]["url"],
            format!("http://flagger-prometheus.{flagger_ns}:9090")
        );
        assert_eq!(
            dashboard(&objs, flagger_ns)["title"],
            "Canary Deployment Dashboard"
        );
    }
}

#[test]
fn dashboard_panels_cover_the_analysis_with_only_namespace_and_canary_variables() {
    let objs = objects(&[]);
    let d = dashboard(&objs, "flagger-system");
    let panels = d["panels"].as_array().unwrap();
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap().to_lowercase();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: has queries");
        let legends: Vec<&str> = targets
            .iter()
            .map(|t| t["legendFormat"].as_str().unwrap_or(""))
            .collect();
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(!expr.is_empty(), "{title}");
            for var in variables(expr) {
                assert!(
                    var == "namespace" || var == "canary",
                    "{title}: ${var} in {expr}"
                );
            }
            assert!(
                expr.contains("$namespace") && expr.contains("$canary"),
                "{title}: filters on both: {expr}"
            );
            // The datasource the provisioned one is (by uid).
            assert_eq!(t["datasource"]["uid"], "flagger-prometheus");
        }
        if !title.contains("status") {
            assert_eq!(legends, ["canary", "primary"], "{title}: both versions");
        }
        titles.push(title);
    }
    for topic in ["weight", "success rate", "p99", "error rate", "status"] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "a panel for {topic}: {titles:?}"
        );
    }
    // The variables' defaults are ours, so the dashboard opens on the gridos canary.
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["namespace", "canary"]);
    assert_eq!(vars[0]["current"]["value"], "gridos");
    assert_eq!(vars[1]["current"]["value"], "gridos");
}

#[test]
fn grafana_runs_restricted_with_a_read_only_root_and_writable_emptydirs() {
    let objs = objects(&[]);
    let deploy = find(&objs, "Deployment", "flagger-system", "grafana");
    let spec = &deploy.data["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let image = c["image"].as_str().unwrap();
    assert!(
        image.starts_with("docker.io/grafana/grafana:") && image.contains("@sha256:"),
        "{image}"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let env = |name: &str| -> String {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{name} is set"))
            .to_string()
    };
    let empty_dirs: Vec<&str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["emptyDir"].is_object())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for path in [env("GF_PATHS_DATA"), env("GF_PATHS_LOGS"), "/tmp".into()] {
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} is mounted"));
        assert!(
            empty_dirs.contains(&mount["name"].as_str().unwrap()),
            "{path} is an emptyDir"
        );
    }
    // No secret, no sign-in: anonymous read-only viewers, and no downloads at start.
    assert_eq!(env("GF_AUTH_ANONYMOUS_ORG_ROLE"), "Viewer");
    assert_eq!(env("GF_AUTH_DISABLE_LOGIN_FORM"), "true");
    assert_eq!(env("GF_PLUGINS_PREINSTALL_DISABLED"), "true");
    assert_eq!(
        env("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"),
        "/etc/grafana/dashboards/canary.json"
    );
}

#[test]
fn grafana_off_renders_none_of_it() {
    let on = objects(&[]);
    let off = objects(&["grafana.enabled=false"]);
    let grafana = |objs: &[Object]| -> Vec<String> {
        objs.iter()
            .filter(|o| o.template == "grafana.yaml.hbs")
            .map(|o| o.id())
            .collect()
    };
    assert_eq!(
        grafana(&on),
        [
            "ServiceAccount/flagger-system/grafana",
            "ConfigMap/flagger-system/grafana-provisioning",
            "ConfigMap/flagger-system/grafana-dashboards",
            "Deployment/flagger-system/grafana",
            "Service/flagger-system/grafana",
        ]
    );
    assert!(grafana(&off).is_empty());
    assert_eq!(on.len() - off.len(), 5);
}

// ---- Cluster: the port-forward the guidance prints, run as a user pastes it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{client, cluster_lock, gridos_k, kubeconfig, ok, reset};

#[tokio::test]
async fn cluster_grafana_port_forward_from_the_guidance_finds_the_grafana_pod() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let text = ok(&gridos_k(&[
        "install",
        "--profile",
        "nginx",
        "--host",
        "app.example.com",
        "--yes",
        "-o",
        "json",
    ]));
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let step = summary["next_steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["title"]
                .as_str()
                .unwrap()
                .contains("Canary Deployment Dashboard")
        })
        .unwrap_or_else(|| panic!("a Grafana step: {summary}"));
    let cmd = step["commands"][0].as_str().unwrap();
    assert_eq!(
        cmd,
        "kubectl port-forward -n flagger-system svc/grafana 3000:80"
    );
    // As pasted into a shell (`exec`, so the child is kubectl itself). kubectl resolves the
    // Service, its port 80 to the pod's container port and a running pod, then asks the apiserver
    // to open the stream. Pods here are kwok's: no kubelet serves them, so the apiserver cannot
    // reach one (its dial fails inside the test network namespace, which has only loopback); the
    // names are what this proves, the browser part is not testable here.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .env("KUBECONFIG", kubeconfig())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the port-forward");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for wrong in [
        "not found",
        "does not have a service port",
        "unable to find",
        "no such",
    ] {
        assert!(!err.contains(wrong), "the names resolve: {err}");
    }
    // The apiserver dials the pod's node only once kubectl has named a pod and port.
    assert!(
        err.contains("error dialing backend"),
        "kubectl got as far as streaming to the Grafana pod: {err}"
    );
    reset(&c).await;
}
