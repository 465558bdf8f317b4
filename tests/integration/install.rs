//! `install` and `plan` end to end on the test control plane: fresh installs, no-op re-runs, drift,
//! profile switches and pruning, ServiceMonitor groups, conflicts, timeouts and JSON output.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gridos_setup::applyset::{PARENT_NAME, PARENT_NAMESPACE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};

use crate::util::{apply_fixture, client, cluster_lock, gridos_k, ok, reset, stderr, stdout};

const HOST: &str = "app.example.com";

fn install(profile: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["install", "--profile", profile, "--host", HOST, "--yes"];
    args.extend_from_slice(extra);
    gridos_k(&args)
}

/// Every ApplySet member's id and resourceVersion, from the parent's member list.
async fn member_versions(c: &Client) -> BTreeMap<String, String> {
    let parent = Api::<ConfigMap>::namespaced(c.clone(), PARENT_NAMESPACE)
        .get(PARENT_NAME)
        .await
        .unwrap();
    let members = parent
        .data
        .unwrap_or_default()
        .get("members")
        .cloned()
        .unwrap_or_default();
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
    let mut out = BTreeMap::new();
    for line in members.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (av, kind, ns, name) = (parts[0], parts[1], parts[2], parts[3]);
        let (ar, _) = resolver
            .resolve_gvk(av, kind)
            .unwrap_or_else(|| panic!("{av} {kind} resolves"));
        let api: Api<DynamicObject> = if ns == "-" {
            Api::all_with(c.clone(), &ar)
        } else {
            Api::namespaced_with(c.clone(), ns, &ar)
        };
        let o = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        out.insert(line.to_string(), o.metadata.resource_version.unwrap());
    }
    out
}

async fn all_deployments_available(c: &Client) {
    for ns in ["ingress-nginx", "flagger-system", "gridos"] {
        let list = Api::<Deployment>::namespaced(c.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert!(!list.items.is_empty(), "Deployments in {ns}");
        for d in list.items {
            assert!(
                gridos_setup::wait::deployment_is_rolled_out(&d),
                "{ns}/{:?} rolled out",
                d.metadata.name
            );
        }
    }
}

async fn controller_service(c: &Client) -> Service {
    Api::<Service>::namespaced(c.clone(), "ingress-nginx")
        .get("ingress-nginx-controller")
        .await
        .unwrap()
}

#[tokio::test]
async fn cluster_install_each_profile_then_rerun_changes_nothing() {
    let _lock = cluster_lock().await;
    let c = client().await;
    for (profile, range) in [
        ("nginx", "203.0.113."),
        ("appgw", "198.51.100."),
        ("frontdoor", "203.0.113."),
    ] {
        reset(&c).await;
        let text = ok(&install(profile, &[]));
        assert!(
            text.contains(" created, 0 configured, 0 unchanged"),
            "{profile}: {text}"
        );
        let address = text
            .lines()
            .find_map(|l| l.split("Ingress address").nth(1))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            address.contains(range),
            "{profile}: address from {range}: {address}"
        );
        let svc = controller_service(&c).await;
        let ip = gridos_setup::wait::service_address(&svc).unwrap();
        assert!(
            address.contains(&ip),
            "the printed address is the Service's: {address} vs {ip}"
        );
        all_deployments_available(&c).await;

        let before = member_versions(&c).await;
        assert!(before.len() > 30, "{} members", before.len());
        let again = ok(&install(profile, &[]));
        assert!(
            again.contains(&format!(
                "0 created, 0 configured, {} unchanged, 0 pruned",
                before.len()
            )),
            "{profile}: {again}"
        );
        assert_eq!(
            member_versions(&c).await,
            before,
            "{profile}: no resourceVersion moved"
        );
        let plan = gridos_k(&[
            "plan",
            "--profile",
            profile,
            "--host",
            HOST,
            "--detailed-exitcode",
        ]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "plan after install: {}",
            stdout(&plan)
        );
        // ingress-nginx keeps the Ingress's limit-rps: no Gateway API rate-limit notice.
        assert!(
            !format!("{}{}", stdout(&plan), crate::util::stderr(&plan))
                .contains(gridos_setup::plan::GATEWAY_NO_RATE_LIMIT),
            "{profile}: no rate-limit notice with ingress-nginx"
        );
    }
}

#[tokio::test]
async fn cluster_drift_is_repaired_and_foreign_labels_stay() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    ok(&install("nginx", &[]));
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "ingress-nginx");
    deployments
        .patch(
            "ingress-nginx-controller",
            &PatchParams::apply("someone").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 0}
            })),
        )
        .await
        .unwrap();
    Api::<Deployment>::namespaced(c.clone(), "flagger-system")
        .delete("flagger", &Default::default())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(c.clone());
    namespaces
        .patch(
            "flagger-system",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"team": "sre"}}})),
        )
        .await
        .unwrap();
    let plan = gridos_k(&[
        "plan",
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--detailed-exitcode",
        "--show-objects",
    ]);
    assert_eq!(
        plan.status.code(),
        Some(4),
        "plan sees the drift: {}",
        stdout(&plan)
    );
    let plan_text = stdout(&plan);
    assert!(
        plan_text.contains("Deployment/flagger-system/flagger created"),
        "{plan_text}"
    );

    // A dry run reports the same and writes nothing.
    let dry = ok(&install("nginx", &["--dry-run"]));
    assert!(dry.contains("1 would be created"), "{dry}");
    assert!(
        Api::<Deployment>::namespaced(c.clone(), "flagger-system")
            .get_opt("flagger")
            .await
            .unwrap()
            .is_none()
    );

    let text = ok(&install("nginx", &[]));
    assert!(text.contains("1 created"), "flagger is back: {text}");
    let d = deployments.get("ingress-nginx-controller").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2), "replicas restored");
    all_deployments_available(&c).await;
    let labels = namespaces
        .get("flagger-system")
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("sre"),
        "a label someone else added stays"
    );
    let plan = gridos_k(&[
        "plan",
        "--profile",
        "nginx",
        "--host",
        HOST,
        "--detailed-exitcode",
    ]);
    assert_eq!(plan.status.code(), Some(0), "converged: {}", stdout(&plan));
}

/// The parent's settled CRDs: name -> (resourceVersion, digest).
async fn settled_crds(c: &Client) -> BTreeMap<String, (String, String)> {
    let parent = Api::<ConfigMap>::namespaced(c.clone(), PARENT_NAMESPACE)
        .get(PARENT_NAME)
        .await
        .unwrap();
    let data = parent.data.unwrap_or_default();
    data.get("settled-crds")
        .map(|text| {
            text.lines()
                .map(|l| {
                    let p: Vec<&str> = l.split(' ').collect();
                    assert_eq!(p.len(), 3, "name rv digest: {l}");
                    (p[0].to_string(), (p[1].to_string(), p[2].to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn crd_versions(c: &Client) -> BTreeMap<String, String> {
    Api::<CustomResourceDefinition>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| d.spec.group == "flagger.app")
        .map(|d| {
            (
                d.metadata.name.unwrap(),
                d.metadata.resource_version.unwrap(),
            )
        })
        .collect()
}

/// How many CRDs a re-run left unapplied, from its debug log.
fn crds_skipped(out: &std::process::Output) -> usize {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("settled CRDs no one has written since"))
        .unwrap_or_else(|| panic!("a re-run says what it skipped: {err}"));
    line.split(" but ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test]
async fn cluster_a_rerun_skips_only_crds_nobody_wrote_since_and_repairs_the_others() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    ok(&install("nginx", &[]));
    // A fresh install records each CRD as it was once Established.
    let settled = settled_crds(&c).await;
    let versions = crd_versions(&c).await;
    assert_eq!(settled.len(), 3, "{settled:?}");
    for (name, (rv, _)) in &settled {
        assert_eq!(Some(rv), versions.get(name), "{name}: recorded as it is");
    }

    let again = install("nginx", &["-vv"]);
    assert!(ok(&again).contains("0 created, 0 configured, 43 unchanged"));
    assert_eq!(crds_skipped(&again), 3, "nothing wrote the CRDs since");
    assert_eq!(crd_versions(&c).await, versions);

    // Someone else takes over a field gridos-setup applies: the next run applies that CRD again
    // and takes it back.
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    crds.patch(
        "canaries.flagger.app",
        &PatchParams::apply("someone").force(),
        &Patch::Apply(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "canaries.flagger.app",
                         "labels": {"app.kubernetes.io/version": "0.0.1"}},
        })),
    )
    .await
    .unwrap();
    // A newer render of another CRD: its recorded digest no longer matches.
    let parents: Api<ConfigMap> = Api::namespaced(c.clone(), PARENT_NAMESPACE);
    let mut parent = parents.get(PARENT_NAME).await.unwrap();
    let data = parent.data.get_or_insert_with(Default::default);
    let text = data["settled-crds"].clone();
    let (rv, digest) = &settled["alertproviders.flagger.app"];
    data.insert(
        "settled-crds".into(),
        text.replace(
            &format!("alertproviders.flagger.app {rv} {digest}"),
            &format!("alertproviders.flagger.app {rv} an-older-render"),
        ),
    );
    parent.metadata.managed_fields = None;
    parents
        .replace(PARENT_NAME, &Default::default(), &parent)
        .await
        .unwrap();

    let repaired = install("nginx", &["-vv"]);
    assert!(
        ok(&repaired).contains("0 created, 1 configured, 42 unchanged"),
        "{}",
        stdout(&repaired)
    );
    assert_eq!(crds_skipped(&repaired), 1, "only metrictemplates");
    let canaries = crds.get("canaries.flagger.app").await.unwrap();
    assert_eq!(
        canaries.metadata.labels.unwrap()["app.kubernetes.io/version"],
        "1.44.0",
        "the label is gridos-setup's again"
    );
    let now = settled_crds(&c).await;
    assert_eq!(now, settled_crds_of(&crd_versions(&c).await, &settled));

    let third = install("nginx", &["-vv"]);
    assert!(ok(&third).contains("0 created, 0 configured, 43 unchanged"));
    assert_eq!(crds_skipped(&third), 3, "settled again");
}

/// What the parent should record: each CRD's current resourceVersion and its render's digest.
fn settled_crds_of(
    versions: &BTreeMap<String, String>,
    before: &BTreeMap<String, (String, String)>,
) -> BTreeMap<String, (String, String)> {
    before
        .iter()
        .map(|(n, (_, d))| (n.clone(), (versions[n].clone(), d.clone())))
        .collect()
}

#[tokio::test]
async fn cluster_switching_profile_and_turning_off_the_service_monitor_prunes_only_members() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    apply_fixture(&c, "servicemonitor-crd.yaml").await;
    let text = ok(&install("nginx", &[]));
    assert!(text.contains("203.0.113."), "{text}");
    let sm_api = |c: &Client| {
        let ar = kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
        ));
        Api::<DynamicObject>::namespaced_with(c.clone(), "ingress-nginx", &ar)
    };
    assert!(
        sm_api(&c)
            .get_opt("ingress-nginx-controller")
            .await
            .unwrap()
            .is_some(),
        "ServiceMonitor applied"
    );
    // Objects that are not members: one in a managed namespace, one with a member's name elsewhere.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ingress-nginx");
    cms.patch("team-notes", &PatchParams::apply("someone"), &Patch::Apply(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team-notes"}, "data": {"a": "b"}
    })))
    .await
    .unwrap();

    let text = ok(&install(
        "appgw",
        &[
            "--set",
            "serviceMonitor.enabled=off",
            "--set",
            "grafana.enabled=false",
        ],
    ));
    assert!(
        text.contains("6 pruned"),
        "the ServiceMonitor and Grafana's 5 objects are pruned: {text}"
    );
    assert!(
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.clone(), "flagger-system")
            .get_opt("grafana")
            .await
            .unwrap()
            .is_none(),
        "Grafana switched off is gone"
    );
    assert!(
        text.contains("198.51.100."),
        "the new, internal address is reported: {text}"
    );
    let svc = controller_service(&c).await;
    assert_eq!(
        svc.metadata
            .annotations
            .unwrap()
            .get("service.beta.kubernetes.io/azure-load-balancer-internal")
            .map(String::as_str),
        Some("true")
    );
    assert!(
        sm_api(&c)
            .get_opt("ingress-nginx-controller")
            .await
            .unwrap()
            .is_none(),
        "ServiceMonitor gone"
    );
    assert!(
        cms.get_opt("team-notes").await.unwrap().is_some(),
        "a non-member is never touched"
    );
    // The record remembers the Service is internal now, so a re-run need not read it first...
    let parent = Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .get("gridos-setup")
        .await
        .unwrap();
    assert_eq!(
        parent
            .data
            .unwrap()
            .get("ingress-internal")
            .map(String::as_str),
        Some("true")
    );
    // ...and switching back still waits for the new public address rather than the internal one.
    let text = ok(&install("nginx", &["--set", "serviceMonitor.enabled=off"]));
    assert!(
        text.contains("203.0.113.") && !text.contains("198.51.100."),
        "the public address again: {text}"
    );
}

#[tokio::test]
async fn cluster_service_monitor_follows_the_groups_the_cluster_serves() {
    let _lock = cluster_lock().await;
    let c = client().await;
    // Neither CRD: skipped, with a notice.
    reset(&c).await;
    let out = install("nginx", &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("skipping the ServiceMonitor"),
        "{}",
        stderr(&out)
    );
    // Only Azure Monitor's group: applied with it.
    reset(&c).await;
    apply_fixture(&c, "servicemonitor-crd-azmonitoring.yaml").await;
    let out = install("nginx", &["-o", "json"]);
    let text = ok(&out);
    assert!(text.contains("\"id\":\"ServiceMonitor/ingress-nginx/ingress-nginx-controller\",\"result\":\"created\""), "{text}");
    let ar = kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "azmonitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    let sm = Api::<DynamicObject>::namespaced_with(c.clone(), "ingress-nginx", &ar)
        .get("ingress-nginx-controller")
        .await
        .unwrap();
    assert_eq!(sm.data["spec"]["endpoints"][0]["honorLabels"], true);
    // prometheus-operator's group as well: the configured (default) group wins.
    reset(&c).await;
    apply_fixture(&c, "servicemonitor-crd.yaml").await;
    let text = ok(&install("nginx", &["-o", "json"]));
    assert!(
        text.contains("ServiceMonitor/ingress-nginx/ingress-nginx-controller"),
        "{text}"
    );
    let ar = kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "ServiceMonitor",
    ));
    assert!(
        Api::<DynamicObject>::namespaced_with(c.clone(), "ingress-nginx", &ar)
            .get_opt("ingress-nginx-controller")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn cluster_an_object_of_another_manager_is_not_taken_over_silently() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    namespaces
        .patch(
            "ingress-nginx",
            &PatchParams::apply("helm"),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}
            })),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "ingress-nginx");
    cms.patch("ingress-nginx-controller", &PatchParams::apply("helm"), &Patch::Apply(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ingress-nginx-controller"},
        "data": {"allow-snippet-annotations": "true"}
    })))
    .await
    .unwrap();
    let out = install("nginx", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    for part in [
        "ConfigMap/ingress-nginx/ingress-nginx-controller",
        "\"helm\"",
        "--force-conflicts",
    ] {
        assert!(line.contains(part), "{line:?} names {part}");
    }
    ok(&install("nginx", &["--force-conflicts"]));
    let cm = cms.get("ingress-nginx-controller").await.unwrap();
    assert_eq!(
        cm.data
            .unwrap()
            .get("allow-snippet-annotations")
            .map(String::as_str),
        Some("false"),
        "taken over"
    );
}

#[tokio::test]
async fn cluster_timeout_waiting_for_the_address_exits_3_naming_the_service() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let standin: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    standin
        .patch("gridos-lb-standin", &PatchParams::apply("test"), &Patch::Apply(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gridos-lb-standin"}, "data": {"delay": "never"}
        })))
        .await
        .unwrap();
    let t = Instant::now();
    let out = install("nginx", &["--timeout", "20s"]);
    let took = t.elapsed();
    let _ = standin
        .delete("gridos-lb-standin", &Default::default())
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        took < Duration::from_secs(25),
        "exits within 25 s, took {took:?}"
    );
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("Service ingress-nginx/ingress-nginx-controller"),
        "{line}"
    );
    assert!(line.contains("--timeout"), "{line}");
    // Once the address comes, a re-run converges.
    ok(&install("nginx", &[]));
}

#[tokio::test]
async fn cluster_json_output_is_one_object_per_line_ending_with_the_summary() {
    let _lock = cluster_lock().await;
    let c = client().await;
    reset(&c).await;
    let text = ok(&install("frontdoor", &["-o", "json"]));
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["profile"], "frontdoor");
    assert!(
        summary["address"]
            .as_str()
            .unwrap()
            .starts_with("203.0.113.")
    );
    let objects = summary["objects"].as_array().unwrap();
    let members = member_versions(&c).await;
    assert_eq!(
        objects.len(),
        members.len(),
        "the summary lists every applied object"
    );
    assert!(objects.iter().all(|o| o["result"] == "created"));
    assert!(
        events.iter().any(|e| e["event"] == "target"),
        "the cluster is named before the first write"
    );
    assert!(summary["durations"]["total_ms"].as_u64().unwrap() > 0);
    let done: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "component" && e["state"] == "done")
        .map(|e| e["component"].as_str().unwrap())
        .collect();
    for component in [
        "ingress-nginx",
        "flagger",
        "prometheus",
        "loadtester",
        "grafana",
        "gridos",
    ] {
        assert!(done.contains(&component), "{component} done: {done:?}");
    }
}
