//! Taking over ingress-nginx, Flagger and the load tester from the Helm releases the old install-flagger.sh made, keeping the controller Service and its load-balancer address.
//!
//! Helm 3 marks what it owns (helm.sh/docs/topics/charts, "Standard labels"; Helm's
//! `pkg/action/validate.go` for the annotations it checks before it takes an object):
//! label `app.kubernetes.io/managed-by: Helm`, annotations `meta.helm.sh/release-name` and
//! `meta.helm.sh/release-namespace`, and it writes with field manager `helm`. Its release records
//! are Secrets `sh.helm.release.v1.<release>.v<revision>` of type `helm.sh/release.v1`, labelled
//! `owner=helm`, `name=<release>`, `status`, `version` (Helm's `pkg/storage/driver/secrets.go`).
//! Hooks (the admission Jobs and their RBAC) carry the chart's labels and `helm.sh/hook` but not
//! the annotations, so they are matched by `app.kubernetes.io/instance` in the release's namespace.
//!
//! Adoption, in the order a re-run can resume from: objects gridos-setup renders are applied with
//! ownership taken ([`owned_ids`]), then Helm's labels, annotations and managed-fields entry are
//! removed from them ([`strip`]); release objects it does not render are deleted only while they
//! still carry that release's marks and are unchanged since the plan read them; the release
//! records go last ([`finish`]), so until then a re-run finds the releases again.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::discovery::Scope;
use serde::Serialize;

use crate::apply::{self, Resolver};
use crate::applyset::{self, Stale};
use crate::render::Object;
use crate::retry::with_retry;

/// The releases install-flagger.sh created (release name; namespace ingress-nginx, ingress-nginx, test).
pub const KNOWN_RELEASES: [&str; 3] = ["ingress-nginx", "flagger", "flagger-loadtester"];
pub const RELEASE_NAME: &str = "meta.helm.sh/release-name";
pub const RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const HELM: &str = "Helm";
pub const HELM_MANAGER: &str = "helm";
pub const CHART_LABEL: &str = "helm.sh/chart";
pub const RECORD_TYPE: &str = "helm.sh/release.v1";
const HOOK: &str = "helm.sh/hook";
const INSTANCE: &str = "app.kubernetes.io/instance";
/// The webhook Secret upstream's chart has kube-webhook-certgen create: type Opaque, keys
/// ca/cert/key. A Secret's type cannot change, so this one is replaced, not taken over.
const TLS_TYPE: &str = "kubernetes.io/tls";

/// Tries of the conditional patch that removes Helm's marks (about 5 s in all).
const STRIP_ATTEMPTS: u32 = 15;

/// Kinds the three charts create (ingress-nginx 4.x, flagger 1.x with prometheus.install,
/// loadtester 0.x): where the release's objects are looked for.
const KINDS: [(&str, &str); 16] = [
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("networking.k8s.io/v1", "IngressClass"),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
];

/// One Helm release: name and namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Release {
    pub name: String,
    pub namespace: String,
}

impl Release {
    pub fn describe(&self) -> String {
        format!("{} (namespace {})", self.name, self.namespace)
    }
}

/// An object the plan acts on, with the version it read (deletes are conditional on it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub id: String,
    pub release: Option<Release>,
    #[serde(skip)]
    pub object: Stale,
    #[serde(skip)]
    pub uid: Option<String>,
    #[serde(skip)]
    pub resource_version: Option<String>,
}

/// What adopting the releases does, read before the first write.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub releases: Vec<Release>,
    /// Rendered objects that exist under a release: applied with ownership taken, Helm's marks removed.
    pub take_over: Vec<Target>,
    /// Release objects gridos-setup does not render: deleted.
    pub delete: Vec<Target>,
    /// Objects whose immutable fields differ (the certgen webhook Secret): deleted, then created.
    pub replace: Vec<Target>,
    /// Helm's release records: deleted unless kept (`--keep-helm-history`).
    pub records: Vec<Target>,
    pub keep_history: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
    }

    /// The plan as lines for people, one per action.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        out.push(format!(
            "adopt Helm releases {}",
            self.releases
                .iter()
                .map(Release::describe)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for t in &self.take_over {
            out.push(format!("  {} taken over from Helm", t.id));
        }
        for t in &self.replace {
            out.push(format!("  {} replaced (its type cannot change)", t.id));
        }
        for t in &self.delete {
            out.push(format!(
                "  {} deleted (Helm release object gridos-setup does not render)",
                t.id
            ));
        }
        for t in &self.records {
            let what = if self.keep_history {
                "kept (--keep-helm-history)"
            } else {
                "deleted"
            };
            out.push(format!("  Helm release record {} {what}", t.id));
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "installed by Helm: release {}; nothing was written",
        releases.iter().map(Release::describe).collect::<Vec<_>>().join(", release ")
    )]
    HelmInstalled { releases: Vec<Release> },
    #[error("{context}: {source}")]
    Api {
        context: String,
        source: kube::Error,
    },
}

impl AdoptError {
    pub fn hint(&self) -> String {
        match self {
            AdoptError::HelmInstalled { .. } => "re-run with --adopt-helm to take them over (the controller Service and its load-balancer address stay; `gridos-setup plan --adopt-helm` shows every change first), or remove them with `helm uninstall`".into(),
            AdoptError::Api { .. } => "check that the cluster is reachable (`kubectl cluster-info`) and re-run; a re-run resumes".into(),
        }
    }
}

fn api_err(context: impl Into<String>) -> impl FnOnce(kube::Error) -> AdoptError {
    let context = context.into();
    move |source| AdoptError::Api { context, source }
}

/// The release an object belongs to, by Helm's annotations, or for a hook by its instance label.
pub fn release_of(meta: &ObjectMeta) -> Option<Release> {
    let ann = meta.annotations.as_ref();
    let labels = meta.labels.as_ref();
    if let (Some(name), Some(ns)) = (
        ann.and_then(|a| a.get(RELEASE_NAME)),
        ann.and_then(|a| a.get(RELEASE_NAMESPACE)),
    ) {
        return Some(Release {
            name: name.clone(),
            namespace: ns.clone(),
        });
    }
    let hook = ann.is_some_and(|a| a.contains_key(HOOK));
    let helm = labels.and_then(|l| l.get(MANAGED_BY)).map(String::as_str) == Some(HELM);
    match (hook && helm, labels.and_then(|l| l.get(INSTANCE))) {
        // A cluster-scoped hook (the admission ClusterRole) names no namespace: "" here, matched
        // by name alone where that is unambiguous (see `release_objects`).
        (true, Some(instance)) => Some(Release {
            name: instance.clone(),
            namespace: meta.namespace.clone().unwrap_or_default(),
        }),
        _ => None,
    }
}

/// Whether an object carries Helm's labels or annotations: what `helm` claims it by.
pub fn claimed_by_helm(meta: &ObjectMeta) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    let ann = meta.annotations.clone().unwrap_or_default();
    labels.get(MANAGED_BY).map(String::as_str) == Some(HELM)
        || labels.contains_key(CHART_LABEL)
        || ann.contains_key(RELEASE_NAME)
        || ann.contains_key(RELEASE_NAMESPACE)
}

/// Whether Helm's field manager still holds fields of the object.
pub fn helm_manages(meta: &ObjectMeta) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .any(|m| m.manager.as_deref() == Some(HELM_MANAGER))
}

/// Helm release records in the cluster, by release: one metadata-only list (no payloads read).
pub async fn find_releases(client: &Client) -> Result<BTreeMap<Release, Vec<Target>>, AdoptError> {
    let api: Api<Secret> = Api::all(client.clone());
    let lp = ListParams::default().labels("owner=helm");
    let list = with_retry("listing Helm release records", None, || {
        api.list_metadata(&lp)
    })
    .await
    .map_err(api_err(
        "listing Helm release records (Secrets labelled owner=helm)",
    ))?;
    let mut out: BTreeMap<Release, Vec<Target>> = BTreeMap::new();
    for s in list.items {
        let m = s.metadata;
        let (Some(ns), Some(name)) = (
            m.namespace.clone(),
            m.labels.as_ref().and_then(|l| l.get("name")).cloned(),
        ) else {
            continue;
        };
        let secret = m.name.clone().unwrap_or_default();
        let release = Release {
            name,
            namespace: ns.clone(),
        };
        out.entry(release.clone()).or_default().push(Target {
            id: format!("Secret/{ns}/{secret}"),
            release: Some(release),
            object: Stale {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: Some(ns),
                name: secret,
            },
            uid: m.uid,
            resource_version: m.resource_version,
        });
    }
    Ok(out)
}

/// The releases install-flagger.sh made that are in the cluster, each once.
pub async fn known_releases(client: &Client) -> Result<Vec<Release>, AdoptError> {
    Ok(find_releases(client)
        .await?
        .into_keys()
        .filter(|r| KNOWN_RELEASES.contains(&r.name.as_str()))
        .collect())
}

fn stale_id(s: &Stale) -> String {
    let ns = s.namespace.as_deref().unwrap_or("-");
    format!("{} {} {ns} {}", s.api_version, s.kind, s.name)
}

/// Objects of `releases`, found by Helm's label across the kinds the charts create.
async fn release_objects(
    client: &Client,
    resolver: &Resolver,
    releases: &BTreeSet<Release>,
) -> Result<Vec<(Stale, ObjectMeta, Release)>, AdoptError> {
    let lp = ListParams::default().labels(&format!("{MANAGED_BY}={HELM}"));
    let lists = futures::future::join_all(KINDS.iter().filter_map(|(av, kind)| {
        let (ar, _) = resolver.resolve_gvk(av, kind)?;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let lp = lp.clone();
        Some(async move {
            let r = with_retry(&format!("listing {kind}"), None, || api.list_metadata(&lp)).await;
            (*av, *kind, r)
        })
    }))
    .await;
    let mut out = Vec::new();
    for (av, kind, r) in lists {
        let list = r.map_err(api_err(format!(
            "listing {kind} objects labelled {MANAGED_BY}={HELM}"
        )))?;
        for o in list.items {
            let Some(release) = release_of(&o.metadata).and_then(|r| {
                if r.namespace.is_empty() {
                    let mut same = releases.iter().filter(|a| a.name == r.name);
                    match (same.next(), same.next()) {
                        (Some(one), None) => Some(one.clone()),
                        _ => None,
                    }
                } else {
                    releases.contains(&r).then_some(r)
                }
            }) else {
                continue;
            };
            let s = Stale {
                api_version: av.into(),
                kind: kind.into(),
                namespace: o.metadata.namespace.clone(),
                name: o.metadata.name.clone().unwrap_or_default(),
            };
            out.push((s, o.metadata, release));
        }
    }
    Ok(out)
}

fn target(s: Stale, meta: &ObjectMeta, release: Option<Release>) -> Target {
    Target {
        id: s.id(),
        release,
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        object: s,
    }
}

/// Reads what adopting the releases install-flagger.sh made would do (`releases` besides them:
/// those found on rendered objects). No writes; an empty plan when there is nothing to adopt.
pub async fn plan(
    client: &Client,
    resolver: &Resolver,
    rendered: &[Object],
    extra: &[Release],
    keep_history: bool,
) -> Result<Plan, AdoptError> {
    let records = find_releases(client).await?;
    let releases: BTreeSet<Release> = records
        .keys()
        .filter(|r| KNOWN_RELEASES.contains(&r.name.as_str()))
        .chain(extra)
        .cloned()
        .collect();
    let mut plan = Plan {
        keep_history,
        ..Default::default()
    };
    if releases.is_empty() {
        return Ok(plan);
    }
    let rendered_ids: BTreeSet<String> = rendered.iter().map(applyset::member_id).collect();
    for (s, meta, release) in release_objects(client, resolver, &releases).await? {
        if rendered_ids.contains(&stale_id(&s)) {
            plan.take_over.push(target(s, &meta, Some(release)));
        } else {
            plan.delete.push(target(s, &meta, Some(release)));
        }
    }
    // The chart's webhook Secret is made by a hook Job and carries no Helm marks at all.
    if let Some(secret) = rendered
        .iter()
        .find(|o| o.kind() == "Secret" && o.name() == crate::plan::ADMISSION_SECRET)
        && releases.iter().any(|r| r.name == "ingress-nginx")
    {
        let ns = secret.namespace().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let live = with_retry("reading the webhook Secret", None, || {
            api.get_opt(secret.name())
        })
        .await
        .map_err(api_err(format!("reading Secret {ns}/{}", secret.name())))?;
        if let Some(s) = live.filter(|s| {
            s.type_.as_deref() != Some(TLS_TYPE)
                && s.metadata
                    .labels
                    .as_ref()
                    .is_none_or(|l| l.get(applyset::PART_OF) != Some(&applyset::applyset_id()))
        }) {
            let st = Stale {
                api_version: "v1".into(),
                kind: "Secret".into(),
                namespace: Some(ns.into()),
                name: secret.name().into(),
            };
            plan.replace.push(target(st, &s.metadata, None));
        }
    }
    for r in &releases {
        plan.records
            .extend(records.get(r).cloned().unwrap_or_default());
    }
    plan.releases = releases.into_iter().collect();
    Ok(plan)
}

/// What others claim among the objects a run would write for the first time.
#[derive(Debug, Default)]
pub struct Claims {
    /// Helm releases whose objects the run would overwrite.
    pub releases: BTreeSet<Release>,
    /// Fields other managers hold (not a Helm release's objects): member id and the conflict.
    pub conflicts: Vec<(String, apply::ApplyError)>,
}

impl Claims {
    /// The refusal for conflicts outside `taken` (objects an adoption takes over), if any.
    pub fn refusal(&self, taken: &BTreeSet<String>) -> Option<crate::error::Error> {
        let left: Vec<&apply::ApplyError> = self
            .conflicts
            .iter()
            .filter(|(id, _)| !taken.contains(id))
            .map(|(_, e)| e)
            .collect();
        let first = left.first()?;
        Some(crate::error::Error::Preflight {
            problem: format!(
                "fields of objects this install writes are managed by other tools: {}; nothing was written",
                left.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            hint: first.hint(),
        })
    }
}

/// Before the first write, a server-side dry run (without taking ownership) of each object the
/// run would write for the first time in a namespace that exists: it finds field conflicts and
/// objects of Helm releases without changing anything. A re-run (every object recorded) asks nothing.
pub async fn claims(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    members: &BTreeSet<String>,
) -> Result<Claims, AdoptError> {
    let new: Vec<&Object> = objects
        .iter()
        .filter(|o| !members.contains(&applyset::member_id(o)) && resolver.resolve(o).is_ok())
        .collect();
    let mut out = Claims::default();
    if new.is_empty() {
        return Ok(out);
    }
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let all = ListParams::default();
    let existing: BTreeSet<String> =
        with_retry("listing namespaces", None, || ns_api.list_metadata(&all))
            .await
            .map_err(api_err("listing namespaces"))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
    let candidates: Vec<&Object> = new
        .into_iter()
        .filter(|o| o.namespace().is_none_or(|n| existing.contains(n)))
        .collect();
    let opts = apply::ApplyOptions {
        dry_run: true,
        force: false,
        deadline: None,
    };
    let results: Vec<(&Object, Result<DynamicObject, apply::ApplyError>)> =
        apply::all_concurrently(
            candidates.into_iter().map(|o| async move {
                (o, apply::apply_one(client, resolver, o, opts, false).await)
            }),
        )
        .await;
    for (o, r) in results {
        match r {
            Ok(live) => {
                if let Some(rel) = release_of(&live.metadata) {
                    out.releases.insert(rel);
                }
            }
            Err(e @ apply::ApplyError::Conflict { .. }) => {
                let s = Stale {
                    api_version: o.api_version().into(),
                    kind: o.kind().into(),
                    namespace: o.namespace().map(String::from),
                    name: o.name().into(),
                };
                let live = match api_for(client, resolver, &s) {
                    Some(api) => with_retry(&o.id(), None, || api.get_opt(o.name()))
                        .await
                        .map_err(api_err(format!("reading {}", o.id())))?,
                    None => None,
                };
                match live.as_ref().and_then(|l| release_of(&l.metadata)) {
                    Some(rel) => {
                        out.releases.insert(rel);
                    }
                    None => out.conflicts.push((applyset::member_id(o), e)),
                }
            }
            // Permissions, invalid objects and the rest are the permission check's and the
            // apply's to report, with their context.
            Err(_) => {}
        }
    }
    Ok(out)
}

/// For an install's plan: what other tools claim among the objects it writes for the first time,
/// and with `adopt` what taking the Helm releases over does. Refused before any write: Helm
/// releases without `adopt` (each named once), other managers' fields without `force`.
pub async fn decide(
    install: &crate::plan::Plan,
    adopt: bool,
    keep_history: bool,
    force: bool,
) -> Result<Plan, crate::error::Error> {
    let (client, resolver) = (install.client(), &install.resolver);
    // A re-run writes nothing for the first time: nothing to find, no request.
    if !adopt && install.after.members.is_subset(&install.before.members) {
        return Ok(Plan::default());
    }
    let found = claims(client, resolver, &install.objects, &install.before.members).await?;
    let mut adoption = Plan::default();
    if adopt || !found.releases.is_empty() {
        let extra: Vec<Release> = found.releases.iter().cloned().collect();
        adoption = plan(client, resolver, &install.objects, &extra, keep_history).await?;
    }
    if !adoption.is_empty() && !adopt {
        return Err(AdoptError::HelmInstalled {
            releases: adoption.releases,
        }
        .into());
    }
    if let Some(e) = found.refusal(&owned_ids(&adoption))
        && !force
    {
        return Err(e);
    }
    Ok(adoption)
}

/// Member ids (see [`applyset::member_id`]) the apply may take ownership of on conflict: the
/// objects taken over, and those replaced (created anew, nobody else's once re-created).
pub fn owned_ids(plan: &Plan) -> BTreeSet<String> {
    plan.take_over
        .iter()
        .chain(&plan.replace)
        .map(|t| stale_id(&t.object))
        .collect()
}

fn api_for(client: &Client, resolver: &Resolver, s: &Stale) -> Option<Api<DynamicObject>> {
    let (ar, caps) = resolver.resolve_gvk(&s.api_version, &s.kind)?;
    Some(match (caps.scope, &s.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    })
}

/// Deletes `t` only if it is still the object the plan read (same uid and resourceVersion):
/// one that someone changed since is left alone. Returns whether it was deleted.
async fn delete_unchanged(
    client: &Client,
    resolver: &Resolver,
    t: &Target,
    dry_run: bool,
) -> Result<bool, AdoptError> {
    let Some(api) = api_for(client, resolver, &t.object) else {
        return Ok(false);
    };
    let dp = DeleteParams {
        dry_run,
        preconditions: Some(Preconditions {
            uid: t.uid.clone(),
            resource_version: t.resource_version.clone(),
        }),
        ..DeleteParams::background()
    };
    match with_retry(&t.id, None, || api.delete(&t.object.name, &dp)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(api_err(format!("deleting {}", t.id))(e)),
    }
}

/// Before the first apply: removes what must be created anew (the certgen webhook Secret).
pub async fn before_apply(
    client: &Client,
    resolver: &Resolver,
    plan: &Plan,
    dry_run: bool,
) -> Result<Vec<String>, AdoptError> {
    let mut done = Vec::new();
    for t in &plan.replace {
        if dry_run || delete_unchanged(client, resolver, t, false).await? {
            done.push(t.id.clone());
        }
    }
    Ok(done)
}

/// After an apply: removes Helm's labels, annotations and managed-fields entry from applied
/// objects that still carry them, so `helm` no longer claims them (see [`strip_patch`]). One patch
/// each, conditional on the resourceVersion the apply returned; objects without marks cost nothing.
/// Returns the objects stripped: applied once more, they lose what Helm set and they do not render.
pub async fn strip(
    client: &Client,
    resolver: &Resolver,
    applied: &[(Object, DynamicObject)],
    taken: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<Object>, AdoptError> {
    let mut stripped = Vec::new();
    for (o, live) in applied {
        // Helm's field manager alone (a namespace `helm install --create-namespace` made, which
        // is no release's object) is taken over only on objects the plan takes over.
        let marked = claimed_by_helm(&live.metadata)
            || (helm_manages(&live.metadata) && taken.contains(&applyset::member_id(o)));
        if !marked {
            continue;
        }
        stripped.push(o.clone());
        if dry_run {
            continue;
        }
        let Some(api) = api_for(
            client,
            resolver,
            &Stale {
                api_version: o.api_version().into(),
                kind: o.kind().into(),
                namespace: o.namespace().map(String::from),
                name: o.name().into(),
            },
        ) else {
            continue;
        };
        let mut meta = live.metadata.clone();
        // Conditional on the version read: the managed fields are written whole, so another
        // writer's entry must not be lost. A rolling Deployment changes often; read and try again.
        for attempt in 0..STRIP_ATTEMPTS {
            let patch = strip_patch(&meta);
            match api
                .patch(o.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt + 1 < STRIP_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        50 * u64::from(attempt + 1),
                    ))
                    .await;
                    let fresh = api
                        .get(o.name())
                        .await
                        .map_err(api_err(format!("reading {}", o.id())))?;
                    meta = fresh.metadata;
                }
                Err(e) => return Err(api_err(format!("removing Helm's marks from {}", o.id()))(e)),
            }
        }
    }
    Ok(stripped)
}

/// The merge patch that removes Helm's marks: labels and annotations set to null (the managed-by
/// label only while it still says Helm), and the managed-fields list without Helm's entry, whose
/// fields are added to gridos-setup's apply entry instead. gridos-setup then owns every field Helm
/// set, so its next apply removes those it does not render (the chart's extra labels, env entries,
/// ports): the object ends up as rendered, not as rendered plus Helm's leftovers. Given
/// explicitly, the managed fields are taken as they are: the patch adds no entry of its own.
fn strip_patch(meta: &ObjectMeta) -> serde_json::Value {
    let labels = meta.labels.clone().unwrap_or_default();
    let mut label_patch = serde_json::Map::new();
    if labels.get(MANAGED_BY).map(String::as_str) == Some(HELM) {
        label_patch.insert(MANAGED_BY.into(), serde_json::Value::Null);
    }
    if labels.contains_key(CHART_LABEL) {
        label_patch.insert(CHART_LABEL.into(), serde_json::Value::Null);
    }
    let mut ann_patch = serde_json::Map::new();
    for k in [RELEASE_NAME, RELEASE_NAMESPACE] {
        if meta.annotations.as_ref().is_some_and(|a| a.contains_key(k)) {
            ann_patch.insert(k.into(), serde_json::Value::Null);
        }
    }
    let entries = meta.managed_fields.clone().unwrap_or_default();
    let is_helm = |m: &ManagedFieldsEntry| m.manager.as_deref() == Some(HELM_MANAGER);
    let mut managed: Vec<ManagedFieldsEntry> =
        entries.iter().filter(|m| !is_helm(m)).cloned().collect();
    let ours = managed.iter_mut().find(|m| {
        m.manager.as_deref() == Some(applyset::FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
    });
    if let Some(ours) = ours {
        for h in entries.iter().filter(|m| is_helm(m)) {
            // Fields are recorded per API version; another version's paths may not mean the same.
            if h.api_version != ours.api_version || h.subresource.is_some() {
                continue;
            }
            if let (Some(FieldsV1(mine)), Some(FieldsV1(theirs))) =
                (&mut ours.fields_v1, &h.fields_v1)
            {
                merge_fields(mine, theirs);
            }
        }
    }
    let mut patch = serde_json::json!({
        "metadata": {
            "resourceVersion": meta.resource_version,
            "labels": label_patch,
            "annotations": ann_patch,
        }
    });
    if managed.len() != entries.len() {
        patch["metadata"]["managedFields"] =
            serde_json::to_value(&managed).unwrap_or(serde_json::Value::Null);
    }
    patch
}

/// Adds `theirs` to `mine`: a field set (FieldsV1) is a tree of objects, so the union is a merge.
fn merge_fields(mine: &mut serde_json::Value, theirs: &serde_json::Value) {
    if let (Some(m), Some(t)) = (mine.as_object_mut(), theirs.as_object()) {
        for (k, v) in t {
            match m.get_mut(k) {
                Some(existing) => merge_fields(existing, v),
                None => {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// After everything is applied and ready: deletes the release objects gridos-setup does not
/// render, then the release records (unless kept). Returns the ids deleted.
pub async fn finish(
    client: &Client,
    resolver: &Resolver,
    plan: &Plan,
    dry_run: bool,
) -> Result<Vec<String>, AdoptError> {
    let mut deleted = Vec::new();
    let extras = futures::future::join_all(
        plan.delete
            .iter()
            .map(|t| async move { (t, delete_unchanged(client, resolver, t, dry_run).await) }),
    )
    .await;
    for (t, r) in extras {
        if r? {
            deleted.push(t.id.clone());
        }
    }
    if !plan.keep_history {
        for t in &plan.records {
            if delete_unchanged(client, resolver, t, dry_run).await? {
                deleted.push(t.id.clone());
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn releases_come_from_annotations_or_a_hooks_instance_label() {
        let annotated = meta(serde_json::json!({"name": "a", "namespace": "x",
            "annotations": {RELEASE_NAME: "flagger", RELEASE_NAMESPACE: "ingress-nginx"}}));
        assert_eq!(
            release_of(&annotated),
            Some(Release {
                name: "flagger".into(),
                namespace: "ingress-nginx".into()
            })
        );
        let hook = meta(
            serde_json::json!({"name": "ingress-nginx-admission-create", "namespace": "ingress-nginx",
            "labels": {MANAGED_BY: HELM, INSTANCE: "ingress-nginx"}, "annotations": {HOOK: "pre-install,pre-upgrade"}}),
        );
        assert_eq!(
            release_of(&hook).map(|r| r.name),
            Some("ingress-nginx".into())
        );
        // The chart's labels alone, without Helm's hook annotation, say nothing about the release.
        let foreign = meta(
            serde_json::json!({"name": "b", "namespace": "ingress-nginx",
            "labels": {MANAGED_BY: HELM, INSTANCE: "ingress-nginx"}}),
        );
        assert_eq!(release_of(&foreign), None);
    }

    #[test]
    fn the_strip_patch_keeps_gridos_setups_label_and_other_managers() {
        let m = meta(serde_json::json!({"name": "a", "resourceVersion": "7",
            "labels": {MANAGED_BY: "gridos-setup", CHART_LABEL: "ingress-nginx-4.15.1"},
            "annotations": {RELEASE_NAME: "ingress-nginx", RELEASE_NAMESPACE: "ingress-nginx", "keep": "me"},
            "managedFields": [
                {"manager": "helm", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:a": {}, "f:b": {}}}},
                {"manager": "gridos-setup", "operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {"f:a": {}}, "f:metadata": {"f:labels": {}}}}]}));
        let p = strip_patch(&m);
        assert_eq!(
            p["metadata"]["labels"],
            serde_json::json!({CHART_LABEL: null})
        );
        assert_eq!(
            p["metadata"]["annotations"],
            serde_json::json!({RELEASE_NAME: null, RELEASE_NAMESPACE: null})
        );
        assert_eq!(
            p["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(1)
        );
        // Helm's field b is gridos-setup's now, so its next apply removes it.
        assert_eq!(
            p["metadata"]["managedFields"][0]["fieldsV1"],
            serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {}}})
        );
        assert_eq!(p["metadata"]["resourceVersion"], "7");
    }
}
