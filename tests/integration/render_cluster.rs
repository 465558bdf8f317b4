//! Rendered objects against the real apiserver: every profile passes a server-side dry run, a full
//! Canary comes back unpruned, and every Deployment is admitted under the Pod Security labels and
//! becomes Available.

use gridos_setup::apply::{ApplyOptions, Resolver, apply_one, with_membership};
use gridos_setup::profile::{ProfileSource, ValuesRequest, resolve};
use gridos_setup::render::{Object, RenderInputs, Wave, render};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::conditions;

use crate::util::{client, cluster_lock, reset, wait_for};

pub(crate) fn rendered(profile: &str, sets: &[&str]) -> Vec<Object> {
    let req = ValuesRequest {
        profile: Some(ProfileSource::Builtin(profile.into())),
        host: Some("app.example.com".into()),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let v = resolve(&req).expect("values");
    // With the ApplySet label, as install applies them, so `reset` finds what these tests leave.
    render(&v, &RenderInputs::offline(&v))
        .expect("render")
        .iter()
        .map(with_membership)
        .collect()
}

fn fixture(name: &str) -> Object {
    let path = format!(
        "{}/tests/integration/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let data = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Object {
        template: name.into(),
        data,
    }
}

async fn established(c: &Client, crd: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    wait_for(
        api,
        crd,
        30,
        &format!("CRD {crd} Established"),
        conditions::is_crd_established(),
    )
    .await;
}

/// Applies the foundation wave (namespaces, CRDs) for real, waits for the CRDs, then applies the rest
/// with `dry_run` as given. Returns the server's answers for the rest.
pub(crate) async fn apply_waves(
    c: &Client,
    objects: &[Object],
    dry_run: bool,
) -> Vec<DynamicObject> {
    let resolver = Resolver::new(c).await.unwrap();
    let (foundation, rest): (Vec<_>, Vec<_>) =
        objects.iter().partition(|o| o.wave() == Wave::Foundation);
    for o in &foundation {
        apply_one(c, &resolver, o, ApplyOptions::default(), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for o in foundation
        .iter()
        .filter(|o| o.kind() == "CustomResourceDefinition")
    {
        established(c, o.name()).await;
    }
    // A new kind resolves only once discovery has seen it.
    let resolver = Resolver::new(c).await.unwrap();
    let mut out = Vec::new();
    for o in rest {
        let opts = ApplyOptions {
            dry_run,
            force: false,
        };
        out.push(
            apply_one(c, &resolver, o, opts, false)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    out
}

#[tokio::test]
async fn cluster_every_profile_passes_a_server_side_dry_run() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let sm_crd = fixture("servicemonitor-crd.yaml");
    for (profile, sets) in [
        ("nginx", &[][..]),
        ("appgw", &[][..]),
        ("frontdoor", &[][..]),
        ("frontdoor", &["frontDoor.privateLink=true"][..]),
        (
            "nginx",
            &[
                "alerting.provider=slack",
                "alerting.secretName=slack-hook",
                "alerting.channel=ops",
            ][..],
        ),
        (
            "nginx",
            &[
                "alerting.provider=msteams",
                "alerting.secretName=teams-hook",
            ][..],
        ),
    ] {
        let mut objects = vec![sm_crd.clone()];
        objects.extend(rendered(profile, sets));
        let answers = apply_waves(&c, &objects, true).await;
        let expected = objects
            .iter()
            .filter(|o| o.wave() != Wave::Foundation)
            .count();
        assert_eq!(
            answers.len(),
            expected,
            "{profile} {sets:?}: every object answered"
        );
    }
    reset(&c).await;
}

#[tokio::test]
async fn cluster_a_full_canary_comes_back_unpruned() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let mut objects = rendered("nginx", &[]);
    objects.retain(|o| o.wave() == Wave::Foundation);
    apply_waves(&c, &objects, false).await;
    let mut canary = fixture("canary-full.yaml");
    canary.data["metadata"]["namespace"] = "gridos".into();
    let resolver = Resolver::new(&c).await.unwrap();
    let got = apply_one(&c, &resolver, &canary, ApplyOptions::default(), false)
        .await
        .unwrap();
    let got = serde_json::to_value(&got).unwrap();
    assert_eq!(
        got["spec"], canary.data["spec"],
        "spec comes back as applied"
    );

    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/integration/fixtures/canary-status.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let (ar, _) = resolver.resolve(&canary).unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "gridos", &ar);
    let patch = serde_json::json!({"status": status});
    let after = api
        .patch_status("full", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&after).unwrap()["status"],
        status,
        "status comes back as Flagger wrote it"
    );
    reset(&c).await;
}

#[tokio::test]
async fn cluster_every_deployment_is_admitted_and_becomes_available() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let objects = rendered("nginx", &["serviceMonitor.enabled=off"]);
    apply_waves(&c, &objects, false).await;
    for o in objects.iter().filter(|o| o.kind() == "Namespace") {
        let labels = o.data["metadata"]["labels"].clone();
        assert_eq!(
            labels["pod-security.kubernetes.io/warn"],
            "restricted",
            "{}",
            o.name()
        );
        assert!(
            labels["pod-security.kubernetes.io/enforce"].is_string(),
            "{}",
            o.name()
        );
    }
    for o in objects.iter().filter(|o| o.kind() == "Deployment") {
        let ns = o.namespace().unwrap();
        let replicas = o.data["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
        let api: Api<Deployment> = Api::namespaced(c.clone(), ns);
        let done = move |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                let s = d.status.clone().unwrap_or_default();
                s.observed_generation == d.metadata.generation
                    && s.available_replicas == Some(replicas)
                    && s.updated_replicas == Some(replicas)
            })
        };
        wait_for(api, o.name(), 60, &format!("{} Available", o.id()), done).await;
    }
    // ingress-nginx and flagger-system enforce restricted, so admission above proves compliance.
    let ns: Api<Namespace> = Api::all(c.clone());
    for name in ["ingress-nginx", "flagger-system"] {
        let labels = ns
            .get(name)
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted")
        );
    }
    reset(&c).await;
}
