//! The Gateway API test rig: the AKS-managed Gateway API CRDs and the approuting-istio controller, as stand-ins on the test control plane.
//!
//! - [`enable_gateway_api`] stands in for `az aks update --enable-gateway-api`: it applies the
//!   standard-channel CRDs of bundle v1.4.1 (what AKS installs on Kubernetes 1.35, our control
//!   plane), unchanged from `config/crd/standard` of the `sigs.k8s.io/gateway-api` Go module that
//!   `scripts/testenv-build` downloads (checked against testenv/gateway-api/go.sum) into the testenv
//!   cache, which `scripts/testenv exec` puts on PATH. They keep upstream's annotations
//!   `gateway.networking.k8s.io/bundle-version` and `.../channel`, and carry the label
//!   `app.kubernetes.io/managed-by: aks` that AKS puts on the CRDs it manages (design.md §10).
//! - [`AppRoutingIstio`] runs `approuting-istio-standin` (testenv/standins), the stand-in for the
//!   control plane `az aks update --enable-app-routing-istio` deploys: GatewayClass
//!   `approuting-istio`, and istiod in namespace `aks-istio-system` (which therefore is no sign of
//!   the mesh add-on).
//! - [`enable_istio_mesh_mark`] leaves one of what only the Istio service-mesh add-on puts in a
//!   cluster (GatewayClass `istio`, or an Istio CRD), which cannot coexist with the above.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::conditions;
use serde_json::json;

use crate::util::{Proc, TempDir, kubeconfig, standin_bin, wait_for};

const GROUP: &str = "gateway.networking.k8s.io";
/// The field manager the CRDs are applied with: the stand-in for AKS's add-on manager.
const AKS_MANAGER: &str = "aks-managed-standin";
/// The namespace where both application routing's istiod and the mesh add-on's run.
pub const ISTIO_NAMESPACE: &str = "aks-istio-system";

/// A Gateway API kind (v1).
pub fn gateway_api(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

/// The directory of the pinned CRD files (`gateway-api-crds` beside the testenv binaries on PATH).
fn crd_dir() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("gateway-api-crds"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| {
            panic!("no gateway-api-crds directory on PATH: `scripts/testenv build` fetches it, `scripts/testenv exec` puts it on PATH")
        })
}

/// The standard-channel CRDs of the pinned bundle, as upstream ships them.
fn gateway_api_crds() -> Vec<CustomResourceDefinition> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(crd_dir())
        .expect("read gateway-api-crds")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let crds: Vec<CustomResourceDefinition> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read CRD file");
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        })
        .collect();
    assert!(
        crds.iter()
            .any(|c| c.metadata.name.as_deref() == Some("gateways.gateway.networking.k8s.io")),
        "the bundle has the Gateway CRD"
    );
    crds
}

/// Stand-in for `az aks update --enable-gateway-api`: applies the CRDs and waits until each is Established.
pub async fn enable_gateway_api(c: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in gateway_api_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let mut data = serde_json::to_value(&crd).expect("CRD json");
        data["apiVersion"] = json!("apiextensions.k8s.io/v1");
        data["kind"] = json!("CustomResourceDefinition");
        // AKS labels the CRDs it manages (design.md §10); upstream's files carry no labels.
        data["metadata"]["labels"][gridos_setup::gateway::MANAGED_BY] =
            json!(gridos_setup::gateway::MANAGED_BY_AKS);
        crds.patch(
            &name,
            &PatchParams::apply(AKS_MANAGER).force(),
            &Patch::Apply(&data),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    }
    for crd in gateway_api_crds() {
        let name = crd.metadata.name.unwrap_or_default();
        wait_for(
            crds.clone(),
            &name,
            30,
            &format!("CRD {name} Established"),
            conditions::is_crd_established(),
        )
        .await;
    }
}

/// Removes the Gateway API objects, the GatewayClasses and the CRDs (the reverse of
/// [`enable_gateway_api`] and of the stand-in's GatewayClass), waiting until the CRDs are gone.
pub async fn disable_gateway_api(c: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let present: Vec<CustomResourceDefinition> = crds
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|crd| crd.spec.group == GROUP)
        .collect();
    if present.is_empty() {
        return;
    }
    for kind in ["HTTPRoute", "GRPCRoute", "Gateway", "GatewayClass"] {
        let ar = gateway_api(kind);
        let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
        if let Ok(list) = api.list(&ListParams::default()).await {
            for o in list.items {
                let ns_api: Api<DynamicObject> = match o.metadata.namespace.as_deref() {
                    Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
                    None => Api::all_with(c.clone(), &ar),
                };
                let _ = ns_api
                    .delete(
                        o.metadata.name.as_deref().unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
    }
    for crd in &present {
        let _ = crds
            .delete(
                crd.metadata.name.as_deref().unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
    for crd in present {
        delete_wait_crd(&crds, &crd.metadata.name.unwrap_or_default()).await;
    }
}

/// Waits until a deleted CRD is gone. The apiserver's CRD finalizer (1.35.4) drops a CRD deleted
/// seconds after it was created once its instance cleanup fails with "storage is (re)initializing"
/// (condition Terminating, reason InstanceDeletionFailed) and never retries by itself; any update
/// of the CRD queues it again, so the wait touches an annotation then.
async fn delete_wait_crd(crds: &Api<CustomResourceDefinition>, name: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let Ok(Some(crd)) = crds.get_opt(name).await else {
            return;
        };
        let stuck = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "Terminating" && c.reason.as_deref() == Some("InstanceDeletionFailed")
            });
        if stuck {
            let nudge = json!({"metadata": {"annotations": {"gridos-test/requeue": crate::util::unique_name("n")}}});
            let _ = crds
                .patch(name, &PatchParams::default(), &Patch::Merge(&nudge))
                .await;
        }
        assert!(
            std::time::Instant::now() < until,
            "CRD {name} not deleted after 60s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One thing only the Istio service-mesh add-on leaves in a cluster (Microsoft Learn, application
/// routing Gateway API, limitations: the two cannot be enabled together): GatewayClass `istio`
/// (the mesh's Gateway API class, Learn "Istio Gateway API") or the Istio CRDs
/// (`*.networking.istio.io`; one here). Application routing's meshless Istio has neither.
#[derive(Clone, Copy, Debug)]
pub enum MeshMark {
    Class,
    Crd,
}

const MESH_CRD: &str = "virtualservices.networking.istio.io";

/// Leaves `mark` in the cluster, as the mesh add-on would (manager `aks-istio-standin`).
pub async fn enable_istio_mesh_mark(c: &Client, mark: MeshMark) {
    let pp = PatchParams::apply("aks-istio-standin");
    match mark {
        MeshMark::Crd => {
            let crd = json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": MESH_CRD},
                "spec": {
                    "group": "networking.istio.io", "scope": "Namespaced",
                    "names": {"kind": "VirtualService", "plural": "virtualservices", "singular": "virtualservice", "listKind": "VirtualServiceList"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
                },
            });
            let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
            crds.patch(MESH_CRD, &pp, &Patch::Apply(&crd))
                .await
                .expect("Istio CRD");
        }
        MeshMark::Class => {
            let gc = json!({
                "apiVersion": format!("{GROUP}/v1"), "kind": "GatewayClass",
                "metadata": {"name": "istio"},
                "spec": {"controllerName": "istio.io/gateway-controller"},
            });
            Api::<DynamicObject>::all_with(c.clone(), &gateway_api("GatewayClass"))
                .patch("istio", &pp, &Patch::Apply(&gc))
                .await
                .expect("GatewayClass istio");
        }
    }
}

/// Removes what [`enable_istio_mesh_mark`] left (the namespace `aks-istio-system` goes with the
/// other install namespaces in `reset`).
pub async fn disable_istio_mesh_marks(c: &Client) {
    let dp = DeleteParams::default();
    let _ = Api::<DynamicObject>::all_with(c.clone(), &gateway_api("GatewayClass"))
        .delete("istio", &dp)
        .await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    if crds.get_opt(MESH_CRD).await.ok().flatten().is_some() {
        let _ = crds.delete(MESH_CRD, &dp).await;
        delete_wait_crd(&crds, MESH_CRD).await;
    }
}

/// The approuting-istio controller stand-in, running until dropped.
pub struct AppRoutingIstio {
    pub proc: Proc,
    _dir: TempDir,
}

impl AppRoutingIstio {
    /// Starts the stand-in and waits until the GatewayClass `approuting-istio` it creates is
    /// Accepted and its istiod is available (so that nothing in `aks-istio-system` still moves
    /// when a test compares the cluster before and after).
    pub async fn start(c: &Client) -> AppRoutingIstio {
        let dir = TempDir::new("approuting");
        let mut cmd = Command::new(standin_bin("approuting-istio-standin"));
        cmd.arg("--kubeconfig").arg(kubeconfig());
        let proc = Proc::spawn("approuting-istio-standin", &mut cmd, &dir.0);
        let me = AppRoutingIstio { proc, _dir: dir };
        let classes: Api<DynamicObject> = Api::all_with(c.clone(), &gateway_api("GatewayClass"));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(gc)) = classes.get_opt("approuting-istio").await
                && gc.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
                && istiod_available(c).await
            {
                return me;
            }
            assert!(
                std::time::Instant::now() < until,
                "GatewayClass approuting-istio not Accepted or istiod not available after 30s\n{}",
                me.proc.tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// Whether application routing's istiod (the stand-in's) is available with all its pods Running.
pub async fn istiod_available(c: &Client) -> bool {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let Ok(Some(d)) = Api::<Deployment>::namespaced(c.clone(), ISTIO_NAMESPACE)
        .get_opt("istiod")
        .await
    else {
        return false;
    };
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.unwrap_or_default();
    let settled = status.observed_generation == d.metadata.generation
        && status.available_replicas == Some(want)
        && status.updated_replicas == Some(want)
        && status.replicas == Some(want);
    let pods = Api::<Pod>::namespaced(c.clone(), ISTIO_NAMESPACE)
        .list(&ListParams::default().labels("app=istiod"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    settled
        && pods.len() == want as usize
        && pods
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
}

/// The status condition `type_` of an object, if it is set.
pub fn condition<'a>(o: &'a DynamicObject, type_: &str) -> Option<&'a serde_json::Value> {
    o.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
}

/// Whether a Gateway is Programmed for its current generation and has an address.
pub fn is_programmed(gw: &DynamicObject) -> bool {
    condition(gw, "Programmed").is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"].as_i64() == gw.metadata.generation
    }) && gw.data["status"]["addresses"][0]["value"].is_string()
}
