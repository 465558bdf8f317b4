//! Profiles and values: the embedded profiles, the user's own files and `--set`, merged and validated into one [`Values`].
//!
//! Everything a template may read lives here with its default, so a template can never see a
//! missing value (templates render in strict mode) and unknown keys are refused with the nearest
//! valid one named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::InputError;

/// Which Azure service sits in front of the ingress controller; decides the Service shape and the guidance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Front {
    Nginx,
    Appgw,
    Frontdoor,
}

/// What routes the app's traffic and shifts the canary weights: the ingress-nginx controller
/// gridos-setup installs, or the Gateway API on AKS application routing (`approuting-istio`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficLayer {
    IngressNginx,
    GatewayApi,
}

impl TrafficLayer {
    /// The value's spelling, as `--traffic` and `traffic.layer` take it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficLayer::IngressNginx => "ingress-nginx",
            TrafficLayer::GatewayApi => "gateway-api",
        }
    }
}

/// The layers in the order the picker offers them: today's default first.
pub const LAYERS: [TrafficLayer; 2] = [TrafficLayer::IngressNginx, TrafficLayer::GatewayApi];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Traffic {
    /// `ingress-nginx` (default) or `gateway-api`.
    pub layer: TrafficLayer,
}

/// The Gateway gridos-setup creates with `traffic.layer: gateway-api`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gateway {
    /// The Gateway's name; AKS names its Deployment and Service `<name>-approuting-istio`.
    pub name: String,
    pub tls: GatewayTls,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTls {
    /// A `kubernetes.io/tls` Secret you create in the gateway namespace; set, the Gateway gets an
    /// HTTPS listener on 443 for the host. Empty: HTTP on 80 only.
    pub secret_name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Values {
    /// Profile name, shown in output.
    pub name: String,
    pub front: Front,
    pub traffic: Traffic,
    /// One line shown by `profiles` and the picker.
    pub description: String,
    /// The DNS name the app is served on; required before rendering.
    pub host: String,
    pub namespaces: Namespaces,
    pub pod_security: PodSecurity,
    /// Registry mirror (e.g. `myacr.azurecr.io`) that replaces every image's registry; empty keeps upstream's.
    pub image_registry: String,
    pub ingress_controller: IngressController,
    pub gateway: Gateway,
    pub flagger: Component,
    pub prometheus: Prometheus,
    pub loadtester: Component,
    pub grafana: Grafana,
    pub service_monitor: ServiceMonitor,
    pub canary: Canary,
    pub alerting: Alerting,
    pub front_door: FrontDoor,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespaces {
    pub ingress: String,
    pub flagger: String,
    pub app: String,
    /// The Gateway's namespace (`traffic.layer: gateway-api`); AKS runs the gateway's pods there.
    pub gateway: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSecurity {
    /// `enforce` level of the app namespace (it holds the user's own workload); `warn`/`audit` are always restricted.
    pub app_enforce: PodSecurityLevel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    pub requests: CpuMemory,
    pub limits: CpuMemory,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuMemory {
    pub cpu: String,
    pub memory: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    pub replicas: u32,
    pub resources: Resources,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressController {
    pub replicas: u32,
    pub resources: Resources,
    pub service: LoadBalancerService,
    pub real_client_ip: RealClientIp,
}

/// Whether nginx takes the client's address from `X-Forwarded-For`, and from whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RealClientIp {
    /// `auto`: on behind Application Gateway and Front Door, off when clients connect directly (`nginx`).
    pub enabled: Toggle,
    /// Proxies allowed to set `X-Forwarded-For`; empty means the front's own ranges ([`front_ranges`]).
    pub trusted_cidrs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerService {
    /// Azure internal load balancer (private IP from the VNet).
    pub internal: bool,
    /// `service.beta.kubernetes.io/azure-allowed-service-tags`, e.g. `AzureFrontDoor.Backend`.
    pub allowed_service_tags: Vec<String>,
    /// A pre-created Standard public IP by name (`azure-pip-name`): the address outlives the Service.
    pub public_ip_name: String,
    /// That public IP's resource group, when it is not the node resource group
    /// (`azure-load-balancer-resource-group`).
    pub public_ip_resource_group: String,
    /// `azure-dns-label-name`: `<label>.<region>.cloudapp.azure.com` follows the public address.
    pub dns_label: String,
    /// A fixed private address for the internal load balancer (`azure-load-balancer-ipv4`).
    pub private_ip: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prometheus {
    pub retention: String,
    /// Size of its data volume (`Mi` or `Gi`); the TSDB is cut at 80% of it (`--storage.tsdb.retention.size`).
    pub storage_size: String,
    pub resources: Resources,
}

/// Grafana with our Prometheus as its data source and the canary dashboard; optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grafana {
    pub enabled: bool,
    pub resources: Resources,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    Auto,
    On,
    Off,
}

/// The API groups that serve a ServiceMonitor: prometheus-operator's, then Azure Monitor managed
/// Prometheus's (which ignores the operator's group).
pub const SERVICE_MONITOR_GROUPS: [&str; 2] = ["monitoring.coreos.com", "azmonitoring.coreos.com"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitor {
    /// `auto`: only when the cluster serves the group's ServiceMonitor kind (install time); `render` treats it as on.
    pub enabled: Toggle,
    /// `monitoring.coreos.com` (prometheus-operator) or `azmonitoring.coreos.com` (Azure Monitor managed Prometheus).
    pub group: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// Flagger analysis interval, a Go duration such as `1m`.
    pub interval: String,
    /// Failed checks before Flagger rolls back.
    pub threshold: u32,
    /// Canary weights in percent, strictly increasing, each 1..=100.
    pub step_weights: Vec<u32>,
    /// Minimum request success rate in percent (0..=100).
    pub success_rate_min: f64,
    /// Maximum p99 request duration in milliseconds.
    pub latency_p99_max_ms: u32,
    /// Maximum error (5xx) rate in percent (0..=100).
    pub error_rate_max: f64,
    /// Port of the `gridos` Service Flagger generates, and the container port it targets.
    pub port: u16,
    pub target_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertProviderKind {
    None,
    Msteams,
    Slack,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alerting {
    pub provider: AlertProviderKind,
    /// Secret in the app namespace whose `address` key holds the webhook URL.
    pub secret_name: String,
    /// Slack channel (Slack only).
    pub channel: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontDoor {
    /// Front Door Premium Private Link origin: internal LB plus a Private Link service.
    pub private_link: bool,
    /// Protocol from Front Door to the origin: `auto` is HTTPS to a public origin, HTTP over Private Link.
    pub origin_protocol: OriginProtocol,
    /// The Front Door's ID (`az afd profile show --query frontDoorId`), a GUID; when set, the load
    /// tester sends it as `X-Azure-FDID` so its requests pass an origin lock on that header.
    pub id: String,
    /// With Private Link: the subnet (name, in the cluster's VNet) the Private Link service takes
    /// its NAT addresses from (`azure-pls-ip-configuration-subnet`); empty is the load balancer's
    /// own subnet. With externalTrafficPolicy Local under Azure CNI it must be apart from the pods'
    /// (cloud-provider-azure, "Azure Private Link Service integration").
    pub private_link_subnet: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginProtocol {
    Auto,
    Https,
    Http,
}

fn resources(req_cpu: &str, req_mem: &str, lim_cpu: &str, lim_mem: &str) -> Resources {
    Resources {
        requests: CpuMemory {
            cpu: req_cpu.into(),
            memory: req_mem.into(),
        },
        limits: CpuMemory {
            cpu: lim_cpu.into(),
            memory: lim_mem.into(),
        },
    }
}

impl Default for Values {
    fn default() -> Self {
        Values {
            name: "custom".into(),
            front: Front::Nginx,
            traffic: Traffic {
                layer: TrafficLayer::IngressNginx,
            },
            description: String::new(),
            host: String::new(),
            namespaces: Namespaces {
                ingress: "ingress-nginx".into(),
                flagger: "flagger-system".into(),
                app: "gridos".into(),
                gateway: "gridos-gateway".into(),
            },
            pod_security: PodSecurity {
                app_enforce: PodSecurityLevel::Baseline,
            },
            image_registry: String::new(),
            ingress_controller: IngressController {
                replicas: 2,
                resources: resources("100m", "90Mi", "1", "512Mi"),
                service: LoadBalancerService {
                    internal: false,
                    allowed_service_tags: Vec::new(),
                    public_ip_name: String::new(),
                    public_ip_resource_group: String::new(),
                    dns_label: String::new(),
                    private_ip: String::new(),
                },
                real_client_ip: RealClientIp {
                    enabled: Toggle::Auto,
                    trusted_cidrs: Vec::new(),
                },
            },
            gateway: Gateway {
                name: "gridos".into(),
                tls: GatewayTls {
                    secret_name: String::new(),
                },
            },
            flagger: Component {
                replicas: 1,
                resources: resources("10m", "32Mi", "1", "512Mi"),
            },
            prometheus: Prometheus {
                retention: "2h".into(),
                storage_size: "2Gi".into(),
                resources: resources("100m", "256Mi", "1", "1Gi"),
            },
            loadtester: Component {
                replicas: 1,
                resources: resources("10m", "64Mi", "1", "512Mi"),
            },
            grafana: Grafana {
                enabled: true,
                resources: resources("50m", "128Mi", "1", "512Mi"),
            },
            service_monitor: ServiceMonitor {
                enabled: Toggle::Auto,
                group: "monitoring.coreos.com".into(),
            },
            canary: Canary {
                interval: "1m".into(),
                threshold: 5,
                step_weights: vec![10, 25, 50],
                success_rate_min: 99.0,
                latency_p99_max_ms: 500,
                error_rate_max: 1.0,
                port: 80,
                target_port: 8080,
            },
            alerting: Alerting {
                provider: AlertProviderKind::None,
                secret_name: String::new(),
                channel: String::new(),
            },
            front_door: FrontDoor {
                private_link: false,
                origin_protocol: OriginProtocol::Auto,
                id: String::new(),
                private_link_subnet: String::new(),
            },
        }
    }
}

/// Where a profile comes from: one of the embedded ones or a file of the user's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileSource {
    Builtin(String),
    File(PathBuf),
}

impl ProfileSource {
    /// A name with a path separator or a YAML extension is a file, anything else an embedded profile.
    pub fn parse(arg: &str) -> Self {
        if arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") {
            ProfileSource::File(PathBuf::from(arg))
        } else {
            ProfileSource::Builtin(arg.to_string())
        }
    }
}

#[derive(rust_embed::RustEmbed)]
#[folder = "profiles/"]
#[include = "*.yaml"]
struct Embedded;

/// The embedded profiles, in the order people meet them: the plain one first.
pub const BUILTIN: [&str; 3] = ["nginx", "appgw", "frontdoor"];

/// What the user asked for, before it is merged: `--profile`, `--values` (in order), `--set` (in order), `--host`.
#[derive(Clone, Debug, Default)]
pub struct ValuesRequest {
    pub profile: Option<ProfileSource>,
    pub values_files: Vec<PathBuf>,
    pub sets: Vec<String>,
    pub host: Option<String>,
}

/// One layer of values and where it came from, for error messages.
struct Layer {
    origin: String,
    data: Json,
}

fn builtin_text(name: &str) -> Option<String> {
    let file = Embedded::get(&format!("{name}.yaml"))?;
    String::from_utf8(file.data.into_owned()).ok()
}

fn parse_yaml(file: &Path, text: &str) -> Result<Json, InputError> {
    let data: Json = serde_saphyr::from_str(text).map_err(|e| yaml_error(file, &e))?;
    match data {
        Json::Object(_) => Ok(data),
        // An empty file is an empty set of values, as for helm.
        Json::Null => Ok(Json::Object(Default::default())),
        _ => Err(InputError::NotAMapping {
            origin: file.display().to_string(),
            what: "the document".into(),
        }),
    }
}

fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> InputError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    // The library's message carries its own location and a source snippet over several lines; the
    // file:line:column prefix replaces them, so the error stays on one line.
    let full = e.to_string();
    let first = full
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ");
    let reason = match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest.to_string(),
        _ => first.to_string(),
    };
    InputError::Yaml {
        file: file.to_path_buf(),
        line,
        column,
        reason,
    }
}

fn load_profile(source: &ProfileSource) -> Result<Layer, InputError> {
    match source {
        ProfileSource::Builtin(name) => {
            let text = BUILTIN
                .contains(&name.as_str())
                .then(|| builtin_text(name))
                .flatten()
                .ok_or_else(|| InputError::UnknownProfile {
                    name: name.clone(),
                    valid: BUILTIN.iter().map(|s| s.to_string()).collect(),
                })?;
            let path = PathBuf::from(format!("profiles/{name}.yaml"));
            Ok(Layer {
                origin: format!("profile {name}"),
                data: parse_yaml(&path, &text)?,
            })
        }
        ProfileSource::File(path) => Ok(Layer {
            origin: path.display().to_string(),
            data: read_yaml(path)?,
        }),
    }
}

fn read_yaml(path: &Path) -> Result<Json, InputError> {
    let text = std::fs::read_to_string(path).map_err(|e| InputError::Unreadable {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })?;
    parse_yaml(path, &text)
}

/// Looks a dotted path up in the defaults; `None` when it names no key.
fn lookup<'a>(defaults: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.')
        .try_fold(defaults, |node, key| node.as_object()?.get(key))
}

fn set_layer(defaults: &Json, arg: &str) -> Result<Layer, InputError> {
    let (path, raw) = arg
        .split_once('=')
        .ok_or_else(|| InputError::SetSyntax { arg: arg.into() })?;
    let origin = format!("--set {arg}");
    let Some(target) = lookup(defaults, path) else {
        return Err(unknown_key(defaults, &origin, path));
    };
    // A string key takes the text as it is (so --set host=123 stays a string); others parse as YAML.
    let value = match target {
        Json::String(_) => Json::String(raw.to_string()),
        _ => serde_saphyr::from_str::<Json>(raw).map_err(|e| InputError::WrongType {
            origin: origin.clone(),
            path: path.into(),
            reason: format!("{raw:?} is not a value: {e}"),
        })?,
    };
    let data = path.rsplit('.').fold(value, |inner, key| {
        let mut m = serde_json::Map::new();
        m.insert(key.to_string(), inner);
        Json::Object(m)
    });
    Ok(Layer { origin, data })
}

/// The nearest valid key among those the defaults have at the same level, for "did you mean".
fn unknown_key(defaults: &Json, origin: &str, path: &str) -> InputError {
    let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    let siblings: Vec<String> = if parent.is_empty() {
        Some(defaults)
    } else {
        lookup(defaults, parent)
    }
    .and_then(Json::as_object)
    .map(|m| m.keys().cloned().collect())
    .unwrap_or_default();
    let nearest = siblings
        .iter()
        .map(|k| {
            (
                strsim::levenshtein(&k.to_lowercase(), &leaf.to_lowercase()),
                k,
            )
        })
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min()
        .map(|(_, k)| {
            if parent.is_empty() {
                k.clone()
            } else {
                format!("{parent}.{k}")
            }
        });
    InputError::UnknownKey {
        origin: origin.into(),
        path: path.into(),
        nearest,
    }
}

/// Checks that every key of `layer` exists in the defaults, naming the first that does not.
fn check_keys(root: &Json, layer: &Json, origin: &str, prefix: &str) -> Result<(), InputError> {
    let here = if prefix.is_empty() {
        Some(root)
    } else {
        lookup(root, prefix)
    };
    let (Some(def), Some(obj)) = (here.and_then(Json::as_object), layer.as_object()) else {
        return Ok(());
    };
    for (k, v) in obj {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match def.get(k) {
            None => return Err(unknown_key(root, origin, &path)),
            Some(Json::Object(_)) if !v.is_object() => {
                return Err(InputError::WrongType {
                    origin: origin.into(),
                    path,
                    reason: "expected a mapping of keys".into(),
                });
            }
            Some(Json::Object(_)) => check_keys(root, v, origin, &path)?,
            Some(_) => {}
        }
    }
    Ok(())
}

/// Mappings merge key by key; lists and scalars replace, as with helm's values.
fn merge(base: &mut Json, over: Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn typed(merged: &Json, origin: &str) -> Result<Values, InputError> {
    serde_path_to_error::deserialize(merged).map_err(|e| InputError::WrongType {
        origin: origin.into(),
        path: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

fn defaults_json() -> Json {
    // Serialising plain structs of strings, numbers and lists cannot fail.
    serde_json::to_value(Values::default()).unwrap_or(Json::Null)
}

/// Merges the layers over the defaults in order, checking keys and types layer by layer.
fn merge_layers(defaults: &Json, layers: Vec<Layer>) -> Result<Values, InputError> {
    let mut merged = defaults.clone();
    let mut last = "defaults".to_string();
    for layer in layers {
        check_keys(defaults, &layer.data, &layer.origin, "")?;
        merge(&mut merged, layer.data);
        // Deserialising after each layer names the layer that brought a wrong type.
        typed(&merged, &layer.origin)?;
        last = layer.origin;
    }
    typed(&merged, &last)
}

/// Merges defaults, profile, values files, `--set` and `--host` in that order, then validates the result.
pub fn resolve(req: &ValuesRequest) -> Result<Values, InputError> {
    let defaults = defaults_json();
    let mut layers = Vec::new();
    if let Some(p) = &req.profile {
        layers.push(load_profile(p)?);
    }
    for f in &req.values_files {
        layers.push(Layer {
            origin: f.display().to_string(),
            data: read_yaml(f)?,
        });
    }
    for s in &req.sets {
        layers.push(set_layer(&defaults, s)?);
    }
    if let Some(h) = &req.host {
        layers.push(Layer {
            origin: "--host".into(),
            data: serde_json::json!({ "host": h }),
        });
    }
    let values = merge_layers(&defaults, layers)?;
    validate(&values)?;
    Ok(values)
}

/// One embedded profile over the defaults, without a host: what `profiles show` prints.
pub fn builtin(name: &str) -> Result<Values, InputError> {
    let layer = load_profile(&ProfileSource::Builtin(name.into()))?;
    merge_layers(&defaults_json(), vec![layer])
}

fn out_of_range(path: &str, value: impl std::fmt::Display, reason: &str, fix: &str) -> InputError {
    InputError::OutOfRange {
        path: path.into(),
        value: value.to_string(),
        reason: reason.into(),
        fix: fix.into(),
    }
}

/// RFC 1123 host name, lower case, at least two labels (an Ingress host and a DNS record).
pub fn check_host(host: &str) -> Result<(), InputError> {
    let bad = |reason: &str| {
        Err(InputError::InvalidHost {
            host: host.into(),
            reason: reason.into(),
        })
    };
    if host.is_empty() {
        return Err(InputError::MissingHost);
    }
    if host.len() > 253 {
        return bad("longer than 253 characters");
    }
    if !host.contains('.') {
        return bad("it needs a domain, e.g. app.example.com");
    }
    match host.split('.').find_map(label_problem) {
        Some(reason) => bad(reason),
        None => Ok(()),
    }
}

/// What is wrong with an RFC 1123 label (a namespace name, a part of a host name), if anything.
fn label_problem(label: &str) -> Option<&'static str> {
    if label.is_empty() || label.len() > 63 {
        Some("each dot-separated part must have 1 to 63 characters")
    } else if !label
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("only lower-case letters, digits, '-' and '.' are allowed")
    } else if label.starts_with('-') || label.ends_with('-') {
        Some("a part may not start or end with '-'")
    } else {
        None
    }
}

fn check_label(path: &str, v: &str) -> Result<(), InputError> {
    match label_problem(v) {
        None => Ok(()),
        Some(_) => Err(out_of_range(
            path,
            format!("{v:?}"),
            "not a valid name",
            "use lower-case letters, digits and '-', at most 63 characters",
        )),
    }
}

/// A Go/Prometheus duration such as `30s`, `1m` or `1h30m`.
fn check_duration(path: &str, v: &str) -> Result<(), InputError> {
    let mut rest = v;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let unit = &rest[digits..digits + unit_len];
        if digits == 0 || !["ms", "s", "m", "h", "d"].contains(&unit) {
            return Err(out_of_range(
                path,
                format!("{v:?}"),
                "not a duration",
                "write a duration such as 30s, 1m or 2h",
            ));
        }
        rest = &rest[digits + unit_len..];
        parts += 1;
    }
    if parts == 0 {
        return Err(out_of_range(
            path,
            "\"\"",
            "not a duration",
            "write a duration such as 30s, 1m or 2h",
        ));
    }
    Ok(())
}

/// A Go duration of `h`, `m`, `s` and `ms` parts (`1m30s`), as Flagger and hey parse it; `None` otherwise.
pub fn go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        let after = &rest[digits..];
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        total += match &after[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        rest = &after[unit_len..];
    }
    Some(total)
}

/// The shortest analysis interval accepted: Prometheus scrapes every 5 s, so a shorter window
/// could hold no sample at all.
const MIN_CANARY_INTERVAL: Duration = Duration::from_secs(5);

/// `canary.interval`: what Flagger's CRD accepts (pattern `^[0-9]+(m|s)`, upstream
/// artifacts/flagger/crd.yaml) and Go parses, and long enough for a load test inside it.
fn check_canary_interval(v: &str) -> Result<(), InputError> {
    let first_unit = v.trim_start_matches(|c: char| c.is_ascii_digit());
    let upstream_pattern =
        first_unit.len() < v.len() && (first_unit.starts_with('m') || first_unit.starts_with('s'));
    match go_duration(v) {
        Some(d) if upstream_pattern && d >= MIN_CANARY_INTERVAL => Ok(()),
        _ => Err(out_of_range(
            "canary.interval",
            format!("{v:?}"),
            "Flagger takes an analysis interval in seconds or minutes of at least 5s",
            "write it as e.g. 1m, 30s or 1m30s",
        )),
    }
}

/// A Kubernetes quantity such as `100m`, `1`, `0.5`, `512Mi` or `1G`.
fn check_quantity(path: &str, v: &str) -> Result<(), InputError> {
    let num_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, suffix) = v.split_at(num_end);
    let ok = !num.is_empty()
        && num.parse::<f64>().is_ok()
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix);
    if ok {
        Ok(())
    } else {
        Err(out_of_range(
            path,
            format!("{v:?}"),
            "not a Kubernetes quantity",
            "write e.g. 100m or 1 for CPU, 256Mi or 1Gi for memory",
        ))
    }
}

fn check_resources(path: &str, r: &Resources) -> Result<(), InputError> {
    check_quantity(&format!("{path}.requests.cpu"), &r.requests.cpu)?;
    check_quantity(&format!("{path}.requests.memory"), &r.requests.memory)?;
    check_quantity(&format!("{path}.limits.cpu"), &r.limits.cpu)?;
    check_quantity(&format!("{path}.limits.memory"), &r.limits.memory)
}

fn check_percent(path: &str, v: f64) -> Result<(), InputError> {
    if (0.0..=100.0).contains(&v) {
        Ok(())
    } else {
        Err(out_of_range(
            path,
            v,
            "a percentage must be between 0 and 100",
            "give a value from 0 to 100",
        ))
    }
}

/// The private IPv4 ranges (RFC 1918): where an Application Gateway's instances and a Private Link
/// service's NAT addresses come from, inside the VNet.
pub const PRIVATE_RANGES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Front Door's documented backend address space (Front Door FAQ, "lock down access to my backend":
/// IPv4 147.243.0.0/16, IPv6 2a01:111:2050::/44); the service tag AzureFrontDoor.Backend, which the
/// load balancer admits, carries the complete list (`az network list-service-tags`).
pub const FRONT_DOOR_BACKEND: [&str; 2] = ["147.243.0.0/16", "2a01:111:2050::/44"];

/// The addresses the front connects from, for the profile: none when clients connect directly.
pub fn front_ranges(v: &Values) -> Vec<String> {
    let ranges: &[&str] = match v.front {
        Front::Nginx => &[],
        Front::Appgw => &PRIVATE_RANGES,
        Front::Frontdoor if v.front_door.private_link => &PRIVATE_RANGES,
        Front::Frontdoor => &FRONT_DOOR_BACKEND,
    };
    ranges.iter().map(|r| r.to_string()).collect()
}

/// The proxies nginx takes `X-Forwarded-For` from, or `None` when it trusts no forwarded header.
pub fn trusted_proxies(v: &Values) -> Option<Vec<String>> {
    // No nginx with the Gateway API: the Istio gateway's own X-Forwarded-For handling applies.
    if v.traffic.layer == TrafficLayer::GatewayApi {
        return None;
    }
    let rip = &v.ingress_controller.real_client_ip;
    let on = match rip.enabled {
        Toggle::Off => false,
        Toggle::On => true,
        Toggle::Auto => v.front != Front::Nginx,
    };
    if !on {
        return None;
    }
    let cidrs = if rip.trusted_cidrs.is_empty() {
        front_ranges(v)
    } else {
        rip.trusted_cidrs.clone()
    };
    (!cidrs.is_empty()).then_some(cidrs)
}

/// Whether Front Door reaches the origin over HTTPS: by default on a public origin, not over Private Link.
pub fn origin_https(v: &Values) -> bool {
    match v.front_door.origin_protocol {
        OriginProtocol::Https => true,
        OriginProtocol::Http => false,
        // The Gateway has an HTTPS listener only with a certificate Secret configured.
        OriginProtocol::Auto if v.traffic.layer == TrafficLayer::GatewayApi => {
            !v.front_door.private_link && gateway_https(v)
        }
        OriginProtocol::Auto => !v.front_door.private_link,
    }
}

/// `prometheus.storageSize` in MiB (validated to be `<n>Mi` or `<n>Gi`).
pub fn storage_mib(v: &Values) -> u64 {
    let s = &v.prometheus.storage_size;
    let (num, factor) = match (s.strip_suffix("Gi"), s.strip_suffix("Mi")) {
        (Some(n), _) => (n, 1024),
        (_, Some(n)) => (n, 1),
        _ => (s.as_str(), 0),
    };
    num.parse::<u64>().unwrap_or(0) * factor
}

/// Azure's rule for resource-group names: 1-90 letters, digits, `_ ( ) - .`, not ending in `.`.
pub fn is_resource_group(rg: &str) -> bool {
    !rg.is_empty()
        && rg.len() <= 90
        && !rg.ends_with('.')
        && rg
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '(' | ')' | '-' | '.'))
}

/// An IPv4 or IPv6 network such as `10.0.0.0/8`, not one that admits every address.
fn check_cidr(path: &str, cidr: &str) -> Result<(), InputError> {
    let bad = |reason: &str, fix: &str| Err(out_of_range(path, format!("{cidr:?}"), reason, fix));
    let Some((ip, len)) = cidr.split_once('/') else {
        return bad("not a CIDR", "write networks such as 10.1.0.0/24");
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return bad("not a CIDR", "write networks such as 10.1.0.0/24"),
    };
    match len.parse::<u8>() {
        Ok(0) => bad(
            "trusting every address lets any client forge its address in X-Forwarded-For",
            "list only the front's ranges, e.g. the Application Gateway subnet 10.1.0.0/24",
        ),
        Ok(n) if n <= max => Ok(()),
        _ => bad(
            "the prefix length is out of range",
            "write networks such as 10.1.0.0/24",
        ),
    }
}

/// The load balancer's fixed-address settings: each well-formed and fitting an internal or public
/// load balancer.
fn check_stable_address(v: &Values) -> Result<(), InputError> {
    let s = &v.ingress_controller.service;
    let internal = s.internal || (v.front == Front::Frontdoor && v.front_door.private_link);
    check_public_ip(s, internal)?;
    check_dns_label(s, internal)?;
    check_private_ip(s, internal)?;
    check_service_tags(s)
}

/// `publicIpName` and `publicIpResourceGroup`: Azure names, on a public load balancer only.
fn check_public_ip(s: &LoadBalancerService, internal: bool) -> Result<(), InputError> {
    if !s.public_ip_name.is_empty() {
        // Azure public IP names: 1-80 letters, digits, '_', '.', '-'; begin with a letter or digit,
        // end with a letter, digit or '_'.
        let n = &s.public_ip_name;
        let ok = n.len() <= 80
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(out_of_range(
                "ingressController.service.publicIpName",
                format!("{n:?}"),
                "not an Azure public IP name",
                "give the name of a Standard public IP: 1-80 letters, digits, '_', '.', '-'",
            ));
        }
        if internal {
            return Err(out_of_range(
                "ingressController.service.publicIpName",
                format!("{n:?}"),
                "this profile's load balancer is internal and has no public IP",
                "drop publicIpName, or set ingressController.service.privateIp for a fixed private address",
            ));
        }
    }
    if !s.public_ip_resource_group.is_empty() {
        if !is_resource_group(&s.public_ip_resource_group) {
            return Err(out_of_range(
                "ingressController.service.publicIpResourceGroup",
                format!("{:?}", s.public_ip_resource_group),
                "not a resource group name",
                "give 1-90 letters, digits, '_', '(', ')', '-' or '.', not ending in '.'",
            ));
        }
        if s.public_ip_name.is_empty() {
            return Err(out_of_range(
                "ingressController.service.publicIpResourceGroup",
                format!("{:?}", s.public_ip_resource_group),
                "names the resource group of a public IP, but publicIpName is empty",
                "set ingressController.service.publicIpName too",
            ));
        }
    }
    Ok(())
}

/// `dnsLabel`: an Azure DNS label, on a public load balancer only.
fn check_dns_label(s: &LoadBalancerService, internal: bool) -> Result<(), InputError> {
    if !s.dns_label.is_empty() {
        // Azure DNS labels: 3-63 lower-case letters, digits and '-', starting with a letter.
        let l = &s.dns_label;
        let ok = (3..=63).contains(&l.len())
            && l.starts_with(|c: char| c.is_ascii_lowercase())
            && label_problem(l).is_none();
        if !ok || internal {
            return Err(out_of_range(
                "ingressController.service.dnsLabel",
                format!("{l:?}"),
                if internal {
                    "an internal load balancer gets no public DNS label"
                } else {
                    "not an Azure DNS label"
                },
                "give 3-63 lower-case letters, digits and '-', starting with a letter, on a public profile",
            ));
        }
    }
    Ok(())
}

/// `privateIp`: a private IPv4 address, on an internal load balancer only.
fn check_private_ip(s: &LoadBalancerService, internal: bool) -> Result<(), InputError> {
    if !s.private_ip.is_empty() {
        let ip = s.private_ip.parse::<std::net::Ipv4Addr>().ok();
        if !ip.is_some_and(|ip| ip.is_private()) || !internal {
            return Err(out_of_range(
                "ingressController.service.privateIp",
                format!("{:?}", s.private_ip),
                if internal {
                    "not a private IPv4 address"
                } else {
                    "only an internal load balancer (appgw, Front Door Private Link) takes a private address"
                },
                "give a free address of the cluster's subnet, e.g. 10.224.0.250, on an internal profile",
            ));
        }
    }
    Ok(())
}

/// `allowedServiceTags`: Azure service tag names.
fn check_service_tags(s: &LoadBalancerService) -> Result<(), InputError> {
    for tag in &s.allowed_service_tags {
        // Service tag names: letters and digits in dot-separated parts (AzureFrontDoor.Backend, Internet).
        let ok = !tag.is_empty()
            && tag
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
            && tag.starts_with(|c: char| c.is_ascii_alphabetic());
        if !ok {
            return Err(out_of_range(
                "ingressController.service.allowedServiceTags",
                format!("{tag:?}"),
                "not an Azure service tag",
                "give service tag names such as AzureFrontDoor.Backend",
            ));
        }
    }
    Ok(())
}

fn check_front(v: &Values) -> Result<(), InputError> {
    let rip = &v.ingress_controller.real_client_ip;
    for c in &rip.trusted_cidrs {
        check_cidr("ingressController.realClientIp.trustedCidrs", c)?;
    }
    if rip.enabled == Toggle::On && rip.trusted_cidrs.is_empty() && front_ranges(v).is_empty() {
        return Err(out_of_range(
            "ingressController.realClientIp.enabled",
            "on",
            "with profile nginx clients connect directly and there is no front whose ranges to trust",
            "list your proxy's networks in ingressController.realClientIp.trustedCidrs, or leave enabled at auto",
        ));
    }
    let fd = &v.front_door;
    if v.front != Front::Frontdoor
        && (fd.origin_protocol != OriginProtocol::Auto || !fd.id.is_empty())
    {
        return Err(out_of_range(
            "frontDoor",
            format!("profile {}", v.name),
            "frontDoor.originProtocol and frontDoor.id apply only behind Azure Front Door",
            "use --profile frontdoor, or drop the frontDoor values",
        ));
    }
    if !fd.id.is_empty() {
        let parts: Vec<&str> = fd.id.split('-').collect();
        let ok = parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
            && parts
                .iter()
                .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()));
        if !ok {
            return Err(out_of_range(
                "frontDoor.id",
                format!("{:?}", fd.id),
                "not a Front Door ID (a GUID)",
                "give the output of `az afd profile show -g <resource-group> --profile-name <profile-name> --query frontDoorId -o tsv`",
            ));
        }
    }
    let mib = storage_mib(v);
    if mib < 256 {
        return Err(out_of_range(
            "prometheus.storageSize",
            format!("{:?}", v.prometheus.storage_size),
            "not a size of at least 256Mi in Mi or Gi",
            "give e.g. 2Gi",
        ));
    }
    Ok(())
}

/// Everything the types cannot say: names, ranges, and combinations that only some profiles allow.
pub fn validate(v: &Values) -> Result<(), InputError> {
    validate_names(v)?;
    validate_workloads(v)?;
    validate_canary(&v.canary)?;
    if v.alerting.provider != AlertProviderKind::None {
        check_label("alerting.secretName", &v.alerting.secret_name).map_err(|_| {
            out_of_range(
                "alerting.secretName",
                format!("{:?}", v.alerting.secret_name),
                "alerting needs the Secret that holds the webhook address",
                "name a Secret in the app namespace whose key `address` holds the URL",
            )
        })?;
    }
    check_stable_address(v)?;
    check_front(v)?;
    check_traffic_layer(v)?;
    check_private_link_subnet(v)?;
    if v.front_door.private_link && v.front != Front::Frontdoor {
        return Err(out_of_range(
            "frontDoor.privateLink",
            true,
            "Private Link origins exist only with Azure Front Door",
            "use --profile frontdoor, or drop frontDoor.privateLink",
        ));
    }
    Ok(())
}

/// `frontDoor.privateLinkSubnet`: only with Private Link, and an Azure subnet name (1-80 letters,
/// digits, '_', '.', '-', starting with a letter or digit, not ending in '.').
fn check_private_link_subnet(v: &Values) -> Result<(), InputError> {
    let subnet = &v.front_door.private_link_subnet;
    if subnet.is_empty() {
        return Ok(());
    }
    if !v.front_door.private_link {
        return Err(out_of_range(
            "frontDoor.privateLinkSubnet",
            format!("{subnet:?}"),
            "the Private Link service's subnet applies only with frontDoor.privateLink=true",
            "set frontDoor.privateLink=true, or drop frontDoor.privateLinkSubnet",
        ));
    }
    let ok = subnet.len() <= 80
        && subnet
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && !subnet.ends_with('.')
        && subnet
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(out_of_range(
            "frontDoor.privateLinkSubnet",
            format!("{subnet:?}"),
            "not an Azure subnet name",
            "give the name of a subnet in the cluster's VNet, e.g. pls-subnet",
        ));
    }
    Ok(())
}

/// AKS appends `-approuting-istio` (17 characters) to the Gateway's name for its Deployment and
/// Service, which must stay a 63-character DNS label.
const GATEWAY_NAME_MAX: usize = 63 - "-approuting-istio".len();

/// Whether the Gateway listens on 443 too: a certificate Secret is configured.
pub fn gateway_https(v: &Values) -> bool {
    v.traffic.layer == TrafficLayer::GatewayApi && !v.gateway.tls.secret_name.is_empty()
}

/// The values of one layer set while the other is chosen, the Gateway's names, and its certificate.
fn check_traffic_layer(v: &Values) -> Result<(), InputError> {
    let d = Values::default();
    if v.traffic.layer == TrafficLayer::IngressNginx {
        if v.gateway != d.gateway {
            return Err(out_of_range(
                "gateway",
                "traffic.layer ingress-nginx",
                "gateway.* configures the Gateway of traffic.layer gateway-api and does nothing with ingress-nginx",
                "add --traffic gateway-api, or drop the gateway values",
            ));
        }
        return Ok(());
    }
    let ic = &v.ingress_controller;
    for (path, set) in [
        (
            "ingressController.replicas",
            ic.replicas != d.ingress_controller.replicas,
        ),
        (
            "ingressController.resources",
            ic.resources != d.ingress_controller.resources,
        ),
        (
            "ingressController.realClientIp",
            ic.real_client_ip != d.ingress_controller.real_client_ip,
        ),
    ] {
        if set {
            return Err(out_of_range(
                path,
                "traffic.layer gateway-api",
                "with the Gateway API AKS runs and sizes the gateway's pods; there is no ingress-nginx controller to configure",
                "drop this value, or use --traffic ingress-nginx",
            ));
        }
    }
    check_label("gateway.name", &v.gateway.name)?;
    if v.gateway.name.len() > GATEWAY_NAME_MAX {
        return Err(out_of_range(
            "gateway.name",
            format!("{:?}", v.gateway.name),
            "AKS names the gateway's Service <name>-approuting-istio, which must fit in 63 characters",
            "use a name of at most 46 characters",
        ));
    }
    check_label("namespaces.gateway", &v.namespaces.gateway)?;
    let ns = &v.namespaces;
    if ns.gateway == ns.app || ns.gateway == ns.flagger {
        return Err(out_of_range(
            "namespaces.gateway",
            format!("{:?}", ns.gateway),
            "the Gateway's namespace holds AKS's gateway pods under its own Pod Security level, so it cannot be the app's or Flagger's",
            "give a namespace of its own, e.g. gridos-gateway",
        ));
    }
    let secret = &v.gateway.tls.secret_name;
    if !secret.is_empty() && !is_subdomain(secret) {
        return Err(out_of_range(
            "gateway.tls.secretName",
            format!("{secret:?}"),
            "not a Secret name",
            "name the kubernetes.io/tls Secret in the gateway namespace: lower-case letters, digits, '-' and '.', at most 253 characters",
        ));
    }
    if v.front == Front::Frontdoor
        && v.front_door.origin_protocol == OriginProtocol::Https
        && secret.is_empty()
    {
        return Err(out_of_range(
            "frontDoor.originProtocol",
            "https",
            "the Gateway serves HTTPS only with a certificate, and gateway.tls.secretName is empty",
            "set gateway.tls.secretName to a kubernetes.io/tls Secret for the host in the gateway namespace, or use frontDoor.originProtocol http",
        ));
    }
    Ok(())
}

/// A DNS subdomain name (RFC 1123), as Kubernetes requires of a Secret's name.
fn is_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|l| label_problem(l).is_none())
}

/// The host, the namespaces, the registry and the ServiceMonitor group.
fn validate_names(v: &Values) -> Result<(), InputError> {
    check_host(&v.host)?;
    check_label("namespaces.ingress", &v.namespaces.ingress)?;
    check_label("namespaces.flagger", &v.namespaces.flagger)?;
    check_label("namespaces.app", &v.namespaces.app)?;
    if !v.image_registry.is_empty() {
        let r = &v.image_registry;
        // A host with optional port and path: no scheme, no tag or digest, no stray slashes.
        let ok = !r.contains("://")
            && !r.starts_with('/')
            && !r.ends_with('/')
            && !r.contains('@')
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:/".contains(c));
        if !ok {
            return Err(out_of_range(
                "imageRegistry",
                format!("{r:?}"),
                "not a registry host",
                "give a registry host and optional path without scheme, e.g. myacr.azurecr.io",
            ));
        }
    }
    if !SERVICE_MONITOR_GROUPS.contains(&v.service_monitor.group.as_str()) {
        return Err(out_of_range(
            "serviceMonitor.group",
            format!("{:?}", v.service_monitor.group),
            "not a ServiceMonitor API group",
            "use monitoring.coreos.com (prometheus-operator) or azmonitoring.coreos.com (Azure Monitor managed Prometheus)",
        ));
    }
    Ok(())
}

/// Resources, retention and replica counts.
fn validate_workloads(v: &Values) -> Result<(), InputError> {
    check_resources(
        "ingressController.resources",
        &v.ingress_controller.resources,
    )?;
    check_resources("flagger.resources", &v.flagger.resources)?;
    check_resources("prometheus.resources", &v.prometheus.resources)?;
    check_resources("loadtester.resources", &v.loadtester.resources)?;
    check_resources("grafana.resources", &v.grafana.resources)?;
    check_duration("prometheus.retention", &v.prometheus.retention)?;
    for (path, n) in [
        ("ingressController.replicas", v.ingress_controller.replicas),
        ("flagger.replicas", v.flagger.replicas),
        ("loadtester.replicas", v.loadtester.replicas),
    ] {
        if n == 0 {
            return Err(out_of_range(
                path,
                n,
                "at least one replica is needed",
                "give 1 or more",
            ));
        }
    }
    if v.flagger.replicas > 1 {
        return Err(out_of_range(
            "flagger.replicas",
            v.flagger.replicas,
            "Flagger runs without leader election here, so two replicas would both act",
            "use 1",
        ));
    }
    Ok(())
}

/// The Canary's analysis: interval, threshold, steps, limits and ports.
fn validate_canary(c: &Canary) -> Result<(), InputError> {
    check_canary_interval(&c.interval)?;
    if c.threshold == 0 {
        return Err(out_of_range(
            "canary.threshold",
            c.threshold,
            "Flagger needs at least one failed check before rollback",
            "give 1 or more (5 is usual)",
        ));
    }
    if c.step_weights.is_empty() {
        return Err(out_of_range(
            "canary.stepWeights",
            "[]",
            "no steps",
            "give increasing weights such as [10, 25, 50]",
        ));
    }
    let weights = format!("{:?}", c.step_weights);
    if c.step_weights.iter().any(|w| *w == 0 || *w > 100) {
        return Err(out_of_range(
            "canary.stepWeights",
            &weights,
            "each weight must be from 1 to 100",
            "give increasing weights from 1 to 100, such as [10, 25, 50]",
        ));
    }
    if c.step_weights.windows(2).any(|w| w[0] >= w[1]) {
        return Err(out_of_range(
            "canary.stepWeights",
            &weights,
            "weights must be strictly increasing",
            "give increasing weights such as [10, 25, 50]",
        ));
    }
    check_percent("canary.successRateMin", c.success_rate_min)?;
    check_percent("canary.errorRateMax", c.error_rate_max)?;
    if c.latency_p99_max_ms == 0 {
        return Err(out_of_range(
            "canary.latencyP99MaxMs",
            0,
            "a p99 latency limit of 0 ms fails every check",
            "give a limit in milliseconds such as 500",
        ));
    }
    if c.port == 0 || c.target_port == 0 {
        return Err(out_of_range(
            "canary.port",
            0,
            "port 0 is not a port",
            "give a port from 1 to 65535",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(sets: &[&str]) -> Result<Values, InputError> {
        resolve(&ValuesRequest {
            profile: Some(ProfileSource::Builtin("nginx".into())),
            values_files: Vec::new(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            host: Some("app.example.com".into()),
        })
    }

    fn refused_at(sets: &[&str]) -> String {
        match values(sets) {
            Err(InputError::OutOfRange { path, .. }) => path,
            other => panic!("{sets:?}: {other:?}"),
        }
    }

    #[test]
    fn every_builtin_profile_is_valid() {
        for name in BUILTIN {
            let mut v = builtin(name).unwrap();
            v.host = "app.example.com".into();
            assert_eq!(validate(&v), Ok(()), "{name}");
        }
    }

    #[test]
    fn ranges_and_combinations_are_refused_naming_the_key() {
        for (set, path) in [
            ("canary.stepWeights=[10, 50, 25]", "canary.stepWeights"),
            ("canary.stepWeights=[0, 50]", "canary.stepWeights"),
            ("canary.stepWeights=[]", "canary.stepWeights"),
            ("canary.successRateMin=101", "canary.successRateMin"),
            ("canary.threshold=0", "canary.threshold"),
            ("canary.interval=1 minute", "canary.interval"),
            ("canary.latencyP99MaxMs=0", "canary.latencyP99MaxMs"),
            ("flagger.replicas=2", "flagger.replicas"),
            ("loadtester.replicas=0", "loadtester.replicas"),
            ("prometheus.retention=2weeks", "prometheus.retention"),
            (
                "flagger.resources.limits.memory=lots",
                "flagger.resources.limits.memory",
            ),
            ("namespaces.app=Gridos", "namespaces.app"),
            ("imageRegistry=https://myacr.azurecr.io", "imageRegistry"),
            ("serviceMonitor.group=example.com", "serviceMonitor.group"),
            ("frontDoor.privateLink=true", "frontDoor.privateLink"),
        ] {
            assert_eq!(refused_at(&[set]), path, "{set}");
        }
    }

    #[test]
    fn every_builtin_profile_is_valid_with_the_gateway_api() {
        for name in BUILTIN {
            let mut v = builtin(name).unwrap();
            v.host = "app.example.com".into();
            v.traffic.layer = TrafficLayer::GatewayApi;
            assert_eq!(validate(&v), Ok(()), "{name}");
        }
    }

    #[test]
    fn front_door_reaches_the_gateway_over_https_only_with_a_certificate() {
        let mut v = builtin("frontdoor").unwrap();
        v.host = "app.example.com".into();
        assert!(
            origin_https(&v),
            "ingress-nginx: the app's Ingress serves TLS"
        );
        v.traffic.layer = TrafficLayer::GatewayApi;
        assert!(!origin_https(&v), "no HTTPS listener without a Secret");
        v.gateway.tls.secret_name = "app-tls".into();
        assert!(origin_https(&v));
        assert!(gateway_https(&v));
        v.front_door.private_link = true;
        assert!(
            !origin_https(&v),
            "Private Link: HTTP, as with ingress-nginx"
        );
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        assert!(is_subdomain("app-tls"));
        assert!(is_subdomain("app.example.com-tls"));
        for bad in ["App-TLS", "app_tls", "-tls", "a..b", ""] {
            assert!(!is_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn hosts_must_be_lower_case_dns_names_with_a_domain() {
        assert_eq!(check_host("app.example.com"), Ok(()));
        assert_eq!(check_host(""), Err(InputError::MissingHost));
        for bad in ["App.example.com", "app", "-a.example.com", "a..example.com"] {
            assert!(
                matches!(check_host(bad), Err(InputError::InvalidHost { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unknown_key_names_the_nearest_one() {
        match values(&["canary.treshold=3"]) {
            Err(InputError::UnknownKey { nearest, .. }) => {
                assert_eq!(nearest.as_deref(), Some("canary.threshold"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            values(&["canary.zzzzzzzzzz=3"]),
            Err(InputError::UnknownKey { nearest: None, .. })
        ));
    }

    #[test]
    fn quantities_and_durations_take_the_kubernetes_and_go_forms() {
        for q in ["100m", "1", "0.5", "512Mi", "1G"] {
            assert_eq!(check_quantity("q", q), Ok(()), "{q}");
        }
        for d in ["30s", "1m", "1h30m", "500ms"] {
            assert_eq!(check_duration("d", d), Ok(()), "{d}");
        }
        assert!(check_quantity("q", "1.5X").is_err());
        assert!(check_duration("d", "").is_err());
    }
}
