//! Permissions: may this user write what install would? Used by install before its first write and by `check --pre`.
//!
//! Permissions are asked of the API server rather than inferred: a server-side dry run of each
//! object where it can run (it also applies RBAC's escalation rules and admission), and a
//! SelfSubjectAccessReview where it cannot (namespaces not created yet, kinds whose CRD comes with
//! the install). Both work the same under webhook authorizers such as Azure RBAC.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::discovery::Scope;
use tokio::time::Instant;

use crate::apply::{self, ApplyError, ApplyOptions, Resolver};
use crate::applyset::{self, ApplySetRecord};
use crate::error::Error;
use crate::profile::{TrafficLayer, Values};
use crate::rbac;
use crate::render::{self, Object, RenderInputs};

/// The rules of `gridos-setup rbac` for these values (offline render), for either traffic layer:
/// a switch of layer prunes the other layer's kinds, and uninstall removes what either installed.
pub fn installer_rules(values: &Values) -> Result<Vec<PolicyRule>, Error> {
    let mut objects = render::render(values, &RenderInputs::offline(values))?;
    let mut other = values.clone();
    other.traffic.layer = match values.traffic.layer {
        TrafficLayer::IngressNginx => TrafficLayer::GatewayApi,
        TrafficLayer::GatewayApi => TrafficLayer::IngressNginx,
    };
    objects.extend(render::render(&other, &RenderInputs::offline(&other))?);
    Ok(rbac::rules(&objects, values))
}

/// The hint of every permission failure: which role to bind and how to get it.
pub fn bind_hint() -> String {
    format!(
        "have a cluster admin bind the ClusterRole {} to you (`gridos-setup rbac --user NAME | kubectl apply -f -`), then re-run",
        rbac::ROLE_NAME
    )
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

/// The API group of an object's apiVersion (`""` for the core group).
fn group_of(obj: &Object) -> &str {
    obj.api_version()
        .split_once('/')
        .map(|(g, _)| g)
        .unwrap_or("")
}

/// The resource (plural) of an object's kind: from discovery, else derived from the kind.
fn resource_of(resolver: &Resolver, obj: &Object) -> String {
    resolver
        .resolve(obj)
        .map(|(ar, _)| ar.plural)
        .unwrap_or_else(|_| rbac::plural(obj.api_version(), obj.kind()))
}

/// (verb, `resource[.group]`, namespace) -> the objects that need it.
type Denied = BTreeMap<(String, String, Option<String>), Vec<String>>;
/// (verb, group, resource, namespace) -> the objects that need it.
type Asks = BTreeMap<(String, String, String, Option<String>), Vec<String>>;

/// The namespaces of `objects` that exist now; an unreadable one counts as missing (the review
/// then asks about it instead).
async fn existing_namespaces(client: &Client, objects: &[Object]) -> BTreeSet<String> {
    let namespaces: BTreeSet<&str> = objects.iter().filter_map(|o| o.namespace()).collect();
    let api: Api<Namespace> = Api::all(client.clone());
    let found: Vec<Option<String>> = apply::all_concurrently(namespaces.into_iter().map(|ns| {
        let api = api.clone();
        async move { matches!(api.get_opt(ns).await, Ok(Some(_))).then(|| ns.to_string()) }
    }))
    .await;
    found.into_iter().flatten().collect()
}

/// Splits objects into those a server-side dry run can check and the access reviews for the rest.
fn split_checks(
    resolver: &Resolver,
    objects: &[Object],
    existing: &BTreeSet<String>,
) -> (Vec<Object>, Asks) {
    let mut dry = Vec::new();
    let mut asks = Asks::new();
    for o in objects {
        let resolved = resolver.resolve(o).ok();
        let dry_runnable = resolved.as_ref().is_some_and(|(_, caps)| {
            caps.scope == Scope::Cluster || o.namespace().is_some_and(|n| existing.contains(n))
        });
        if dry_runnable {
            dry.push(o.clone());
            continue;
        }
        let resource = resource_of(resolver, o);
        for verb in ["create", "patch"] {
            let key = (
                verb.into(),
                group_of(o).into(),
                resource.clone(),
                o.namespace().map(String::from),
            );
            asks.entry(key).or_default().push(o.id());
        }
    }
    (dry, asks)
}

/// Server-side dry runs of `dry`: denials go to `denied`, other failures to `errors`.
async fn dry_run_checks(
    client: &Client,
    resolver: &Resolver,
    dry: Vec<Object>,
    deadline: Option<Instant>,
    denied: &mut Denied,
    errors: &mut Vec<String>,
) {
    let opts = ApplyOptions {
        dry_run: true,
        force: true,
        deadline,
    };
    let results: Vec<(Object, Result<(), ApplyError>)> =
        apply::all_concurrently(dry.into_iter().map(|o| async move {
            let r = apply::apply_one(client, resolver, &o, opts, true)
                .await
                .map(|_| ());
            (o, r)
        }))
        .await;
    for (o, r) in results {
        match r {
            Ok(()) => {}
            Err(ApplyError::Forbidden { message, .. }) => {
                let resource = qualified(group_of(&o), &resource_of(resolver, &o));
                let key = (
                    denied_verb(&o, &message),
                    resource,
                    o.namespace().map(String::from),
                );
                denied.entry(key).or_default().push(o.id());
            }
            // The namespace went away meanwhile: nothing to learn about permissions here.
            Err(ApplyError::Api {
                source: kube::Error::Api(s),
                ..
            }) if s.code == 404 => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
}

/// SelfSubjectAccessReviews of `asks`: denials go to `denied`; a cluster that does not let this
/// user ask leaves the answer to the apply itself (an entry in `errors`).
async fn review_checks(
    client: &Client,
    asks: Asks,
    denied: &mut Denied,
    errors: &mut Vec<String>,
) -> Result<(), Error> {
    let answers: Vec<_> = apply::all_concurrently(asks.into_iter().map(|(k, ids)| async move {
        let (verb, group, resource, ns) = &k;
        let r = can_i(client, verb, group, resource, ns.as_deref(), None).await;
        (k, ids, r)
    }))
    .await;
    for ((verb, group, resource, ns), ids, r) in answers {
        match r {
            Ok(true) => {}
            Ok(false) => denied
                .entry((verb, qualified(&group, &resource), ns))
                .or_default()
                .extend(ids),
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::debug!("SelfSubjectAccessReview refused: {}", s.message);
                errors.push(format!(
                    "cannot ask whether {verb} {} is allowed: SelfSubjectAccessReview is forbidden",
                    qualified(&group, &resource)
                ));
            }
            Err(e) => return Err(review_error(e)),
        }
    }
    Ok(())
}

fn review_error(e: kube::Error) -> Error {
    Error::Api {
        context: "asking the API server what this user may do (SelfSubjectAccessReview)".into(),
        source: e,
    }
}

/// Asks, for each object, whether this user may create and patch it: a server-side dry run of the
/// apply where the object's kind is served and its namespace exists, a SelfSubjectAccessReview
/// (create and patch) otherwise.
pub async fn object_permissions(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    deadline: Option<Instant>,
) -> Result<Permissions, Error> {
    let existing = existing_namespaces(client, objects).await;
    let (dry, asks) = split_checks(resolver, objects, &existing);
    let mut out = Permissions {
        dry_runs: dry.len(),
        reviews: asks.len(),
        ..Default::default()
    };
    let mut denied = Denied::new();
    dry_run_checks(
        client,
        resolver,
        dry,
        deadline,
        &mut denied,
        &mut out.errors,
    )
    .await;
    review_checks(client, asks, &mut denied, &mut out.errors).await?;
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

/// Install's check before its first write: may this user create and patch every object the run
/// will write for the first time? Objects already recorded in the ApplySet were written by an
/// earlier run, so a no-op re-run asks nothing.
pub async fn authorize_writes(
    client: &Client,
    resolver: &Resolver,
    objects: &[Object],
    record: &ApplySetRecord,
    deadline: Option<Instant>,
) -> Result<(), Error> {
    let mut new: Vec<Object> = objects
        .iter()
        .filter(|o| !record.contains(o))
        .cloned()
        .collect();
    if !record.exists {
        new.push(applyset::parent_object());
    }
    if new.is_empty() {
        return Ok(());
    }
    let p = object_permissions(client, resolver, &new, deadline).await?;
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
    let answers: Vec<_> =
        apply::all_concurrently(rule_asks(rules).into_iter().map(|a| async move {
            let (verb, group, resource, name, url) = &a;
            let r = match url {
                Some(u) => can_get_url(client, verb, u).await,
                None => can_i(client, verb, group, resource, None, name.as_deref()).await,
            };
            (a, r)
        }))
        .await;
    let mut missing = Vec::new();
    for ((verb, group, resource, name, url), r) in answers {
        if r.map_err(review_error)? {
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

/// One access review per verb and resource (and resource name, or non-resource URL) of `rules`.
fn rule_asks(rules: &[PolicyRule]) -> Vec<Ask> {
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
    asks
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
    fn rules_become_one_review_per_verb_resource_and_name() {
        let rule = PolicyRule {
            api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
            resources: Some(vec!["clusterroles".into()]),
            resource_names: Some(vec!["a".into(), "b".into()]),
            verbs: vec!["escalate".into()],
            ..Default::default()
        };
        let url = PolicyRule {
            non_resource_urls: Some(vec!["/api".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        };
        let asks = rule_asks(&[rule, url]);
        assert_eq!(asks.len(), 3);
        assert_eq!(asks[1].3.as_deref(), Some("b"));
        assert_eq!(asks[2].4.as_deref(), Some("/api"));
    }

    #[test]
    fn denials_show_three_objects_then_a_count() {
        let d = Denial {
            verb: "create".into(),
            resource: "clusterroles.rbac.authorization.k8s.io".into(),
            namespace: None,
            objects: (1..=5).map(|i| format!("ClusterRole/r{i}")).collect(),
        };
        assert_eq!(
            d.describe(),
            "create clusterroles.rbac.authorization.k8s.io (ClusterRole/r1, ClusterRole/r2, ClusterRole/r3, +2 more)"
        );
    }
}
