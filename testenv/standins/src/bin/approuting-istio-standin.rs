//! Test stand-in for the control plane of AKS application routing's Gateway API implementation (GatewayClass `approuting-istio`).
//!
//! On AKS, `az aks approuting gateway istio enable` (or `az aks update --enable-app-routing-istio`)
//! deploys a meshless Istio control plane that owns the GatewayClass `approuting-istio` and, per
//! Gateway of that class, provisions the gateway's infrastructure (Microsoft Learn, "Configure
//! ingress with the Kubernetes Gateway API via the application routing add-on"): a Deployment, a
//! LoadBalancer Service, a HorizontalPodAutoscaler and a PodDisruptionBudget, each named
//! `<gateway-name>-approuting-istio` in the Gateway's namespace, with the Gateway's
//! `spec.infrastructure.annotations` and `labels` copied onto them (that is how an internal load
//! balancer is asked for). The test control plane has no such controller, so this process writes
//! what it writes, through the real API:
//!
//! - the GatewayClass `approuting-istio` (created as the add-on does on enable), status `Accepted`;
//! - namespace `aks-istio-system` with the add-on's control plane, Deployment `istiod` (its pods
//!   are kwok pods, made by the real Deployment controller): Learn's "Configure ingress with the
//!   Kubernetes Gateway API via the application routing add-on" has users verify the `istiod` pods
//!   in `aks-istio-system` after enabling. That namespace is also the Istio service-mesh add-on's,
//!   so gridos-setup must not take it for the mesh (issue 25). The add-on installs no Istio CRDs
//!   and no GatewayClass `istio` (same page: it is meshless; only the mesh add-on has those), so
//!   neither is made here. One replica is this stand-in's choice; AKS documents no number;
//! - per Gateway of the class: the four objects above, owned by the Gateway (so the garbage
//!   collector removes them with it). The Service's ports are the listeners' ports plus Istio's
//!   status port 15021; the pods carry Istio's scrape annotations (`prometheus.io/port: "15020"`,
//!   `/stats/prometheus`) and the label `gateway.networking.k8s.io/gateway-name` (GEP-1762);
//! - the Gateway's status as Istio's deployment controller reports it: `Accepted`, `Programmed`
//!   (True once the Service has a load-balancer address, which `lb-standin` assigns; until then
//!   False with reason `AddressNotAssigned`), `status.addresses` from the Service, and per listener
//!   `Accepted`/`Programmed`/`ResolvedRefs`/`Conflicted` with `attachedRoutes` and `supportedKinds`
//!   (an HTTPS listener whose certificate Secret is missing gets `ResolvedRefs=False`,
//!   `InvalidCertificateRef`), every condition with the Gateway's `observedGeneration`;
//! - per HTTPRoute attached to such a Gateway: its `status.parents` entry for this controller with
//!   `Accepted` (False with `NotAllowedByListeners` when the listeners' `allowedRoutes` do not admit
//!   the route's namespace) and `ResolvedRefs` (False with `BackendNotFound` when a backend Service
//!   is missing), leaving other controllers' entries alone.
//!
//! The GatewayClass's `controllerName` is Istio's (`istio.io/gateway-controller`): AKS's
//! implementation is Istio's gateway controller, and the product never depends on the value.
//! Replica numbers of the HPA (2 to 5 at 80 % CPU) and the PDB (minAvailable 1) are this stand-in's
//! choice; AKS documents that it manages both, not their numbers. Nothing ever connects to the
//! addresses; the gateway pods' data plane is `ingress-nginx-standin --gateway-api`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use gridos_testenv_standins::spawn_reflector;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const GROUP: &str = "gateway.networking.k8s.io";
const MANAGER: &str = "approuting-istio-standin";
/// The label Istio (and GEP-1762) puts on a Gateway's generated objects and pods.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Istio's health port on gateway pods (Service port `status-port`).
const STATUS_PORT: i32 = 15021;
/// Istio's merged Prometheus endpoint on gateway pods.
const METRICS_PORT: i32 = 15020;
/// Where application routing runs its istiod (Learn, application routing Gateway API).
const CONTROL_PLANE_NAMESPACE: &str = "aks-istio-system";
/// The control plane's Deployment and its pods' `app` label, as Istio names them.
const ISTIOD: &str = "istiod";
/// istiod's image as AKS names it; kwok runs no image, so only the reference matters.
const PILOT_IMAGE: &str = "mcr.microsoft.com/oss/v2/istio/pilot@sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Parser)]
#[command(
    about = "Test stand-in for AKS application routing's approuting-istio Gateway API controller"
)]
struct Args {
    /// Kubeconfig of the test control plane.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The GatewayClass the add-on creates and owns.
    #[arg(long, default_value = "approuting-istio")]
    class: String,
    /// The GatewayClass's `spec.controllerName`.
    #[arg(long, default_value = "istio.io/gateway-controller")]
    controller_name: String,
}

fn gvk(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// A condition; `lastTransitionTime` is kept from `previous` when the status did not change.
fn condition(
    previous: &Value,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = previous
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_);
    let since = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => now(),
    };
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": since,
    })
}

/// The value with every `lastTransitionTime` removed, to compare a status without its timestamps.
fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

struct Standin {
    client: Client,
    args: Args,
    classes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    routes: Store<DynamicObject>,
    services: Store<Service>,
    namespaces: Store<Namespace>,
    secrets: Store<Secret>,
    /// What was last applied per object (kind/namespace/name), so an unchanged object is not re-sent.
    applied: HashMap<String, Value>,
}

/// The pods' image as AKS names it; kwok runs no image, so only the reference matters (pinned by digest).
const PROXY_IMAGE: &str = "mcr.microsoft.com/oss/v2/istio/proxyv2@sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Whether a label selector (`matchLabels` and `matchExpressions`) admits these labels.
fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let got = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => got.is_some_and(|g| values.contains(&g)),
                "NotIn" => got.is_none_or(|g| !values.contains(&g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

fn child_name(gw: &str) -> String {
    format!("{gw}-approuting-istio")
}

impl Standin {
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .state()
            .iter()
            .find(|n| n.name_any() == ns)
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    /// Whether a listener's `allowedRoutes` admits routes from namespace `route_ns` (default: Same).
    fn admits(&self, gw: &DynamicObject, listener: &Value, route_ns: &str) -> bool {
        let from = &listener["allowedRoutes"]["namespaces"];
        match from["from"].as_str().unwrap_or("Same") {
            "All" => true,
            "Selector" => selector_matches(&from["selector"], &self.namespace_labels(route_ns)),
            _ => gw.namespace().as_deref() == Some(route_ns),
        }
    }

    fn our_gateways(&self) -> Vec<std::sync::Arc<DynamicObject>> {
        self.gateways
            .state()
            .into_iter()
            .filter(|g| g.data["spec"]["gatewayClassName"] == self.args.class.as_str())
            .filter(|g| g.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Server-side applies `obj` unless the same object was applied for the same key before.
    async fn apply(&mut self, key: String, obj: Value) -> Result<()> {
        if self.applied.get(&key) == Some(&obj) {
            return Ok(());
        }
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = obj["kind"].as_str().unwrap_or_default();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {kind} {name}"))?;
        tracing::info!("applied {key}");
        self.applied.insert(key, obj);
        Ok(())
    }

    /// The GatewayClass as the add-on creates it on enable, and its `Accepted` status.
    async fn reconcile_class(&mut self) -> Result<()> {
        let class = self.args.class.clone();
        let existing = self.classes_state(&class);
        if existing.is_none() {
            self.applied.remove("class");
        }
        let obj = json!({
            "apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
            "metadata": {"name": class},
            "spec": {"controllerName": self.args.controller_name, "description": "AKS application routing, Gateway API (stand-in)"},
        });
        self.apply("class".into(), obj).await?;
        let Some(current) = existing else {
            return Ok(());
        };
        let generation = current.metadata.generation.unwrap_or(0);
        let prev = &current.data["status"]["conditions"];
        let desired = json!({"conditions": [
            condition(prev, "Accepted", true, "Accepted", "Handled by Istio controller", generation),
            condition(prev, "SupportedVersion", true, "SupportedVersion", "Gateway API CRD bundle version is supported", generation),
        ]});
        if without_times(&current.data["status"]) != without_times(&desired) {
            let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &gvk("GatewayClass"));
            api.patch_status(
                &class,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": desired})),
            )
            .await
            .context("GatewayClass status")?;
            tracing::info!("GatewayClass {class} Accepted");
        }
        Ok(())
    }

    /// The add-on's control plane: namespace `aks-istio-system` and Deployment `istiod` in it.
    /// Applied again once the namespace is gone; skipped while it is being deleted (nothing can be
    /// created in a terminating namespace), e.g. right after a test's reset.
    async fn reconcile_istiod(&mut self) -> Result<()> {
        match self
            .namespaces
            .state()
            .iter()
            .find(|n| n.name_any() == CONTROL_PLANE_NAMESPACE)
        {
            None => {
                self.applied.remove("istiod/ns");
                self.applied.remove("istiod/deploy");
            }
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
                self.applied.remove("istiod/ns");
                self.applied.remove("istiod/deploy");
                return Ok(());
            }
            Some(_) => {}
        }
        let labels = json!({"app": ISTIOD, "istio": "pilot"});
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": CONTROL_PLANE_NAMESPACE},
        });
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": ISTIOD, "namespace": CONTROL_PLANE_NAMESPACE, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "discovery", "image": PILOT_IMAGE,
                            "args": ["discovery"],
                            "ports": [{"name": "grpc-xds", "containerPort": 15010, "protocol": "TCP"}],
                            "securityContext": {
                                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }],
                    },
                },
            },
        });
        self.apply("istiod/ns".into(), namespace).await?;
        self.apply("istiod/deploy".into(), deployment).await
    }

    fn classes_state(&self, name: &str) -> Option<std::sync::Arc<DynamicObject>> {
        self.classes
            .state()
            .into_iter()
            .find(|c| c.name_any() == name)
    }

    /// The infrastructure objects of one Gateway.
    async fn reconcile_children(&mut self, gw: &DynamicObject) -> Result<()> {
        let ns = gw.namespace().unwrap_or_default();
        let gw_name = gw.name_any();
        let uid = gw.uid().unwrap_or_default();
        let name = child_name(&gw_name);
        if !self
            .services
            .state()
            .iter()
            .any(|s| s.namespace().as_deref() == Some(&ns) && s.name_any() == name)
        {
            // gone or never made: apply all of them again
            self.applied
                .retain(|k, _| !k.starts_with(&format!("{uid}/")));
        }
        let infra = &gw.data["spec"]["infrastructure"];
        let mut labels: BTreeMap<String, Value> = infra["labels"]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        labels.insert(GATEWAY_NAME_LABEL.into(), json!(gw_name));
        labels.insert(
            "gateway.istio.io/managed".into(),
            json!("istio.io-gateway-controller"),
        );
        let annotations: BTreeMap<String, Value> = infra["annotations"]
            .as_object()
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default();
        let mut pod_annotations = annotations.clone();
        pod_annotations.insert("prometheus.io/scrape".into(), json!("true"));
        pod_annotations.insert("prometheus.io/port".into(), json!(METRICS_PORT.to_string()));
        pod_annotations.insert("prometheus.io/path".into(), json!("/stats/prometheus"));
        let owner = json!([{
            "apiVersion": format!("{GROUP}/v1"), "kind": "Gateway", "name": gw_name, "uid": uid, "controller": true,
        }]);
        let meta = |kind_labels: &BTreeMap<String, Value>| json!({"name": name, "namespace": ns, "labels": kind_labels, "annotations": annotations, "ownerReferences": owner});
        let selector = json!({GATEWAY_NAME_LABEL: gw_name});
        let mut ports = vec![
            json!({"name": "status-port", "port": STATUS_PORT, "targetPort": STATUS_PORT, "protocol": "TCP"}),
        ];
        let mut container_ports = vec![
            json!({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}),
            json!({"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"}),
        ];
        for l in gw.data["spec"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(port) = l["port"].as_i64() else {
                continue;
            };
            if ports.iter().any(|p| p["port"] == port) {
                continue;
            }
            let proto = l["protocol"]
                .as_str()
                .unwrap_or("HTTP")
                .to_ascii_lowercase();
            ports.push(json!({"name": format!("{proto}-{port}"), "port": port, "targetPort": port, "protocol": "TCP"}));
            container_ports.push(json!({"containerPort": port, "protocol": "TCP"}));
        }
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(&labels),
            "spec": {
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels, "annotations": pod_annotations},
                    "spec": {
                        "securityContext": {
                            "runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            // Istio binds the listeners' ports (80, 443) unprivileged this way.
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                        },
                        "containers": [{
                            "name": "istio-proxy", "image": PROXY_IMAGE,
                            "args": ["proxy", "router", "--domain", format!("{ns}.svc.cluster.local")],
                            "ports": container_ports,
                            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}},
                            "securityContext": {
                                "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }],
                    },
                },
            },
        });
        let service = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": meta(&labels),
            "spec": {"type": "LoadBalancer", "selector": selector, "ports": ports},
        });
        let hpa = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta(&labels),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 2, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
            },
        });
        let pdb = json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(&labels),
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
        });
        for (kind, obj) in [
            ("Deployment", deployment),
            ("Service", service),
            ("HPA", hpa),
            ("PDB", pdb),
        ] {
            self.apply(format!("{uid}/{kind}"), obj).await?;
        }
        Ok(())
    }

    /// The load-balancer address of a Gateway's Service, once `lb-standin` has set it.
    fn address(&self, gw: &DynamicObject) -> Option<String> {
        let ns = gw.namespace().unwrap_or_default();
        let name = child_name(&gw.name_any());
        self.services
            .state()
            .iter()
            .find(|s| s.namespace().as_deref() == Some(&ns) && s.name_any() == name)
            .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.clone())
            .and_then(|i| i.into_iter().find_map(|e| e.ip.or(e.hostname)))
    }

    /// Whether `parent_ref` (of a route in `route_ns`) names this Gateway.
    fn refers_to(parent_ref: &Value, route_ns: &str, gw: &DynamicObject) -> bool {
        parent_ref["group"].as_str().unwrap_or(GROUP) == GROUP
            && parent_ref["kind"].as_str().unwrap_or("Gateway") == "Gateway"
            && parent_ref["name"].as_str() == Some(gw.name_any().as_str())
            && parent_ref["namespace"].as_str().unwrap_or(route_ns)
                == gw.namespace().unwrap_or_default()
    }

    /// The listeners of `gw` a route's parentRef attaches to (by `sectionName`/`port`, and `allowedRoutes`).
    fn attached_listeners(
        &self,
        gw: &DynamicObject,
        parent_ref: &Value,
        route_ns: &str,
    ) -> Vec<String> {
        gw.data["spec"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| {
                parent_ref["sectionName"]
                    .as_str()
                    .is_none_or(|s| l["name"] == s)
            })
            .filter(|l| parent_ref["port"].as_i64().is_none_or(|p| l["port"] == p))
            .filter(|l| self.admits(gw, l, route_ns))
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The Gateway's status: conditions, addresses and listeners, as Istio reports them.
    async fn reconcile_gateway_status(&mut self, gw: &DynamicObject) -> Result<()> {
        let ns = gw.namespace().unwrap_or_default();
        let generation = gw.metadata.generation.unwrap_or(0);
        let status = &gw.data["status"];
        let svc = format!("{}.{ns}.svc.cluster.local", child_name(&gw.name_any()));
        let address = self.address(gw);
        let mut attached: BTreeMap<String, i64> = BTreeMap::new();
        for r in self.routes.state() {
            let route_ns = r.namespace().unwrap_or_default();
            for p in r.data["spec"]["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if Self::refers_to(p, &route_ns, gw) {
                    for l in self.attached_listeners(gw, p, &route_ns) {
                        *attached.entry(l).or_insert(0) += 1;
                    }
                }
            }
        }
        let mut listeners = Vec::new();
        for l in gw.data["spec"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = l["name"].as_str().unwrap_or_default();
            let prev = status["listeners"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == name)
                .map(|x| x["conditions"].clone())
                .unwrap_or(Value::Null);
            // An HTTPS listener's certificate: a Secret in the Gateway's namespace (GEP-2863's default kind).
            let missing_cert = l["tls"]["certificateRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| {
                    let secret_ns = c["namespace"].as_str().unwrap_or(&ns);
                    let secret = c["name"].as_str().unwrap_or_default();
                    !self.secrets.state().iter().any(|s| {
                        s.namespace().as_deref() == Some(secret_ns) && s.name_any() == secret
                    })
                })
                .map(|c| c["name"].as_str().unwrap_or_default().to_string());
            let resolved = missing_cert.is_none();
            let cert_msg = missing_cert
                .map(|s| {
                    format!("invalid certificate reference /Secret/{ns}/{s}: secret not found")
                })
                .unwrap_or_else(|| "No errors found".into());
            listeners.push(json!({
                "name": name,
                "attachedRoutes": attached.get(name).copied().unwrap_or(0),
                "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}],
                "conditions": [
                    condition(&prev, "Accepted", true, "Accepted", "No errors found", generation),
                    condition(&prev, "Conflicted", false, "NoConflicts", "No errors found", generation),
                    condition(&prev, "Programmed", resolved, if resolved { "Programmed" } else { "Invalid" }, &cert_msg, generation),
                    condition(&prev, "ResolvedRefs", resolved, if resolved { "ResolvedRefs" } else { "InvalidCertificateRef" }, &cert_msg, generation),
                ],
            }));
        }
        let prev = &status["conditions"];
        let programmed = match &address {
            Some(_) => condition(
                prev,
                "Programmed",
                true,
                "Programmed",
                &format!("Resource programmed, assigned to service(s) {svc}"),
                generation,
            ),
            None => condition(
                prev,
                "Programmed",
                false,
                "AddressNotAssigned",
                &format!(
                    "Assigned to service(s) {svc}, but failed to assign to all requested addresses: address pending for the load balancer"
                ),
                generation,
            ),
        };
        let mut desired = json!({
            "conditions": [
                condition(prev, "Accepted", true, "Accepted", "Resource accepted", generation),
                programmed,
            ],
            "listeners": listeners,
        });
        if let Some(a) = &address {
            let type_ = if a.parse::<std::net::IpAddr>().is_ok() {
                "IPAddress"
            } else {
                "Hostname"
            };
            desired["addresses"] = json!([{"type": type_, "value": a}]);
        }
        if without_times(status) != without_times(&desired) {
            let mut patch = desired.clone();
            if address.is_none() {
                patch["addresses"] = Value::Null;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &ns, &gvk("Gateway"));
            api.patch_status(
                &gw.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": patch})),
            )
            .await
            .with_context(|| format!("status of Gateway {ns}/{}", gw.name_any()))?;
            tracing::info!(
                "Gateway {ns}/{} status: programmed={} address={address:?}",
                gw.name_any(),
                address.is_some()
            );
        }
        Ok(())
    }

    /// Each HTTPRoute's `status.parents` entries of this controller.
    async fn reconcile_routes(&mut self) -> Result<()> {
        let gateways = self.our_gateways();
        for r in self.routes.state() {
            let route_ns = r.namespace().unwrap_or_default();
            let generation = r.metadata.generation.unwrap_or(0);
            let old_parents: Vec<Value> = r.data["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut parents: Vec<Value> = old_parents
                .iter()
                .filter(|p| p["controllerName"] != self.args.controller_name.as_str())
                .cloned()
                .collect();
            let missing_backend = r.data["spec"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
                .filter(|b| {
                    b["kind"].as_str().unwrap_or("Service") == "Service"
                        && b["group"].as_str().unwrap_or("").is_empty()
                })
                .find(|b| {
                    let ns = b["namespace"].as_str().unwrap_or(&route_ns);
                    let name = b["name"].as_str().unwrap_or_default();
                    !self
                        .services
                        .state()
                        .iter()
                        .any(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == name)
                })
                .map(|b| b["name"].as_str().unwrap_or_default().to_string());
            for p in r.data["spec"]["parentRefs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(gw) = gateways.iter().find(|g| Self::refers_to(p, &route_ns, g)) else {
                    continue;
                };
                let prev = old_parents
                    .iter()
                    .find(|o| {
                        o["parentRef"] == *p
                            && o["controllerName"] == self.args.controller_name.as_str()
                    })
                    .map(|o| o["conditions"].clone())
                    .unwrap_or(Value::Null);
                let accepted = !self.attached_listeners(gw, p, &route_ns).is_empty();
                let resolved = missing_backend.is_none();
                parents.push(json!({
                    "parentRef": p,
                    "controllerName": self.args.controller_name,
                    "conditions": [
                        if accepted {
                            condition(&prev, "Accepted", true, "Accepted", "Route was valid", generation)
                        } else {
                            condition(&prev, "Accepted", false, "NotAllowedByListeners", &format!("hostnames or namespace {route_ns} not allowed by the Gateway's listeners"), generation)
                        },
                        match &missing_backend {
                            None => condition(&prev, "ResolvedRefs", true, "ResolvedRefs", "All references resolved", generation),
                            Some(b) => condition(&prev, "ResolvedRefs", resolved, "BackendNotFound", &format!("backend({b}.{route_ns}.svc.cluster.local) not found"), generation),
                        },
                    ],
                }));
            }
            if without_times(&Value::Array(old_parents.clone()))
                != without_times(&Value::Array(parents.clone()))
            {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &route_ns, &gvk("HTTPRoute"));
                api.patch_status(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"parents": parents}})),
                )
                .await
                .with_context(|| format!("status of HTTPRoute {route_ns}/{}", r.name_any()))?;
                tracing::info!("HTTPRoute {route_ns}/{} status written", r.name_any());
            }
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<()> {
        self.reconcile_class().await?;
        self.reconcile_istiod().await?;
        let gateways = self.our_gateways();
        let live: Vec<String> = gateways.iter().filter_map(|g| g.uid()).collect();
        self.applied.retain(|k, _| {
            k == "class"
                || k.starts_with("istiod/")
                || live.iter().any(|u| k.starts_with(&format!("{u}/")))
        });
        for gw in gateways {
            self.reconcile_children(&gw).await?;
            self.reconcile_gateway_status(&gw).await?;
        }
        self.reconcile_routes().await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .init();
    let args = Args::parse();
    let client = gridos_testenv_standins::client(&args.kubeconfig).await?;
    let dyn_api = |kind: &str| Api::<DynamicObject>::all_with(client.clone(), &gvk(kind));
    let mut standin = Standin {
        classes: spawn_reflector(
            dyn_api("GatewayClass"),
            Default::default(),
            gvk("GatewayClass"),
        ),
        gateways: spawn_reflector(dyn_api("Gateway"), Default::default(), gvk("Gateway")),
        routes: spawn_reflector(dyn_api("HTTPRoute"), Default::default(), gvk("HTTPRoute")),
        services: spawn_reflector(Api::<Service>::all(client.clone()), Default::default(), ()),
        namespaces: spawn_reflector(
            Api::<Namespace>::all(client.clone()),
            Default::default(),
            (),
        ),
        secrets: spawn_reflector(Api::<Secret>::all(client.clone()), Default::default(), ()),
        client,
        args,
        applied: HashMap::new(),
    };
    tracing::info!(
        "approuting-istio-standin: GatewayClass {}",
        standin.args.class
    );
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        match standin.tick().await {
            Ok(()) => last_error.clear(),
            Err(e) => {
                // e.g. the Gateway API CRDs are not there (yet); everything is retried on the next tick
                let msg = format!("{e:#}");
                if msg != last_error {
                    tracing::warn!("{msg}");
                    last_error = msg;
                }
                standin.applied.remove("class");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_as_kubernetes_does() {
        let labels: BTreeMap<String, String> = [(
            "kubernetes.io/metadata.name".to_string(),
            "gridos".to_string(),
        )]
        .into();
        assert!(selector_matches(
            &json!({"matchLabels": {"kubernetes.io/metadata.name": "gridos"}}),
            &labels
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"kubernetes.io/metadata.name": "other"}}),
            &labels
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["gridos"]}]}),
            &labels
        ));
        assert!(selector_matches(&json!({}), &labels));
    }

    #[test]
    fn status_compares_without_times() {
        let a = json!({"conditions": [{"type": "A", "lastTransitionTime": "x"}]});
        let b = json!({"conditions": [{"type": "A", "lastTransitionTime": "y"}]});
        assert_eq!(without_times(&a), without_times(&b));
    }
}
