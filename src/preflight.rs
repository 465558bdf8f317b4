//! The checks of `check --pre` (can install work here, as me?) and `check` (is what was installed working?).
//!
//! `--pre` stops an install at its plan (see [`crate::plan`]) and asks [`crate::permissions`]
//! about every object; the report format is [`crate::report`]'s.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::networking::v1::IngressClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::adopt;
use crate::applyset::{self, Stale};
use crate::cluster::{self, Cluster, ConnectRequest};
use crate::error::{Error, InputError};
use crate::permissions::{self, Denial, bind_hint};
use crate::plan::{self, ADMISSION_SECRET, CONTROLLER_SERVICE, Plan, ServiceMonitorChoice};
use crate::profile::{self, ProfileSource, Values, ValuesRequest};
use crate::rbac;
use crate::render::Object;
use crate::report::{Check, Report, fail, pass, warn};

/// The host `check` and `rbac` render with when none is given: permissions do not depend on it.
pub const PLACEHOLDER_HOST: &str = "app.example.com";
/// The profile they render without `--profile`.
pub const DEFAULT_PROFILE: &str = "nginx";
/// Oldest Kubernetes minor version the pinned ingress-nginx and Flagger support.
pub const MIN_MINOR: u32 = 30;
/// Newest minor version the test control plane runs; newer ones get a warning, not a failure.
pub const TESTED_MINOR: u32 = 35;
/// The webhook certificate is renewed by install this long before it expires; `check` warns inside it.
const CERT_WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const AKS_NODE_LABEL: &str = "kubernetes.azure.com/cluster";
const APP_ROUTING_NAMESPACE: &str = "app-routing-system";

#[derive(Clone, Debug)]
pub struct CheckRequest {
    pub connect: ConnectRequest,
    pub values: ValuesRequest,
    /// Before install (`--pre`) rather than after it.
    pub pre: bool,
}

/// The values request with `check`'s and `rbac`'s defaults: profile nginx, a placeholder host.
pub fn defaulted(req: &ValuesRequest) -> Result<ValuesRequest, InputError> {
    let mut req = req.clone();
    if req.profile.is_none() {
        req.profile = Some(ProfileSource::Builtin(DEFAULT_PROFILE.into()));
    }
    match profile::resolve(&req) {
        Err(InputError::MissingHost) => {
            req.host = Some(PLACEHOLDER_HOST.into());
            profile::resolve(&req)?;
            Ok(req)
        }
        Err(e) => Err(e),
        Ok(_) => Ok(req),
    }
}

fn exec_plugin(req: &ConnectRequest) -> Check {
    const NAME: &str = "credentials";
    let kc = match &req.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    };
    // An unreadable kubeconfig is reported by the connection itself, with its fix.
    let Ok(kc) = kc else {
        return pass(NAME, "kubeconfig not read here; see the connection check");
    };
    let context = req.context.clone().or(kc.current_context.clone());
    let user = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == context.as_ref())
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone());
    let exec = kc
        .auth_infos
        .iter()
        .find(|a| Some(&a.name) == user.as_ref())
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.exec.as_ref());
    let Some(command) = exec.and_then(|e| e.command.clone()) else {
        return pass(
            NAME,
            "the kubeconfig carries the credentials (no exec plugin)",
        );
    };
    if cluster::runnable(&command) {
        pass(NAME, format!("exec plugin {command} is on PATH"))
    } else {
        let hint = if command == "kubelogin" {
            "install kubelogin (`az aks install-cli`) and put it on PATH".to_string()
        } else {
            format!("install {command} or put it on PATH; the kubeconfig runs it to get a token")
        };
        fail(
            NAME,
            format!("the kubeconfig's exec plugin {command} is not on PATH"),
            hint,
        )
    }
}

fn version_check(info: &k8s_openapi::apimachinery::pkg::version::Info, server: &str) -> Check {
    const NAME: &str = "API server";
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    };
    let minor: Option<u32> = digits(&info.minor).parse().ok();
    let version = &info.git_version;
    match (info.major.as_str(), minor) {
        ("1", Some(m)) if m < MIN_MINOR => fail(
            NAME,
            format!("{server} runs Kubernetes {version}, older than 1.{MIN_MINOR}"),
            format!("upgrade the cluster to 1.{MIN_MINOR} or newer (`az aks upgrade`)"),
        ),
        ("1", Some(m)) if m > TESTED_MINOR => warn(
            NAME,
            format!(
                "{server} runs Kubernetes {version}, newer than the 1.{TESTED_MINOR} gridos-setup was tested with"
            ),
            None,
        ),
        ("1", Some(_)) => pass(
            NAME,
            format!(
                "{server} answers, Kubernetes {version} (supported: 1.{MIN_MINOR} to 1.{TESTED_MINOR})"
            ),
        ),
        _ => warn(
            NAME,
            format!("{server} reports an unrecognised version {version}"),
            None,
        ),
    }
}

fn host_of(server: &str) -> &str {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

async fn aks(client: &Client, server: &str) -> Check {
    const NAME: &str = "AKS";
    let host = host_of(server);
    if host.ends_with(".azmk8s.io") {
        return pass(NAME, format!("server {host} is an AKS API server"));
    }
    let nodes: Api<Node> = Api::all(client.clone());
    match nodes
        .list(&ListParams::default().labels(AKS_NODE_LABEL).limit(1))
        .await
    {
        Ok(l) if !l.items.is_empty() => {
            pass(NAME, format!("nodes carry the {AKS_NODE_LABEL} label"))
        }
        Ok(_) => warn(
            NAME,
            format!(
                "not AKS (server {host}, no node labelled {AKS_NODE_LABEL}): the Azure load balancer annotations and the Azure guidance will not apply"
            ),
            None,
        ),
        Err(_) => warn(
            NAME,
            format!(
                "server {host} is not an AKS API server and the nodes cannot be listed to tell"
            ),
            None,
        ),
    }
}

/// The plan's ServiceMonitor decision as a line of the report.
fn service_monitor(choice: &ServiceMonitorChoice) -> Check {
    const NAME: &str = "ServiceMonitor";
    match choice {
        ServiceMonitorChoice::Off => pass(NAME, "switched off (serviceMonitor.enabled=off)"),
        ServiceMonitorChoice::Group(g) => pass(
            NAME,
            format!("served by {g}: install applies the ServiceMonitor there"),
        ),
        ServiceMonitorChoice::Skipped => warn(
            NAME,
            "no ServiceMonitor CRD (monitoring.coreos.com or azmonitoring.coreos.com): install skips it; Flagger's own Prometheus scrapes the controller",
            None,
        ),
    }
}

/// The Helm releases install-flagger.sh made (or any release running ingress-nginx, Flagger or
/// the load tester), each named once, from the release records and the Deployments Helm marks.
async fn helm_conflicts(client: &Client) -> Check {
    let api: Api<Deployment> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}={}", adopt::MANAGED_BY, adopt::HELM));
    let (deployments, records) = tokio::join!(api.list(&lp), adopt::find_releases(client));
    let deployments = match deployments {
        Ok(l) => l.items,
        Err(e) => {
            return fail(
                HELM_INSTALLS,
                format!("cannot list Deployments to look for Helm releases: {e}"),
                bind_hint(),
            );
        }
    };
    match records {
        Ok(records) => judge_helm(&helm_workloads(&deployments), records.keys()),
        Err(e) => fail(HELM_INSTALLS, e.to_string(), bind_hint()),
    }
}

const HELM_INSTALLS: &str = "Helm installs";

/// Release -> the Deployments it runs, for the releases that run ingress-nginx, Flagger or the
/// load tester (by the charts' `app.kubernetes.io/name`) or carry the old script's names.
fn helm_workloads(deployments: &[Deployment]) -> BTreeMap<adopt::Release, Vec<String>> {
    const APPS: [&str; 4] = [
        "ingress-nginx",
        "flagger",
        "loadtester",
        "flagger-loadtester",
    ];
    let mut found: BTreeMap<adopt::Release, Vec<String>> = BTreeMap::new();
    for d in deployments {
        let app = d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .map(String::as_str)
            .unwrap_or_default();
        let Some(release) = adopt::release_of(&d.metadata) else {
            continue;
        };
        if !APPS.contains(&app) && !adopt::KNOWN_RELEASES.contains(&release.name.as_str()) {
            continue;
        }
        found.entry(release).or_default().push(format!(
            "Deployment {}/{}",
            d.metadata.namespace.clone().unwrap_or_default(),
            d.metadata.name.clone().unwrap_or_default()
        ));
    }
    found
}

/// Judges the Helm workloads found and the release records: records alone (kept on purpose) warn,
/// workloads fail with the adoption offered. `helm uninstall` would delete what the adoption keeps
/// (the controller Service and its address, the IngressClass, Flagger's ClusterRole): never offered.
fn judge_helm<'a>(
    found: &BTreeMap<adopt::Release, Vec<String>>,
    records: impl Iterator<Item = &'a adopt::Release>,
) -> Check {
    let kept: Vec<String> = records
        .filter(|r| adopt::KNOWN_RELEASES.contains(&r.name.as_str()) && !found.contains_key(*r))
        .map(|r| r.describe())
        .collect();
    if found.is_empty() {
        if kept.is_empty() {
            return pass(
                HELM_INSTALLS,
                "no ingress-nginx, Flagger or load tester installed by Helm",
            );
        }
        return warn(
            HELM_INSTALLS,
            format!(
                "Helm release records without Helm-managed workloads (kept by --keep-helm-history?): {}",
                kept.join(", ")
            ),
            Some("`helm list` still shows them; `helm uninstall` would delete what gridos-setup now owns, so delete the records instead (`kubectl delete secret -n NAMESPACE -l owner=helm,name=RELEASE`)".into()),
        );
    }
    let lines: Vec<String> = found
        .iter()
        .map(|(r, what)| format!("release {} ({})", r.describe(), what.join(", ")))
        .collect();
    let runs_controller = found.iter().any(|(r, what)| {
        r.name == "ingress-nginx"
            || what
                .iter()
                .any(|w| w.ends_with("/ingress-nginx-controller"))
    });
    let frees = if runs_controller {
        " (it deletes the controller Service, which frees the address the DNS points at)"
    } else {
        ""
    };
    fail(
        HELM_INSTALLS,
        format!("already installed by Helm: {}", lines.join("; ")),
        format!(
            "`gridos-setup install --adopt-helm` takes them over and keeps the controller Service and its load-balancer address (`gridos-setup plan --adopt-helm` shows every change first); do not `helm uninstall` them first{frees}"
        ),
    )
}

/// After install: nothing of the Helm installs left (see [`adopt::Remains`]).
fn helm_remains(remains: &adopt::Remains) -> Check {
    if remains.is_empty() {
        return pass(
            HELM_INSTALLS,
            "no Helm release, Helm-run Deployment or other Flagger left",
        );
    }
    fail(HELM_INSTALLS, remains.problems().join("; "), remains.hint())
}

async fn app_routing(client: &Client) -> Check {
    const NAME: &str = "AKS app routing";
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_opt(APP_ROUTING_NAMESPACE).await {
        Ok(None) => pass(NAME, "the application routing add-on is not enabled"),
        Ok(Some(_)) => warn(
            NAME,
            format!(
                "the AKS application routing add-on runs its own NGINX (namespace {APP_ROUTING_NAMESPACE}) beside the one gridos-setup installs"
            ),
            Some(
                "if nothing uses it: `az aks approuting disable -g RESOURCE_GROUP -n CLUSTER`"
                    .into(),
            ),
        ),
        Err(e) => warn(
            NAME,
            format!("cannot read namespace {APP_ROUTING_NAMESPACE}: {e}"),
            None,
        ),
    }
}

/// The network policy engines AKS offers, by the DaemonSet that runs each on every node
/// (Learn, "Secure traffic between pods by using network policies in AKS"; Azure
/// container-networking docs/npm.md: "one azure-npm instance on each Kubernetes node"): Azure
/// Network Policy Manager `azure-npm` in kube-system; Calico `calico-node`, in `calico-system`
/// where AKS installs it through the Tigera operator and in kube-system on older clusters; Azure
/// CNI powered by Cilium `cilium` in kube-system. AKS's default is none: NetworkPolicies are then
/// stored but not enforced.
pub const POLICY_ENGINES: [(&str, &str, &str); 4] = [
    ("kube-system", "azure-npm", "Azure Network Policy Manager"),
    ("calico-system", "calico-node", "Calico"),
    ("kube-system", "calico-node", "Calico"),
    ("kube-system", "cilium", "Cilium"),
];

/// Judges the DaemonSets found (`namespace`, `name`) against [`POLICY_ENGINES`].
pub fn judge_policy_engine(found: &[(String, String)]) -> Check {
    const NAME: &str = "network policy engine";
    let running = POLICY_ENGINES
        .iter()
        .find(|(ns, name, _)| found.iter().any(|(n, d)| n == ns && d == name));
    match running {
        Some((ns, ds, engine)) => pass(
            NAME,
            format!("{engine} (DaemonSet {ns}/{ds}) enforces the load tester's NetworkPolicy"),
        ),
        None => warn(
            NAME,
            "none runs (no Azure NPM, Calico or Cilium DaemonSet): AKS enforces no NetworkPolicy without one, \
             so the load tester, which runs the shell commands sent to it, is open to every pod in the cluster",
            Some(
                "choose a network policy engine for the cluster (Azure NPM, Calico or Cilium; Learn, \
                 \"Secure traffic between pods by using network policies in AKS\")"
                    .into(),
            ),
        ),
    }
}

/// Whether a network policy engine runs: one metadata list of DaemonSets per namespace it uses.
async fn network_policy_engine(client: &Client) -> Check {
    let mut namespaces: Vec<&str> = POLICY_ENGINES.iter().map(|(ns, _, _)| *ns).collect();
    namespaces.dedup();
    let mut found = Vec::new();
    for ns in namespaces {
        let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => found.extend(
                list.items
                    .into_iter()
                    .filter_map(|d| d.metadata.name)
                    .map(|name| (ns.to_string(), name)),
            ),
            Err(e) => {
                return warn(
                    "network policy engine",
                    format!(
                        "cannot list DaemonSets in {ns}, so cannot tell whether the load tester's NetworkPolicy is enforced: {e}"
                    ),
                    Some(bind_hint()),
                );
            }
        }
    }
    judge_policy_engine(&found)
}

async fn ingress_class(client: &Client, objects: &[Object]) -> Option<Check> {
    const NAME: &str = "IngressClass";
    let rendered = objects.iter().find(|o| o.kind() == "IngressClass")?;
    let name = rendered.name();
    let api: Api<IngressClass> = Api::all(client.clone());
    Some(match api.get_opt(name).await {
        Ok(None) => pass(NAME, format!("{name} is free")),
        Ok(Some(ic)) => {
            let ours = applyset::is_member(ic.metadata.labels.as_ref());
            let controller = ic.spec.and_then(|s| s.controller).unwrap_or_default();
            if ours {
                pass(NAME, format!("{name} is gridos-setup's"))
            } else if let Some(r) = adopt::release_of(&ic.metadata) {
                fail(
                    NAME,
                    format!(
                        "IngressClass {name} belongs to Helm release {} (controller {controller})",
                        r.describe()
                    ),
                    "`gridos-setup install --adopt-helm` takes it over with the release",
                )
            } else {
                fail(
                    NAME,
                    format!(
                        "IngressClass {name} exists and belongs to another install (controller {controller})"
                    ),
                    "remove that ingress controller and its IngressClass first, or re-run install with --force-conflicts to take it over",
                )
            }
        }
        Err(e) => fail(
            NAME,
            format!("cannot read IngressClass {name}: {e}"),
            bind_hint(),
        ),
    })
}

/// Runs `check` (`req.pre`: `check --pre`). Bad input is an error (exit 2); everything the
/// cluster answers, even an unreachable API server, is a line of the report.
pub async fn check(req: &CheckRequest) -> Result<Report, Error> {
    let values_req = defaulted(&req.values)?;
    let values = profile::resolve(&values_req)?;
    let mut report = Report::default();
    report.checks.push(exec_plugin(&req.connect));
    let cluster = match cluster::connect(&req.connect).await {
        Ok(c) => c,
        // A missing exec plugin is refused by connect as bad input; here it is a report line already.
        Err(e) if e.is_input() && !report.failed() => return Err(e.into()),
        // An exec plugin that cannot run already fails here; the credentials line above says why.
        Err(e) => {
            report
                .checks
                .push(fail("API server", format!("cannot connect: {e}"), e.hint()));
            return Ok(report);
        }
    };
    // Connecting asked `/version` already: the answer is the version check.
    if let Some(version) = &cluster.version {
        report.checks.push(version_check(version, &cluster.server));
    }
    if req.pre {
        pre(values, &cluster, &mut report).await?;
    } else {
        post(&cluster, &mut report).await?;
    }
    Ok(report)
}

async fn pre(values: Values, cluster: &Cluster, report: &mut Report) -> Result<(), Error> {
    let client = &cluster.client;
    let gateway = values.traffic.layer == profile::TrafficLayer::GatewayApi;
    report.checks.push(aks(client, &cluster.server).await);
    // What install would apply, decided exactly as install decides it: its plan.
    let plan = plan::gather(values.clone(), cluster.clone(), None, None).await;
    match &plan {
        Ok(p) => report.checks.push(service_monitor(&p.service_monitor)),
        Err(Error::Preflight { problem, hint }) => {
            report
                .checks
                .push(fail("ServiceMonitor", problem.clone(), hint.clone()))
        }
        Err(e) => report.checks.push(fail(
            "read access",
            format!(
                "install could not read what it needs: {}",
                e.to_string().replace('\n', " ")
            ),
            e.hint().unwrap_or_else(bind_hint),
        )),
    }
    report.checks.push(helm_conflicts(client).await);
    report.checks.push(network_policy_engine(client).await);
    if gateway {
        // Application routing is a prerequisite here, not a second NGINX.
        let minor = crate::gateway::kube_minor(cluster).await?;
        report
            .checks
            .extend(crate::gateway::checks(client, minor).await);
    } else {
        report.checks.push(app_routing(client).await);
    }
    if let Ok(p) = &plan {
        if let Some(c) = ingress_class(client, &p.objects).await {
            report.checks.push(c);
        }
        object_permissions(p, report).await?;
    }
    rules(client, &values, report).await
}

/// May this user apply every object of the plan (and the ApplySet record)?
async fn object_permissions(p: &Plan, report: &mut Report) -> Result<(), Error> {
    const NAME: &str = "permissions (objects)";
    let mut objects = p.objects.clone();
    objects.push(applyset::parent_object());
    let perms = permissions::object_permissions(p.client(), &p.resolver, &objects, None).await?;
    if perms.denials.is_empty() && perms.errors.is_empty() {
        report.checks.push(pass(
            NAME,
            format!(
                "every object can be applied ({} server-side dry runs, {} access reviews where a dry run cannot run yet)",
                perms.dry_runs, perms.reviews
            ),
        ));
    }
    if !perms.denials.is_empty() {
        let what: Vec<_> = perms.denials.iter().map(Denial::describe).collect();
        report.checks.push(fail(
            NAME,
            format!("forbidden: {}", what.join("; ")),
            bind_hint(),
        ));
    }
    if !perms.errors.is_empty() {
        report.checks.push(fail(
            "dry run",
            perms.errors.join("; "),
            "each message names the object and the cause: an invalid value, an admission policy that refuses it, or a review this user may not ask for",
        ));
    }
    Ok(())
}

/// Does this user hold every rule of the ClusterRole `gridos-setup rbac` prints?
async fn rules(client: &Client, values: &Values, report: &mut Report) -> Result<(), Error> {
    const RULES: &str = "permissions (rbac)";
    let rules = permissions::installer_rules(values)?;
    let missing = permissions::missing_rules(client, &rules).await?;
    report.checks.push(if missing.is_empty() {
        pass(
            RULES,
            format!(
                "every rule of ClusterRole {} is held ({} rules)",
                rbac::ROLE_NAME,
                rules.len()
            ),
        )
    } else {
        fail(
            RULES,
            format!("missing: {}", missing.join(", ")),
            bind_hint(),
        )
    });
    Ok(())
}

/// When the PEM certificate expires, read without showing any of it.
fn not_after(pem: &[u8]) -> Option<SystemTime> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let secs = cert.validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(0))
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Whether the controller's address outlives its Service. Without a pre-created public IP
/// (`azure-pip-name`) or a fixed private one (`azure-load-balancer-ipv4`, or the deprecated
/// `spec.loadBalancerIP`), AKS creates the address with the Service and deletes it with it
/// (AKS "Use a static public IP address and DNS label"), so DNS records and backend pools that
/// name it break on an uninstall or a profile switch.
fn address_stability(svc: Option<&Service>, ns: &str, name: &str) -> Check {
    const CHECK: &str = "stable address";
    let Some(svc) = svc else {
        return warn(CHECK, format!("Service {ns}/{name} is missing"), None);
    };
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let set = |k: &str| {
        annotations
            .get(&format!("service.beta.kubernetes.io/{k}"))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let fixed_ip = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.clone());
    if let Some(pip) = set("azure-pip-name") {
        return pass(
            CHECK,
            format!("public IP {pip} is pre-created (azure-pip-name) and outlives the Service"),
        );
    }
    if let Some(ip) = set("azure-load-balancer-ipv4").or(fixed_ip) {
        return pass(
            CHECK,
            format!("the load balancer keeps the fixed address {ip}"),
        );
    }
    let internal = set("azure-load-balancer-internal").is_some_and(|v| v == "true");
    let fix = if internal {
        "set ingressController.service.privateIp to a free address of the cluster's subnet and re-run install"
    } else {
        "pre-create a Standard static public IP and set ingressController.service.publicIpName (see the install guidance), then re-run install"
    };
    let detail = match set("azure-dns-label-name") {
        Some(label) => format!(
            "the address is AKS-managed and changes with the Service; only the DNS label {label} follows it"
        ),
        None => "the address is AKS-managed: uninstalling or switching profile deletes it, and the next one differs".into(),
    };
    warn(CHECK, detail, Some(fix.into()))
}

async fn post(cluster: &Cluster, report: &mut Report) -> Result<(), Error> {
    let client = &cluster.client;
    let record = applyset::read(client, None)
        .await
        .map_err(|e| Error::Apply(crate::apply::ApplyError::Parent(e)))?;
    if !record.exists {
        report.checks.push(fail(
            "installed",
            "gridos-setup has not installed anything here (no ApplySet kube-system/gridos-setup)",
            "run `gridos-setup check --pre`, then `gridos-setup install --profile nginx --host app.example.com --yes`",
        ));
        return Ok(());
    }
    let members = record.parsed_members();
    crds(client, &members, report).await;
    report.checks.push(network_policy_engine(client).await);
    let status = crate::status::status_of(cluster, &record).await?;
    report.checks.push(helm_remains(&status.helm));
    for c in &status.components {
        report.checks.push(deployment(c));
    }
    let controller = members
        .iter()
        .find(|m| m.kind == "Service" && m.name == CONTROLLER_SERVICE);
    if let Some(svc) = controller {
        report.checks.push(address(svc, &status));
        let ns = svc.namespace.clone().unwrap_or_default();
        report.checks.push(address_stability(
            status.load_balancer.as_ref(),
            &ns,
            &svc.name,
        ));
        report.checks.push(warn(
            "ingress-nginx",
            crate::guidance::RETIREMENT_WARNING,
            None,
        ));
        report.checks.extend(webhook_trust(client, &ns).await);
        report.checks.push(webhook_certificate(client, &ns).await);
    }
    if let Some(gw) = members.iter().find(|m| m.kind == "Gateway") {
        let minor = crate::gateway::kube_minor(cluster).await?;
        report
            .checks
            .extend(crate::gateway::checks(client, minor).await);
        report.checks.push(gateway(gw, &status));
        let ns = gw.namespace.clone().unwrap_or_default();
        let service = format!("{}{}", gw.name, crate::render::GATEWAY_SERVICE_SUFFIX);
        report.checks.push(address_stability(
            status.load_balancer.as_ref(),
            &ns,
            &service,
        ));
    }
    for m in members.iter().filter(|m| m.kind == "Canary") {
        report.checks.push(canary(m, &status));
    }
    Ok(())
}

/// The Gateway is Programmed and has an address.
fn gateway(gw: &Stale, status: &crate::status::StatusReport) -> Check {
    let ns = gw.namespace.clone().unwrap_or_default();
    let id = format!("Gateway {ns}/{}", gw.name);
    match (&status.gateway, &status.address) {
        (Some(g), Some(a)) if g.programmed => {
            let scope = status.scope();
            pass(
                "address",
                format!("{id} is Programmed with {scope} address {a}"),
            )
        }
        (Some(g), _) => fail(
            "address",
            format!("{id} is not Programmed with an address: {}", g.conditions),
            format!(
                "`kubectl -n {ns} describe gateway {}` and the events of Service {}{} say why",
                gw.name,
                gw.name,
                crate::render::GATEWAY_SERVICE_SUFFIX
            ),
        ),
        (None, _) => fail("address", format!("{id} cannot be read"), bind_hint()),
    }
}

/// Every recorded CRD is Established.
async fn crds(client: &Client, members: &[Stale], report: &mut Report) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for m in members
        .iter()
        .filter(|m| m.kind == "CustomResourceDefinition")
    {
        let name = format!("CRD {}", m.name);
        report.checks.push(match crds.get_opt(&m.name).await {
            Ok(Some(c)) if crate::wait::crd_is_established(&c) => pass(&name, "Established"),
            Ok(Some(_)) => fail(
                &name,
                "not Established",
                format!(
                    "`kubectl describe crd {}` shows why; re-run install",
                    m.name
                ),
            ),
            Ok(None) => fail(&name, "missing", "re-run install to create it"),
            Err(e) => fail(&name, format!("cannot read it: {e}"), bind_hint()),
        });
    }
}

fn deployment(c: &crate::status::ComponentStatus) -> Check {
    let name = format!("Deployment {}", c.deployment);
    if c.rolled_out {
        return pass(&name, format!("ready {}/{}", c.ready, c.desired));
    }
    let (ns, rest) = c.deployment.split_once('/').unwrap_or_default();
    let deployment = rest.split(' ').next().unwrap_or_default();
    fail(
        &name,
        format!("not ready ({}/{})", c.ready, c.desired),
        format!("`kubectl -n {ns} describe deployment {deployment}` and its pods' events say why"),
    )
}

fn address(svc: &Stale, status: &crate::status::StatusReport) -> Check {
    let ns = svc.namespace.clone().unwrap_or_default();
    match &status.address {
        Some(a) => {
            let scope = status.scope();
            pass(
                "address",
                format!("Service {ns}/{} has {scope} address {a}", svc.name),
            )
        }
        None => fail(
            "address",
            format!("Service {ns}/{} has no load-balancer address", svc.name),
            format!(
                "`kubectl -n {ns} describe service {}` shows the cloud provider's events",
                svc.name
            ),
        ),
    }
}

/// Whether the admission webhook trusts the CA of the certificate its Secret serves: if they come
/// from different runs, the API server's TLS to the webhook fails and, with failurePolicy Fail,
/// every Ingress create and update is refused.
async fn webhook_trust(client: &Client, ns: &str) -> Option<Check> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    // A missing or unreadable Secret is the certificate check's to report.
    let secret = secrets.get_opt(ADMISSION_SECRET).await.ok().flatten()?;
    Some(webhook_trusts(client, ns, &secret).await)
}

async fn webhook_trusts(client: &Client, ns: &str, secret: &Secret) -> Check {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    const NAME: &str = "webhook CA";
    let ca = secret
        .data
        .as_ref()
        .and_then(|d| d.get(crate::certs::CA_CRT))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    // The configuration is named after the Secret, as upstream names both.
    let vwc = match api.get_opt(ADMISSION_SECRET).await {
        Ok(Some(v)) => v,
        Ok(None) => {
            return fail(
                NAME,
                format!(
                    "ValidatingWebhookConfiguration {} is missing",
                    ADMISSION_SECRET
                ),
                "re-run `gridos-setup install` (same profile and host) to create it",
            );
        }
        Err(e) => {
            return fail(
                NAME,
                format!(
                    "cannot read ValidatingWebhookConfiguration {}: {e}",
                    ADMISSION_SECRET
                ),
                bind_hint(),
            );
        }
    };
    let mismatched: Vec<String> = vwc
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| &b.0) != Some(&ca))
        .map(|w| w.name)
        .collect();
    if mismatched.is_empty() {
        pass(
            NAME,
            format!(
                "the webhook trusts the CA of Secret {ns}/{}",
                ADMISSION_SECRET
            ),
        )
    } else {
        fail(
            NAME,
            format!(
                "the caBundle of webhook {} in ValidatingWebhookConfiguration {} is not the CA of Secret {ns}/{}: the API server cannot reach the webhook, so every Ingress create and update is refused",
                mismatched.join(", "),
                ADMISSION_SECRET,
                ADMISSION_SECRET
            ),
            "re-run `gridos-setup install` with the same profile and host: it writes both from the Secret's certificate (one run at a time: the run lock serialises them)",
        )
    }
}

/// The webhook certificate is readable and not within [`CERT_WARN_BEFORE`] of its expiry.
async fn webhook_certificate(client: &Client, ns: &str) -> Check {
    const NAME: &str = "webhook certificate";
    let renew = "re-run `gridos-setup install` to make a new one";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = match secrets.get_opt(ADMISSION_SECRET).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return fail(
                NAME,
                format!("Secret {ns}/{ADMISSION_SECRET} is missing"),
                renew,
            );
        }
        Err(e) => {
            return fail(
                NAME,
                format!("cannot read Secret {ns}/{ADMISSION_SECRET}: {e}"),
                bind_hint(),
            );
        }
    };
    let expiry = s
        .data
        .as_ref()
        .and_then(|d| d.get(crate::certs::TLS_CRT))
        .and_then(|b| not_after(&b.0));
    match expiry {
        Some(t) if t < SystemTime::now() + CERT_WARN_BEFORE => warn(
            NAME,
            format!("expires on {}", date(t)),
            Some("re-run `gridos-setup install` to renew it".into()),
        ),
        Some(t) => pass(NAME, format!("valid until {}", date(t))),
        None => fail(
            NAME,
            format!("Secret {ns}/{ADMISSION_SECRET} holds no readable certificate"),
            renew,
        ),
    }
}

fn canary(m: &Stale, status: &crate::status::StatusReport) -> Check {
    let ns = m.namespace.clone().unwrap_or_default();
    let name = format!("Canary {ns}/{}", m.name);
    let live = status
        .canaries
        .iter()
        .find(|c| c.namespace == ns && c.name == m.name);
    match live {
        None => fail(&name, "missing", "re-run install to create it"),
        Some(c) if c.phase == "Failed" => warn(
            &name,
            format!(
                "phase Failed: Flagger rolled the last release back ({} failed checks)",
                c.failed_checks
            ),
            Some(format!(
                "`kubectl -n {ns} describe canary {}` shows why",
                m.name
            )),
        ),
        Some(c) => pass(&name, format!("phase {}, weight {}", c.phase, c.weight)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Mark;

    fn release(name: &str, namespace: &str) -> adopt::Release {
        adopt::Release {
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    /// No hint ever offers a `helm uninstall` that would delete what adoption keeps, and "frees
    /// the address" is said only while a release runs the ingress-nginx controller.
    #[test]
    fn helm_hints_offer_adoption_and_say_frees_the_address_only_for_the_controller() {
        let mut found = BTreeMap::new();
        found.insert(
            release("flagger-loadtester", "test"),
            vec!["Deployment test/flagger-loadtester".to_string()],
        );
        let c = judge_helm(&found, std::iter::empty());
        assert_eq!(c.result, Mark::Fail);
        let hint = c.hint.clone().unwrap();
        assert!(
            hint.contains("--adopt-helm") && !hint.contains("frees"),
            "{hint}"
        );
        assert!(hint.contains("do not `helm uninstall`"), "{hint}");
        found.insert(
            release("ingress-nginx", "ingress-nginx"),
            vec!["Deployment ingress-nginx/ingress-nginx-controller".to_string()],
        );
        let c = judge_helm(&found, std::iter::empty());
        assert!(c.hint.unwrap().contains("frees the address"));
        assert_eq!(c.detail.matches("release ingress-nginx ").count(), 1);
    }

    #[test]
    fn kept_release_records_alone_warn_and_nothing_passes() {
        let none = BTreeMap::new();
        assert_eq!(judge_helm(&none, std::iter::empty()).result, Mark::Pass);
        let kept = [release("flagger", "ingress-nginx"), release("other", "x")];
        let c = judge_helm(&none, kept.iter());
        assert_eq!(c.result, Mark::Warn, "{c:?}");
        assert!(
            c.detail.contains("flagger (namespace ingress-nginx)"),
            "{c:?}"
        );
        assert!(
            !c.detail.contains("other"),
            "only the old script's releases: {c:?}"
        );
    }

    #[test]
    fn a_network_policy_engine_is_found_by_its_daemonset_and_its_absence_warns() {
        let found = |ns: &str, name: &str| vec![(ns.to_string(), name.to_string())];
        for (ns, name, engine) in POLICY_ENGINES {
            let c = judge_policy_engine(&found(ns, name));
            assert_eq!(c.result, Mark::Pass, "{ns}/{name}: {c:?}");
            assert!(c.detail.contains(engine), "{c:?}");
        }
        for none in [
            vec![],
            found("kube-system", "kube-proxy"),
            found("calico-system", "cilium"),
        ] {
            let c = judge_policy_engine(&none);
            assert_eq!(c.result, Mark::Warn, "{none:?}: {c:?}");
            assert!(c.detail.contains("load tester"), "{c:?}");
            assert!(c.hint.unwrap().contains("Azure NPM, Calico or Cilium"));
        }
    }

    #[test]
    fn hosts_are_taken_from_server_urls() {
        assert_eq!(
            host_of("https://aks-x-dns.hcp.westeurope.azmk8s.io:443/"),
            "aks-x-dns.hcp.westeurope.azmk8s.io"
        );
        assert_eq!(host_of("https://127.0.0.1:6443"), "127.0.0.1");
    }

    #[test]
    fn versions_are_judged_by_minor() {
        let info = |minor: &str| k8s_openapi::apimachinery::pkg::version::Info {
            major: "1".into(),
            minor: minor.into(),
            git_version: format!("v1.{minor}.0"),
            ..Default::default()
        };
        assert_eq!(version_check(&info("29"), "s").result, Mark::Fail);
        assert_eq!(version_check(&info("33+"), "s").result, Mark::Pass);
        assert_eq!(version_check(&info("36"), "s").result, Mark::Warn);
    }
}
