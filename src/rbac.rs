//! `gridos-setup rbac`: the least-privilege ClusterRole (and binding) that install, re-run, status and uninstall need, derived from the rendered objects.
//!
//! The rules come from two places: every kind the render produces (written with server-side apply,
//! read, watched while waiting, deleted by prune and uninstall) and a fixed list of reads the tool
//! does besides ([`EXTRA_READS`], uninstall's content scan). Creating ClusterRoles and Roles whose
//! rules the installer does not hold itself needs `escalate`, and binding them needs `bind`; both are
//! granted only on the role names the render produces.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::core::{ApiResource, GroupVersionKind};

use crate::profile::{Toggle, Values};
use crate::render::Object;

/// The name of the printed ClusterRole and ClusterRoleBinding.
pub const ROLE_NAME: &str = "gridos-setup-installer";

/// Everything done to a rendered kind: apply (patch, and create when it is new), the reads of
/// apply, plan and status (get), waits and uninstall's wait for deletion (watch, list), prune and
/// uninstall (delete).
pub const WRITE_VERBS: [&str; 6] = ["get", "list", "watch", "create", "patch", "delete"];

/// Reads outside the rendered kinds: (group, resource, verbs, why).
pub const EXTRA_READS: [(&str, &str, &[&str], &str); 4] = [
    (
        "",
        "pods",
        &["get", "list", "watch"],
        "a stuck rollout names its newest pod's waiting reason",
    ),
    (
        "",
        "events",
        &["get", "list", "watch"],
        "waits report Warning events (load balancer, rollout)",
    ),
    (
        "apps",
        "replicasets",
        &["get", "list", "watch"],
        "rollout diagnostics follow a Deployment to its pods",
    ),
    (
        "apps",
        "daemonsets",
        &["list"],
        "check looks for a network policy engine's DaemonSet (Azure NPM, Calico, Cilium)",
    ),
];

/// Discovery paths: granted to every authenticated user by the bootstrap role `system:discovery`
/// on most clusters, listed so the role also works where that binding was tightened.
pub const DISCOVERY_URLS: [&str; 5] = ["/api", "/api/*", "/apis", "/apis/*", "/version"];

/// The plural resource name of a kind, as RBAC rules name it.
pub fn plural(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind)).plural
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map(|(g, _)| g).unwrap_or("")
}

/// The rules install, re-run, status and uninstall need for these rendered objects and values.
///
/// One rule per resource, so a missing permission is named by resource; `escalate` and `bind` rules
/// carry the exact role names.
pub fn rules(objects: &[Object], values: &Values) -> Vec<PolicyRule> {
    let mut verbs: BTreeMap<(String, String), BTreeSet<&'static str>> = BTreeMap::new();
    let mut add = |group: &str, resource: String, vs: &[&'static str]| {
        verbs
            .entry((group.to_string(), resource))
            .or_default()
            .extend(vs.iter().copied());
    };
    for o in objects {
        let group = group_of(o.api_version());
        add(group, plural(o.api_version(), o.kind()), &WRITE_VERBS);
        // `auto` picks the ServiceMonitor group on the cluster at install time: allow both.
        if o.kind() == "ServiceMonitor" && values.service_monitor.enabled == Toggle::Auto {
            for g in crate::profile::SERVICE_MONITOR_GROUPS {
                add(g, "servicemonitors".into(), &WRITE_VERBS);
            }
        }
    }
    // The ApplySet record ConfigMap in kube-system (read with a list, written with apply).
    add("", "configmaps".into(), &WRITE_VERBS);
    for (group, resource, vs, _) in EXTRA_READS {
        add(group, resource.into(), vs);
    }
    // The Gateway API layer's prerequisites (see `gateway`): GatewayClasses approuting-istio and
    // istio are read; the CRDs and namespaces are already readable as rendered kinds.
    if objects.iter().any(|o| o.kind() == "Gateway") {
        add(
            "gateway.networking.k8s.io",
            "gatewayclasses".into(),
            &["get"],
        );
    }
    // uninstall lists these in a namespace before deleting it, to keep one that holds foreign objects.
    for (group, version, kind) in crate::uninstall::CONTENT_KINDS {
        let av = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        add(group, plural(&av, kind), &["list"]);
    }
    let mut out: Vec<PolicyRule> = verbs
        .into_iter()
        .map(|((group, resource), vs)| PolicyRule {
            api_groups: Some(vec![group]),
            resources: Some(vec![resource]),
            verbs: vs.into_iter().map(String::from).collect(),
            ..Default::default()
        })
        .collect();
    out.extend(role_rules(objects));
    // The run lock (see `lock`): its one Lease by name; RBAC cannot limit create to a name or a
    // ClusterRole to a namespace, so create is the one lease verb not tied to the lock's Lease.
    // watch: a waiting run watches the Lease (by name) instead of polling it.
    out.push(PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        resource_names: Some(vec![crate::lock::LEASE_NAME.into()]),
        verbs: ["get", "watch", "update", "delete"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    out.push(PolicyRule {
        api_groups: Some(vec!["coordination.k8s.io".into()]),
        resources: Some(vec!["leases".into()]),
        verbs: vec!["create".into()],
        ..Default::default()
    });
    // The pre-write permission check asks the API server what this user may do.
    out.push(PolicyRule {
        api_groups: Some(vec!["authorization.k8s.io".into()]),
        resources: Some(vec!["selfsubjectaccessreviews".into()]),
        verbs: vec!["create".into()],
        ..Default::default()
    });
    out.push(PolicyRule {
        non_resource_urls: Some(DISCOVERY_URLS.iter().map(|s| s.to_string()).collect()),
        verbs: vec!["get".into()],
        ..Default::default()
    });
    out
}

/// `escalate` on exactly the Roles and ClusterRoles the render creates, `bind` on exactly the roles
/// its bindings refer to.
fn role_rules(objects: &[Object]) -> Vec<PolicyRule> {
    let mut escalate: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut bind: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for o in objects {
        match o.kind() {
            "ClusterRole" => {
                escalate
                    .entry("clusterroles")
                    .or_default()
                    .insert(o.name().into());
            }
            "Role" => {
                escalate.entry("roles").or_default().insert(o.name().into());
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                let name = o.data["roleRef"]["name"].as_str().unwrap_or_default();
                let resource = match o.data["roleRef"]["kind"].as_str() {
                    Some("Role") => "roles",
                    _ => "clusterroles",
                };
                bind.entry(resource).or_default().insert(name.into());
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (verb, map) in [("escalate", escalate), ("bind", bind)] {
        for (resource, names) in map {
            out.push(PolicyRule {
                api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
                resources: Some(vec![resource.into()]),
                resource_names: Some(names.into_iter().collect()),
                verbs: vec![verb.into()],
                ..Default::default()
            });
        }
    }
    out
}

/// Who the printed binding binds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subjects {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// (namespace, name) of ServiceAccounts.
    pub service_accounts: Vec<(String, String)>,
}

impl Subjects {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.service_accounts.is_empty()
    }

    fn to_k8s(&self) -> Vec<Subject> {
        let rbac = Some("rbac.authorization.k8s.io".to_string());
        let mut out = Vec::new();
        for u in &self.users {
            out.push(Subject {
                kind: "User".into(),
                name: u.clone(),
                api_group: rbac.clone(),
                namespace: None,
            });
        }
        for g in &self.groups {
            out.push(Subject {
                kind: "Group".into(),
                name: g.clone(),
                api_group: rbac.clone(),
                namespace: None,
            });
        }
        for (ns, name) in &self.service_accounts {
            out.push(Subject {
                kind: "ServiceAccount".into(),
                name: name.clone(),
                api_group: None,
                namespace: Some(ns.clone()),
            });
        }
        out
    }
}

/// The ClusterRole and, with subjects, its ClusterRoleBinding.
pub fn objects(rules: Vec<PolicyRule>, subjects: &Subjects) -> Vec<serde_json::Value> {
    let meta = || kube::api::ObjectMeta {
        name: Some(ROLE_NAME.into()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            "gridos-setup".to_string(),
        )])),
        ..Default::default()
    };
    let role = ClusterRole {
        metadata: meta(),
        rules: Some(rules),
        ..Default::default()
    };
    let mut out = vec![with_type(&role, "ClusterRole")];
    if !subjects.is_empty() {
        let binding = ClusterRoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: ROLE_NAME.into(),
            },
            subjects: Some(subjects.to_k8s()),
        };
        out.push(with_type(&binding, "ClusterRoleBinding"));
    }
    out
}

fn with_type<T: serde::Serialize>(o: &T, kind: &str) -> serde_json::Value {
    let mut v = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind});
    if let (Some(m), Ok(serde_json::Value::Object(body))) =
        (v.as_object_mut(), serde_json::to_value(o))
    {
        m.extend(body);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_match_the_api_servers() {
        for (av, kind, want) in [
            ("v1", "Namespace", "namespaces"),
            ("networking.k8s.io/v1", "IngressClass", "ingressclasses"),
            ("flagger.app/v1beta1", "Canary", "canaries"),
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
            ),
            (
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
            ),
            (
                "monitoring.coreos.com/v1",
                "ServiceMonitor",
                "servicemonitors",
            ),
            ("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
        ] {
            assert_eq!(plural(av, kind), want, "{kind}");
        }
    }
}
