//! Shared helpers: the test control plane's client, unique namespaces, the cluster lock, running the binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};

/// The kubeconfig of the running test control plane, from `scripts/testenv exec`.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os("GRIDOS_TESTENV_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "no test control plane: GRIDOS_TESTENV_KUBECONFIG is unset. Run `scripts/testenv up`, then \
             `scripts/testenv exec -- cargo test` (or `scripts/test` for everything)"
        ),
    }
}

/// A client of the test control plane, through the library's own connection code.
pub async fn client() -> Client {
    let req = gridos_setup::cluster::ConnectRequest {
        kubeconfig: Some(kubeconfig()),
        context: None,
    };
    match gridos_setup::cluster::connect(&req).await {
        Ok(c) => c.client,
        Err(e) => panic!("cannot connect to the test control plane: {e}"),
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh namespace name, unique within this run and across runs.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}", t % 1_000_000)
}

/// Creates a namespace with the given labels.
pub async fn create_namespace(client: &Client, name: &str, labels: &[(&str, &str)]) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>()}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

/// Deletes a namespace without waiting (best effort clean-up at the end of a test).
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Waits, by watching, until `cond` holds for the named object, or panics after `secs`.
pub async fn wait_for<K>(api: Api<K>, name: &str, secs: u64, what: &str, cond: impl Condition<K>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(Duration::from_secs(secs), await_condition(api, name, cond)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for {what}: {e}"),
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Cluster-scoped objects (CRDs, ClusterRoles, the product's namespaces) are shared by the whole
/// control plane, so tests that install them hold this lock. Serialising them was measured faster
/// than a control plane per test (one costs ~8 s to start).
pub async fn cluster_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Runs the `gridos-setup` binary with arguments, no stdin.
pub fn gridos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gridos-setup"))
        .args(args)
        .env_remove("GRIDOS_PROFILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run gridos-setup")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `gridos-setup` against the test control plane (explicit `--kubeconfig`).
pub fn gridos_k(args: &[&str]) -> Output {
    let kc = kubeconfig();
    let mut all: Vec<&str> = args.to_vec();
    let kc_str = kc.to_string_lossy().into_owned();
    all.extend_from_slice(&["--kubeconfig", &kc_str]);
    gridos(&all)
}

/// Namespaces an install (of either traffic layer) or a test's starting state writes to: `reset`
/// removes them, and the "nothing written" snapshots watch them.
pub const INSTALL_NAMESPACES: [&str; 6] = [
    "ingress-nginx",
    "flagger-system",
    "gridos",
    "other-app",
    "gridos-gateway",
    "aks-istio-system",
];

/// Removes everything an install leaves (members of the ApplySet, its parent, test CRDs) and waits
/// until the namespaces and CRDs are gone, so the next test starts from a fresh cluster.
pub async fn reset(c: &Client) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::api::networking::v1::IngressClass;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::ListParams;
    use kube::runtime::wait::conditions;

    let dp = DeleteParams::default();
    let member = ListParams::default().labels(&format!(
        "{}={}",
        gridos_setup::applyset::PART_OF,
        gridos_setup::applyset::applyset_id()
    ));
    async fn delete_all<K>(api: Api<K>, lp: &ListParams)
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        if let Ok(list) = api.list(lp).await {
            for o in list.items {
                let _ = api
                    .delete(
                        &o.meta().name.clone().unwrap_or_default(),
                        &DeleteParams::default(),
                    )
                    .await;
            }
        }
    }
    delete_all(Api::<ClusterRole>::all(c.clone()), &member).await;
    delete_all(Api::<ClusterRoleBinding>::all(c.clone()), &member).await;
    delete_all(Api::<IngressClass>::all(c.clone()), &member).await;
    delete_all(
        Api::<ValidatingWebhookConfiguration>::all(c.clone()),
        &member,
    )
    .await;
    let _ = Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .delete("gridos-setup", &dp)
        .await;
    let _ = Api::<ConfigMap>::namespaced(c.clone(), "kube-system")
        .delete("gridos-lb-standin", &dp)
        .await;
    // A run lock a failed test left behind (a live-looking holder would block the next test).
    let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        c.clone(),
        gridos_setup::lock::LEASE_NAMESPACE,
    )
    .delete(gridos_setup::lock::LEASE_NAME, &dp)
    .await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd_names = [
        "canaries.flagger.app",
        "metrictemplates.flagger.app",
        "alertproviders.flagger.app",
        "servicemonitors.monitoring.coreos.com",
        "servicemonitors.azmonitoring.coreos.com",
    ];
    // All at once: each takes ~10 s (the namespace controller re-checks after the pods' grace period).
    let mut gone = Vec::new();
    for name in INSTALL_NAMESPACES {
        if let Ok(Some(ns)) = namespaces.get_opt(name).await {
            let _ = namespaces.delete(name, &dp).await;
            gone.push((name, ns.metadata.uid.unwrap_or_default()));
        }
    }
    futures::future::join_all(gone.iter().map(|(name, uid)| {
        wait_for(
            namespaces.clone(),
            name,
            120,
            "namespace deleted",
            conditions::is_deleted(uid),
        )
    }))
    .await;
    // The Gateway API's objects, GatewayClasses and CRDs, and the Istio mesh add-on's marks.
    crate::gateway_rig::disable_istio_mesh_marks(c).await;
    crate::gateway_rig::disable_gateway_api(c).await;
    for name in crd_names {
        if let Ok(Some(crd)) = crds.get_opt(name).await {
            let _ = crds.delete(name, &dp).await;
            let uid = crd.metadata.uid.unwrap_or_default();
            wait_for(
                crds.clone(),
                name,
                60,
                &format!("CRD {name} deleted"),
                conditions::is_deleted(&uid),
            )
            .await;
        }
    }
}

/// Applies a YAML fixture (server-side apply, manager `test-fixture`) and waits for CRDs to be Established.
pub async fn apply_fixture(c: &Client, name: &str) {
    let path = format!(
        "{}/tests/integration/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let data: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let obj = gridos_setup::render::Object {
        template: name.into(),
        data,
    };
    let resolver = gridos_setup::apply::Resolver::new(c, None).await.unwrap();
    let (ar, _) = resolver.resolve(&obj).unwrap();
    let api: Api<kube::api::DynamicObject> = Api::all_with(c.clone(), &ar);
    api.patch(
        obj.name(),
        &kube::api::PatchParams::apply("test-fixture"),
        &kube::api::Patch::Apply(&obj.data),
    )
    .await
    .unwrap();
    if obj.kind() == "CustomResourceDefinition" {
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(c.clone());
        wait_for(
            crds,
            obj.name(),
            30,
            "fixture CRD Established",
            kube::runtime::wait::conditions::is_crd_established(),
        )
        .await;
    }
}

/// Asserts exit 0 (showing both streams otherwise) and returns stdout.
pub fn ok(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit 0; stderr:\n{}\nstdout:\n{}",
        stderr(out),
        stdout(out)
    );
    stdout(out)
}

/// A token user: ServiceAccount `default/<name>` bound to cluster-admin, its token from the
/// TokenRequest API, and a kubeconfig (written under the temp dir) with the test control plane's
/// server and CA and that token. Returns the kubeconfig's path and the token.
/// `delete_token_user` removes the account and its binding.
pub async fn token_kubeconfig(c: &Client, name: &str) -> (PathBuf, String) {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(c.clone())
        .create(&PostParams::default(), &crb)
        .await
        .expect("create ClusterRoleBinding");
    sa_kubeconfig_and_token(c, "default", name).await
}

/// Removes what `token_kubeconfig` created.
pub async fn delete_token_user(c: &Client, name: &str) {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let _ = Api::<ClusterRoleBinding>::all(c.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let _ = Api::<ServiceAccount>::namespaced(c.clone(), "default")
        .delete(name, &DeleteParams::default())
        .await;
}

/// A kubeconfig for ServiceAccount `ns/name` (created if missing), with a token from the TokenRequest
/// API and the admin kubeconfig's server and CA: a user with exactly the rights bound to it.
pub async fn sa_kubeconfig(c: &Client, ns: &str, name: &str) -> PathBuf {
    sa_kubeconfig_and_token(c, ns, name).await.0
}

/// [`sa_kubeconfig`], and the token it carries (for tests that search output for it).
pub async fn sa_kubeconfig_and_token(c: &Client, ns: &str, name: &str) -> (PathBuf, String) {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let sa: ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    if sas.get_opt(name).await.unwrap().is_none() {
        sas.create(&PostParams::default(), &sa).await.unwrap();
    }
    let request: TokenRequest = serde_json::from_value(
        serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token;
    let admin = kube::config::Kubeconfig::read_from(kubeconfig()).unwrap();
    let context = admin
        .contexts
        .iter()
        .find(|x| Some(&x.name) == admin.current_context.as_ref())
        .and_then(|x| x.context.clone())
        .expect("admin context");
    let cluster = admin
        .clusters
        .iter()
        .find(|x| x.name == context.cluster)
        .and_then(|x| x.cluster.clone())
        .expect("admin cluster");
    // JSON is YAML: any kubeconfig reader takes it.
    let kc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        "current-context": name,
    });
    let path = std::env::temp_dir().join(format!("{}.kubeconfig", unique_name(name)));
    std::fs::write(&path, kc.to_string()).unwrap();
    (path, token)
}

/// `gridos-setup install --profile nginx --host app.example.com --yes` as the admin.
pub fn install_nginx() -> Output {
    gridos_k(&[
        "install",
        "--profile",
        "nginx",
        "--host",
        "app.example.com",
        "--yes",
    ])
}

/// Runs `gridos-setup` as the user of `kubeconfig` (e.g. from [`sa_kubeconfig`]).
pub fn gridos_as(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    let kc = kubeconfig.to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["--kubeconfig", &kc]);
    gridos(&all)
}

/// Points every webhook of the ingress-nginx ValidatingWebhookConfiguration at the CA
/// `ca_bundle` (base64 PEM, as `certs::generate` gives it): a renewal, or a lost race.
pub async fn set_webhook_ca_bundle(c: &Client, ca_bundle: &str) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
    let mut vwc = vwcs.get("ingress-nginx-admission").await.unwrap();
    let pem =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca_bundle).unwrap();
    for w in vwc.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(k8s_openapi::ByteString(pem.clone()));
    }
    vwc.metadata.managed_fields = None;
    vwcs.replace("ingress-nginx-admission", &PostParams::default(), &vwc)
        .await
        .unwrap();
}

/// A directory under the temp dir, removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique_name(&format!("flagger-{what}")));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A failing test keeps its programs' full logs (Flagger's, Prometheus's, ...): the panic
        // message shows only their tails.
        if std::thread::panicking() {
            eprintln!("the test failed: kept {} (full logs)", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program of the test, killed at drop; its output goes to a log file shown on failure.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log file"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "===== {} (last 40 lines) =====\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A binary on PATH (`scripts/testenv exec` puts the testenv binaries first).
pub fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH: `scripts/testenv build` builds it, `scripts/testenv exec` puts it on PATH")
        })
}

/// A binary of the stand-ins crate, built by `cargo build --workspace` into this test binary's target dir.
pub fn standin_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p gridos-testenv-standins --bin {name}`",
        bin.display()
    );
    bin
}

/// Polls `url` until it answers 2xx, or panics with the program's log after `secs`.
pub fn wait_http_ok(url: &str, secs: u64, p: &Proc) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "--max-time", "2", url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{url} not ready after {secs}s\n{}", p.tail());
}
