//! The install run: values -> connect -> decide install-time inputs -> render -> apply wave by wave -> wait -> prune -> summary.
//!
//! Everything is validated and rendered before the first write. The first write widens the
//! ApplySet record, so an interrupted run can always be resumed and pruned by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde::Serialize;
use tokio::time::Instant;

use crate::apply::{self, ApplyOptions, ApplySetRecord, Outcome, Resolver};
use crate::cluster::{self, ConnectRequest};
use crate::error::Error;
use crate::interrupt::Interrupt;
use crate::profile::{self, Toggle, Values, ValuesRequest};
use crate::progress::{Event, Reporter, State};
use crate::render::{self, Object, RenderInputs, Wave};
use crate::retry::with_retry;
use crate::{certs, wait};

pub const CONTROLLER_SERVICE: &str = "ingress-nginx-controller";
pub const ADMISSION_SERVICE: &str = "ingress-nginx-controller-admission";
pub const ADMISSION_SECRET: &str = "ingress-nginx-admission";
const INTERNAL_ANNOTATION: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";

/// Whether this run's controller Service is internal (an Azure internal load balancer).
fn controller_is_internal(values: &Values) -> bool {
    render::controller_service_annotations(values)
        .get(INTERNAL_ANNOTATION)
        .is_some_and(|v| v == "true")
}

fn is_internal(s: &Service) -> bool {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INTERNAL_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// A validated install (or plan) request: what the command line said, in the library's terms.
#[derive(Clone, Debug)]
pub struct InstallRequest {
    pub values: ValuesRequest,
    pub connect: ConnectRequest,
    /// Server-side dry run: nothing is written (`install --dry-run`, `plan`).
    pub dry_run: bool,
    pub no_wait: bool,
    pub timeout: Duration,
    pub force_conflicts: bool,
    /// Take the run lock, waiting this long for another run's (`None`: no lock, for dry runs).
    pub lock_wait: Option<Duration>,
    /// Take over the Helm releases install-flagger.sh made (`--adopt-helm`).
    pub adopt_helm: bool,
    /// Keep Helm's release records when adopting (`--keep-helm-history`).
    pub keep_helm_history: bool,
}

/// One object's result, as the summary lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ObjectResult {
    pub id: String,
    pub result: Outcome,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Durations {
    pub total_ms: u64,
    pub apply_ms: u64,
    pub wait_ms: u64,
}

/// What a run did: the final JSON object of `-o json`, and the source of the text summary.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub profile: String,
    pub front: profile::Front,
    pub host: String,
    pub context: String,
    pub server: String,
    pub dry_run: bool,
    /// The ingress controller's load-balancer address (IP or hostname), once known.
    pub address: Option<String>,
    pub internal: bool,
    pub objects: Vec<ObjectResult>,
    pub notices: Vec<String>,
    /// The Helm releases taken over (or, in a plan, to be taken over), and what that does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adoption: Option<crate::adopt::Plan>,
    pub durations: Durations,
    /// The values the run used, for the guidance printed after it.
    #[serde(skip)]
    pub values: Values,
}

impl Summary {
    pub fn count(&self, o: Outcome) -> usize {
        self.objects.iter().filter(|r| r.result == o).count()
    }

    pub fn changed(&self) -> bool {
        self.objects.iter().any(|r| r.result != Outcome::Unchanged)
    }
}

fn component_of(obj: &Object) -> String {
    let stem = obj.template.trim_end_matches(".yaml.hbs");
    match stem {
        "flagger-crds" => "flagger".into(),
        other => other.into(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Decides whether the ServiceMonitor is rendered and with which group, from what the cluster serves.
fn decide_service_monitor(
    values: &mut Values,
    resolver: &Resolver,
    notices: &mut Vec<String>,
) -> Result<bool, Error> {
    const GROUPS: [&str; 2] = ["monitoring.coreos.com", "azmonitoring.coreos.com"];
    let configured = values.service_monitor.group.clone();
    match values.service_monitor.enabled {
        Toggle::Off => Ok(false),
        Toggle::On if resolver.serves(&configured, "ServiceMonitor") => Ok(true),
        Toggle::On => Err(Error::Preflight {
            problem: format!("serviceMonitor.enabled is on but the cluster serves no ServiceMonitor in {configured}"),
            hint: "install prometheus-operator (or enable Azure Monitor managed Prometheus), or --set serviceMonitor.enabled=auto".into(),
        }),
        Toggle::Auto => {
            // The configured group first, then the other one (Azure Monitor ignores the operator's group).
            let order = std::iter::once(configured.as_str()).chain(GROUPS.into_iter().filter(|g| *g != configured));
            for g in order {
                if resolver.serves(g, "ServiceMonitor") {
                    values.service_monitor.group = g.to_string();
                    return Ok(true);
                }
            }
            notices.push(
                "no ServiceMonitor CRD (monitoring.coreos.com or azmonitoring.coreos.com): skipping the ServiceMonitor; \
                 Flagger's own Prometheus scrapes the controller through pod annotations"
                    .into(),
            );
            Ok(false)
        }
    }
}

/// The webhook certificate: the existing Secret's while valid, a new one otherwise.
async fn webhook_cert(
    client: &Client,
    values: &Values,
    notices: &mut Vec<String>,
) -> Result<render::WebhookCert, Error> {
    let ns = &values.namespaces.ingress;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = match with_retry("reading the webhook Secret", || {
        secrets.get_opt(ADMISSION_SECRET)
    })
    .await
    {
        Ok(s) => s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect::<BTreeMap<_, _>>()
        }),
        // A fresh cluster without the namespace yet answers 404 through get_opt; anything else is real.
        Err(e) => {
            return Err(Error::Api {
                context: format!("reading Secret {ns}/{ADMISSION_SECRET}"),
                source: e,
            });
        }
    };
    let (cert, decision) = certs::webhook_cert(
        existing.as_ref(),
        ADMISSION_SERVICE,
        ns,
        std::time::SystemTime::now(),
    )
    .map_err(|e| Error::Preflight {
        problem: format!("webhook certificate: {e}"),
        hint: "please report this as a bug".into(),
    })?;
    match decision {
        certs::CertDecision::Renewed { reason } => notices.push(format!(
            "renewing the admission webhook certificate: {reason}"
        )),
        certs::CertDecision::Created | certs::CertDecision::Reused => {}
    }
    Ok(cert)
}

/// Everything decided before the first write.
pub struct Prepared {
    pub values: Values,
    pub client: Client,
    pub context: String,
    pub server: String,
    pub resolver: Resolver,
    pub objects: Vec<Object>,
    pub record: ApplySetRecord,
    pub notices: Vec<String>,
    /// The controller Service as it was before this run, to notice a move between public and internal.
    pub previous_service: Option<Service>,
}

/// Resolves values, connects, reads what the render needs from the cluster and renders: no writes.
pub async fn prepare(req: &InstallRequest) -> Result<Prepared, Error> {
    profile::resolve(&req.values)?;
    let cluster = cluster::connect(&req.connect).await?;
    prepare_connected(req, cluster).await
}

/// [`prepare`] on a connected cluster: a run under the lock reads here, after taking it.
async fn prepare_connected(
    req: &InstallRequest,
    cluster: cluster::Cluster,
) -> Result<Prepared, Error> {
    let mut values = profile::resolve(&req.values)?;
    let client = cluster.client.clone();
    let mut cert_notices = Vec::new();
    // Independent reads: together they cost one round trip instead of three.
    let (resolver, webhook, record) = tokio::try_join!(
        async { Resolver::new(&client).await.map_err(Error::from) },
        webhook_cert(&client, &values, &mut cert_notices),
        async { apply::read_record(&client).await.map_err(Error::from) },
    )?;
    // Only a run that may switch the Service between public and internal needs it as it was.
    let previous_service = if record.ingress_internal == Some(controller_is_internal(&values)) {
        None
    } else {
        let services: Api<Service> = Api::namespaced(client.clone(), &values.namespaces.ingress);
        with_retry("reading the controller Service", || {
            services.get_opt(CONTROLLER_SERVICE)
        })
        .await
        .map_err(|e| Error::Api {
            context: format!("reading Service {CONTROLLER_SERVICE}"),
            source: e,
        })?
    };
    let mut notices = Vec::new();
    let service_monitor = decide_service_monitor(&mut values, &resolver, &mut notices)?;
    notices.append(&mut cert_notices);
    let inputs = RenderInputs {
        webhook,
        service_monitor,
    };
    let objects: Vec<Object> = render::render(&values, &inputs)?
        .iter()
        .map(apply::with_membership)
        .collect();
    Ok(Prepared {
        values,
        client,
        context: cluster.context,
        server: cluster.server,
        resolver,
        objects,
        record,
        notices,
        previous_service,
    })
}

struct Run<'a> {
    client: Client,
    /// Objects an adoption takes over from Helm (member ids): applied taking ownership.
    taken: BTreeSet<String>,
    /// Objects an adoption deletes and creates anew (ids): a dry run cannot show their apply.
    replaced: BTreeSet<String>,
    /// `--adopt-helm` (not a dry run): applied objects lose Helm's marks, also those an
    /// interrupted adoption applied before.
    adopting: bool,
    resolver: Resolver,
    before: ApplySetRecord,
    opts: ApplyOptions,
    progress: &'a dyn Reporter,
    results: Vec<ObjectResult>,
    started: BTreeMap<String, Instant>,
    interrupt: Interrupt,
    /// Objects already applied ahead of their wave (a re-run applies everything at once).
    applied_ahead: BTreeMap<String, DynamicObject>,
}

impl Run<'_> {
    fn running(&mut self, component: &str, detail: String) {
        self.started
            .entry(component.to_string())
            .or_insert_with(Instant::now);
        self.progress.event(&Event::Component {
            component: component.into(),
            state: State::Running,
            detail,
            elapsed_ms: None,
        });
    }

    fn finished(&self, component: &str, state: State, detail: String) {
        let elapsed = self.started.get(component).map(|t| ms(t.elapsed()));
        self.progress.event(&Event::Component {
            component: component.into(),
            state,
            detail,
            elapsed_ms: elapsed,
        });
    }

    async fn apply_wave(&mut self, objects: &[Object]) -> Result<Vec<DynamicObject>, Error> {
        let ahead: Option<Vec<DynamicObject>> = objects
            .iter()
            .map(|o| self.applied_ahead.get(&o.id()).cloned())
            .collect();
        if let Some(applied) = ahead {
            return Ok(applied);
        }
        let mut by_component: BTreeMap<String, usize> = BTreeMap::new();
        for o in objects {
            *by_component.entry(component_of(o)).or_default() += 1;
        }
        for (c, n) in by_component {
            self.running(
                &c,
                format!("applying {n} object{}", if n == 1 { "" } else { "s" }),
            );
        }
        let applied = match self.opts.dry_run {
            false => apply::apply_many_until(
                &self.client,
                &self.resolver,
                objects,
                self.opts,
                &self.before.members,
                &self.interrupt,
            )
            .await
            .map_err(|e| self.fail(objects, e))?,
            true => {
                let mut out = Vec::new();
                for o in objects {
                    out.push(self.plan_one(o).await?);
                }
                return Ok(out);
            }
        };
        let mut applied = applied;
        if self.adopting {
            self.strip_helm(objects, &mut applied).await?;
        }
        for (o, a) in objects.iter().zip(&applied) {
            let result = apply::outcome(&self.before, o, a);
            self.progress.event(&Event::Object {
                id: o.id(),
                result: result.as_str().into(),
            });
            self.results.push(ObjectResult { id: o.id(), result });
        }
        Ok(applied)
    }

    /// Adoption: removes Helm's marks from objects just applied and applies them once more, so
    /// what Helm set and gridos-setup does not render goes too (see `adopt::strip`).
    async fn strip_helm(
        &mut self,
        objects: &[Object],
        applied: &mut [DynamicObject],
    ) -> Result<(), Error> {
        let pairs: Vec<(Object, DynamicObject)> = objects
            .iter()
            .cloned()
            .zip(applied.iter().cloned())
            .collect();
        let stripped =
            crate::adopt::strip(&self.client, &self.resolver, &pairs, &self.taken, false).await?;
        if stripped.is_empty() {
            return Ok(());
        }
        let again = apply::apply_many_until(
            &self.client,
            &self.resolver,
            &stripped,
            self.opts,
            &self.before.members,
            &self.interrupt,
        )
        .await
        .map_err(|e| self.fail(&stripped, e))?;
        let by_id: BTreeMap<String, DynamicObject> =
            stripped.iter().map(Object::id).zip(again).collect();
        for (o, a) in objects.iter().zip(applied.iter_mut()) {
            if let Some(n) = by_id.get(&o.id()) {
                *a = n.clone();
            }
        }
        Ok(())
    }

    /// Dry run: compares the server's would-be object with the live one.
    async fn plan_one(&mut self, o: &Object) -> Result<DynamicObject, Error> {
        let mut opts = self.opts;
        // An object taken over from Helm is applied taking ownership, so its plan is too.
        opts.force |= self.taken.contains(&apply::member_id(o));
        let result = if self.replaced.contains(&o.id()) {
            let rendered = serde_json::from_value(o.data.clone()).map_err(|e| Error::Template {
                template: o.template.clone(),
                reason: e.to_string(),
            })?;
            (Outcome::Created, rendered)
        } else {
            plan_outcome(&self.client, &self.resolver, o, opts).await?
        };
        self.progress.event(&Event::Object {
            id: o.id(),
            result: result.0.as_str().into(),
        });
        self.results.push(ObjectResult {
            id: o.id(),
            result: result.0,
        });
        Ok(result.1)
    }

    fn fail(&self, objects: &[Object], e: apply::ApplyError) -> Error {
        if matches!(e, apply::ApplyError::Interrupted) {
            return crate::interrupt::Interrupted.into();
        }
        if let Some(c) = objects.first().map(component_of) {
            self.finished(&c, State::Failed, e.to_string());
        }
        Error::Apply(e)
    }
}

/// For a dry run: what applying `o` would do, and the server's answer (or the rendered object when
/// its kind is not served yet because its CRD is created in the same run).
pub async fn plan_outcome(
    client: &Client,
    resolver: &Resolver,
    o: &Object,
    opts: ApplyOptions,
) -> Result<(Outcome, DynamicObject), Error> {
    let rendered: DynamicObject =
        serde_json::from_value(o.data.clone()).map_err(|e| Error::Template {
            template: o.template.clone(),
            reason: e.to_string(),
        })?;
    let Ok((ar, caps)) = resolver.resolve(o) else {
        return Ok((Outcome::Created, rendered));
    };
    let api: Api<DynamicObject> = match (caps.scope, o.namespace()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            Api::namespaced_with(client.clone(), ns, &ar)
        }
        _ => Api::all_with(client.clone(), &ar),
    };
    let live = api.get_opt(o.name()).await.map_err(|e| Error::Api {
        context: format!("reading {}", o.id()),
        source: e,
    })?;
    let namespace_missing = o.namespace().is_some()
        && live.is_none()
        && !namespace_exists(client, o.namespace().unwrap_or_default()).await;
    if namespace_missing {
        return Ok((Outcome::Created, rendered));
    }
    let owned = live.as_ref().is_some_and(|l| {
        l.metadata
            .labels
            .as_ref()
            .and_then(|m| m.get(apply::PART_OF))
            .is_some_and(|v| *v == apply::applyset_id())
    });
    let dry = apply::apply_one(
        client,
        resolver,
        o,
        ApplyOptions {
            dry_run: true,
            ..opts
        },
        owned,
    )
    .await?;
    let outcome = match &live {
        None => Outcome::Created,
        Some(l) if normalized(l) == normalized(&dry) => Outcome::Unchanged,
        Some(_) => Outcome::Configured,
    };
    Ok((outcome, dry))
}

async fn namespace_exists(client: &Client, ns: &str) -> bool {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    matches!(api.get_opt(ns).await, Ok(Some(_)))
}

/// An object without the fields every write changes, to compare a dry run with the live object.
fn normalized(o: &DynamicObject) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for k in ["managedFields", "resourceVersion", "generation"] {
            m.remove(k);
        }
    }
    v
}

/// Refreshes discovery until every rendered kind resolves: the apiserver publishes a new CRD's kind
/// in discovery a moment after the CRD is Established, and discovery cannot be watched.
async fn refresh_discovery(
    client: &Client,
    current: Resolver,
    objects: &[Object],
    crds_changed: bool,
    deadline: Instant,
) -> Result<Resolver, Error> {
    let unresolved = |r: &Resolver| {
        objects
            .iter()
            .filter(|o| r.resolve(o).is_err())
            .map(Object::id)
            .collect::<Vec<_>>()
    };
    if !crds_changed && unresolved(&current).is_empty() {
        return Ok(current);
    }
    let mut delay = Duration::from_millis(50);
    loop {
        let resolver = Resolver::new(client).await?;
        let missing = unresolved(&resolver);
        if missing.is_empty() {
            return Ok(resolver);
        }
        if Instant::now() + delay > deadline {
            return Err(Error::Wait(wait::WaitError::Timeout {
                what: "discovery to serve the new kinds".into(),
                reason: format!("still not served: {}", missing.join(", ")),
            }));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Installs (or, with `dry_run`, plans) and returns the summary. Waits stop at `req.timeout`.
pub async fn install(req: &InstallRequest, progress: &dyn Reporter) -> Result<Summary, Error> {
    install_with(req, progress, &Interrupt::new()).await
}

/// Takes the run lock for `req` (unless it is a dry run or asks for none), reporting a wait.
async fn take_lock(
    req: &InstallRequest,
    client: &Client,
    progress: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Option<crate::lock::RunLock>, Error> {
    let Some(wait) = req.lock_wait.filter(|_| !req.dry_run) else {
        return Ok(None);
    };
    let on_wait = |w: crate::lock::LockWait| progress.event(&w.event());
    let lock_req = crate::lock::LockRequest {
        command: "install",
        wait,
        on_wait: &on_wait,
    };
    Ok(Some(
        crate::lock::acquire(client, &lock_req, interrupt).await?,
    ))
}

/// How long writes already under way may take to finish after an interruption; the binary's hard
/// stop comes later, so the exit within 2 s holds even against an unresponsive apiserver.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(1200);

/// The events of a run that an interruption's message reports: objects applied so far.
struct Tally<'a> {
    inner: &'a dyn Reporter,
    applied: Mutex<Vec<String>>,
}

impl Reporter for Tally<'_> {
    fn event(&self, ev: &Event) {
        if let Event::Object { result, .. } = ev {
            self.applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(result.clone());
        }
        self.inner.event(ev);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

/// [`install`] that stops on `interrupt`: no write starts after it, writes under way get
/// [`INTERRUPT_GRACE`] to finish, waits end at once; the error says what was applied.
pub async fn install_with(
    req: &InstallRequest,
    progress: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Summary, Error> {
    let (result, lock) = install_locked(req, progress, interrupt).await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
}

/// [`install_with`] that hands the run lock (when one was taken and the install succeeded) to
/// the caller, for a step that must run under it too (`--apply-dns`); the caller releases it.
pub async fn install_locked(
    req: &InstallRequest,
    progress: &dyn Reporter,
    interrupt: &Interrupt,
) -> (Result<Summary, Error>, Option<crate::lock::RunLock>) {
    // Bad input is refused before any request, the lock's included.
    if let Err(e) = profile::resolve(&req.values) {
        return (Err(e.into()), None);
    }
    let cluster = match cluster::connect(&req.connect).await {
        Ok(c) => c,
        Err(e) => return (Err(e.into()), None),
    };
    let lock = match take_lock(req, &cluster.client, progress, interrupt).await {
        Ok(l) => l,
        Err(e) => return (Err(e), None),
    };
    let tally = Tally {
        inner: progress,
        applied: Mutex::new(Vec::new()),
    };
    let lost = async {
        match &lock {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = run_install(req, cluster, &tally, interrupt) => r,
        e = lost => Err(e.into()),
        _ = async {
            interrupt.cancelled().await;
            tokio::time::sleep(INTERRUPT_GRACE).await;
        } => Err(crate::interrupt::Interrupted.into()),
    };
    let result = interrupted_summary(result, &tally, interrupt);
    match result {
        Ok(s) => (Ok(s), lock),
        Err(e) => {
            if let Some(l) = lock {
                l.release().await;
            }
            (Err(e), None)
        }
    }
}

/// An error of an interrupted run, saying what was applied before it stopped.
fn interrupted_summary(
    result: Result<Summary, Error>,
    tally: &Tally<'_>,
    interrupt: &Interrupt,
) -> Result<Summary, Error> {
    match result {
        Err(_) if interrupt.requested() => {
            let applied = tally.applied.lock().unwrap_or_else(|e| e.into_inner());
            let count = |r: &str| applied.iter().filter(|a| *a == r).count();
            let done = if applied.is_empty() {
                "nothing was applied yet".to_string()
            } else {
                format!(
                    "{} objects applied before stopping ({} created, {} configured, {} unchanged)",
                    applied.len(),
                    count("created"),
                    count("configured"),
                    count("unchanged")
                )
            };
            Err(Error::Interrupted { done })
        }
        r => r,
    }
}

async fn run_install(
    req: &InstallRequest,
    cluster: cluster::Cluster,
    progress: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Summary, Error> {
    let t0 = Instant::now();
    let deadline = t0 + req.timeout;
    crate::retry::limit_to(deadline);
    let p = prepare_connected(req, cluster).await?;
    progress.event(&Event::Target {
        context: p.context.clone(),
        server: p.server.clone(),
        profile: p.values.name.clone(),
        dry_run: req.dry_run,
    });
    for n in &p.notices {
        progress.event(&Event::Notice { message: n.clone() });
    }
    let now_record = ApplySetRecord {
        ingress_internal: Some(controller_is_internal(&p.values)),
        ..apply::record_for(&p.objects)
    };
    let stale = apply::stale(&p.record, &now_record);
    // Claims of other tools (Helm releases, other field managers) on what this run writes for the
    // first time, found before the first write so that a refused run writes nothing.
    let mut adoption = crate::adopt::Plan::default();
    if req.adopt_helm || !now_record.members.is_subset(&p.record.members) {
        let claims =
            crate::adopt::claims(&p.client, &p.resolver, &p.objects, &p.record.members).await?;
        if req.adopt_helm || !claims.releases.is_empty() {
            let extra: Vec<_> = claims.releases.iter().cloned().collect();
            adoption = crate::adopt::plan(
                &p.client,
                &p.resolver,
                &p.objects,
                &extra,
                req.keep_helm_history,
            )
            .await?;
        }
        if !adoption.is_empty() && !req.adopt_helm {
            return Err(crate::adopt::AdoptError::HelmInstalled {
                releases: adoption.releases,
            }
            .into());
        }
        if let Some(e) = claims.refusal(&crate::adopt::owned_ids(&adoption))
            && !req.force_conflicts
        {
            return Err(e);
        }
        for line in adoption.lines() {
            progress.event(&Event::Notice { message: line });
        }
    }
    if !req.dry_run {
        // Refused here, a user without the rights leaves the cluster untouched.
        crate::preflight::authorize_writes(&p.client, &p.resolver, &p.objects, &p.record).await?;
        interrupt.check()?;
        apply::write_record(
            &p.client,
            &p.record,
            &apply::union(&p.record, &now_record),
            false,
        )
        .await?;
        crate::adopt::before_apply(&p.client, &p.resolver, &adoption, false).await?;
    }
    let taken = crate::adopt::owned_ids(&adoption);
    let mut before = p.record.clone();
    before.members.extend(taken.iter().cloned());
    let mut run = Run {
        taken,
        replaced: adoption.replace.iter().map(|t| t.id.clone()).collect(),
        adopting: req.adopt_helm && !req.dry_run,
        client: p.client.clone(),
        resolver: p.resolver,
        before,
        opts: ApplyOptions {
            dry_run: req.dry_run,
            force: req.force_conflicts,
        },
        progress,
        results: Vec::new(),
        started: BTreeMap::new(),
        interrupt: interrupt.clone(),
        applied_ahead: BTreeMap::new(),
    };
    // A re-run: every object is already a member and every kind is served. The waves' order only
    // matters while objects are being created, so one concurrent apply saves four round trips.
    let mut ahead_time = Duration::ZERO;
    if !req.dry_run
        && now_record.members.is_subset(&p.record.members)
        && p.objects.iter().all(|o| run.resolver.resolve(o).is_ok())
    {
        let t = Instant::now();
        let applied = run.apply_wave(&p.objects).await?;
        run.applied_ahead = p.objects.iter().map(|o| o.id()).zip(applied).collect();
        ahead_time = t.elapsed();
        tracing::debug!(
            elapsed_ms = ms(ahead_time),
            "re-run: applied every object at once"
        );
    }
    let wave = |w: Wave| {
        p.objects
            .iter()
            .filter(|o| o.wave() == w)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut apply_time = ahead_time;
    let mut wait_time = Duration::ZERO;
    let wait_enabled = !req.dry_run && !req.no_wait;

    // Namespaces and CRDs; a new kind resolves only once the CRD is Established and discovery sees it.
    let t = Instant::now();
    let foundation = wave(Wave::Foundation);
    let applied = run.apply_wave(&foundation).await?;
    apply_time += t.elapsed();
    // Namespaces this run created may later be deleted by uninstall; record them at once, so an
    // interrupted run does not forget them.
    let created: BTreeSet<String> = foundation
        .iter()
        .zip(&applied)
        .filter(|(o, a)| {
            o.kind() == "Namespace" && apply::outcome(&p.record, o, a) == Outcome::Created
        })
        .map(|(o, _)| o.name().to_string())
        .collect();
    let mut now_record = now_record;
    now_record.created_namespaces = p
        .record
        .created_namespaces
        .iter()
        .filter(|n| now_record.members.contains(&apply::namespace_member_id(n)))
        .cloned()
        .chain(created.iter().cloned())
        .collect();
    if !req.dry_run && !created.is_empty() {
        interrupt.check()?;
        let widened = apply::union(&p.record, &now_record);
        apply::write_record(
            &p.client,
            &apply::union(&p.record, &apply::record_for(&p.objects)),
            &widened,
            false,
        )
        .await?;
    }
    if !req.dry_run {
        let t = Instant::now();
        let pending: Vec<_> = foundation
            .iter()
            .zip(&applied)
            .filter(|(o, a)| {
                o.kind() == "CustomResourceDefinition"
                    && !a.data["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
            })
            .map(|(o, _)| o.name().to_string())
            .collect();
        for name in &pending {
            run.running("flagger", format!("waiting for CRD {name}"));
        }
        interrupt
            .guard(async {
                try_join_all(
                    pending
                        .iter()
                        .map(|n| wait::crd_established(&run.client, n, deadline)),
                )
                .await
                .map_err(Error::from)
            })
            .await?;
        run.resolver = interrupt
            .guard(refresh_discovery(
                &run.client,
                run.resolver,
                &p.objects,
                !pending.is_empty(),
                deadline,
            ))
            .await?;
        wait_time += t.elapsed();
    }

    let t = Instant::now();
    run.apply_wave(&wave(Wave::Config)).await?;
    let workloads = wave(Wave::Workloads);
    let applied = run.apply_wave(&workloads).await?;
    apply_time += t.elapsed();

    let mut address = None;
    let mut controller_service: Option<Service> = None;
    for (o, a) in workloads.iter().zip(&applied) {
        if o.kind() == "Service" && o.name() == CONTROLLER_SERVICE {
            controller_service =
                serde_json::from_value(serde_json::to_value(a).unwrap_or_default()).ok();
        }
    }
    if wait_enabled {
        let t = Instant::now();
        let mut waits = Vec::new();
        for (o, a) in workloads.iter().zip(&applied) {
            if o.kind() != "Deployment" {
                continue;
            }
            let d: Option<Deployment> =
                serde_json::from_value(serde_json::to_value(a).unwrap_or_default()).ok();
            if d.as_ref().is_some_and(wait::deployment_is_rolled_out) {
                continue;
            }
            let component = component_of(o);
            run.running(
                &component,
                format!("waiting for Deployment {} to roll out", o.name()),
            );
            let client = run.client.clone();
            let (ns, name) = (
                o.namespace().unwrap_or_default().to_string(),
                o.name().to_string(),
            );
            waits.push(async move {
                wait::deployment_rolled_out(&client, &ns, &name, deadline)
                    .await
                    .map(|_| ())
                    .map_err(|e| (component, e))
            });
        }
        let all = interrupt
            .guard(async { Ok::<_, Error>(try_join_all(waits).await) })
            .await?;
        if let Err((component, e)) = all {
            run.finished(&component, State::Failed, e.to_string());
            return Err(e.into());
        }
        wait_time += t.elapsed();
    }

    // The webhook once its backend runs, then the custom resources.
    let t = Instant::now();
    run.apply_wave(&wave(Wave::Admission)).await?;
    run.apply_wave(&wave(Wave::Custom)).await?;
    apply_time += t.elapsed();

    let ingress_ns = p.values.namespaces.ingress.clone();
    let internal = controller_is_internal(&p.values);
    // Switching between public and internal makes Azure move the frontend: the old address is stale.
    let stale_address = p
        .previous_service
        .as_ref()
        .filter(|s| is_internal(s) != internal)
        .and_then(wait::service_address);
    if let Some(svc) = &controller_service {
        address = wait::service_address(svc).filter(|a| Some(a) != stale_address.as_ref());
    }
    if wait_enabled && address.is_none() {
        let t = Instant::now();
        run.running(
            "ingress-nginx",
            format!("waiting for the load-balancer address of Service {CONTROLLER_SERVICE}"),
        );
        let reporter: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let seen = reporter.clone();
        let result = interrupt
            .guard(async {
                Ok::<_, Error>(
                    wait::load_balancer_address(
                        &run.client,
                        &ingress_ns,
                        CONTROLLER_SERVICE,
                        stale_address.clone(),
                        deadline,
                        move |reason, message| {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(format!("{reason}: {message}"));
                        },
                    )
                    .await,
                )
            })
            .await?;
        for line in reporter.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            progress.event(&Event::Notice {
                message: format!("Service {ingress_ns}/{CONTROLLER_SERVICE}: {line}"),
            });
        }
        match result {
            Ok((_, a)) => address = Some(a),
            Err(e) => {
                run.finished("ingress-nginx", State::Failed, e.to_string());
                return Err(e.into());
            }
        }
        wait_time += t.elapsed();
    }

    // Members no longer rendered go only after everything else worked.
    if !stale.is_empty() {
        interrupt.check()?;
        for (s, deleted) in
            apply::prune_all(&run.client, &run.resolver, &stale, req.dry_run).await?
        {
            if deleted || req.dry_run {
                progress.event(&Event::Object {
                    id: s.id(),
                    result: Outcome::Pruned.as_str().into(),
                });
                run.results.push(ObjectResult {
                    id: s.id(),
                    result: Outcome::Pruned,
                });
            }
        }
    }
    if !adoption.is_empty() && !req.dry_run {
        interrupt.check()?;
        for id in crate::adopt::finish(&run.client, &run.resolver, &adoption, false).await? {
            progress.event(&Event::Notice {
                message: format!("{id} deleted (Helm release object)"),
            });
        }
    }
    if !req.dry_run {
        interrupt.check()?;
        apply::write_record(
            &run.client,
            &apply::union(&p.record, &now_record),
            &now_record,
            false,
        )
        .await?;
    }
    let components: Vec<String> = run.started.keys().cloned().collect();
    for c in components {
        let n = p.objects.iter().filter(|o| component_of(o) == c).count();
        run.finished(&c, State::Done, format!("{n} objects"));
    }
    progress.finish();
    Ok(Summary {
        profile: p.values.name.clone(),
        front: p.values.front,
        host: p.values.host.clone(),
        context: p.context,
        server: p.server,
        dry_run: req.dry_run,
        address,
        internal,
        objects: run.results,
        notices: p.notices,
        adoption: (!adoption.is_empty()).then_some(adoption),
        values: p.values.clone(),
        durations: Durations {
            total_ms: ms(t0.elapsed()),
            apply_ms: ms(apply_time),
            wait_ms: ms(wait_time),
        },
    })
}
