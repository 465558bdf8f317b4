//! `status`: what gridos-setup installed and how it is doing: components ready/desired, the address, each Canary's phase, weight and failed checks.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DynamicObject, ListParams};
use serde::Serialize;

use crate::apply::{self, Resolver};
use crate::cluster::{self, ConnectRequest};
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
    pub weight: i64,
    pub failed_checks: i64,
    pub last_transition: String,
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
}

impl StatusReport {
    /// Every component rolled out and an address assigned.
    pub fn healthy(&self) -> bool {
        self.installed && self.components.iter().all(|c| c.rolled_out) && self.address.is_some()
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
        let scope = if self.internal { "internal" } else { "public" };
        match &self.address {
            Some(a) => out.push_str(&format!("\nIngress address ({scope}): {a}\n")),
            None => out.push_str(
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
        out
    }
}

pub async fn status(connect: &ConnectRequest) -> Result<StatusReport, Error> {
    let cluster = cluster::connect(connect).await?;
    let client = cluster.client;
    let record = apply::read_record(&client).await?;
    let mut report = StatusReport {
        context: cluster.context,
        server: cluster.server,
        installed: record.exists,
        components: Vec::new(),
        address: None,
        internal: false,
        canaries: Vec::new(),
    };
    for m in &record.members {
        let Some(member) = apply::parse_member(m) else {
            continue;
        };
        let (ns, name) = (
            member.namespace.as_deref().unwrap_or_default(),
            member.name.as_str(),
        );
        match member.kind.as_str() {
            "Deployment" => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                if let Some(d) = api.get_opt(name).await.map_err(|e| Error::Api {
                    context: format!("reading {m}"),
                    source: e,
                })? {
                    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let ready = d
                        .status
                        .as_ref()
                        .and_then(|s| s.ready_replicas)
                        .unwrap_or(0);
                    let rolled_out = crate::wait::deployment_is_rolled_out(&d);
                    report.components.push(ComponentStatus {
                        deployment: format!("{ns}/{name}"),
                        ready,
                        desired,
                        rolled_out,
                    });
                } else {
                    report.components.push(ComponentStatus {
                        deployment: format!("{ns}/{name} (missing)"),
                        ready: 0,
                        desired: 1,
                        rolled_out: false,
                    });
                }
            }
            "Service" => {
                let api: Api<Service> = Api::namespaced(client.clone(), ns);
                let live = api.get_opt(name).await.map_err(|e| Error::Api {
                    context: format!("reading {m}"),
                    source: e,
                })?;
                if let Some(s) = live.filter(|s| {
                    s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer")
                }) {
                    report.internal = s
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| {
                            a.get("service.beta.kubernetes.io/azure-load-balancer-internal")
                        })
                        .is_some_and(|v| v == "true");
                    report.address = crate::wait::service_address(&s);
                }
            }
            _ => {}
        }
    }
    let resolver = Resolver::new(&client).await?;
    if let Some((ar, _)) = resolver.resolve_gvk("flagger.app/v1beta1", "Canary") {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::Api {
                context: "listing Canaries".into(),
                source: e,
            })?;
        for c in list.items {
            let st = &c.data["status"];
            report.canaries.push(CanaryStatus {
                namespace: c.metadata.namespace.clone().unwrap_or_default(),
                name: c.metadata.name.clone().unwrap_or_default(),
                phase: st["phase"].as_str().unwrap_or("Pending").to_string(),
                weight: st["canaryWeight"].as_i64().unwrap_or(0),
                failed_checks: st["failedChecks"].as_i64().unwrap_or(0),
                last_transition: st["lastTransitionTime"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    Ok(report)
}
