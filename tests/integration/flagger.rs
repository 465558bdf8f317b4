//! The canary for real: Flagger, Prometheus and the load tester, built from their Go modules, run as the installed Deployments would and decide on gridos.
//!
//! Each program runs as a process in the test network namespace with the container's command,
//! arguments and environment read back from the Deployment `gridos-setup install` applied (no second
//! copy), and authenticated in-cluster as the Deployment's own ServiceAccount: a private mount
//! namespace (`unshare -m`) bind-mounts a directory with a TokenRequest token, `ca.crt` and
//! `namespace` at /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT
//! name the apiserver, so what our ClusterRoles grant is exactly what they get. Volume mount paths
//! in arguments (Prometheus's /etc/prometheus and /prometheus) are mapped to directories holding the
//! ConfigMap's files and an empty data directory.
//!
//! One deviation, because every pod here shares one network namespace: the load tester gets
//! `-port=18080` after its own `-port=8080` (Go flags: the last wins), since 8080 is also Flagger's
//! port; the kube-proxy stand-in sends the load tester's Service there (`--moved`). Flagger's pod IP
//! is put on `lo`, so Prometheus scrapes the real Flagger through our pod annotations. Names and addresses come from
//! `ingress-nginx-standin` (cluster DNS in the namespace's hosts file, ClusterIPs and pod IPs on
//! `lo`, the load tester's Service port 80 forwarded to 8080, the app's Services, and the
//! controller's data plane with its metrics), so nothing leaves the namespace.
//!
//! The analysis interval is shortened only through the documented value `canary.interval` (and
//! `canary.threshold` for the rollback cases), with `--set` at install.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::gateway_rig::{AppRoutingIstio, enable_gateway_api, gateway_api};
use crate::util::{
    Proc, TempDir, client, cluster_lock, gridos_k, kubeconfig, ok, on_path, reset, standin_bin,
    stderr, stdout, wait_http_ok,
};
use gridos_setup::canary::Snapshot;

const APP_NS: &str = "gridos";
const FLAGGER_NS: &str = "flagger-system";
const GATEWAY_NS: &str = "gridos-gateway";
const HOST: &str = "app.example.com";
const OLD_IMAGE: &str = "registry.example/gridos:1.0.0";
/// The load tester's port here: its 8080 is also Flagger's, and all processes share one network namespace.
const LOADTESTER_PORT: u16 = 18080;

/// The network namespace's hosts file, which `ip netns exec` bind-mounts over /etc/hosts.
fn netns_hosts() -> PathBuf {
    let netns = std::env::var("GRIDOS_TESTENV_NETNS")
        .expect("GRIDOS_TESTENV_NETNS: run through `scripts/testenv exec`");
    let p = PathBuf::from(format!("/etc/netns/{netns}/hosts"));
    assert!(
        p.is_file(),
        "{} is missing: `scripts/testenv up` creates it",
        p.display()
    );
    p
}

fn ca_pem() -> String {
    let state = std::env::var("GRIDOS_TESTENV_STATE").expect("GRIDOS_TESTENV_STATE");
    std::fs::read_to_string(format!("{state}/pki/ca.crt")).expect("testenv CA")
}

/// The in-cluster credential directory of ServiceAccount `ns/name`: a TokenRequest token, the CA and the namespace.
async fn token_dir(c: &Client, ns: &str, sa: &str, dir: &Path) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}})).unwrap();
    let token = sas
        .create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("token for {ns}/{sa}: {e}"))
        .status
        .expect("token status")
        .token;
    let d = dir.join(format!("sa-{ns}-{sa}"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("token"), token).unwrap();
    std::fs::write(d.join("ca.crt"), ca_pem()).unwrap();
    std::fs::write(d.join("namespace"), ns).unwrap();
    d
}

const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The command that runs a Deployment's first container as a process here (see the module doc).
async fn deployment_command(
    c: &Client,
    ns: &str,
    name: &str,
    dir: &Path,
    extra_args: &[&str],
) -> Command {
    let dep = Api::<Deployment>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {ns}/{name}: {e}"));
    let pod = dep.spec.expect("spec").template.spec.expect("pod spec");
    let container: Container = pod.containers[0].clone();
    // volume mount path -> directory here
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let host = dir.join(format!("{name}-vol-{}", m.name));
        std::fs::create_dir_all(&host).unwrap();
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .expect("volume of the mount");
        if let Some(cm) = &vol.config_map {
            let data = Api::<ConfigMap>::namespaced(c.clone(), ns)
                .get(&cm.name)
                .await
                .expect("ConfigMap of the volume")
                .data
                .unwrap_or_default();
            for (k, v) in data {
                std::fs::write(host.join(k), v).unwrap();
            }
        }
        mounts.push((m.mount_path.clone(), host));
    }
    let map_path = |s: &str| -> String {
        for (mp, host) in &mounts {
            if s == mp {
                return host.display().to_string();
            }
            if let Some(rest) = s.strip_prefix(&format!("{mp}/")) {
                return host.join(rest).display().to_string();
            }
            if let Some((flag, value)) = s.split_once('=')
                && (value == mp || value.starts_with(&format!("{mp}/")))
            {
                let v = value.replacen(mp.as_str(), &host.display().to_string(), 1);
                return format!("{flag}={v}");
            }
        }
        s.to_string()
    };
    // The entrypoint: the container's command, else the image's (./flagger, /bin/prometheus).
    let mut argv: Vec<String> = match &container.command {
        Some(cmd) if !cmd.is_empty() => cmd.clone(),
        _ => {
            let image = container.image.clone().unwrap_or_default();
            let repo = image
                .split(['@', ':'])
                .next()
                .unwrap_or_default()
                .to_string();
            vec![repo.rsplit('/').next().unwrap_or_default().to_string()]
        }
    };
    let program = on_path(
        Path::new(&argv[0])
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default(),
    );
    argv.extend(container.args.clone().unwrap_or_default());
    argv.extend(extra_args.iter().map(|s| s.to_string()));
    let args: Vec<String> = argv[1..].iter().map(|a| map_path(a)).collect();

    let automount = pod.automount_service_account_token.unwrap_or(true);
    let mut cmd = if automount {
        let sa = pod
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let creds = token_dir(c, ns, &sa, dir).await;
        // The mount point itself must exist; it stays empty outside the private mount namespace.
        std::fs::create_dir_all(SA_MOUNT).expect("create the ServiceAccount mount point");
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
            .arg("sh")
            .arg(&creds)
            .arg(SA_MOUNT)
            .arg(&program)
            .args(&args);
        cmd
    } else {
        let mut cmd = Command::new(&program);
        cmd.args(&args);
        cmd
    };
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", "6443");
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            cmd.env(&e.name, map_path(v));
        }
    }
    cmd
}

/// Puts the Flagger pod's IP on `lo`: its process listens on all addresses, so Prometheus reaches it
/// at the address kubernetes_sd finds (the pod's `prometheus.io/port` 8080).
async fn flagger_pod_ip_on_lo(c: &Client) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.clone(), FLAGGER_NS);
    let lp = kube::api::ListParams::default().labels("app.kubernetes.io/name=flagger");
    for pod in pods.list(&lp).await.expect("Flagger pods").items {
        if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
            let st = Command::new("ip")
                .args(["addr", "replace", &format!("{ip}/32"), "dev", "lo"])
                .status()
                .expect("ip addr");
            assert!(st.success(), "ip addr replace {ip}/32 dev lo");
        }
    }
}

/// The traffic layer a scenario installs (`--traffic`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layer {
    IngressNginx,
    /// AKS application routing's Gateway API: the CRDs and the approuting-istio controller as
    /// stand-ins (gateway_rig.rs), the data plane from `ingress-nginx-standin --gateway-api`.
    GatewayApi,
}

/// Everything that runs for one scenario; stopped (killed) at drop.
struct Canary {
    c: Client,
    procs: Vec<Proc>,
    _gateway: Option<AppRoutingIstio>,
    dir: TempDir,
    started: Instant,
}

impl Canary {
    /// Resets the cluster, installs with `sets`, creates the app, starts the data-plane stand-in,
    /// Prometheus, the load tester and Flagger, and waits until Flagger has initialized the canary.
    async fn start(layer: Layer, sets: &[&str]) -> Canary {
        let started = Instant::now();
        let c = client().await;
        reset(&c).await;
        let gateway = match layer {
            Layer::IngressNginx => None,
            Layer::GatewayApi => {
                enable_gateway_api(&c).await;
                Some(AppRoutingIstio::start(&c).await)
            }
        };
        let mut args = vec!["install", "--profile", "nginx", "--host", HOST, "--yes"];
        if layer == Layer::GatewayApi {
            args.extend(["--traffic", "gateway-api"]);
        }
        for s in sets {
            args.extend(["--set", *s]);
        }
        ok(&gridos_k(&args));
        let installed = started.elapsed();
        let dir = TempDir::new("run");
        let mut me = Canary {
            c: c.clone(),
            procs: Vec::new(),
            _gateway: gateway,
            dir,
            started,
        };
        let mut standin = Command::new(standin_bin("ingress-nginx-standin"));
        standin
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .arg("--hosts-file")
            .arg(netns_hosts())
            .args(["--search-namespace", FLAGGER_NS])
            .arg("--moved")
            .arg(format!("{APP_NS}/flagger-loadtester={LOADTESTER_PORT}"));
        if layer == Layer::GatewayApi {
            // the gateway pods AKS runs for Gateway gridos (gridos-approuting-istio), Istio's metrics port
            standin.args([
                "--gateway-api",
                "--controller-namespace",
                GATEWAY_NS,
                "--controller-selector",
                "gateway.networking.k8s.io/gateway-name=gridos",
                "--metrics-port",
                "15020",
            ]);
        }
        let p = Proc::spawn("ingress-nginx-standin", &mut standin, &me.dir.0);
        me.procs.push(p);
        // the Ingress passes the controller's admission webhook, which the stand-in serves
        create_app(&c, &me, layer).await;
        let t0 = Instant::now();
        let mut prom =
            deployment_command(&c, FLAGGER_NS, "flagger-prometheus", &me.dir.0, &[]).await;
        let p = Proc::spawn("prometheus", &mut prom, &me.dir.0);
        wait_http_ok("http://127.0.0.1:9090/-/ready", 60, &p);
        me.procs.push(p);
        let port = format!("-port={LOADTESTER_PORT}");
        let mut lt =
            deployment_command(&c, APP_NS, "flagger-loadtester", &me.dir.0, &[&port]).await;
        let p = Proc::spawn("loadtester", &mut lt, &me.dir.0);
        wait_http_ok(
            &format!("http://127.0.0.1:{LOADTESTER_PORT}/healthz"),
            60,
            &p,
        );
        me.procs.push(p);
        let mut fl = deployment_command(&c, FLAGGER_NS, "flagger", &me.dir.0, &[]).await;
        let p = Proc::spawn("flagger", &mut fl, &me.dir.0);
        wait_http_ok("http://127.0.0.1:8080/healthz", 60, &p);
        me.procs.push(p);
        flagger_pod_ip_on_lo(&c).await;
        eprintln!(
            "flagger test: installed in {:.1}s, programs ready in {:.1}s",
            installed.as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        me.wait_phase(&["Initialized"], 60).await;
        eprintln!(
            "flagger test: canary initialized at {:.1}s",
            started.elapsed().as_secs_f64()
        );
        me
    }

    fn proc(&self, name: &str) -> &Proc {
        self.procs.iter().find(|p| p.name == name).expect("program")
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn canary(&self) -> DynamicObject {
        Api::<DynamicObject>::namespaced_with(
            self.c.clone(),
            APP_NS,
            &gridos_setup::canary::resource(),
        )
        .get("gridos")
        .await
        .expect("canary gridos")
    }

    async fn wait_phase(&self, phases: &[&str], secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let cd = self.canary().await;
            let phase = cd.data["status"]["phase"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if phases.contains(&phase.as_str()) {
                return;
            }
            if Instant::now() > until {
                panic!(
                    "canary not {phases:?} after {secs}s (phase {phase:?}, status {})\n{}",
                    cd.data["status"],
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Releases as a pipeline does: sets the app's image, then runs `canary wait -o json`; returns
    /// the wait's exit code, its summary object and its stderr.
    async fn release(&self, image: &str) -> (i32, Value, String) {
        set_image(&self.c, image).await;
        self.wait_for("gridos", &[]).await
    }

    /// Runs `canary wait NAME -o json` (and `extra`) to its end; returns the exit code, the
    /// summary object and stderr.
    async fn wait_for(&self, canary: &str, extra: &[&str]) -> (i32, Value, String) {
        let wait = canary_wait(canary, extra);
        let t0 = Instant::now();
        let out = tokio::task::spawn_blocking(move || wait.wait_with_output())
            .await
            .expect("join")
            .expect("canary wait output");
        let text = stdout(&out);
        let summary = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or_else(|| {
                panic!(
                    "no summary in canary wait output:\n{text}\n{}\n{}",
                    stderr(&out),
                    self.logs()
                )
            });
        eprintln!(
            "flagger test: verdict after {:.1}s of analysis ({:.1}s in all): {summary}",
            t0.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        (out.status.code().unwrap_or(-1), summary, stderr(&out))
    }

    async fn primary_image(&self) -> String {
        Api::<Deployment>::namespaced(self.c.clone(), APP_NS)
            .get("gridos-primary")
            .await
            .expect("gridos-primary")
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default()
    }
}

/// `gridos-setup canary wait NAME -n gridos -o json` (and `extra`), started in the background.
fn canary_wait(canary: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gridos-setup"))
        .args(["canary", "wait", canary, "-n", APP_NS, "-o", "json"])
        .args(["--timeout", "150s"])
        .args(extra)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("canary wait")
}

/// The app as the user's chart would create it: Deployment gridos and, with ingress-nginx, its
/// Ingress to Service gridos (which Flagger generates from the Canary). With the Gateway API the
/// chart has no route: Flagger owns the HTTPRoute.
async fn create_app(c: &Client, run: &Canary, layer: Layer) {
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "gridos", "namespace": APP_NS, "labels": {"app.kubernetes.io/name": "gridos"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "gridos"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "gridos"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "gridos",
                        "image": OLD_IMAGE,
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(c.clone(), APP_NS)
        .create(&PostParams::default(), &dep)
        .await
        .expect("create Deployment gridos");
    if layer == Layer::GatewayApi {
        return;
    }
    let ing: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(json!({
        "metadata": {"name": "gridos", "namespace": APP_NS},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": HOST, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "gridos", "port": {"number": 80}}},
            }]}}],
        },
    }))
    .unwrap();
    let api = Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(c.clone(), APP_NS);
    let until = Instant::now() + Duration::from_secs(30);
    while let Err(e) = api.create(&PostParams::default(), &ing).await {
        assert!(
            Instant::now() < until,
            "create Ingress gridos: {e}\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn set_image(c: &Client, image: &str) {
    set_image_of(c, "gridos", image).await;
}

/// Runs one PromQL query against the real Prometheus; returns the result vector.
fn prom_query(q: &str) -> Vec<Value> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            "http://127.0.0.1:9090/api/v1/query",
            "--data-urlencode",
        ])
        .arg(format!("query={q}"))
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(v["status"], "success", "query {q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn cluster_flagger_healthy_rollout_is_promoted() {
    let _l = cluster_lock().await;
    let run = Canary::start(Layer::IngressNginx, &["canary.interval=10s"]).await;
    // Prometheus found the controller pods through our scrape configuration (kubernetes_sd).
    let up = prom_query(r#"up{app_kubernetes_io_component="controller"}"#);
    assert!(
        up.iter().any(|s| s["value"][1] == "1"),
        "Prometheus scrapes the controller pods: {up:?}\n{}",
        run.logs()
    );
    expect_promotion(&run, "registry.example/gridos:1.1.0").await;
    // The load tester got both webhooks: the pre-rollout acceptance test and the rollout load test.
    let lt = run.proc("loadtester").log();
    assert!(lt.contains("curl -sS"), "pre-rollout webhook ran:\n{lt}");
    assert!(lt.contains("hey -z"), "rollout webhook ran:\n{lt}");
    // The canary's series as ingress-nginx labels them, through the real scrape path.
    let series = prom_query(
        r#"sum by (canary, service) (nginx_ingress_controller_requests{namespace="gridos",ingress="gridos"})"#,
    );
    assert!(
        series
            .iter()
            .any(|s| s["metric"]["canary"] == "gridos-gridos-canary-80"),
        "canary series: {series:?}"
    );
    // Every panel of our Grafana dashboard returns data from the real Prometheus, with the
    // dashboard variables set to the app namespace and the Canary's name.
    let cm = Api::<ConfigMap>::namespaced(run.c.clone(), FLAGGER_NS)
        .get("grafana-dashboards")
        .await
        .expect("ConfigMap grafana-dashboards");
    let dashboard: Value = serde_json::from_str(
        cm.data
            .as_ref()
            .and_then(|d| d.get("canary.json"))
            .expect("canary.json"),
    )
    .expect("dashboard JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let q = expr
                .replace("$namespace", APP_NS)
                .replace("$canary", "gridos");
            let data = prom_query(&q);
            assert!(
                !data.is_empty(),
                "panel {:?} query {q} returned no data\n{}",
                panel["title"],
                run.logs()
            );
            queries += 1;
        }
    }
    assert!(queries > 0, "the dashboard has queries");
    eprintln!("flagger test: {queries} dashboard queries returned data");
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_flagger_errors_roll_back_and_alert() {
    let _l = cluster_lock().await;
    // A local receiver for the alert provider (Slack's webhook API: one JSON POST per message).
    let receiver = std::net::TcpListener::bind("127.0.0.1:0").expect("receiver");
    let addr = receiver.local_addr().unwrap();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    {
        let got = got.clone();
        std::thread::spawn(move || {
            for conn in receiver.incoming().map_while(Result::ok) {
                let mut r = BufReader::new(conn);
                let mut len = 0usize;
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                got.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = r.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
    }
    let run = Canary::start(
        Layer::IngressNginx,
        &[
            "canary.interval=5s",
            "canary.threshold=2",
            "alerting.provider=slack",
            "alerting.secretName=gridos-alerts",
            "alerting.channel=releases",
        ],
    )
    .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "gridos-alerts", "namespace": APP_NS},
        "stringData": {"address": format!("http://{addr}/hook")},
    }))
    .unwrap();
    Api::<Secret>::namespaced(run.c.clone(), APP_NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("alert Secret");
    let (_, err) = expect_rollback(&run, "registry.example/gridos:1.1.0-err3").await;
    // Flagger names its built-in request-success-rate check "success rate" in its warning
    assert!(
        err.contains("advancement success rate"),
        "names the failed metric: {err}"
    );
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = got.lock().unwrap().clone();
        // Flagger's rollback alert: its notifier's text for a rollback on failed checks
        if let Some(m) = msgs
            .iter()
            .find(|m| m.contains("Failed checks threshold reached 2"))
        {
            assert!(m.contains("gridos.gridos"), "names the canary: {m}");
            break;
        }
        assert!(
            Instant::now() < until,
            "the receiver got no rollback message: {msgs:?}\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    reset(&run.c).await;
}

/// Releases `image` on a running canary and asserts Flagger promoted it with no failed check:
/// `canary wait` exits 0 having seen every step weight, and the primary runs the new image.
async fn expect_promotion(run: &Canary, image: &str) {
    let (code, summary, err) = run.release(image).await;
    assert_eq!(
        code,
        0,
        "canary wait exits 0: {err}\n{summary}\n{}",
        run.logs()
    );
    assert_eq!(summary["weights_seen"], json!([10, 25, 50]), "{summary}");
    assert_eq!(
        summary["failedChecks"],
        0,
        "no failed checks: {summary}\n{}",
        run.logs()
    );
    assert_eq!(run.primary_image().await, image);
}

/// Releases `image` on a running canary and asserts Flagger rolled it back: `canary wait` exits 1
/// and the primary keeps the old image. Returns the wait's summary and stderr.
async fn expect_rollback(run: &Canary, image: &str) -> (Value, String) {
    let (code, summary, err) = run.release(image).await;
    assert_eq!(
        code,
        1,
        "canary wait exits 1: {err}\n{summary}\n{}",
        run.logs()
    );
    assert_eq!(
        run.primary_image().await,
        OLD_IMAGE,
        "primary keeps the old image"
    );
    (summary, err)
}

#[tokio::test]
async fn cluster_flagger_slow_canary_rolls_back_on_latency() {
    let _l = cluster_lock().await;
    let run = Canary::start(
        Layer::IngressNginx,
        &["canary.interval=5s", "canary.threshold=2"],
    )
    .await;
    let (_, err) = expect_rollback(&run, "registry.example/gridos:1.1.0-slow700").await;
    assert!(err.contains("latency-p99"), "names latency-p99: {err}");
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_flagger_prometheus_down_never_promotes() {
    let _l = cluster_lock().await;
    let mut run = Canary::start(
        Layer::IngressNginx,
        &["canary.interval=5s", "canary.threshold=2"],
    )
    .await;
    set_image(&run.c, "registry.example/gridos:1.1.0").await;
    let wait = canary_wait("gridos", &[]);
    // Stop Prometheus once traffic shifts (the analysis has begun).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let cd = run.canary().await;
        if cd.data["status"]["canaryWeight"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no weight after 60s\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if let Some(p) = run.procs.iter_mut().find(|p| p.name == "prometheus") {
        p.stop();
    }
    let out = tokio::task::spawn_blocking(move || wait.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert_ne!(
        code,
        0,
        "canary wait never exits 0 without metrics: {}",
        stderr(&out)
    );
    let cd = run.canary().await;
    assert_eq!(
        cd.data["status"]["phase"],
        "Failed",
        "{}\n{}",
        cd.data["status"],
        run.logs()
    );
    assert!(
        stderr(&out).contains("failed checks") || stderr(&out).contains("failed check"),
        "reports the failed checks: {}",
        stderr(&out)
    );
    assert_eq!(run.primary_image().await, OLD_IMAGE);
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_flagger_failing_pre_rollout_stops_the_rollout() {
    let _l = cluster_lock().await;
    let run = Canary::start(
        Layer::IngressNginx,
        &["canary.interval=5s", "canary.threshold=2"],
    )
    .await;
    // Every answer of this version is a 503, so the acceptance test's curl fails.
    let (summary, _) = expect_rollback(&run, "registry.example/gridos:1.1.0-err100").await;
    assert_eq!(
        summary["weights_seen"],
        json!([]),
        "no traffic shifted: {summary}"
    );
    let lt = run.proc("loadtester").log();
    assert!(
        lt.contains("curl -sS"),
        "the pre-rollout webhook reached the load tester:\n{lt}"
    );
    assert!(
        !lt.contains("hey -z"),
        "no rollout webhook after a failed pre-rollout:\n{lt}"
    );
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_gateway_flagger_healthy_rollout_is_promoted() {
    let _l = cluster_lock().await;
    // 15s, not 10s as for ingress-nginx: the first check after weight 10 needs two scrapes (5s
    // apart) of the canary's first series in Prometheus, which 10s did not always leave.
    let run = Canary::start(Layer::GatewayApi, &["canary.interval=15s"]).await;
    // Prometheus found the gateway pods through their prometheus.io annotations (job gateway-pods).
    let up = prom_query(r#"up{job="gateway-pods"}"#);
    assert!(
        up.iter().any(|s| s["value"][1] == "1"),
        "Prometheus scrapes the gateway pods: {up:?}\n{}",
        run.logs()
    );
    // Flagger made the HTTPRoute named after the Service, attached to our Gateway, and the
    // approuting-istio stand-in accepted it.
    let routes: Api<DynamicObject> =
        Api::namespaced_with(run.c.clone(), APP_NS, &gateway_api("HTTPRoute"));
    let route = routes
        .get("gridos")
        .await
        .expect("HTTPRoute gridos (Flagger's)");
    assert_eq!(
        route.data["spec"]["parentRefs"][0],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gridos", "namespace": GATEWAY_NS}),
        "{}",
        route.data["spec"]
    );
    assert_eq!(route.data["spec"]["hostnames"], json!([HOST]));
    // The gateway's Service answers by Host, as the load tester and users reach it.
    let url = format!("http://gridos-approuting-istio.{GATEWAY_NS}/");
    let code = |host: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                "-H",
            ])
            .arg(format!("Host: {host}"))
            .arg(&url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(code(HOST), "200", "the app's host through the gateway");
    assert_eq!(
        code("other.example.com"),
        "404",
        "no route for another host"
    );
    expect_promotion(&run, "registry.example/gridos:1.1.0").await;
    // The rollout load test went through the gateway's Service with the app's host.
    let lt = run.proc("loadtester").log();
    assert!(
        lt.contains("hey -z") && lt.contains("gridos-approuting-istio.gridos-gateway"),
        "rollout webhook through the gateway ran:\n{lt}"
    );
    // The canary's series as the Istio gateway labels them, through the real scrape path.
    let series = prom_query(
        r#"sum by (destination_service) (istio_requests_total{reporter="source",destination_service="gridos-canary.gridos.svc.cluster.local"})"#,
    );
    assert!(!series.is_empty(), "canary series: {series:?}");
    // After promotion Flagger routes everything to the primary again.
    let route = routes.get("gridos").await.expect("HTTPRoute gridos");
    let weights: Vec<(String, i64)> = route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["name"].as_str().unwrap_or_default().to_string(),
                b["weight"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert!(
        weights.contains(&("gridos-primary".into(), 100))
            && weights.contains(&("gridos-canary".into(), 0)),
        "weights after promotion: {weights:?}"
    );
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_gateway_flagger_errors_roll_back() {
    let _l = cluster_lock().await;
    let run = Canary::start(
        Layer::GatewayApi,
        &["canary.interval=5s", "canary.threshold=2"],
    )
    .await;
    let (summary, err) = expect_rollback(&run, "registry.example/gridos:1.1.0-err3").await;
    assert!(
        err.contains("istio-success-rate"),
        "names the failed Istio check: {err}\n{summary}"
    );
    reset(&run.c).await;
}

async fn set_image_of(c: &Client, deployment: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": deployment, "image": image}]}}}});
    Api::<Deployment>::namespaced(c.clone(), APP_NS)
        .patch(
            deployment,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("set the image of {deployment}: {e}"));
}

/// A second app in the app namespace as Flagger's tutorials have it (podinfo's port 9898):
/// Deployment `name` and its Ingress for `host` to Service `name` port 80.
async fn create_tutorial_app(run: &Canary, name: &str, host: &str) {
    let dep: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": APP_NS, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": name,
                        "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                        "ports": [{"name": "http", "containerPort": 9898}],
                        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                    }],
                },
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(run.c.clone(), APP_NS)
        .create(&PostParams::default(), &dep)
        .await
        .unwrap_or_else(|e| panic!("create Deployment {name}: {e}"));
    let ing: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": 80}}},
            }]}}],
        },
    }))
    .unwrap();
    let api = Api::<k8s_openapi::api::networking::v1::Ingress>::namespaced(run.c.clone(), APP_NS);
    let until = Instant::now() + Duration::from_secs(30);
    while let Err(e) = api.create(&PostParams::default(), &ing).await {
        assert!(
            Instant::now() < until,
            "create Ingress {name}: {e}\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates a Canary from `spec` next to gridos' and waits until Flagger has initialized it.
async fn create_canary(run: &Canary, name: &str, spec: Value) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name, "namespace": APP_NS},
        "spec": spec,
    }))
    .unwrap();
    let api: Api<DynamicObject> =
        Api::namespaced_with(run.c.clone(), APP_NS, &gridos_setup::canary::resource());
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create Canary {name}: {e}"));
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let cd = api.get(name).await.expect("canary");
        if cd.data["status"]["phase"] == "Initialized" {
            return;
        }
        assert!(
            Instant::now() < until,
            "canary {name} not Initialized after 90s: {}\n{}",
            cd.data["status"],
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The load tester's `hey` through the ingress controller's Service with the app's Host (the
/// tutorials use the app's public name, which needs DNS for the load balancer), `extra` headers.
fn hey_through_ingress(host: &str, seconds: u32, headers: &str) -> String {
    format!(
        "hey -z {seconds}s -q 10 -c 2 {headers} -host {host} http://ingress-nginx-controller.ingress-nginx/"
    )
}

/// One request through the ingress controller's Service with the Host and `headers`; the body
/// names the backend Service that answered (the data-plane stand-in's app answers so).
fn through_ingress(host: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "5", "-H"])
        .arg(format!("Host: {host}"));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg("http://ingress-nginx-controller.ingress-nginx/")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn cluster_gate_a_good_redeploy_after_a_rollback_exits_0_once_promoted() {
    let _l = cluster_lock().await;
    let run = Canary::start(
        Layer::IngressNginx,
        &["canary.interval=10s", "canary.threshold=2"],
    )
    .await;
    // Rolled back at the acceptance test: no canary traffic, so no error stays in the metrics.
    expect_rollback(&run, "registry.example/gridos:1.1.0-err100").await;
    // While Failed, Flagger re-syncs the status every interval with a fresh lastTransitionTime
    // (its first tick after the new image too); the wait must not take that for a verdict.
    expect_promotion(&run, "registry.example/gridos:1.2.0").await;
    reset(&run.c).await;
}

/// The Promoted condition's lastTransitionTime and the Deployment's template change, in seconds.
async fn verdict_and_change_seconds(run: &Canary) -> (i64, i64) {
    let cd = run.canary().await;
    let decided = Snapshot::of(&cd).decided_at.expect("a decision time");
    let dep: DynamicObject = Api::namespaced_with(
        run.c.clone(),
        APP_NS,
        &kube::api::ApiResource::erase::<Deployment>(&()),
    )
    .get("gridos")
    .await
    .expect("Deployment gridos");
    let changed = gridos_setup::canary::template_changed_at(&dep).expect("template change");
    (decided.as_second(), changed.as_second())
}

#[tokio::test]
async fn cluster_gate_allow_idle_and_a_deploy_in_the_verdicts_second_wait_for_flagger() {
    let _l = cluster_lock().await;
    let run = Canary::start(Layer::IngressNginx, &["canary.interval=10s"]).await;
    // Right after `set image` the canary is still Initialized, from before the change: with
    // --allow-idle that is not "idle", the wait goes on to Flagger's verdict on the new image.
    set_image(&run.c, "registry.example/gridos:1.1.0").await;
    let (code, summary, err) = run.wait_for("gridos", &["--allow-idle"]).await;
    assert_eq!(code, 0, "{err}\n{summary}\n{}", run.logs());
    assert_eq!(summary["result"], "succeeded", "{summary}");
    assert_eq!(summary["weights_seen"], json!([10, 25, 50]), "{summary}");
    // The next deploy right after that verdict (the wait exits as the verdict arrives, so the
    // change lands in the same second nearly every time): the old Succeeded does not count.
    set_image(&run.c, "registry.example/gridos:1.2.0").await;
    let (decided, changed) = verdict_and_change_seconds(&run).await;
    eprintln!(
        "flagger test: verdict at {decided}, deploy at {changed} ({})",
        if decided == changed {
            "the same second"
        } else {
            "the next second"
        }
    );
    let (code, summary, err) = run.wait_for("gridos", &[]).await;
    assert_eq!(code, 0, "{err}\n{summary}\n{}", run.logs());
    assert_eq!(summary["weights_seen"], json!([10, 25, 50]), "{summary}");
    assert_eq!(run.primary_image().await, "registry.example/gridos:1.2.0");
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_gate_flaggers_tutorial_canary_with_builtin_checks_promotes() {
    let _l = cluster_lock().await;
    let run = Canary::start(Layer::IngressNginx, &["canary.interval=10s"]).await;
    let host = "podinfo.example.com";
    create_tutorial_app(&run, "podinfo", host).await;
    // Flagger's "NGINX Canary Deployments" tutorial Canary (docs.flagger.app, tutorials/
    // nginx-progressive-delivery), in the app namespace our load tester serves, with the
    // interval and steps shortened and the webhooks aimed at what runs here.
    let spec = json!({
        "provider": "nginx",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
        "progressDeadlineSeconds": 60,
        "service": {"port": 80, "targetPort": 9898},
        "analysis": {
            "interval": "10s",
            "threshold": 10,
            "maxWeight": 50,
            "stepWeight": 25,
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
            ],
            "webhooks": [
                {"name": "acceptance-test", "type": "pre-rollout",
                 "url": format!("http://flagger-loadtester.{APP_NS}/"), "timeout": "30s",
                 "metadata": {"type": "bash", "cmd": "curl -sf http://podinfo-canary/"}},
                {"name": "load-test", "url": format!("http://flagger-loadtester.{APP_NS}/"),
                 "timeout": "5s",
                 "metadata": {"cmd": hey_through_ingress(host, 7, "")}},
            ],
        },
    });
    create_canary(&run, "podinfo", spec).await;
    set_image_of(&run.c, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1").await;
    let (code, summary, err) = run.wait_for("podinfo", &[]).await;
    assert_eq!(code, 0, "{err}\n{summary}\n{}", run.logs());
    assert_eq!(summary["weights_seen"], json!([25, 50]), "{summary}");
    // Flagger advances a step only when every check passes (pkg/controller/scheduler.go
    // `runAnalysis`), so the promotion says the built-in request-duration check found values in
    // ingress-nginx's response-time histogram, which Prometheus kept.
    let series = prom_query(
        r#"sum(nginx_ingress_controller_response_duration_seconds_count{namespace="gridos",ingress="podinfo",canary!=""})"#,
    );
    assert!(!series.is_empty(), "response_duration_seconds kept");
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_gate_ab_canary_by_header_and_cookie_promotes_showing_iterations() {
    let _l = cluster_lock().await;
    let run = Canary::start(Layer::IngressNginx, &["canary.interval=10s"]).await;
    let host = "ab.example.com";
    create_tutorial_app(&run, "abtest", host).await;
    // Flagger's NGINX A/B testing tutorial: insiders by header, and a cookie (docs.flagger.app,
    // tutorials/nginx-progressive-delivery, "A/B Testing"); 3 iterations here.
    let lt = format!("http://flagger-loadtester.{APP_NS}/");
    let spec = json!({
        "provider": "nginx",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "abtest"},
        "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "abtest"},
        "progressDeadlineSeconds": 60,
        "service": {"port": 80, "targetPort": 9898},
        "analysis": {
            "interval": "10s",
            "threshold": 5,
            "iterations": 3,
            "match": [
                {"headers": {"x-canary": {"exact": "insider"}}},
                {"headers": {"cookie": {"exact": "canary"}}},
            ],
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
            ],
            "webhooks": [
                {"name": "load-test-header", "url": lt, "timeout": "5s",
                 "metadata": {"cmd": hey_through_ingress(host, 7, "-H 'X-Canary: insider'")}},
                {"name": "load-test-cookie", "url": lt, "timeout": "5s",
                 "metadata": {"cmd": hey_through_ingress(host, 7, "-H 'Cookie: canary=always'")}},
            ],
        },
    });
    create_canary(&run, "abtest", spec).await;
    set_image_of(&run.c, "abtest", "ghcr.io/stefanprodan/podinfo:6.0.1").await;
    let wait = canary_wait("abtest", &[]);
    // During the analysis the canary Ingress routes by header and cookie only (the answer names
    // the backend: the apex Service `abtest`, which Flagger points at the primary, or the canary).
    let api: Api<DynamicObject> =
        Api::namespaced_with(run.c.clone(), APP_NS, &gridos_setup::canary::resource());
    let until = Instant::now() + Duration::from_secs(90);
    while api.get("abtest").await.expect("canary").data["status"]["iterations"]
        .as_i64()
        .unwrap_or(0)
        < 1
    {
        assert!(Instant::now() < until, "no iteration\n{}", run.logs());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        through_ingress(host, &["X-Canary: insider"]),
        "abtest-canary"
    );
    assert_eq!(
        through_ingress(host, &["Cookie: a=b; canary=always"]),
        "abtest-canary"
    );
    assert_eq!(through_ingress(host, &["Cookie: canary=never"]), "abtest");
    assert_eq!(through_ingress(host, &["X-Canary: outsider"]), "abtest");
    assert_eq!(through_ingress(host, &[]), "abtest");
    let out = tokio::task::spawn_blocking(move || wait.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines
        .iter()
        .find(|v| v["event"] == "summary")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{summary}\n{}",
        stderr(&out),
        run.logs()
    );
    assert_eq!(summary["iterations_seen"], json!([1, 2, 3]), "{summary}");
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "canary" && v["iteration"] == json!([2, 3])),
        "progress shows the iterations: {lines:?}"
    );
    reset(&run.c).await;
}

/// POSTs the load tester's webhook payload (`{"name","namespace"}`, the fields its gate reads:
/// pkg/loadtester/server.go) to one of its gate endpoints, as an approver would.
fn loadtester_gate(path: &str, canary: &str) {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", "-X", "POST", "-d"])
        .arg(json!({"name": canary, "namespace": APP_NS}).to_string())
        .arg(format!("http://127.0.0.1:{LOADTESTER_PORT}{path}"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "POST {path}: {}", stderr(&out));
}

#[tokio::test]
async fn cluster_gate_a_closed_confirm_promotion_gate_exits_5_naming_it() {
    let _l = cluster_lock().await;
    let run = Canary::start(Layer::IngressNginx, &["canary.interval=10s"]).await;
    let host = "gated.example.com";
    create_tutorial_app(&run, "gated", host).await;
    let lt = format!("http://flagger-loadtester.{APP_NS}");
    // Flagger's docs, "Manual Gating": confirm-promotion on the load tester's gate, and the gate
    // closed again after each rollout so the next release waits for its own approval.
    let spec = json!({
        "provider": "nginx",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gated"},
        "ingressRef": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "gated"},
        "service": {"port": 80, "targetPort": 9898},
        "analysis": {
            "interval": "10s",
            "threshold": 5,
            "stepWeights": [20, 40],
            "metrics": [
                {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
            ],
            "webhooks": [
                {"name": "approve-promotion", "type": "confirm-promotion", "url": format!("{lt}/gate/check")},
                {"name": "close-gate", "type": "post-rollout", "url": format!("{lt}/gate/close")},
            ],
        },
    });
    create_canary(&run, "gated", spec).await;
    set_image_of(&run.c, "gated", "ghcr.io/stefanprodan/podinfo:6.0.1").await;
    let (code, summary, err) = run.wait_for("gated", &[]).await;
    assert_eq!(code, 5, "{err}\n{summary}\n{}", run.logs());
    assert_eq!(summary["result"], "awaiting_approval", "{summary}");
    assert_eq!(summary["phase"], "WaitingPromotion", "{summary}");
    // Flagger zeroes canaryWeight at the gate; the canary Ingress still sends the last step's 40 %.
    assert_eq!(
        summary["activity"],
        json!({"state": "at_gate", "gate": "confirm-promotion", "webhook": "approve-promotion", "routed_weight": 40}),
        "{summary}"
    );
    assert!(
        err.contains("waiting for approval: Flagger holds the rollout at the confirm-promotion gate approve-promotion with 40% of the traffic on the canary"),
        "{err}"
    );
    // Opened, the wait goes on to the promotion, even started before Flagger's next look.
    loadtester_gate("/gate/open", "gated");
    let (code, summary, err) = run.wait_for("gated", &[]).await;
    assert_eq!(code, 0, "{err}\n{summary}\n{}", run.logs());
    assert_eq!(summary["result"], "succeeded", "{summary}");
    reset(&run.c).await;
}

#[tokio::test]
async fn cluster_gate_a_failure_from_one_step_on_rolls_back_there() {
    let _l = cluster_lock().await;
    let run = Canary::start(
        Layer::IngressNginx,
        &["canary.interval=10s", "canary.threshold=2"],
    )
    .await;
    // Healthy at 10 and 25 %, failing from 50 % on (the data-plane stand-in's `-atW`).
    let (summary, err) = expect_rollback(&run, "registry.example/gridos:1.1.0-err100-at50").await;
    assert_eq!(
        summary["weights_seen"],
        json!([10, 25, 50]),
        "{summary}\n{err}"
    );
    reset(&run.c).await;
}
