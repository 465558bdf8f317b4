//! The cluster as install-flagger.sh left it: Helm 3 releases ingress-nginx (namespace
//! ingress-nginx, chart 4.15.1), flagger (namespace ingress-nginx, prometheus.install=true,
//! meshProvider=nginx) and flagger-loadtester (namespace test), written by this test code from
//! Helm's documented formats.
//!
//! What Helm leaves, and where it is documented:
//! - labels `app.kubernetes.io/managed-by: Helm`, `helm.sh/chart: NAME-VERSION` and the chart's
//!   `app.kubernetes.io/name`/`instance` labels (helm.sh/docs/chart_best_practices/labels);
//! - annotations `meta.helm.sh/release-name` and `meta.helm.sh/release-namespace` on every
//!   object of the release manifest, not on hooks (helm.sh/docs/faq/changes_since_helm2,
//!   "adopting existing resources"), hooks marked `helm.sh/hook` (helm.sh/docs/topics/charts_hooks);
//! - writes with field manager `helm` (Helm 3 sets it on its kube client);
//! - release records: Secret `sh.helm.release.v1.NAME.vN`, type `helm.sh/release.v1`, labels
//!   owner=helm, name, status, version, data `release` = base64(gzip(JSON of the release))
//!   (Helm's storage driver, pkg/storage/driver/secrets.go and util.go);
//! - the chart's object names: upstream ingress-nginx chart 4.x with release name ingress-nginx
//!   (fullname `ingress-nginx`, controller `ingress-nginx-controller`, admission hooks
//!   `ingress-nginx-admission[-create|-patch]`; the webhook Secret is made by kube-webhook-certgen,
//!   type Opaque, keys ca/cert/key), flagger chart (fullname `flagger`, prometheus `flagger-prometheus`),
//!   loadtester chart (`flagger-loadtester`).

use std::collections::BTreeMap;

use base64::Engine;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};

/// What the test writes, for its checks afterwards.
pub struct HelmState {
    /// Ids (`Kind/ns/name` or `Kind/name`) of every object of the three releases.
    pub release_objects: Vec<String>,
    /// Objects that must survive adoption (another release's, or no release's).
    pub foreign: Vec<String>,
}

pub const RELEASES: [(&str, &str, &str); 3] = [
    ("ingress-nginx", "ingress-nginx", "ingress-nginx-4.15.1"),
    ("flagger", "ingress-nginx", "flagger-1.44.0"),
    ("flagger-loadtester", "test", "loadtester-0.38.0"),
];

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// gzip (RFC 1952) with stored deflate blocks (RFC 1951 BTYPE=00): what Go's gzip reader in Helm
/// reads like any other; no compressor needed in the tests.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65535).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = u16::try_from(c.len()).expect("chunk");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(u32::try_from(data.len()).expect("size")).to_le_bytes());
    out
}

fn labels(release: &str, chart: &str, name: &str, component: Option<&str>) -> serde_json::Value {
    let mut l = serde_json::json!({
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": chart,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": release,
    });
    if let Some(c) = component {
        l["app.kubernetes.io/component"] = c.into();
    }
    l
}

fn annotations(release: &str, ns: &str) -> serde_json::Value {
    serde_json::json!({"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": ns})
}

/// A release object: the chart's labels and Helm's annotations.
fn object(
    av: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    (release, rns, chart): (&str, &str, &str),
    (app, component): (&str, Option<&str>),
    rest: serde_json::Value,
) -> serde_json::Value {
    let mut o = serde_json::json!({
        "apiVersion": av, "kind": kind,
        "metadata": {"name": name, "labels": labels(release, chart, app, component), "annotations": annotations(release, rns)},
    });
    if let Some(ns) = ns {
        o["metadata"]["namespace"] = ns.into();
    }
    if let (Some(o), Some(r)) = (o.as_object_mut(), rest.as_object()) {
        for (k, v) in r {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

fn pod_template(labels: serde_json::Value, image: &str, sa: Option<&str>) -> serde_json::Value {
    // The charts name the container after the image's program.
    let name = image
        .rsplit('/')
        .next()
        .and_then(|n| n.split([':', '@']).next())
        .unwrap_or("main");
    let mut spec = serde_json::json!({"containers": [{"name": name, "image": image,
        // What the chart sets and gridos-setup does not render: gone after adoption.
        "env": [{"name": "LD_PRELOAD", "value": "/usr/local/lib/libmimalloc.so"}]}]});
    if let Some(sa) = sa {
        spec["serviceAccountName"] = sa.into();
    }
    serde_json::json!({"metadata": {"labels": labels}, "spec": spec})
}

fn crd(plural: &str, kind: &str, rel: (&str, &str, &str)) -> serde_json::Value {
    object(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        &format!("{plural}.flagger.app"),
        rel,
        ("flagger", None),
        serde_json::json!({"spec": {
            "group": "flagger.app", "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{"name": "v1beta1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        }}),
    )
}

/// The three releases' objects (manifest and hooks), as the charts name them.
fn releases(internal: bool, ca_bundle: &str) -> Vec<(&'static str, serde_json::Value, bool)> {
    let nginx = RELEASES[0];
    let flagger = RELEASES[1];
    let lt = RELEASES[2];
    let ns = "ingress-nginx";
    let ctl = Some("controller");
    let controller_image = gridos_setup::render::CONTROLLER_IMAGE.reference("");
    let flagger_image = gridos_setup::render::FLAGGER_IMAGE.reference("");
    let lt_image = gridos_setup::render::LOADTESTER_IMAGE.reference("");
    let selector = serde_json::json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/instance": "ingress-nginx", "app.kubernetes.io/component": "controller"});
    let mut svc_ann = annotations("ingress-nginx", ns);
    if internal {
        svc_ann["service.beta.kubernetes.io/azure-load-balancer-internal"] = "true".into();
    }
    let hook = |kind: &str, av: &str, name: &str, event: &str, rest: serde_json::Value| {
        let mut o = serde_json::json!({
            "apiVersion": av, "kind": kind,
            "metadata": {"name": name, "labels": labels("ingress-nginx", nginx.2, "ingress-nginx", Some("admission-webhook")),
                "annotations": {"helm.sh/hook": event, "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded"}},
        });
        if kind != "ClusterRole" && kind != "ClusterRoleBinding" {
            o["metadata"]["namespace"] = ns.into();
        }
        if let (Some(o), Some(r)) = (o.as_object_mut(), rest.as_object()) {
            for (k, v) in r {
                o.insert(k.clone(), v.clone());
            }
        }
        o
    };
    let rules =
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]);
    let n = |av: &str, kind: &str, o_ns: Option<&str>, name: &str, rest: serde_json::Value| {
        (
            "ingress-nginx",
            object(av, kind, o_ns, name, nginx, ("ingress-nginx", ctl), rest),
            false,
        )
    };
    let f = |av: &str, kind: &str, name: &str, app: &str, rest: serde_json::Value| {
        let o_ns = (!kind.starts_with("Cluster")).then_some(ns);
        (
            "flagger",
            object(av, kind, o_ns, name, flagger, (app, None), rest),
            false,
        )
    };
    let rbac = "rbac.authorization.k8s.io/v1";
    vec![
        n(
            "v1",
            "ServiceAccount",
            Some(ns),
            "ingress-nginx",
            serde_json::json!({}),
        ),
        n(
            "v1",
            "ConfigMap",
            Some(ns),
            "ingress-nginx-controller",
            serde_json::json!({"data": {"allow-snippet-annotations": "false"}}),
        ),
        n(
            rbac,
            "ClusterRole",
            None,
            "ingress-nginx",
            serde_json::json!({"rules": rules}),
        ),
        n(
            rbac,
            "ClusterRoleBinding",
            None,
            "ingress-nginx",
            serde_json::json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ingress-nginx"},
            "subjects": [{"kind": "ServiceAccount", "name": "ingress-nginx", "namespace": ns}]}),
        ),
        n(
            rbac,
            "Role",
            Some(ns),
            "ingress-nginx",
            serde_json::json!({"rules": rules}),
        ),
        n(
            rbac,
            "RoleBinding",
            Some(ns),
            "ingress-nginx",
            serde_json::json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ingress-nginx"},
            "subjects": [{"kind": "ServiceAccount", "name": "ingress-nginx", "namespace": ns}]}),
        ),
        n(
            "v1",
            "Service",
            Some(ns),
            "ingress-nginx-controller-admission",
            serde_json::json!({"spec": {
            "type": "ClusterIP", "selector": selector,
            "ports": [{"name": "https-webhook", "port": 443, "targetPort": "webhook", "appProtocol": "https"}]}}),
        ),
        (
            "ingress-nginx",
            {
                let mut o = object(
                    "v1",
                    "Service",
                    Some(ns),
                    "ingress-nginx-controller",
                    nginx,
                    ("ingress-nginx", ctl),
                    serde_json::json!({"spec": {
                "type": "LoadBalancer", "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
                          {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP", "appProtocol": "https"}]}}),
                );
                o["metadata"]["annotations"] = svc_ann;
                o
            },
            false,
        ),
        n(
            "apps/v1",
            "Deployment",
            Some(ns),
            "ingress-nginx-controller",
            serde_json::json!({"spec": {
            "replicas": 1, "selector": {"matchLabels": selector},
            "template": pod_template(labels("ingress-nginx", nginx.2, "ingress-nginx", ctl), &controller_image, Some("ingress-nginx"))}}),
        ),
        n(
            "networking.k8s.io/v1",
            "IngressClass",
            None,
            "nginx",
            serde_json::json!({"spec": {"controller": "k8s.io/ingress-nginx"}}),
        ),
        n(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
            "ingress-nginx-admission",
            serde_json::json!({
            "webhooks": [{"name": "validate.nginx.ingress.kubernetes.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "matchPolicy": "Equivalent",
                "rules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]}],
                "clientConfig": {"caBundle": ca_bundle, "service": {"namespace": ns, "name": "ingress-nginx-controller-admission", "path": "/networking/v1/ingresses", "port": 443}}}]}),
        ),
        (
            "ingress-nginx",
            hook(
                "ServiceAccount",
                "v1",
                "ingress-nginx-admission",
                "pre-install,pre-upgrade,post-install,post-upgrade",
                serde_json::json!({}),
            ),
            true,
        ),
        (
            "ingress-nginx",
            hook(
                "ClusterRole",
                rbac,
                "ingress-nginx-admission",
                "pre-install,pre-upgrade,post-install,post-upgrade",
                serde_json::json!({"rules": rules}),
            ),
            true,
        ),
        (
            "ingress-nginx",
            hook(
                "Job",
                "batch/v1",
                "ingress-nginx-admission-create",
                "pre-install,pre-upgrade",
                serde_json::json!({"spec": {
            "template": {"spec": {"restartPolicy": "OnFailure", "serviceAccountName": "ingress-nginx-admission",
                "containers": [{"name": "create", "image": "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.5"}]}}}}),
            ),
            true,
        ),
        (
            "ingress-nginx",
            hook(
                "Job",
                "batch/v1",
                "ingress-nginx-admission-patch",
                "post-install,post-upgrade",
                serde_json::json!({"spec": {
            "template": {"spec": {"restartPolicy": "OnFailure", "serviceAccountName": "ingress-nginx-admission",
                "containers": [{"name": "patch", "image": "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.5"}]}}}}),
            ),
            true,
        ),
        ("flagger", crd("canaries", "Canary", flagger), false),
        (
            "flagger",
            crd("metrictemplates", "MetricTemplate", flagger),
            false,
        ),
        (
            "flagger",
            crd("alertproviders", "AlertProvider", flagger),
            false,
        ),
        f(
            "v1",
            "ServiceAccount",
            "flagger",
            "flagger",
            serde_json::json!({}),
        ),
        f(
            rbac,
            "ClusterRole",
            "flagger",
            "flagger",
            serde_json::json!({"rules": rules}),
        ),
        f(
            rbac,
            "ClusterRoleBinding",
            "flagger",
            "flagger",
            serde_json::json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flagger"},
            "subjects": [{"kind": "ServiceAccount", "name": "flagger", "namespace": ns}]}),
        ),
        f(
            "apps/v1",
            "Deployment",
            "flagger",
            "flagger",
            serde_json::json!({"spec": {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "flagger", "app.kubernetes.io/instance": "flagger"}},
            "template": pod_template(serde_json::json!({"app.kubernetes.io/name": "flagger", "app.kubernetes.io/instance": "flagger"}), &flagger_image, Some("flagger"))}}),
        ),
        f(
            "v1",
            "ServiceAccount",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({}),
        ),
        f(
            rbac,
            "ClusterRole",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({"rules": rules}),
        ),
        f(
            rbac,
            "ClusterRoleBinding",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flagger-prometheus"},
            "subjects": [{"kind": "ServiceAccount", "name": "flagger-prometheus", "namespace": ns}]}),
        ),
        f(
            "v1",
            "ConfigMap",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({"data": {"prometheus.yml": "global:\n  scrape_interval: 5s\n"}}),
        ),
        f(
            "apps/v1",
            "Deployment",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({"spec": {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "flagger-prometheus"}},
            "template": pod_template(serde_json::json!({"app.kubernetes.io/name": "flagger-prometheus"}), "docker.io/prom/prometheus:v2.41.0", Some("flagger-prometheus"))}}),
        ),
        f(
            "v1",
            "Service",
            "flagger-prometheus",
            "flagger-prometheus",
            serde_json::json!({"spec": {
            "selector": {"app.kubernetes.io/name": "flagger-prometheus"}, "ports": [{"name": "http", "port": 9090}]}}),
        ),
        (
            "flagger-loadtester",
            object(
                "apps/v1",
                "Deployment",
                Some("test"),
                "flagger-loadtester",
                lt,
                ("loadtester", None),
                serde_json::json!({"spec": {
            "replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "loadtester", "app.kubernetes.io/instance": "flagger-loadtester"}},
            "template": pod_template(serde_json::json!({"app.kubernetes.io/name": "loadtester", "app.kubernetes.io/instance": "flagger-loadtester"}), &lt_image, None)}}),
            ),
            false,
        ),
        (
            "flagger-loadtester",
            object(
                "v1",
                "Service",
                Some("test"),
                "flagger-loadtester",
                lt,
                ("loadtester", None),
                serde_json::json!({"spec": {
            "selector": {"app.kubernetes.io/name": "loadtester", "app.kubernetes.io/instance": "flagger-loadtester"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
            ),
            false,
        ),
    ]
}

fn id_of(o: &serde_json::Value) -> String {
    let kind = o["kind"].as_str().unwrap_or_default();
    let name = o["metadata"]["name"].as_str().unwrap_or_default();
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}

async fn create(
    c: &Client,
    resolver: &gridos_setup::apply::Resolver,
    o: &serde_json::Value,
    manager: &str,
) {
    let obj = gridos_setup::render::Object {
        template: "helm".into(),
        data: o.clone(),
    };
    let (ar, caps) = resolver
        .resolve(&obj)
        .unwrap_or_else(|e| panic!("{}: {e}", obj.id()));
    let api: Api<DynamicObject> = match (caps.scope, obj.namespace()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(c.clone(), ns, &ar),
        _ => Api::all_with(c.clone(), &ar),
    };
    let d: DynamicObject = serde_json::from_value(o.clone()).expect("object");
    let pp = PostParams {
        field_manager: Some(manager.into()),
        ..Default::default()
    };
    api.create(&pp, &d)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", obj.id()));
}

/// A release record as Helm's Secret storage driver writes it.
fn record(
    release: &str,
    ns: &str,
    chart: &str,
    version: u32,
    status: &str,
    objects: &[serde_json::Value],
    hooks: &[serde_json::Value],
) -> serde_json::Value {
    let (chart_name, chart_version) = chart.rsplit_once('-').unwrap_or((chart, ""));
    let yaml = |o: &serde_json::Value| {
        format!(
            "---\n# Source: {chart_name}/templates/{}.yaml\n{o}\n",
            o["kind"].as_str().unwrap_or_default().to_lowercase()
        )
    };
    let rel = serde_json::json!({
        "name": release,
        "namespace": ns,
        "version": version,
        "info": {"first_deployed": "2025-06-02T09:14:07Z", "last_deployed": "2025-06-02T09:14:07Z", "deleted": "", "description": "Install complete", "status": status},
        "chart": {"metadata": {"apiVersion": "v2", "name": chart_name, "version": chart_version}},
        "config": {},
        "manifest": objects.iter().map(yaml).collect::<String>(),
        "hooks": hooks.iter().map(|h| serde_json::json!({
            "name": h["metadata"]["name"], "kind": h["kind"], "path": format!("{chart_name}/templates/admission-webhooks/{}.yaml", h["kind"].as_str().unwrap_or_default().to_lowercase()),
            "manifest": h.to_string(), "events": h["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap_or_default().split(',').collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let payload =
        base64::engine::general_purpose::STANDARD.encode(gzip_stored(rel.to_string().as_bytes()));
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{release}.v{version}"), "namespace": ns,
            "labels": {"owner": "helm", "name": release, "status": status, "version": version.to_string(), "modifiedAt": "1748855647"}},
        "data": {"release": base64::engine::general_purpose::STANDARD.encode(payload)},
    })
}

/// Writes the state install-flagger.sh leaves (after the caller's reset), `internal` for the
/// appgw variant (the controller Service on an internal load balancer). Namespaces are made as
/// `helm install --create-namespace` makes them.
pub async fn create_helm_state(c: &Client, internal: bool) -> HelmState {
    let resolver = gridos_setup::apply::Resolver::new(c, None)
        .await
        .expect("discovery");
    for ns in ["ingress-nginx", "test"] {
        create(
            c,
            &resolver,
            &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"name": ns}}}),
            "helm",
        )
        .await;
    }
    // kube-webhook-certgen's Secret (type Opaque, keys ca/cert/key) and the CA its patch Job put
    // into the webhook configuration.
    let cert = gridos_setup::certs::generate(
        "ingress-nginx-controller-admission",
        "ingress-nginx",
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(86400 * 365),
    )
    .expect("certificate");
    // The certificate fields are base64 already, as a Secret's data carries them.
    create(
        c,
        &resolver,
        &serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ingress-nginx-admission", "namespace": "ingress-nginx"},
            "data": {"ca": cert.ca_crt, "cert": cert.tls_crt, "key": cert.tls_key}}),
        "kube-webhook-certgen",
    )
    .await;
    let objects = releases(internal, &cert.ca_bundle);
    let mut ids = Vec::new();
    for (_, o, _) in &objects {
        create(c, &resolver, o, "helm").await;
        ids.push(id_of(o));
    }
    let mut by_release: BTreeMap<&str, (Vec<serde_json::Value>, Vec<serde_json::Value>)> =
        BTreeMap::new();
    for (r, o, is_hook) in objects {
        let e = by_release.entry(r).or_default();
        if is_hook {
            e.1.push(o);
        } else {
            e.0.push(o);
        }
    }
    for (release, ns, chart) in RELEASES {
        let (objs, hooks) = by_release.remove(release).unwrap_or_default();
        // ingress-nginx was upgraded once: revision 1 superseded, 2 deployed.
        let revisions: &[(u32, &str)] = if release == "ingress-nginx" {
            &[(1, "superseded"), (2, "deployed")]
        } else {
            &[(1, "deployed")]
        };
        for (v, status) in revisions {
            create(
                c,
                &resolver,
                &record(release, ns, chart, *v, status, &objs, &hooks),
                "helm",
            )
            .await;
        }
    }
    // Another release in namespace test (not the script's) and an object of no release, carrying
    // the chart's labels: both must survive adoption.
    create(
        c,
        &resolver,
        &record("podinfo", "test", "podinfo-6.9.0", 1, "deployed", &[], &[]),
        "helm",
    )
    .await;
    let foreign_cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "team-settings", "namespace": "ingress-nginx",
            "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "ingress-nginx"},
            "annotations": {"meta.helm.sh/release-name": "team-settings", "meta.helm.sh/release-namespace": "ingress-nginx"}},
        "data": {"owner": "platform team"}});
    create(c, &resolver, &foreign_cm, "helm").await;
    HelmState {
        release_objects: ids,
        foreign: vec![
            "ConfigMap/ingress-nginx/team-settings".into(),
            "Secret/test/sh.helm.release.v1.podinfo.v1".into(),
        ],
    }
}

/// Removes what [`create_helm_state`] wrote that `reset` does not: namespace test and the
/// cluster-scoped objects labelled as Helm's (reset removes only gridos-setup's).
pub async fn delete_helm_state(c: &Client) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::networking::v1::IngressClass;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{DeleteParams, ListParams};
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=Helm");
    let dp = DeleteParams::default();
    macro_rules! sweep {
        ($t:ty) => {
            let api: Api<$t> = Api::all(c.clone());
            if let Ok(l) = api.list(&lp).await {
                for o in l.items {
                    let _ = api.delete(&kube::ResourceExt::name_any(&o), &dp).await;
                }
            }
        };
    }
    sweep!(ClusterRole);
    sweep!(ClusterRoleBinding);
    sweep!(IngressClass);
    sweep!(ValidatingWebhookConfiguration);
    crate::util::delete_namespace(c, "test").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    if let Ok(Some(ns)) = namespaces.get_opt("test").await {
        let uid = ns.metadata.uid.unwrap_or_default();
        crate::util::wait_for(
            namespaces,
            "test",
            120,
            "namespace test deleted",
            kube::runtime::wait::conditions::is_deleted(&uid),
        )
        .await;
    }
}
