//! Rendering: the embedded `manifests/` templates and validated values become the list of objects to apply, in apply order.
//!
//! Templates run in handlebars strict mode with HTML escaping off; every value reaches the YAML
//! through the `q` helper, which writes it as a JSON scalar or flow collection, so no value can
//! change the document's shape. Install-time material (the webhook certificate) is a marked
//! placeholder here, which keeps `render` byte-deterministic.

use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use serde_json::{Value as Json, json};

use crate::error::Error;
use crate::profile::{AlertProviderKind, Front, Toggle, Values};

#[derive(rust_embed::RustEmbed)]
#[folder = "manifests/"]
#[include = "*.yaml.hbs"]
struct Templates;

/// A container image: registry, repository, tag and (where known) digest.
#[derive(Clone, Copy, Debug)]
pub struct Image {
    pub registry: &'static str,
    pub repository: &'static str,
    pub tag: &'static str,
    pub digest: Option<&'static str>,
}

impl Image {
    /// The pinned reference, with the registry replaced by a mirror when one is set.
    pub fn reference(&self, mirror: &str) -> String {
        let registry = if mirror.is_empty() {
            self.registry
        } else {
            mirror
        };
        match self.digest {
            Some(d) => format!("{registry}/{}:{}@{d}", self.repository, self.tag),
            None => format!("{registry}/{}:{}", self.repository, self.tag),
        }
    }
}

pub const CONTROLLER_IMAGE: Image = Image {
    registry: "registry.k8s.io",
    repository: "ingress-nginx/controller",
    tag: "v1.15.1",
    digest: Some("sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1"),
};
pub const FLAGGER_IMAGE: Image = Image {
    registry: "ghcr.io",
    repository: "fluxcd/flagger",
    tag: "1.44.0",
    digest: None,
};
pub const LOADTESTER_IMAGE: Image = Image {
    registry: "ghcr.io",
    repository: "fluxcd/flagger-loadtester",
    tag: "0.38.0",
    digest: None,
};
/// Grafana 13.2.3, the newest release with a digest found in public manifests on 2026-11-29.
pub const GRAFANA_IMAGE: Image = Image {
    registry: "docker.io",
    repository: "grafana/grafana",
    tag: "13.2.3",
    digest: Some("sha256:b28bae15e219c998fb0e0424ed724930cc61b1f61fb404d47c862f9a23f9e572"),
};
pub const PROMETHEUS_IMAGE: Image = Image {
    registry: "quay.io",
    repository: "prometheus/prometheus",
    tag: "v3.15.0",
    digest: Some("sha256:efd719c99d83b060d9daefdcf00360461adf279f45ef5391f8d111892118753e"),
};

/// Marks install-time material in `render` output; valid base64 so the objects still pass a dry run.
pub const PLACEHOLDER_TEXT: &str = "gridos-setup generates this at install time";

/// The ingress-nginx webhook's serving certificate as the objects carry it (base64 PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookCert {
    pub ca_bundle: String,
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

impl WebhookCert {
    pub fn placeholder() -> Self {
        let b = base64_encode(PLACEHOLDER_TEXT.as_bytes());
        WebhookCert {
            ca_bundle: b.clone(),
            ca_crt: b.clone(),
            tls_crt: b.clone(),
            tls_key: b,
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Everything `render` needs besides the values: decided at install time, fixed for `render`.
#[derive(Clone, Debug)]
pub struct RenderInputs {
    pub webhook: WebhookCert,
    /// Whether to render the ServiceMonitor; `render` shows it unless it is switched off.
    pub service_monitor: bool,
}

impl RenderInputs {
    pub fn offline(values: &Values) -> Self {
        RenderInputs {
            webhook: WebhookCert::placeholder(),
            service_monitor: values.service_monitor.enabled != Toggle::Off,
        }
    }
}

/// The apply waves of design section 5; objects apply wave by wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wave {
    /// Namespaces and CRDs; CRDs must be Established before the next wave.
    Foundation,
    /// RBAC, ServiceAccounts, ConfigMaps, Secrets, NetworkPolicies (in force before their pods start).
    Config,
    /// Services and Deployments; Deployments must be rolled out before the next wave.
    Workloads,
    /// Webhook configurations and IngressClasses, once their backends run.
    Admission,
    /// Custom resources: MetricTemplates, AlertProviders, Canary, ServiceMonitor.
    Custom,
}

impl Wave {
    pub fn of(kind: &str) -> Wave {
        match kind {
            "Namespace" | "CustomResourceDefinition" => Wave::Foundation,
            "ServiceAccount" | "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
            | "ConfigMap" | "Secret" | "NetworkPolicy" => Wave::Config,
            "Service" | "Deployment" | "DaemonSet" | "StatefulSet" => Wave::Workloads,
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" | "IngressClass" => {
                Wave::Admission
            }
            _ => Wave::Custom,
        }
    }
}

/// One rendered object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub template: String,
    pub data: Json,
}

impl Object {
    pub fn api_version(&self) -> &str {
        self.data["apiVersion"].as_str().unwrap_or_default()
    }
    pub fn kind(&self) -> &str {
        self.data["kind"].as_str().unwrap_or_default()
    }
    pub fn name(&self) -> &str {
        self.data["metadata"]["name"].as_str().unwrap_or_default()
    }
    pub fn namespace(&self) -> Option<&str> {
        self.data["metadata"]["namespace"].as_str()
    }
    pub fn wave(&self) -> Wave {
        Wave::of(self.kind())
    }
    /// `Kind/name` or `Kind/namespace/name`, as the output names objects.
    pub fn id(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{}/{}/{}", self.kind(), ns, self.name()),
            None => format!("{}/{}", self.kind(), self.name()),
        }
    }
}

/// Annotations of the ingress controller's Service for the profile (design section 3).
pub fn controller_service_annotations(v: &Values) -> serde_json::Map<String, Json> {
    let mut a = serde_json::Map::new();
    // Azure probes `/` otherwise, where ingress-nginx answers 404 (Azure/AKS#2903).
    a.insert(
        "service.beta.kubernetes.io/azure-load-balancer-health-probe-request-path".into(),
        json!("/healthz"),
    );
    let private_link = v.front == Front::Frontdoor && v.front_door.private_link;
    if v.ingress_controller.service.internal || private_link {
        a.insert(
            "service.beta.kubernetes.io/azure-load-balancer-internal".into(),
            json!("true"),
        );
    }
    if private_link {
        a.insert(
            "service.beta.kubernetes.io/azure-pls-create".into(),
            json!("true"),
        );
    } else if !v.ingress_controller.service.allowed_service_tags.is_empty() {
        a.insert(
            "service.beta.kubernetes.io/azure-allowed-service-tags".into(),
            json!(v.ingress_controller.service.allowed_service_tags.join(",")),
        );
    }
    a
}

/// The handlebars context: the values under `v`, and what is derived from them.
fn context(v: &Values, inputs: &RenderInputs) -> Result<Json, Error> {
    let ns = &v.namespaces;
    let mirror = v.image_registry.as_str();
    Ok(json!({
        "v": v,
        "images": {
            "controller": CONTROLLER_IMAGE.reference(mirror),
            "flagger": FLAGGER_IMAGE.reference(mirror),
            "loadtester": LOADTESTER_IMAGE.reference(mirror),
            "prometheus": PROMETHEUS_IMAGE.reference(mirror),
            "grafana": GRAFANA_IMAGE.reference(mirror),
        },
        "versions": {
            "controller": CONTROLLER_IMAGE.tag.trim_start_matches('v'),
            "flagger": FLAGGER_IMAGE.tag,
            "loadtester": LOADTESTER_IMAGE.tag,
            "prometheus": PROMETHEUS_IMAGE.tag.trim_start_matches('v'),
            "grafana": GRAFANA_IMAGE.tag,
        },
        "controllerService": { "annotations": controller_service_annotations(v) },
        "webhook": {
            "caBundle": inputs.webhook.ca_bundle,
            "caCrt": inputs.webhook.ca_crt,
            "tlsCrt": inputs.webhook.tls_crt,
            "tlsKey": inputs.webhook.tls_key,
        },
        "serviceMonitor": {
            "enabled": inputs.service_monitor,
            "apiVersion": format!("{}/v1", v.service_monitor.group),
        },
        "alerting": { "enabled": v.alerting.provider != AlertProviderKind::None },
        "loadtester": {
            // Namespace names are DNS labels (validated), so they hold no regex metacharacters.
            "namespaceRegexp": format!("-namespace-regexp=^{}$", ns.app),
        },
        "canary": {
            "prometheusAddress": format!("http://flagger-prometheus.{}:9090", ns.flagger),
            // Flagger calls webhooks from its own namespace, so the URL names the app namespace.
            "loadtesterUrl": format!("http://flagger-loadtester.{}/", ns.app),
            // Straight to the canary Service: through the ingress its weight is still 0 before rollout.
            // Passes on any answer but 5xx or none.
            "acceptanceCmd": format!(
                "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 http://gridos-canary.{}:{}/ | grep -Eq '^[234][0-9][0-9]$'",
                ns.app, v.canary.port
            ),
            // Through the ingress controller with the app's Host (the host is a validated DNS name, so
            // it carries no shell metacharacters): Flagger's nginx metrics only count requests that
            // pass the controller. https because hey takes the TLS server name from -host and the
            // app's Ingress redirects plain http.
            "loadTestCmd": format!(
                "hey -z {} -q 10 -c 2 -host {} https://ingress-nginx-controller.{}/",
                load_test_duration(&v.canary.interval)?, v.host, ns.ingress
            ),
        },
    }))
}

/// How long the rollout webhook's `hey` runs: a quarter of the analysis interval (at least 1 s)
/// shorter than the interval. The load tester skips a command while the same one still runs
/// (upstream pkg/loadtester/runner.go), and Flagger calls the webhook once per interval, a little
/// later or earlier each time depending on how long that tick's checks took; `hey -z` also waits
/// for its last requests after the duration. A load test as long as the interval therefore
/// collides with the next call every other window, which then has no traffic at all. With the
/// margin every call starts a fresh run; a quarter still covers most of each window (45 s of
/// every 1m), so the `[1m]` rates always see requests.
pub fn load_test_duration(interval: &str) -> Result<String, Error> {
    let interval = crate::profile::go_duration(interval).ok_or_else(|| Error::Template {
        template: "gridos.yaml.hbs".into(),
        reason: format!("canary.interval {interval:?} is not a duration"),
    })?;
    let margin = (interval / 4).max(std::time::Duration::from_secs(1));
    let run = interval.saturating_sub(margin).as_millis();
    Ok(if run % 1000 == 0 {
        format!("{}s", run / 1000)
    } else {
        format!("{run}ms")
    })
}

/// `{{q value}}`: the value as JSON, which YAML reads back unchanged whatever it contains.
fn quote_helper(
    h: &Helper,
    _: &Handlebars,
    _: &Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("q", 0))?;
    let text = serde_json::to_string(param.value())
        .map_err(|e| RenderErrorReason::Other(e.to_string()))?;
    out.write(&text)?;
    Ok(())
}

fn engine() -> Result<Handlebars<'static>, Error> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("q", Box::new(quote_helper));
    for name in template_names() {
        let file = Templates::get(&name).ok_or_else(|| Error::Template {
            template: name.clone(),
            reason: "not embedded".into(),
        })?;
        let text = String::from_utf8(file.data.into_owned()).map_err(|e| Error::Template {
            template: name.clone(),
            reason: e.to_string(),
        })?;
        hb.register_template_string(&name, text)
            .map_err(|e| Error::Template {
                template: name.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok(hb)
}

/// Template file names, sorted so the output order never depends on the embedding.
pub fn template_names() -> Vec<String> {
    let mut names: Vec<String> = Templates::iter().map(|n| n.into_owned()).collect();
    names.sort();
    names
}

/// Splits a rendered template into its YAML documents and parses each; empty documents are dropped.
fn parse_documents(template: &str, text: &str) -> Result<Vec<Object>, Error> {
    let mut objects = Vec::new();
    let mut doc = String::new();
    let mut flush = |doc: &mut String| -> Result<(), Error> {
        if !doc.trim().is_empty() {
            let data: Json = serde_saphyr::from_str(doc).map_err(|e| Error::Template {
                template: template.into(),
                reason: format!("rendered YAML does not parse: {e}\n{doc}"),
            })?;
            if !data.is_null() {
                let obj = Object {
                    template: template.into(),
                    data,
                };
                if obj.api_version().is_empty() || obj.kind().is_empty() || obj.name().is_empty() {
                    return Err(Error::Template {
                        template: template.into(),
                        reason: format!(
                            "a document lacks apiVersion, kind or metadata.name:\n{doc}"
                        ),
                    });
                }
                objects.push(obj);
            }
        }
        doc.clear();
        Ok(())
    };
    for line in text.lines() {
        if line.trim_end() == "---" {
            flush(&mut doc)?;
        } else {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    flush(&mut doc)?;
    Ok(objects)
}

/// Renders every template for the values, in apply order (wave, then template and position).
pub fn render(v: &Values, inputs: &RenderInputs) -> Result<Vec<Object>, Error> {
    let hb = engine()?;
    let ctx = context(v, inputs)?;
    let mut objects = Vec::new();
    for name in template_names() {
        let text = hb.render(&name, &ctx).map_err(|e| Error::Template {
            template: name.clone(),
            reason: e.to_string(),
        })?;
        objects.extend(parse_documents(&name, &text)?);
    }
    // Stable: within a wave, objects keep their template order.
    objects.sort_by_key(|o| o.wave());
    Ok(objects)
}

/// One value as block YAML; long one-line strings (image references, commands) stay on one line.
pub fn to_yaml_value<T: serde::Serialize>(value: &T) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string_with_options(
        value,
        serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX },
    )
}

/// Multi-document YAML of the objects, as `render` prints it; placeholders are called out in a comment.
pub fn to_yaml(objects: &[Object]) -> Result<String, Error> {
    let placeholder = base64_encode(PLACEHOLDER_TEXT.as_bytes());
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&format!("# Source: manifests/{}\n", o.template));
        let body = to_yaml_value(&o.data).map_err(|e| Error::Template {
            template: o.template.clone(),
            reason: e.to_string(),
        })?;
        if body.contains(&placeholder) {
            out.push_str(&format!(
                "# PLACEHOLDER: values equal to {placeholder} (base64 of {PLACEHOLDER_TEXT:?}) are generated by `gridos-setup install`\n"
            ));
        }
        out.push_str(&body);
        if !body.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
