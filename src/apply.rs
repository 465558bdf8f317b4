//! Server-side apply of rendered objects (field manager `gridos-setup`), discovery, and pruning of stale ApplySet members.
//!
//! The ApplySet record itself (members, the parent's writes) is [`crate::applyset`]'s.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Future, StreamExt};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde::Serialize;
use tokio::time::Instant;

use crate::applyset::{
    ApplySetRecord, FIELD_MANAGER, PARENT_NAME, PARENT_NAMESPACE, Stale, is_member, member_id,
};
use crate::interrupt::{Interrupt, Interrupted};
use crate::render::Object;
use crate::retry::with_retry;

/// Objects applied at once within a wave: enough to hide latency, few enough not to be throttled.
const CONCURRENCY: usize = 8;
/// Fields another controller owns by design; when they are the only conflict, gridos-setup lets go of them.
const YIELDED_FIELDS: [&str; 1] = [".spec.replicas"];
/// The field manager of the HPA controller (and the other built-in controllers).
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{id}: the cluster does not serve {api_version} {kind}")]
    UnknownKind {
        id: String,
        api_version: String,
        kind: String,
    },
    #[error("{id}: {fields} managed by {managers}")]
    Conflict {
        id: String,
        fields: String,
        managers: String,
    },
    #[error("{id}: {verb} {resource} is forbidden for this user")]
    Forbidden {
        id: String,
        verb: String,
        resource: String,
        message: String,
    },
    #[error("{id}: {source}")]
    Api { id: String, source: kube::Error },
    #[error("discovery failed: {0}")]
    Discovery(kube::Error),
    #[error("the ApplySet parent ConfigMap {PARENT_NAMESPACE}/{PARENT_NAME}: {0}")]
    Parent(kube::Error),
    /// Interruption was requested before this write started.
    #[error("interrupted before the next write")]
    Interrupted,
}

impl From<Interrupted> for ApplyError {
    fn from(_: Interrupted) -> Self {
        ApplyError::Interrupted
    }
}

impl ApplyError {
    pub fn hint(&self) -> String {
        match self {
            ApplyError::UnknownKind { .. } => "install the CRD that serves this kind, or switch that component off".into(),
            ApplyError::Conflict { .. } => {
                "another tool installed this object; remove that install, or re-run with --force-conflicts to take ownership".into()
            }
            ApplyError::Forbidden { verb, resource, .. } => format!(
                "bind a role that allows {verb} on {resource} (`gridos-setup rbac` prints the ClusterRole install needs)"
            ),
            ApplyError::Interrupted => "re-run the same command to resume".into(),
            ApplyError::Api { .. } | ApplyError::Discovery(_) | ApplyError::Parent(_) => {
                "check that the cluster is reachable (`kubectl cluster-info`) and re-run; a re-run resumes".into()
            }
        }
    }
}

/// What one apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
        }
    }
}

/// One object's result, as the summary lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObjectResult {
    pub id: String,
    pub result: Outcome,
}

/// The cluster's API resources; refreshed after CRDs become Established.
///
/// The core group (`""`, version `v1`) is not discovered but known: its kinds are GA, served by
/// every apiserver and never removed, so asking `/api` on each run would only cost a request.
pub struct Resolver {
    discovery: Discovery,
}

/// Core `v1` kinds gridos-setup renders, reads or may find in an ApplySet record, with their scope.
fn core_kind(kind: &str) -> Option<(ApiResource, ApiCapabilities)> {
    use k8s_openapi::api::core::v1 as core;
    let (ar, scope) = match kind {
        "Namespace" => (ApiResource::erase::<core::Namespace>(&()), Scope::Cluster),
        "ServiceAccount" => (
            ApiResource::erase::<core::ServiceAccount>(&()),
            Scope::Namespaced,
        ),
        "ConfigMap" => (
            ApiResource::erase::<core::ConfigMap>(&()),
            Scope::Namespaced,
        ),
        "Secret" => (ApiResource::erase::<core::Secret>(&()), Scope::Namespaced),
        "Service" => (ApiResource::erase::<core::Service>(&()), Scope::Namespaced),
        "Pod" => (ApiResource::erase::<core::Pod>(&()), Scope::Namespaced),
        "Endpoints" => (
            ApiResource::erase::<core::Endpoints>(&()),
            Scope::Namespaced,
        ),
        "PersistentVolumeClaim" => (
            ApiResource::erase::<core::PersistentVolumeClaim>(&()),
            Scope::Namespaced,
        ),
        "ResourceQuota" => (
            ApiResource::erase::<core::ResourceQuota>(&()),
            Scope::Namespaced,
        ),
        "LimitRange" => (
            ApiResource::erase::<core::LimitRange>(&()),
            Scope::Namespaced,
        ),
        _ => return None,
    };
    let caps = ApiCapabilities {
        scope,
        subresources: Vec::new(),
        operations: Vec::new(),
    };
    Some((ar, caps))
}

impl Resolver {
    /// Aggregated discovery of the non-core groups (one request) where the server has it, the
    /// classic walk otherwise.
    pub async fn new(client: &Client, deadline: Option<Instant>) -> Result<Self, ApplyError> {
        let discovery = with_retry("discovery", deadline, || async {
            match Discovery::new(client.clone())
                .exclude(&[""])
                .run_aggregated()
                .await
            {
                Ok(d) => Ok(d),
                Err(e) if crate::retry::is_transient(&e) => Err(e),
                Err(_) => Discovery::new(client.clone()).exclude(&[""]).run().await,
            }
        })
        .await
        .map_err(ApplyError::Discovery)?;
        Ok(Resolver { discovery })
    }

    /// From the discovery that connecting made as its first request.
    pub fn from_discovery(discovery: Discovery) -> Self {
        Resolver { discovery }
    }

    pub fn resolve(&self, obj: &Object) -> Result<(ApiResource, ApiCapabilities), ApplyError> {
        self.resolve_gvk(obj.api_version(), obj.kind())
            .ok_or_else(|| ApplyError::UnknownKind {
                id: obj.id(),
                api_version: obj.api_version().into(),
                kind: obj.kind().into(),
            })
    }

    pub fn resolve_gvk(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Option<(ApiResource, ApiCapabilities)> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if group.is_empty() {
            return core_kind(kind).filter(|_| version == "v1");
        }
        self.discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
    }

    /// Whether the cluster serves `kind` in `group` at any version.
    pub fn serves(&self, group: &str, kind: &str) -> bool {
        if group.is_empty() {
            return core_kind(kind).is_some();
        }
        self.discovery.get(group).is_some_and(|g| {
            g.recommended_resources()
                .iter()
                .any(|(ar, _)| ar.kind == kind)
        })
    }

    fn api(&self, client: &Client, obj: &Object) -> Result<Api<DynamicObject>, ApplyError> {
        let (ar, caps) = self.resolve(obj)?;
        Ok(scoped(client, &ar, &caps, obj.namespace()))
    }

    /// The API of a kind for an object in `namespace` (ignored for cluster-scoped kinds), if served.
    pub fn api_for(
        &self,
        client: &Client,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Option<Api<DynamicObject>> {
        let (ar, caps) = self.resolve_gvk(api_version, kind)?;
        Some(scoped(client, &ar, &caps, namespace))
    }
}

/// A namespaced kind's API in `namespace`, or the cluster-wide one.
pub fn scoped(
    client: &Client,
    ar: &ApiResource,
    caps: &ApiCapabilities,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (&caps.scope, namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, ar),
        _ => Api::all_with(client.clone(), ar),
    }
}

/// Options of one apply call.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    pub dry_run: bool,
    pub force: bool,
    /// The run's deadline: no retry starts after it.
    pub deadline: Option<Instant>,
}

/// (manager, field) pairs from the apiserver's conflict message, in either of its two forms:
/// `conflict with "m" using v1: .a` and `conflicts with "m" using v1:` followed by `- .a` lines.
fn conflict_fields(status: &kube::core::Status) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut manager = String::new();
    for line in status.message.lines() {
        let line = line.trim();
        if let Some(field) = line.strip_prefix("- ") {
            out.push((manager.clone(), field.trim().to_string()));
            continue;
        }
        for marker in ["conflicts with \"", "conflict with \""] {
            if let Some((_, rest)) = line.split_once(marker) {
                manager = rest.split('"').next().unwrap_or_default().to_string();
                if let Some((_, field)) = rest.rsplit_once(": ") {
                    out.push((manager.clone(), field.trim().to_string()));
                }
                break;
            }
        }
    }
    out
}

fn remove_field(data: &mut serde_json::Value, path: &str) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut node = data;
    for p in parents {
        match node.get_mut(*p) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(*last);
    }
}

fn map_error(obj: &Object, verb: &str, e: kube::Error) -> ApplyError {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            let resource = format!("{} ({})", obj.kind(), obj.api_version());
            ApplyError::Forbidden {
                id: obj.id(),
                verb: verb.into(),
                resource,
                message: s.message,
            }
        }
        source => ApplyError::Api {
            id: obj.id(),
            source,
        },
    }
}

/// Applies one object (server-side apply).
///
/// Conflicts are resolved by who holds the field: fields another controller owns by design (an
/// HPA's replicas, held by kube-controller-manager) are let go; on an object gridos-setup already
/// owns (`owned`: a member of its ApplySet), anything else is drift and is taken back; on any other
/// object the conflict is an error naming the other manager, unless `opts.force`.
pub async fn apply_one(
    client: &Client,
    resolver: &Resolver,
    obj: &Object,
    opts: ApplyOptions,
    owned: bool,
) -> Result<DynamicObject, ApplyError> {
    let api = resolver.api(client, obj)?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = opts.dry_run;
    params.force = opts.force;
    let mut data = obj.data.clone();
    loop {
        let patch = Patch::Apply(&data);
        let applied = with_retry(&obj.id(), opts.deadline, || {
            api.patch(obj.name(), &params, &patch)
        })
        .await;
        match applied {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(s)) if s.code == 409 && !params.force => {
                let conflicts = conflict_fields(&s);
                let by_design = !conflicts.is_empty()
                    && conflicts.iter().all(|(m, f)| {
                        m == CONTROLLER_MANAGER && YIELDED_FIELDS.contains(&f.as_str())
                    });
                if by_design {
                    for (_, f) in &conflicts {
                        remove_field(&mut data, f);
                    }
                    continue;
                }
                if owned {
                    params.force = true;
                    continue;
                }
                let managers: BTreeSet<_> =
                    conflicts.iter().map(|(m, _)| format!("{m:?}")).collect();
                let fields: BTreeSet<_> = conflicts.iter().map(|(_, f)| f.clone()).collect();
                return Err(ApplyError::Conflict {
                    id: obj.id(),
                    fields: if fields.is_empty() {
                        "fields".into()
                    } else {
                        fields.into_iter().collect::<Vec<_>>().join(", ")
                    },
                    managers: if managers.is_empty() {
                        "another field manager".into()
                    } else {
                        managers.into_iter().collect::<Vec<_>>().join(", ")
                    },
                });
            }
            Err(e) => return Err(map_error(obj, "patch", e)),
        }
    }
}

/// Applies objects concurrently (bounded), keeping the input order in the result; `members` are
/// the ids (see [`member_id`]) gridos-setup already owns. No further write starts once `interrupt`
/// is requested; writes already started finish, and their results are lost to the caller but not
/// to the cluster.
pub async fn apply_many_until(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    opts: ApplyOptions,
    members: &BTreeSet<String>,
    interrupt: &Interrupt,
) -> Result<Vec<DynamicObject>, ApplyError> {
    concurrently(objects.iter().map(|o| async move {
        interrupt.check()?;
        apply_one(client, resolver, o, opts, members.contains(&member_id(o))).await
    }))
    .await
}

/// Runs fallible requests with at most [`CONCURRENCY`] in flight and returns their results in input
/// order. Unlike `buffered`, a slow request (a CRD's apply compares large schemas) does not hold
/// back the start of the ones after it. After a failure no further request starts, those under way
/// finish, and the error returned is the first failed request's in input order, as before.
pub async fn concurrently<T, E, F>(requests: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    let failed = AtomicBool::new(false);
    let failed = &failed;
    let done = all_concurrently(requests.into_iter().map(|f| async move {
        if failed.load(Ordering::Relaxed) {
            return None;
        }
        let r = f.await;
        if r.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        Some(r)
    }))
    .await;
    let mut values = Vec::with_capacity(done.len());
    for r in done {
        match r {
            Some(Ok(v)) => values.push(v),
            Some(Err(e)) => return Err(e),
            // Skipped only after a failure, which this loop returns.
            None => {}
        }
    }
    Ok(values)
}

/// [`concurrently`] for requests that always complete (their answers carry their own errors).
pub async fn all_concurrently<T, F>(requests: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: Future<Output = T>,
{
    let mut done: Vec<(usize, T)> = futures::stream::iter(
        requests
            .into_iter()
            .enumerate()
            .map(|(i, f)| async move { (i, f.await) }),
    )
    .buffer_unordered(CONCURRENCY)
    .collect()
    .await;
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, v)| v).collect()
}

/// How an applied object compares with before the run. Objects at or below the run's start revision
/// were not written (unchanged). A written object whose apply time is its creation time (within the
/// second both are stamped to) was created by this run; otherwise it was configured.
pub fn outcome(before: &ApplySetRecord, obj: &Object, applied: &DynamicObject) -> Outcome {
    let written = match (
        before.revision,
        applied
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(start), Some(now)) => now > start,
        _ => true,
    };
    if !written {
        return Outcome::Unchanged;
    }
    let applied_at = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .and_then(|m| m.time.as_ref());
    match (applied_at, applied.metadata.creation_timestamp.as_ref()) {
        // Both are stamped during the create, to the second, at slightly different moments.
        (Some(at), Some(created)) if at.0.duration_since(created.0).abs().as_secs() <= 1 => {
            Outcome::Created
        }
        (Some(_), Some(_)) => Outcome::Configured,
        _ if before.members.contains(&member_id(obj)) => Outcome::Configured,
        _ => Outcome::Created,
    }
}

/// Deletes a stale member, but only if it still carries this set's label: a same-named object
/// someone else created since is never touched. Returns whether something was deleted.
pub async fn prune_one(
    client: &Client,
    resolver: &Resolver,
    s: &Stale,
    opts: ApplyOptions,
) -> Result<bool, ApplyError> {
    let Some(api) = resolver.api_for(client, &s.api_version, &s.kind, s.namespace.as_deref())
    else {
        return Ok(false);
    };
    let live = match with_retry(&s.id(), opts.deadline, || api.get_opt(&s.name)).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(false),
        Err(source) => return Err(ApplyError::Api { id: s.id(), source }),
    };
    if !is_member(live.metadata.labels.as_ref()) {
        return Ok(false);
    }
    let mut dp = DeleteParams::background();
    dp.dry_run = opts.dry_run;
    dp.preconditions = Some(Preconditions {
        uid: live.metadata.uid.clone(),
        resource_version: None,
    });
    match with_retry(&s.id(), opts.deadline, || api.delete(&s.name, &dp)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(source) => Err(ApplyError::Api { id: s.id(), source }),
    }
}

/// Applies a stream of independent deletions with the same bound as applies.
pub async fn prune_all(
    client: &Client,
    resolver: &Resolver,
    items: &[Stale],
    opts: ApplyOptions,
) -> Result<Vec<(Stale, bool)>, ApplyError> {
    concurrently(items.iter().map(|s| async move {
        prune_one(client, resolver, s, opts)
            .await
            .map(|d| (s.clone(), d))
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applyset::tests::obj;

    #[tokio::test]
    async fn a_slow_request_does_not_hold_back_the_ones_after_it() {
        // The first request finishes only once the last one has started: that last one starts
        // only if the requests finished meanwhile free their slots although the first is not done.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut rx = Some(rx);
        let mut tx = Some(tx);
        let n = CONCURRENCY + 1;
        let requests = (0..n).map(|i| {
            let (rx, tx) = (
                if i == 0 { rx.take() } else { None },
                if i == n - 1 { tx.take() } else { None },
            );
            async move {
                if let Some(rx) = rx {
                    rx.await.map_err(|_| "the last request never started")?;
                }
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                Ok::<_, &str>(i)
            }
        });
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), concurrently(requests))
            .await
            .expect("head-of-line blocked");
        assert_eq!(
            done,
            Ok((0..n).collect::<Vec<_>>()),
            "results keep input order"
        );
    }

    #[tokio::test]
    async fn after_a_failure_no_request_starts_and_the_first_failure_in_order_is_returned() {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let started = &started;
        let n = 3 * CONCURRENCY;
        let r = concurrently((0..n).map(|i| async move {
            started.fetch_add(1, Ordering::Relaxed);
            // The later failure finishes first; the earlier one is still reported.
            if i == 2 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return Err(i);
            }
            if i == 3 {
                return Err(i);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Ok(i)
        }))
        .await;
        assert_eq!(r, Err(2));
        let started = started.load(Ordering::Relaxed);
        assert!(
            started < n,
            "{started} of {n} requests started after a failure"
        );
    }

    #[test]
    fn conflicts_are_parsed_from_the_apiserver_message() {
        // The single-line form names manager and field together; the multi-line form lists fields.
        let single = kube::core::Status::failure(
            "Apply failed with 1 conflict: conflict with \"kube-controller-manager\" using apps/v1: .spec.replicas",
            "Conflict",
        )
        .with_code(409);
        assert_eq!(
            conflict_fields(&single),
            vec![(
                "kube-controller-manager".to_string(),
                ".spec.replicas".to_string()
            )]
        );
        let multi = kube::core::Status::failure(
            "Apply failed with 2 conflicts: conflicts with \"helm\" using v1:\n- .data.a\n- .data.b",
            "Conflict",
        )
        .with_code(409);
        assert_eq!(
            conflict_fields(&multi),
            vec![
                ("helm".to_string(), ".data.a".to_string()),
                ("helm".to_string(), ".data.b".to_string())
            ]
        );
    }

    fn applied(rv: &str, created: &str, applied_at: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "x", "resourceVersion": rv, "creationTimestamp": created,
                "managedFields": [{"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": "v1", "time": applied_at}]}
        }))
        .unwrap()
    }

    #[test]
    fn outcomes_come_from_the_revision_and_the_apply_time() {
        let o = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}}),
        );
        let before = ApplySetRecord {
            revision: Some(100),
            ..Default::default()
        };
        let t = "2026-11-26T10:00:00Z";
        assert_eq!(
            outcome(&before, &o, &applied("90", t, t)),
            Outcome::Unchanged
        );
        assert_eq!(
            outcome(&before, &o, &applied("101", t, t)),
            Outcome::Created
        );
        // Created across a second boundary: still created.
        assert_eq!(
            outcome(&before, &o, &applied("101", t, "2026-11-26T10:00:01Z")),
            Outcome::Created
        );
        assert_eq!(
            outcome(&before, &o, &applied("101", t, "2026-11-26T10:05:00Z")),
            Outcome::Configured
        );
    }
}
