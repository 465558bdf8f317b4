//! `status` and `uninstall` on the test control plane.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::util::{client, cluster_lock, gridos_k, ok, reset, stderr};

#[tokio::test]
async fn cluster_status_lists_every_component_ready_and_the_canary() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    ok(&gridos_k(&[
        "install",
        "--profile",
        "appgw",
        "--host",
        "app.example.com",
        "--yes",
    ]));
    let text = ok(&gridos_k(&["status", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["installed"], true);
    let components = v["components"].as_array().unwrap();
    assert_eq!(components.len(), 5, "{components:?}");
    assert!(
        components
            .iter()
            .any(|c| c["deployment"] == "flagger-system/grafana"),
        "{components:?}"
    );
    assert!(
        components
            .iter()
            .all(|c| c["rolled_out"] == true && c["ready"] == c["desired"]),
        "{components:?}"
    );
    assert!(
        v["address"].as_str().unwrap().starts_with("198.51.100."),
        "internal address"
    );
    assert_eq!(v["internal"], true);
    let canaries = v["canaries"].as_array().unwrap();
    assert!(
        canaries
            .iter()
            .any(|c| c["namespace"] == "gridos" && c["name"] == "gridos"),
        "{canaries:?}"
    );
    let human = ok(&gridos_k(&["status"]));
    assert!(
        human.contains("ingress-nginx/ingress-nginx-controller") && human.contains("2/2"),
        "{human}"
    );
}

#[tokio::test]
async fn cluster_uninstall_removes_members_and_leaves_foreign_objects_and_crds() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    ok(&crate::util::install_nginx());
    // The user's own object in the app namespace: that namespace must stay, and so must the object.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "gridos");
    cms.patch("app-settings", &PatchParams::apply("kubectl"), &Patch::Apply(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app-settings"}, "data": {"k": "v"}
    })))
    .await
    .unwrap();
    let refused = gridos_k(&["uninstall"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "no terminal, no --yes: {}",
        stderr(&refused)
    );

    let text = ok(&gridos_k(&["uninstall", "--yes"]));
    assert!(text.contains("Namespace/gridos kept: it holds objects that are not gridos-setup's: ConfigMap/gridos/app-settings"), "{text}");
    assert!(
        text.contains("CustomResourceDefinition/canaries.flagger.app kept"),
        "{text}"
    );
    let namespaces: Api<Namespace> = Api::all(c.clone());
    for gone in ["ingress-nginx", "flagger-system"] {
        assert!(
            namespaces.get_opt(gone).await.unwrap().is_none(),
            "{gone} deleted"
        );
    }
    assert!(
        cms.get_opt("app-settings").await.unwrap().is_some(),
        "the foreign ConfigMap stays"
    );
    assert!(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), "gridos")
            .get_opt("flagger-loadtester")
            .await
            .unwrap()
            .is_none(),
        "members in kept namespaces are deleted"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    assert!(
        crds.get_opt("canaries.flagger.app")
            .await
            .unwrap()
            .is_some(),
        "CRDs stay without --purge-crds"
    );
    // The kept CRDs stay recorded as settled, so a re-install need not apply them again.
    let parent = Api::<ConfigMap>::namespaced(c.clone(), gridos_setup::applyset::PARENT_NAMESPACE)
        .get(gridos_setup::applyset::PARENT_NAME)
        .await
        .unwrap();
    let settled: Vec<String> = parent.data.unwrap_or_default()["settled-crds"]
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        settled,
        [
            "alertproviders.flagger.app",
            "canaries.flagger.app",
            "metrictemplates.flagger.app"
        ],
        "only CRDs stay settled"
    );

    // Twice is fine; then --purge-crds removes the CRDs.
    ok(&gridos_k(&["uninstall", "--yes"]));
    let text = ok(&gridos_k(&["uninstall", "--yes", "--purge-crds"]));
    assert!(
        text.contains("CustomResourceDefinition/canaries.flagger.app deleted"),
        "{text}"
    );
    for crd in [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
    ] {
        let gone = |o: Option<&CustomResourceDefinition>| o.is_none();
        crate::util::wait_for(crds.clone(), crd, 30, "CRD deleted", gone).await;
    }
    let text = ok(&gridos_k(&["uninstall", "--yes"]));
    assert!(text.contains("0 deleted"), "nothing left to delete: {text}");
    assert!(
        namespaces.get_opt("gridos").await.unwrap().is_some(),
        "the app namespace with the user's object stays"
    );
}
