//! Checks: `check --pre` (can install work here?), `check` (is what was installed working?) and install's permission check before its first write.
//!
//! Permissions are asked of the API server rather than inferred: a server-side dry run of each
//! object where it can run (it also applies RBAC's escalation rules and admission), and a
//! SelfSubjectAccessReview where it cannot (namespaces not created yet, kinds whose CRD comes with
//! the install). Both work the same under webhook authorizers such as Azure RBAC.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::discovery::Scope;
use serde::Serialize;

use crate::adopt;
use crate::apply::{self, ApplyError, ApplyOptions, ApplySetRecord, Resolver};
use crate::cluster::{self, ConnectRequest};
use crate::error::{Error, InputError};
use crate::install::{self, InstallRequest};
use crate::profile::{self, ProfileSource, Toggle, Values, ValuesRequest};
use crate::rbac;
use crate::render::{self, Object, RenderInputs};

/// The host `check` and `rbac` render with when none is given: permissions do not depend on it.
pub const PLACEHOLDER_HOST: &str = "app.example.com";
/// The profile they render without `--profile`.
pub const DEFAULT_PROFILE: &str = "nginx";
/// Oldest Kubernetes minor version the pinned ingress-nginx and Flagger support.
pub const MIN_MINOR: u32 = 30;
/// Newest minor version the test control plane runs; newer ones get a warning, not a failure.
pub const TESTED_MINOR: u32 = 35;
/// Requests in flight at once for reviews and dry runs.
const CONCURRENCY: usize = 8;
/// The webhook certificate is renewed by install this long before it expires; `check` warns inside it.
const CERT_WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const AKS_NODE_LABEL: &str = "kubernetes.azure.com/cluster";
const APP_ROUTING_NAMESPACE: &str = "app-routing-system";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    Pass,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub result: Mark,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Pass,
        detail: detail.into(),
        hint: None,
    }
}

fn warn(name: &str, detail: impl Into<String>, hint: Option<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Warn,
        detail: detail.into(),
        hint,
    }
}

fn fail(name: &str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        result: Mark::Fail,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn count(&self, m: Mark) -> usize {
        self.checks.iter().filter(|c| c.result == m).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Mark::Fail) > 0
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.result {
                Mark::Pass => "[pass]",
                Mark::Warn => "[warn]",
                Mark::Fail => "[FAIL]",
            };
            out.push_str(&format!("{mark} {}: {}\n", c.name, c.detail));
            if let (Mark::Fail | Mark::Warn, Some(h)) = (c.result, &c.hint) {
                out.push_str(&format!("       hint: {h}\n"));
            }
        }
        let w = self.count(Mark::Warn);
        out.push_str(&format!(
            "{} passed, {w} warning{}, {} failed\n",
            self.count(Mark::Pass),
            if w == 1 { "" } else { "s" },
            self.count(Mark::Fail)
        ));
        out
    }

    /// One `check` event per line, then a summary, as the other commands' `-o json`.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mut v = serde_json::to_value(c).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("event".into(), "check".into());
            }
            out.push_str(&format!("{v}\n"));
        }
        let summary = serde_json::json!({
            "event": "summary",
            "result": if self.failed() { "fail" } else { "pass" },
            "passed": self.count(Mark::Pass),
            "warnings": self.count(Mark::Warn),
            "failed": self.count(Mark::Fail),
        });
        out.push_str(&format!("{summary}\n"));
        out
    }
}

#[derive(Clone, Debug)]
pub struct CheckRequest {
    pub connect: ConnectRequest,
    pub values: ValuesRequest,
    /// Before install (`--pre`) rather than after it.
    pub pre: bool,
}

/// The values request with `check`'s and `rbac`'s defaults: profile nginx, a placeholder host.
pub fn defaulted(req: &ValuesRequest) -> Result<ValuesRequest, InputError> {
    let mut req = req.clone();
    if req.profile.is_none() {
        req.profile = Some(ProfileSource::Builtin(DEFAULT_PROFILE.into()));
    }
    match profile::resolve(&req) {
        Err(InputError::MissingHost) => {
            req.host = Some(PLACEHOLDER_HOST.into());
            profile::resolve(&req)?;
            Ok(req)
        }
        Err(e) => Err(e),
        Ok(_) => Ok(req),
    }
}

/// The rules of `gridos-setup rbac` for these values (offline render).
pub fn rbac_rules(values: &Values) -> Result<Vec<PolicyRule>, Error> {
    let objects = render::render(values, &RenderInputs::offline(values))?;
    Ok(rbac::rules(&objects, values))
}

/// `resource` or `resource.group`, as kubectl names a resource.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// A permission the user lacks, and the objects that need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    pub verb: String,
    /// `resource` or `resource.group`.
    pub resource: String,
    pub namespace: Option<String>,
    pub objects: Vec<String>,
}

impl Denial {
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.verb, self.resource);
        if let Some(ns) = &self.namespace {
            s.push_str(&format!(" in {ns}"));
        }
        if !self.objects.is_empty() {
            let shown: Vec<_> = self.objects.iter().take(3).cloned().collect();
            let more = self.objects.len().saturating_sub(3);
            s.push_str(&format!(" ({}", shown.join(", ")));
            if more > 0 {
                s.push_str(&format!(", +{more} more"));
            }
            s.push(')');
        }
        s
    }
}

async fn review(client: &Client, spec: SelfSubjectAccessReviewSpec) -> Result<bool, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let r = api
        .create(
            &PostParams::default(),
            &SelfSubjectAccessReview {
                spec,
                ..Default::default()
            },
        )
        .await?;
    Ok(r.status.is_some_and(|s| s.allowed))
}

/// Whether the user may `verb` `resource` in `group` (in `namespace`, or cluster-wide; on `name`).
pub async fn can_i(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, kube::Error> {
    review(
        client,
        SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(String::from),
                name: name.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
}

async fn can_get_url(client: &Client, verb: &str, path: &str) -> Result<bool, kube::Error> {
    review(
        client,
        SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                verb: Some(verb.into()),
                path: Some(path.into()),
            }),
            ..Default::default()
        },
    )
    .await
}

/// The verb a 403 of the API server names (`cannot create resource ...`), or the RBAC escalation
/// check's (`attempting to grant RBAC permissions not currently held`).
fn denied_verb(obj: &Object, message: &str) -> String {
    if let Some(v) = message
        .split_once("cannot ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
    {
        return v.to_string();
    }
    if message.contains("not currently held") {
        return match obj.kind() {
            "ClusterRoleBinding" | "RoleBinding" => "bind".into(),
            _ => "escalate".into(),
        };
    }
    "patch".into()
}

/// What the permission pass found: denials, and other failures of a dry run (invalid objects, ...).
#[derive(Clone, Debug, Default)]
pub struct Permissions {
    pub denials: Vec<Denial>,
    pub errors: Vec<String>,
    pub dry_runs: usize,
    pub reviews: usize,
}

/// Asks, for each object, whether this user may create and patch it: a server-side dry run of the
/// apply where the object's kind is served and its namespace exists, a SelfSubjectAccessReview
/// (create and patch) otherwise.
pub async fn object_permissions(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
) -> Result<Permissions, Error> {
    let namespaces: BTreeSet<&str> = objects.iter().filter_map(|o| o.namespace()).collect();
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let mut existing = BTreeSet::new();
    for ns in namespaces {
        // Unreadable counts as missing: the review below then asks about it instead.
        if matches!(ns_api.get_opt(ns).await, Ok(Some(_))) {
            existing.insert(ns.to_string());
        }
    }
    let mut dry = Vec::new();
    // (verb, group, resource, namespace) -> object ids
    let mut asks: BTreeMap<(String, String, String, Option<String>), Vec<String>> = BTreeMap::new();
    for o in objects {
        let resolved = resolver.resolve(o).ok();
        let dry_runnable = resolved.as_ref().is_some_and(|(_, caps)| {
            caps.scope == Scope::Cluster || o.namespace().is_some_and(|n| existing.contains(n))
        });
        if dry_runnable {
            dry.push(o.clone());
            continue;
        }
        let resource = match &resolved {
            Some((ar, _)) => ar.plural.clone(),
            None => rbac::plural(o.api_version(), o.kind()),
        };
        let group = o
            .api_version()
            .split_once('/')
            .map(|(g, _)| g)
            .unwrap_or("");
        for verb in ["create", "patch"] {
            asks.entry((
                verb.into(),
                group.into(),
                resource.clone(),
                o.namespace().map(String::from),
            ))
            .or_default()
            .push(o.id());
        }
    }
    let mut out = Permissions {
        dry_runs: dry.len(),
        reviews: asks.len(),
        ..Default::default()
    };
    let dry_results: Vec<(Object, Result<(), ApplyError>)> =
        futures::stream::iter(dry.into_iter().map(|o| async move {
            let r = apply::apply_one(
                client,
                resolver,
                &o,
                ApplyOptions {
                    dry_run: true,
                    force: true,
                },
                true,
            )
            .await
            .map(|_| ());
            (o, r)
        }))
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut denied: BTreeMap<(String, String, Option<String>), Vec<String>> = BTreeMap::new();
    for (o, r) in dry_results {
        match r {
            Ok(()) => {}
            Err(ApplyError::Forbidden { message, .. }) => {
                let group = o
                    .api_version()
                    .split_once('/')
                    .map(|(g, _)| g)
                    .unwrap_or("");
                let resource = resolver
                    .resolve(&o)
                    .map(|(ar, _)| ar.plural)
                    .unwrap_or_else(|_| rbac::plural(o.api_version(), o.kind()));
                denied
                    .entry((
                        denied_verb(&o, &message),
                        qualified(group, &resource),
                        o.namespace().map(String::from),
                    ))
                    .or_default()
                    .push(o.id());
            }
            // The namespace went away meanwhile: nothing to learn about permissions here.
            Err(ApplyError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    let answers: Vec<_> = futures::stream::iter(asks.into_iter().map(|(k, ids)| async move {
        let (verb, group, resource, ns) = &k;
        let r = can_i(client, verb, group, resource, ns.as_deref(), None).await;
        (k, ids, r)
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    for ((verb, group, resource, ns), ids, r) in answers {
        match r {
            Ok(true) => {}
            Ok(false) => denied
                .entry((verb, qualified(&group, &resource), ns))
                .or_default()
                .extend(ids),
            // A cluster that does not let this user ask leaves the answer to the apply itself.
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::debug!("SelfSubjectAccessReview refused: {}", s.message);
                out.errors.push(format!(
                    "cannot ask whether {verb} {} is allowed: SelfSubjectAccessReview is forbidden",
                    qualified(&group, &resource)
                ));
            }
            Err(e) => {
                return Err(Error::Api {
                    context:
                        "asking the API server what this user may do (SelfSubjectAccessReview)"
                            .into(),
                    source: e,
                });
            }
        }
    }
    out.denials = denied
        .into_iter()
        .map(|((verb, resource, namespace), objects)| Denial {
            verb,
            resource,
            namespace,
            objects,
        })
        .collect();
    Ok(out)
}

/// The ApplySet record as an object, for the permission check of its first write.
fn parent_object() -> Object {
    Object {
        template: "applyset".into(),
        data: serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": apply::PARENT_NAME, "namespace": apply::PARENT_NAMESPACE},
        }),
    }
}

/// The hint of every permission failure: which role to bind and how to get it.
pub fn bind_hint() -> String {
    format!(
        "have a cluster admin bind the ClusterRole {} to you (`gridos-setup rbac --user NAME | kubectl apply -f -`), then re-run",
        rbac::ROLE_NAME
    )
}

/// Install's check before its first write: may this user create and patch every object the run
/// will write for the first time? Objects already recorded in the ApplySet were written by an
/// earlier run, so a no-op re-run asks nothing.
pub async fn authorize_writes(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    record: &ApplySetRecord,
) -> Result<(), Error> {
    let mut new: Vec<Object> = objects
        .iter()
        .filter(|o| !record.members.contains(&apply::member_id(o)))
        .cloned()
        .collect();
    if !record.exists {
        new.push(parent_object());
    }
    if new.is_empty() {
        return Ok(());
    }
    let p = object_permissions(client, resolver, &new).await?;
    tracing::debug!(
        dry_runs = p.dry_runs,
        reviews = p.reviews,
        "permission check before the first write"
    );
    // Other failures (an invalid object, a review the cluster refuses) are left to the apply,
    // which reports them with the object's context.
    if p.denials.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = p.denials.iter().map(Denial::describe).collect();
    Err(Error::Preflight {
        problem: format!(
            "forbidden: this user may not {}; nothing was written",
            what.join("; ")
        ),
        hint: bind_hint(),
    })
}

/// (verb, group, resource, resource name, non-resource URL) of one access review.
type Ask = (String, String, String, Option<String>, Option<String>);

/// Every permission of `rules` the user lacks, cluster-wide, as `verb resource[/name]` or `verb URL`.
pub async fn missing_rules(client: &Client, rules: &[PolicyRule]) -> Result<Vec<String>, Error> {
    let mut asks: Vec<Ask> = Vec::new();
    for r in rules {
        for verb in &r.verbs {
            for url in r.non_resource_urls.iter().flatten() {
                asks.push((
                    verb.clone(),
                    String::new(),
                    String::new(),
                    None,
                    Some(url.clone()),
                ));
            }
            for g in r.api_groups.iter().flatten() {
                for res in r.resources.iter().flatten() {
                    match &r.resource_names {
                        Some(names) if !names.is_empty() => {
                            for n in names {
                                asks.push((
                                    verb.clone(),
                                    g.clone(),
                                    res.clone(),
                                    Some(n.clone()),
                                    None,
                                ));
                            }
                        }
                        _ => asks.push((verb.clone(), g.clone(), res.clone(), None, None)),
                    }
                }
            }
        }
    }
    let answers: Vec<_> = futures::stream::iter(asks.into_iter().map(|a| async move {
        let (verb, group, resource, name, url) = &a;
        let r = match url {
            Some(u) => can_get_url(client, verb, u).await,
            None => can_i(client, verb, group, resource, None, name.as_deref()).await,
        };
        (a, r)
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    let mut missing = Vec::new();
    for ((verb, group, resource, name, url), r) in answers {
        let allowed = r.map_err(|e| Error::Api {
            context: "asking the API server what this user may do (SelfSubjectAccessReview)".into(),
            source: e,
        })?;
        if allowed {
            continue;
        }
        missing.push(match (url, name) {
            (Some(u), _) => format!("{verb} {u}"),
            (None, Some(n)) => format!("{verb} {}/{n}", qualified(&group, &resource)),
            (None, None) => format!("{verb} {}", qualified(&group, &resource)),
        });
    }
    Ok(missing)
}

fn exec_plugin(req: &ConnectRequest) -> Check {
    const NAME: &str = "credentials";
    let kc = match &req.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    };
    // An unreadable kubeconfig is reported by the connection itself, with its fix.
    let Ok(kc) = kc else {
        return pass(NAME, "kubeconfig not read here; see the connection check");
    };
    let context = req.context.clone().or(kc.current_context.clone());
    let user = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    let exec = kc
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.exec.as_ref());
    let Some(command) = exec.and_then(|e| e.command.clone()) else {
        return pass(
            NAME,
            "the kubeconfig carries the credentials (no exec plugin)",
        );
    };
    let found = if command.contains('/') {
        std::path::Path::new(&command).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(&command).is_file()))
    };
    if found {
        pass(NAME, format!("exec plugin {command} is on PATH"))
    } else {
        let hint = if command == "kubelogin" {
            "install kubelogin (`az aks install-cli`) and put it on PATH".to_string()
        } else {
            format!("install {command} or put it on PATH; the kubeconfig runs it to get a token")
        };
        fail(
            NAME,
            format!("the kubeconfig's exec plugin {command} is not on PATH"),
            hint,
        )
    }
}

fn version_check(info: &k8s_openapi::apimachinery::pkg::version::Info, server: &str) -> Check {
    const NAME: &str = "API server";
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    };
    let minor: Option<u32> = digits(&info.minor).parse().ok();
    let version = &info.git_version;
    match (info.major.as_str(), minor) {
        ("1", Some(m)) if m < MIN_MINOR => fail(
            NAME,
            format!("{server} runs Kubernetes {version}, older than 1.{MIN_MINOR}"),
            format!("upgrade the cluster to 1.{MIN_MINOR} or newer (`az aks upgrade`)"),
        ),
        ("1", Some(m)) if m > TESTED_MINOR => warn(
            NAME,
            format!(
                "{server} runs Kubernetes {version}, newer than the 1.{TESTED_MINOR} gridos-setup was tested with"
            ),
            None,
        ),
        ("1", Some(_)) => pass(
            NAME,
            format!(
                "{server} answers, Kubernetes {version} (supported: 1.{MIN_MINOR} to 1.{TESTED_MINOR})"
            ),
        ),
        _ => warn(
            NAME,
            format!("{server} reports an unrecognised version {version}"),
            None,
        ),
    }
}

fn host_of(server: &str) -> &str {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

async fn aks(client: &Client, server: &str) -> Check {
    const NAME: &str = "AKS";
    let host = host_of(server);
    if host.ends_with(".azmk8s.io") {
        return pass(NAME, format!("server {host} is an AKS API server"));
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .list(&ListParams::default().labels(AKS_NODE_LABEL).limit(1))
        .await
    {
        Ok(l) if !l.items.is_empty() => {
            pass(NAME, format!("nodes carry the {AKS_NODE_LABEL} label"))
        }
        Ok(_) => warn(
            NAME,
            format!(
                "not AKS (server {host}, no node labelled {AKS_NODE_LABEL}): the Azure load balancer annotations and the Azure guidance will not apply"
            ),
            None,
        ),
        Err(_) => warn(
            NAME,
            format!(
                "server {host} is not an AKS API server and the nodes cannot be listed to tell"
            ),
            None,
        ),
    }
}

fn service_monitor(values: &Values, resolver: &Resolver) -> Check {
    const NAME: &str = "ServiceMonitor";
    let served: Vec<&str> = ["monitoring.coreos.com", "azmonitoring.coreos.com"]
        .into_iter()
        .filter(|g| resolver.serves(g, "ServiceMonitor"))
        .collect();
    let configured = values.service_monitor.group.as_str();
    match values.service_monitor.enabled {
        Toggle::Off => pass(NAME, "switched off (serviceMonitor.enabled=off)"),
        Toggle::On if served.contains(&configured) => pass(NAME, format!("served by {configured}")),
        Toggle::On => fail(
            NAME,
            format!(
                "serviceMonitor.enabled is on but the cluster serves no ServiceMonitor in {configured}"
            ),
            "install prometheus-operator (or enable Azure Monitor managed Prometheus), or --set serviceMonitor.enabled=auto",
        ),
        Toggle::Auto => match served.first() {
            Some(g) => pass(
                NAME,
                format!("served by {g}: install applies the ServiceMonitor there"),
            ),
            None => warn(
                NAME,
                "no ServiceMonitor CRD (monitoring.coreos.com or azmonitoring.coreos.com): install skips it; Flagger's own Prometheus scrapes the controller",
                None,
            ),
        },
    }
}

/// The Helm releases install-flagger.sh made (or any release running ingress-nginx, Flagger or
/// the load tester), each named once, from the release records and the Deployments Helm marks.
async fn helm_conflicts(client: &Client) -> Check {
    const NAME: &str = "Helm installs";
    let api: Api<Deployment> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}={}", adopt::MANAGED_BY, adopt::HELM));
    let (deployments, records) = tokio::join!(api.list(&lp), adopt::find_releases(client));
    let deployments = match deployments {
        Ok(l) => l.items,
        Err(e) => {
            return fail(
                NAME,
                format!("cannot list Deployments to look for Helm releases: {e}"),
                bind_hint(),
            );
        }
    };
    let records = match records {
        Ok(r) => r,
        Err(e) => return fail(NAME, e.to_string(), bind_hint()),
    };
    // release -> the Deployments it runs
    let mut found: BTreeMap<adopt::Release, Vec<String>> = BTreeMap::new();
    for d in &deployments {
        let app = d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .cloned()
            .unwrap_or_default();
        let Some(release) = adopt::release_of(&d.metadata) else {
            continue;
        };
        if ![
            "ingress-nginx",
            "flagger",
            "loadtester",
            "flagger-loadtester",
        ]
        .contains(&app.as_str())
            && !adopt::KNOWN_RELEASES.contains(&release.name.as_str())
        {
            continue;
        }
        found.entry(release).or_default().push(format!(
            "Deployment {}/{}",
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.name.clone().unwrap_or_default()
        ));
    }
    let kept: Vec<&adopt::Release> = records
        .keys()
        .filter(|r| adopt::KNOWN_RELEASES.contains(&r.name.as_str()) && !found.contains_key(*r))
        .collect();
    if found.is_empty() {
        if kept.is_empty() {
            return pass(
                NAME,
                "no ingress-nginx, Flagger or load tester installed by Helm",
            );
        }
        return warn(
            NAME,
            format!(
                "Helm release records without Helm-managed workloads (kept by --keep-helm-history?): {}",
                kept.iter().map(|r| r.describe()).collect::<Vec<_>>().join(", ")
            ),
            Some("`helm list` still shows them; `helm uninstall` would delete what gridos-setup now owns, so delete the records instead (`kubectl delete secret -n NAMESPACE -l owner=helm,name=RELEASE`)".into()),
        );
    }
    let lines: Vec<String> = found
        .iter()
        .map(|(r, what)| format!("release {} ({})", r.describe(), what.join(", ")))
        .collect();
    let uninstall: Vec<String> = found
        .keys()
        .map(|r| format!("helm uninstall {} -n {}", r.name, r.namespace))
        .collect();
    fail(
        NAME,
        format!("already installed by Helm: {}", lines.join("; ")),
        format!(
            "`gridos-setup install --adopt-helm` takes them over and keeps the controller Service and its load-balancer address (`gridos-setup plan --adopt-helm` shows every change first); or remove them (`{}`), which frees the address",
            uninstall.join("`, `")
        ),
    )
}

async fn app_routing(client: &Client) -> Check {
    const NAME: &str = "AKS app routing";
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(APP_ROUTING_NAMESPACE).await {
        Ok(None) => pass(NAME, "the application routing add-on is not enabled"),
        Ok(Some(_)) => warn(
            NAME,
            format!(
                "the AKS application routing add-on runs its own NGINX (namespace {APP_ROUTING_NAMESPACE}) beside the one gridos-setup installs"
            ),
            Some(
                "if nothing uses it: `az aks approuting disable -g RESOURCE_GROUP -n CLUSTER`"
                    .into(),
            ),
        ),
        Err(e) => warn(
            NAME,
            format!("cannot read namespace {APP_ROUTING_NAMESPACE}: {e}"),
            None,
        ),
    }
}

async fn ingress_class(client: &Client, objects: &[Object]) -> Option<Check> {
    const NAME: &str = "IngressClass";
    let rendered = objects.iter().find(|o| o.kind() == "IngressClass")?;
    let name = rendered.name();
    let api: Api<IngressClass> = Api::all(client.clone());
    Some(match api.get_opt(name).await {
        Ok(None) => pass(NAME, format!("{name} is free")),
        Ok(Some(ic)) => {
            let ours = ic
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(apply::PART_OF))
                .is_some_and(|v| *v == apply::applyset_id());
            let controller = ic.spec.and_then(|s| s.controller).unwrap_or_default();
            if ours {
                pass(NAME, format!("{name} is gridos-setup's"))
            } else {
                fail(
                    NAME,
                    format!(
                        "IngressClass {name} exists and belongs to another install (controller {controller})"
                    ),
                    "remove that ingress controller and its IngressClass first, or re-run install with --force-conflicts to take it over",
                )
            }
        }
        Err(e) => fail(
            NAME,
            format!("cannot read IngressClass {name}: {e}"),
            bind_hint(),
        ),
    })
}

/// Runs `check` (`req.pre`: `check --pre`). Bad input is an error (exit 2); everything the
/// cluster answers, even an unreachable API server, is a line of the report.
pub async fn check(req: &CheckRequest) -> Result<Report, Error> {
    let values_req = defaulted(&req.values)?;
    let values = profile::resolve(&values_req)?;
    let mut report = Report::default();
    report.checks.push(exec_plugin(&req.connect));
    let cluster = match cluster::connect(&req.connect).await {
        Ok(c) => c,
        // A missing exec plugin is refused by connect as bad input; here it is a report line already.
        Err(e) if e.is_input() && !report.failed() => return Err(e.into()),
        // An exec plugin that cannot run already fails here; the credentials line above says why.
        Err(e) => {
            report
                .checks
                .push(fail("API server", format!("cannot connect: {e}"), e.hint()));
            return Ok(report);
        }
    };
    let client = cluster.client.clone();
    match client.apiserver_version().await {
        Ok(info) => report.checks.push(version_check(&info, &cluster.server)),
        Err(e) => {
            report.checks.push(fail(
                "API server",
                format!("{} (context {}) does not answer: {e}", cluster.server, cluster.context),
                "check the network path and credentials (`kubectl cluster-info`); for AKS run `az aks get-credentials` again",
            ));
            return Ok(report);
        }
    }
    if req.pre {
        pre(
            req,
            &values_req,
            &values,
            &client,
            &cluster.server,
            &mut report,
        )
        .await?;
    } else {
        post(req, &client, &mut report).await?;
    }
    Ok(report)
}

async fn pre(
    req: &CheckRequest,
    values_req: &ValuesRequest,
    values: &Values,
    client: &Client,
    server: &str,
    report: &mut Report,
) -> Result<(), Error> {
    report.checks.push(aks(client, server).await);
    let install_req = InstallRequest {
        values: values_req.clone(),
        connect: req.connect.clone(),
        dry_run: true,
        no_wait: true,
        timeout: Duration::from_secs(60),
        force_conflicts: false,
        lock_wait: None,
        adopt_helm: false,
        keep_helm_history: false,
    };
    // What install would apply, decided exactly as install decides it.
    let prepared = install::prepare(&install_req).await;
    match &prepared {
        Ok(p) => report.checks.push(service_monitor(&p.values, &p.resolver)),
        Err(Error::Preflight { problem, hint }) => {
            report
                .checks
                .push(fail("ServiceMonitor", problem.clone(), hint.clone()))
        }
        Err(e) => report.checks.push(fail(
            "read access",
            format!(
                "install could not read what it needs: {}",
                e.to_string().replace('\n', " ")
            ),
            e.hint().unwrap_or_else(bind_hint),
        )),
    }
    report.checks.push(helm_conflicts(client).await);
    report.checks.push(app_routing(client).await);
    if let Ok(p) = &prepared {
        if let Some(c) = ingress_class(client, &p.objects).await {
            report.checks.push(c);
        }
        let mut objects = p.objects.clone();
        objects.push(parent_object());
        let perms = object_permissions(client, &p.resolver, &objects).await?;
        const NAME: &str = "permissions (objects)";
        if perms.denials.is_empty() && perms.errors.is_empty() {
            report.checks.push(pass(
                NAME,
                format!(
                    "every object can be applied ({} server-side dry runs, {} access reviews where a dry run cannot run yet)",
                    perms.dry_runs, perms.reviews
                ),
            ));
        }
        if !perms.denials.is_empty() {
            let what: Vec<_> = perms.denials.iter().map(Denial::describe).collect();
            report.checks.push(fail(
                NAME,
                format!("forbidden: {}", what.join("; ")),
                bind_hint(),
            ));
        }
        if !perms.errors.is_empty() {
            report.checks.push(fail(
                "dry run",
                perms.errors.join("; "),
                "each message names the object and the cause: an invalid value, an admission policy that refuses it, or a review this user may not ask for",
            ));
        }
    }
    let rules = rbac_rules(values)?;
    let missing = missing_rules(client, &rules).await?;
    const RULES: &str = "permissions (rbac)";
    if missing.is_empty() {
        report.checks.push(pass(
            RULES,
            format!(
                "every rule of ClusterRole {} is held ({} rules)",
                rbac::ROLE_NAME,
                rules.len()
            ),
        ));
    } else {
        report.checks.push(fail(
            RULES,
            format!("missing: {}", missing.join(", ")),
            bind_hint(),
        ));
    }
    Ok(())
}

/// Whether the admission webhook trusts the CA of the certificate its Secret serves: if they come
/// from different runs, the API server's TLS to the webhook fails and, with failurePolicy Fail,
/// every Ingress create and update is refused.
async fn webhook_trust(client: &Client, ns: &str, secret: &Secret) -> Check {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    const NAME: &str = "webhook CA";
    let ca = secret
        .data
        .as_ref()
        .and_then(|d| d.get(crate::certs::CA_CRT))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    // The configuration is named after the Secret, as upstream names both.
    let vwc = match api.get_opt(install::ADMISSION_SECRET).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return fail(
                NAME,
                format!(
                    "ValidatingWebhookConfiguration {} is missing",
                    install::ADMISSION_SECRET
                ),
                "re-run `gridos-setup install` (same profile and host) to create it",
            );
        }
        Err(e) => {
            return fail(
                NAME,
                format!(
                    "cannot read ValidatingWebhookConfiguration {}: {e}",
                    install::ADMISSION_SECRET
                ),
                bind_hint(),
            );
        }
    };
    let mismatched: Vec<String> = vwc
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| &b.0) != Some(&ca))
        .map(|w| w.name)
        .collect();
    if mismatched.is_empty() {
        pass(
            NAME,
            format!(
                "the webhook trusts the CA of Secret {ns}/{}",
                install::ADMISSION_SECRET
            ),
        )
    } else {
        fail(
            NAME,
            format!(
                "the caBundle of webhook {} in ValidatingWebhookConfiguration {} is not the CA of Secret {ns}/{}: the API server cannot reach the webhook, so every Ingress create and update is refused",
                mismatched.join(", "),
                install::ADMISSION_SECRET,
                install::ADMISSION_SECRET
            ),
            "re-run `gridos-setup install` with the same profile and host: it writes both from the Secret's certificate (one run at a time: the run lock serialises them)",
        )
    }
}

/// When the PEM certificate expires, read without showing any of it.
fn not_after(pem: &[u8]) -> Option<SystemTime> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let secs = cert.validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

async fn post(req: &CheckRequest, client: &Client, report: &mut Report) -> Result<(), Error> {
    let record = apply::read_record(client).await?;
    if !record.exists {
        report.checks.push(fail(
            "installed",
            "gridos-setup has not installed anything here (no ApplySet kube-system/gridos-setup)",
            "run `gridos-setup check --pre`, then `gridos-setup install --profile nginx --host app.example.com --yes`",
        ));
        return Ok(());
    }
    let members: Vec<apply::Stale> = record
        .members
        .iter()
        .filter_map(|m| apply::parse_member(m))
        .collect();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for m in members
        .iter()
        .filter(|m| m.kind == "CustomResourceDefinition")
    {
        let name = format!("CRD {}", m.name);
        report.checks.push(match crds.get_opt(&m.name).await {
            Ok(Some(c)) if crate::wait::crd_is_established(&c) => pass(&name, "Established"),
            Ok(Some(_)) => fail(
                &name,
                "not Established",
                format!(
                    "`kubectl describe crd {}` shows why; re-run install",
                    m.name
                ),
            ),
            Ok(None) => fail(&name, "missing", "re-run install to create it"),
            Err(e) => fail(&name, format!("cannot read it: {e}"), bind_hint()),
        });
    }
    let status = crate::status::status(&req.connect).await?;
    for c in &status.components {
        let name = format!("Deployment {}", c.deployment);
        report.checks.push(if c.rolled_out {
            pass(&name, format!("ready {}/{}", c.ready, c.desired))
        } else {
            fail(
                &name,
                format!("not ready ({}/{})", c.ready, c.desired),
                format!(
                    "`kubectl -n {} describe deployment {}` and its pods' events say why",
                    c.deployment.split('/').next().unwrap_or_default(),
                    c.deployment
                        .split('/')
                        .nth(1)
                        .unwrap_or_default()
                        .split(' ')
                        .next()
                        .unwrap_or_default()
                ),
            )
        });
    }
    let controller = members
        .iter()
        .find(|m| m.kind == "Service" && m.name == install::CONTROLLER_SERVICE);
    if let Some(svc) = controller {
        let ns = svc.namespace.clone().unwrap_or_default();
        report.checks.push(match &status.address {
            Some(a) => pass(
                "address",
                format!(
                    "Service {ns}/{} has {} address {a}",
                    svc.name,
                    if status.internal {
                        "internal"
                    } else {
                        "public"
                    }
                ),
            ),
            None => fail(
                "address",
                format!("Service {ns}/{} has no load-balancer address", svc.name),
                format!(
                    "`kubectl -n {ns} describe service {}` shows the cloud provider's events",
                    svc.name
                ),
            ),
        });
        report.checks.push(warn(
            "ingress-nginx",
            crate::guidance::RETIREMENT_WARNING,
            None,
        ));
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let name = "webhook certificate";
        let secret = secrets.get_opt(install::ADMISSION_SECRET).await;
        if let Ok(Some(s)) = &secret {
            report.checks.push(webhook_trust(client, &ns, s).await);
        }
        report.checks.push(match secret {
            Ok(Some(s)) => {
                let expiry = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(crate::certs::TLS_CRT))
                    .and_then(|b| not_after(&b.0));
                match expiry {
                    Some(t) if t < SystemTime::now() + CERT_WARN_BEFORE => warn(
                        name,
                        format!("expires on {}", date(t)),
                        Some("re-run `gridos-setup install` to renew it".into()),
                    ),
                    Some(t) => pass(name, format!("valid until {}", date(t))),
                    None => fail(
                        name,
                        format!(
                            "Secret {ns}/{} holds no readable certificate",
                            install::ADMISSION_SECRET
                        ),
                        "re-run `gridos-setup install` to make a new one",
                    ),
                }
            }
            Ok(None) => fail(
                name,
                format!("Secret {ns}/{} is missing", install::ADMISSION_SECRET),
                "re-run `gridos-setup install` to make a new one",
            ),
            Err(e) => fail(
                name,
                format!("cannot read Secret {ns}/{}: {e}", install::ADMISSION_SECRET),
                bind_hint(),
            ),
        });
    }
    for m in members.iter().filter(|m| m.kind == "Canary") {
        let ns = m.namespace.clone().unwrap_or_default();
        let name = format!("Canary {ns}/{}", m.name);
        let live = status
            .canaries
            .iter()
            .find(|c| c.namespace == ns && c.name == m.name);
        report.checks.push(match live {
            None => fail(&name, "missing", "re-run install to create it"),
            Some(c) if c.phase == "Failed" => warn(
                &name,
                format!(
                    "phase Failed: Flagger rolled the last release back ({} failed checks)",
                    c.failed_checks
                ),
                Some(format!(
                    "`kubectl -n {ns} describe canary {}` shows why",
                    m.name
                )),
            ),
            Some(c) => pass(&name, format!("phase {}, weight {}", c.phase, c.weight)),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_name_the_verb() {
        let o = Object {
            template: "t".into(),
            data: serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "x"}}),
        };
        assert_eq!(
            denied_verb(
                &o,
                "clusterroles.rbac.authorization.k8s.io \"x\" is forbidden: User \"u\" cannot create resource \"clusterroles\""
            ),
            "create"
        );
        assert_eq!(
            denied_verb(
                &o,
                "user \"u\" (groups=[]) is attempting to grant RBAC permissions not currently held:"
            ),
            "bind"
        );
    }

    #[test]
    fn hosts_are_taken_from_server_urls() {
        assert_eq!(
            host_of("https://aks-x-dns.hcp.westeurope.azmk8s.io:443/"),
            "aks-x-dns.hcp.westeurope.azmk8s.io"
        );
        assert_eq!(host_of("https://127.0.0.1:6443"), "127.0.0.1");
    }

    #[test]
    fn versions_are_judged_by_minor() {
        let info = |minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
            major: "1".into(),
            minor: minor.into(),
            git_version: format!("v1.{minor}.0"),
            ..Default::default()
        };
        assert_eq!(version_check(&info("29"), "s").result, Mark::Fail);
        assert_eq!(version_check(&info("33+"), "s").result, Mark::Pass);
        assert_eq!(version_check(&info("36"), "s").result, Mark::Warn);
    }
}
