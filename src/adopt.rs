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
//! A chart's `crds/` are applied by Helm with its field manager but no release marks (Helm
//! "Custom Resource Definitions" best practices, method 1), so such CRDs are taken over with the
//! releases ([`chart_crds`]), losing `helm.sh/resource-policy: keep`.
//!
//! Adoption, in the order a re-run can resume from: the ApplySet parent records the releases as
//! started (so a plain `install`, `check` and `status` know, see [`resume_reason`] and
//! [`remains`]); Helm's fields on the objects taken over are handed to gridos-setup
//! ([`hand_over`]), so their one apply, with ownership taken ([`owned_ids`]), leaves them as
//! rendered without Helm's labels, annotations and field manager ([`strip`] catches any left);
//! release objects it does not render are deleted only while they still carry that release's
//! marks and are unchanged since the plan read them; the ReplicaSets lose Helm's marks; the
//! release records go last ([`finish`]), so until then a re-run finds the releases again; then the
//! parent no longer records the adoption as started.

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
/// Keeps an object through `helm uninstall` (helm.sh/docs/howto/charts_tips_and_tricks, "Tell Helm
/// Not To Uninstall a Resource"); the flagger chart sets it on the CRDs in its `crds/`.
pub const KEEP_POLICY: &str = "helm.sh/resource-policy";
const CRD_KIND: &str = "CustomResourceDefinition";
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

    /// `namespace/name`, as the ApplySet parent records a release.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
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
    /// Rendered namespaces `helm --create-namespace` made: Helm's field-manager entry removed, its
    /// `name` label left in place (see [`namespaces`]).
    #[serde(skip)]
    pub namespaces: Vec<Target>,
    /// What the adoption leaves, each with why (see [`leftovers`]).
    pub leftovers: Vec<String>,
    /// Why a run without `--adopt-helm` adopts (see [`resume_reason`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
        out.extend(self.reason.clone());
        out.push(format!(
            "adopt Helm releases {}",
            self.releases
                .iter()
                .map(Release::describe)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for t in &self.take_over {
            if t.release.is_none() && t.object.kind == CRD_KIND {
                out.push(format!(
                    "  {} taken over from Helm (applied from a chart's crds/, no release's object): Helm's field manager and {KEEP_POLICY}: keep removed",
                    t.id
                ));
            } else {
                out.push(format!("  {} taken over from Helm", t.id));
            }
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
        for l in &self.leftovers {
            out.push(format!("  {l}"));
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
    #[error(
        "the Helm release's controller Service {service} has an {old} load balancer and profile {profile} an {new} one: adopting it would move the address from {old} to {new}; nothing was written"
    )]
    AddressKind {
        service: String,
        profile: String,
        old: &'static str,
        new: &'static str,
    },
    #[error("{context}: {source}")]
    Api {
        context: String,
        source: kube::Error,
    },
}

impl AdoptError {
    pub fn hint(&self) -> String {
        match self {
            AdoptError::HelmInstalled { .. } => "re-run with --adopt-helm to take them over (the controller Service and its load-balancer address stay; `gridos-setup plan --adopt-helm` shows every change first),; not `helm uninstall`, which deletes the controller Service and its address".into(),
            AdoptError::AddressKind { old, .. } => format!("use a profile whose load balancer is {old} (ingressController.service.internal), or re-run with --allow-address-change to move it (the Service stays; the DNS records must follow the new address)"),
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

/// What is left of the Helm installs after gridos-setup installed, for `check` and `status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Remains {
    /// Releases (`namespace/name`) an adoption started and did not finish.
    pub started: Vec<String>,
    /// install-flagger.sh's releases Helm still lists (kept records excepted while nothing of
    /// theirs runs).
    pub releases: Vec<Release>,
    /// Deployments of those releases that still run (`namespace/name`).
    pub workloads: Vec<String>,
    /// Flagger Deployments besides gridos-setup's (`namespace/name`): two act on the same Canaries.
    pub flaggers: Vec<String>,
}

impl Remains {
    pub fn is_empty(&self) -> bool {
        self.started.is_empty()
            && self.releases.is_empty()
            && self.workloads.is_empty()
            && self.flaggers.is_empty()
    }

    /// One line per kind of problem.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.started.is_empty() {
            out.push(format!(
                "an adoption of Helm releases {} was started and not finished",
                self.started.join(", ")
            ));
        }
        if !self.releases.is_empty() {
            out.push(format!(
                "Helm still lists release {}",
                self.releases
                    .iter()
                    .map(Release::describe)
                    .collect::<Vec<_>>()
                    .join(", release ")
            ));
        }
        if !self.workloads.is_empty() {
            out.push(format!(
                "Helm's Deployments still run: {}",
                self.workloads.join(", ")
            ));
        }
        if !self.flaggers.is_empty() {
            out.push(format!(
                "another Flagger runs beside gridos-setup's: Deployment {} (two Flaggers act on the same Canaries)",
                self.flaggers.join(", Deployment ")
            ));
        }
        out
    }

    pub fn hint(&self) -> String {
        if self.started.is_empty() && self.releases.is_empty() && self.workloads.is_empty() {
            return "delete the other Flagger (`kubectl delete deployment -n NAMESPACE NAME`) or scale it to 0".into();
        }
        "re-run `gridos-setup install --adopt-helm` with the same --profile and --host to finish taking them over; not `helm uninstall`, which deletes objects gridos-setup now owns".into()
    }
}

/// Whether a Deployment runs Flagger itself (image `.../fluxcd/flagger`, not the load tester).
fn runs_flagger(d: &k8s_openapi::api::apps::v1::Deployment) -> bool {
    let scaled_down = d.spec.as_ref().and_then(|s| s.replicas) == Some(0);
    let containers = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default();
    !scaled_down
        && containers.iter().any(|c| {
            let image = c.image.as_deref().unwrap_or_default();
            let repo = image.split(['@', ':']).next().unwrap_or_default();
            repo.ends_with("/fluxcd/flagger")
        })
}

/// Reads what is left of the Helm installs (see [`Remains`]): the release records and every
/// Deployment, two list requests.
pub async fn remains(
    client: &Client,
    record: &applyset::ApplySetRecord,
) -> Result<Remains, AdoptError> {
    use k8s_openapi::api::apps::v1::Deployment;
    let api: Api<Deployment> = Api::all(client.clone());
    let lp = ListParams::default();
    let (records, deployments) = tokio::join!(
        find_releases(client),
        with_retry("listing Deployments", None, || api.list(&lp))
    );
    let deployments = deployments.map_err(api_err("listing Deployments"))?.items;
    let mut out = Remains {
        started: record.adopting.iter().cloned().collect(),
        ..Default::default()
    };
    let mut running: BTreeSet<Release> = BTreeSet::new();
    for d in &deployments {
        let id = format!(
            "{}/{}",
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.name.clone().unwrap_or_default()
        );
        let helm = d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .map(String::as_str)
            == Some(HELM);
        if let Some(r) =
            release_of(&d.metadata).filter(|r| helm && KNOWN_RELEASES.contains(&r.name.as_str()))
        {
            out.workloads.push(format!("{id} (release {})", r.name));
            running.insert(r);
        }
        if runs_flagger(d) && !applyset::is_member(d.metadata.labels.as_ref()) {
            out.flaggers.push(id);
        }
    }
    out.releases = records?
        .into_keys()
        .filter(|r| KNOWN_RELEASES.contains(&r.name.as_str()))
        .filter(|r| !record.kept_history.contains(&r.key()) || running.contains(r))
        .collect();
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

/// The releases' namespaces: those gridos-setup renders and Helm's field manager holds (made by
/// `helm --create-namespace`, which labels them `name=<namespace>`; Helm's `pkg/action/install.go`),
/// and what stays of them, with why: that label (NetworkPolicies select namespaces by it, so it is
/// left; its field-manager entry goes), and the namespaces gridos-setup does not render (`test`).
async fn namespaces(
    client: &Client,
    releases: &[Release],
    rendered: &[Object],
) -> Result<(Vec<Target>, Vec<String>), AdoptError> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let names: BTreeSet<&str> = releases.iter().map(|r| r.namespace.as_str()).collect();
    let (mut taken, mut left) = (Vec::new(), Vec::new());
    for name in names {
        let Some(ns) = with_retry("reading a namespace", None, || api.get_metadata_opt(name))
            .await
            .map_err(api_err(format!("reading namespace {name}")))?
        else {
            continue;
        };
        let ours = rendered
            .iter()
            .any(|o| o.kind() == "Namespace" && o.name() == name);
        let helm_label = ns
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("name"))
            .is_some_and(|v| v == name);
        if !ours {
            left.push(format!(
                "namespace {name} stays (`helm --create-namespace` made it and no release owns it; empty once the releases' objects go): `kubectl delete namespace {name}` if nothing else uses it"
            ));
            continue;
        }
        if helm_label {
            left.push(format!(
                "namespace {name} keeps its label name={name} (`helm --create-namespace` set it; NetworkPolicies may select it): Helm's field manager removed, the label left as it is"
            ));
        }
        if helm_manages(&ns.metadata) {
            let s = Stale {
                api_version: "v1".into(),
                kind: "Namespace".into(),
                namespace: None,
                name: name.into(),
            };
            taken.push(target(s, &ns.metadata, None));
        }
    }
    Ok((taken, left))
}

/// Rendered CRDs a chart's `crds/` put there: Helm applies that directory with its field manager
/// but no release labels or annotations, and never upgrades or deletes it (helm.sh/docs/chart_best_practices/custom_resource_definitions,
/// "Method 1"), so they belong to no release; taken over with the releases, release `None`.
async fn chart_crds(
    client: &Client,
    resolver: &Resolver,
    rendered: &[Object],
) -> Result<Vec<Target>, AdoptError> {
    let crds: Vec<&Object> = rendered.iter().filter(|o| o.kind() == CRD_KIND).collect();
    let Some(first) = crds.first() else {
        return Ok(Vec::new());
    };
    let Some((ar, _)) = resolver.resolve_gvk(first.api_version(), CRD_KIND) else {
        return Ok(Vec::new());
    };
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let lives = futures::future::join_all(crds.iter().map(|o| {
        let api = api.clone();
        async move {
            let r = with_retry(&o.id(), None, || api.get_metadata_opt(o.name())).await;
            (*o, r)
        }
    }))
    .await;
    let mut out = Vec::new();
    for (o, r) in lives {
        let live = r.map_err(api_err(format!("reading {}", o.id())))?;
        if let Some(m) = live.map(|m| m.metadata)
            && helm_manages(&m)
            && release_of(&m).is_none()
        {
            let s = Stale {
                api_version: o.api_version().into(),
                kind: CRD_KIND.into(),
                namespace: None,
                name: o.name().into(),
            };
            out.push(target(s, &m, None));
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
    for t in chart_crds(client, resolver, rendered).await? {
        if !plan.take_over.iter().any(|o| o.id == t.id) {
            plan.take_over.push(t);
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
    (plan.namespaces, plan.leftovers) = namespaces(client, &plan.releases, rendered).await?;
    if plan.take_over.iter().any(|t| t.object.kind == "Deployment") {
        plan.leftovers.push(
            "ReplicaSets of the Deployments taken over: Helm's labels and annotations removed (the Deployment controller copied them from Helm's pod template and Deployment); the Deployments roll out once".into(),
        );
    }
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
/// and what taking the Helm releases over does. Refused before any write: Helm releases without
/// `adopt` (each named once) unless an earlier adoption is to be resumed or repaired (see
/// [`resume_reason`]), other managers' fields without `force`. Every run asks for the release
/// records (one metadata list): a run that ends with releases left must not exit 0.
pub async fn decide(
    install: &crate::plan::Plan,
    adopt: bool,
    keep_history: bool,
    force: bool,
) -> Result<Plan, crate::error::Error> {
    let (client, resolver) = (install.client(), &install.resolver);
    let before = &install.before;
    let known = known_releases(client).await?;
    let first_writes = !install.after.members.is_subset(&before.members);
    // Nothing written for the first time and no release: nothing to find, no more requests.
    if !adopt && known.is_empty() && !first_writes {
        return Ok(Plan::default());
    }
    let found = if first_writes {
        claims(client, resolver, &install.objects, &before.members).await?
    } else {
        Claims::default()
    };
    let mut adoption = Plan::default();
    if adopt || !found.releases.is_empty() || !known.is_empty() {
        let extra: Vec<Release> = found.releases.iter().cloned().collect();
        let keep = keep_history || known.iter().any(|r| before.kept_history.contains(&r.key()));
        adoption = plan(client, resolver, &install.objects, &extra, keep).await?;
    }
    if !adoption.is_empty() && !adopt {
        if kept_and_done(&adoption, before) {
            adoption = Plan::default();
        } else {
            match resume_reason(&adoption, before) {
                Some(reason) => adoption.reason = Some(reason),
                None => {
                    return Err(AdoptError::HelmInstalled {
                        releases: adoption.releases,
                    }
                    .into());
                }
            }
        }
    }
    if let Some(e) = found.refusal(&owned_ids(&adoption))
        && !force
    {
        return Err(e);
    }
    Ok(adoption)
}

/// Whether the releases left are only records an adoption kept on purpose (`--keep-helm-history`)
/// and nothing of theirs carries Helm's marks any more.
fn kept_and_done(adoption: &Plan, before: &applyset::ApplySetRecord) -> bool {
    adoption.take_over.is_empty()
        && adoption.delete.is_empty()
        && adoption.replace.is_empty()
        && adoption
            .releases
            .iter()
            .all(|r| before.kept_history.contains(&r.key()))
}

/// Why a plain `install` takes the releases over without `--adopt-helm`: the parent records an
/// adoption that was started and not finished (resumed), or Helm took back objects gridos-setup
/// owns (`helm upgrade --install --take-ownership` after the adoption; repaired). `None`: the
/// releases were never adopted, which needs the user's word.
pub fn resume_reason(adoption: &Plan, before: &applyset::ApplySetRecord) -> Option<String> {
    let names = || {
        adoption
            .releases
            .iter()
            .map(Release::describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !before.adopting.is_empty() {
        return Some(format!(
            "resuming the adoption of Helm releases {} that an earlier `install --adopt-helm` started and did not finish",
            names()
        ));
    }
    let taken_back: Vec<&str> = adoption
        .take_over
        .iter()
        .filter(|t| before.members.contains(&stale_id(&t.object)))
        .map(|t| t.id.as_str())
        .collect();
    if taken_back.is_empty() {
        return None;
    }
    Some(format!(
        "Helm took back {} objects gridos-setup owns ({}{}): `helm upgrade --install` ran after the adoption; taking them over again and removing Helm's release records ({}) and marks",
        taken_back.len(),
        taken_back
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join(", "),
        if taken_back.len() > 3 { ", ..." } else { "" },
        names()
    ))
}

/// Refuses an adoption that would turn the controller Service's load balancer from internal to
/// public or back (the Service stays, but Azure gives it another kind of address).
pub fn same_address_kind(plan: &crate::plan::Plan) -> Result<(), AdoptError> {
    let kind = |internal: bool| if internal { "internal" } else { "public" };
    let Some(svc) = plan.previous_service.as_ref().filter(|s| {
        !applyset::is_member(s.metadata.labels.as_ref())
            && plan.adoption.take_over.iter().any(|t| {
                t.object.kind == "Service" && Some(&t.object.name) == s.metadata.name.as_ref()
            })
    }) else {
        return Ok(());
    };
    let old = crate::plan::service_is_internal(svc);
    if old == plan.internal() {
        return Ok(());
    }
    Err(AdoptError::AddressKind {
        service: format!(
            "{}/{}",
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default()
        ),
        profile: plan.values.name.clone(),
        old: kind(old),
        new: kind(plan.internal()),
    })
}

/// What the parent records of the adoption: the releases it starts (written with the run's first
/// write, cleared by the run that finishes; see `execute`), and those whose records it keeps.
pub fn record(plan: &mut crate::plan::Plan) {
    let releases: BTreeSet<String> = plan.adoption.releases.iter().map(Release::key).collect();
    plan.after.kept_history = plan.before.kept_history.clone();
    if plan.adopting {
        plan.after.adopting = releases.clone();
    }
    if plan.adoption.keep_history {
        plan.after.kept_history.extend(releases);
    } else {
        plan.after.kept_history.retain(|r| !releases.contains(r));
    }
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
    for k in [RELEASE_NAME, RELEASE_NAMESPACE, KEEP_POLICY] {
        if meta.annotations.as_ref().is_some_and(|a| a.contains_key(k)) {
            ann_patch.insert(k.into(), serde_json::Value::Null);
        }
    }
    let entries = meta.managed_fields.clone().unwrap_or_default();
    let managed = helm_fields_to_ours(&entries, false);
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

/// The managed-fields list with Helm's entries gone: their fields added to gridos-setup's apply
/// entry, or (without one yet) Helm's entry turned into it, so that gridos-setup's next apply owns
/// every field Helm set and removes those it does not render. `drop`: Helm's entries are only
/// removed, their fields left to nobody (kept as they are by every later apply).
fn helm_fields_to_ours(entries: &[ManagedFieldsEntry], drop: bool) -> Vec<ManagedFieldsEntry> {
    let is_helm = |m: &ManagedFieldsEntry| m.manager.as_deref() == Some(HELM_MANAGER);
    let mut managed: Vec<ManagedFieldsEntry> =
        entries.iter().filter(|m| !is_helm(m)).cloned().collect();
    if drop {
        return managed;
    }
    let is_ours = |m: &ManagedFieldsEntry| {
        m.manager.as_deref() == Some(applyset::FIELD_MANAGER)
            && m.operation.as_deref() == Some("Apply")
            && m.subresource.is_none()
    };
    if !managed.iter().any(is_ours)
        && let Some(first) = entries
            .iter()
            .find(|m| is_helm(m) && m.subresource.is_none())
    {
        managed.push(ManagedFieldsEntry {
            manager: Some(applyset::FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({}))),
            ..first.clone()
        });
    }
    if let Some(ours) = managed.iter_mut().find(|m| is_ours(m)) {
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
    managed
}

/// Before the first apply of an adoption: Helm's fields on each object taken over become
/// gridos-setup's (see [`helm_fields_to_ours`]), one metadata-only patch each, conditional on the
/// version read. The apply that follows then leaves each object exactly as rendered, Helm's
/// labels, annotations and extra fields gone, in one write: a Deployment rolls out once, and the
/// ReplicaSet it makes carries none of Helm's marks. Objects without Helm's entry cost nothing.
pub async fn hand_over(
    client: &Client,
    resolver: &Resolver,
    plan: &Plan,
    dry_run: bool,
) -> Result<(), AdoptError> {
    if dry_run {
        return Ok(());
    }
    let drop_only: BTreeSet<&str> = plan.namespaces.iter().map(|t| t.id.as_str()).collect();
    for t in plan.take_over.iter().chain(&plan.namespaces) {
        let drop = drop_only.contains(t.id.as_str());
        let Some(api) = api_for(client, resolver, &t.object) else {
            continue;
        };
        for attempt in 0..STRIP_ATTEMPTS {
            let Some(live) = with_retry(&t.id, None, || api.get_metadata_opt(&t.object.name))
                .await
                .map_err(api_err(format!("reading {}", t.id)))?
            else {
                break;
            };
            let meta = live.metadata;
            if !helm_manages(&meta) {
                break;
            }
            let entries = meta.managed_fields.clone().unwrap_or_default();
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": meta.resource_version,
                "managedFields": helm_fields_to_ours(&entries, drop),
            }});
            match api
                .patch(
                    &t.object.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 && attempt + 1 < STRIP_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(
                        50 * u64::from(attempt + 1),
                    ))
                    .await;
                }
                Err(e) => return Err(api_err(format!("handing {} over from Helm", t.id))(e)),
            }
        }
    }
    Ok(())
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

/// Removes Helm's marks from the ReplicaSets of the releases' Deployments: their labels come from
/// Helm's pod template and their annotations from Helm's Deployment (the Deployment controller
/// copies both; kubernetes `pkg/controller/deployment/util`), and nothing removes them later. The
/// ReplicaSets of deleted Deployments go with them (garbage collection); stripping them is harmless.
/// Listed per release namespace by their annotations: not every chart's pod template carries
/// Helm's label (flagger's and the load tester's do not).
async fn strip_replicasets(client: &Client, releases: &[Release]) -> Result<(), AdoptError> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    let namespaces: BTreeSet<&str> = releases.iter().map(|r| r.namespace.as_str()).collect();
    let mut items = Vec::new();
    for ns in namespaces {
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default();
        let list = with_retry("listing ReplicaSets", None, || api.list_metadata(&lp))
            .await
            .map_err(api_err(format!("listing ReplicaSets in {ns}")))?;
        items.extend(list.items);
    }
    for rs in items {
        let meta = rs.metadata;
        if !release_of(&meta).is_some_and(|r| releases.contains(&r)) {
            continue;
        }
        let (Some(ns), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            continue;
        };
        let api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let mut patch = strip_patch(&meta);
        // Only labels and annotations: no precondition, the controller keeps writing its status.
        if let Some(m) = patch["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(api_err(format!(
                    "removing Helm's marks from ReplicaSet {ns}/{name}"
                ))(e));
            }
        }
    }
    Ok(())
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
    if !dry_run {
        strip_replicasets(client, &plan.releases).await?;
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
