//! `render --traffic gateway-api` offline: snapshots per front, what the layer leaves out and puts in, and its bad input.

use crate::render_cli::{documents, find, refused};
use crate::util::{gridos, stderr, stdout};

const HOST: &str = "app.example.com";

/// `render` of the profile with `--traffic gateway-api` and `extra`.
fn render(profile: &str, extra: &[&str]) -> String {
    let mut args = vec!["--traffic", "gateway-api"];
    args.extend_from_slice(extra);
    crate::render_cli::render(profile, &args)
}

#[test]
fn render_gateway_nginx_snapshot() {
    insta::assert_snapshot!("render_gateway_nginx", render("nginx", &[]));
}

#[test]
fn render_gateway_appgw_snapshot() {
    insta::assert_snapshot!("render_gateway_appgw", render("appgw", &[]));
}

#[test]
fn render_gateway_frontdoor_snapshot() {
    insta::assert_snapshot!("render_gateway_frontdoor", render("frontdoor", &[]));
}

#[test]
fn render_gateway_frontdoor_tls_snapshot() {
    insta::assert_snapshot!(
        "render_gateway_frontdoor_tls",
        render("frontdoor", &["--set", "gateway.tls.secretName=app-tls"])
    );
}

/// A public Gateway load balancer has no rule for Istio's status port 15021 (cloud-provider-azure
/// `port_15021_no_lb_rule`), while its listeners' probes still use it; an internal one keeps the
/// rule, since Application Gateway's backend probe goes to 15021 on the frontend.
#[test]
fn public_gateways_keep_the_status_port_off_the_load_balancer() {
    const NO_RULE: &str = "service.beta.kubernetes.io/port_15021_no_lb_rule";
    let private_link = ["--set", "frontDoor.privateLink=true"];
    let cases: [(&str, &[&str], bool); 4] = [
        ("nginx", &[], true),
        ("frontdoor", &[], true),
        ("appgw", &[], false),
        ("frontdoor", &private_link, false),
    ];
    for (profile, extra, public) in cases {
        let docs = documents(&render(profile, extra));
        let a = &find(&docs, "Gateway", "gridos")["spec"]["infrastructure"]["annotations"];
        let what = format!("{profile} {extra:?}");
        if public {
            assert_eq!(a[NO_RULE], "true", "{what}: {a}");
        } else {
            assert!(a.get(NO_RULE).is_none(), "{what}: {a}");
        }
        assert_eq!(
            a["service.beta.kubernetes.io/port_80_health-probe_port"], "15021",
            "{what}: the probe still uses the status port"
        );
    }
}

#[test]
fn the_flag_and_the_value_render_the_same() {
    let with_set = gridos(&[
        "render",
        "--profile",
        "appgw",
        "--host",
        HOST,
        "--set",
        "traffic.layer=gateway-api",
    ]);
    assert!(with_set.status.success(), "{}", stderr(&with_set));
    assert_eq!(stdout(&with_set), render("appgw", &[]));
    // --traffic wins over --set, like a later --set.
    let both = gridos(&[
        "render",
        "--profile",
        "appgw",
        "--host",
        HOST,
        "--set",
        "traffic.layer=gateway-api",
        "--traffic",
        "ingress-nginx",
    ]);
    let default = gridos(&["render", "--profile", "appgw", "--host", HOST]);
    assert_eq!(stdout(&both), stdout(&default));
}

#[test]
fn gateway_api_renders_no_ingress_nginx_object_and_no_gateway_api_crd() {
    for p in ["nginx", "appgw", "frontdoor"] {
        let docs = documents(&render(p, &["--set", "gateway.tls.secretName=app-tls"]));
        for d in &docs {
            let kind = d["kind"].as_str().unwrap();
            let name = d["metadata"]["name"].as_str().unwrap();
            let ns = d["metadata"]["namespace"].as_str().unwrap_or_default();
            assert!(
                ![
                    "Ingress",
                    "IngressClass",
                    "ValidatingWebhookConfiguration",
                    "HTTPRoute",
                    "GatewayClass",
                    "ServiceMonitor"
                ]
                .contains(&kind),
                "{p}: {kind}/{name} is not rendered with the Gateway API"
            );
            assert!(
                !name.contains("ingress-nginx") && ns != "ingress-nginx",
                "{p}: {kind}/{ns}/{name} belongs to ingress-nginx"
            );
            if kind == "CustomResourceDefinition" {
                assert!(
                    name.ends_with(".flagger.app"),
                    "{p}: only Flagger's CRDs, AKS manages the Gateway API's: {name}"
                );
            }
        }
    }
}

#[test]
fn the_gateway_admits_the_app_namespace_and_takes_the_fronts_load_balancer() {
    let docs = documents(&render("appgw", &[]));
    let gw = find(&docs, "Gateway", "gridos");
    assert_eq!(gw["metadata"]["namespace"], "gridos-gateway");
    assert_eq!(gw["spec"]["gatewayClassName"], "approuting-istio");
    let listeners = gw["spec"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 1, "HTTP only without a certificate");
    assert_eq!(listeners[0]["name"], "http");
    assert_eq!(listeners[0]["port"], 80);
    let ns = &listeners[0]["allowedRoutes"]["namespaces"];
    assert_eq!(ns["from"], "Selector");
    assert_eq!(
        ns["selector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "gridos"
    );
    let a = &gw["spec"]["infrastructure"]["annotations"];
    assert_eq!(
        a["service.beta.kubernetes.io/azure-load-balancer-internal"],
        "true"
    );
    assert_eq!(
        a["service.beta.kubernetes.io/port_80_health-probe_request-path"],
        "/healthz/ready"
    );
    assert_eq!(
        a["service.beta.kubernetes.io/port_80_health-probe_port"],
        "15021"
    );

    // Front Door: public, limited to Front Door's service tag; Private Link: internal + PLS.
    let docs = documents(&render("frontdoor", &[]));
    let a = &find(&docs, "Gateway", "gridos")["spec"]["infrastructure"]["annotations"];
    assert_eq!(
        a["service.beta.kubernetes.io/azure-allowed-service-tags"],
        "AzureFrontDoor.Backend"
    );
    assert!(
        a.get("service.beta.kubernetes.io/azure-load-balancer-internal")
            .is_none()
    );
    let docs = documents(&render(
        "frontdoor",
        &["--set", "frontDoor.privateLink=true"],
    ));
    let a = &find(&docs, "Gateway", "gridos")["spec"]["infrastructure"]["annotations"];
    assert_eq!(a["service.beta.kubernetes.io/azure-pls-create"], "true");
    assert_eq!(a["service.beta.kubernetes.io/azure-pls-name"], "gridos-pls");
    assert_eq!(
        a["service.beta.kubernetes.io/azure-load-balancer-internal"],
        "true"
    );

    // With a certificate: an HTTPS listener for the host on 443, probed like 80.
    let docs = documents(&render(
        "nginx",
        &["--set", "gateway.tls.secretName=app-tls"],
    ));
    let gw = find(&docs, "Gateway", "gridos");
    let https = &gw["spec"]["listeners"][1];
    assert_eq!(https["name"], "https");
    assert_eq!(https["port"], 443);
    assert_eq!(https["hostname"], HOST);
    assert_eq!(https["tls"]["certificateRefs"][0]["name"], "app-tls");
    assert_eq!(
        gw["spec"]["infrastructure"]["annotations"]["service.beta.kubernetes.io/port_443_health-probe_port"],
        "15021"
    );
}

#[test]
fn flagger_prometheus_load_tester_and_canary_follow_the_gateway() {
    let docs = documents(&render("nginx", &[]));
    let flagger = find(&docs, "Deployment", "flagger");
    let args = flagger["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    assert!(args.iter().any(|a| a == "-mesh-provider=gatewayapi:v1"));
    assert!(!args.iter().any(|a| a == "-mesh-provider=nginx"));

    let role = find(&docs, "ClusterRole", "flagger");
    let rules = role["rules"].as_array().unwrap();
    let gw_rules: Vec<_> = rules
        .iter()
        .filter(|r| r["apiGroups"][0] == "gateway.networking.k8s.io")
        .collect();
    assert!(gw_rules.iter().any(|r| r["resources"][0] == "httproutes"
        && r["verbs"].as_array().unwrap().iter().any(|v| v == "update")));
    assert!(gw_rules.iter().any(|r| {
        r["resources"][0] == "gateways"
            && r["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v != "create" && v != "delete")
    }));
    assert!(
        !rules
            .iter()
            .any(|r| r["apiGroups"][0] == "networking.k8s.io"),
        "no Ingress rights under gatewayapi:v1"
    );

    // Prometheus: a Role in the gateway namespace and the gateway-pods job, no controller job.
    let r = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "gridos-gateway")
        .expect("a Role for Prometheus in gridos-gateway");
    assert_eq!(r["metadata"]["name"], "flagger-prometheus");
    let cfg = find(&docs, "ConfigMap", "flagger-prometheus")["data"]["prometheus.yml"]
        .as_str()
        .unwrap();
    assert!(cfg.contains("job_name: gateway-pods"), "{cfg}");
    assert!(!cfg.contains("job_name: kubernetes-pods"), "{cfg}");
    assert!(cfg.contains("gateway.networking.k8s.io/gateway-name=gridos"));

    let canary = find(&docs, "Canary", "gridos");
    let spec = &canary["spec"];
    assert_eq!(spec["provider"], "gatewayapi:v1");
    assert!(spec.get("ingressRef").is_none());
    assert_eq!(
        spec["service"]["gatewayRefs"],
        serde_json::json!([{"name": "gridos", "namespace": "gridos-gateway"}])
    );
    assert_eq!(spec["service"]["hosts"], serde_json::json!([HOST]));
    let metrics: Vec<&str> = spec["analysis"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["templateRef"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        metrics,
        [
            "istio-success-rate",
            "istio-latency-p99",
            "istio-error-rate"
        ]
    );
    for m in &metrics {
        let t = find(&docs, "MetricTemplate", m);
        let q = t["spec"]["query"].as_str().unwrap();
        assert!(q.contains("reporter=\"source\""), "{m}: {q}");
        assert!(
            q.contains(
                "destination_service=~\"{{ target }}-canary.{{ namespace }}.svc.cluster.local\""
            ),
            "{m}: {q}"
        );
        assert!(!q.contains("destination_workload"), "{m}: {q}");
    }
    let load = spec["analysis"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "load-test")
        .unwrap();
    assert_eq!(
        load["metadata"]["cmd"],
        format!(
            "hey -z 45s -q 10 -c 2 -host {HOST} http://gridos-approuting-istio.gridos-gateway/"
        )
    );
}

#[test]
fn the_gateway_namespace_enforces_baseline_and_warns_at_restricted() {
    let docs = documents(&render("nginx", &[]));
    let ns = find(&docs, "Namespace", "gridos-gateway");
    let l = &ns["metadata"]["labels"];
    assert_eq!(l["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(l["pod-security.kubernetes.io/warn"], "restricted");
    assert_eq!(l["pod-security.kubernetes.io/audit"], "restricted");
}

fn render_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["render", "--profile", "appgw", "--host", HOST];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_input_traffic_layer_unknown() {
    refused(
        &render_args(&["--traffic", "bogus"]),
        &["--traffic", "bogus", "ingress-nginx", "gateway-api"],
    );
    refused(
        &render_args(&["--set", "traffic.layer=istio"]),
        &["traffic.layer", "ingress-nginx", "gateway-api"],
    );
}

#[test]
fn bad_input_gateway_tls_secret_name() {
    refused(
        &render_args(&[
            "--traffic",
            "gateway-api",
            "--set",
            "gateway.tls.secretName=App_TLS",
        ]),
        &[
            "gateway.tls.secretName",
            "not a Secret name",
            "kubernetes.io/tls",
        ],
    );
}

#[test]
fn bad_input_gateway_values_on_ingress_nginx() {
    refused(
        &render_args(&["--set", "gateway.tls.secretName=app-tls"]),
        &["gateway", "--traffic gateway-api"],
    );
}

#[test]
fn bad_input_ingress_controller_values_on_gateway_api() {
    for set in [
        "ingressController.replicas=3",
        "ingressController.resources.limits.cpu=2",
        "ingressController.realClientIp.trustedCidrs=[10.1.0.0/24]",
    ] {
        let path = set.split('=').next().unwrap();
        let prefix = path.rsplitn(2, '.').last().unwrap();
        let shown = if prefix.ends_with("limits") {
            "ingressController.resources"
        } else if prefix.ends_with("realClientIp") {
            "ingressController.realClientIp"
        } else {
            path
        };
        refused(
            &render_args(&["--traffic", "gateway-api", "--set", set]),
            &[shown, "AKS runs", "--traffic ingress-nginx"],
        );
    }
}

#[test]
fn bad_input_gateway_names() {
    refused(
        &render_args(&[
            "--traffic",
            "gateway-api",
            "--set",
            "namespaces.gateway=gridos",
        ]),
        &["namespaces.gateway", "namespace of its own"],
    );
    refused(
        &render_args(&[
            "--traffic",
            "gateway-api",
            "--set",
            "gateway.name=a-very-long-gateway-name-that-does-not-fit-at-all",
        ]),
        &["gateway.name", "-approuting-istio", "46"],
    );
}

#[test]
fn bad_input_front_door_https_origin_without_a_certificate() {
    refused(
        &[
            "render",
            "--profile",
            "frontdoor",
            "--host",
            HOST,
            "--traffic",
            "gateway-api",
            "--set",
            "frontDoor.originProtocol=https",
        ],
        &["frontDoor.originProtocol", "gateway.tls.secretName"],
    );
}

/// The README's Gateway API commands: the `az` commands are the ones the preflight names, and
/// every gridos-setup command's flags and values are accepted (its install and check as `render`,
/// which needs no cluster; the cluster tests run them for real).
#[test]
fn readme_gateway_commands_are_the_products() {
    use gridos_setup::gateway::{FIX_ENABLE, FIX_MESH};
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("### Gateway API instead of ingress-nginx")
        .expect("the Gateway API section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    assert!(section.contains(&format!("`{FIX_MESH}`")), "the mesh fix");
    let mut gridos_lines = 0;
    // The enablement is one call, before the first gridos-setup command (Learn, "managed Gateway
    // API": the implementing add-on before or together with `--enable-gateway-api`).
    let az: Vec<&str> = block.lines().filter(|l| l.starts_with("az ")).collect();
    assert_eq!(az, [FIX_ENABLE], "one az call enables both");
    assert!(block.starts_with(FIX_ENABLE), "{block}");
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("az ") {
            continue;
        }
        let words = shlex::split(line).unwrap();
        assert_eq!(words[0], "gridos-setup", "{line}");
        let mut args: Vec<&str> = vec!["render"];
        args.extend(
            words[1..]
                .iter()
                .map(String::as_str)
                .filter(|w| !["install", "check", "--pre", "--yes"].contains(w)),
        );
        if !args.contains(&"--host") {
            args.extend(["--host", HOST]);
        }
        let out = gridos(&args);
        assert!(out.status.success(), "{line}: {}", stderr(&out));
        gridos_lines += 1;
    }
    assert_eq!(gridos_lines, 2);
}
