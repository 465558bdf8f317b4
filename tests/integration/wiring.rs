//! What kwok cannot show: the names in the manifests line up (design section 8). Pods never really
//! run on the test control plane, so a Service that selects nothing, a probe on an undeclared port
//! or a Flagger flag pointing nowhere would pass every cluster test; these checks catch them offline,
//! and `cluster_service_accounts_have_what_their_components_need` checks RBAC with SubjectAccessReview.

use gridos_setup::profile::{ProfileSource, ValuesRequest, resolve};
use gridos_setup::render::{Object, RenderInputs, render};
use serde_json::Value;

fn objects(profile: &str) -> Vec<Object> {
    objects_with(profile, &[])
}

fn objects_with(profile: &str, sets: &[&str]) -> Vec<Object> {
    let req = ValuesRequest {
        profile: Some(ProfileSource::Builtin(profile.into())),
        host: Some("app.example.com".into()),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let v = resolve(&req).unwrap();
    render(&v, &RenderInputs::offline(&v)).unwrap()
}

fn find<'a>(objs: &'a [Object], kind: &str, ns: Option<&str>, name: &str) -> &'a Object {
    objs.iter()
        .find(|o| o.kind() == kind && o.name() == name && (ns.is_none() || o.namespace() == ns))
        .unwrap_or_else(|| panic!("{kind} {ns:?}/{name} is rendered"))
}

fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

fn containers(d: &Object) -> Vec<Value> {
    d.data["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The container port a Service port or probe names, by number or by name.
fn has_port(d: &Object, port: &Value) -> bool {
    containers(d).iter().any(|c| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| match port {
                Value::String(name) => p["name"] == *name,
                Value::Number(n) => p["containerPort"].as_u64() == n.as_u64(),
                _ => false,
            })
    })
}

#[test]
fn every_service_selects_one_deployment_and_targets_declared_ports() {
    for profile in ["nginx", "appgw", "frontdoor"] {
        let objs = objects(profile);
        for svc in objs.iter().filter(|o| o.kind() == "Service") {
            let selector = &svc.data["spec"]["selector"];
            let backends: Vec<&Object> = objs
                .iter()
                .filter(|o| o.kind() == "Deployment" && o.namespace() == svc.namespace())
                .filter(|d| matches(selector, &d.data["spec"]["template"]["metadata"]["labels"]))
                .collect();
            assert_eq!(
                backends.len(),
                1,
                "{profile}: {} selects exactly one Deployment",
                svc.id()
            );
            for p in svc.data["spec"]["ports"].as_array().unwrap() {
                let target = if p["targetPort"].is_null() {
                    &p["port"]
                } else {
                    &p["targetPort"]
                };
                assert!(
                    has_port(backends[0], target),
                    "{profile}: {} port {target} is declared by {}",
                    svc.id(),
                    backends[0].id()
                );
            }
        }
    }
}

#[test]
fn probes_hit_declared_ports() {
    for d in objects("nginx").iter().filter(|o| o.kind() == "Deployment") {
        for c in containers(d) {
            for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
                let p = &c[probe]["httpGet"]["port"];
                if !p.is_null() {
                    assert!(has_port(d, p), "{} {probe} port {p}", d.id());
                }
            }
        }
    }
}

#[test]
fn flagger_metrics_server_and_metric_templates_point_at_the_prometheus_service() {
    let objs = objects("nginx");
    let flagger = find(&objs, "Deployment", Some("flagger-system"), "flagger");
    let args: Vec<String> = containers(flagger)[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let server = args
        .iter()
        .find_map(|a| a.strip_prefix("-metrics-server="))
        .expect("-metrics-server flag");
    assert!(args.iter().any(|a| a == "-mesh-provider=nginx"), "{args:?}");
    // Same namespace as Flagger, so the short name resolves.
    let svc = find(
        &objs,
        "Service",
        Some("flagger-system"),
        "flagger-prometheus",
    );
    let port = svc.data["spec"]["ports"][0]["port"].as_u64().unwrap();
    assert_eq!(server, format!("http://flagger-prometheus:{port}"));
    for mt in objs.iter().filter(|o| o.kind() == "MetricTemplate") {
        assert_eq!(
            mt.data["spec"]["provider"]["address"],
            format!("http://flagger-prometheus.flagger-system:{port}"),
            "{}",
            mt.id()
        );
    }
}

#[test]
fn service_monitor_selects_the_metrics_service_and_its_port() {
    let objs = objects("nginx");
    let sm = find(
        &objs,
        "ServiceMonitor",
        Some("ingress-nginx"),
        "ingress-nginx-controller",
    );
    assert_eq!(sm.data["spec"]["endpoints"][0]["honorLabels"], true);
    let selected: Vec<&Object> = objs
        .iter()
        .filter(|o| o.kind() == "Service" && o.namespace() == Some("ingress-nginx"))
        .filter(|s| {
            matches(
                &sm.data["spec"]["selector"]["matchLabels"],
                &s.data["metadata"]["labels"],
            )
        })
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "only the metrics Service: {:?}",
        selected.iter().map(|s| s.id()).collect::<Vec<_>>()
    );
    let port = &sm.data["spec"]["endpoints"][0]["port"];
    assert!(
        selected[0].data["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == *port),
        "port {port}"
    );
    let controller = find(
        &objs,
        "Deployment",
        Some("ingress-nginx"),
        "ingress-nginx-controller",
    );
    let args = containers(controller)[0]["args"].to_string();
    assert!(args.contains("--enable-metrics=true"), "{args}");
    assert!(has_port(controller, &Value::String("metrics".into())));
    assert_eq!(
        find(
            &objs,
            "Deployment",
            Some("ingress-nginx"),
            "ingress-nginx-controller"
        )
        .data["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
}

#[test]
fn admission_webhook_reaches_the_controller_webhook_port_with_the_mounted_certificate() {
    let objs = objects("nginx");
    let vwc = find(
        &objs,
        "ValidatingWebhookConfiguration",
        None,
        "ingress-nginx-admission",
    );
    let cc = &vwc.data["webhooks"][0]["clientConfig"]["service"];
    let svc = find(
        &objs,
        "Service",
        cc["namespace"].as_str(),
        cc["name"].as_str().unwrap(),
    );
    let port = svc.data["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["port"] == cc["port"])
        .expect("the webhook's port");
    let controller = find(
        &objs,
        "Deployment",
        Some("ingress-nginx"),
        "ingress-nginx-controller",
    );
    assert!(has_port(controller, &port["targetPort"]));
    let args = containers(controller)[0]["args"].to_string();
    assert!(args.contains("--validating-webhook=:8443"), "{args}");
    let volumes = controller.data["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains("ingress-nginx-admission"),
        "the Secret is mounted: {volumes}"
    );
    assert!(
        args.contains("--ingress-class=nginx")
            && args.contains("--controller-class=k8s.io/ingress-nginx")
    );
    let class = find(&objs, "IngressClass", None, "nginx");
    assert_eq!(class.data["spec"]["controller"], "k8s.io/ingress-nginx");
    assert!(
        args.contains("--publish-service=$(POD_NAMESPACE)/ingress-nginx-controller"),
        "{args}"
    );
}

#[test]
fn canary_webhooks_reach_the_load_tester_and_its_target_is_the_app() {
    let objs = objects("nginx");
    let canary = find(&objs, "Canary", Some("gridos"), "gridos");
    let lt = find(&objs, "Service", Some("gridos"), "flagger-loadtester");
    let lt_port = lt.data["spec"]["ports"][0]["port"].as_u64().unwrap();
    for hook in canary.data["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap()
    {
        let url = hook["url"].as_str().unwrap();
        let expected = if lt_port == 80 {
            "http://flagger-loadtester.gridos/".to_string()
        } else {
            format!("http://flagger-loadtester.gridos:{lt_port}/")
        };
        assert_eq!(url, expected, "{}", hook["name"]);
    }
    assert_eq!(canary.data["spec"]["targetRef"]["name"], "gridos");
    assert_eq!(canary.data["spec"]["ingressRef"]["name"], "gridos");
    let load = canary.data["spec"]["analysis"]["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["type"] == "rollout")
        .unwrap();
    let cmd = load["metadata"]["cmd"].as_str().unwrap();
    assert!(
        cmd.contains("-host app.example.com")
            && cmd.contains("ingress-nginx-controller.ingress-nginx"),
        "{cmd}"
    );
    assert_eq!(
        canary.data["spec"]["analysis"]["stepWeights"],
        serde_json::json!([10, 25, 50])
    );
}

#[test]
fn load_tester_serves_only_the_app_namespace_and_admits_only_flagger() {
    for app in ["gridos", "shop"] {
        let objs = objects_with("nginx", &[&format!("namespaces.app={app}")]);
        let lt = find(&objs, "Deployment", Some(app), "flagger-loadtester");
        let command: Vec<String> = containers(lt)[0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        // upstream cmd/loadtester: -namespace-regexp refuses canaries of other namespaces
        let want = format!("-namespace-regexp=^{app}$");
        assert!(command.contains(&want), "{command:?}");
        let template = &lt.data["spec"]["template"];
        assert!(
            template["metadata"]["annotations"]["prometheus.io/scrape"].is_null(),
            "nothing but Flagger reaches the load tester, Prometheus neither"
        );

        let np = find(&objs, "NetworkPolicy", Some(app), "flagger-loadtester");
        let spec = &np.data["spec"];
        assert!(matches(
            &spec["podSelector"]["matchLabels"],
            &template["metadata"]["labels"]
        ));
        assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
        let rules = spec["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "one rule: {rules:?}");
        let peers = rules[0]["from"].as_array().unwrap();
        assert_eq!(peers.len(), 1, "one peer: {peers:?}");
        let flagger = find(&objs, "Deployment", Some("flagger-system"), "flagger");
        assert_eq!(
            peers[0]["namespaceSelector"]["matchLabels"],
            serde_json::json!({"kubernetes.io/metadata.name": "flagger-system"})
        );
        assert!(matches(
            &peers[0]["podSelector"]["matchLabels"],
            &flagger.data["spec"]["template"]["metadata"]["labels"]
        ));
        // and no other Deployment's pods in Flagger's namespace (Prometheus, Grafana)
        for other in objs.iter().filter(|o| {
            o.kind() == "Deployment"
                && o.namespace() == Some("flagger-system")
                && o.name() != "flagger"
        }) {
            assert!(
                !matches(
                    &peers[0]["podSelector"]["matchLabels"],
                    &other.data["spec"]["template"]["metadata"]["labels"]
                ),
                "{} is not admitted",
                other.id()
            );
        }
        for p in rules[0]["ports"].as_array().unwrap() {
            assert!(has_port(lt, &p["port"]), "port {}", p["port"]);
        }
    }
}

/// Go duration text (`45s`, `7500ms`, `1m30s`) in milliseconds.
fn millis(text: &str) -> u128 {
    gridos_setup::profile::go_duration(text)
        .unwrap_or_else(|| panic!("{text:?} is a duration"))
        .as_millis()
}

#[test]
fn load_test_ends_before_the_next_analysis_interval() {
    // The load tester skips a command while the same one still runs: a `hey -z` as long as the
    // interval collides with the next webhook call and leaves every other window without traffic.
    for interval in ["1m", "1m30s", "30s", "10s", "5s"] {
        let objs = objects_with("nginx", &[&format!("canary.interval={interval}")]);
        let canary = find(&objs, "Canary", Some("gridos"), "gridos");
        assert_eq!(canary.data["spec"]["analysis"]["interval"], interval);
        let load = canary.data["spec"]["analysis"]["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["type"] == "rollout")
            .unwrap();
        let cmd = load["metadata"]["cmd"].as_str().unwrap();
        let z = cmd
            .split_whitespace()
            .skip_while(|w| *w != "-z")
            .nth(1)
            .unwrap_or_else(|| panic!("hey -z in {cmd}"));
        let (run, window) = (millis(z), millis(interval));
        assert!(
            run + 1000 <= window && run * 4 >= window * 3 - 1,
            "{interval}: hey -z {z} must end at least 1s and at most a quarter before the next call"
        );
    }
}

/// (verb, group, resource, subresource, namespace, name) a service account must (or must not) be allowed.
type Check = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

async fn allowed(
    c: &kube::Client,
    sa: &str,
    (verb, group, resource, sub, ns, name): Check,
) -> bool {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {
            "user": format!("system:serviceaccount:{sa}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", sa.split(':').next().unwrap())],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": sub, "namespace": ns, "name": name}
        }
    }))
    .unwrap();
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(c.clone());
    let answer = api
        .create(&Default::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn cluster_service_accounts_have_what_their_components_need() {
    let _lock = crate::util::cluster_lock().await;
    let c = crate::util::client().await;
    crate::util::reset(&c).await;
    let out = crate::util::gridos_k(&[
        "install",
        "--profile",
        "nginx",
        "--host",
        "app.example.com",
        "--yes",
        "--no-wait",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    // From the components' own RBAC and code (ingress-nginx 1.15 controller role and cluster role,
    // Flagger's kustomize base, Prometheus' Kubernetes pod discovery): what each one calls.
    let needs: &[(&str, &[Check])] = &[
        (
            "ingress-nginx:ingress-nginx",
            &[
                (
                    "list",
                    "networking.k8s.io",
                    "ingresses",
                    "",
                    "other-app",
                    "",
                ),
                ("watch", "networking.k8s.io", "ingresses", "", "", ""),
                (
                    "update",
                    "networking.k8s.io",
                    "ingresses",
                    "status",
                    "other-app",
                    "web",
                ),
                ("list", "networking.k8s.io", "ingressclasses", "", "", ""),
                (
                    "list",
                    "discovery.k8s.io",
                    "endpointslices",
                    "",
                    "other-app",
                    "",
                ),
                ("watch", "", "services", "", "", ""),
                ("list", "", "secrets", "", "other-app", ""),
                ("watch", "", "configmaps", "", "", ""),
                (
                    "get",
                    "",
                    "nodes",
                    "",
                    "",
                    "aks-nodepool1-12345678-vmss000000",
                ),
                ("list", "", "pods", "", "ingress-nginx", ""),
                ("create", "", "events", "", "other-app", ""),
                ("patch", "", "events", "", "ingress-nginx", ""),
                (
                    "get",
                    "coordination.k8s.io",
                    "leases",
                    "",
                    "ingress-nginx",
                    "ingress-nginx-leader",
                ),
                (
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "",
                    "ingress-nginx",
                    "ingress-nginx-leader",
                ),
                (
                    "create",
                    "coordination.k8s.io",
                    "leases",
                    "",
                    "ingress-nginx",
                    "",
                ),
            ],
        ),
        (
            "flagger-system:flagger",
            &[
                ("watch", "flagger.app", "canaries", "", "", ""),
                (
                    "update",
                    "flagger.app",
                    "canaries",
                    "status",
                    "gridos",
                    "gridos",
                ),
                (
                    "update",
                    "flagger.app",
                    "canaries",
                    "finalizers",
                    "gridos",
                    "gridos",
                ),
                (
                    "get",
                    "flagger.app",
                    "metrictemplates",
                    "",
                    "gridos",
                    "latency-p99",
                ),
                ("get", "flagger.app", "alertproviders", "", "gridos", "x"),
                ("create", "apps", "deployments", "", "gridos", ""),
                (
                    "update",
                    "apps",
                    "deployments",
                    "",
                    "gridos",
                    "gridos-primary",
                ),
                ("patch", "apps", "deployments", "", "gridos", "gridos"),
                ("create", "", "services", "", "gridos", ""),
                ("update", "", "services", "", "gridos", "gridos"),
                ("create", "", "configmaps", "", "gridos", ""),
                ("create", "", "secrets", "", "gridos", ""),
                ("create", "networking.k8s.io", "ingresses", "", "gridos", ""),
                (
                    "update",
                    "networking.k8s.io",
                    "ingresses",
                    "",
                    "gridos",
                    "gridos-canary",
                ),
                (
                    "delete",
                    "networking.k8s.io",
                    "ingresses",
                    "",
                    "gridos",
                    "gridos-canary",
                ),
                (
                    "update",
                    "autoscaling",
                    "horizontalpodautoscalers",
                    "",
                    "gridos",
                    "gridos-primary",
                ),
                ("create", "", "events", "", "gridos", ""),
                // the revertOnDeletion finalizer is an update of the Canary itself
                ("update", "flagger.app", "canaries", "", "gridos", "gridos"),
                // autoscalerRef kind ScaledObject: the -primary ScaledObject
                ("create", "keda.sh", "scaledobjects", "", "gridos", ""),
                (
                    "update",
                    "keda.sh",
                    "scaledobjects",
                    "",
                    "gridos",
                    "gridos-primary",
                ),
                // MetricTemplate type keptn
                (
                    "get",
                    "metrics.keptn.sh",
                    "keptnmetrics",
                    "",
                    "gridos",
                    "latency",
                ),
                ("create", "metrics.keptn.sh", "analyses", "", "gridos", ""),
                (
                    "delete",
                    "metrics.keptn.sh",
                    "analyses",
                    "",
                    "gridos",
                    "latency-1a2b3c",
                ),
                // MetricTemplate type externalmetrics (and its start-up check in kube-system)
                (
                    "list",
                    "external.metrics.k8s.io",
                    "requests",
                    "",
                    "gridos",
                    "",
                ),
                (
                    "list",
                    "external.metrics.k8s.io",
                    "dummy-metric",
                    "",
                    "kube-system",
                    "",
                ),
            ],
        ),
        (
            "flagger-system:flagger-prometheus",
            &[
                ("list", "", "pods", "", "", ""),
                ("watch", "", "pods", "", "", ""),
            ],
        ),
    ];
    for (sa, checks) in needs {
        for check in *checks {
            assert!(allowed(&c, sa, *check).await, "{sa} may {check:?}");
        }
    }
    // And not more than that, where it matters most.
    let must_not: &[(&str, Check)] = &[
        (
            "ingress-nginx:ingress-nginx",
            ("delete", "", "secrets", "", "other-app", "x"),
        ),
        (
            "ingress-nginx:ingress-nginx",
            (
                "update",
                "coordination.k8s.io",
                "leases",
                "",
                "ingress-nginx",
                "someone-elses",
            ),
        ),
        (
            "flagger-system:flagger",
            ("create", "", "pods", "", "gridos", ""),
        ),
        (
            "flagger-system:flagger",
            (
                "create",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                "",
            ),
        ),
        (
            "flagger-system:flagger-prometheus",
            ("list", "", "secrets", "", "", ""),
        ),
        // No provider uses Gateway API gateways; mesh kinds are not ours to write.
        (
            "flagger-system:flagger",
            (
                "create",
                "gateway.networking.k8s.io",
                "gateways",
                "",
                "gridos",
                "",
            ),
        ),
        (
            "flagger-system:flagger",
            (
                "delete",
                "gateway.networking.k8s.io",
                "gateways",
                "",
                "gridos",
                "web",
            ),
        ),
        (
            "flagger-system:flagger",
            (
                "create",
                "networking.istio.io",
                "virtualservices",
                "",
                "gridos",
                "",
            ),
        ),
        // Flagger reads MetricTemplates and AlertProviders and never creates or deletes a Canary.
        (
            "flagger-system:flagger",
            (
                "update",
                "flagger.app",
                "metrictemplates",
                "",
                "gridos",
                "latency-p99",
            ),
        ),
        (
            "flagger-system:flagger",
            ("delete", "flagger.app", "canaries", "", "gridos", "gridos"),
        ),
        (
            "gridos:default",
            ("list", "flagger.app", "canaries", "", "gridos", ""),
        ),
    ];
    for (sa, check) in must_not {
        assert!(!allowed(&c, sa, *check).await, "{sa} may not {check:?}");
    }
}
