//! Waiting, by watching, until what was applied works: CRDs Established, Deployments rolled out, the LoadBalancer address assigned.
//!
//! Every wait has a deadline and, when it runs out, says what it waited for and why it is stuck
//! (the newest pod's waiting reason, the last Warning events). kube-runtime's own conditions are
//! not used for rollouts and addresses: `is_deployment_completed` ignores observedGeneration and
//! `is_service_loadbalancer_provisioned` accepts an empty ingress list.

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out waiting for {what}: {reason}")]
    Timeout { what: String, reason: String },
    #[error("{what} failed: {reason}")]
    Failed { what: String, reason: String },
    #[error("watching {what}: {source}")]
    Watch {
        what: String,
        source: kube::runtime::watcher::Error,
    },
}

impl WaitError {
    pub fn hint(&self) -> String {
        match self {
            WaitError::Timeout { .. } => "fix the cause above, or give it longer with --timeout; a re-run resumes where this one stopped".into(),
            WaitError::Failed { .. } => "fix the cause above and re-run; a re-run resumes".into(),
            WaitError::Watch { .. } => "check that the cluster is reachable and re-run; a re-run resumes".into(),
        }
    }
}

pub fn crd_is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Rolled out: the controller has seen the current generation and every desired replica is updated, ready and available.
pub fn deployment_is_rolled_out(d: &Deployment) -> bool {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation.is_some()
        && s.observed_generation == d.metadata.generation
        && s.updated_replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) == desired
        && s.ready_replicas.unwrap_or(0) == desired
        && s.replicas.unwrap_or(0) == desired
}

/// The reason a rollout will not finish, when the Deployment says so itself.
pub fn deployment_failure(d: &Deployment) -> Option<String> {
    let s = d.status.as_ref()?;
    if s.observed_generation != d.metadata.generation {
        return None;
    }
    s.conditions.as_ref()?.iter().find_map(|c| {
        (c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
        .then(|| {
            c.message
                .clone()
                .unwrap_or_else(|| "ProgressDeadlineExceeded".into())
        })
    })
}

/// The first load-balancer address: an IP or a hostname, never an empty entry.
pub fn service_address(s: &Service) -> Option<String> {
    s.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| {
            i.ip.clone()
                .filter(|v| !v.is_empty())
                .or_else(|| i.hostname.clone().filter(|v| !v.is_empty()))
        })
}

async fn watch_until<K>(
    api: Api<K>,
    name: &str,
    deadline: Instant,
    what: &str,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> Result<Option<K>, WaitError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    // A watch dropped by an apiserver restart or a proxy is re-opened (with a relist, so no
    // change in between is missed) instead of failing the wait.
    let fields = format!("metadata.name={name}");
    let stream = watcher(api, watcher::Config::default().fields(&fields))
        .backoff(crate::retry::Delays::default());
    let find = async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    if done(&o) {
                        return Ok(Some(o));
                    }
                }
                Ok(_) => {}
                Err(e) if crate::retry::watch_error_is_transient(&e) => {
                    tracing::info!("watching {what}: {e}; watching again");
                }
                Err(source) => {
                    return Err(WaitError::Watch {
                        what: what.into(),
                        source,
                    });
                }
            }
        }
        Ok(None)
    };
    match tokio::time::timeout_at(deadline, find).await {
        Ok(r) => r,
        Err(_) => Ok(None),
    }
}

/// Waits until the namespace is deleted (not found); on timeout names what still holds it.
pub async fn namespace_gone(
    client: &Client,
    name: &str,
    deadline: Instant,
) -> Result<(), WaitError> {
    let what = format!("namespace {name} to finish deleting");
    let api: Api<Namespace> = Api::all(client.clone());
    // Watched, not polled: the condition sees the namespace vanish (None) on its delete event.
    let gone = async {
        kube::runtime::wait::await_condition(api.clone(), name, |ns: Option<&Namespace>| {
            ns.is_none()
        })
        .await
        .map(|_| ())
        .map_err(|e| WaitError::Failed {
            what: what.clone(),
            reason: e.to_string(),
        })
    };
    match tokio::time::timeout_at(deadline, gone).await {
        Ok(r) => r,
        Err(_) => {
            let reason = match api.get_opt(name).await {
                Ok(Some(ns)) => ns
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.status == "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" | "),
                _ => String::new(),
            };
            Err(WaitError::Timeout {
                what,
                reason: if reason.is_empty() {
                    "it is still Terminating".into()
                } else {
                    reason
                },
            })
        }
    }
}

/// Waits until the CRD is Established and returns it as it was then.
pub async fn crd_established(
    client: &Client,
    name: &str,
    deadline: Instant,
) -> Result<CustomResourceDefinition, WaitError> {
    let what = format!("CustomResourceDefinition {name} to be Established");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match watch_until(api, name, deadline, &what, crd_is_established).await? {
        Some(crd) => Ok(crd),
        None => Err(WaitError::Timeout {
            what,
            reason: "the apiserver has not accepted its names yet".into(),
        }),
    }
}

/// Waits for a rollout; stops early when the Deployment reports ProgressDeadlineExceeded.
pub async fn deployment_rolled_out(
    client: &Client,
    ns: &str,
    name: &str,
    deadline: Instant,
) -> Result<Deployment, WaitError> {
    let what = format!("Deployment {ns}/{name} to roll out");
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let found = watch_until(api.clone(), name, deadline, &what, |d| {
        deployment_is_rolled_out(d) || deployment_failure(d).is_some()
    })
    .await?;
    match found {
        Some(d) if deployment_is_rolled_out(&d) => Ok(d),
        Some(d) => {
            let why = deployment_failure(&d).unwrap_or_default();
            let diag = diagnose_deployment(client, ns, &d).await;
            Err(WaitError::Failed {
                what,
                reason: join_reason(&why, &diag),
            })
        }
        None => {
            let current = api.get_opt(name).await.ok().flatten();
            let diag = match &current {
                Some(d) => diagnose_deployment(client, ns, d).await,
                None => "the Deployment does not exist".into(),
            };
            let progress = current.as_ref().map(progress_of).unwrap_or_default();
            Err(WaitError::Timeout {
                what,
                reason: join_reason(&progress, &diag),
            })
        }
    }
}

fn join_reason(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}; {b}"),
    }
}

/// `1/2 available` and the like, for progress lines and timeouts.
pub fn progress_of(d: &Deployment) -> String {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    format!("{available}/{desired} replicas available")
}

/// Why pods of a Deployment are not ready: the newest pod's waiting reason and the last Warning events.
pub async fn diagnose_deployment(client: &Client, ns: &str, d: &Deployment) -> String {
    let mut parts = Vec::new();
    let selector = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
        let newest = list
            .items
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone());
        match newest {
            Some(p) => parts.push(format!(
                "newest pod {}: {}",
                p.metadata.name.as_deref().unwrap_or("?"),
                pod_reason(p)
            )),
            None => parts.push(
                "no pods were created (check the ReplicaSet's events, e.g. quota or admission)"
                    .into(),
            ),
        }
    }
    let warnings = warning_events(client, ns, d.metadata.name.as_deref().unwrap_or_default()).await;
    if !warnings.is_empty() {
        parts.push(format!("recent warnings: {}", warnings.join(" | ")));
    }
    parts.join("; ")
}

fn pod_reason(p: &Pod) -> String {
    let Some(s) = p.status.as_ref() else {
        return "no status yet".into();
    };
    let waiting = s.container_statuses.iter().flatten().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        Some(format!(
            "container {} waiting: {}{}",
            c.name,
            w.reason.as_deref().unwrap_or("unknown"),
            w.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ))
    });
    if let Some(w) = waiting {
        return w;
    }
    let unscheduled = s
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return format!(
            "Pending: {}{}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        );
    }
    format!("{}, not ready", s.phase.as_deref().unwrap_or("Unknown"))
}

/// The last Warning events in a namespace about objects whose name starts with `prefix`
/// (a Deployment, its ReplicaSets and pods share it), newest last, at most three.
pub async fn warning_events(client: &Client, ns: &str, prefix: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let Ok(list) = events
        .list(&ListParams::default().fields("type=Warning"))
        .await
    else {
        return Vec::new();
    };
    let mut items: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    items.sort_by_key(|e| {
        e.last_timestamp.clone().or(e
            .event_time
            .as_ref()
            .map(|t| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.0)))
    });
    items
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or(""),
                e.message.as_deref().unwrap_or("").trim()
            )
        })
        .collect()
}

/// Waits for a LoadBalancer Service's address other than `stale`; `on_event` hears the Service's events meanwhile
/// (the cloud controller reports quota and public-IP errors there).
/// What [`watch_with_events`] watches: `name` in `ns`, and the events of the objects `involved`.
struct Watched<'a> {
    ns: &'a str,
    name: &'a str,
    involved: &'a [(&'a str, &'a str)],
    deadline: Instant,
    what: &'a str,
}

/// Watches `name` until `done`, passing every event about the objects `involved` (kind, name)
/// in `ns` to `on_event` meanwhile. Returns what was found (`None` at the deadline) and the
/// Warning events seen, oldest first.
async fn watch_with_events<K>(
    client: &Client,
    api: Api<K>,
    w: Watched<'_>,
    done: impl Fn(&K) -> bool + Send + 'static,
    on_event: impl Fn(&str, &str) + Send + Sync + 'static,
) -> Result<(Option<K>, Vec<String>), WaitError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let Watched {
        ns,
        name,
        involved,
        deadline,
        what,
    } = w;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let streams = involved.iter().map(|(kind, n)| {
        let selector = format!("involvedObject.kind={kind},involvedObject.name={n}");
        watcher(events.clone(), watcher::Config::default().fields(&selector))
            .backoff(crate::retry::Delays::default())
            .filter_map(|e| async move {
                match e {
                    Ok(watcher::Event::Apply(ev)) | Ok(watcher::Event::InitApply(ev)) => Some(ev),
                    _ => None,
                }
            })
            .boxed()
    });
    let mut event_stream = futures::stream::select_all(streams);
    let mut last_events: Vec<String> = Vec::new();
    let wait = watch_until(api, name, deadline, what, done);
    tokio::pin!(wait);
    let mut seen = std::collections::BTreeSet::new();
    let found = loop {
        tokio::select! {
            r = &mut wait => break r?,
            Some(ev) = event_stream.next() => {
                let key = (ev.metadata.uid.clone(), ev.count);
                if seen.insert(key) {
                    let reason = ev.reason.clone().unwrap_or_default();
                    let message = ev.message.clone().unwrap_or_default();
                    on_event(&reason, &message);
                    if ev.type_.as_deref() == Some("Warning") {
                        last_events.push(format!("{reason}: {message}"));
                    }
                }
            }
        }
    };
    Ok((found, last_events))
}

/// The last (up to) three warnings, newest first, as one clause.
fn recent_warnings(last_events: &[String]) -> String {
    format!(
        "recent warnings: {}",
        last_events
            .iter()
            .rev()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" | ")
    )
}

pub async fn load_balancer_address(
    client: &Client,
    ns: &str,
    name: &str,
    stale: Option<String>,
    deadline: Instant,
    on_event: impl Fn(&str, &str) + Send + Sync + 'static,
) -> Result<(Service, String), WaitError> {
    let what = format!("Service {ns}/{name} to get a load-balancer address");
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let (found, last_events) = watch_with_events(
        client,
        api,
        Watched {
            ns,
            name,
            involved: &[("Service", name)],
            deadline,
            what: &what,
        },
        move |s| service_address(s).is_some_and(|a| Some(&a) != stale.as_ref()),
        on_event,
    )
    .await?;
    match found {
        Some(s) => {
            let addr = service_address(&s).unwrap_or_default();
            Ok((s, addr))
        }
        None => {
            let reason = if last_events.is_empty() {
                "no address was assigned and the cloud controller reported no error; check the Service's events \
                 (`kubectl describe service` ...) and the cluster's load-balancer quota"
                    .to_string()
            } else {
                recent_warnings(&last_events)
            };
            Err(WaitError::Timeout { what, reason })
        }
    }
}

/// The Gateway API's Gateway (`gateway.networking.k8s.io/v1`), which k8s-openapi has no type for.
pub fn gateway_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    }
}

/// One of the Gateway's status conditions, by type, when it speaks of the current generation
/// (Gateway API: a condition's observedGeneration older than metadata.generation is out of date).
fn current_condition<'a>(gw: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    let generation = gw.metadata.generation;
    gw.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .filter(|c| match (c["observedGeneration"].as_i64(), generation) {
            (Some(seen), Some(g)) => seen >= g,
            _ => true,
        })
}

/// Programmed: the implementation has set up the gateway's data plane for the current spec
/// (Gateway API v1 GatewayConditionType Programmed).
pub fn gateway_is_programmed(gw: &DynamicObject) -> bool {
    current_condition(gw, "Programmed").is_some_and(|c| c["status"] == "True")
}

/// The Gateway's first address (`status.addresses[0].value`: an IP or a host name), if any.
pub fn gateway_address(gw: &DynamicObject) -> Option<String> {
    gw.data["status"]["addresses"]
        .as_array()?
        .iter()
        .find_map(|a| a["value"].as_str().filter(|v| !v.is_empty()))
        .map(str::to_string)
}

/// The Gateway's conditions in one line: `Accepted=True, Programmed=False (AddressNotAssigned: ...)`.
pub fn gateway_conditions(gw: &DynamicObject) -> String {
    let Some(cs) = gw.data["status"]["conditions"]
        .as_array()
        .filter(|c| !c.is_empty())
    else {
        return "no status conditions yet (no controller has taken the Gateway: is GatewayClass approuting-istio Accepted?)".into();
    };
    cs.iter()
        .map(|c| {
            let t = c["type"].as_str().unwrap_or("?");
            let status = c["status"].as_str().unwrap_or("?");
            let reason = c["reason"].as_str().unwrap_or_default();
            let message = c["message"].as_str().unwrap_or_default();
            if status == "True" {
                format!("{t}=True")
            } else {
                format!("{t}={status} ({reason}: {message})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits for the Gateway to be Programmed with an address that is not `stale`; on timeout the
/// error names its conditions and the recent warnings about it and the Service AKS made for it.
pub async fn gateway_programmed(
    client: &Client,
    ns: &str,
    name: &str,
    service: &str,
    stale: Option<String>,
    deadline: Instant,
    on_event: impl Fn(&str, &str) + Send + Sync + 'static,
) -> Result<(DynamicObject, String), WaitError> {
    let what = format!("Gateway {ns}/{name} to be Programmed with an address");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &gateway_resource());
    let (found, last_events) = watch_with_events(
        client,
        api.clone(),
        Watched {
            ns,
            name,
            involved: &[("Gateway", name), ("Service", service)],
            deadline,
            what: &what,
        },
        move |gw| {
            gateway_is_programmed(gw)
                && gateway_address(gw).is_some_and(|a| Some(&a) != stale.as_ref())
        },
        on_event,
    )
    .await?;
    if let Some(gw) = found {
        let addr = gateway_address(&gw).unwrap_or_default();
        return Ok((gw, addr));
    }
    // One read for the state it was left in, so the error says which condition is missing.
    let state = match api.get_opt(name).await {
        Ok(Some(gw)) => gateway_conditions(&gw),
        Ok(None) => "the Gateway does not exist".into(),
        Err(e) => format!("cannot read it: {e}"),
    };
    let reason = if last_events.is_empty() {
        format!("conditions: {state}")
    } else {
        format!("conditions: {state}; {}", recent_warnings(&last_events))
    };
    Err(WaitError::Timeout { what, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    /// Generation 2, 2 replicas wanted; `status` as given.
    fn with_status(status: serde_json::Value) -> Deployment {
        deployment(serde_json::json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
    }

    #[test]
    fn rolled_out_needs_the_current_generation_and_every_replica() {
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
            "readyReplicas": 2, "availableReplicas": 2});
        assert!(deployment_is_rolled_out(&with_status(done.clone())));
        for (field, value) in [
            ("observedGeneration", 1),
            ("updatedReplicas", 1),
            ("readyReplicas", 1),
            ("availableReplicas", 1),
            // An old ReplicaSet's pod still running next to the new ones.
            ("replicas", 3),
        ] {
            let mut status = done.clone();
            status[field] = value.into();
            assert!(
                !deployment_is_rolled_out(&with_status(status)),
                "{field} = {value}"
            );
        }
        assert!(!deployment_is_rolled_out(&deployment(
            serde_json::json!({"metadata": {"generation": 1}})
        )));
    }

    #[test]
    fn a_failed_rollout_is_the_current_generations_progress_deadline() {
        let deadline = |observed: i64| {
            with_status(
                serde_json::json!({"observedGeneration": observed, "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                 "message": "ReplicaSet \"d-1\" has timed out progressing."}]}),
            )
        };
        assert_eq!(
            deployment_failure(&deadline(2)).as_deref(),
            Some("ReplicaSet \"d-1\" has timed out progressing.")
        );
        // A condition about the previous generation says nothing about this rollout.
        assert_eq!(deployment_failure(&deadline(1)), None);
        let progressing = with_status(serde_json::json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}));
        assert_eq!(deployment_failure(&progressing), None);
    }

    #[test]
    fn an_address_is_the_first_non_empty_ip_or_hostname() {
        let svc = |ingress: serde_json::Value| -> Service {
            serde_json::from_value(
                serde_json::json!({"status": {"loadBalancer": {"ingress": ingress}}}),
            )
            .unwrap()
        };
        assert_eq!(service_address(&svc(serde_json::json!([]))), None);
        assert_eq!(
            service_address(&svc(
                serde_json::json!([{"ip": ""}, {"hostname": "lb.example.com"}])
            )),
            Some("lb.example.com".into())
        );
        assert_eq!(
            service_address(&svc(
                serde_json::json!([{"ip": "203.0.113.7", "hostname": "x"}])
            )),
            Some("203.0.113.7".into())
        );
        assert_eq!(service_address(&Service::default()), None);
    }

    #[test]
    fn crds_are_established_only_by_a_true_condition() {
        let crd = |status: &str| -> CustomResourceDefinition {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "canaries.flagger.app"},
                "spec": {"group": "flagger.app", "names": {"kind": "Canary", "plural": "canaries"},
                         "scope": "Namespaced", "versions": []},
                "status": {"conditions": [{"type": "Established", "status": status}]}
            }))
            .unwrap()
        };
        assert!(crd_is_established(&crd("True")));
        assert!(!crd_is_established(&crd("False")));
    }
}
