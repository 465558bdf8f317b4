//! `status`: what gridos-setup installed and how it is doing: components ready/desired, the address, each Canary's phase, weight and failed checks.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;

use crate::apply::ApplyError;
use crate::applyset::{self, ApplySetRecord};
use crate::cluster::{self, Cluster, ConnectRequest};
use crate::error::Error;

#[derive(Clone, Debug, Serialize)]
pub struct ComponentStatus {
    pub deployment: String,
    pub ready: i32,
    pub desired: i32,
    pub rolled_out: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CanaryStatus {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// As Flagger wrote it: an integer, or a fraction that must not read as 0.
    pub weight: serde_json::Number,
    pub failed_checks: i64,
    pub last_transition: String,
}

/// The Gateway of the Gateway API layer, as its status says.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayStatus {
    /// `namespace/name`.
    pub gateway: String,
    pub programmed: bool,
    /// Its conditions in one line (`Accepted=True, Programmed=False (reason: message)`).
    pub conditions: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub context: String,
    pub server: String,
    pub installed: bool,
    pub components: Vec<ComponentStatus>,
    pub address: Option<String>,
    pub internal: bool,
    pub canaries: Vec<CanaryStatus>,
    /// With the Gateway API layer: the Gateway, whose address `address` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStatus>,
    /// What is left of install-flagger.sh's Helm installs (a half-done adoption, releases, their
    /// Deployments, another Flagger): anything here makes the status unhealthy.
    #[serde(skip_serializing_if = "crate::adopt::Remains::is_empty")]
    pub helm: crate::adopt::Remains,
    /// The LoadBalancer Service the address was read from, kept so `check` can judge it without
    /// reading it again.
    #[serde(skip)]
    pub load_balancer: Option<Service>,
}

impl StatusReport {
    /// Whether the address is the internal or the public load balancer's, as the output words it.
    pub fn scope(&self) -> &'static str {
        if self.internal { "internal" } else { "public" }
    }

    /// Every component rolled out and an address assigned.
    pub fn healthy(&self) -> bool {
        self.installed
            && self.components.iter().all(|c| c.rolled_out)
            && self.address.is_some()
            && self.gateway.as_ref().is_none_or(|g| g.programmed)
            && self.helm.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("Context {} ({})\n", self.context, self.server);
        if !self.installed {
            out.push_str("gridos-setup has not installed anything here (no ApplySet kube-system/gridos-setup)\n");
            return out;
        }
        out.push_str(&format!(
            "{:<52} {:>7}  {}\n",
            "COMPONENT", "READY", "STATUS"
        ));
        for c in &self.components {
            let state = if c.rolled_out {
                "rolled out"
            } else {
                "not ready"
            };
            out.push_str(&format!(
                "{:<52} {:>7}  {state}\n",
                c.deployment,
                format!("{}/{}", c.ready, c.desired)
            ));
        }
        let scope = self.scope();
        match (&self.gateway, &self.address) {
            (Some(g), Some(a)) => out.push_str(&format!(
                "\nGateway {}: Programmed\nGateway address ({scope}): {a}\n",
                g.gateway
            )),
            (Some(g), None) => out.push_str(&format!(
                "\nGateway {}: not Programmed with an address yet: {}\n",
                g.gateway, g.conditions
            )),
            (None, Some(a)) => out.push_str(&format!("\nIngress address ({scope}): {a}\n")),
            (None, None) => out.push_str(
                "\nIngress address: pending (the load balancer has not assigned one yet)\n",
            ),
        }
        out.push_str(&format!(
            "\n{:<12} {:<16} {:<14} {:>6} {:>13}  {}\n",
            "NAMESPACE", "CANARY", "STATUS", "WEIGHT", "FAILEDCHECKS", "LASTTRANSITION"
        ));
        for c in &self.canaries {
            out.push_str(&format!(
                "{:<12} {:<16} {:<14} {:>6} {:>13}  {}\n",
                c.namespace, c.name, c.phase, c.weight, c.failed_checks, c.last_transition
            ));
        }
        if self.canaries.is_empty() {
            out.push_str("(no Canary)\n");
        }
        for p in self.helm.problems() {
            out.push_str(&format!("\nHelm: {p}\n"));
        }
        if !self.helm.is_empty() {
            out.push_str(&format!("  {}\n", self.helm.hint()));
        }
        out
    }
}

/// Connects and reports.
pub async fn status(connect: &ConnectRequest) -> Result<StatusReport, Error> {
    let cluster = cluster::connect(connect).await?;
    let record = applyset::read(&cluster.client, None)
        .await
        .map_err(|e| Error::Apply(ApplyError::Parent(e)))?;
    status_of(&cluster, &record).await
}

/// The status of what `record` lists, on a connected cluster.
pub async fn status_of(cluster: &Cluster, record: &ApplySetRecord) -> Result<StatusReport, Error> {
    let client = &cluster.client;
    let mut report = StatusReport {
        context: cluster.context.clone(),
        server: cluster.server.clone(),
        installed: record.exists,
        components: Vec::new(),
        address: None,
        internal: false,
        canaries: Vec::new(),
        gateway: None,
        helm: crate::adopt::Remains::default(),
        load_balancer: None,
    };
    for m in record.parsed_members() {
        let ns = m.namespace.as_deref().unwrap_or_default();
        match m.kind.as_str() {
            "Deployment" => report
                .components
                .push(component(client, ns, &m.name).await?),
            "Service" => {
                if let Some(s) = load_balancer(client, ns, &m.name).await? {
                    report.internal = crate::plan::service_is_internal(&s);
                    report.address = crate::wait::service_address(&s);
                    report.load_balancer = Some(s);
                }
            }
            "Gateway" => gateway(client, ns, &m.name, &mut report).await?,
            _ => {}
        }
    }
    report.canaries = canaries(client).await?;
    if record.exists {
        report.helm = crate::adopt::remains(client, record).await?;
    }
    Ok(report)
}

fn read_error(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |e| Error::Api {
        context: format!("reading {what}"),
        source: e,
    }
}

async fn component(client: &Client, ns: &str, name: &str) -> Result<ComponentStatus, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let live = api
        .get_opt(name)
        .await
        .map_err(read_error(format!("Deployment {ns}/{name}")))?;
    let Some(d) = live else {
        return Ok(ComponentStatus {
            deployment: format!("{ns}/{name} (missing)"),
            ready: 0,
            desired: 1,
            rolled_out: false,
        });
    };
    Ok(ComponentStatus {
        deployment: format!("{ns}/{name}"),
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        ready: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        rolled_out: crate::wait::deployment_is_rolled_out(&d),
    })
}

/// The Gateway's state, and its address and load balancer (the Service AKS made for it) when it
/// is Programmed.
async fn gateway(
    client: &Client,
    ns: &str,
    name: &str,
    report: &mut StatusReport,
) -> Result<(), Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &crate::wait::gateway_resource());
    let live = match api.get_opt(name).await {
        Ok(g) => g,
        // The CRDs went (the Gateway API was disabled on the cluster): the Gateway is missing.
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => return Err(read_error(format!("Gateway {ns}/{name}"))(e)),
    };
    let Some(gw) = live else {
        report.gateway = Some(GatewayStatus {
            gateway: format!("{ns}/{name} (missing)"),
            programmed: false,
            conditions: "the Gateway does not exist".into(),
        });
        return Ok(());
    };
    let programmed = crate::wait::gateway_is_programmed(&gw);
    report.gateway = Some(GatewayStatus {
        gateway: format!("{ns}/{name}"),
        programmed,
        conditions: crate::wait::gateway_conditions(&gw),
    });
    let internal = gw.data["spec"]["infrastructure"]["annotations"]
        [crate::render::INTERNAL_LB_ANNOTATION]
        == "true";
    report.internal = internal;
    report.address = crate::wait::gateway_address(&gw).filter(|_| programmed);
    let service = format!("{name}{}", crate::render::GATEWAY_SERVICE_SUFFIX);
    report.load_balancer = load_balancer(client, ns, &service).await?;
    Ok(())
}

/// The Service, if it is of type LoadBalancer.
async fn load_balancer(client: &Client, ns: &str, name: &str) -> Result<Option<Service>, Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let live = api
        .get_opt(name)
        .await
        .map_err(read_error(format!("Service {ns}/{name}")))?;
    Ok(live.filter(|s| s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer")))
}

/// Every Canary in the cluster; none when Flagger's CRD is not served.
async fn canaries(client: &Client) -> Result<Vec<CanaryStatus>, Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &crate::canary::resource());
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Api {
                context: "listing Canaries".into(),
                source: e,
            });
        }
    };
    Ok(list.items.iter().map(canary_status).collect())
}

fn canary_status(c: &DynamicObject) -> CanaryStatus {
    let st = &c.data["status"];
    CanaryStatus {
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.metadata.name.clone().unwrap_or_default(),
        phase: st["phase"].as_str().unwrap_or("Pending").to_string(),
        weight: weight_of(&st["canaryWeight"]),
        failed_checks: st["failedChecks"].as_i64().unwrap_or(0),
        last_transition: st["lastTransitionTime"].as_str().unwrap_or("").to_string(),
    }
}

/// A weight as Flagger writes it: an integer, though a float (`12.5`) must not read as 0.
fn weight_of(v: &serde_json::Value) -> serde_json::Number {
    v.as_number().cloned().unwrap_or_else(|| 0.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_keep_their_fraction() {
        assert_eq!(weight_of(&serde_json::json!(25)).to_string(), "25");
        assert_eq!(weight_of(&serde_json::json!(12.5)).to_string(), "12.5");
        assert_eq!(weight_of(&serde_json::json!(null)).to_string(), "0");
        let c: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "a", "namespace": "b"},
            "status": {"phase": "Progressing", "canaryWeight": 12.5, "failedChecks": 1}
        }))
        .unwrap();
        let s = canary_status(&c);
        assert_eq!(
            (
                s.phase.as_str(),
                s.weight.to_string().as_str(),
                s.failed_checks
            ),
            ("Progressing", "12.5", 1)
        );
    }
}
