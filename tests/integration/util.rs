//! Shared helpers: the test control plane's client, unique namespaces, the cluster lock, running the binary.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
