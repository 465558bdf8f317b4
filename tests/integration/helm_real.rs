//! The cluster as install-flagger.sh left it, made by the real Helm (v3.22.0, built by
//! `scripts/testenv-build` from `helm.sh/helm/v3`) with the real charts: ingress-nginx 4.15.1 from
//! `../shared/fixtures/charts` (beside the repository), flagger 1.44.0 and loadtester 0.38.0 from
//! the `github.com/fluxcd/flagger@v1.44.0` module's `charts/` (copied next to the testenv binaries).
//!
//! The three calls are the old script's, verbatim (Flagger's NGINX tutorial and AKS's unmanaged
//! ingress guide), run by bash as the script ran them, with Helm's homes in a temp dir.
//!
//! What cannot happen here, and what the rig does instead: the chart's admission hooks run
//! kube-webhook-certgen (`ingress-nginx-admission-create`, pre-install: creates Secret
//! `ingress-nginx-admission`, type Opaque, keys `ca`, `cert`, `key`; `ingress-nginx-admission-patch`,
//! post-install: patches the ValidatingWebhookConfiguration's `caBundle`; kubernetes/ingress-nginx
//! images/kube-webhook-certgen, `cmd/create.go` and `cmd/patch.go`). Under kwok their pods complete
//! without running anything, the Jobs succeed and Helm deletes them (`hook-delete-policy:
//! before-hook-creation,hook-succeeded`); so [`certgen`] does their two writes through the real API,
//! as that program would have, and the controller (whose pod mounts the Secret) finds it there.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::util::{TempDir, kubeconfig, on_path, stderr, stdout};

/// install-flagger.sh's three calls (nginx shape; `$INTERNAL` adds the appgw shape's internal
/// load-balancer annotation), charts given by path instead of the repositories the script added.
const OLD_SCRIPT: &str = r#"
helm upgrade --install ingress-nginx "$NGINX_CHART" --namespace ingress-nginx --create-namespace \
  --set controller.metrics.enabled=true \
  --set-string controller.podAnnotations."prometheus\.io/scrape"=true \
  --set-string controller.podAnnotations."prometheus\.io/port"=10254 \
  --set controller.service.annotations."service\.beta\.kubernetes\.io/azure-load-balancer-health-probe-request-path"=/healthz \
  --set controller.service.externalTrafficPolicy=Local \
  ${INTERNAL:+--set-string controller.service.annotations."service\.beta\.kubernetes\.io/azure-load-balancer-internal"=true} \
  $AGAIN --wait
helm upgrade --install flagger "$FLAGGER_CHART" --namespace ingress-nginx \
  --set prometheus.install=true --set meshProvider=nginx $AGAIN --wait
helm upgrade --install flagger-loadtester "$LOADTESTER_CHART" --namespace test --create-namespace \
  $AGAIN --wait
"#;

/// Helm with its cache, config and data homes in a temp dir of its own.
pub struct Helm {
    home: TempDir,
}

impl Helm {
    pub fn new() -> Helm {
        Helm {
            home: TempDir::new("helm"),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for (var, dir) in [
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ] {
            cmd.env(var, self.home.0.join(dir));
        }
        cmd.env("KUBECONFIG", kubeconfig())
            .env("PATH", path_with_helm());
        cmd
    }

    /// `helm ARGS`, its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command("helm").args(args).output().expect("run helm")
    }

    /// `helm list -A -q`: the release names Helm sees.
    pub fn releases(&self) -> Vec<String> {
        let out = self.run(&["list", "-A", "-q"]);
        assert!(out.status.success(), "helm list: {}", stderr(&out));
        stdout(&out).lines().map(String::from).collect()
    }

    /// Runs the old script's calls, each to its end; returns how long Helm took.
    pub fn old_script(&self, internal: bool) -> Duration {
        let (took, out) = self.script(internal, "", "-e");
        assert!(
            out.status.success(),
            "the old script's helm calls failed:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        took
    }

    /// The old script run again after an adoption, with Helm's `--take-ownership` (Helm >= 3.17),
    /// every call attempted. Helm takes the objects back, but the flagger chart's pods are refused
    /// in namespace ingress-nginx, which gridos-setup labels `pod-security.kubernetes.io/enforce:
    /// restricted` and whose securityContext the chart does not meet: that call's `--wait` waits
    /// out its timeout and fails, as it would on AKS. The test shortens Helm's 5-minute default.
    pub fn old_script_again(&self, internal: bool) -> (Duration, Output) {
        self.script(internal, "--take-ownership --timeout 30s", "+e")
    }

    fn script(&self, internal: bool, again: &str, errexit: &str) -> (Duration, Output) {
        let t = Instant::now();
        let charts = flagger_charts();
        let out = self
            .command("bash")
            .args([errexit, "-uo", "pipefail", "-c", OLD_SCRIPT])
            .env("NGINX_CHART", nginx_chart())
            .env("FLAGGER_CHART", charts.join("flagger"))
            .env("LOADTESTER_CHART", charts.join("loadtester"))
            .env("INTERNAL", if internal { "1" } else { "" })
            .env("AGAIN", again)
            .output()
            .expect("run bash");
        (t.elapsed(), out)
    }
}

/// PATH with the directory of the testenv's `helm` first.
fn path_with_helm() -> std::ffi::OsString {
    let helm = on_path("helm");
    let dir = helm.parent().expect("bin dir").to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("PATH")
}

/// The ingress-nginx 4.15.1 chart, in the shared fixtures beside the repository.
fn nginx_chart() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/charts/ingress-nginx-4.15.1");
    assert!(
        p.join("Chart.yaml").is_file(),
        "{} is missing: the shared fixtures folder sits beside the repository",
        p.display()
    );
    p
}

/// Flagger's charts (`flagger-charts` beside the testenv binaries on PATH).
fn flagger_charts() -> PathBuf {
    let p = on_path("helm")
        .parent()
        .expect("bin dir")
        .join("flagger-charts");
    assert!(
        p.join("flagger/Chart.yaml").is_file(),
        "{} is missing: `scripts/testenv build` copies it",
        p.display()
    );
    p
}

/// kube-webhook-certgen's two writes, which its hook Jobs cannot make under kwok (see the module
/// doc): the webhook Secret (create) and the webhook's CA bundle (patch). The key material is a
/// real self-signed CA and a serving certificate for the admission Service, made by openssl.
pub async fn certgen(c: &Client, dir: &std::path::Path) {
    const NS: &str = "ingress-nginx";
    const NAME: &str = "ingress-nginx-admission";
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "36500",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/O=nil1",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/O=nil2",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:ingress-nginx-controller-admission,DNS:ingress-nginx-controller-admission.ingress-nginx.svc\n",
    )
    .expect("write san.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "36500",
        "-extfile",
        "san.ext",
        "-out",
        "tls.crt",
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).expect("read pem");
    let ca = read("ca.crt");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": NAME, "namespace": NS},
        "type": "Opaque",
        "data": {
            "ca": base64(&ca),
            "cert": base64(&read("tls.crt")),
            "key": base64(&read("tls.key")),
        }
    }))
    .expect("secret");
    let pp = PostParams {
        field_manager: Some("kube-webhook-certgen".into()),
        ..PostParams::default()
    };
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    if secrets.get_opt(NAME).await.expect("read secret").is_none() {
        secrets.create(&pp, &secret).await.expect("create secret");
    }
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(c.clone());
    let patch = serde_json::json!([
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": base64(&ca)}
    ]);
    vwcs.patch(
        NAME,
        &PatchParams {
            field_manager: Some("kube-webhook-certgen".into()),
            ..PatchParams::default()
        },
        &Patch::Json::<()>(serde_json::from_value(patch).expect("json patch")),
    )
    .await
    .expect("patch caBundle");
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Removes what the old script left that `reset` does not: namespace test, the release records
/// and the cluster-scoped objects labelled as Helm's (reset removes only gridos-setup's).
pub async fn delete_helm_state(c: &Client) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::networking::v1::IngressClass;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{DeleteParams, ListParams};
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=Helm");
    let dp = DeleteParams::default();
    macro_rules! sweep {
        ($t:ty) => {
            let api: Api<$t> = Api::all(c.clone());
            if let Ok(l) = api.list(&lp).await {
                for o in l.items {
                    let _ = api.delete(&kube::ResourceExt::name_any(&o), &dp).await;
                }
            }
        };
    }
    sweep!(ClusterRole);
    sweep!(ClusterRoleBinding);
    sweep!(IngressClass);
    sweep!(ValidatingWebhookConfiguration);
    let records: Api<Secret> = Api::all(c.clone());
    if let Ok(l) = records
        .list_metadata(&ListParams::default().labels("owner=helm"))
        .await
    {
        for s in l.items {
            let ns = s.metadata.namespace.unwrap_or_default();
            let _ = Api::<Secret>::namespaced(c.clone(), &ns)
                .delete(&s.metadata.name.unwrap_or_default(), &dp)
                .await;
        }
    }
    crate::util::delete_namespace(c, "test").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    if let Ok(Some(ns)) = namespaces.get_opt("test").await {
        let uid = ns.metadata.uid.unwrap_or_default();
        crate::util::wait_for(
            namespaces,
            "test",
            120,
            "namespace test deleted",
            kube::runtime::wait::conditions::is_deleted(&uid),
        )
        .await;
    }
}
