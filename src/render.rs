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
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;
use crate::profile::{AlertProviderKind, Front, Toggle, TrafficLayer, Values};

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
/// Flagger and its load tester are pinned by tag only: no public release material found carries
/// their digests (searched for issue 25, 2026-12-06: the `github.com/fluxcd/flagger@v1.44.0` Go
/// module, with its chart, kustomize bases and CHANGELOG, pins neither image by digest; no public
/// manifest, chart or release note indexed pins `flagger:1.44.0` or `flagger-loadtester:0.38.0`
/// by digest). A digest is never made up; add one here with its source once one is published.
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
            "Service" | "Deployment" | "DaemonSet" | "StatefulSet" | "PodDisruptionBudget" => {
                Wave::Workloads
            }
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

/// Azure's annotation for an internal load balancer (a private frontend IP), "true" to set it.
pub const INTERNAL_LB_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";

/// The Private Link service's name (`azure-pls-name`), in the cluster's node resource group.
pub const PRIVATE_LINK_SERVICE_NAME: &str = "gridos-pls";

/// Annotations of the ingress controller's Service for the profile (design section 3).
pub fn controller_service_annotations(v: &Values) -> serde_json::Map<String, Json> {
    let mut a = serde_json::Map::new();
    // With `externalTrafficPolicy: Cluster` Azure would probe `/`, where ingress-nginx answers 404
    // (Azure/AKS#2903). The controller Service keeps `Local`, where the load balancer probes
    // kube-proxy's health node port instead and this path is not used (design.md §10); it is set
    // for whoever switches the policy.
    a.insert(
        "service.beta.kubernetes.io/azure-load-balancer-health-probe-request-path".into(),
        json!("/healthz"),
    );
    let private_link = v.front == Front::Frontdoor && v.front_door.private_link;
    if v.ingress_controller.service.internal || private_link {
        a.insert(INTERNAL_LB_ANNOTATION.into(), json!("true"));
    }
    if private_link {
        a.insert(
            "service.beta.kubernetes.io/azure-pls-create".into(),
            json!("true"),
        );
        // Without a name cloud-provider-azure calls it `pls-<frontend IP configuration name>`,
        // which the guidance could not look up; the name makes `private-link-service show` find it.
        a.insert(
            "service.beta.kubernetes.io/azure-pls-name".into(),
            json!(PRIVATE_LINK_SERVICE_NAME),
        );
        let subnet = &v.front_door.private_link_subnet;
        if !subnet.is_empty() {
            a.insert(
                "service.beta.kubernetes.io/azure-pls-ip-configuration-subnet".into(),
                json!(subnet),
            );
        }
    } else if !v.ingress_controller.service.allowed_service_tags.is_empty() {
        a.insert(
            "service.beta.kubernetes.io/azure-allowed-service-tags".into(),
            json!(v.ingress_controller.service.allowed_service_tags.join(",")),
        );
    }
    a.extend(stable_address_annotations(v));
    a
}

/// The GatewayClass AKS application routing creates for its Istio-based Gateway API implementation.
pub const GATEWAY_CLASS: &str = "approuting-istio";

/// The suffix AKS gives the Deployment and Service it makes for a Gateway (`<gateway>-approuting-istio`).
pub const GATEWAY_SERVICE_SUFFIX: &str = "-approuting-istio";

/// Istio gateways' status port, serving `/healthz/ready` (istio kube-gateway template's probes).
pub const GATEWAY_STATUS_PORT: u16 = 15021;

/// The Service AKS creates for the Gateway: `<gateway>-approuting-istio`, in the gateway namespace.
pub fn gateway_service_name(v: &Values) -> String {
    format!("{}{GATEWAY_SERVICE_SUFFIX}", v.gateway.name)
}

/// The Gateway's listener ports: 80, and 443 with a certificate.
pub fn gateway_ports(v: &Values) -> Vec<u16> {
    if crate::profile::gateway_https(v) {
        vec![80, 443]
    } else {
        vec![80]
    }
}

/// `spec.infrastructure.annotations` of the Gateway, which AKS copies to the gateway's Service: the
/// controller Service's load-balancer annotations for the profile (internal, allowed service tags,
/// Private Link, a stable address), with the health probe of every listener port sent to the
/// status port's `/healthz/ready` instead of `/healthz` on the port itself (Istio answers 404 there).
pub fn gateway_infrastructure_annotations(v: &Values) -> serde_json::Map<String, Json> {
    let mut a = controller_service_annotations(v);
    a.remove("service.beta.kubernetes.io/azure-load-balancer-health-probe-request-path");
    for port in gateway_ports(v) {
        let key =
            |what: &str| format!("service.beta.kubernetes.io/port_{port}_health-probe_{what}");
        a.insert(key("protocol"), json!("http"));
        a.insert(key("port"), json!(GATEWAY_STATUS_PORT.to_string()));
        a.insert(key("request-path"), json!("/healthz/ready"));
    }
    // A public load balancer gets no rule for the status port itself (cloud-provider-azure,
    // "Azure LoadBalancer" annotations: `port_{num}_no_lb_rule` "true" generates no LB rule and
    // no probe for that port; its example is exactly an Istio/Envoy health port, which should not
    // face the internet; design.md §10). The probes above still reach 15021 on the nodes. An
    // internal one keeps the rule: Application Gateway's backend probe goes to the frontend's 15021.
    if !a.contains_key(INTERNAL_LB_ANNOTATION) {
        a.insert(
            format!("service.beta.kubernetes.io/port_{GATEWAY_STATUS_PORT}_no_lb_rule"),
            json!("true"),
        );
    }
    a
}

/// AKS annotations that keep the controller's address when the Service goes (uninstall, profile
/// switch): a pre-created public IP by name and resource group, a DNS label, or a fixed private IP
/// ("Use a static public IP address and DNS label with the AKS load balancer"; cloud-provider-azure
/// LoadBalancer annotations). Without one, the address is AKS-managed and goes with the Service.
pub fn stable_address_annotations(v: &Values) -> serde_json::Map<String, Json> {
    let s = &v.ingress_controller.service;
    let mut a = serde_json::Map::new();
    for (key, value) in [
        (
            "service.beta.kubernetes.io/azure-pip-name",
            &s.public_ip_name,
        ),
        (
            "service.beta.kubernetes.io/azure-load-balancer-resource-group",
            &s.public_ip_resource_group,
        ),
        (
            "service.beta.kubernetes.io/azure-dns-label-name",
            &s.dns_label,
        ),
        (
            "service.beta.kubernetes.io/azure-load-balancer-ipv4",
            &s.private_ip,
        ),
    ] {
        if !value.is_empty() {
            a.insert(key.into(), json!(value));
        }
    }
    a
}

/// The controller's global settings (its `--configmap`). Forwarded headers are trusted only from the
/// front's ranges: with `use-forwarded-headers` ingress-nginx sets nginx's `real_ip_header` to
/// `forwarded-for-header` and `set_real_ip_from` to each of `proxy-real-ip-cidr`, whose default is
/// 0.0.0.0/0, so it is always written out (ingress-nginx ConfigMap documentation).
pub fn controller_config(v: &Values) -> serde_json::Map<String, Json> {
    let mut c = serde_json::Map::new();
    // Upstream's defaults since v1.12, stated so a default change cannot loosen them: snippet
    // annotations stay off (CVE-2021-25742), annotations above risk level High are refused, and
    // paths are validated against their pathType.
    c.insert("allow-snippet-annotations".into(), json!("false"));
    c.insert("annotations-risk-level".into(), json!("High"));
    c.insert("strict-validate-path-type".into(), json!("true"));
    match crate::profile::trusted_proxies(v) {
        Some(cidrs) => {
            c.insert("use-forwarded-headers".into(), json!("true"));
            c.insert("forwarded-for-header".into(), json!("X-Forwarded-For"));
            // Keep the chain for the app: it gets the client's address appended to what the front sent.
            c.insert("compute-full-forwarded-for".into(), json!("true"));
            c.insert("proxy-real-ip-cidr".into(), json!(cidrs.join(",")));
        }
        None => {
            // Clients connect directly: a client-sent X-Forwarded-For must not count.
            c.insert("use-forwarded-headers".into(), json!("false"));
        }
    }
    c
}

/// The handlebars context: the values under `v`, and what is derived from them.
fn context(v: &Values, inputs: &RenderInputs) -> Result<Json, Error> {
    let ns = &v.namespaces;
    let mirror = v.image_registry.as_str();
    let gateway = v.traffic.layer == TrafficLayer::GatewayApi;
    let mut ctx = json!({
        "v": v,
        // Which layer's objects render; the gateway's extra context is under `gateway` (only then).
        "traffic": { "nginx": !gateway, "gateway": gateway },
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
        "controllerConfig": controller_config(v),
        "prometheus": {
            // The namespace whose pods carry the request metrics: the controller's or the gateway's.
            "scrapeNamespace": if gateway { &ns.gateway } else { &ns.ingress },
            "gatewaySelector": format!("gateway.networking.k8s.io/gateway-name={}", v.gateway.name),
        },
        "prometheusStorage": {
            "sizeLimit": v.prometheus.storage_size,
            // Prometheus counts blocks, WAL and chunks against retention.size (MB = 2^20 bytes); 80%
            // of the volume leaves room for compaction before the kubelet's sizeLimit evicts the pod.
            "retentionSize": format!("{}MB", crate::profile::storage_mib(v) * 8 / 10),
        },
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
            "loadTestCmd": load_test_cmd(v)?,
        },
    });
    if gateway {
        let map = ctx.as_object_mut().ok_or_else(|| Error::Template {
            template: "gateway.yaml.hbs".into(),
            reason: "the context is not a mapping".into(),
        })?;
        map.insert(
            "gateway".into(),
            json!({
                "annotations": gateway_infrastructure_annotations(v),
                "https": crate::profile::gateway_https(v),
                "serviceName": gateway_service_name(v),
            }),
        );
    }
    Ok(ctx)
}

/// The rollout webhook's load test: traffic through the layer that shifts the weights, with the
/// app's Host (the host is a validated DNS name, so it carries no shell metacharacters), since the
/// canary's metrics only count requests that pass it.
fn load_test_cmd(v: &Values) -> Result<String, Error> {
    let duration = load_test_duration(&v.canary.interval)?;
    Ok(match v.traffic.layer {
        // https because hey takes the TLS server name from -host and the app's Ingress redirects
        // plain http.
        TrafficLayer::IngressNginx => format!(
            "hey -z {duration} -q 10 -c 2{} -host {} https://ingress-nginx-controller.{}/",
            origin_lock_header(v),
            v.host,
            v.namespaces.ingress
        ),
        // The Gateway's http listener on the Service AKS makes for it: its istio_requests_total
        // counts the request with the HTTPRoute's split, whatever listener it came in on.
        TrafficLayer::GatewayApi => format!(
            "hey -z {duration} -q 10 -c 2{} -host {} http://{}.{}/",
            origin_lock_header(v),
            v.host,
            gateway_service_name(v),
            v.namespaces.gateway
        ),
    })
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

/// ` -H 'X-Azure-FDID: <id>'` when the Front Door ID is known: the origin lock (Front Door's "Secure
/// traffic to origins": check X-Azure-FDID) then lets the load test through like user traffic.
fn origin_lock_header(v: &Values) -> String {
    if v.front != Front::Frontdoor || v.front_door.id.is_empty() {
        return String::new();
    }
    let header = format!("X-Azure-FDID: {}", v.front_door.id);
    // The load tester runs the command with `sh -c`; the ID is a validated GUID, quoted all the same.
    let quoted = shlex::try_quote(&header)
        .map(|q| q.into_owned())
        .unwrap_or_default();
    format!(" -H {quoted}")
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

/// Compiles, renders and parses one template. A registry per template costs nothing next to the
/// compile, and lets templates render on separate threads.
fn render_template(name: &str, ctx: &Json) -> Result<Vec<Object>, Error> {
    let failed = |reason: String| Error::Template {
        template: name.to_string(),
        reason,
    };
    let file = Templates::get(name).ok_or_else(|| failed("not embedded".into()))?;
    let text = std::str::from_utf8(&file.data).map_err(|e| failed(e.to_string()))?;
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("q", Box::new(quote_helper));
    hb.register_template_string(name, text)
        .map_err(|e| failed(e.to_string()))?;
    let rendered = hb.render(name, ctx).map_err(|e| failed(e.to_string()))?;
    parse_documents(name, &rendered)
}

/// Every template's objects, in the order of `names`. Templates are independent, so they are
/// spread over the machine's cores: compiling is the largest part of a render (handlebars' parser
/// computes each element's line and column by scanning from the template's start).
fn render_templates(names: &[String], ctx: &Json) -> Result<Vec<Vec<Object>>, Error> {
    // Largest first, so that no long template starts last.
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_cached_key(|&i| {
        std::cmp::Reverse(Templates::get(&names[i]).map_or(0, |f| f.data.len()))
    });
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((i, render_template(&names[i], ctx)));
        }
        done
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, names.len().max(1));
    let mut done = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers).map(|_| s.spawn(work)).collect();
        let mut done = work();
        for h in helpers {
            done.extend(h.join().map_err(|_| Error::Template {
                template: "(all)".into(),
                reason: "a render thread panicked".into(),
            })?);
        }
        Ok::<_, Error>(done)
    })?;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
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
    let ctx = context(v, inputs)?;
    let mut objects: Vec<Object> = render_templates(&template_names(), &ctx)?
        .into_iter()
        .flatten()
        .collect();
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
