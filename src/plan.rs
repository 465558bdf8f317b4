//! The plan of an install: every read and decision made before the first write, and its server-side dry-run diff.
//!
//! `plan`, `install --dry-run`, the interactive confirmation and `check --pre` all stop at the
//! plan; a confirmed install executes the same plan (see [`crate::execute`]), so the cluster is
//! connected to, discovered and the certificate made once per run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::Client;
use kube::api::{Api, DynamicObject};
use tokio::time::Instant;

use crate::apply::{self, ApplyOptions, ObjectResult, Outcome, Resolver};
use crate::applyset::{self, ApplySetRecord, Stale};
use crate::certs;
use crate::cluster::Cluster;
use crate::error::Error;
use crate::profile::{self, Toggle, TrafficLayer, Values};
use crate::render::{self, Object, RenderInputs, Wave};
use crate::retry::with_retry;

pub const CONTROLLER_SERVICE: &str = "ingress-nginx-controller";
pub const ADMISSION_SERVICE: &str = "ingress-nginx-controller-admission";
pub const ADMISSION_SECRET: &str = "ingress-nginx-admission";
/// The Gateway API layer's notice about rate limits: the seed deploys the app behind an Ingress
/// with `nginx.ingress.kubernetes.io/limit-rps: "100"` (design.md §7), and application routing's
/// Istio gateways cannot rate-limit (design.md §10), so on this layer that limit silently goes.
pub const GATEWAY_NO_RATE_LIMIT: &str = "traffic.layer gateway-api: application routing's Gateway API cannot rate-limit, so the \
     per-client limit the app's Ingress had with ingress-nginx (limit-rps \"100\") does not apply on this layer; with appgw or \
     frontdoor, limit rates at the front instead (a rate-limit custom rule in its WAF policy)";

/// Whether a Service carries Azure's internal load-balancer annotation set to "true".
pub fn service_is_internal(s: &Service) -> bool {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(render::INTERNAL_LB_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Whether this run's controller Service is internal (an Azure internal load balancer).
pub fn controller_is_internal(values: &Values) -> bool {
    render::controller_service_annotations(values)
        .get(render::INTERNAL_LB_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The component an object belongs to, as progress and the summary name it.
pub fn component_of(obj: &Object) -> String {
    match obj.template.trim_end_matches(".yaml.hbs") {
        "flagger-crds" => "flagger".into(),
        other => other.into(),
    }
}

/// Where the ServiceMonitor goes, decided from what the cluster serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMonitorChoice {
    /// `serviceMonitor.enabled=off`.
    Off,
    /// Applied in this API group.
    Group(String),
    /// `auto` and the cluster serves no ServiceMonitor: skipped with a notice.
    Skipped,
}

/// The notice of a skipped ServiceMonitor.
pub const SERVICE_MONITOR_SKIPPED: &str = "no ServiceMonitor CRD (monitoring.coreos.com or azmonitoring.coreos.com): skipping the ServiceMonitor; \
     Flagger's own Prometheus scrapes the controller through pod annotations";

/// Decides the ServiceMonitor: `on` needs the configured group served; `auto` takes the configured
/// group, then the other one (Azure Monitor ignores the operator's group), else skips it.
pub fn decide_service_monitor(
    values: &Values,
    resolver: &Resolver,
) -> Result<ServiceMonitorChoice, Error> {
    let configured = values.service_monitor.group.as_str();
    let serves = |g: &str| resolver.serves(g, "ServiceMonitor");
    match values.service_monitor.enabled {
        Toggle::Off => Ok(ServiceMonitorChoice::Off),
        Toggle::On if serves(configured) => Ok(ServiceMonitorChoice::Group(configured.into())),
        Toggle::On => Err(Error::Preflight {
            problem: format!(
                "serviceMonitor.enabled is on but the cluster serves no ServiceMonitor in {configured}"
            ),
            hint: "install prometheus-operator (or enable Azure Monitor managed Prometheus), or --set serviceMonitor.enabled=auto".into(),
        }),
        Toggle::Auto => Ok(std::iter::once(configured)
            .chain(profile::SERVICE_MONITOR_GROUPS.into_iter().filter(|g| *g != configured))
            .find(|g: &&str| serves(g))
            .map_or(ServiceMonitorChoice::Skipped, |g| {
                ServiceMonitorChoice::Group(g.into())
            })),
    }
}

/// The webhook certificate: the existing Secret's while valid, a new one otherwise.
async fn webhook_cert(
    client: &Client,
    values: &Values,
    deadline: Option<Instant>,
) -> Result<(render::WebhookCert, Option<String>), Error> {
    let ns = &values.namespaces.ingress;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    // A fresh cluster without the namespace yet answers 404 through get_opt; anything else is real.
    let existing = with_retry("reading the webhook Secret", deadline, || {
        secrets.get_opt(ADMISSION_SECRET)
    })
    .await
    .map_err(|e| Error::Api {
        context: format!("reading Secret {ns}/{ADMISSION_SECRET}"),
        source: e,
    })?
    .map(|s| {
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect::<BTreeMap<_, _>>()
    });
    let now = std::time::SystemTime::now();
    let (cert, decision) = certs::webhook_cert(existing.as_ref(), ADMISSION_SERVICE, ns, now)
        .map_err(|e| Error::Preflight {
            problem: format!("webhook certificate: {e}"),
            hint: "please report this as a bug".into(),
        })?;
    let notice = match decision {
        certs::CertDecision::Renewed { reason } => Some(format!(
            "renewing the admission webhook certificate: {reason}"
        )),
        certs::CertDecision::Created | certs::CertDecision::Reused => None,
    };
    Ok((cert, notice))
}

/// Everything an install decides before its first write.
pub struct Plan {
    pub values: Values,
    pub cluster: Cluster,
    pub resolver: Resolver,
    /// The rendered objects, labelled as ApplySet members, in render order.
    pub objects: Vec<Object>,
    /// The ApplySet record as the run found it.
    pub before: ApplySetRecord,
    /// The record once the run has finished (namespaces it creates are added as it goes).
    pub after: ApplySetRecord,
    /// Members recorded before that are no longer rendered: pruned after a successful run.
    pub stale: Vec<Stale>,
    pub service_monitor: ServiceMonitorChoice,
    pub notices: Vec<String>,
    /// The controller Service as it was before this run, to notice a move between public and internal.
    pub previous_service: Option<Service>,
    /// When the run began: its `--timeout` and total time count from here (from the answer, after
    /// a confirmation, which sets it again).
    pub started: Instant,
    /// Helm releases to take over (`--adopt-helm`), decided by `adopt::decide`; empty otherwise.
    pub adoption: crate::adopt::Plan,
    /// `--adopt-helm`: applied objects lose Helm's marks, also those an interrupted adoption left.
    pub adopting: bool,
    /// The run lock, when this plan was made under it (an install that will write).
    pub lock: Option<crate::lock::RunLock>,
    /// Rendered namespaces still being deleted: execute waits for them to go before writing.
    pub terminating: Vec<String>,
    /// When the run switches traffic layer: what that does and what the user changes after it.
    pub switch: Option<String>,
}

/// Reads what the render needs from the cluster, decides and renders: no writes.
/// `discovery` is what connecting learnt, if it was made under the same lock; otherwise the plan
/// discovers.
pub async fn gather(
    mut values: Values,
    cluster: Cluster,
    discovery: Option<kube::Discovery>,
    deadline: Option<Instant>,
) -> Result<Plan, Error> {
    let started = Instant::now();
    let client = cluster.client.clone();
    // Independent reads: together they cost one round trip instead of three.
    let gateway = values.traffic.layer == TrafficLayer::GatewayApi;
    let (resolver, (webhook, cert_notice), before) = tokio::try_join!(
        async {
            match discovery {
                Some(d) => Ok(Resolver::from_discovery(d)),
                None => Resolver::new(&client, deadline).await.map_err(Error::from),
            }
        },
        async {
            // The Gateway API layer has no admission webhook to certify.
            if gateway {
                Ok((render::WebhookCert::placeholder(), None))
            } else {
                webhook_cert(&client, &values, deadline).await
            }
        },
        async {
            applyset::read(&client, deadline)
                .await
                .map_err(|e| Error::Apply(apply::ApplyError::Parent(e)))
        },
    )?;
    let internal = controller_is_internal(&values);
    let previous_service = previous_service(&client, &values, &before, deadline).await?;
    let service_monitor = decide_service_monitor(&values, &resolver)?;
    let mut notices = Vec::new();
    if let ServiceMonitorChoice::Group(g) = &service_monitor {
        values.service_monitor.group = g.clone();
    }
    if service_monitor == ServiceMonitorChoice::Skipped {
        notices.push(SERVICE_MONITOR_SKIPPED.to_string());
    }
    notices.extend(cert_notice);
    let inputs = RenderInputs {
        webhook,
        service_monitor: matches!(service_monitor, ServiceMonitorChoice::Group(_)),
    };
    let objects: Vec<Object> = render::render(&values, &inputs)?
        .iter()
        .map(applyset::with_membership)
        .collect();
    let mut after = ApplySetRecord {
        ingress_internal: Some(internal),
        ..ApplySetRecord::for_objects(&objects)
    };
    // Namespaces an earlier run created stay recorded while they are still rendered.
    after.created_namespaces = before
        .created_namespaces
        .iter()
        .filter(|n| after.members.contains(&applyset::namespace_member_id(n)))
        .cloned()
        .collect();
    let stale = applyset::stale(&before, &after);
    let switch = switch_notice(&values, &stale);
    notices.extend(switch.clone());
    let terminating = terminating_namespaces(&client, &objects, &before, deadline).await?;
    notices.extend(gateway_notices(&client, &values, switch.is_some(), deadline).await?);
    Ok(Plan {
        values,
        cluster,
        resolver,
        objects,
        before,
        after,
        stale,
        service_monitor,
        notices,
        previous_service,
        started,
        adoption: crate::adopt::Plan::default(),
        adopting: false,
        lock: None,
        terminating,
        switch,
    })
}

/// What the Gateway API layer's plan warns about: no rate limit on this layer, a certificate Secret
/// that is not there yet (the https listener stays unresolved until it is), and a switch of layer
/// while a canary runs.
async fn gateway_notices(
    client: &Client,
    values: &Values,
    switching: bool,
    deadline: Option<Instant>,
) -> Result<Vec<String>, Error> {
    let mut notices = Vec::new();
    if values.traffic.layer == TrafficLayer::GatewayApi {
        notices.push(GATEWAY_NO_RATE_LIMIT.to_string());
    }
    let secret = &values.gateway.tls.secret_name;
    if values.traffic.layer == TrafficLayer::GatewayApi && !secret.is_empty() {
        let ns = &values.namespaces.gateway;
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let found = with_retry("reading the certificate Secret", deadline, || {
            api.get_metadata_opt(secret)
        })
        .await
        .map_err(|e| Error::Api {
            context: format!("reading Secret {ns}/{secret}"),
            source: e,
        })?;
        if found.is_none() {
            notices.push(format!(
                "gateway.tls.secretName: Secret {ns}/{secret} does not exist yet; the Gateway's https listener serves \
                 nothing until you create it (kubectl create secret tls {secret} -n {ns} --cert=<cert.pem> --key=<key.pem>)"
            ));
        }
    }
    if switching {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &values.namespaces.app,
            &crate::canary::resource(),
        );
        // Flagger's CRD may not be served yet on a cluster being set up: then there is no canary.
        if let Ok(Some(c)) = api.get_opt("gridos").await {
            let phase = c.data["status"]["phase"].as_str().unwrap_or_default();
            if ["Progressing", "Promoting", "Finalising", "WaitingPromotion"].contains(&phase) {
                notices.push(format!(
                    "the Canary gridos is {phase}: this switch restarts Flagger with the other provider and moves \
                     Prometheus to the other layer's metrics, so the running analysis may count failed checks or roll \
                     back; better wait until it is Succeeded or Failed (gridos-setup canary wait)"
                ));
            }
        }
    }
    Ok(notices)
}

/// The rendered namespaces that are being deleted (a prune or uninstall moments ago, e.g. a layer
/// switched there and back): nothing can be created in them until they are gone, and the API
/// server answers such writes with Forbidden, which must not read as missing permissions.
/// Only namespaces the record does not hold are read: a member is not being deleted by a
/// gridos-setup run (prune and uninstall drop what they delete from the record), so a re-run
/// costs no request here.
async fn terminating_namespaces(
    client: &Client,
    objects: &[Object],
    before: &ApplySetRecord,
    deadline: Option<Instant>,
) -> Result<Vec<String>, Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o.kind() == "Namespace")
        .map(Object::name)
        .filter(|n| !before.members.contains(&applyset::namespace_member_id(n)))
        .collect();
    let found = futures::future::try_join_all(names.iter().map(|n| {
        let api = api.clone();
        async move {
            with_retry(&format!("reading namespace {n}"), deadline, || {
                api.get_opt(n)
            })
            .await
            .map_err(|e| Error::Api {
                context: format!("reading namespace {n}"),
                source: e,
            })
        }
    }))
    .await?;
    Ok(found
        .into_iter()
        .flatten()
        .filter(|ns| ns.metadata.deletion_timestamp.is_some())
        .filter_map(|ns| ns.metadata.name)
        .collect())
}

/// Whether a run that prunes `stale` replaces the other traffic layer: the record holds a member
/// only that layer renders (the ingress-nginx controller's Deployment, or a Gateway).
pub fn is_layer_switch(stale: &[Stale]) -> bool {
    stale.iter().any(|s| {
        (s.kind == "Deployment" && s.name == "ingress-nginx-controller")
            || (s.kind == "Gateway" && s.api_version.starts_with("gateway.networking.k8s.io/"))
    })
}

/// What a switch of traffic layer does, in the order it happens, and what the user changes after it.
fn switch_notice(values: &Values, stale: &[Stale]) -> Option<String> {
    if !is_layer_switch(stale) {
        return None;
    }
    let front = match values.front {
        profile::Front::Nginx => "the A record of the host",
        profile::Front::Appgw => "the Application Gateway's backend pool",
        profile::Front::Frontdoor => "the Front Door origin",
    };
    let pinned = if render::stable_address_annotations(values).is_empty() {
        ""
    } else {
        "; the address is pinned (publicIpName/privateIp) and the old load balancer holds it until the new one is up, \
         so the new one cannot get it: run the switch without the pin, then pin the new address"
    };
    Some(match values.traffic.layer {
        TrafficLayer::GatewayApi => format!(
            "switching the traffic layer from ingress-nginx to the Gateway API: the Gateway {}/{} is created and waited \
             for (Programmed, with its address) before ingress-nginx is removed at the end of this run; the Gateway's \
             load balancer has a new address, so point {front} at it (guidance below); the app's Ingress gridos is no \
             longer used (Flagger routes through the HTTPRoute gridos){pinned}",
            values.namespaces.gateway, values.gateway.name
        ),
        TrafficLayer::IngressNginx => format!(
            "switching the traffic layer from the Gateway API back to ingress-nginx: the controller is installed and its \
             load-balancer address waited for before the Gateway is removed at the end of this run; point {front} at the \
             controller's address (guidance below), deploy the app with its Ingress gridos again (ingress.enabled=true), \
             and delete Flagger's leftover HTTPRoute (kubectl delete httproute gridos -n {}){pinned}",
            values.namespaces.app
        ),
    })
}

/// The namespace and name of the load-balancer Service of the run's traffic layer: the
/// controller's, or the one AKS makes for the Gateway.
pub fn traffic_service(values: &Values) -> (String, String) {
    match values.traffic.layer {
        TrafficLayer::IngressNginx => (
            values.namespaces.ingress.clone(),
            CONTROLLER_SERVICE.to_string(),
        ),
        TrafficLayer::GatewayApi => (
            values.namespaces.gateway.clone(),
            render::gateway_service_name(values),
        ),
    }
}

/// The layer's load-balancer Service as it is, read only by a run that may switch it between
/// public and internal.
async fn previous_service(
    client: &Client,
    values: &Values,
    before: &ApplySetRecord,
    deadline: Option<Instant>,
) -> Result<Option<Service>, Error> {
    if before.ingress_internal == Some(controller_is_internal(values)) {
        return Ok(None);
    }
    let (ns, name) = traffic_service(values);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    with_retry("reading the load-balancer Service", deadline, || {
        services.get_opt(&name)
    })
    .await
    .map_err(|e| Error::Api {
        context: format!("reading Service {ns}/{name}"),
        source: e,
    })
}

impl Plan {
    pub fn client(&self) -> &Client {
        &self.cluster.client
    }

    /// The objects of one wave, in render order.
    pub fn wave(&self, w: Wave) -> Vec<Object> {
        self.objects
            .iter()
            .filter(|o| o.wave() == w)
            .cloned()
            .collect()
    }

    /// Whether this run's controller Service is internal.
    pub fn internal(&self) -> bool {
        controller_is_internal(&self.values)
    }

    /// The address the controller Service had before a switch between public and internal: Azure
    /// moves the frontend then, so that address is stale.
    pub fn stale_address(&self) -> Option<String> {
        self.previous_service
            .as_ref()
            .filter(|s| service_is_internal(s) != self.internal())
            .and_then(crate::wait::service_address)
    }

    /// Whether this run replaces the other traffic layer (see [`is_layer_switch`]).
    pub fn layer_switch(&self) -> bool {
        is_layer_switch(&self.stale)
    }

    /// A re-run: every object is already a member and every kind is served, so the waves' order,
    /// which only matters while objects are being created, can be skipped.
    pub fn is_rerun(&self) -> bool {
        self.after.members.is_subset(&self.before.members)
            && self
                .objects
                .iter()
                .all(|o| self.resolver.resolve(o).is_ok())
    }

    /// What executing the plan would do to each object, from a server-side dry run, then the
    /// members it would prune. Nothing is written.
    pub async fn diff(
        &self,
        force: bool,
        deadline: Option<Instant>,
    ) -> Result<Vec<ObjectResult>, Error> {
        let opts = ApplyOptions {
            dry_run: true,
            force,
            deadline,
        };
        let mut results: Vec<ObjectResult> =
            apply::concurrently(self.objects.iter().map(|o| async move {
                let (result, _) = self.dry_run_outcome(o, opts).await?;
                Ok::<_, Error>(ObjectResult { id: o.id(), result })
            }))
            .await?;
        let pruned = apply::prune_all(self.client(), &self.resolver, &self.stale, opts).await?;
        results.extend(
            pruned
                .into_iter()
                .filter(|(_, would_delete)| *would_delete)
                .map(|(s, _)| ObjectResult {
                    id: s.id(),
                    result: Outcome::Pruned,
                }),
        );
        Ok(results)
    }

    /// For a dry run: what applying `o` would do, and the server's answer (or the rendered object
    /// when its kind or namespace comes with this same run).
    async fn dry_run_outcome(
        &self,
        o: &Object,
        opts: ApplyOptions,
    ) -> Result<(Outcome, DynamicObject), Error> {
        let rendered: DynamicObject =
            serde_json::from_value(o.data.clone()).map_err(|e| Error::Template {
                template: o.template.clone(),
                reason: e.to_string(),
            })?;
        // An adoption deletes and creates it anew (its type cannot change): no dry run shows that.
        if self.adoption.replace.iter().any(|t| t.id == o.id()) {
            return Ok((Outcome::Created, rendered));
        }
        let client = self.client();
        // In (or being) a namespace that is going away, everything is created anew.
        let terminating = |n: &str| self.terminating.iter().any(|t| t == n);
        if o.namespace().is_some_and(terminating)
            || (o.kind() == "Namespace" && terminating(o.name()))
        {
            return Ok((Outcome::Created, rendered));
        }
        let Some(api) = self
            .resolver
            .api_for(client, o.api_version(), o.kind(), o.namespace())
        else {
            return Ok((Outcome::Created, rendered));
        };
        let live = with_retry(&o.id(), opts.deadline, || api.get_opt(o.name()))
            .await
            .map_err(|e| Error::Api {
                context: format!("reading {}", o.id()),
                source: e,
            })?;
        if live.is_none() && !self.namespace_exists(o.namespace()).await {
            return Ok((Outcome::Created, rendered));
        }
        // An object an adoption takes over is applied taking ownership, so its dry run is too.
        let owned = live
            .as_ref()
            .is_some_and(|l| applyset::is_member(l.metadata.labels.as_ref()))
            || self.adoption.take_over.iter().any(|t| t.id == o.id());
        let dry = apply::apply_one(client, &self.resolver, o, opts, owned).await?;
        let outcome = match &live {
            None => Outcome::Created,
            Some(l) if normalized(l) == normalized(&dry) => Outcome::Unchanged,
            Some(_) => Outcome::Configured,
        };
        Ok((outcome, dry))
    }

    /// Whether an object's namespace exists (cluster-scoped objects have none to miss).
    async fn namespace_exists(&self, ns: Option<&str>) -> bool {
        let Some(ns) = ns else { return true };
        let api: Api<Namespace> = Api::all(self.client().clone());
        matches!(api.get_opt(ns).await, Ok(Some(_)))
    }
}

/// An object without the fields every write changes, to compare a dry run with the live object.
fn normalized(o: &DynamicObject) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for k in ["managedFields", "resourceVersion", "generation"] {
            m.remove(k);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_named_after_templates_and_flagger_owns_its_crds() {
        let o = |t: &str| Object {
            template: t.into(),
            data: serde_json::json!({}),
        };
        assert_eq!(component_of(&o("flagger-crds.yaml.hbs")), "flagger");
        assert_eq!(component_of(&o("ingress-nginx.yaml.hbs")), "ingress-nginx");
    }

    fn stale(api_version: &str, kind: &str, name: &str) -> Stale {
        Stale {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some("x".into()),
            name: name.into(),
        }
    }

    #[test]
    fn a_switch_of_layer_is_told_by_what_goes_and_says_what_to_change() {
        let controller = stale("apps/v1", "Deployment", "ingress-nginx-controller");
        let gateway = stale("gateway.networking.k8s.io/v1", "Gateway", "gridos");
        let other = stale("apps/v1", "Deployment", "grafana");
        assert!(is_layer_switch(std::slice::from_ref(&controller)));
        assert!(is_layer_switch(std::slice::from_ref(&gateway)));
        assert!(!is_layer_switch(std::slice::from_ref(&other)));

        let mut v = profile::builtin("appgw").unwrap();
        v.host = "app.example.com".into();
        assert_eq!(switch_notice(&v, std::slice::from_ref(&other)), None);
        v.traffic.layer = TrafficLayer::GatewayApi;
        let to_gateway = switch_notice(&v, &[controller]).unwrap();
        assert!(
            to_gateway.contains("before ingress-nginx is removed"),
            "{to_gateway}"
        );
        assert!(to_gateway.contains("backend pool"), "{to_gateway}");
        assert!(!to_gateway.contains("pinned"), "{to_gateway}");
        v.traffic.layer = TrafficLayer::IngressNginx;
        v.ingress_controller.service.private_ip = "10.224.0.250".into();
        let back = switch_notice(&v, &[gateway]).unwrap();
        assert!(
            back.contains("kubectl delete httproute gridos -n gridos"),
            "{back}"
        );
        assert!(back.contains("pinned"), "{back}");
    }

    #[test]
    fn only_the_annotation_set_to_true_makes_a_service_internal() {
        let svc = |v: Option<&str>| {
            let mut s = Service::default();
            if let Some(v) = v {
                s.metadata.annotations = Some(
                    [(render::INTERNAL_LB_ANNOTATION.to_string(), v.to_string())]
                        .into_iter()
                        .collect(),
                );
            }
            s
        };
        assert!(service_is_internal(&svc(Some("true"))));
        assert!(!service_is_internal(&svc(Some("false"))));
        assert!(!service_is_internal(&svc(None)));
    }
}
