//! The ApplySet (KEP-3659) bookkeeping: the parent record, membership, and the run's named writes to it.
//!
//! Membership follows KEP-3659 so kubectl sees the set too: a parent ConfigMap labelled
//! `applyset.kubernetes.io/id`, members labelled `applyset.kubernetes.io/part-of`. The parent also
//! records the member list, so a no-op run needs no list requests to know what to prune, and it is
//! widened before the first write so an interrupted run never loses track of what it created.
//! It also records the CRDs a finished run left settled, so that a re-run can tell with one list
//! request that applying them again would change nothing.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::render::Object;
use crate::retry::with_retry;

/// The field manager of every write, and the ApplySet's tooling name.
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
const SETTLED_KEY: &str = "settled-crds";
const ADOPTING_KEY: &str = "helm-adoption-started";
const KEPT_HISTORY_KEY: &str = "helm-history-kept";

/// The ApplySet id of the parent, as KEP-3659 derives it from name, namespace, kind and group.
pub fn applyset_id() -> String {
    let digest = Sha256::digest(format!("{PARENT_NAME}.{PARENT_NAMESPACE}.ConfigMap.").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// Whether labels carry this set's membership label: the one test of "is this object ours".
pub fn is_member(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(PART_OF))
        .is_some_and(|v| *v == applyset_id())
}

/// `Kind.group` as ApplySet annotations name a kind (`Namespace`, `Deployment.apps`).
pub fn group_kind(obj: &Object) -> String {
    match obj.api_version().split_once('/') {
        Some((group, _)) => format!("{}.{group}", obj.kind()),
        None => obj.kind().to_string(),
    }
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

/// The parent as an object, for the permission check of its first write.
pub fn parent_object() -> Object {
    Object {
        template: "applyset".into(),
        data: serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": PARENT_NAME, "namespace": PARENT_NAMESPACE},
        }),
    }
}

/// The ApplySet parent's record of a run: members and where they live.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplySetRecord {
    /// Object ids (see [`member_id`]) of the members.
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
    /// CRDs by name, as the last finished run left them (see [`Settled`]).
    pub settled: BTreeMap<String, Settled>,
    /// Helm releases (`namespace/name`) an adoption started taking over and has not finished:
    /// written before its first write, cleared by the run that finishes it, so every later
    /// command knows the releases' leftovers are a half-done adoption.
    pub adopting: BTreeSet<String>,
    /// Helm releases (`namespace/name`) whose records an adoption kept (`--keep-helm-history`).
    pub kept_history: BTreeSet<String>,
}

/// A CRD as a finished run left it: Established, written by nobody but gridos-setup's apply and
/// the apiserver's status updates. While its resourceVersion has not moved (no one has written it
/// since) and the render is the same, applying it again would change nothing. CRDs only: with
/// their large schemas they cost the apiserver more to apply than all other objects of a no-op
/// together, and unlike workloads no controller keeps writing them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub resource_version: String,
    /// [`digest`] of the body that was applied.
    pub digest: String,
}

/// A fingerprint of the body an object is applied with.
pub fn digest(obj: &Object) -> String {
    let bytes = serde_json::to_vec(&obj.data).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// `obj` as the cluster now holds it, if settled (see [`Settled`] and [`settled_version`]).
pub fn settled(obj: &Object, live: &ObjectMeta, established: bool) -> Option<Settled> {
    settled_version(live, established).map(|rv| Settled {
        resource_version: rv.to_string(),
        digest: digest(obj),
    })
}

/// The resourceVersion of an object that is settled: Established, with a field manager entry of
/// gridos-setup's apply and none but that and the status subresource's. Any other writer
/// (kubectl edit, another tool's apply, a Helm upgrade) leaves its own entry.
pub fn settled_version(live: &ObjectMeta, established: bool) -> Option<&str> {
    let fields = live.managed_fields.as_deref().unwrap_or_default();
    let ours = |m: &ManagedFieldsEntry| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.as_deref().unwrap_or_default().is_empty()
    };
    let only_ours = fields
        .iter()
        .all(|m| ours(m) || m.subresource.as_deref() == Some("status"));
    if established && only_ours && fields.iter().any(ours) {
        live.resource_version.as_deref()
    } else {
        None
    }
}

impl ApplySetRecord {
    /// The record for a set of objects.
    pub fn for_objects(objects: &[Object]) -> Self {
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
            settled: BTreeMap::new(),
            adopting: BTreeSet::new(),
            kept_history: BTreeSet::new(),
        }
    }

    /// Whether `obj` was recorded by an earlier run.
    pub fn contains(&self, obj: &Object) -> bool {
        self.members.contains(&member_id(obj))
    }

    /// The members as the parent lists them, parsed.
    pub fn parsed_members(&self) -> Vec<Stale> {
        self.members
            .iter()
            .filter_map(|m| parse_member(m))
            .collect()
    }

    /// What the parent holds: everything but the revision it was read at.
    fn same_content(&self, other: &ApplySetRecord) -> bool {
        self.exists
            && self.members == other.members
            && self.group_kinds == other.group_kinds
            && self.namespaces == other.namespaces
            && self.created_namespaces == other.created_namespaces
            && self.ingress_internal == other.ingress_internal
            && self.settled == other.settled
            && self.adopting == other.adopting
            && self.kept_history == other.kept_history
    }
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

/// The member id of a CRD, as [`member_id`] writes it.
pub fn crd_member_id(name: &str) -> String {
    format!("apiextensions.k8s.io/v1 CustomResourceDefinition - {name}")
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
        // Until a run finishes, the Service may still be as the earlier run left it; a CRD this
        // run writes meanwhile moves its resourceVersion, which voids its entry.
        ingress_internal: a.ingress_internal,
        revision: None,
        exists: true,
        settled: a.settled.clone(),
        adopting: a.adopting.union(&b.adopting).cloned().collect(),
        kept_history: a.kept_history.union(&b.kept_history).cloned().collect(),
    }
}

/// Reads the parent with one list request, which also yields the cluster's current revision.
pub async fn read(
    client: &Client,
    deadline: Option<Instant>,
) -> Result<ApplySetRecord, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), PARENT_NAMESPACE);
    let lp = ListParams::default().fields(&format!("metadata.name={PARENT_NAME}"));
    let list = with_retry("reading the ApplySet parent", deadline, || api.list(&lp)).await?;
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
        settled: data
            .get(SETTLED_KEY)
            .map(|v| parse_settled(v))
            .unwrap_or_default(),
        adopting: lines(ADOPTING_KEY),
        kept_history: lines(KEPT_HISTORY_KEY),
        revision,
        exists: true,
    })
}

/// The parent as a server-side apply body.
fn parent_body(want: &ApplySetRecord) -> serde_json::Value {
    let join = |s: &BTreeSet<String>, sep: &str| s.iter().cloned().collect::<Vec<_>>().join(sep);
    let mut parent = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PARENT_NAME,
            "namespace": PARENT_NAMESPACE,
            "labels": { ID_LABEL: applyset_id(), "app.kubernetes.io/managed-by": "gridos-setup" },
            "annotations": {
                TOOLING: format!("gridos-setup/{}", env!("CARGO_PKG_VERSION")),
                GROUP_KINDS: join(&want.group_kinds, ","),
                NAMESPACES: join(&want.namespaces, ","),
            },
        },
        "data": {
            MEMBERS_KEY: join(&want.members, "\n"),
            CREATED_NAMESPACES_KEY: join(&want.created_namespaces, "\n"),
        },
    });
    if let Some(internal) = want.ingress_internal {
        parent["data"][INGRESS_INTERNAL_KEY] = internal.to_string().into();
    }
    if !want.settled.is_empty() {
        let lines: Vec<String> = want
            .settled
            .iter()
            .map(|(name, s)| format!("{name} {} {}", s.resource_version, s.digest))
            .collect();
        parent["data"][SETTLED_KEY] = lines.join("\n").into();
    }
    for (key, set) in [
        (ADOPTING_KEY, &want.adopting),
        (KEPT_HISTORY_KEY, &want.kept_history),
    ] {
        if !set.is_empty() {
            parent["data"][key] = join(set, "\n").into();
        }
    }
    parent
}

/// The settled CRDs as the parent lists them, one `name resourceVersion digest` per line; a line
/// that does not parse is left out, which only costs that CRD's apply.
fn parse_settled(text: &str) -> BTreeMap<String, Settled> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let (name, rv, digest) = (it.next()?, it.next()?, it.next()?);
            (it.next().is_none() && !name.is_empty()).then(|| {
                (
                    name.to_string(),
                    Settled {
                        resource_version: rv.into(),
                        digest: digest.into(),
                    },
                )
            })
        })
        .collect()
}

/// The parent as one run writes it: what it holds now, and the three named writes of a run. Each
/// write is skipped when the parent already says the same, so a no-op run writes nothing.
pub struct Ledger {
    client: Client,
    deadline: Option<Instant>,
    /// What the parent holds now (as read, then as last written).
    held: ApplySetRecord,
    /// What it held when the run started.
    before: ApplySetRecord,
}

impl Ledger {
    pub fn new(client: Client, before: &ApplySetRecord, deadline: Option<Instant>) -> Self {
        Ledger {
            client,
            deadline,
            held: before.clone(),
            before: before.clone(),
        }
    }

    /// Before the first object write: the parent lists the earlier run's members and this run's,
    /// so an interrupted run can always be resumed and pruned by the next one.
    pub async fn widen(&mut self, after: &ApplySetRecord) -> Result<(), kube::Error> {
        let want = union(&self.before, after);
        self.write(want).await
    }

    /// Namespaces this run created, at once, so an interrupted run does not forget them (only
    /// these may uninstall delete).
    pub async fn record_namespaces(
        &mut self,
        created: &BTreeSet<String>,
    ) -> Result<(), kube::Error> {
        let mut want = self.held.clone();
        want.created_namespaces.extend(created.iter().cloned());
        self.write(want).await
    }

    /// After a successful run: exactly this run's members, and how its controller Service was.
    pub async fn finish(&mut self, after: &ApplySetRecord) -> Result<(), kube::Error> {
        self.write(after.clone()).await
    }

    async fn write(&mut self, want: ApplySetRecord) -> Result<(), kube::Error> {
        if self.held.same_content(&want) {
            return Ok(());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), PARENT_NAMESPACE);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(parent_body(&want));
        with_retry("writing the ApplySet parent", self.deadline, || {
            api.patch(PARENT_NAME, &params, &patch)
        })
        .await?;
        self.held = want;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rendered object of test data.
    pub(crate) fn obj(v: serde_json::Value) -> Object {
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
        let before = ApplySetRecord::for_objects(&[a.clone(), b]);
        let now = ApplySetRecord::for_objects(&[a]);
        let s = stale(&before, &now);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id(), "ConfigMap/x/b");
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
    fn membership_label_is_added_and_recognised() {
        let o = with_membership(&obj(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
        ));
        assert_eq!(o.data["metadata"]["labels"][PART_OF], applyset_id());
        let labels: BTreeMap<String, String> =
            serde_json::from_value(o.data["metadata"]["labels"].clone()).unwrap();
        assert!(is_member(Some(&labels)));
        assert!(!is_member(None));
    }

    fn crd_meta(rv: &str, managers: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(serde_json::json!({
            "name": "canaries.flagger.app", "resourceVersion": rv, "managedFields": managers,
        }))
        .unwrap()
    }

    fn crd() -> Object {
        obj(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "canaries.flagger.app"}, "spec": {"group": "flagger.app"},
        }))
    }

    #[test]
    fn a_crd_is_settled_only_as_our_apply_and_status_updates_left_it() {
        let apply = serde_json::json!({"manager": FIELD_MANAGER, "operation": "Apply"});
        let status = serde_json::json!({"manager": "kube-apiserver", "operation": "Update", "subresource": "status"});
        let ours = crd_meta("42", serde_json::json!([apply, status]));
        assert_eq!(
            settled(&crd(), &ours, true),
            Some(Settled {
                resource_version: "42".into(),
                digest: digest(&crd()),
            })
        );
        assert_eq!(settled(&crd(), &ours, false), None, "not yet Established");
        let edited = crd_meta(
            "43",
            serde_json::json!([apply, status, {"manager": "kubectl-edit", "operation": "Update"}]),
        );
        assert_eq!(
            settled(&crd(), &edited, true),
            None,
            "someone else wrote it"
        );
        let theirs = crd_meta(
            "44",
            serde_json::json!([{"manager": "helm", "operation": "Update"}]),
        );
        assert_eq!(settled(&crd(), &theirs, true), None, "not applied by us");
        let status_only = crd_meta("45", serde_json::json!([status]));
        assert_eq!(
            settled(&crd(), &status_only, true),
            None,
            "not applied by us"
        );
    }

    #[test]
    fn the_digest_follows_the_body() {
        let mut other = crd();
        other.data["spec"]["group"] = "example.com".into();
        assert_eq!(digest(&crd()), digest(&crd()));
        assert_ne!(digest(&crd()), digest(&other));
    }

    #[test]
    fn settled_crds_round_trip_through_the_parent() {
        let mut r = ApplySetRecord::default();
        for (name, rv) in [
            ("canaries.flagger.app", "7"),
            ("alertproviders.flagger.app", "9"),
        ] {
            r.settled.insert(
                name.into(),
                Settled {
                    resource_version: rv.into(),
                    digest: digest(&crd()),
                },
            );
        }
        let body = parent_body(&r);
        let text = body["data"][SETTLED_KEY].as_str().unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(parse_settled(text), r.settled);
        assert!(
            parse_settled("torn line\n\n").is_empty(),
            "a torn line is left out"
        );
        assert!(
            parent_body(&ApplySetRecord::default())["data"]
                .get(SETTLED_KEY)
                .is_none()
        );
    }

    #[test]
    fn the_parent_lists_members_one_per_line() {
        let mut r = ApplySetRecord {
            ingress_internal: Some(true),
            ..Default::default()
        };
        r.members.insert("v1 Namespace - a".into());
        r.members.insert("v1 Namespace - b".into());
        let body = parent_body(&r);
        assert_eq!(
            body["data"][MEMBERS_KEY],
            "v1 Namespace - a\nv1 Namespace - b"
        );
        assert_eq!(body["data"][INGRESS_INTERNAL_KEY], "true");
    }
}
