//! Flagger's CRDs against the real apiserver: what upstream Flagger 1.44.0's schema rejects is
//! rejected, what it documents as valid (and what we render) is accepted. Each object goes through
//! a server-side apply dry run with strict field validation, as `kubectl apply` sends it.

use gridos_setup::apply::Resolver;
use gridos_setup::render::{Object, Wave};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::render_cluster::{apply_waves, rendered};
use crate::util::{client, cluster_lock, reset};

async fn dry_apply(c: &Client, resolver: &Resolver, data: &Value) -> Result<(), String> {
    let obj = Object {
        template: "test".into(),
        data: data.clone(),
    };
    let (ar, _) = resolver.resolve(&obj).map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "gridos", &ar);
    let pp = PatchParams::apply("crd-test").dry_run().validation_strict();
    api.patch(obj.name(), &pp, &Patch::Apply(data))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn find(objs: &[Object], kind: &str, name: &str) -> Value {
    objs.iter()
        .find(|o| o.kind() == kind && o.name() == name)
        .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
        .data
        .clone()
}

/// The rendered object with a change applied by `edit`, renamed so each case is its own object.
fn variant(base: &Value, name: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = base.clone();
    v["metadata"] = json!({"name": name, "namespace": "gridos"});
    edit(&mut v);
    v
}

fn metric_template(name: &str, provider: Value, query: &str) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": name, "namespace": "gridos"},
        "spec": {"provider": provider, "query": query},
    })
}

fn alert_provider(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider",
        "metadata": {"name": name, "namespace": "gridos"},
        "spec": spec,
    })
}

#[tokio::test]
async fn cluster_crds_reject_what_upstream_rejects_and_accept_documented_objects() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let objects = rendered(
        "nginx",
        &[
            "alerting.provider=slack",
            "alerting.secretName=hook",
            "alerting.channel=ops",
        ],
    );
    let foundation: Vec<Object> = objects
        .iter()
        .filter(|o| o.wave() == Wave::Foundation)
        .cloned()
        .collect();
    apply_waves(&c, &foundation, false).await;
    let resolver = Resolver::new(&c).await.unwrap();
    let canary = find(&objects, "Canary", "gridos");
    let template = find(&objects, "MetricTemplate", "latency-p99");

    // Each must fail, and the message must name what is wrong.
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "provider typo",
            variant(&canary, "bad-provider", |v| {
                v["spec"]["provider"] = json!("ngnix")
            }),
            "ngnix",
        ),
        (
            "targetRef kind typo",
            variant(&canary, "bad-kind", |v| {
                v["spec"]["targetRef"]["kind"] = json!("Deploymnet")
            }),
            "Deploymnet",
        ),
        (
            "webhook type typo",
            variant(&canary, "bad-hook", |v| {
                v["spec"]["analysis"]["webhooks"][0]["type"] = json!("pre-rolout")
            }),
            "pre-rolout",
        ),
        (
            "confirm-promotion misspelt",
            variant(&canary, "bad-gate", |v| {
                v["spec"]["analysis"]["webhooks"][0]["type"] = json!("confirm-promotions")
            }),
            "confirm-promotions",
        ),
        (
            "thresholdRange misspelt",
            variant(&canary, "bad-range", |v| {
                let m = v["spec"]["analysis"]["metrics"][0].as_object_mut().unwrap();
                let range = m.remove("thresholdRange").unwrap();
                m.insert("tresholdRange".into(), range);
            }),
            "tresholdRange",
        ),
        (
            "iterations with stepWeight",
            variant(&canary, "bad-strategy", |v| {
                let a = v["spec"]["analysis"].as_object_mut().unwrap();
                a.remove("stepWeights");
                a.insert("stepWeight".into(), json!(10));
                a.insert("iterations".into(), json!(10));
            }),
            "oneOf",
        ),
        (
            "no analysis",
            variant(&canary, "bad-no-analysis", |v| {
                v["spec"].as_object_mut().unwrap().remove("analysis");
            }),
            "spec.analysis",
        ),
        (
            "analysis without threshold",
            variant(&canary, "bad-no-threshold", |v| {
                v["spec"]["analysis"]
                    .as_object_mut()
                    .unwrap()
                    .remove("threshold");
            }),
            "oneOf",
        ),
        (
            "interval in hours",
            variant(&canary, "bad-interval", |v| {
                v["spec"]["analysis"]["interval"] = json!("1h")
            }),
            "spec.analysis.interval",
        ),
        (
            "targetRef without apiVersion",
            variant(&canary, "bad-ref", |v| {
                v["spec"]["targetRef"]
                    .as_object_mut()
                    .unwrap()
                    .remove("apiVersion");
            }),
            "apiVersion",
        ),
        (
            "alert severity",
            variant(&canary, "bad-severity", |v| {
                v["spec"]["analysis"]["alerts"][0]["severity"] = json!("warning")
            }),
            "warning",
        ),
        (
            "unknown spec field",
            variant(&canary, "bad-field", |v| v["spec"]["analysys"] = json!({})),
            "analysys",
        ),
        (
            "MetricTemplate type prom",
            variant(&template, "bad-prom", |v| {
                v["spec"]["provider"]["type"] = json!("prom")
            }),
            "prom",
        ),
        (
            "MetricTemplate without query",
            variant(&template, "bad-query", |v| {
                v["spec"].as_object_mut().unwrap().remove("query");
            }),
            "spec.query",
        ),
        (
            "AlertProvider type teams",
            alert_provider(
                "bad-teams",
                json!({"type": "teams", "address": "https://example.com/hook"}),
            ),
            "teams",
        ),
        (
            "AlertProvider with address and secretRef",
            alert_provider(
                "bad-both",
                json!({"type": "slack", "address": "https://example.com/hook", "secretRef": {"name": "hook"}}),
            ),
            "oneOf",
        ),
    ];
    let mut wrong = Vec::new();
    for (case, data, needle) in &bad {
        match dry_apply(&c, &resolver, data).await {
            Ok(()) => wrong.push(format!("{case}: accepted")),
            Err(e) if !e.contains(needle) => {
                wrong.push(format!("{case}: rejected without naming {needle:?}: {e}"))
            }
            Err(_) => {}
        }
    }

    // What we render, and objects as upstream's docs write them (nginx canary, A/B testing,
    // blue/green with a KEDA ScaledObject, metric templates of each type we grant RBAC for, alert
    // providers with an inline address or a Secret).
    let mut good: Vec<(&str, Value)> = objects
        .iter()
        .filter(|o| o.api_version() == "flagger.app/v1beta1")
        .map(|o| ("rendered", o.data.clone()))
        .collect();
    good.extend([
        (
            "nginx tutorial canary",
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": "podinfo", "namespace": "gridos"},
                "spec": {
                    "provider": "nginx",
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                    "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
                    "progressDeadlineSeconds": 60,
                    "service": {"port": 80, "targetPort": 9898},
                    "analysis": {
                        "interval": "10s", "threshold": 10, "maxWeight": 50, "stepWeight": 5,
                        "metrics": [
                            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                        ],
                        "webhooks": [
                            {"name": "acceptance-test", "type": "pre-rollout", "url": "http://flagger-loadtester.test/", "timeout": "30s",
                             "metadata": {"type": "bash", "cmd": "curl -sd 'test' http://podinfo-canary/token | grep token"}},
                            {"name": "load-test", "url": "http://flagger-loadtester.test/", "timeout": "5s",
                             "metadata": {"cmd": "hey -z 1m -q 10 -c 2 http://app.example.com/"}},
                        ],
                    },
                },
            }),
        ),
        (
            "nginx A/B testing",
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": "ab", "namespace": "gridos"},
                "spec": {
                    "provider": "nginx",
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                    "service": {"port": 80, "targetPort": "http"},
                    "analysis": {
                        "interval": "1m", "threshold": 10, "iterations": 10,
                        "match": [
                            {"headers": {"x-canary": {"exact": "insider"}}},
                            {"headers": {"cookie": {"exact": "canary"}}},
                        ],
                        "webhooks": [
                            {"name": "gate", "type": "confirm-promotion", "url": "http://flagger-loadtester.test/gate/check"},
                        ],
                    },
                },
            }),
        ),
        (
            "blue/green with a KEDA ScaledObject",
            json!({
                "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
                "metadata": {"name": "bg", "namespace": "gridos"},
                "spec": {
                    "provider": "kubernetes",
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                    "autoscalerRef": {
                        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "podinfo-so",
                        "primaryScalerQueries": {"prom-trigger": "sum(rate(http_requests_total{app=\"podinfo-primary\"}[2m]))"},
                    },
                    "service": {"port": 80, "portDiscovery": true},
                    "analysis": {
                        "interval": "15s", "threshold": 5, "iterations": 5,
                        "sessionAffinity": {"cookieName": "flagger-cookie"},
                        "alerts": [{"name": "on-call", "severity": "error", "providerRef": {"name": "on-call"}}],
                    },
                },
            }),
        ),
        (
            "keptn MetricTemplate",
            metric_template(
                "keptn",
                json!({"type": "keptn"}),
                "keptnmetric/gridos/response-time",
            ),
        ),
        (
            "externalmetrics MetricTemplate",
            metric_template(
                "external",
                json!({"type": "externalmetrics", "address": "http://localhost"}),
                "requests?labelSelector=app%3Dgridos",
            ),
        ),
        (
            "prometheus MetricTemplate with credentials",
            metric_template(
                "prom-auth",
                json!({"type": "prometheus", "address": "https://prometheus.example.com", "secretRef": {"name": "prom-auth"}, "insecureSkipVerify": false}),
                "sum(up)",
            ),
        ),
        (
            "msteams AlertProvider with an address",
            alert_provider(
                "teams",
                json!({"type": "msteams", "address": "https://example.com/hook"}),
            ),
        ),
    ]);
    for (case, data) in &good {
        if let Err(e) = dry_apply(&c, &resolver, data).await {
            wrong.push(format!(
                "{case} {}: rejected: {e}",
                data["metadata"]["name"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    reset(&c).await;
}
