//! The prerequisites of `traffic.layer: gateway-api`, which AKS provides and gridos-setup only checks: the Gateway API CRDs, GatewayClass `approuting-istio`, and no Istio service-mesh add-on.
//!
//! Facts (Microsoft Learn, "Install Managed Gateway API CRDs on AKS" and "Configure ingress with
//! the Kubernetes Gateway API via the application routing add-on"): the managed Gateway API needs
//! an implementing add-on enabled before or together with it, so one call enables both
//! ([`FIX_ENABLE`]); it installs the standard-channel CRDs at the bundle version AKS maps to the
//! cluster's Kubernetes version (v1.4.x on 1.35, v1.5.x on 1.36 when this was written), labelled
//! `app.kubernetes.io/managed-by: aks` (design.md §10), and refuses experimental-channel CRDs.
//! Application routing's Istio creates GatewayClass `approuting-istio` and runs its own istiod in
//! namespace `aks-istio-system` ("verify the istiod pods" after enabling), so that namespace says
//! nothing about the Istio service-mesh add-on, which cannot run next to it; only the mesh add-on
//! has GatewayClass `istio` and the Istio CRDs (`*.istio.io`; application routing installs none).
//! Upstream CRDs carry the annotations `gateway.networking.k8s.io/bundle-version` and
//! `gateway.networking.k8s.io/channel`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};

use crate::error::Error;
use crate::report::{Check, Mark, fail, pass, warn};

/// The GatewayClass AKS application routing creates (see [`crate::render::GATEWAY_CLASS`]).
const CLASS: &str = crate::render::GATEWAY_CLASS;
const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";
const CHANNEL: &str = "gateway.networking.k8s.io/channel";
/// The CRDs gridos-setup's objects and Flagger's gatewayapi:v1 provider use.
const CRDS: [&str; 3] = [
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
];
/// The service-mesh add-on's GatewayClass.
const MESH_CLASS: &str = "istio";
/// The API group suffix of Istio's own CRDs (`networking.istio.io`, `security.istio.io`, ...),
/// which the mesh add-on installs and application routing's meshless Istio does not.
const MESH_CRD_SUFFIX: &str = ".istio.io";
/// The label AKS puts on the Gateway API CRDs it manages (design.md §10).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_AKS: &str = "aks";

/// The one `az aks update` that enables the managed Gateway API together with its implementation,
/// as Learn ("managed Gateway API") requires: the implementing add-on before or in the same call
/// as `--enable-gateway-api`. A macro so that every text naming it (the hints here, the picker,
/// the retirement warning) is built from this one literal at compile time.
#[macro_export]
macro_rules! gateway_enable_command {
    () => {
        "az aks update -g RESOURCE_GROUP -n CLUSTER --enable-gateway-api --enable-app-routing-istio"
    };
}
pub const FIX_ENABLE: &str = gateway_enable_command!();
/// The CRDs are missing: the same one call (it is idempotent for an add-on already enabled).
pub const FIX_CRDS: &str = FIX_ENABLE;
pub const FIX_CLASS: &str = "az aks approuting gateway istio enable -g RESOURCE_GROUP -n CLUSTER";
pub const FIX_MESH: &str = "az aks mesh disable -g RESOURCE_GROUP -n CLUSTER";

/// The bundle minor version (`1.4`) AKS installs for a Kubernetes minor, where known.
pub fn aks_bundle_for(kube_minor: u32) -> Option<&'static str> {
    match kube_minor {
        35 => Some("1.4"),
        36 => Some("1.5"),
        _ => None,
    }
}

fn gateway_class_resource() -> ApiResource {
    ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        plural: "gatewayclasses".into(),
    }
}

/// The `major.minor` of a bundle version (`1.4` of `v1.4.1`), empty when it has no such shape.
fn bundle_minor(version: &str) -> String {
    let mut parts = version.trim_start_matches('v').split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}.{b}"),
        _ => String::new(),
    }
}

/// Whether a CRD carries AKS's managed-by label.
pub fn aks_managed(crd: &CustomResourceDefinition) -> bool {
    crd.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY_AKS)
}

fn annotation(c: &CustomResourceDefinition, key: &str) -> String {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

/// The hint for CRDs AKS did not install: replace them with the managed ones.
fn replace_hint() -> String {
    format!(
        "delete the self-installed Gateway API CRDs (`kubectl delete crd {}` and the bundle's others), then run `{FIX_CRDS}`",
        CRDS.join(" ")
    )
}

/// What refuses CRDs outright, since AKS never installs it: a channel other than standard, or a
/// mix of bundles. `None` when neither; else the failed check.
fn refuse_foreign(crds: &[(&str, &CustomResourceDefinition)], name: &str) -> Option<Check> {
    if let Some((n, c)) = crds
        .iter()
        .find(|(_, c)| annotation(c, CHANNEL) != "standard")
    {
        let channel = annotation(c, CHANNEL);
        let channel = if channel.is_empty() {
            "no channel annotation".to_string()
        } else {
            format!("channel {channel}")
        };
        return Some(fail(
            name,
            format!("{n} has {channel}: AKS manages only the standard channel and refuses others"),
            replace_hint(),
        ));
    }
    let versions: Vec<String> = crds
        .iter()
        .map(|(_, c)| annotation(c, BUNDLE_VERSION))
        .collect();
    let first = versions.first().cloned().unwrap_or_default();
    versions.iter().any(|v| *v != first).then(|| {
        fail(
            name,
            format!(
                "the CRDs come from different bundles ({}): not one AKS-managed installation",
                versions.join(", ")
            ),
            replace_hint(),
        )
    })
}

/// Judges the CRDs as read (`None`: not found) against what AKS installs on `kube_minor`.
/// A wrong channel or a mix of bundles refuses (AKS never installs either); a bundle other than
/// the built-in table's, or CRDs without AKS's label, only warn: the table is ours and AKS moves
/// on (a newer patch or minor reaches clusters before gridos-setup knows it).
pub fn judge_crds(found: &[(&str, Option<CustomResourceDefinition>)], kube_minor: u32) -> Check {
    const NAME: &str = "Gateway API CRDs";
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| *n)
        .collect();
    if !missing.is_empty() {
        return fail(
            NAME,
            format!(
                "missing {}: AKS installs and manages the Gateway API CRDs",
                missing.join(", ")
            ),
            format!("run `{FIX_CRDS}`"),
        );
    }
    let crds: Vec<(&str, &CustomResourceDefinition)> = found
        .iter()
        .filter_map(|(n, c)| c.as_ref().map(|c| (*n, c)))
        .collect();
    if let Some(refused) = refuse_foreign(&crds, NAME) {
        return refused;
    }
    let version = crds
        .first()
        .map(|(_, c)| annotation(c, BUNDLE_VERSION))
        .unwrap_or_default();
    let unlabelled: Vec<&str> = crds
        .iter()
        .filter(|(_, c)| !aks_managed(c))
        .map(|(n, _)| *n)
        .collect();
    let shown = if version.is_empty() {
        "no bundle-version annotation".to_string()
    } else {
        format!("bundle {version}")
    };
    let mut notes = Vec::new();
    match aks_bundle_for(kube_minor) {
        None => notes.push(format!(
            "gridos-setup knows the bundle AKS installs only for Kubernetes 1.35 (v1.4.x) and 1.36 (v1.5.x), not 1.{kube_minor}, so the version is not checked"
        )),
        Some(expected) if bundle_minor(&version) != expected => notes.push(format!(
            "gridos-setup's table says AKS installs v{expected}.x on Kubernetes 1.{kube_minor}; continuing, since AKS may have moved on"
        )),
        Some(_) => {}
    }
    if !unlabelled.is_empty() {
        notes.push(format!(
            "{} without the label {MANAGED_BY}={MANAGED_BY_AKS} that AKS puts on the CRDs it manages: self-installed? AKS supports its Gateway API implementation only on its managed CRDs",
            unlabelled.join(", ")
        ));
    }
    if notes.is_empty() {
        return pass(
            NAME,
            format!(
                "standard channel, {shown}, labelled {MANAGED_BY}={MANAGED_BY_AKS}, as AKS installs on Kubernetes 1.{kube_minor}"
            ),
        );
    }
    warn(
        NAME,
        format!("standard channel, {shown}; {}", notes.join("; ")),
        (!unlabelled.is_empty()).then(replace_hint),
    )
}

/// Judges GatewayClass `approuting-istio` as read.
pub fn judge_class(class: Option<&DynamicObject>) -> Check {
    const NAME: &str = "GatewayClass approuting-istio";
    let Some(gc) = class else {
        return fail(
            NAME,
            "GatewayClass approuting-istio does not exist: application routing's Gateway API implementation is not enabled",
            format!("run `{FIX_CLASS}`"),
        );
    };
    let generation = gc.metadata.generation;
    let accepted = gc.data["status"]["conditions"].as_array().and_then(|cs| {
        cs.iter().find(|c| {
            c["type"] == "Accepted"
                && match (c["observedGeneration"].as_i64(), generation) {
                    (Some(seen), Some(g)) => seen >= g,
                    _ => true,
                }
        })
    });
    match accepted {
        Some(c) if c["status"] == "True" => pass(NAME, "exists and is Accepted"),
        Some(c) => fail(
            NAME,
            format!(
                "not Accepted ({}: {})",
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            ),
            format!("see `kubectl describe gatewayclass {CLASS}`; re-enable it with `{FIX_CLASS}`"),
        ),
        None => fail(
            NAME,
            "not Accepted yet: no controller has taken it",
            format!(
                "wait for application routing to accept it (`kubectl get gatewayclass {CLASS}`), or re-enable it with `{FIX_CLASS}`"
            ),
        ),
    }
}

/// Judges whether the Istio service-mesh add-on is present, by what only it has: GatewayClass
/// `istio` (`mesh_class`) and Istio's own CRDs (`mesh_crds`). Namespace `aks-istio-system` is no
/// sign of it: application routing's istiod runs there too.
pub fn judge_mesh(mesh_class: bool, mesh_crds: &[String]) -> Check {
    const NAME: &str = "Istio service-mesh add-on";
    let mut found = Vec::new();
    if mesh_class {
        found.push(format!("GatewayClass {MESH_CLASS}"));
    }
    match mesh_crds {
        [] => {}
        [one] => found.push(format!("CRD {one}")),
        [first, rest @ ..] => found.push(format!("CRD {first} and {} more", rest.len())),
    }
    if found.is_empty() {
        pass(
            NAME,
            "not installed (it cannot run next to application routing's Gateway API)",
        )
    } else {
        fail(
            NAME,
            format!(
                "present ({}): AKS does not support application routing's Gateway API next to the Istio service-mesh add-on",
                found.join(", ")
            ),
            format!("run `{FIX_MESH}`, or keep --traffic ingress-nginx"),
        )
    }
}

/// The names of Istio's own CRDs (`<plural>.<group>`, group `*.istio.io`), read as metadata only.
async fn mesh_crds(client: &Client) -> Result<Vec<String>, kube::Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let list = crds.list_metadata(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.ends_with(MESH_CRD_SUFFIX))
        .collect())
}

fn read_error(name: &str, what: &str, e: &kube::Error) -> Check {
    fail(
        name,
        format!("cannot read {what}: {e}"),
        crate::permissions::bind_hint(),
    )
}

/// Reads and judges every prerequisite; one report line each.
pub async fn checks(client: &Client, kube_minor: u32) -> Vec<Check> {
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut found = Vec::new();
    let mut crd_check = None;
    for name in CRDS {
        match crd_api.get_opt(name).await {
            Ok(c) => found.push((name, c)),
            Err(e) => {
                crd_check = Some(read_error("Gateway API CRDs", &format!("CRD {name}"), &e));
                break;
            }
        }
    }
    let crd_check = crd_check.unwrap_or_else(|| judge_crds(&found, kube_minor));
    let classes_served = found.first().is_some_and(|(_, c)| c.is_some());
    let class_api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_class_resource());
    let (class_check, mesh_class) = if classes_served {
        let class = match class_api.get_opt(CLASS).await {
            Ok(c) => judge_class(c.as_ref()),
            Err(e) => read_error("GatewayClass approuting-istio", "GatewayClasses", &e),
        };
        let mesh = matches!(class_api.get_opt(MESH_CLASS).await, Ok(Some(_)));
        (class, mesh)
    } else {
        (judge_class(None), false)
    };
    let mesh_check = match mesh_crds(client).await {
        Ok(crds) => judge_mesh(mesh_class, &crds),
        Err(e) => read_error("Istio service-mesh add-on", "CRDs", &e),
    };
    vec![crd_check, class_check, mesh_check]
}

/// The Kubernetes minor version the server reports (`35` of 1.35), 0 when unreadable.
pub fn server_minor(info: &k8s_openapi::apimachinery::pkg::version::Info) -> u32 {
    info.minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// The server's minor version: from the connection when it asked `/version`, else asked now
/// (one request, on the Gateway API path only: the bundle AKS installs depends on it).
pub async fn kube_minor(cluster: &crate::cluster::Cluster) -> Result<u32, Error> {
    if let Some(info) = &cluster.version {
        return Ok(server_minor(info));
    }
    let info = cluster
        .client
        .apiserver_version()
        .await
        .map_err(|e| Error::Api {
            context: "reading the server's version (/version)".into(),
            source: e,
        })?;
    Ok(server_minor(&info))
}

/// For install: the first failed prerequisite as the error that stops it before any write.
pub async fn require(client: &Client, kube_minor: u32) -> Result<Vec<Check>, Error> {
    let checks = checks(client, kube_minor).await;
    match checks.iter().find(|c| c.result == Mark::Fail) {
        Some(c) => Err(Error::Preflight {
            problem: format!("{}: {}", c.name, c.detail),
            hint: c.hint.clone().unwrap_or_default(),
        }),
        None => Ok(checks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(channel: Option<&str>, version: Option<&str>) -> CustomResourceDefinition {
        let mut a = serde_json::Map::new();
        if let Some(c) = channel {
            a.insert(CHANNEL.into(), c.into());
        }
        if let Some(v) = version {
            a.insert(BUNDLE_VERSION.into(), v.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "annotations": a, "labels": {MANAGED_BY: MANAGED_BY_AKS}},
            "spec": {"group": "gateway.networking.k8s.io", "names": {"kind": "X", "plural": "xs"},
                     "scope": "Namespaced", "versions": []}
        }))
        .unwrap()
    }

    fn unlabelled(mut c: CustomResourceDefinition) -> CustomResourceDefinition {
        c.metadata.labels = None;
        c
    }

    fn all(c: CustomResourceDefinition) -> Vec<(&'static str, Option<CustomResourceDefinition>)> {
        CRDS.iter().map(|n| (*n, Some(c.clone()))).collect()
    }

    #[test]
    fn the_crds_must_be_the_standard_bundle_aks_ships_for_the_version() {
        let ok = judge_crds(&all(crd(Some("standard"), Some("v1.4.1"))), 35);
        assert_eq!(ok.result, Mark::Pass, "{ok:?}");
        assert!(ok.detail.contains("managed-by=aks"), "{ok:?}");
        let ok = judge_crds(&all(crd(Some("standard"), Some("v1.5.1"))), 36);
        assert_eq!(ok.result, Mark::Pass, "{ok:?}");

        let missing = judge_crds(&[(CRDS[0], None), (CRDS[1], None), (CRDS[2], None)], 35);
        assert_eq!(missing.result, Mark::Fail);
        assert!(missing.hint.unwrap().contains(FIX_ENABLE));

        let experimental = judge_crds(&all(crd(Some("experimental"), Some("v1.4.1"))), 35);
        assert_eq!(experimental.result, Mark::Fail);
        assert!(experimental.detail.contains("channel experimental"));
        assert!(experimental.hint.unwrap().contains("--enable-gateway-api"));

        let unannotated = judge_crds(&all(crd(None, None)), 35);
        assert_eq!(unannotated.result, Mark::Fail);

        let older_cluster = judge_crds(&all(crd(Some("standard"), Some("v1.3.0"))), 33);
        assert_eq!(older_cluster.result, Mark::Warn);
        assert!(older_cluster.detail.contains("not 1.33"));
    }

    /// A bundle other than the built-in table's is AKS moving on, not a reason to refuse.
    #[test]
    fn a_bundle_other_than_the_table_warns_and_does_not_refuse() {
        for (bundle, minor) in [("v1.2.0", 35), ("v1.5.0", 35), ("v1.4.1", 36)] {
            let c = judge_crds(&all(crd(Some("standard"), Some(bundle))), minor);
            assert_eq!(c.result, Mark::Warn, "{bundle} on 1.{minor}: {c:?}");
            assert!(c.detail.contains(&format!("bundle {bundle}")), "{c:?}");
            assert!(c.detail.contains("table says"), "{c:?}");
            assert_eq!(c.hint, None, "AKS-labelled CRDs need no replacing: {c:?}");
        }
    }

    /// AKS's label tells its CRDs from self-installed ones; without it the check says so.
    #[test]
    fn crds_without_the_aks_label_warn_as_self_installed() {
        let c = judge_crds(&all(unlabelled(crd(Some("standard"), Some("v1.4.1")))), 35);
        assert_eq!(c.result, Mark::Warn, "{c:?}");
        assert!(
            c.detail.contains("app.kubernetes.io/managed-by=aks"),
            "{c:?}"
        );
        assert!(c.detail.contains("self-installed"), "{c:?}");
        assert!(c.hint.unwrap().contains("kubectl delete crd"));
    }

    fn class(conditions: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": CLASS, "generation": 2},
            "spec": {"controllerName": "example.net/x"},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn the_class_must_exist_and_be_accepted_for_its_generation() {
        assert!(judge_class(None).hint.unwrap().contains(FIX_CLASS));
        let ok = class(
            serde_json::json!([{"type": "Accepted", "status": "True", "observedGeneration": 2}]),
        );
        assert_eq!(judge_class(Some(&ok)).result, Mark::Pass);
        let old = class(
            serde_json::json!([{"type": "Accepted", "status": "True", "observedGeneration": 1}]),
        );
        assert_eq!(judge_class(Some(&old)).result, Mark::Fail);
        let no = class(
            serde_json::json!([{"type": "Accepted", "status": "False", "reason": "InvalidParameters", "message": "bad", "observedGeneration": 2}]),
        );
        let c = judge_class(Some(&no));
        assert_eq!(c.result, Mark::Fail);
        assert!(c.detail.contains("InvalidParameters"));
    }

    #[test]
    fn the_mesh_add_on_is_refused_with_the_command_that_removes_it() {
        assert_eq!(judge_mesh(false, &[]).result, Mark::Pass);
        let crds = ["virtualservices.networking.istio.io".to_string()];
        for (gc, crds) in [(true, &[][..]), (false, &crds[..]), (true, &crds[..])] {
            let c = judge_mesh(gc, crds);
            assert_eq!(c.result, Mark::Fail);
            assert!(c.hint.unwrap().contains("az aks mesh disable"));
        }
        assert!(
            judge_mesh(false, &crds)
                .detail
                .contains("CRD virtualservices.networking.istio.io")
        );
    }
}
