//! Removing what gridos-setup owns: its ApplySet members in reverse apply order, namespaces only when it created them and nothing foreign is inside, CRDs only on request.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde::Serialize;
use tokio::time::Instant;

use crate::apply::{self, PARENT_NAME, PARENT_NAMESPACE, Resolver};
use crate::cluster::{self, ConnectRequest};
use crate::error::Error;
use crate::render::Wave;

#[derive(Clone, Debug)]
pub struct UninstallRequest {
    pub connect: ConnectRequest,
    /// Also delete the CRDs, and with them every Canary, MetricTemplate and AlertProvider.
    pub purge_crds: bool,
    pub timeout: Duration,
    /// Take the run lock, waiting this long for another run's (`None`: no lock).
    pub lock_wait: Option<Duration>,
}

/// What uninstall did, object by object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UninstallSummary {
    pub deleted: Vec<String>,
    /// Left in place, each with the reason.
    pub kept: Vec<(String, String)>,
    pub nothing_installed: bool,
}

/// Kinds whose objects in a namespace mean someone else uses it; derived objects (with an owner),
/// the namespace's default ServiceAccount and root CA ConfigMap, and gridos-setup's members do not count.
pub const CONTENT_KINDS: [(&str, &str, &str); 12] = [
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("", "v1", "Pod"),
    ("", "v1", "Service"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Secret"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "PersistentVolumeClaim"),
    ("networking.k8s.io", "v1", "Ingress"),
];

/// Foreign objects in a namespace: not members, not owned by anything, not made by Kubernetes itself.
async fn foreign_content(client: &Client, resolver: &Resolver, ns: &str) -> Vec<String> {
    let id = apply::applyset_id();
    let mut found = Vec::new();
    let mut kinds: Vec<(String, String, String)> = CONTENT_KINDS
        .iter()
        .map(|(g, v, k)| (g.to_string(), v.to_string(), k.to_string()))
        .collect();
    // Flagger's custom resources count too: a Canary of the user's is the user's.
    kinds.extend(
        [
            ("flagger.app", "v1beta1", "Canary"),
            ("flagger.app", "v1beta1", "MetricTemplate"),
        ]
        .map(|(g, v, k)| (g.into(), v.into(), k.into())),
    );
    for (group, version, kind) in kinds {
        let av = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let Some((ar, _)) = resolver.resolve_gvk(&av, &kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for o in list.items {
            let name = o.metadata.name.clone().unwrap_or_default();
            let member = o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(apply::PART_OF))
                .is_some_and(|v| *v == id);
            let owned = o
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|r| !r.is_empty());
            let system = (kind == "ServiceAccount" && name == "default")
                || (kind == "ConfigMap" && name == "kube-root-ca.crt");
            if !member && !owned && !system {
                found.push(format!("{kind}/{ns}/{name}"));
            }
        }
    }
    found
}

fn api_for(
    client: &Client,
    ar: &ApiResource,
    scope: &Scope,
    ns: Option<&str>,
) -> Api<DynamicObject> {
    match (scope, ns) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}

pub async fn uninstall(req: &UninstallRequest) -> Result<UninstallSummary, Error> {
    uninstall_with(req, &crate::interrupt::Interrupt::new()).await
}

/// [`uninstall`] that starts no deletion once `interrupt` is requested and ends its waits; the
/// record still lists what is left, so a re-run finishes the job.
pub async fn uninstall_with(
    req: &UninstallRequest,
    interrupt: &crate::interrupt::Interrupt,
) -> Result<UninstallSummary, Error> {
    let cluster = cluster::connect(&req.connect).await?;
    let client = cluster.client;
    let lock = match req.lock_wait {
        Some(wait) => {
            use crate::progress::Reporter;
            // Uninstall prints no progress events otherwise; waiting is worth a line on stderr.
            let on_wait = |w: crate::lock::LockWait| crate::progress::PlainLines.event(&w.event());
            let lock_req = crate::lock::LockRequest {
                command: "uninstall",
                wait,
                on_wait: &on_wait,
            };
            Some(crate::lock::acquire(&client, &lock_req, interrupt).await?)
        }
        None => None,
    };
    let result = match &lock {
        Some(l) => tokio::select! {
            r = run_uninstall(req, client, interrupt) => r,
            e = l.lost() => Err(e.into()),
        },
        None => run_uninstall(req, client, interrupt).await,
    };
    if let Some(l) = lock {
        l.release().await;
    }
    result
}

async fn run_uninstall(
    req: &UninstallRequest,
    client: kube::Client,
    interrupt: &crate::interrupt::Interrupt,
) -> Result<UninstallSummary, Error> {
    // The deadline starts once the lock is held: waiting for it has its own limit.
    let deadline = Instant::now() + req.timeout;
    crate::retry::limit_to(deadline);
    let record = apply::read_record(&client).await?;
    let mut summary = UninstallSummary::default();
    if !record.exists {
        summary.nothing_installed = true;
        return Ok(summary);
    }
    let resolver = Resolver::new(&client).await?;
    let mut members = apply::stale(&record, &apply::ApplySetRecord::default());
    // Reverse apply order: custom resources first, namespaces and CRDs last.
    members.sort_by_key(|m| std::cmp::Reverse(Wave::of(&m.kind)));
    let mut remaining = record.clone();
    let mut namespaces = Vec::new();
    let mut waves: Vec<Vec<apply::Stale>> = Vec::new();
    for m in members {
        if m.kind == "CustomResourceDefinition" && !req.purge_crds {
            summary.kept.push((
                m.id(),
                "CRDs stay without --purge-crds (deleting them deletes every Canary)".into(),
            ));
            continue;
        }
        if m.kind == "Namespace" {
            namespaces.push(m);
            continue;
        }
        match waves.last_mut() {
            Some(w)
                if w.last()
                    .is_some_and(|l| Wave::of(&l.kind) == Wave::of(&m.kind)) =>
            {
                w.push(m)
            }
            _ => waves.push(vec![m]),
        }
    }
    for wave in &waves {
        interrupt.check()?;
        for (s, deleted) in apply::prune_all(&client, &resolver, wave, false).await? {
            if deleted {
                summary.deleted.push(s.id());
            }
        }
    }
    // Wait for the deleted objects to go, so namespace content is judged on what is really left.
    let waits = waves.iter().flatten().filter_map(|s| {
        let (ar, caps) = resolver.resolve_gvk(&s.api_version, &s.kind)?;
        let api = api_for(&client, &ar, &caps.scope, s.namespace.as_deref());
        let name = s.name.clone();
        Some(async move {
            let gone = |o: Option<&DynamicObject>| o.is_none();
            let _ = tokio::time::timeout_at(deadline, await_condition(api, &name, gone)).await;
        })
    });
    interrupt
        .guard(async {
            join_all(waits).await;
            Ok::<_, Error>(())
        })
        .await?;
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut deleting = Vec::new();
    for ns in namespaces {
        let id = ns.id();
        if !record.created_namespaces.contains(&ns.name) {
            summary
                .kept
                .push((id, "gridos-setup did not create it".into()));
            continue;
        }
        let foreign = foreign_content(&client, &resolver, &ns.name).await;
        if !foreign.is_empty() {
            let shown: Vec<_> = foreign.iter().take(3).cloned().collect();
            summary.kept.push((
                id,
                format!(
                    "it holds objects that are not gridos-setup's: {}",
                    shown.join(", ")
                ),
            ));
            continue;
        }
        interrupt.check()?;
        if let Ok(Some(live)) = ns_api.get_opt(&ns.name).await {
            let _ = ns_api.delete(&ns.name, &DeleteParams::background()).await;
            deleting.push((ns.name.clone(), live.metadata.uid.unwrap_or_default()));
            summary.deleted.push(id);
        }
    }
    let waits = deleting.iter().map(|(name, uid)| {
        let api = ns_api.clone();
        async move {
            tokio::time::timeout_at(
                deadline,
                await_condition(api, name, conditions::is_deleted(uid)),
            )
            .await
        }
    });
    let results = interrupt
        .guard(async { Ok::<_, Error>(join_all(waits).await) })
        .await?;
    for (r, (name, _)) in results.into_iter().zip(&deleting) {
        if r.is_err() {
            return Err(Error::Wait(crate::wait::WaitError::Timeout {
                what: format!("namespace {name} to be deleted"),
                reason: "its content is still being removed (check `kubectl get all -n` it)".into(),
            }));
        }
    }
    // What stays recorded is exactly what was kept; everything else is gone or was never there.
    interrupt.check()?;
    let keep: BTreeSet<String> = summary.kept.iter().map(|(id, _)| id.clone()).collect();
    remaining
        .members
        .retain(|m| apply::parse_member(m).is_some_and(|s| keep.contains(&s.id())));
    if remaining.members.is_empty() {
        let parents: Api<ConfigMap> = Api::namespaced(client.clone(), PARENT_NAMESPACE);
        let _ = parents.delete(PARENT_NAME, &DeleteParams::default()).await;
    } else {
        remaining
            .created_namespaces
            .retain(|n| remaining.members.contains(&apply::namespace_member_id(n)));
        apply::write_record(&client, &record, &remaining, false).await?;
    }
    Ok(summary)
}
