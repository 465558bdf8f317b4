//! The install command: plan, then (after a confirmation, or for `--dry-run` and `plan` a diff only) execute the same plan.
//!
//! Everything is read, decided and rendered by [`crate::plan`] before the first write;
//! [`crate::execute`] runs the stages. This module ties them to a request and builds the summary.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::apply::{ObjectResult, Outcome};
use crate::cluster::{self, ConnectRequest};
use crate::context::{self, RunContext, ms};
use crate::error::Error;
use crate::execute::{self, ExecuteOptions};
use crate::interrupt::Interrupt;
use crate::plan::{self, Plan, component_of};
use crate::profile::{self, Values, ValuesRequest};
use crate::progress::{Event, Reporter, State};

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
    /// Take the run lock before the plan's reads, waiting this long for another run's (`None`:
    /// no lock; dry runs never take it).
    pub lock_wait: Option<Duration>,
    /// Take over the Helm releases install-flagger.sh made (`--adopt-helm`).
    pub adopt_helm: bool,
    /// Keep Helm's release records when adopting (`--keep-helm-history`).
    pub keep_helm_history: bool,
    /// Adopt a controller Service of the other load-balancer kind (`--allow-address-change`).
    pub allow_address_change: bool,
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
    /// A switch of traffic layer: what goes, what comes, and what the user changes after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// The Helm releases taken over (in a plan: to be taken over), and what that does.
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

    fn of(
        plan: &Plan,
        ctx: &RunContext,
        dry_run: bool,
        objects: Vec<ObjectResult>,
        address: Option<String>,
    ) -> Self {
        let t = &ctx.timings;
        Summary {
            profile: plan.values.name.clone(),
            front: plan.values.front,
            host: plan.values.host.clone(),
            context: plan.cluster.context.clone(),
            server: plan.cluster.server.clone(),
            dry_run,
            address,
            internal: plan.internal(),
            objects,
            notices: plan.notices.clone(),
            switch: plan.switch.clone(),
            adoption: (!plan.adoption.is_empty()).then(|| plan.adoption.clone()),
            values: plan.values.clone(),
            durations: Durations {
                total_ms: ms(t.started.elapsed()),
                apply_ms: ms(t.apply),
                wait_ms: ms(t.wait),
            },
        }
    }
}

/// Resolves the values, connects once, and makes the plan: every read and decision, no write.
pub async fn plan(req: &InstallRequest) -> Result<Plan, Error> {
    plan_values(req, profile::resolve(&req.values)?).await
}

/// [`plan`] with the values already resolved from `req.values`.
pub async fn plan_values(req: &InstallRequest, values: Values) -> Result<Plan, Error> {
    plan_locked(
        req,
        values,
        &crate::progress::Recorder::default(),
        &Interrupt::new(),
    )
    .await
}

/// [`plan_values`] that, for an install that will write (`req.lock_wait`, not a dry run), first
/// takes the run lock, so that everything the plan reads and decides (the webhook certificate,
/// the ApplySet record, the controller Service) is read under it; the plan holds the lock.
/// Waiting for it is reported to `reporter`.
pub async fn plan_locked(
    req: &InstallRequest,
    values: Values,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Plan, Error> {
    let (cluster, probed) = cluster::connect_with(&req.connect, cluster::Probe::Discovery).await?;
    // What AKS must provide for the Gateway API is checked before the lock and any write.
    if values.traffic.layer == profile::TrafficLayer::GatewayApi {
        let minor = crate::gateway::kube_minor(&cluster).await?;
        crate::gateway::require(&cluster.client, minor).await?;
    }
    let lock = match req.lock_wait.filter(|_| !req.dry_run) {
        Some(wait) => {
            let on_wait = |w: crate::lock::LockWait| reporter.event(&w.event());
            let lock_req = crate::lock::LockRequest {
                command: "install",
                wait,
                on_wait: &on_wait,
            };
            Some(crate::lock::acquire(&cluster.client, &lock_req, interrupt).await?)
        }
        None => None,
    };
    // A run that found the lock taken discovers again under it: the holder may have added CRDs.
    let discovery = match probed {
        cluster::Probed::Discovery(d) if !lock.as_ref().is_some_and(|l| l.contended()) => Some(*d),
        _ => None,
    };
    // The run's time starts once the lock is held: waiting for it has its own limit.
    let started = tokio::time::Instant::now();
    let deadline = context::deadline_after(started, req.timeout);
    let planned = async {
        let mut plan = plan::gather(values, cluster, discovery, Some(deadline)).await?;
        plan.adoption = crate::adopt::decide(
            &plan,
            req.adopt_helm,
            req.keep_helm_history,
            req.force_conflicts,
        )
        .await?;
        if !req.allow_address_change {
            crate::adopt::same_address_kind(&plan)?;
        }
        plan.adopting = (req.adopt_helm || !plan.adoption.is_empty()) && !req.dry_run;
        crate::adopt::record(&mut plan);
        plan.started = started;
        Ok::<_, Error>(plan)
    }
    .await;
    match planned {
        Ok(mut plan) => {
            plan.lock = lock;
            Ok(plan)
        }
        Err(e) => {
            if let Some(l) = lock {
                l.release().await;
            }
            Err(e)
        }
    }
}

/// The cluster about to be changed, and what the plan noticed: printed before the first write.
fn announce(plan: &Plan, ctx: &RunContext, dry_run: bool) {
    ctx.reporter.event(&Event::Target {
        context: plan.cluster.context.clone(),
        server: plan.cluster.server.clone(),
        profile: plan.values.name.clone(),
        dry_run,
    });
    for n in &plan.notices {
        ctx.notice(n.clone());
    }
    for line in plan.adoption.lines() {
        ctx.notice(line);
    }
}

/// The plan as a diff (server-side dry run): what executing it would create, change and prune.
pub async fn preview(
    plan: &Plan,
    req: &InstallRequest,
    reporter: &dyn Reporter,
) -> Result<Summary, Error> {
    let mut ctx = RunContext::new(
        plan.client().clone(),
        plan.started,
        req.timeout,
        Interrupt::new(),
        reporter,
    );
    announce(plan, &ctx, true);
    let objects = plan.diff(req.force_conflicts, ctx.until()).await?;
    let components: std::collections::BTreeSet<String> =
        plan.objects.iter().map(component_of).collect();
    for c in &components {
        ctx.running(c, "server-side dry run".into());
    }
    for r in &objects {
        reporter.event(&Event::Object {
            id: r.id.clone(),
            result: r.result.as_str().into(),
        });
    }
    for c in &components {
        let n = plan
            .objects
            .iter()
            .filter(|o| component_of(o) == *c)
            .count();
        ctx.finished(c, State::Done, format!("{n} objects"));
    }
    reporter.finish();
    Ok(Summary::of(plan, &ctx, true, objects, None))
}

/// Executes `plan` (made from `req`) and returns the summary; waits stop at `req.timeout`, counted
/// from `plan.started`. Stops on `interrupt`: no write starts after it, writes under way get
/// [`INTERRUPT_GRACE`] to finish, waits end at once; the error says what was applied.
pub async fn execute(
    mut plan: Plan,
    req: &InstallRequest,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Summary, Error> {
    // A lock the plan holds is released once the run ends, however it ends.
    let lock = plan.lock.take();
    let result = execute_under(plan, req, reporter, interrupt, lock.as_ref()).await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
}

/// [`execute`] under a lock the caller holds (and releases): the run stops if it is lost.
pub async fn execute_under(
    mut plan: Plan,
    req: &InstallRequest,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
    lock: Option<&crate::lock::RunLock>,
) -> Result<Summary, Error> {
    let tally = Tally {
        inner: reporter,
        applied: Mutex::new(Vec::new()),
    };
    let mut ctx = RunContext::new(
        plan.client().clone(),
        plan.started,
        req.timeout,
        interrupt.clone(),
        &tally,
    );
    announce(&plan, &ctx, false);
    let options = ExecuteOptions {
        force_conflicts: req.force_conflicts,
        no_wait: req.no_wait,
    };
    let lost = async {
        match lock {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        r = execute::execute(&mut plan, &mut ctx, options) => r,
        e = lost => Err(e.into()),
        _ = async {
            interrupt.cancelled().await;
            tokio::time::sleep(INTERRUPT_GRACE).await;
        } => Err(crate::interrupt::Interrupted.into()),
    };
    reporter.finish();
    match result {
        Err(_) if interrupt.requested() => Err(Error::Interrupted { done: tally.done() }),
        Err(e) => Err(e),
        Ok(done) => Ok(Summary::of(&plan, &ctx, false, done.objects, done.address)),
    }
}

/// Plans and then executes (or, with `req.dry_run`, previews) in one go, without questions; stops
/// on `interrupt` (see [`execute`]).
pub async fn install_with(
    req: &InstallRequest,
    reporter: &dyn Reporter,
    interrupt: &Interrupt,
) -> Result<Summary, Error> {
    let values = profile::resolve(&req.values)?;
    let plan = interrupt
        .guard(plan_locked(req, values, reporter, interrupt))
        .await
        .map_err(|e| before_any_write(e, interrupt))?;
    if req.dry_run {
        return interrupt.guard(preview(&plan, req, reporter)).await;
    }
    execute(plan, req, reporter, interrupt).await
}

/// An interruption before the first write says so.
pub fn before_any_write(e: Error, interrupt: &Interrupt) -> Error {
    if interrupt.requested() {
        Error::Interrupted {
            done: NOTHING_APPLIED.into(),
        }
    } else {
        e
    }
}

const NOTHING_APPLIED: &str = "nothing was applied yet";

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

impl Tally<'_> {
    /// What was applied before an interruption, for its message.
    fn done(&self) -> String {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.is_empty() {
            return NOTHING_APPLIED.to_string();
        }
        let count = |r: &str| applied.iter().filter(|a| *a == r).count();
        format!(
            "{} objects applied before stopping ({} created, {} configured, {} unchanged)",
            applied.len(),
            count("created"),
            count("configured"),
            count("unchanged")
        )
    }
}
