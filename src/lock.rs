//! The run lock: one `coordination.k8s.io/v1` Lease that serialises gridos-setup's writing commands (install, uninstall) on a cluster.
//!
//! Two runs that both write (two pipelines deploying at once) would otherwise each read the webhook
//! certificate, the ApplySet record and the controller Service, decide, and write over each other.
//! The holder renews the Lease every [`RENEW_EVERY`]; a waiter takes it over once it has seen the
//! same renewal unchanged for [`LEASE_DURATION`] on its own clock (as client-go's leader election
//! does), so clock skew between machines cannot cut a live holder's lease short. A holder that was
//! killed is therefore taken over at most [`LEASE_DURATION`] after a waiter first sees its last
//! renewal. A holder on the same host whose process is gone is taken over at once. Every change
//! of the Lease carries its resourceVersion, so two waiters cannot both win.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams, Preconditions, WatchEvent, WatchParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::interrupt::Interrupt;

/// The Lease's name; it lives beside the ApplySet record.
pub const LEASE_NAME: &str = "gridos-setup";
pub const LEASE_NAMESPACE: &str = crate::applyset::PARENT_NAMESPACE;
/// How long a holder's last renewal counts: the takeover bound after a holder dies.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews: three renewals fit in one [`LEASE_DURATION`], so one slow
/// request does not lose the lock.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// `--lock-timeout`'s default: longer than a whole install on a fresh cluster, so a pipeline that
/// starts while another deploys waits for it instead of failing.
pub const DEFAULT_WAIT: &str = "10m";

/// Who holds the lock, as its `holderIdentity` records it: `host/pid/command/start`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    pub command: String,
    /// When the holder started, RFC 3339 with milliseconds.
    pub started: String,
}

impl Holder {
    /// This process, running `command` (install, uninstall).
    pub fn this_process(command: &str) -> Holder {
        let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|h| h.trim().to_string())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown-host".into());
        Holder {
            // The identity is split on '/', so no part may hold one.
            host: host.replace('/', "-"),
            pid: std::process::id(),
            command: command.replace('/', "-"),
            started: format!("{:.3}", k8s_openapi::jiff::Timestamp::now()),
        }
    }

    pub fn identity(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.host, self.pid, self.command, self.started
        )
    }

    /// Reads an identity back; one written by something else is kept whole as the host.
    pub fn parse(identity: &str) -> Holder {
        let parts: Vec<&str> = identity.splitn(4, '/').collect();
        match parts.as_slice() {
            [host, pid, command, started] if pid.parse::<u32>().is_ok() => Holder {
                host: host.to_string(),
                pid: pid.parse().unwrap_or_default(),
                command: command.to_string(),
                started: started.to_string(),
            },
            _ => Holder {
                host: identity.to_string(),
                pid: 0,
                command: "unknown".into(),
                started: String::new(),
            },
        }
    }

    /// For people: "`gridos-setup install` on host ci-7 (pid 4242) since 2026-11-29T22:30:01.123Z".
    pub fn describe(&self) -> String {
        format!(
            "`gridos-setup {}` on host {} (pid {}) since {}",
            self.command, self.host, self.pid, self.started
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the run lock (Lease {LEASE_NAMESPACE}/{LEASE_NAME}) is still held by {} after waiting {}s",
        holder.describe(), waited.as_secs()
    )]
    Timeout { holder: Holder, waited: Duration },
    #[error("lost the run lock (Lease {LEASE_NAMESPACE}/{LEASE_NAME}) to {}: this run stopped writing", holder.describe())]
    Lost { holder: Holder },
    #[error("the run lock (Lease {LEASE_NAMESPACE}/{LEASE_NAME}): {source}")]
    Api { source: kube::Error },
    #[error("interrupted while waiting for the run lock")]
    Interrupted,
}

impl LockError {
    pub fn hint(&self) -> String {
        match self {
            LockError::Timeout { .. } => format!(
                "wait for that run to end and re-run, or give more time with --lock-timeout; a holder that died is taken over {}s after its last renewal",
                LEASE_DURATION.as_secs()
            ),
            LockError::Lost { .. } => {
                "this run could not renew its lock in time (network?); re-run, it resumes".into()
            }
            LockError::Api { source: kube::Error::Api(s) } if s.code == 403 => {
                "the user needs get, create, update and delete on leases in kube-system (`gridos-setup rbac` prints them); re-run once bound".into()
            }
            LockError::Api { .. } => {
                "check that the cluster is reachable (`kubectl cluster-info`) and re-run".into()
            }
            LockError::Interrupted => "nothing was written; re-run the same command".into(),
        }
    }
}

/// How to take the lock: how long to wait for another holder, and what to tell about waiting.
pub struct LockRequest<'a> {
    pub command: &'a str,
    pub wait: Duration,
    /// Called once per holder this run waits for, then once with `None` when the lock is taken
    /// after waiting (with the time waited).
    pub on_wait: &'a (dyn Fn(LockWait) + Send + Sync),
}

/// A change in waiting for the lock, for the run's progress output.
#[derive(Clone, Debug)]
pub enum LockWait {
    Waiting {
        holder: Holder,
    },
    Acquired {
        after: Duration,
        took_over: Option<Holder>,
    },
}

impl LockWait {
    /// The progress event: the JSON line for pipelines, a `note:` line for people.
    pub fn event(&self) -> crate::progress::Event {
        match self {
            LockWait::Waiting { holder } => crate::progress::Event::Lock {
                state: "waiting".into(),
                holder: Some(holder.clone()),
                message: format!(
                    "waiting for the run lock (Lease {LEASE_NAMESPACE}/{LEASE_NAME}) held by {}",
                    holder.describe()
                ),
                waited_ms: None,
            },
            LockWait::Acquired { after, took_over } => crate::progress::Event::Lock {
                state: if took_over.is_some() {
                    "taken_over"
                } else {
                    "acquired"
                }
                .into(),
                holder: took_over.clone(),
                message: match took_over {
                    Some(h) => format!(
                        "took over the run lock after {:.1}s: {} stopped renewing it",
                        after.as_secs_f64(),
                        h.describe()
                    ),
                    None => format!("got the run lock after {:.1}s", after.as_secs_f64()),
                },
                waited_ms: Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
            },
        }
    }
}

/// The lock while held: renewed in the background until [`RunLock::release`] (or drop).
pub struct RunLock {
    api: Api<Lease>,
    identity: String,
    resource_version: Arc<Mutex<String>>,
    renew: Option<tokio::task::JoinHandle<()>>,
    lost: watch::Receiver<Option<Holder>>,
    /// Whether another run held the lock when this one first asked.
    contended: bool,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn lease(identity: &str, acquired: MicroTime, transitions: i32, rv: Option<String>) -> Lease {
    Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(LEASE_NAME.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            resource_version: rv,
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    crate::applyset::FIELD_MANAGER.to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(
                i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquired),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(crate::applyset::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn holder_of(l: &Lease) -> Option<String> {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// How long the Lease says its renewal counts (its holder's choice, at least one second).
fn duration_of(l: &Lease) -> Duration {
    l.spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| Duration::from_secs(s.max(1)))
        .unwrap_or(LEASE_DURATION)
}

/// What a waiting run last saw of another holder's Lease: who, its `renewTime`, and when this run
/// first saw that pair, on this run's own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sighting {
    holder: String,
    renewed: String,
    at: Instant,
}

/// What the takeover rule says about a Lease someone else holds.
#[derive(Debug, PartialEq, Eq)]
enum Takeover {
    /// Free, or its holder is gone: replace it now.
    Now,
    /// Live as far as this run can tell: wait for a change, at most until `expires` (unknown for a
    /// renewal seen for the first time, which starts the clock).
    Wait { expires: Instant },
}

/// The takeover rule, apart from every request so it can be tested alone. A Lease without a holder
/// is free. A holder that was a gridos-setup process on this host and no longer runs (`dead_here`)
/// is taken over at once. Any other holder only once this run has seen the same renewal unchanged
/// for the Lease's duration on its own clock, as client-go's leader election does
/// (`tools/leaderelection/leaderelection.go`, `observedTime`): a clock skew between machines can
/// then never cut a live holder's lease short. A new holder or a new renewal restarts the clock.
fn takeover(
    holder: Option<&str>,
    renewed: &str,
    duration: Duration,
    dead_here: bool,
    seen: &mut Option<Sighting>,
    now: Instant,
) -> Takeover {
    let Some(holder) = holder else {
        return Takeover::Now;
    };
    if dead_here {
        return Takeover::Now;
    }
    match seen {
        Some(s) if s.holder == holder && s.renewed == renewed => {
            if now.saturating_duration_since(s.at) >= duration {
                Takeover::Now
            } else {
                Takeover::Wait {
                    expires: s.at + duration,
                }
            }
        }
        _ => {
            *seen = Some(Sighting {
                holder: holder.to_string(),
                renewed: renewed.to_string(),
                at: now,
            });
            Takeover::Wait {
                expires: now + duration,
            }
        }
    }
}

fn renewed_at(l: &Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// One run's attempt at the lock: its identity, its deadline and what it has seen so far.
struct Contender<'a> {
    api: Api<Lease>,
    me: String,
    req: &'a LockRequest<'a>,
    started: Instant,
    give_up: Instant,
    seen: Option<Sighting>,
    announced: Option<String>,
    first_try: bool,
}

/// Takes the run lock, waiting for another holder up to `req.wait`. Uncontended, this is one
/// request (the create); the release is one more.
pub async fn acquire(
    client: &Client,
    req: &LockRequest<'_>,
    interrupt: &Interrupt,
) -> Result<RunLock, LockError> {
    let started = Instant::now();
    let mut c = Contender {
        api: Api::namespaced(client.clone(), LEASE_NAMESPACE),
        me: Holder::this_process(req.command).identity(),
        req,
        started,
        give_up: started + req.wait,
        seen: None,
        announced: None,
        first_try: true,
    };
    loop {
        interrupt.check().map_err(|_| LockError::Interrupted)?;
        if let Some(lock) = c.try_create().await? {
            return Ok(lock);
        }
        let Some(current) = c.api.get_opt(LEASE_NAME).await.map_err(api_err)? else {
            continue;
        };
        let holder = holder_of(&current);
        let dead_here = holder
            .as_deref()
            .is_some_and(|h| died_here(&Holder::parse(h)));
        let verdict = takeover(
            holder.as_deref(),
            &renewed_at(&current),
            duration_of(&current),
            dead_here,
            &mut c.seen,
            Instant::now(),
        );
        let expires = match verdict {
            Takeover::Now => match c.take_over(&current, holder.as_deref()).await? {
                Some(lock) => return Ok(lock),
                None => continue,
            },
            Takeover::Wait { expires } => expires,
        };
        let Some(h) = holder else { continue };
        c.announce_or_give_up(&h)?;
        let rv = current.metadata.resource_version.unwrap_or_default();
        tokio::select! {
            _ = interrupt.cancelled() => return Err(LockError::Interrupted),
            _ = c.wait_for_change(&rv, expires.min(c.give_up)) => {}
        }
    }
}

fn api_err(source: kube::Error) -> LockError {
    LockError::Api { source }
}

impl Contender<'_> {
    fn lock(&self, l: Lease, took_over: Option<Holder>) -> RunLock {
        let waited = self.announced.is_some();
        let contended = !self.first_try || took_over.is_some();
        let mut lock = held(
            self.api.clone(),
            self.me.clone(),
            l,
            self.req,
            self.started,
            waited,
            took_over,
        );
        lock.contended = contended;
        lock
    }

    /// Creates the Lease; `None` when someone else's already exists.
    async fn try_create(&mut self) -> Result<Option<RunLock>, LockError> {
        match self
            .api
            .create(&post_params(), &lease(&self.me, now(), 0, None))
            .await
        {
            Ok(l) => Ok(Some(self.lock(l, None))),
            Err(e) if is_conflict(&e) => {
                self.first_try = false;
                Ok(None)
            }
            Err(e) => Err(api_err(e)),
        }
    }

    /// Replaces an expired Lease at the resourceVersion read, so two waiters cannot both win;
    /// `None` when another write came first.
    async fn take_over(
        &mut self,
        current: &Lease,
        holder: Option<&str>,
    ) -> Result<Option<RunLock>, LockError> {
        let transitions = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let rv = current.metadata.resource_version.clone();
        let mut l = lease(&self.me, now(), transitions.saturating_add(1), rv);
        l.metadata.labels = current.metadata.labels.clone().or(l.metadata.labels);
        match self.api.replace(LEASE_NAME, &post_params(), &l).await {
            Ok(l) => {
                self.first_try = false;
                Ok(Some(self.lock(l, holder.map(Holder::parse))))
            }
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(api_err(e)),
        }
    }

    /// Says once per holder that this run waits; past `--lock-timeout`, the timeout naming it.
    fn announce_or_give_up(&mut self, h: &str) -> Result<(), LockError> {
        if self.announced.as_deref() != Some(h) {
            (self.req.on_wait)(LockWait::Waiting {
                holder: Holder::parse(h),
            });
            self.announced = Some(h.to_string());
        }
        if Instant::now() >= self.give_up {
            return Err(LockError::Timeout {
                holder: Holder::parse(h),
                waited: self.started.elapsed(),
            });
        }
        Ok(())
    }

    /// Until the Lease changes after `rv`, or `until`, whichever comes first.
    async fn wait_for_change(&self, rv: &str, until: Instant) {
        let secs = until
            .saturating_duration_since(Instant::now())
            .as_secs()
            .clamp(1, 290);
        let wp = WatchParams::default()
            .fields(&format!("metadata.name={LEASE_NAME}"))
            .timeout(u32::try_from(secs + 1).unwrap_or(290));
        let changed = async {
            match self.api.watch(&wp, rv).await {
                Ok(stream) => {
                    let mut stream = stream.boxed();
                    while let Some(ev) = stream.next().await {
                        if !matches!(ev, Ok(WatchEvent::Bookmark(_))) {
                            return;
                        }
                    }
                }
                // A watch that cannot start: fall back to looking again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let _ = tokio::time::timeout_at(until, changed).await;
    }
}

/// Whether the holder is a gridos-setup process on this host that no longer runs (SIGKILLed, or
/// its machine's CI job cancelled): its lock is taken over at once instead of after the bound. A
/// pid that now belongs to another program counts as gone; without /proc nothing is concluded.
fn died_here(h: &Holder) -> bool {
    if h.pid == 0 || h.host != Holder::this_process("").host {
        return false;
    }
    match std::fs::read(format!("/proc/{}/cmdline", h.pid)) {
        // A zombie's command line is empty: it has stopped, whoever reaps it.
        Ok(cmd) => !String::from_utf8_lossy(&cmd).contains("gridos-setup"),
        Err(_) => std::path::Path::new("/proc/self").exists(),
    }
}

fn held(
    api: Api<Lease>,
    identity: String,
    l: Lease,
    req: &LockRequest<'_>,
    started: Instant,
    waited: bool,
    took_over: Option<Holder>,
) -> RunLock {
    if waited || took_over.is_some() {
        (req.on_wait)(LockWait::Acquired {
            after: started.elapsed(),
            took_over,
        });
    }
    let rv = Arc::new(Mutex::new(l.metadata.resource_version.unwrap_or_default()));
    let (tx, lost) = watch::channel(None);
    let spec = l.spec.unwrap_or_default();
    let renew = tokio::spawn(renew_loop(
        api.clone(),
        identity.clone(),
        spec.acquire_time.unwrap_or_else(now),
        spec.lease_transitions.unwrap_or(0),
        rv.clone(),
        tx,
    ));
    RunLock {
        api,
        identity,
        resource_version: rv,
        renew: Some(renew),
        lost,
        contended: false,
    }
}

async fn renew_loop(
    api: Api<Lease>,
    me: String,
    acquired: MicroTime,
    transitions: i32,
    rv: Arc<Mutex<String>>,
    lost: watch::Sender<Option<Holder>>,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let current_rv = rv.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let l = lease(&me, acquired.clone(), transitions, Some(current_rv));
        match api.replace(LEASE_NAME, &post_params(), &l).await {
            Ok(l) => {
                *rv.lock().unwrap_or_else(|e| e.into_inner()) =
                    l.metadata.resource_version.unwrap_or_default();
                last_ok = Instant::now();
                continue;
            }
            // Someone changed it: still ours only if the holder is still this run.
            Err(e) if is_conflict(&e) || matches!(&e, kube::Error::Api(s) if s.code == 404) => {
                match api.get_opt(LEASE_NAME).await {
                    Ok(Some(l)) if holder_of(&l).as_deref() == Some(me.as_str()) => {
                        *rv.lock().unwrap_or_else(|e| e.into_inner()) =
                            l.metadata.resource_version.unwrap_or_default();
                        continue;
                    }
                    Ok(l) => {
                        let holder = l
                            .as_ref()
                            .and_then(holder_of)
                            .map(|h| Holder::parse(&h))
                            .unwrap_or_else(|| Holder::parse("nobody"));
                        let _ = lost.send(Some(holder));
                        return;
                    }
                    Err(_) => {}
                }
            }
            Err(e) => tracing::debug!("renewing the run lock: {e}"),
        }
        // Unrenewed for a whole lease, another run may have taken over: stop writing.
        if last_ok.elapsed() >= LEASE_DURATION {
            let _ = lost.send(Some(Holder::parse("another run (the lock expired)")));
            return;
        }
    }
}

impl RunLock {
    /// The holder identity this run wrote.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether another run held the lock when this one first asked: what was read before it
    /// (discovery) may be out of date.
    pub fn contended(&self) -> bool {
        self.contended
    }

    /// Resolves when the lock was lost (another run took it over), with the new holder.
    pub async fn lost(&self) -> LockError {
        let mut rx = self.lost.clone();
        loop {
            if let Some(h) = rx.borrow().clone() {
                return LockError::Lost { holder: h };
            }
            if rx.changed().await.is_err() {
                // The renew task ended without a loss (released): never resolves.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops renewing and deletes the Lease if it is still this run's: one request.
    pub async fn release(mut self) {
        self.stop_and_delete().await;
    }

    async fn stop_and_delete(&mut self) {
        if let Some(task) = self.renew.take() {
            task.abort();
            let _ = task.await;
        }
        if self.lost.borrow().is_some() {
            return;
        }
        let rv = self
            .resource_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dp = |rv: String| DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv),
                uid: None,
            }),
            ..Default::default()
        };
        match self.api.delete(LEASE_NAME, &dp(rv)).await {
            Err(e) if is_conflict(&e) => {
                // A renewal landed as the task stopped: delete it if it is still ours.
                if let Ok(Some(l)) = self.api.get_opt(LEASE_NAME).await
                    && holder_of(&l).as_deref() == Some(self.identity.as_str())
                {
                    let rv = l.metadata.resource_version.unwrap_or_default();
                    let _ = self.api.delete(LEASE_NAME, &dp(rv)).await;
                }
            }
            Err(e) => tracing::debug!("releasing the run lock: {e}"),
            Ok(_) => {}
        }
    }
}

impl Drop for RunLock {
    /// A run that ends without [`RunLock::release`] (a panic, an early return) still lets go,
    /// if the runtime is still there to send the request; otherwise the Lease expires.
    fn drop(&mut self) {
        let Some(task) = self.renew.take() else {
            return;
        };
        task.abort();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let mut rest = RunLock {
                api: self.api.clone(),
                identity: self.identity.clone(),
                resource_version: self.resource_version.clone(),
                renew: None,
                lost: self.lost.clone(),
                contended: self.contended,
            };
            handle.spawn(async move { rest.stop_and_delete().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_foreign_ones_stay_whole() {
        let h = Holder {
            host: "ci-7".into(),
            pid: 4242,
            command: "install".into(),
            started: "2026-11-29T22:30:01.123Z".into(),
        };
        assert_eq!(h.identity(), "ci-7/4242/install/2026-11-29T22:30:01.123Z");
        assert_eq!(Holder::parse(&h.identity()), h);
        assert_eq!(Holder::parse("kubectl-user").host, "kubectl-user");
        assert!(
            Holder::this_process("install")
                .identity()
                .contains("/install/")
        );
    }

    const D: Duration = LEASE_DURATION;

    #[test]
    fn a_lease_without_holder_or_with_a_dead_local_holder_is_taken_at_once() {
        let t0 = Instant::now();
        let mut seen = None;
        assert_eq!(takeover(None, "", D, false, &mut seen, t0), Takeover::Now);
        assert_eq!(
            takeover(Some("h/1"), "r1", D, true, &mut seen, t0),
            Takeover::Now
        );
        assert_eq!(
            seen, None,
            "nothing to remember about a lease taken at once"
        );
    }

    #[test]
    fn a_live_holder_expires_only_after_one_unchanged_renewal_for_the_whole_duration() {
        let t0 = Instant::now();
        let mut seen = None;
        // First sight starts this run's clock, whatever the Lease's own times say.
        let first = takeover(Some("h/1"), "r1", D, false, &mut seen, t0);
        assert_eq!(first, Takeover::Wait { expires: t0 + D });
        let almost = t0 + D - Duration::from_millis(1);
        assert_eq!(
            takeover(Some("h/1"), "r1", D, false, &mut seen, almost),
            Takeover::Wait { expires: t0 + D }
        );
        assert_eq!(
            takeover(Some("h/1"), "r1", D, false, &mut seen, t0 + D),
            Takeover::Now
        );
    }

    #[test]
    fn a_renewal_or_a_new_holder_restarts_the_clock() {
        let t0 = Instant::now();
        let mut seen = None;
        takeover(Some("h/1"), "r1", D, false, &mut seen, t0);
        let t1 = t0 + D - Duration::from_secs(1);
        // The holder renewed just before the bound: it stays live for another duration.
        assert_eq!(
            takeover(Some("h/1"), "r2", D, false, &mut seen, t1),
            Takeover::Wait { expires: t1 + D }
        );
        assert_eq!(
            takeover(Some("h/1"), "r2", D, false, &mut seen, t0 + D),
            Takeover::Wait { expires: t1 + D }
        );
        // Another waiter won the contention and now holds it with the same renewal text.
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(
            takeover(Some("h/2"), "r2", D, false, &mut seen, t2),
            Takeover::Wait { expires: t2 + D }
        );
        assert_eq!(
            takeover(Some("h/2"), "r2", D, false, &mut seen, t2 + D),
            Takeover::Now
        );
    }

    #[test]
    fn the_lease_s_own_duration_counts_not_ours() {
        let t0 = Instant::now();
        let mut seen = None;
        let short = Duration::from_secs(1);
        takeover(Some("h/1"), "r1", short, false, &mut seen, t0);
        assert_eq!(
            takeover(Some("h/1"), "r1", short, false, &mut seen, t0 + short),
            Takeover::Now
        );
    }

    #[test]
    fn the_bound_leaves_room_for_two_missed_renewals() {
        assert!(LEASE_DURATION >= RENEW_EVERY * 3);
    }
}
