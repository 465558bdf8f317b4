//! Test stand-in for ingress-nginx's data plane (NGINX and its Lua metrics), and for the cluster DNS and kube-proxy it relies on.
//!
//! The test control plane runs the controller's pods as kwok pods, which run no process, and has no
//! kube-dns or kube-proxy. The real Flagger, Prometheus and load tester run as processes inside the
//! test network namespace; this stand-in makes the cluster's names and addresses reach them there:
//!
//! - Data plane: it watches the Ingresses of our class as the controller does, including the canary
//!   Ingress Flagger creates (`nginx.ingress.kubernetes.io/canary: "true"` and its `canary-weight`,
//!   out of `canary-weight-total`, default 100; ingress-nginx docs, user-guide/nginx-configuration/
//!   annotations.md#canary). It sends a steady synthetic request rate (`--rps` per Ingress path)
//!   through each path, split between the main backend and the canary backend by the weight, and
//!   serves the series ingress-nginx 1.15.1 exports for them on each controller pod's address and
//!   metrics port (10254, `--metrics-port`), where Prometheus finds the pods through our scrape
//!   configuration (their `prometheus.io/*` annotations). The pod addresses are added to `lo`.
//! - Behaviour of a version comes from its Deployment's pod template (first container's image tag):
//!   `-errN` answers N % of requests with 503, `-slowN` takes N ms per request (so its p99 is N ms);
//!   anything else answers 200 in 20 ms. `-atW` delays both until the version gets W % of the
//!   traffic as the canary (e.g. `1.1.0-err100-at50`: healthy at 10 and 25 %, failing from 50 %).
//! - Admission: the controller's validating webhook (Service `ingress-nginx-controller-admission`,
//!   TLS with the Secret `ingress-nginx-admission` that gridos-setup generates) answers every
//!   AdmissionReview with allowed; the real one renders and tests an nginx.conf, which is not here.
//! - App stand-in: every Service an Ingress of our class routes to answers HTTP on its ClusterIP and
//!   port with that behaviour (e.g. the acceptance test's curl to `gridos-canary`).
//! - kube-proxy stand-in: every Service's ClusterIP is added to `lo`; where a Service's port differs
//!   from its target port, connections to ClusterIP:port are forwarded to 127.0.0.1:targetPort (the
//!   real programs listen on all addresses of the namespace, as in their pods; `--moved` names a
//!   Service whose process had to take another port here).
//! - DNS stand-in (`--hosts-file`, the namespace's /etc/hosts): the names kube-dns answers for each
//!   Service in every namespace (`svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`, and the bare
//!   `svc`, which a pod's DNS search path resolves in its own namespace: here for the namespaces
//!   given with `--search-namespace` first, else wherever the name is unique). The file is
//!   rewritten in place (same inode), because `ip netns exec` bind-mounts it.
//! - Real requests: the controller's (or gateway's) LoadBalancer Service answers on its http port,
//!   routed by Host, then, with ingress-nginx, by the canary Ingress's `canary-by-header`,
//!   `canary-by-header-value`, `canary-by-header-pattern` and `canary-by-cookie` rules before the
//!   weight (ingress-nginx docs, annotations.md#canary), and recorded in the metrics.
//!
//! - Gateway API mode (`--gateway-api`): the same for the Istio gateway pods of AKS application
//!   routing (`approuting-istio`; their control plane is `approuting-istio-standin`). Traffic is
//!   routed by the HTTPRoutes attached to a Gateway in `--controller-namespace`, per hostname and
//!   rule, split by the `backendRefs` weights (which Flagger's `gatewayapi:v1` provider moves);
//!   the gateway Service's listener ports answer real requests routed by their Host header (the
//!   load tester's `hey`), recorded like the synthetic ones. The pods' metrics are Istio's standard
//!   metrics (istio.io docs, "Istio Standard Metrics"): `istio_requests_total` and the
//!   `istio_request_duration_milliseconds` histogram with Istio's default buckets, reported by the
//!   gateway (`reporter="source"`) with `destination_service` set to the backend Service's FQDN and
//!   `destination_workload="unknown"` (the app's pods have no sidecar), served on the pods' port
//!   15020 at /stats/prometheus, where the `prometheus.io/*` pod annotations point.
//!
//! Metric names, label names and values follow ingress-nginx's source (controller-v1.15.1):
//! internal/ingress/metric/collectors/socket.go (`requestTags`: status, method, path, namespace,
//! ingress, service, canary, plus host with metrics-per-host, the default; constant labels
//! controller_namespace, controller_class, controller_pod; `nginx_ingress_controller_requests` is a
//! counter, `nginx_ingress_controller_request_duration_seconds` and
//! `nginx_ingress_controller_response_duration_seconds` histograms with the `--time-buckets`
//! default, prometheus.DefBuckets); rootfs/etc/nginx/lua/monitor.lua fills them from
//! `ngx.var.namespace`, `ngx.var.ingress_name`, `ngx.var.service_name` (the main Ingress's backend,
//! also for canary requests) and `ngx.var.proxy_alternative_upstream_name` (the canary upstream
//! `<namespace>-<service>-<port>`, internal/ingress/controller/util.go upstreamName; empty when the
//! request went to the main backend).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use gridos_testenv_standins::spawn_reflector;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CANARY: &str = "nginx.ingress.kubernetes.io/canary";
const CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
const CANARY_WEIGHT_TOTAL: &str = "nginx.ingress.kubernetes.io/canary-weight-total";
const CANARY_BY_HEADER: &str = "nginx.ingress.kubernetes.io/canary-by-header";
const CANARY_BY_HEADER_VALUE: &str = "nginx.ingress.kubernetes.io/canary-by-header-value";
const CANARY_BY_HEADER_PATTERN: &str = "nginx.ingress.kubernetes.io/canary-by-header-pattern";
const CANARY_BY_COOKIE: &str = "nginx.ingress.kubernetes.io/canary-by-cookie";
const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
/// prometheus.DefBuckets, ingress-nginx's default `--time-buckets` (seconds).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Istio's default buckets of `istio_request_duration_milliseconds` (milliseconds; Istio's
/// telemetry docs, "Default buckets": the stats filter's `defaultBuckets`).
const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Group, version and kind of the routes the Gateway API data plane serves.
const HTTPROUTE: (&str, &str, &str) = ("gateway.networking.k8s.io", "v1", "HTTPRoute");
const MARK_BEGIN: &str = "# BEGIN ingress-nginx-standin (cluster DNS stand-in)";
const MARK_END: &str = "# END ingress-nginx-standin";
/// Synthetic traffic is sent in ticks of this length.
const TICK: Duration = Duration::from_millis(100);

#[derive(Parser)]
#[command(about = "Test stand-in for ingress-nginx's data plane, cluster DNS and kube-proxy")]
struct Args {
    /// Kubeconfig of the test control plane.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespace of the controller's pods.
    #[arg(long, default_value = "ingress-nginx")]
    controller_namespace: String,
    /// Label selector of the controller's pods.
    #[arg(
        long,
        default_value = "app.kubernetes.io/name=ingress-nginx,app.kubernetes.io/component=controller"
    )]
    controller_selector: String,
    /// IngressClass name whose Ingresses this data plane serves.
    #[arg(long, default_value = "nginx")]
    ingress_class: String,
    /// The IngressClass's `spec.controller` (the controller_class label).
    #[arg(long, default_value = "k8s.io/ingress-nginx")]
    controller_class: String,
    /// Synthetic requests per second through each Ingress path.
    #[arg(long, default_value_t = 100)]
    rps: u32,
    /// The controller's metrics port (its `--enable-metrics` endpoint).
    #[arg(long, default_value_t = 10254)]
    metrics_port: u16,
    /// The hosts file to keep Service names in (the network namespace's /etc/hosts).
    #[arg(long)]
    hosts_file: Option<PathBuf>,
    /// Namespaces whose Services also resolve by their bare name (the pods' DNS search path).
    #[arg(long)]
    search_namespace: Vec<String>,
    /// `NS/SERVICE=PORT`: the process behind this Service listens on PORT here instead of its
    /// target port (all processes share one network namespace, so two cannot both take 8080).
    #[arg(long)]
    moved: Vec<String>,
    /// The controller's admission webhook Service (in the controller namespace).
    #[arg(long, default_value = "ingress-nginx-controller-admission")]
    admission_service: String,
    /// The TLS Secret the admission webhook serves with (in the controller namespace).
    #[arg(long, default_value = "ingress-nginx-admission")]
    admission_secret: String,
    /// Be the data plane of Istio gateway pods instead (AKS application routing's `approuting-istio`):
    /// route by the HTTPRoutes attached to Gateways in `--controller-namespace`, whose pods
    /// `--controller-selector` selects, and serve Istio's metrics on `--metrics-port` (15020 there)
    /// at /stats/prometheus.
    #[arg(long)]
    gateway_api: bool,
}

impl Args {
    fn metrics_path(&self) -> &'static str {
        if self.gateway_api {
            "/stats/prometheus"
        } else {
            "/metrics"
        }
    }

    fn buckets(&self) -> &'static [f64] {
        if self.gateway_api {
            &ISTIO_BUCKETS
        } else {
            &BUCKETS
        }
    }
}

/// How one version of the app answers, from its pod template's image tag.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Behaviour {
    error_percent: f64,
    latency_ms: u64,
    /// `-atN`: the errors and the latency start once the version gets N % of the traffic as the
    /// canary (a failure at one step only); before that it answers 200 in 20 ms.
    from_weight: f64,
}

/// How a version answers, with `weight` the percent of traffic it gets as the canary (0 when
/// reached another way: as the primary, by header or cookie, or directly on its Service).
fn behaviour_at(b: Behaviour, weight: f64) -> Behaviour {
    if weight + 1e-9 < b.from_weight {
        behaviour_of_image("")
    } else {
        b
    }
}

fn behaviour_of_image(image: &str) -> Behaviour {
    let without_digest = image.split('@').next().unwrap_or(image);
    let tag = without_digest
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map(|(_, t)| t)
        .unwrap_or("");
    let mut b = Behaviour {
        error_percent: 0.0,
        latency_ms: 20,
        from_weight: 0.0,
    };
    for part in tag.split('-') {
        if let Some(n) = part.strip_prefix("err").and_then(|n| n.parse::<f64>().ok()) {
            b.error_percent = n;
        }
        if let Some(n) = part
            .strip_prefix("slow")
            .and_then(|n| n.parse::<u64>().ok())
        {
            b.latency_ms = n;
        }
        if let Some(n) = part.strip_prefix("at").and_then(|n| n.parse::<f64>().ok()) {
            b.from_weight = n;
        }
    }
    b
}

/// The labels of one request series (name, value), sorted by name.
type Series = Vec<(&'static str, String)>;

#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct PodMetrics {
    requests: BTreeMap<Series, u64>,
    durations: BTreeMap<Series, Histogram>,
}

#[derive(Default)]
struct State {
    /// Per controller pod name.
    pods: BTreeMap<String, PodMetrics>,
    /// Fractional request, canary and error counts carried between ticks (deterministic split).
    carry: HashMap<String, f64>,
    round_robin: usize,
}

struct Stores {
    ingresses: Store<Ingress>,
    /// HTTPRoutes (with `--gateway-api`; empty otherwise).
    routes: Store<DynamicObject>,
    services: Store<Service>,
    deployments: Store<Deployment>,
    pods: Store<Pod>,
}

fn of_our_class(ing: &Ingress, class: &str) -> bool {
    let by_field = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        == Some(class);
    by_field || ing.annotations().get(LEGACY_CLASS).map(String::as_str) == Some(class)
}

fn is_canary(ing: &Ingress) -> bool {
    ing.annotations().get(CANARY).map(String::as_str) == Some("true")
}

/// One path of an Ingress: where requests for host+path go.
#[derive(Clone, Debug)]
struct Route {
    namespace: String,
    ingress: String,
    host: String,
    path: String,
    service: String,
    port: String,
}

fn routes(ing: &Ingress) -> Vec<Route> {
    let mut out = Vec::new();
    let ns = ing.namespace().unwrap_or_default();
    for rule in ing
        .spec
        .as_ref()
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
    {
        for p in rule
            .http
            .as_ref()
            .map(|h| h.paths.as_slice())
            .unwrap_or_default()
        {
            let Some(svc) = p.backend.service.as_ref() else {
                continue;
            };
            let port = svc
                .port
                .as_ref()
                .and_then(|sp| sp.number.map(|n| n.to_string()).or_else(|| sp.name.clone()))
                .unwrap_or_default();
            out.push(Route {
                namespace: ns.clone(),
                ingress: ing.name_any(),
                host: rule.host.clone().unwrap_or_default(),
                path: p.path.clone().unwrap_or_else(|| "/".into()),
                service: svc.name.clone(),
                port,
            });
        }
    }
    out
}

fn canary_weight(ing: &Ingress) -> f64 {
    let get = |k: &str, d: f64| {
        ing.annotations()
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(d)
    };
    let total = get(CANARY_WEIGHT_TOTAL, 100.0);
    if total <= 0.0 {
        return 0.0;
    }
    (get(CANARY_WEIGHT, 0.0) / total).clamp(0.0, 1.0)
}

/// The canary Ingress's request rules, which ingress-nginx applies before the weight (docs,
/// user-guide/nginx-configuration/annotations.md#canary: "canary-by-header -> canary-by-cookie ->
/// canary-weight"; rootfs/etc/nginx/lua/balancer.lua `route_to_alternative_balancer`).
#[derive(Clone, Debug, Default)]
struct CanaryRules {
    header: Option<String>,
    header_value: Option<String>,
    header_pattern: Option<regex::Regex>,
    cookie: Option<String>,
}

fn canary_rules(ing: &Ingress) -> CanaryRules {
    let get = |k: &str| ing.annotations().get(k).filter(|v| !v.is_empty()).cloned();
    CanaryRules {
        header: get(CANARY_BY_HEADER),
        header_value: get(CANARY_BY_HEADER_VALUE),
        // ingress-nginx matches PCRE (ngx.re.match); Rust's regex covers the patterns Flagger
        // writes from a Canary's `regex` match.
        header_pattern: get(CANARY_BY_HEADER_PATTERN).and_then(|p| regex::Regex::new(&p).ok()),
        cookie: get(CANARY_BY_COOKIE),
    }
}

impl CanaryRules {
    /// Whether a request goes to the canary by its headers (`Some`), or by the weight (`None`).
    /// The header: its value equal to `canary-by-header-value` (if set), else matching
    /// `canary-by-header-pattern` (if set; ignored when a value is set), else "always" routes to
    /// the canary and "never" to the main backend; any other value is ignored. Then the cookie:
    /// "always" and "never" likewise, any other value ignored.
    fn route(&self, headers: &[(String, String)]) -> Option<bool> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        if let Some(v) = self.header.as_deref().and_then(header) {
            match (&self.header_value, &self.header_pattern) {
                (Some(want), _) if v == want => return Some(true),
                (None, Some(re)) if re.is_match(v) => return Some(true),
                (None, None) if v == "always" => return Some(true),
                (None, None) if v == "never" => return Some(false),
                _ => {}
            }
        }
        let cookie = self.cookie.as_deref().and_then(|name| {
            header("cookie")?.split(';').find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then_some(v)
            })
        });
        match cookie {
            Some("always") => Some(true),
            Some("never") => Some(false),
            _ => None,
        }
    }
}

/// The Deployments whose pod template a Service's selector matches.
fn selected_deployments(stores: &Stores, ns: &str, service: &str) -> Vec<Arc<Deployment>> {
    let Some(svc) = stores
        .services
        .state()
        .into_iter()
        .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == service)
    else {
        return Vec::new();
    };
    let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new();
    }
    stores
        .deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(ns))
        .filter(|d| {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect()
}

fn behaviour_of_service(stores: &Stores, ns: &str, service: &str) -> Behaviour {
    selected_deployments(stores, ns, service)
        .first()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.as_deref())
        .map(behaviour_of_image)
        .unwrap_or_else(|| behaviour_of_image(""))
}

/// Adds `n` (fractional) to a carried count and returns how many whole units it yields.
fn take_whole(carry: &mut HashMap<String, f64>, key: &str, n: f64) -> u64 {
    let c = carry.entry(key.to_string()).or_insert(0.0);
    *c += n;
    // 0.3 added ten times is 2.9999999999999996 in binary floating point: without the tolerance a
    // unit is lost to rounding now and then, and the split drifts from the weight.
    let whole = (*c + 1e-9).floor();
    *c -= whole;
    whole as u64
}

fn record(pm: &mut PodMetrics, series: Series, value: f64, buckets: &[f64]) {
    *pm.requests.entry(series.clone()).or_insert(0) += 1;
    let h = pm.durations.entry(series).or_default();
    h.buckets.resize(buckets.len(), 0);
    for (i, le) in buckets.iter().enumerate() {
        if value <= *le {
            h.buckets[i] += 1;
        }
    }
    h.sum += value;
    h.count += 1;
}

/// One backend of a [`Split`] and its weight.
#[derive(Clone, Debug)]
struct Backend {
    service: String,
    port: String,
    weight: f64,
}

/// Where the requests for one host and path go: split between backends by weight.
#[derive(Clone, Debug)]
struct Split {
    namespace: String,
    /// The Ingress or the HTTPRoute that routes them.
    route: String,
    host: String,
    path: String,
    /// ingress-nginx: the main Ingress's backend, then the canary Ingress's (if any).
    backends: Vec<Backend>,
    /// ingress-nginx: the canary Ingress's header and cookie rules (synthetic traffic carries no
    /// headers, so only real requests can match them).
    rules: CanaryRules,
}

impl Split {
    fn key(&self) -> String {
        format!(
            "{}/{}/{}{}",
            self.namespace, self.route, self.host, self.path
        )
    }
}

/// ingress-nginx: each path of a main Ingress of our class, with the canary Ingress of the same
/// host and path taking `canary-weight` of it.
fn nginx_splits(args: &Args, stores: &Stores) -> Vec<Split> {
    let ingresses: Vec<Arc<Ingress>> = stores
        .ingresses
        .state()
        .into_iter()
        .filter(|i| of_our_class(i, &args.ingress_class))
        .collect();
    let canaries: Vec<(Route, f64, CanaryRules)> = ingresses
        .iter()
        .filter(|i| is_canary(i))
        .flat_map(|i| {
            let w = canary_weight(i);
            let rules = canary_rules(i);
            routes(i).into_iter().map(move |r| (r, w, rules.clone()))
        })
        .collect();
    let mut out = Vec::new();
    for main in ingresses.iter().filter(|i| !is_canary(i)) {
        for route in routes(main) {
            let canary = canaries.iter().find(|(c, _, _)| {
                c.namespace == route.namespace && c.host == route.host && c.path == route.path
            });
            let w = canary.map(|(_, w, _)| *w).unwrap_or(0.0);
            let mut backends = vec![Backend {
                service: route.service.clone(),
                port: route.port.clone(),
                weight: 1.0 - w,
            }];
            if let Some((c, w, _)) = canary {
                backends.push(Backend {
                    service: c.service.clone(),
                    port: c.port.clone(),
                    weight: *w,
                });
            }
            out.push(Split {
                namespace: route.namespace,
                route: route.ingress,
                host: route.host,
                path: route.path,
                backends,
                rules: canary.map(|(_, _, r)| r.clone()).unwrap_or_default(),
            });
        }
    }
    out
}

/// Gateway API: each hostname and rule of the HTTPRoutes attached to a Gateway in the gateway
/// namespace, split by the rule's `backendRefs` weights (default 1; Gateway API spec, HTTPBackendRef).
fn gateway_splits(args: &Args, stores: &Stores) -> Vec<Split> {
    let mut out = Vec::new();
    for r in stores.routes.state() {
        let ns = r.namespace().unwrap_or_default();
        let spec = &r.data["spec"];
        let attached = spec["parentRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| {
                p["kind"].as_str().unwrap_or("Gateway") == "Gateway"
                    && p["namespace"].as_str().unwrap_or(&ns) == args.controller_namespace
            });
        if !attached {
            continue;
        }
        let hosts: Vec<String> = match spec["hostnames"].as_array() {
            Some(h) if !h.is_empty() => h
                .iter()
                .filter_map(|h| h.as_str().map(str::to_string))
                .collect(),
            _ => vec![String::new()],
        };
        for rule in spec["rules"].as_array().into_iter().flatten() {
            let path = rule["matches"][0]["path"]["value"]
                .as_str()
                .unwrap_or("/")
                .to_string();
            let backends: Vec<Backend> = rule["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["kind"].as_str().unwrap_or("Service") == "Service")
                .map(|b| Backend {
                    service: b["name"].as_str().unwrap_or_default().to_string(),
                    port: b["port"]
                        .as_i64()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    weight: b["weight"].as_f64().unwrap_or(1.0),
                })
                .collect();
            for host in &hosts {
                out.push(Split {
                    namespace: ns.clone(),
                    route: r.name_any(),
                    host: host.clone(),
                    path: path.clone(),
                    backends: backends.clone(),
                    rules: CanaryRules::default(),
                });
            }
        }
    }
    out
}

fn splits(args: &Args, stores: &Stores) -> Vec<Split> {
    if args.gateway_api {
        gateway_splits(args, stores)
    } else {
        nginx_splits(args, stores)
    }
}

/// How many of `n` requests each backend gets, by weight; the fractions carry over (deterministic).
fn shares(carry: &mut HashMap<String, f64>, key: &str, split: &Split, n: u64) -> Vec<u64> {
    let total: f64 = split.backends.iter().map(|b| b.weight.max(0.0)).sum();
    let mut counts = vec![0; split.backends.len()];
    if total <= 0.0 || counts.is_empty() {
        return counts;
    }
    let mut rest = n;
    for (i, b) in split.backends.iter().enumerate().skip(1) {
        let c = take_whole(
            carry,
            &format!("share {key} {}", b.service),
            n as f64 * b.weight.max(0.0) / total,
        )
        .min(rest);
        counts[i] = c;
        rest -= c;
    }
    counts[0] = rest;
    counts
}

/// The labels of one request as the data plane reports it.
fn series(args: &Args, split: &Split, backend: usize, status: u16, pod: &str) -> Series {
    let b = &split.backends[backend];
    let mut s: Series = if args.gateway_api {
        // Istio's standard metrics as a gateway pod reports them (reporter "source"); the app's
        // pods have no sidecar, so the destination workload is unknown while the Service is set.
        let workload = pod.rsplitn(3, '-').last().unwrap_or(pod).to_string();
        vec![
            ("connection_security_policy", "unknown".into()),
            ("destination_canonical_service", "unknown".into()),
            (
                "destination_service",
                format!("{}.{}.svc.cluster.local", b.service, split.namespace),
            ),
            ("destination_service_name", b.service.clone()),
            ("destination_service_namespace", split.namespace.clone()),
            ("destination_workload", "unknown".into()),
            ("destination_workload_namespace", "unknown".into()),
            ("reporter", "source".into()),
            ("request_protocol", "http".into()),
            ("response_code", status.to_string()),
            ("response_flags", "-".into()),
            ("source_canonical_service", workload.clone()),
            ("source_workload", workload),
            (
                "source_workload_namespace",
                args.controller_namespace.clone(),
            ),
        ]
    } else {
        let canary = if backend > 0 {
            format!("{}-{}-{}", split.namespace, b.service, b.port)
        } else {
            String::new()
        };
        vec![
            ("canary", canary),
            ("controller_class", args.controller_class.clone()),
            ("controller_namespace", args.controller_namespace.clone()),
            ("controller_pod", pod.to_string()),
            ("host", split.host.clone()),
            ("ingress", split.route.clone()),
            ("method", "GET".into()),
            ("namespace", split.namespace.clone()),
            ("path", split.path.clone()),
            // the main Ingress's backend, for canary requests too (monitor.lua)
            ("service", split.backends[0].service.clone()),
            ("status", status.to_string()),
        ]
    };
    s.sort();
    s
}

/// How a backend of a split answers now: its version's behaviour at the canary's current weight.
fn behaviour_in(stores: &Stores, split: &Split, backend: usize) -> Behaviour {
    let b = behaviour_of_service(stores, &split.namespace, &split.backends[backend].service);
    let total: f64 = split.backends.iter().map(|b| b.weight.max(0.0)).sum();
    let weight = if backend > 0 && total > 0.0 {
        split.backends[backend].weight.max(0.0) * 100.0 / total
    } else {
        0.0
    };
    behaviour_at(b, weight)
}

/// Records `count` requests of one backend, answered as its version behaves; returns how many failed.
fn send(
    args: &Args,
    stores: &Stores,
    st: &mut State,
    split: &Split,
    backend: usize,
    count: u64,
    pods: &[String],
) -> u64 {
    let svc = &split.backends[backend].service;
    let b = behaviour_in(stores, split, backend);
    let errors = take_whole(
        &mut st.carry,
        &format!("err {}/{svc}", split.namespace),
        count as f64 * b.error_percent / 100.0,
    )
    .min(count);
    let latency = if args.gateway_api {
        b.latency_ms as f64
    } else {
        b.latency_ms as f64 / 1000.0
    };
    for i in 0..count {
        let status = if i < errors { 503 } else { 200 };
        let pod = pods[st.round_robin % pods.len()].clone();
        st.round_robin = st.round_robin.wrapping_add(1);
        let series = series(args, split, backend, status, &pod);
        record(
            st.pods.entry(pod).or_default(),
            series,
            latency,
            args.buckets(),
        );
    }
    errors
}

/// One tick of synthetic traffic through every routed host and path.
fn traffic_tick(args: &Args, stores: &Stores, state: &Mutex<State>) {
    let pods = ready_controller_pods(stores);
    if pods.is_empty() {
        return;
    }
    let splits = splits(args, stores);
    let Ok(mut st) = state.lock() else { return };
    let per_tick = f64::from(args.rps) * TICK.as_secs_f64();
    for split in &splits {
        let key = split.key();
        let n = take_whole(&mut st.carry, &format!("req {key}"), per_tick);
        let counts = shares(&mut st.carry, &key, split, n);
        for (backend, count) in counts.into_iter().enumerate() {
            send(args, stores, &mut st, split, backend, count, &pods);
        }
    }
}

/// One real request through the data plane (e.g. the load tester's `hey`): routed by its Host
/// header as the synthetic traffic is, to the canary by the canary Ingress's header and cookie
/// rules where they decide (ingress-nginx), else by the weights; recorded the same way. Returns
/// the status, the latency and the backend Service that answered.
fn through_gateway(
    args: &Args,
    stores: &Stores,
    state: &Mutex<State>,
    host: &str,
    headers: &[(String, String)],
) -> Option<(u16, u64, String)> {
    let pods = ready_controller_pods(stores);
    let host = host.split(':').next().unwrap_or(host);
    let split = splits(args, stores)
        .into_iter()
        .find(|s| s.host == host || s.host.is_empty())?;
    if pods.is_empty() {
        return None;
    }
    let mut st = state.lock().ok()?;
    let backend = match split.rules.route(headers) {
        Some(to_canary) if split.backends.len() > 1 => usize::from(to_canary),
        _ => {
            let key = format!("live {}", split.key());
            let counts = shares(&mut st.carry, &key, &split, 1);
            counts.iter().position(|c| *c > 0)?
        }
    };
    let latency = behaviour_in(stores, &split, backend).latency_ms;
    let failed = send(args, stores, &mut st, &split, backend, 1, &pods) > 0;
    let service = split.backends[backend].service.clone();
    Some((if failed { 503 } else { 200 }, latency, service))
}

fn ready_controller_pods(stores: &Stores) -> Vec<String> {
    let mut v: Vec<String> = stores
        .pods
        .state()
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    v.sort();
    v
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(s: &Series, le: Option<&str>) -> String {
    let mut pairs: Vec<(&str, &str)> = s.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if let Some(le) = le {
        pairs.push(("le", le));
        pairs.sort();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// One histogram family of a pod's request series in the text exposition.
fn write_histogram(out: &mut String, args: &Args, pm: &PodMetrics, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (s, h) in &pm.durations {
        for (le, n) in args.buckets().iter().zip(&h.buckets) {
            let _ = writeln!(out, "{name}_bucket{} {n}", labels(s, Some(&le.to_string())));
        }
        let _ = writeln!(out, "{name}_bucket{} {}", labels(s, Some("+Inf")), h.count);
        let _ = writeln!(out, "{name}_sum{} {}", labels(s, None), h.sum);
        let _ = writeln!(out, "{name}_count{} {}", labels(s, None), h.count);
    }
}

/// The histograms a data-plane pod exports for its requests (name, help). ingress-nginx
/// (socket.go, controller-v1.15.1) has two with the same labels: `requestTime` (the whole request)
/// and `responseTime` (`response_duration_seconds`, the upstream's response, which Flagger
/// 1.44.0's built-in nginx `request-duration` check reads, pkg/metrics/observers/nginx.go). Here no
/// client is slow, so both are the upstream's latency.
fn histograms(args: &Args) -> &'static [(&'static str, &'static str)] {
    if args.gateway_api {
        &[(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
        )]
    } else {
        &[
            (
                "nginx_ingress_controller_request_duration_seconds",
                "The request processing time in milliseconds",
            ),
            (
                "nginx_ingress_controller_response_duration_seconds",
                "The time spent on receiving the response from the upstream server",
            ),
        ]
    }
}

/// The text exposition of one data-plane pod's request series.
fn exposition(args: &Args, state: &State, pod: &str) -> String {
    let mut out = String::new();
    let empty = PodMetrics::default();
    let pm = state.pods.get(pod).unwrap_or(&empty);
    let (requests, requests_help) = if args.gateway_api {
        ("istio_requests_total", "Total requests")
    } else {
        (
            "nginx_ingress_controller_requests",
            "The total number of client requests",
        )
    };
    let _ = writeln!(out, "# HELP {requests} {requests_help}");
    let _ = writeln!(out, "# TYPE {requests} counter");
    for (s, n) in &pm.requests {
        let _ = writeln!(out, "{requests}{} {n}", labels(s, None));
    }
    for (name, help) in histograms(args) {
        write_histogram(&mut out, args, pm, name, help);
    }
    out
}

/// What answers on one address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Role {
    Metrics {
        pod: String,
    },
    App {
        namespace: String,
        service: String,
    },
    Forward {
        to_port: u16,
    },
    Admission,
    /// The gateway Service's listener port (`--gateway-api`): routed by Host.
    Gateway,
}

/// Reads one HTTP request's head (enough to route it) and returns its path and Host header.
/// One request's head as the data plane routes it: path, Host and every header.
struct Head {
    path: String,
    host: String,
    headers: Vec<(String, String)>,
}

async fn read_head(conn: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1)?.to_string();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Some(Head {
        path,
        host,
        headers,
    })
}

async fn respond(conn: &mut TcpStream, code: u16, content_type: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(msg.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// A TLS acceptor with the admission Secret's certificate, retried until the Secret is there.
async fn admission_tls(client: &Client, args: &Args) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &args.controller_namespace);
    loop {
        let attempt = async {
            let s = secrets.get(&args.admission_secret).await?;
            let data = s.data.unwrap_or_default();
            let crt = data.get("tls.crt").context("no tls.crt")?;
            let key = data.get("tls.key").context("no tls.key")?;
            let certs = CertificateDer::pem_slice_iter(&crt.0).collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(&key.0)?;
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
            anyhow::Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        };
        match attempt.await {
            Ok(a) => return a,
            Err(e) => {
                tracing::warn!("admission certificate: {e:#}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Answers one AdmissionReview over TLS: allowed, with the request's uid.
async fn admit(acceptor: tokio_rustls::TlsAcceptor, conn: TcpStream) {
    let Ok(mut tls) = acceptor.accept(conn).await else {
        return;
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let Ok(n) = tls.read(&mut chunk).await else {
            return;
        };
        if n == 0 || buf.len() > 4 * 1024 * 1024 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + len {
        let Ok(n) = tls.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let review: serde_json::Value =
        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": review["apiVersion"].as_str().unwrap_or("admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": true},
    })
    .to_string();
    let msg = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(msg.as_bytes()).await;
    let _ = tls.shutdown().await;
}

async fn serve(
    addr: SocketAddr,
    role: Role,
    args: Arc<Args>,
    stores: Arc<Stores>,
    state: Arc<Mutex<State>>,
    client: Client,
) {
    let acceptor = match role {
        Role::Admission => Some(admission_tls(&client, &args).await),
        _ => None,
    };
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!("bind {addr} ({role:?}): {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!("serving {role:?} on {addr}");
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let (role, args, stores, state) =
            (role.clone(), args.clone(), stores.clone(), state.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match role {
                Role::Admission => {
                    if let Some(a) = acceptor {
                        admit(a, conn).await;
                    }
                }
                Role::Forward { to_port } => {
                    if let Ok(mut up) = TcpStream::connect(("127.0.0.1", to_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                }
                Role::Metrics { pod } => {
                    let Some(head) = read_head(&mut conn).await else {
                        return;
                    };
                    if head.path != args.metrics_path() {
                        respond(&mut conn, 404, "text/plain", "not found\n").await;
                        return;
                    }
                    let body = match state.lock() {
                        Ok(st) => exposition(&args, &st, &pod),
                        Err(_) => return,
                    };
                    respond(&mut conn, 200, "text/plain; version=0.0.4", &body).await;
                }
                Role::App { namespace, service } => {
                    if read_head(&mut conn).await.is_none() {
                        return;
                    }
                    // reached directly (e.g. the acceptance test), not as the weighted canary
                    let b = behaviour_at(behaviour_of_service(&stores, &namespace, &service), 0.0);
                    let fail = match state.lock() {
                        Ok(mut st) => {
                            take_whole(
                                &mut st.carry,
                                &format!("direct err {namespace}/{service}"),
                                b.error_percent / 100.0,
                            ) > 0
                        }
                        Err(_) => false,
                    };
                    tokio::time::sleep(Duration::from_millis(b.latency_ms)).await;
                    let code = if fail { 503 } else { 200 };
                    respond(&mut conn, code, "text/plain", &format!("{service}\n")).await;
                }
                Role::Gateway => {
                    let Some(head) = read_head(&mut conn).await else {
                        return;
                    };
                    match through_gateway(&args, &stores, &state, &head.host, &head.headers) {
                        // the body names the backend, as the app stand-in's does
                        Some((code, latency_ms, service)) => {
                            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
                            respond(&mut conn, code, "text/plain", &format!("{service}\n")).await;
                        }
                        // Istio, and ingress-nginx's default backend, answer 404 when no route
                        // matches the host
                        None => respond(&mut conn, 404, "text/plain", "not found\n").await,
                    }
                }
            }
        });
    }
}

/// The target port a Service port reaches, resolving a named port against the selected pods.
fn target_port(
    stores: &Stores,
    svc: &Service,
    port: &k8s_openapi::api::core::v1::ServicePort,
) -> Option<u16> {
    match &port.target_port {
        None => u16::try_from(port.port).ok(),
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(name)) => {
            let ns = svc.namespace().unwrap_or_default();
            selected_deployments(stores, &ns, &svc.name_any())
                .iter()
                .filter_map(|d| d.spec.as_ref()?.template.spec.as_ref())
                .flat_map(|p| p.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }
    }
}

/// The port `--moved` gives the process behind Service `ns/name`.
fn moved_port(args: &Args, ns: &str, name: &str) -> Option<u16> {
    args.moved.iter().find_map(|m| {
        let (svc, port) = m.split_once('=')?;
        (svc == format!("{ns}/{name}")).then(|| port.parse().ok())?
    })
}

/// Addresses to put on `lo`, listeners to run, and the hosts-file lines, from the current objects.
/// What should exist now: addresses on `lo`, listeners, hosts-file lines.
struct Desired {
    ips: HashSet<IpAddr>,
    listeners: BTreeSet<(SocketAddr, Role)>,
    hosts: Vec<String>,
}

fn desired(args: &Args, stores: &Stores) -> Desired {
    let mut ips = HashSet::new();
    let mut listeners = BTreeSet::new();
    let mut hosts = Vec::new();
    let app_services: HashSet<(String, String)> = splits(args, stores)
        .into_iter()
        .flat_map(|s| {
            let ns = s.namespace;
            s.backends.into_iter().map(move |b| (ns.clone(), b.service))
        })
        .collect();
    let mut services = stores.services.state();
    services.sort_by_key(|s| (s.namespace(), s.name_any()));
    // A bare name resolves in the pod's own namespace (the first entry of its DNS search path,
    // `<ns>.svc.cluster.local`; Kubernetes docs, "DNS for Services and Pods"). One hosts file
    // serves every process here, so a bare name is given where it means one Service: in the
    // `--search-namespace` namespaces first, else wherever the name is unique.
    let mut bare: HashMap<String, Vec<String>> = HashMap::new();
    for svc in &services {
        bare.entry(svc.name_any())
            .or_default()
            .push(svc.namespace().unwrap_or_default());
    }
    let bare_in = |name: &str, ns: &str| {
        let nss = bare.get(name).map(Vec::as_slice).unwrap_or_default();
        match nss.iter().find(|n| args.search_namespace.contains(n)) {
            Some(n) => n == ns,
            None => nss.len() == 1,
        }
    };
    for svc in services {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let Some(ip) = svc
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        ips.insert(ip);
        let mut names = vec![
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ];
        if bare_in(&name, &ns) {
            names.insert(0, name.clone());
        }
        hosts.push(format!("{ip} {}", names.join(" ")));
        let is_app = app_services.contains(&(ns.clone(), name.clone()));
        for port in svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
        {
            let Ok(p) = u16::try_from(port.port) else {
                continue;
            };
            let addr = SocketAddr::new(ip, p);
            let is_gateway = ns == args.controller_namespace
                && svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if is_gateway {
                // Istio's status port is not a listener; ingress-nginx's https port would need
                // the controller's TLS, which is not here (its http port serves the same routes).
                let serves = if args.gateway_api {
                    p != 15021
                } else {
                    port.name.as_deref() == Some("http") || p == 80
                };
                if serves {
                    listeners.insert((addr, Role::Gateway));
                }
            } else if ns == args.controller_namespace && name == args.admission_service {
                listeners.insert((addr, Role::Admission));
            } else if is_app {
                let role = Role::App {
                    namespace: ns.clone(),
                    service: name.clone(),
                };
                listeners.insert((addr, role));
            } else if let Some(t) =
                moved_port(args, &ns, &name).or_else(|| target_port(stores, &svc, &port))
                && t != p
            {
                listeners.insert((addr, Role::Forward { to_port: t }));
            }
        }
    }
    for pod in stores.pods.state() {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        ips.insert(ip);
        listeners.insert((
            SocketAddr::new(ip, args.metrics_port),
            Role::Metrics {
                pod: pod.name_any(),
            },
        ));
    }
    Desired {
        ips,
        listeners,
        hosts,
    }
}

fn add_address(ip: IpAddr) {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    // `replace` is idempotent: an address already there is no error.
    let status = std::process::Command::new("ip")
        .args(["addr", "replace", &format!("{ip}/{prefix}"), "dev", "lo"])
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        tracing::warn!("cannot add {ip} to lo: {status:?}");
    }
}

/// Rewrites our block of the hosts file in place, keeping every other line.
fn write_hosts(path: &std::path::Path, lines: &[String]) -> Result<()> {
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let mut kept = Vec::new();
    let mut inside = false;
    for l in current.lines() {
        if l == MARK_BEGIN {
            inside = true;
        } else if l == MARK_END {
            inside = false;
        } else if !inside {
            kept.push(l.to_string());
        }
    }
    let mut out = kept.join("\n");
    out.push('\n');
    out.push_str(MARK_BEGIN);
    out.push('\n');
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(MARK_END);
    out.push('\n');
    if out != current {
        // write truncates the same file: `ip netns exec` bind-mounted this inode over /etc/hosts
        std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Arc::new(Args::parse());
    let client = gridos_testenv_standins::client(&args.kubeconfig).await?;
    // fail early with a clear message when the API is not there
    Api::<Service>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("listing Services")?;
    let (group, version, kind) = HTTPROUTE;
    let route_resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let routes = if args.gateway_api {
        spawn_reflector(
            Api::<DynamicObject>::all_with(client.clone(), &route_resource),
            Default::default(),
            route_resource,
        )
    } else {
        reflector::store::Writer::new(route_resource).as_reader()
    };
    let stores = Arc::new(Stores {
        ingresses: spawn_reflector(Api::<Ingress>::all(client.clone()), Default::default(), ()),
        routes,
        services: spawn_reflector(Api::<Service>::all(client.clone()), Default::default(), ()),
        deployments: spawn_reflector(
            Api::<Deployment>::all(client.clone()),
            Default::default(),
            (),
        ),
        pods: spawn_reflector(
            Api::<Pod>::namespaced(client.clone(), &args.controller_namespace),
            watcher::Config::default().labels(&args.controller_selector),
            (),
        ),
    });
    let state = Arc::new(Mutex::new(State::default()));

    let traffic = {
        let (args, stores, state) = (args.clone(), stores.clone(), state.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                traffic_tick(&args, &stores, &state);
            }
        })
    };

    let mut added: HashSet<IpAddr> = HashSet::new();
    let mut running: BTreeMap<(SocketAddr, Role), JoinHandle<()>> = BTreeMap::new();
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let Desired {
            ips,
            listeners,
            hosts,
        } = desired(&args, &stores);
        for ip in ips {
            if added.insert(ip) {
                add_address(ip);
            }
        }
        running.retain(|k, h| {
            let keep = listeners.contains(k);
            if !keep {
                h.abort();
            }
            keep
        });
        for (addr, role) in listeners {
            running.entry((addr, role.clone())).or_insert_with(|| {
                tokio::spawn(serve(
                    addr,
                    role,
                    args.clone(),
                    stores.clone(),
                    state.clone(),
                    client.clone(),
                ))
            });
        }
        if let Some(path) = &args.hosts_file
            && let Err(e) = write_hosts(path, &hosts)
        {
            tracing::warn!("{e:#}");
        }
    }
    traffic.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_from_tag() {
        assert_eq!(
            behaviour_of_image("ghcr.io/x/gridos:1.2-err3").error_percent,
            3.0
        );
        assert_eq!(
            behaviour_of_image("localhost:5000/gridos:2-slow700").latency_ms,
            700
        );
        assert_eq!(behaviour_of_image("gridos:2@sha256:abc").latency_ms, 20);
        assert_eq!(
            behaviour_of_image("localhost:5000/gridos").error_percent,
            0.0
        );
    }

    #[test]
    fn a_version_can_fail_from_a_step_on() {
        let b = behaviour_of_image("gridos:1.1.0-err100-at50");
        assert_eq!(b.from_weight, 50.0);
        assert_eq!(behaviour_at(b, 25.0).error_percent, 0.0);
        assert_eq!(behaviour_at(b, 50.0).error_percent, 100.0);
        let always = behaviour_of_image("gridos:1.1.0-err3");
        assert_eq!(behaviour_at(always, 0.0).error_percent, 3.0);
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_and_cookie_rules_route_as_ingress_nginx() {
        let by_value = CanaryRules {
            header: Some("X-Canary".into()),
            header_value: Some("insider".into()),
            cookie: Some("canary".into()),
            ..CanaryRules::default()
        };
        assert_eq!(by_value.route(&h(&[("x-canary", "insider")])), Some(true));
        // With a value set, "always" is just another value: ignored, the cookie decides next.
        assert_eq!(by_value.route(&h(&[("X-Canary", "always")])), None);
        assert_eq!(
            by_value.route(&h(&[
                ("X-Canary", "other"),
                ("Cookie", "a=1; canary=always")
            ])),
            Some(true)
        );
        assert_eq!(
            by_value.route(&h(&[("Cookie", "canary=never")])),
            Some(false)
        );
        assert_eq!(by_value.route(&h(&[("Cookie", "canary=yes")])), None);
        assert_eq!(by_value.route(&[]), None);

        let plain = CanaryRules {
            header: Some("X-Canary".into()),
            ..CanaryRules::default()
        };
        assert_eq!(plain.route(&h(&[("X-Canary", "always")])), Some(true));
        assert_eq!(plain.route(&h(&[("X-Canary", "never")])), Some(false));
        assert_eq!(plain.route(&h(&[("X-Canary", "insider")])), None);

        let pattern = CanaryRules {
            header: Some("User-Agent".into()),
            header_pattern: regex::Regex::new(".*Firefox.*").ok(),
            ..CanaryRules::default()
        };
        assert_eq!(
            pattern.route(&h(&[("User-Agent", "Mozilla/5.0 Firefox/120")])),
            Some(true)
        );
        assert_eq!(pattern.route(&h(&[("User-Agent", "curl/8")])), None);
    }

    #[test]
    fn weights_split_exactly() {
        let split = Split {
            namespace: "gridos".into(),
            route: "gridos".into(),
            host: "app.example.com".into(),
            path: "/".into(),
            backends: vec![
                Backend {
                    service: "gridos-primary".into(),
                    port: "80".into(),
                    weight: 90.0,
                },
                Backend {
                    service: "gridos-canary".into(),
                    port: "80".into(),
                    weight: 10.0,
                },
            ],
            rules: CanaryRules::default(),
        };
        let mut c = HashMap::new();
        let mut got = [0u64; 2];
        for _ in 0..100 {
            let s = shares(&mut c, "k", &split, 10);
            got[0] += s[0];
            got[1] += s[1];
        }
        assert_eq!(got, [900, 100]);
    }

    #[test]
    fn carry_splits_exactly() {
        let mut c = HashMap::new();
        let total: u64 = (0..100).map(|_| take_whole(&mut c, "k", 0.3)).sum();
        assert_eq!(total, 30);
    }
}
