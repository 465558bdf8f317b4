//! Server-side apply of rendered objects (field manager `gridos-setup`), ApplySet membership and pruning.
//!
//! Membership follows KEP-3659 so kubectl sees the set too: a parent ConfigMap labelled
//! `applyset.kubernetes.io/id`, members labelled `applyset.kubernetes.io/part-of`. The parent also
//! records the member list, so a no-op run needs no list requests to know what to prune, and it is
//! widened before the first write so an interrupted run never loses track of what it created.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::interrupt::{Interrupt, Interrupted};
use crate::render::Object;
use crate::retry::with_retry;

pub const FIELD_MANAGER: &str = "gridos-setup";
pub const PARENT_NAME: &str = "gridos-setup";
pub const PARENT_NAMESPACE: &str = "kube-system";
pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
const ID_LABEL: &str = "applyset.kubernetes.io/id";
const TOOLING: &str = "applyset.kubernetes.io/tooling";
const GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
const NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";
const MEMBERS_KEY: &str = "members";
const CREATED_NAMESPACES_KEY: &str = "created-namespaces";
const INGRESS_INTERNAL_KEY: &str = "ingress-internal";
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

/// The cluster's API resources; refreshed after CRDs become Established.
pub struct Resolver {
    discovery: Discovery,
}

impl Resolver {
    /// Aggregated discovery (two requests) where the server has it, the classic walk otherwise.
    pub async fn new(client: &Client) -> Result<Self, ApplyError> {
        let discovery = with_retry("discovery", || async {
            match Discovery::new(client.clone()).run_aggregated().await {
                Ok(d) => Ok(d),
                Err(e) if crate::retry::is_transient(&e) => Err(e),
                Err(_) => Discovery::new(client.clone()).run().await,
            }
        })
        .await
        .map_err(ApplyError::Discovery)?;
        Ok(Resolver { discovery })
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
        self.discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))
    }

    /// Whether the cluster serves `kind` in `group` at any version.
    pub fn serves(&self, group: &str, kind: &str) -> bool {
        self.discovery.get(group).is_some_and(|g| {
            g.recommended_resources()
                .iter()
                .any(|(ar, _)| ar.kind == kind)
        })
    }

    fn api(&self, client: &Client, obj: &Object) -> Result<Api<DynamicObject>, ApplyError> {
        let (ar, caps) = self.resolve(obj)?;
        Ok(match (caps.scope, obj.namespace()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
            _ => Api::all_with(client.clone(), &ar),
        })
    }
}

/// Options of one apply call.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    pub dry_run: bool,
    pub force: bool,
}

/// `Kind.group` as ApplySet annotations name a kind (`Namespace`, `Deployment.apps`).
pub fn group_kind(obj: &Object) -> String {
    match obj.api_version().split_once('/') {
        Some((group, _)) => format!("{}.{group}", obj.kind()),
        None => obj.kind().to_string(),
    }
}

/// The ApplySet id of the parent, as KEP-3659 derives it from name, namespace, kind and group.
pub fn applyset_id() -> String {
    let digest = Sha256::digest(format!("{PARENT_NAME}.{PARENT_NAMESPACE}.ConfigMap.").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// The object as it is applied: the rendered data plus the ApplySet membership label.
pub fn with_membership(obj: &Object) -> Object {
    let mut o = obj.clone();
    if let Some(meta) = o.data.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        let labels = meta
            .entry("labels")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(l) = labels.as_object_mut() {
            l.insert(PART_OF.into(), applyset_id().into());
        }
    }
    o
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
        let applied = with_retry(&obj.id(), || api.patch(obj.name(), &params, &patch)).await;
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
/// the ids (see [`member_id`]) gridos-setup already owns.
pub async fn apply_many(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    opts: ApplyOptions,
    members: &BTreeSet<String>,
) -> Result<Vec<DynamicObject>, ApplyError> {
    apply_many_until(client, resolver, objects, opts, members, &Interrupt::new()).await
}

/// [`apply_many`] that starts no further write once `interrupt` is requested; writes already
/// started finish, and their results are lost to the caller but not to the cluster.
pub async fn apply_many_until(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    opts: ApplyOptions,
    members: &BTreeSet<String>,
    interrupt: &Interrupt,
) -> Result<Vec<DynamicObject>, ApplyError> {
    futures::stream::iter(objects.iter().map(|o| async move {
        interrupt.check()?;
        apply_one(client, resolver, o, opts, members.contains(&member_id(o))).await
    }))
    .buffered(CONCURRENCY)
    .try_collect()
    .await
}

/// The ApplySet parent's record of the previous run: members and where they live.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplySetRecord {
    /// Object ids (`Kind/ns/name` with the apiVersion's group) of the members.
    pub members: BTreeSet<String>,
    pub group_kinds: BTreeSet<String>,
    pub namespaces: BTreeSet<String>,
    /// Namespaces gridos-setup created (not merely adopted): only these may uninstall delete.
    pub created_namespaces: BTreeSet<String>,
    /// Whether the controller Service the last finished run applied was internal; `None` when not
    /// known. While it matches this run's, the Service cannot be switching between public and
    /// internal, and a re-run need not read it first.
    pub ingress_internal: Option<bool>,
    /// The cluster's revision when the record was read: objects at or below it were not written since.
    pub revision: Option<u64>,
    pub exists: bool,
}

/// A member's id in the parent's list: api version, kind, namespace and name.
pub fn member_id(obj: &Object) -> String {
    format!(
        "{} {} {} {}",
        obj.api_version(),
        obj.kind(),
        obj.namespace().unwrap_or("-"),
        obj.name()
    )
}

/// Reads a member id of the parent's list back (see [`member_id`]).
pub fn parse_member(line: &str) -> Option<Stale> {
    let mut it = line.split(' ');
    let (av, kind, ns, name) = (it.next()?, it.next()?, it.next()?, it.next()?);
    Some(Stale {
        api_version: av.into(),
        kind: kind.into(),
        namespace: (ns != "-").then(|| ns.to_string()),
        name: name.into(),
    })
}

/// The member id of a namespace, as [`member_id`] writes it.
pub fn namespace_member_id(name: &str) -> String {
    format!("v1 Namespace - {name}")
}

/// Reads the parent with one list request, which also yields the cluster's current revision.
pub async fn read_record(client: &Client) -> Result<ApplySetRecord, ApplyError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), PARENT_NAMESPACE);
    let lp = ListParams::default().fields(&format!("metadata.name={PARENT_NAME}"));
    let list = with_retry("reading the ApplySet parent", || api.list(&lp))
        .await
        .map_err(ApplyError::Parent)?;
    let revision = list
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok());
    let Some(cm) = list.items.into_iter().next() else {
        return Ok(ApplySetRecord {
            revision,
            ..Default::default()
        });
    };
    let ann = cm.metadata.annotations.unwrap_or_default();
    let split = |k: &str| -> BTreeSet<String> {
        ann.get(k)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let data = cm.data.unwrap_or_default();
    let lines = |k: &str| -> BTreeSet<String> {
        data.get(k)
            .map(|m| {
                m.lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ApplySetRecord {
        members: lines(MEMBERS_KEY),
        created_namespaces: lines(CREATED_NAMESPACES_KEY),
        group_kinds: split(GROUP_KINDS),
        namespaces: split(NAMESPACES),
        ingress_internal: data.get(INGRESS_INTERNAL_KEY).and_then(|v| v.parse().ok()),
        revision,
        exists: true,
    })
}

/// The record for a set of objects.
pub fn record_for(objects: &[Object]) -> ApplySetRecord {
    ApplySetRecord {
        members: objects.iter().map(member_id).collect(),
        group_kinds: objects.iter().map(group_kind).collect(),
        namespaces: objects
            .iter()
            .filter_map(|o| o.namespace())
            .map(String::from)
            .filter(|n| n != PARENT_NAMESPACE)
            .collect(),
        created_namespaces: BTreeSet::new(),
        ingress_internal: None,
        revision: None,
        exists: true,
    }
}

/// Writes the parent when its record differs from `want` (a no-op run writes nothing).
pub async fn write_record(
    client: &Client,
    have: &ApplySetRecord,
    want: &ApplySetRecord,
    dry_run: bool,
) -> Result<bool, ApplyError> {
    if have.exists
        && have.members == want.members
        && have.group_kinds == want.group_kinds
        && have.namespaces == want.namespaces
        && have.created_namespaces == want.created_namespaces
        && have.ingress_internal == want.ingress_internal
    {
        return Ok(false);
    }
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(",");
    let mut parent = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PARENT_NAME,
            "namespace": PARENT_NAMESPACE,
            "labels": { ID_LABEL: applyset_id(), "app.kubernetes.io/managed-by": "gridos-setup" },
            "annotations": {
                TOOLING: format!("gridos-setup/{}", env!("CARGO_PKG_VERSION")),
                GROUP_KINDS: join(&want.group_kinds),
                NAMESPACES: join(&want.namespaces),
            },
        },
        "data": {
            MEMBERS_KEY: want.members.iter().cloned().collect::<Vec<_>>().join("\n"),
            CREATED_NAMESPACES_KEY: want.created_namespaces.iter().cloned().collect::<Vec<_>>().join("\n"),
        },
    });
    if let Some(internal) = want.ingress_internal {
        parent["data"][INGRESS_INTERNAL_KEY] = internal.to_string().into();
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), PARENT_NAMESPACE);
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    let patch = Patch::Apply(&parent);
    with_retry("writing the ApplySet parent", || {
        api.patch(PARENT_NAME, &params, &patch)
    })
    .await
    .map_err(ApplyError::Parent)?;
    Ok(true)
}

/// The union of two records: what the parent holds while a run is under way.
pub fn union(a: &ApplySetRecord, b: &ApplySetRecord) -> ApplySetRecord {
    ApplySetRecord {
        members: a.members.union(&b.members).cloned().collect(),
        group_kinds: a.group_kinds.union(&b.group_kinds).cloned().collect(),
        namespaces: a.namespaces.union(&b.namespaces).cloned().collect(),
        created_namespaces: a
            .created_namespaces
            .union(&b.created_namespaces)
            .cloned()
            .collect(),
        // Until a run finishes, the Service may still be as the earlier run left it.
        ingress_internal: a.ingress_internal,
        revision: None,
        exists: true,
    }
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

/// A recorded member, as the parent lists it: one no longer rendered is pruned.
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl Stale {
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// Members recorded before that the current render no longer has.
pub fn stale(before: &ApplySetRecord, now: &ApplySetRecord) -> Vec<Stale> {
    before
        .members
        .difference(&now.members)
        .filter_map(|m| parse_member(m))
        .collect()
}

/// Deletes a stale member, but only if it still carries this set's label: a same-named object
/// someone else created since is never touched. Returns whether something was deleted.
pub async fn prune_one(
    client: &Client,
    resolver: &Resolver,
    s: &Stale,
    dry_run: bool,
) -> Result<bool, ApplyError> {
    let Some((ar, caps)) = resolver.resolve_gvk(&s.api_version, &s.kind) else {
        return Ok(false);
    };
    let api: Api<DynamicObject> = match (caps.scope, &s.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    let live = match with_retry(&s.id(), || api.get_opt(&s.name)).await {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(false),
        Err(source) => return Err(ApplyError::Api { id: s.id(), source }),
    };
    let ours = live
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PART_OF))
        .is_some_and(|v| *v == applyset_id());
    if !ours {
        return Ok(false);
    }
    let mut dp = DeleteParams::background();
    dp.dry_run = dry_run;
    dp.preconditions = Some(Preconditions {
        uid: live.metadata.uid.clone(),
        resource_version: None,
    });
    match with_retry(&s.id(), || api.delete(&s.name, &dp)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(source) => Err(ApplyError::Api { id: s.id(), source }),
    }
}

/// Labels of an object as a map, for callers that check membership.
pub fn labels_of(o: &DynamicObject) -> BTreeMap<String, String> {
    o.metadata.labels.clone().unwrap_or_default()
}

/// Applies a stream of independent deletions with the same bound as applies.
pub async fn prune_all(
    client: &Client,
    resolver: &Resolver,
    items: &[Stale],
    dry_run: bool,
) -> Result<Vec<(Stale, bool)>, ApplyError> {
    futures::stream::iter(items.iter().map(|s| async move {
        prune_one(client, resolver, s, dry_run)
            .await
            .map(|d| (s.clone(), d))
    }))
    .buffered(CONCURRENCY)
    .try_collect()
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: serde_json::Value) -> Object {
        Object {
            template: "t".into(),
            data: v,
        }
    }

    #[test]
    fn applyset_id_has_the_kep_shape() {
        let id = applyset_id();
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"));
        assert_eq!(id.len(), "applyset-".len() + 43 + "-v1".len());
    }

    #[test]
    fn group_kinds_name_core_kinds_bare() {
        let ns = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
        );
        let d = obj(
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "b"}}),
        );
        assert_eq!(group_kind(&ns), "Namespace");
        assert_eq!(group_kind(&d), "Deployment.apps");
        assert_eq!(member_id(&d), "apps/v1 Deployment b a");
        assert_eq!(
            parse_member(&member_id(&ns)),
            Some(Stale {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: "a".into()
            })
        );
        assert_eq!(member_id(&ns), namespace_member_id("a"));
    }

    #[test]
    fn stale_members_are_the_difference() {
        let a = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "x"}}),
        );
        let b = obj(
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "x"}}),
        );
        let before = record_for(&[a.clone(), b]);
        let now = record_for(&[a]);
        let s = stale(&before, &now);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id(), "ConfigMap/x/b");
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
    fn a_union_keeps_the_earlier_runs_ingress_until_the_run_finishes() {
        let before = ApplySetRecord {
            ingress_internal: Some(false),
            ..Default::default()
        };
        let now = ApplySetRecord {
            ingress_internal: Some(true),
            ..Default::default()
        };
        assert_eq!(union(&before, &now).ingress_internal, Some(false));
        assert_eq!(union(&now, &before).ingress_internal, Some(true));
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

    #[test]
    fn membership_label_is_added() {
        let o = with_membership(&obj(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
        ));
        assert_eq!(o.data["metadata"]["labels"][PART_OF], applyset_id());
    }
}
