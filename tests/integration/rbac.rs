//! Least privilege: `gridos-setup rbac` prints a ClusterRole that covers every rendered kind; a token
//! user bound to exactly it can install, re-run and uninstall; without any one of its rules `check
//! --pre` names what is missing; without the right to create ClusterRoles install is refused before
//! its first write.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};

use crate::util::{
    client, cluster_lock, create_namespace, delete_namespace, gridos, gridos_as, ok, reset,
    sa_kubeconfig, stderr, stdout, unique_name,
};

const HOST: &str = "app.example.com";

/// The documents `gridos-setup rbac` printed.
fn rbac_docs(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["rbac"];
    all.extend_from_slice(args);
    let text = ok(&gridos(&all));
    text.split("---\n")
        .skip(1)
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{d}: {e}")))
        .collect()
}

fn rules_of(role: &serde_json::Value) -> Vec<PolicyRule> {
    serde_json::from_value(role["rules"].clone()).unwrap()
}

#[test]
fn rbac_prints_a_role_covering_every_rendered_kind() {
    let docs = rbac_docs(&[
        "--serviceaccount",
        "ci:deployer",
        "--user",
        "alice@example.com",
    ]);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "ClusterRole");
    assert_eq!(docs[1]["kind"], "ClusterRoleBinding");
    assert_eq!(docs[1]["roleRef"]["name"], gridos_setup::rbac::ROLE_NAME);
    let subjects = docs[1]["subjects"].as_array().unwrap();
    assert!(subjects.iter().any(|s| s["kind"] == "ServiceAccount"
        && s["namespace"] == "ci"
        && s["name"] == "deployer"));
    assert!(
        subjects
            .iter()
            .any(|s| s["kind"] == "User" && s["name"] == "alice@example.com")
    );
    let rules = rules_of(&docs[0]);
    let allows = |verb: &str, group: &str, resource: &str| {
        rules.iter().any(|r| {
            r.verbs.iter().any(|v| v == verb)
                && r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.resource_names.is_none()
        })
    };
    for profile in ["nginx", "appgw", "frontdoor"] {
        let rendered = ok(&gridos(&["render", "--profile", profile, "--host", HOST]));
        let docs_of_profile = rbac_docs(&["--profile", profile]);
        assert_eq!(docs_of_profile.len(), 1, "no binding without a subject");
        let profile_rules = rules_of(&docs_of_profile[0]);
        for doc in rendered.split("---\n").skip(1) {
            let o: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let av = o["apiVersion"].as_str().unwrap();
            let group = av.split_once('/').map(|(g, _)| g).unwrap_or("");
            let resource = gridos_setup::rbac::plural(av, o["kind"].as_str().unwrap());
            for verb in gridos_setup::rbac::WRITE_VERBS {
                assert!(
                    profile_rules
                        .iter()
                        .any(|r| r.verbs.iter().any(|v| v == verb)
                            && r.api_groups.iter().flatten().any(|g| g == group)
                            && r.resources.iter().flatten().any(|x| *x == resource)),
                    "{profile}: {verb} {resource}.{group}"
                );
            }
        }
    }
    // Reads besides the rendered kinds, and escalate/bind only on the rendered roles' names.
    assert!(allows("list", "", "pods") && allows("watch", "", "events"));
    assert!(allows("list", "", "configmaps") && allows("patch", "", "configmaps"));
    assert!(!allows(
        "escalate",
        "rbac.authorization.k8s.io",
        "clusterroles"
    ));
    let escalate = rules
        .iter()
        .find(|r| {
            r.verbs == ["escalate"]
                && r.resources.as_deref() == Some(&["clusterroles".to_string()][..])
        })
        .expect("escalate rule");
    assert!(
        escalate
            .resource_names
            .as_ref()
            .unwrap()
            .contains(&"flagger".to_string())
    );
    assert!(!rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")));
}

#[test]
fn rbac_refuses_a_malformed_serviceaccount() {
    let out = gridos(&["rbac", "--serviceaccount", "deployer"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("NAMESPACE:NAME"), "{err}");
}

/// Applies (as admin) the printed role with `rules` and its binding to ServiceAccount `ns:sa`.
async fn bind(c: &Client, ns: &str, sa: &str, rules: &[PolicyRule]) {
    let docs = rbac_docs(&["--serviceaccount", &format!("{ns}:{sa}")]);
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
    for mut doc in docs {
        if doc["kind"] == "ClusterRole" {
            doc["rules"] = serde_json::to_value(rules).unwrap();
        }
        let (ar, _) = resolver
            .resolve_gvk(
                "rbac.authorization.k8s.io/v1",
                doc["kind"].as_str().unwrap(),
            )
            .unwrap();
        Api::<DynamicObject>::all_with(c.clone(), &ar)
            .patch(
                gridos_setup::rbac::ROLE_NAME,
                &PatchParams::apply("test-admin").force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap();
    }
}

async fn unbind(c: &Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let dp = DeleteParams::default();
    let _ = Api::<ClusterRoleBinding>::all(c.clone())
        .delete(gridos_setup::rbac::ROLE_NAME, &dp)
        .await;
    let _ = Api::<ClusterRole>::all(c.clone())
        .delete(gridos_setup::rbac::ROLE_NAME, &dp)
        .await;
}

/// Asks (as admin) whether the ServiceAccount may do the first thing `rule` allows.
async fn sa_may(c: &Client, ns: &str, sa: &str, rule: &PolicyRule) -> bool {
    let first = |v: &Option<Vec<String>>| v.as_ref().and_then(|v| v.first().cloned());
    let verb = rule.verbs[0].clone();
    let spec = SubjectAccessReviewSpec {
        user: Some(format!("system:serviceaccount:{ns}:{sa}")),
        groups: Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ]),
        resource_attributes: rule
            .non_resource_urls
            .is_none()
            .then(|| ResourceAttributes {
                verb: Some(verb.clone()),
                group: first(&rule.api_groups),
                resource: first(&rule.resources),
                name: first(&rule.resource_names),
                ..Default::default()
            }),
        non_resource_attributes: rule
            .non_resource_urls
            .as_ref()
            .map(|u| NonResourceAttributes {
                verb: Some(verb.clone()),
                path: u.first().cloned(),
            }),
        ..Default::default()
    };
    let r = Api::<SubjectAccessReview>::all(c.clone())
        .create(
            &PostParams::default(),
            &SubjectAccessReview {
                spec,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    r.status.is_some_and(|s| s.allowed)
}

/// Waits until the authorizer has seen a role change (its cache follows the role by a watch).
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !cond().await {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rules that Kubernetes' bootstrap policy grants every authenticated user anyway.
fn granted_to_everyone(r: &PolicyRule) -> bool {
    r.non_resource_urls.is_some()
        || r.resources.as_deref() == Some(&["selfsubjectaccessreviews".to_string()][..])
}

/// How `check --pre` names the first permission of a rule.
fn named(r: &PolicyRule) -> String {
    let group = r
        .api_groups
        .as_ref()
        .and_then(|g| g.first())
        .cloned()
        .unwrap_or_default();
    let resource = r
        .resources
        .as_ref()
        .and_then(|g| g.first())
        .cloned()
        .unwrap_or_default();
    let q = if group.is_empty() {
        resource
    } else {
        format!("{resource}.{group}")
    };
    match r.resource_names.as_ref().and_then(|n| n.first()) {
        Some(n) => format!("{} {q}/{n}", r.verbs[0]),
        None => format!("{} {q}", r.verbs[0]),
    }
}

/// (id, resourceVersion) of everything an install would touch, to show a refused one touched nothing.
async fn snapshot(c: &Client) -> BTreeMap<String, String> {
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
    let mut out = BTreeMap::new();
    for (av, kind, ns) in [
        ("v1", "Namespace", None),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition", None),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", None),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            None,
        ),
        ("networking.k8s.io/v1", "IngressClass", None),
        ("v1", "ConfigMap", Some("kube-system")),
    ] {
        let (ar, _) = resolver.resolve_gvk(av, kind).unwrap();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
            None => Api::all_with(c.clone(), &ar),
        };
        for o in api.list(&ListParams::default()).await.unwrap().items {
            out.insert(
                format!("{kind}/{}", o.metadata.name.unwrap_or_default()),
                o.metadata.resource_version.unwrap_or_default(),
            );
        }
    }
    out
}

#[tokio::test]
async fn cluster_rbac_role_is_enough_for_install_rerun_and_uninstall() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let ns = unique_name("rbac-user");
    create_namespace(&c, &ns, &[]).await;
    let full = rules_of(&rbac_docs(&[])[0]);
    bind(&c, &ns, "installer", &full).await;
    let kc = sa_kubeconfig(&c, &ns, "installer").await;
    until("the role to apply", async || {
        sa_may(&c, &ns, "installer", &full[0]).await
    })
    .await;

    ok(&gridos_as(&kc, &["check", "--pre"]));
    let install = ["install", "--profile", "nginx", "--host", HOST, "--yes"];
    let first = ok(&gridos_as(&kc, &install));
    assert!(
        first.contains("Ingress address (public): 203.0.113."),
        "{first}"
    );
    let again = ok(&gridos_as(&kc, &install));
    assert!(
        again.contains(" 0 created, 0 configured,")
            || again.starts_with("0 created, 0 configured,"),
        "{again}"
    );
    ok(&gridos_as(&kc, &["status"]));
    ok(&gridos_as(&kc, &["check"]));
    let gone = ok(&gridos_as(&kc, &["uninstall", "--yes"]));
    assert!(
        gone.contains("Deployment/ingress-nginx/ingress-nginx-controller deleted"),
        "{gone}"
    );

    unbind(&c).await;
    delete_namespace(&c, &ns).await;
    let _ = std::fs::remove_file(&kc);
    reset(&c).await;
}

#[tokio::test]
async fn cluster_rbac_check_pre_names_each_missing_rule() {
    let _lock = cluster_lock().await;
    let c = client().await;
    let ns = unique_name("rbac-rules");
    create_namespace(&c, &ns, &[]).await;
    let full = rules_of(&rbac_docs(&[])[0]);
    bind(&c, &ns, "partial", &full).await;
    let kc = sa_kubeconfig(&c, &ns, "partial").await;
    let t = Instant::now();
    let mut previous: Option<usize> = None;
    let mut named_missing = 0;
    for (i, rule) in full.iter().enumerate() {
        let mut fewer = full.clone();
        fewer.remove(i);
        bind(&c, &ns, "partial", &fewer).await;
        if !granted_to_everyone(rule) {
            until(&format!("rule {i} to be gone"), async || {
                !sa_may(&c, &ns, "partial", rule).await
            })
            .await;
        }
        if let Some(p) = previous.filter(|p| !granted_to_everyone(&full[*p])) {
            until(&format!("rule {p} to be back"), async || {
                sa_may(&c, &ns, "partial", &full[p]).await
            })
            .await;
        }
        previous = Some(i);
        let out = gridos_as(&kc, &["check", "--pre"]);
        let text = stdout(&out);
        if granted_to_everyone(rule) {
            // The bootstrap policy still grants it: nothing is missing.
            assert_eq!(out.status.code(), Some(0), "rule {i} {rule:?}:\n{text}");
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "rule {i} {rule:?}:\n{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("[FAIL] permissions (rbac): missing: "))
            .unwrap_or_else(|| panic!("rule {i} {rule:?}:\n{text}"));
        assert!(line.contains(&named(rule)), "{} in {line}", named(rule));
        assert!(
            text.contains(&format!(
                "hint: have a cluster admin bind the ClusterRole {}",
                gridos_setup::rbac::ROLE_NAME
            )),
            "{text}"
        );
        named_missing += 1;
    }
    eprintln!(
        "{} rules, {named_missing} named when missing, in {:?}",
        full.len(),
        t.elapsed()
    );
    assert!(named_missing >= full.len() - 2);
    unbind(&c).await;
    delete_namespace(&c, &ns).await;
    let _ = std::fs::remove_file(&kc);
}

#[tokio::test]
async fn cluster_install_without_clusterrole_rights_is_refused_before_any_write() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let ns = unique_name("rbac-limited");
    create_namespace(&c, &ns, &[]).await;
    let full = rules_of(&rbac_docs(&[])[0]);
    let without: Vec<PolicyRule> = full
        .iter()
        .filter(|r| {
            !(r.resources.as_deref() == Some(&["clusterroles".to_string()][..])
                && r.resource_names.is_none())
        })
        .cloned()
        .collect();
    assert_eq!(without.len(), full.len() - 1);
    bind(&c, &ns, "limited", &without).await;
    let kc = sa_kubeconfig(&c, &ns, "limited").await;
    let probe = PolicyRule {
        api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
        resources: Some(vec!["clusterroles".into()]),
        verbs: vec!["create".into()],
        ..Default::default()
    };
    until("the role to apply", async || {
        sa_may(&c, &ns, "limited", &full[0]).await
    })
    .await;
    assert!(!sa_may(&c, &ns, "limited", &probe).await);

    let pre = gridos_as(&kc, &["check", "--pre"]);
    assert_eq!(pre.status.code(), Some(1));
    let text = stdout(&pre);
    let line = text
        .lines()
        .find(|l| l.starts_with("[FAIL] permissions (objects): forbidden: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("clusterroles.rbac.authorization.k8s.io (ClusterRole/"),
        "{line}"
    );

    let before = snapshot(&c).await;
    let out = gridos_as(
        &kc,
        &["install", "--profile", "nginx", "--host", HOST, "--yes"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: forbidden: this user may not "),
        "{err}"
    );
    assert!(
        last.contains("clusterroles.rbac.authorization.k8s.io (ClusterRole/"),
        "{last}"
    );
    assert!(last.contains("nothing was written"), "{last}");
    assert!(
        last.contains(&format!(
            "bind the ClusterRole {}",
            gridos_setup::rbac::ROLE_NAME
        )),
        "{last}"
    );
    assert!(
        last.contains("gridos-setup rbac --user NAME | kubectl apply -f -"),
        "{last}"
    );
    assert_eq!(
        snapshot(&c).await,
        before,
        "the refused install wrote nothing"
    );

    unbind(&c).await;
    delete_namespace(&c, &ns).await;
    let _ = std::fs::remove_file(&kc);
}
