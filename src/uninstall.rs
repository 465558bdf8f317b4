//! Removing what gridos-setup owns: its ApplySet members in reverse apply order, namespaces only when it created them and nothing foreign is inside, CRDs only on request.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::runtime::wait::await_condition;
use serde::Serialize;
use tokio::time::Instant;

use crate::apply::{self, ApplyError, ApplyOptions, Resolver};
use crate::applyset::{self, ApplySetRecord, Ledger, PARENT_NAME, PARENT_NAMESPACE, Stale};
use crate::cluster::{self, ConnectRequest};
use crate::context::deadline_after;
use crate::error::Error;
use crate::interrupt::Interrupt;
use crate::render::Wave;
use crate::wait::WaitError;

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
            let member = applyset::is_member(o.metadata.labels.as_ref());
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

/// Starts no deletion once `interrupt` is requested and ends its waits; the record still lists
/// what is left, so a re-run finishes the job.
pub async fn uninstall_with(
    req: &UninstallRequest,
    interrupt: &Interrupt,
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
    interrupt: &Interrupt,
) -> Result<UninstallSummary, Error> {
    // The deadline starts once the lock is held: waiting for it has its own limit.
    let deadline = deadline_after(Instant::now(), req.timeout);
    let record = applyset::read(&client, Some(deadline))
        .await
        .map_err(parent_error)?;
    let mut summary = UninstallSummary::default();
    if !record.exists {
        summary.nothing_installed = true;
        return Ok(summary);
    }
    let run = Removal {
        resolver: Resolver::new(&client, Some(deadline)).await?,
        client,
        deadline,
        interrupt,
    };
    let (waves, namespaces) = sort_members(&record, req.purge_crds, &mut summary);
    run.delete_members(&waves, &mut summary).await?;
    run.delete_namespaces(&record, namespaces, &mut summary)
        .await?;
    interrupt.check()?;
    run.forget_deleted(&record, &summary).await?;
    Ok(summary)
}

fn parent_error(e: kube::Error) -> Error {
    Error::Apply(ApplyError::Parent(e))
}

/// Members by wave in reverse apply order (custom resources first), and the namespaces apart;
/// the CRDs are kept (in `summary`) without `purge_crds`.
fn sort_members(
    record: &ApplySetRecord,
    purge_crds: bool,
    summary: &mut UninstallSummary,
) -> (Vec<Vec<Stale>>, Vec<Stale>) {
    let mut members = record.parsed_members();
    members.sort_by_key(|m| std::cmp::Reverse(Wave::of(&m.kind)));
    let mut namespaces = Vec::new();
    let mut waves: Vec<Vec<Stale>> = Vec::new();
    for m in members {
        if m.kind == "CustomResourceDefinition" && !purge_crds {
            let why = "CRDs stay without --purge-crds (deleting them deletes every Canary)";
            summary.kept.push((m.id(), why.into()));
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
    (waves, namespaces)
}

/// What one uninstall shares between its steps.
struct Removal<'a> {
    client: Client,
    resolver: Resolver,
    deadline: Instant,
    interrupt: &'a Interrupt,
}

impl Removal<'_> {
    /// Deletes the members wave by wave, then waits until they are gone, so that namespace
    /// content is judged on what is really left.
    async fn delete_members(
        &self,
        waves: &[Vec<Stale>],
        summary: &mut UninstallSummary,
    ) -> Result<(), Error> {
        let opts = ApplyOptions {
            deadline: Some(self.deadline),
            ..Default::default()
        };
        for wave in waves {
            self.interrupt.check()?;
            for (s, deleted) in apply::prune_all(&self.client, &self.resolver, wave, opts).await? {
                if deleted {
                    summary.deleted.push(s.id());
                }
            }
        }
        let waits = waves.iter().flatten().filter_map(|s| {
            let api = self.resolver.api_for(
                &self.client,
                &s.api_version,
                &s.kind,
                s.namespace.as_deref(),
            )?;
            Some(self.gone(api, s.id(), s.name.clone(), None))
        });
        let results = self
            .interrupt
            .guard(async { Ok::<_, Error>(join_all(waits).await) })
            .await?;
        results.into_iter().collect()
    }

    /// Waits until the object is gone (or, with `uid`, that incarnation of it). A watch that fails
    /// is not taken for "gone": the object is read once more to tell.
    async fn gone<K>(
        &self,
        api: Api<K>,
        id: String,
        name: String,
        uid: Option<String>,
    ) -> Result<(), Error>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    {
        let cond = move |o: Option<&K>| match (&uid, o) {
            (_, None) => true,
            (Some(uid), Some(o)) => o.meta().uid.as_deref() != Some(uid.as_str()),
            (None, Some(_)) => false,
        };
        let timeout = |reason: String| {
            Error::Wait(WaitError::Timeout {
                what: format!("{id} to be deleted"),
                reason,
            })
        };
        match tokio::time::timeout_at(self.deadline, await_condition(api.clone(), &name, cond))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => match api.get_opt(&name).await {
                Ok(None) => Ok(()),
                _ => Err(Error::Wait(WaitError::Failed {
                    what: format!("watching {id} being deleted"),
                    reason: format!("{e}, and it may still be there"),
                })),
            },
            Err(_) => Err(timeout(
                "it is still there (a finalizer or its content holds it; `kubectl describe` it)"
                    .into(),
            )),
        }
    }

    /// Deletes the namespaces gridos-setup created and nothing foreign is inside, and waits for them.
    async fn delete_namespaces(
        &self,
        record: &ApplySetRecord,
        namespaces: Vec<Stale>,
        summary: &mut UninstallSummary,
    ) -> Result<(), Error> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut deleting = Vec::new();
        for ns in namespaces {
            let id = ns.id();
            if !record.created_namespaces.contains(&ns.name) {
                summary
                    .kept
                    .push((id, "gridos-setup did not create it".into()));
                continue;
            }
            let foreign = foreign_content(&self.client, &self.resolver, &ns.name).await;
            if !foreign.is_empty() {
                let shown: Vec<_> = foreign.iter().take(3).cloned().collect();
                let why = format!(
                    "it holds objects that are not gridos-setup's: {}",
                    shown.join(", ")
                );
                summary.kept.push((id, why));
                continue;
            }
            self.interrupt.check()?;
            if let Ok(Some(live)) = api.get_opt(&ns.name).await {
                let _ = api.delete(&ns.name, &DeleteParams::background()).await;
                let uid = live.metadata.uid;
                deleting.push(self.gone(
                    api.clone(),
                    format!("namespace {}", ns.name),
                    ns.name.clone(),
                    uid,
                ));
                summary.deleted.push(id);
            }
        }
        let results = self
            .interrupt
            .guard(async { Ok::<_, Error>(join_all(deleting).await) })
            .await?;
        results.into_iter().collect()
    }

    /// What stays recorded is exactly what was kept; everything else is gone or was never there.
    async fn forget_deleted(
        &self,
        record: &ApplySetRecord,
        summary: &UninstallSummary,
    ) -> Result<(), Error> {
        let keep: BTreeSet<String> = summary.kept.iter().map(|(id, _)| id.clone()).collect();
        let mut remaining = record.clone();
        remaining
            .members
            .retain(|m| applyset::parse_member(m).is_some_and(|s| keep.contains(&s.id())));
        if remaining.members.is_empty() {
            let parents: Api<ConfigMap> = Api::namespaced(self.client.clone(), PARENT_NAMESPACE);
            let _ = parents.delete(PARENT_NAME, &DeleteParams::default()).await;
            return Ok(());
        }
        remaining.created_namespaces.retain(|n| {
            remaining
                .members
                .contains(&applyset::namespace_member_id(n))
        });
        remaining
            .settled
            .retain(|name, _| remaining.members.contains(&applyset::crd_member_id(name)));
        Ledger::new(self.client.clone(), record, Some(self.deadline))
            .finish(&remaining)
            .await
            .map_err(parent_error)
    }
}
