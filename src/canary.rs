//! `canary wait`: watches a Flagger Canary until Flagger has decided (promoted or rolled back), so a pipeline can gate on the outcome.
//!
//! Flagger records its decision in the Canary's status: `phase` (Initializing, Initialized,
//! Waiting, Progressing, WaitingPromotion, Promoting, Finalising, Succeeded, Failed, Terminating,
//! Terminated), `canaryWeight`, `failedChecks` and one `Promoted` condition. Why an analysis halts
//! is not in the status but in Warning Events on the Canary ("Halt advancement ...", "Rolling back
//! ... failed checks threshold reached 5"), so a failure is reported with those events.
//!
//! The Canary is watched (kube-runtime's watcher with its default backoff, so an apiserver restart
//! or a dropped connection only delays the answer), never polled.
//!
//! A verdict counts only if it is about the target as it is now (see [`about_current_revision`]):
//! Flagger rewrites `status.lastTransitionTime` on every status write, a Failed canary's included
//! (Flagger 1.44.0 pkg/controller/scheduler.go `shouldAdvance`: "Make sure to sync lastAppliedSpec
//! even if the canary is in a failed state" calls SyncStatus every interval, and
//! pkg/canary/status.go `syncCanaryStatus` stamps `metav1.Now()`), so that time says nothing about
//! which revision the verdict is for. The `Promoted` condition's lastTransitionTime does not move
//! while its status stays (pkg/canary/status.go `MakeStatusConditions` keeps the current
//! condition's time when the status is unchanged), and its status changes exactly when a rollout
//! starts (Unknown) and when it ends (True for Succeeded, False for Failed).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tokio::time::Instant;

use k8s_openapi::jiff::Timestamp;

use crate::cluster::{self, ConnectRequest};
use crate::error::{Error, exit};
use crate::progress::{self, Event, OutputFormat, Reporter};

/// The Canary install creates, and what `canary wait` watches without arguments.
pub const DEFAULT_NAME: &str = "gridos";
pub const DEFAULT_NAMESPACE: &str = "gridos";

/// How many Warning events a failure or a timeout quotes: enough for the halt reason and the
/// rollback, few enough for one line.
const WARNINGS_SHOWN: usize = 5;
/// How many distinct condition messages are kept for the summary.
const MESSAGES_KEPT: usize = 3;

/// The Canary resource of Flagger's CRD (flagger.app/v1beta1). Named explicitly rather than
/// discovered: the wait needs nothing else from discovery, and a missing CRD shows up as a 404
/// on the first read, which is reported as such.
pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    )
}

/// A `canary wait` as the user asked for it.
#[derive(Clone, Debug)]
pub struct WaitRequest {
    pub connect: ConnectRequest,
    pub namespace: String,
    pub name: String,
    pub timeout: Duration,
    /// Accept a Canary with no rollout in progress (Initializing or Initialized) as done.
    pub allow_idle: bool,
}

/// Where a Canary is in Flagger's life cycle, as far as waiting is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// No status: Flagger has not picked the Canary up (yet).
    Unreported,
    /// Initializing or Initialized: no rollout in progress.
    Idle,
    /// A rollout runs (Progressing, Promoting, Finalising, or a phase a newer Flagger adds:
    /// waiting on is the safe reading of an unknown phase).
    InProgress,
    /// Waiting or WaitingPromotion: Flagger found a confirm-rollout or confirm-promotion webhook
    /// closed and holds the rollout until someone opens it (Flagger 1.44.0
    /// pkg/controller/scheduler_hooks.go `runConfirmRolloutHooks`, `runConfirmPromotionHooks`).
    AtGate,
    Succeeded,
    Failed,
    /// Terminating or Terminated: the Canary is being deleted; nothing will be promoted.
    Deleting,
}

pub fn stage(phase: Option<&str>) -> Stage {
    match phase {
        None | Some("") => Stage::Unreported,
        Some("Initializing" | "Initialized") => Stage::Idle,
        Some("Succeeded") => Stage::Succeeded,
        Some("Failed") => Stage::Failed,
        Some("Terminating" | "Terminated") => Stage::Deleting,
        Some("Waiting" | "WaitingPromotion") => Stage::AtGate,
        Some(_) => Stage::InProgress,
    }
}

/// What Flagger last wrote, reduced to what the wait reports and decides on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub phase: Option<String>,
    pub weight: i64,
    #[serde(rename = "failedChecks")]
    pub failed_checks: i64,
    /// `status.iterations`: A/B testing and blue/green count iterations, not weights.
    #[serde(skip)]
    pub iterations: i64,
    /// `spec.analysis.iterations`: the iterations an A/B or blue/green analysis runs (0: weights).
    #[serde(skip)]
    pub iterations_of: i64,
    /// The `Promoted` condition's message (Flagger keeps exactly one condition).
    #[serde(skip)]
    pub message: Option<String>,
    /// When Flagger's state last changed its meaning: the `Promoted` condition's
    /// lastTransitionTime, or `status.lastTransitionTime` from a Flagger that writes no condition.
    #[serde(skip)]
    pub decided_at: Option<Timestamp>,
    /// `status.lastAppliedSpec`: Flagger's hash of the target's pod template it last synced
    /// (pkg/canary/status.go `syncCanaryStatus`); a new value during a rollout is a restart.
    #[serde(skip)]
    pub revision: Option<String>,
}

/// A status number; the CRD types them as `number`, so a float is read too.
fn number(v: Option<&serde_json::Value>) -> i64 {
    v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

fn time(v: Option<&serde_json::Value>) -> Option<Timestamp> {
    v.and_then(|t| t.as_str()).and_then(|t| t.parse().ok())
}

fn text(v: Option<&serde_json::Value>) -> Option<String> {
    v.and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

impl Snapshot {
    pub fn of(obj: &DynamicObject) -> Snapshot {
        let mut s = Snapshot::from_status(obj.data.get("status"));
        s.iterations_of = number(obj.data.pointer("/spec/analysis/iterations"));
        s
    }

    pub fn from_status(status: Option<&serde_json::Value>) -> Snapshot {
        let Some(s) = status.filter(|s| s.is_object()) else {
            return Snapshot::default();
        };
        let promoted = s
            .get("conditions")
            .and_then(|c| c.as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Promoted"))
                    .or_else(|| cs.last())
            });
        Snapshot {
            phase: text(s.get("phase")),
            weight: number(s.get("canaryWeight")),
            failed_checks: number(s.get("failedChecks")),
            iterations: number(s.get("iterations")),
            iterations_of: 0,
            message: text(promoted.and_then(|c| c.get("message"))),
            decided_at: time(promoted.and_then(|c| c.get("lastTransitionTime")))
                .or_else(|| time(s.get("lastTransitionTime"))),
            revision: text(s.get("lastAppliedSpec")),
        }
    }

    pub fn stage(&self) -> Stage {
        stage(self.phase.as_deref())
    }

    /// Where the analysis stands: `weight 25%`, or `iteration 2 of 5` for A/B and blue/green.
    fn step(&self) -> String {
        if self.iterations_of > 0 {
            format!("iteration {} of {}", self.iterations, self.iterations_of)
        } else {
            format!("weight {}%", self.weight)
        }
    }

    /// `Progressing, weight 25%, 1 failed check` and the like, for progress lines and timeouts.
    pub fn describe(&self) -> String {
        match (self.stage(), self.phase.as_deref()) {
            (Stage::Unreported, _) => "no status from Flagger yet".into(),
            (Stage::Idle, Some(p)) => format!("{p}: no rollout in progress"),
            (Stage::AtGate, Some(p)) => {
                format!("{p}: waiting for approval at the {} gate", gate_of(p))
            }
            (_, p) => format!(
                "{}, {}, {}",
                p.unwrap_or("?"),
                self.step(),
                checks(self.failed_checks)
            ),
        }
    }

    /// Whether the part people watch changed (a new lastTransitionTime alone is not news).
    fn same_progress(&self, other: &Snapshot) -> bool {
        self.phase == other.phase
            && self.weight == other.weight
            && self.iterations == other.iterations
            && self.failed_checks == other.failed_checks
    }
}

/// The webhook type that holds a rollout in a gate phase (Flagger 1.44.0
/// pkg/controller/scheduler_hooks.go: confirm-rollout sets Waiting, confirm-promotion sets
/// WaitingPromotion; confirm-traffic-increase keeps Progressing and only records an event).
fn gate_of(phase: &str) -> &'static str {
    if phase == "WaitingPromotion" {
        "confirm-promotion"
    } else {
        "confirm-rollout"
    }
}

/// Whether Flagger's state is about the target as it is now: it changed its meaning (see
/// [`Snapshot::decided_at`]) after the target's pod template last changed. Both times have
/// one-second resolution, so a state from the same second as the change is not known to be
/// after it and does not count: Flagger needs at least one more analysis tick after noticing a
/// revision before it decides, so the verdict on the new revision always comes later.
/// Without a known change (no target yet) every state counts; without a time none does.
pub fn about_current_revision(
    decided_at: Option<Timestamp>,
    changed_at: Option<Timestamp>,
) -> bool {
    match (changed_at, decided_at) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(changed), Some(decided)) => decided.as_second() > changed.as_second(),
    }
}

fn checks(n: i64) -> String {
    if n == 1 {
        "1 failed check".into()
    } else {
        format!("{n} failed checks")
    }
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Timeout,
    Idle,
    /// Flagger holds the rollout at a confirm-rollout or confirm-promotion gate (exit 5).
    AwaitingApproval,
}

/// What Flagger was doing when a wait ended without a verdict: the `activity` of the summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Activity {
    /// Flagger has written no status for the Canary.
    Unreported,
    /// Flagger's last state (a verdict or Initialized) is from before the target's last change:
    /// it has not noticed the new revision yet.
    NotPickedUp { phase: String },
    /// Initialized after the target's last change: no rollout in progress.
    Idle { phase: String },
    /// Held at a manual gate until someone opens it.
    AtGate {
        /// The webhook type: confirm-rollout, confirm-promotion or confirm-traffic-increase.
        gate: String,
        /// The webhook's name in the Canary's analysis.
        webhook: Option<String>,
        /// The share of traffic the canary gets now, read from the router.
        routed_weight: Option<i64>,
    },
    /// The analysis runs.
    Analysing {
        phase: String,
        routed_weight: Option<i64>,
        /// `[n, m]`: iteration n of m, for A/B testing and blue/green.
        #[serde(skip_serializing_if = "Option::is_none")]
        iteration: Option<[i64; 2]>,
        #[serde(rename = "failedChecks")]
        failed_checks: i64,
    },
}

fn routed(w: Option<i64>) -> String {
    w.map(|w| format!(" with {w}% of the traffic on the canary"))
        .unwrap_or_default()
}

impl Activity {
    /// What Flagger is doing, for the error line.
    fn describe(&self) -> String {
        match self {
            Activity::Unreported => "Flagger has not written a status for it".into(),
            Activity::NotPickedUp { phase } => format!(
                "Flagger has not picked up the target's new revision yet (its status, {phase}, is from before the change)"
            ),
            Activity::Idle { phase } => format!("no rollout in progress (phase {phase})"),
            Activity::AtGate {
                gate,
                webhook,
                routed_weight,
            } => format!(
                "waiting for approval: Flagger holds the rollout at the {gate} gate{}{}",
                webhook
                    .as_ref()
                    .map(|w| format!(" {w}"))
                    .unwrap_or_default(),
                routed(*routed_weight)
            ),
            Activity::Analysing {
                phase,
                routed_weight,
                iteration,
                failed_checks,
            } => {
                // A/B and blue/green route by header or all at once; their step is the iteration.
                let step = match (iteration, routed_weight) {
                    (Some([n, m]), _) => format!(" at iteration {n} of {m}"),
                    (None, Some(w)) => format!(" at weight {w}%"),
                    (None, None) => String::new(),
                };
                format!("still {phase}{step} with {}", checks(*failed_checks))
            }
        }
    }

    fn hint(&self, canary: &str) -> String {
        let (ns, name) = canary.split_once('/').unwrap_or(("", canary));
        match self {
            Activity::Unreported => "check that Flagger runs (`kubectl -n flagger-system get deploy flagger`) and watches this namespace".into(),
            Activity::NotPickedUp { .. } => "Flagger looks at the target once per analysis interval; if this lasts, see what it does: `kubectl -n flagger-system logs deploy/flagger`".into(),
            Activity::Idle { .. } => "deploy a new revision of the canary's target to start a rollout, or pass --allow-idle to accept an idle canary".into(),
            Activity::AtGate { gate, webhook, .. } => format!(
                "Flagger goes on once the {gate} webhook{} answers 200 (for Flagger's load tester: POST {{\"name\":\"{name}\",\"namespace\":\"{ns}\"}} to its /gate/open), or rolls back once a rollback webhook does (/rollback/open); then run canary wait again",
                webhook.as_ref().map(|w| format!(" {w}")).unwrap_or_default()
            ),
            Activity::Analysing { .. } => format!(
                "give the analysis longer with --timeout (it takes about analysis.interval times the number of steps), or see why it stalls: `kubectl -n {ns} describe canary {name}`"
            ),
        }
    }
}

/// The end of a wait: printed as the final line, or as the `summary` object with `-o json`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub result: Outcome,
    /// `namespace/name`.
    pub canary: String,
    pub phase: Option<String>,
    pub weight: i64,
    /// The most failed checks seen: Flagger resets the count to 0 when it marks a canary Failed.
    #[serde(rename = "failedChecks")]
    pub failed_checks: i64,
    /// Every canary weight seen, in order (repeats only when the weight went back and up again).
    pub weights_seen: Vec<i64>,
    /// Every A/B or blue/green iteration seen, in order (absent for a weighted canary).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub iterations_seen: Vec<i64>,
    /// The last distinct messages of the `Promoted` condition.
    pub messages: Vec<String>,
    /// Recent Warning events on the Canary (failures and timeouts), newest last.
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
    /// What Flagger was doing when the wait ended without a verdict (timeouts and gates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    #[serde(skip)]
    timeout: Duration,
    /// Whether a rollout was seen running during the wait (else a Succeeded was already there).
    #[serde(skip)]
    saw_rollout: bool,
    /// The last watch error when the watch had not recovered by the deadline.
    #[serde(skip)]
    watch_error: Option<String>,
}

impl Summary {
    /// The activity found at the end, or what the last status alone tells.
    fn activity(&self) -> Activity {
        self.activity.clone().unwrap_or_else(|| {
            let last = Snapshot {
                phase: self.phase.clone(),
                weight: self.weight,
                failed_checks: self.failed_checks,
                ..Snapshot::default()
            };
            activity_of(&last, true, None)
        })
    }

    fn weights_text(&self) -> String {
        self.weights_seen
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The final line of text output for a result that is not an error.
    pub fn text(&self) -> String {
        let secs = format!("{:.1}s", self.elapsed_ms as f64 / 1000.0);
        match self.result {
            Outcome::Succeeded if !self.weights_seen.is_empty() => format!(
                "canary {}: Succeeded after weights {} ({secs})",
                self.canary,
                self.weights_text()
            ),
            Outcome::Succeeded if self.saw_rollout => {
                format!("canary {}: Succeeded ({secs})", self.canary)
            }
            Outcome::Succeeded => format!(
                "canary {}: Succeeded (the rollout had finished before the wait started)",
                self.canary
            ),
            Outcome::Idle => format!(
                "canary {}: no rollout in progress ({})",
                self.canary,
                self.phase.as_deref().unwrap_or("?")
            ),
            Outcome::Failed | Outcome::Timeout | Outcome::AwaitingApproval => {
                self.error().map(|e| e.to_string()).unwrap_or_default()
            }
        }
    }

    /// The `summary` object of `-o json`.
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            // `event` first, as in every other JSON line.
            let mut out = serde_json::Map::new();
            out.insert("event".into(), "summary".into());
            out.extend(std::mem::take(m));
            return serde_json::Value::Object(out);
        }
        v
    }

    /// The error a failed or timed-out wait ends with (exit 1 or 3); `None` for the others.
    pub fn error(&self) -> Option<CanaryError> {
        match self.result {
            Outcome::Succeeded | Outcome::Idle => None,
            Outcome::Failed => {
                let mut detail = String::new();
                if !self.weights_seen.is_empty() {
                    detail.push_str(&format!(" after weights {}", self.weights_text()));
                }
                detail.push_str(&format!(" with {}", checks(self.failed_checks)));
                let mut why = Vec::new();
                if let Some(m) = self.messages.last() {
                    // Flagger's messages end with a period; the line goes on after it.
                    why.push(format!("Flagger: {}", m.trim_end_matches('.')));
                }
                if !self.warnings.is_empty() {
                    why.push(format!("recent warnings: {}", self.warnings.join(" | ")));
                }
                if !why.is_empty() {
                    detail.push_str(&format!(": {}", why.join("; ")));
                }
                Some(CanaryError::Failed {
                    canary: self.canary.clone(),
                    detail,
                })
            }
            Outcome::AwaitingApproval => {
                let activity = self.activity();
                Some(CanaryError::AwaitingApproval {
                    canary: self.canary.clone(),
                    state: activity.describe(),
                    hint: activity.hint(&self.canary),
                })
            }
            Outcome::Timeout => {
                let activity = self.activity();
                let hint = activity.hint(&self.canary);
                let state = activity.describe();
                let mut state = state;
                if !self.weights_seen.is_empty() {
                    state.push_str(&format!(" (weights seen: {})", self.weights_text()));
                }
                if !self.warnings.is_empty() {
                    state.push_str(&format!("; recent warnings: {}", self.warnings.join(" | ")));
                }
                if let Some(e) = &self.watch_error {
                    state.push_str(&format!("; the watch had not reconnected: {e}"));
                }
                Some(CanaryError::Timeout {
                    canary: self.canary.clone(),
                    waited: human(self.timeout),
                    state,
                    hint,
                })
            }
        }
    }
}

/// `10m`, `1m30s`, `500ms`: durations as the user writes them in --timeout (humantime's units,
/// without its spaces, so the text can be pasted back as the flag's value).
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// Why a wait could not give Flagger's verdict; each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("canary {canary} not found")]
    NotFound { canary: String },
    #[error(
        "canary {canary} not found: the cluster does not serve Flagger's Canary (flagger.app/v1beta1)"
    )]
    NoCrd { canary: String },
    #[error("canary {canary} failed{detail}")]
    Failed { canary: String, detail: String },
    #[error("timed out after {waited} waiting for canary {canary}: {state}")]
    Timeout {
        canary: String,
        waited: String,
        state: String,
        hint: String,
    },
    #[error("canary {canary} is {state}")]
    AwaitingApproval {
        canary: String,
        state: String,
        hint: String,
    },
    #[error("canary {canary} was deleted while waiting for it")]
    Deleted { canary: String },
    #[error("canary {canary} is being deleted (phase {phase}); nothing will be promoted")]
    Deleting { canary: String, phase: String },
    #[error("not allowed to read canary {canary}: {reason}")]
    Forbidden { canary: String, reason: String },
    #[error("reading canary {canary}: {source}")]
    Api {
        canary: String,
        #[source]
        source: kube::Error,
    },
}

impl CanaryError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CanaryError::Timeout { .. } => exit::TIMEOUT,
            CanaryError::AwaitingApproval { .. } => exit::APPROVAL,
            _ => exit::FAILED,
        }
    }

    pub fn hint(&self) -> String {
        match self {
            CanaryError::NotFound { .. } | CanaryError::NoCrd { .. } => {
                "install first (gridos-setup install --profile PROFILE --host HOST --yes), or name another canary: gridos-setup canary wait NAME -n NAMESPACE".into()
            }
            CanaryError::Failed { canary, .. } => {
                let (ns, name) = canary.split_once('/').unwrap_or(("", canary));
                format!(
                    "Flagger rolled back and the primary keeps serving; fix the cause above (`kubectl -n {ns} describe canary {name}`), then deploy again"
                )
            }
            CanaryError::Timeout { hint, .. } | CanaryError::AwaitingApproval { hint, .. } => {
                hint.clone()
            }
            CanaryError::Deleted { .. } | CanaryError::Deleting { .. } => {
                "re-create the canary (gridos-setup install ...) and deploy again".into()
            }
            CanaryError::Forbidden { .. } => {
                "ask for get, list and watch on canaries.flagger.app and list on events in that namespace".into()
            }
            CanaryError::Api { .. } => {
                "check that the cluster is reachable (`kubectl cluster-info`) and re-run".into()
            }
        }
    }
}

/// What the wait has seen so far.
#[derive(Debug, Default)]
struct Tracker {
    last: Option<Snapshot>,
    weights: Vec<i64>,
    iterations: Vec<i64>,
    max_failed: i64,
    messages: Vec<String>,
    saw_rollout: bool,
}

impl Tracker {
    /// Records a snapshot; true when phase, weight, iteration or failed checks changed.
    fn observe(&mut self, s: &Snapshot) -> bool {
        // A new lastAppliedSpec is a revision Flagger started over with (a restart during the
        // analysis, or a new rollout after a verdict): what the old one reached does not count.
        if let Some(prev) = self.last.as_ref().and_then(|l| l.revision.as_ref())
            && s.revision.as_ref().is_some_and(|r| r != prev)
        {
            self.weights.clear();
            self.iterations.clear();
            self.max_failed = 0;
        }
        if s.weight > 0 && self.weights.last() != Some(&s.weight) && s.iterations_of == 0 {
            self.weights.push(s.weight);
        }
        if s.iterations > 0 && self.iterations.last() != Some(&s.iterations) {
            self.iterations.push(s.iterations);
        }
        self.max_failed = self.max_failed.max(s.failed_checks);
        if matches!(s.stage(), Stage::InProgress | Stage::AtGate) {
            self.saw_rollout = true;
        }
        if let Some(m) = &s.message
            && self.messages.last() != Some(m)
        {
            self.messages.push(m.clone());
            if self.messages.len() > MESSAGES_KEPT {
                self.messages.remove(0);
            }
        }
        let changed = self.last.as_ref().is_none_or(|l| !l.same_progress(s));
        self.last = Some(s.clone());
        changed
    }

    fn summary(&self, result: Outcome, req: &WaitRequest, started: Instant) -> Summary {
        let last = self.last.clone().unwrap_or_default();
        Summary {
            result,
            canary: format!("{}/{}", req.namespace, req.name),
            phase: last.phase,
            weight: last.weight,
            failed_checks: self.max_failed,
            weights_seen: self.weights.clone(),
            iterations_seen: self.iterations.clone(),
            messages: self.messages.clone(),
            warnings: Vec::new(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            activity: None,
            timeout: req.timeout,
            saw_rollout: self.saw_rollout,
            watch_error: None,
        }
    }
}

/// Whether Flagger's state ends the wait, and how. `current`: the state is about the target as
/// it is now ([`about_current_revision`]); a verdict or an idle canary from before the target's
/// last change is the previous revision's and the wait goes on. A gate ends the wait whatever the
/// revision: Flagger holds every rollout there, the newest one included.
pub fn verdict(stage: Stage, allow_idle: bool, current: bool) -> Option<Outcome> {
    match stage {
        Stage::Succeeded if current => Some(Outcome::Succeeded),
        Stage::Failed if current => Some(Outcome::Failed),
        Stage::Idle if allow_idle && current => Some(Outcome::Idle),
        Stage::AtGate => Some(Outcome::AwaitingApproval),
        _ => None,
    }
}

/// What Flagger is doing, from its status and the canary's share of traffic as routed now
/// (`routed_weight`; Flagger zeroes `canaryWeight` when it enters a gate phase, pkg/canary/status.go
/// `setStatusPhase`, while the router keeps sending the last step's share).
pub fn activity_of(s: &Snapshot, current: bool, routed_weight: Option<i64>) -> Activity {
    let phase = s.phase.clone().unwrap_or_default();
    match s.stage() {
        Stage::Unreported => Activity::Unreported,
        Stage::Succeeded | Stage::Failed | Stage::Idle if !current => {
            Activity::NotPickedUp { phase }
        }
        Stage::Idle => Activity::Idle { phase },
        Stage::AtGate => Activity::AtGate {
            gate: gate_of(&phase).into(),
            webhook: None,
            routed_weight,
        },
        _ => Activity::Analysing {
            phase,
            routed_weight: routed_weight.or(Some(s.weight)),
            iteration: (s.iterations_of > 0).then_some([s.iterations, s.iterations_of]),
            failed_checks: s.failed_checks,
        },
    }
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

/// The first read: a missing Canary, a missing CRD and missing rights are told apart here, once,
/// instead of surfacing as watch errors that are retried until the deadline.
async fn first_read(
    api: &Api<DynamicObject>,
    req: &WaitRequest,
) -> Result<DynamicObject, CanaryError> {
    let canary = format!("{}/{}", req.namespace, req.name);
    match api.get(&req.name).await {
        Ok(o) => Ok(o),
        Err(e) => Err(match api_status(&e) {
            // An object that is missing names itself in the details; a resource type that is
            // missing does not.
            Some(s) if s.is_not_found() => match &s.details {
                Some(d) if d.name == req.name => CanaryError::NotFound { canary },
                _ => CanaryError::NoCrd { canary },
            },
            Some(s) if s.is_forbidden() => CanaryError::Forbidden {
                canary,
                reason: s.message.clone(),
            },
            _ => CanaryError::Api { canary, source: e },
        }),
    }
}

/// Watch errors that retrying cannot fix; the rest (connection refused while the apiserver
/// restarts, an expired resourceVersion) are left to the watcher's backoff.
fn fatal_watch_error(e: &watcher::Error, canary: &str) -> Option<CanaryError> {
    let status: Option<&kube::core::Status> = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => api_status(k),
        watcher::Error::WatchError(s) => Some(s),
        watcher::Error::NoResourceVersion => None,
    };
    let s = status?;
    if s.is_forbidden() {
        return Some(CanaryError::Forbidden {
            canary: canary.into(),
            reason: s.message.clone(),
        });
    }
    // A 404 on a list means the resource type went away: the CRD was deleted.
    if s.is_not_found() && matches!(e, watcher::Error::InitialListFailed(_)) {
        return Some(CanaryError::NoCrd {
            canary: canary.into(),
        });
    }
    None
}

/// The Canary's events from this rollout on.
#[derive(Debug, Default)]
struct Events {
    /// The last Warning messages (newest last), repeated ones folded into one with their count.
    warnings: Vec<String>,
    /// The newest event's message, of any type.
    newest: Option<String>,
}

fn event_time(e: &CoreEvent) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or(e.last_timestamp.as_ref().map(|t| t.0))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Warning messages folded by message, ordered by each message's newest occurrence; the last
/// [`WARNINGS_SHOWN`].
fn fold_warnings(items: &[CoreEvent]) -> Vec<String> {
    let mut counts: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for (i, e) in items.iter().enumerate() {
        let msg = e.message.clone().unwrap_or_default();
        if msg.is_empty() || e.type_.as_deref() != Some("Warning") {
            continue;
        }
        let n = e
            .series
            .as_ref()
            .and_then(|s| s.count.map(i64::from))
            .or(e.count.map(i64::from))
            .unwrap_or(1)
            .max(1);
        let entry = counts.entry(msg).or_insert((i, 0));
        entry.0 = i;
        entry.1 += n;
    }
    let mut folded: Vec<_> = counts.into_iter().collect();
    folded.sort_by_key(|(_, (i, _))| *i);
    let start = folded.len().saturating_sub(WARNINGS_SHOWN);
    folded[start..]
        .iter()
        .map(|(msg, (_, n))| {
            if *n > 1 {
                format!("{msg} ({n} times)")
            } else {
                msg.clone()
            }
        })
        .collect()
}

impl Events {
    /// The Canary's events last seen at or after `since` (the target's last change, second
    /// resolution: an event of the same second may be this rollout's, so it is kept), so a
    /// failure is not explained by an earlier rollout's warnings. Best effort: without them the
    /// verdict still stands.
    async fn read(
        client: &Client,
        ns: &str,
        name: &str,
        uid: &str,
        since: Option<Timestamp>,
    ) -> Events {
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind=Canary,involvedObject.name={name}"
        ));
        let Ok(list) = events.list(&lp).await else {
            return Events::default();
        };
        let mut items: Vec<_> = list
            .items
            .into_iter()
            // A Canary deleted and re-created under the same name has older events of its own.
            .filter(|e| uid.is_empty() || e.involved_object.uid.as_deref().is_none_or(|u| u == uid))
            .filter(|e| {
                since.is_none_or(|s| event_time(e).is_some_and(|t| t.as_second() >= s.as_second()))
            })
            .collect();
        items.sort_by_key(event_time);
        Events {
            warnings: fold_warnings(&items),
            newest: items.last().and_then(|e| e.message.clone()),
        }
    }
}

/// The Canary's target workload (Flagger 1.44.0 targets a Deployment or a DaemonSet).
fn target_resource(kind: &str) -> ApiResource {
    let (kind, plural) = match kind {
        "DaemonSet" => ("DaemonSet", "daemonsets"),
        _ => ("Deployment", "deployments"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind), plural)
}

/// When the target's pod template last changed: the newest time of the managedFields entries
/// that own fields under `spec.template`. That is what Flagger calls a revision (it hashes the
/// pod template, pkg/canary/deployment_controller.go `HasTargetChanged`); Flagger's own writes to
/// the target (scaling it to zero and back, `spec.replicas`) and the controllers' status writes
/// own no template field and do not count. A managedFields time moves only when its manager
/// changes a field it owns (metav1.ManagedFieldsEntry). `None` when unknown (no target yet).
pub fn template_changed_at(target: &DynamicObject) -> Option<Timestamp> {
    target
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.is_none())
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:template").is_some())
        })
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

async fn read_target_change(
    client: &Client,
    ns: &str,
    canary: &DynamicObject,
) -> Option<Timestamp> {
    let target = canary.data.pointer("/spec/targetRef/name")?.as_str()?;
    let kind = canary
        .data
        .pointer("/spec/targetRef/kind")
        .and_then(|k| k.as_str())
        .unwrap_or("Deployment");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &target_resource(kind));
    let d = api.get_opt(target).await.ok()??;
    template_changed_at(&d)
}

/// The share of traffic the router sends to the canary now, where Flagger sets it: the
/// `canary-weight` annotation of the canary Ingress `<ingressRef.name>-canary` (Flagger 1.44.0
/// pkg/router/ingress.go `SetRoutes`; 0 unless its `canary` annotation is "true"), or the
/// `<service>-canary` backend's share of the weights in the HTTPRoute named after the Canary's
/// service (pkg/router/gateway_api.go, names from pkg/apis/flagger/v1beta1/canary.go
/// `GetServiceNames`). Best effort: `None` when neither can be read.
async fn routed_weight(client: &Client, ns: &str, canary: &DynamicObject) -> Option<i64> {
    let spec = canary.data.get("spec")?;
    if let Some(ingress) = spec.pointer("/ingressRef/name").and_then(|n| n.as_str()) {
        let api: Api<k8s_openapi::api::networking::v1::Ingress> =
            Api::namespaced(client.clone(), ns);
        let ing = api.get_opt(&format!("{ingress}-canary")).await.ok()??;
        let a = ing.metadata.annotations.unwrap_or_default();
        const PREFIX: &str = "nginx.ingress.kubernetes.io";
        if a.get(&format!("{PREFIX}/canary")).map(String::as_str) != Some("true") {
            return Some(0);
        }
        return a.get(&format!("{PREFIX}/canary-weight"))?.parse().ok();
    }
    let apex = spec
        .pointer("/service/name")
        .or_else(|| spec.pointer("/targetRef/name"))?
        .as_str()?;
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let route = api.get_opt(apex).await.ok()??;
    let refs = route
        .data
        .pointer("/spec/rules/0/backendRefs")?
        .as_array()?;
    let weight = |b: &serde_json::Value| b.get("weight").and_then(|w| w.as_i64()).unwrap_or(1);
    let total: i64 = refs.iter().map(weight).sum();
    let canary_svc = format!("{apex}-canary");
    let to_canary: i64 = refs
        .iter()
        .filter(|b| b.get("name").and_then(|n| n.as_str()) == Some(canary_svc.as_str()))
        .map(weight)
        .sum();
    (total > 0).then(|| to_canary * 100 / total)
}

/// The first webhook of a type in the Canary's analysis.
fn webhook_named(canary: &DynamicObject, kind: &str) -> Option<String> {
    canary
        .data
        .pointer("/spec/analysis/webhooks")?
        .as_array()?
        .iter()
        .find(|w| w.get("type").and_then(|t| t.as_str()) == Some(kind))
        .and_then(|w| w.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
}

/// Flagger's warning while a confirm-traffic-increase webhook holds the analysis (the phase
/// stays Progressing): "Halt <name>.<ns> advancement waiting for traffic increase approval
/// <webhook>" (Flagger 1.44.0 pkg/controller/scheduler_hooks.go `runConfirmTrafficIncreaseHooks`).
const TRAFFIC_GATE_EVENT: &str = "advancement waiting for traffic increase approval ";

/// What Flagger is doing at the end of a wait without a verdict, with the facts the status lacks:
/// the routed weight, the gate's webhook, and a confirm-traffic-increase hold seen in the events.
async fn activity(
    client: &Client,
    ns: &str,
    canary: &DynamicObject,
    current: bool,
    newest_event: Option<&str>,
) -> Activity {
    let snap = Snapshot::of(canary);
    let weight = match snap.stage() {
        Stage::InProgress | Stage::AtGate => routed_weight(client, ns, canary).await,
        _ => None,
    };
    let mut activity = activity_of(&snap, current, weight);
    match &mut activity {
        Activity::AtGate { gate, webhook, .. } => *webhook = webhook_named(canary, gate),
        Activity::Analysing { routed_weight, .. } => {
            if let Some(w) = newest_event.and_then(|m| m.split(TRAFFIC_GATE_EVENT).nth(1)) {
                activity = Activity::AtGate {
                    gate: "confirm-traffic-increase".into(),
                    webhook: Some(w.trim().to_string()),
                    routed_weight: *routed_weight,
                };
            }
        }
        _ => {}
    }
    activity
}

/// What one delivered state of the Canary means: reported if it changed, then a verdict, an
/// error (being deleted), or nothing yet.
fn judge(
    obj: &DynamicObject,
    tracker: &mut Tracker,
    canary: &str,
    req: &WaitRequest,
    target_changed_at: Option<Timestamp>,
    progress: &dyn Reporter,
) -> Result<Option<Outcome>, CanaryError> {
    let snap = Snapshot::of(obj);
    let current = about_current_revision(snap.decided_at, target_changed_at);
    if tracker.observe(&snap) {
        let mut description = snap.describe();
        if !current && matches!(snap.stage(), Stage::Succeeded | Stage::Failed | Stage::Idle) {
            description.push_str(" (from before the target's last change; waiting for Flagger to pick up the new revision)");
        }
        progress.event(&Event::Canary {
            canary: canary.to_string(),
            description,
            phase: snap.phase.clone(),
            weight: snap.weight,
            failed_checks: snap.failed_checks,
            iteration: (snap.iterations_of > 0).then_some([snap.iterations, snap.iterations_of]),
        });
    }
    if snap.stage() == Stage::Deleting {
        return Err(CanaryError::Deleting {
            canary: canary.to_string(),
            phase: snap.phase.unwrap_or_default(),
        });
    }
    Ok(verdict(snap.stage(), req.allow_idle, current))
}

/// How long a gate must hold before the wait reports it: one analysis interval (Flagger checks a
/// gate once per tick; a gate opened just before the wait started is passed at the next one,
/// while the phase still says Waiting/WaitingPromotion until then) and a margin for the tick's
/// work. Flagger's default interval is 1m (pkg/apis/flagger/v1beta1/canary.go
/// `GetAnalysisInterval`).
fn gate_hold(canary: &DynamicObject) -> Duration {
    let interval = canary
        .data
        .pointer("/spec/analysis/interval")
        .and_then(|i| i.as_str())
        .and_then(crate::profile::go_duration)
        .unwrap_or(Duration::from_secs(60));
    interval + Duration::from_secs(5)
}

/// What the watch delivered, reduced to what the wait does with it.
enum Delivered {
    Object(Box<DynamicObject>),
    Nothing,
    Ended(Outcome),
}

/// One step of the watch: an object to judge, nothing (list markers, reconnects), or the end.
async fn next_object(
    stream: &mut (
             impl futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin
         ),
    until: Instant,
    canary: &str,
    seen_in_list: &mut bool,
    watch_error: &mut Option<String>,
) -> Result<Delivered, CanaryError> {
    let event = match tokio::time::timeout_at(until, stream.next()).await {
        Err(_) => return Ok(Delivered::Ended(Outcome::Timeout)),
        // The watcher restarts itself; an ended stream is not expected, but is a timeout
        // rather than a hang.
        Ok(None) => {
            watch_error.get_or_insert_with(|| "the watch ended".into());
            return Ok(Delivered::Ended(Outcome::Timeout));
        }
        Ok(Some(ev)) => ev,
    };
    let deleted = || CanaryError::Deleted {
        canary: canary.to_string(),
    };
    let obj = match event {
        Ok(watcher::Event::Init) => {
            *seen_in_list = false;
            return Ok(Delivered::Nothing);
        }
        Ok(watcher::Event::InitDone) => {
            *watch_error = None;
            return if *seen_in_list {
                Ok(Delivered::Nothing)
            } else {
                Err(deleted())
            };
        }
        Ok(watcher::Event::Delete(_)) => return Err(deleted()),
        Ok(watcher::Event::InitApply(o)) => {
            *seen_in_list = true;
            o
        }
        Ok(watcher::Event::Apply(o)) => o,
        Err(e) => {
            if let Some(fatal) = fatal_watch_error(&e, canary) {
                return Err(fatal);
            }
            tracing::info!("watching canary {canary}: {e}; reconnecting");
            *watch_error = Some(e.to_string());
            return Ok(Delivered::Nothing);
        }
    };
    *watch_error = None;
    Ok(Delivered::Object(Box::new(obj)))
}

/// Watches the Canary until Flagger has decided or the deadline passes. Failed and timed-out
/// waits come back as a [`Summary`] too (see [`Summary::error`]), so `-o json` can print one.
/// A gate ends the wait once it has held for [`gate_hold`] (or at the deadline).
pub async fn wait(
    client: &Client,
    req: &WaitRequest,
    progress: &dyn Reporter,
) -> Result<Summary, CanaryError> {
    let started = Instant::now();
    let deadline = crate::context::deadline_after(started, req.timeout);
    let canary = format!("{}/{}", req.namespace, req.name);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &req.namespace, &resource());
    let first = first_read(&api, req).await?;
    let uid = first.uid().unwrap_or_default();
    let mut target_changed_at = read_target_change(client, &req.namespace, &first).await;

    // Only what the watcher delivers is reported: its first object comes from the list the watch
    // then continues from, so once the first line is out no later change can be missed.
    let config = watcher::Config::default().fields(&format!("metadata.name={}", req.name));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut tracker = Tracker::default();
    let (mut seen_in_list, mut watch_error) = (false, None);
    let mut last = first;
    let mut gate_until: Option<Instant> = None;
    let result = loop {
        let until = gate_until.map_or(deadline, |g| g.min(deadline));
        let obj = match next_object(
            &mut stream,
            until,
            &canary,
            &mut seen_in_list,
            &mut watch_error,
        )
        .await?
        {
            Delivered::Ended(_) if gate_until.is_some() => break Outcome::AwaitingApproval,
            Delivered::Ended(outcome) => break outcome,
            Delivered::Nothing => continue,
            Delivered::Object(o) => *o,
        };
        let outcome = judge(
            &obj,
            &mut tracker,
            &canary,
            req,
            target_changed_at,
            progress,
        )?;
        last = obj;
        match outcome {
            Some(Outcome::AwaitingApproval) => {
                gate_until.get_or_insert_with(|| Instant::now() + gate_hold(&last));
            }
            // The target may have changed since the wait began: read it again before a verdict.
            Some(outcome) => match read_target_change(client, &req.namespace, &last).await {
                Some(t) if !about_current_revision(Snapshot::of(&last).decided_at, Some(t)) => {
                    target_changed_at = Some(t);
                }
                _ => break outcome,
            },
            None => gate_until = None,
        }
    };
    let mut summary = tracker.summary(result, req, started);
    summary.watch_error = watch_error;
    if result != Outcome::Succeeded && result != Outcome::Idle {
        let events = Events::read(client, &req.namespace, &req.name, &uid, target_changed_at).await;
        summary.warnings = events.warnings;
        if result != Outcome::Failed {
            let current = about_current_revision(Snapshot::of(&last).decided_at, target_changed_at);
            let newest = events.newest.as_deref();
            summary.activity = Some(activity(client, &req.namespace, &last, current, newest).await);
        }
    }
    Ok(summary)
}

/// `gridos-setup canary wait`: connects, waits with progress output, prints the final line (text)
/// or the summary object (`-o json`, also for failures and timeouts), and returns the exit code or
/// the error to print.
pub async fn wait_and_report(
    req: &WaitRequest,
    format: OutputFormat,
    terminal: bool,
) -> Result<i32, Error> {
    let cluster = cluster::connect(&req.connect).await?;
    let progress = progress::reporter(format, terminal);
    let summary = wait(&cluster.client, req, progress.as_ref()).await;
    progress.finish();
    let summary = summary?;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not worth failing the gate for; the exit code still tells.
    let _ = match format {
        OutputFormat::Json => writeln!(out, "{}", summary.json()),
        OutputFormat::Text if summary.error().is_none() => writeln!(out, "{}", summary.text()),
        // Text failures are the one-line error on stderr.
        OutputFormat::Text => Ok(()),
    };
    let _ = out.flush();
    match summary.error() {
        Some(e) => Err(e.into()),
        None => Ok(exit::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(phase: &str, weight: i64, failed: i64) -> Snapshot {
        Snapshot::from_status(Some(&json!({
            "phase": phase, "canaryWeight": weight, "failedChecks": failed,
            "conditions": [{"type": "Promoted", "status": "Unknown", "reason": phase,
                            "message": format!("{phase} message")}]
        })))
    }

    fn req() -> WaitRequest {
        WaitRequest {
            connect: ConnectRequest::default(),
            namespace: "gridos".into(),
            name: "gridos".into(),
            timeout: Duration::from_secs(10),
            allow_idle: false,
        }
    }

    #[test]
    fn phases_map_to_stages() {
        assert_eq!(stage(None), Stage::Unreported);
        assert_eq!(stage(Some("")), Stage::Unreported);
        assert_eq!(stage(Some("Initialized")), Stage::Idle);
        assert_eq!(stage(Some("Initializing")), Stage::Idle);
        for p in ["Progressing", "Promoting", "Finalising", "SomethingNew"] {
            assert_eq!(stage(Some(p)), Stage::InProgress, "{p}");
        }
        assert_eq!(stage(Some("Succeeded")), Stage::Succeeded);
        assert_eq!(stage(Some("Failed")), Stage::Failed);
        assert_eq!(stage(Some("Terminating")), Stage::Deleting);
    }

    #[test]
    fn idle_ends_the_wait_only_when_allowed() {
        assert_eq!(verdict(Stage::Idle, false, true), None);
        assert_eq!(verdict(Stage::Idle, true, true), Some(Outcome::Idle));
        assert_eq!(verdict(Stage::Unreported, true, true), None);
        assert_eq!(verdict(Stage::InProgress, true, true), None);
        assert_eq!(verdict(Stage::Failed, false, true), Some(Outcome::Failed));
    }

    fn at(t: &str) -> Option<Timestamp> {
        Some(t.parse().expect("timestamp"))
    }

    #[test]
    fn only_a_state_after_the_targets_change_is_about_it() {
        let change = at("2026-01-01T10:00:05Z");
        // Flagger decided after the change: its verdict on the new revision.
        assert!(about_current_revision(at("2026-01-01T10:00:06Z"), change));
        // The same second: not known to be after, so it does not count (the `<=` rule).
        assert!(!about_current_revision(at("2026-01-01T10:00:05Z"), change));
        assert!(!about_current_revision(at("2026-01-01T09:59:00Z"), change));
        // No target change known: every state counts; no time: none does.
        assert!(about_current_revision(at("2026-01-01T09:59:00Z"), None));
        assert!(about_current_revision(None, None));
        assert!(!about_current_revision(None, change));
    }

    #[test]
    fn a_stale_verdict_or_idle_never_ends_the_wait_but_a_gate_does() {
        for stage in [Stage::Succeeded, Stage::Failed, Stage::Idle] {
            assert_eq!(verdict(stage, true, false), None, "{stage:?}");
        }
        assert_eq!(
            verdict(Stage::Succeeded, false, true),
            Some(Outcome::Succeeded)
        );
        assert_eq!(
            verdict(Stage::AtGate, false, false),
            Some(Outcome::AwaitingApproval)
        );
        assert_eq!(stage(Some("WaitingPromotion")), Stage::AtGate);
        assert_eq!(stage(Some("Waiting")), Stage::AtGate);
    }

    /// The re-sync of a Failed canary: Flagger stamps `status.lastTransitionTime` every interval
    /// but keeps the Promoted condition's time, which is what the decision reads.
    #[test]
    fn a_resynced_failure_keeps_its_decision_time() {
        let s = Snapshot::from_status(Some(&json!({
            "phase": "Failed", "lastTransitionTime": "2026-01-01T10:05:00Z",
            "lastAppliedSpec": "new-hash",
            "conditions": [{"type": "Promoted", "status": "False", "reason": "Failed",
                            "lastTransitionTime": "2026-01-01T10:00:00Z"}]
        })));
        assert_eq!(s.decided_at, at("2026-01-01T10:00:00Z"));
        let redeployed = at("2026-01-01T10:04:59Z");
        assert_eq!(
            verdict(
                s.stage(),
                false,
                about_current_revision(s.decided_at, redeployed)
            ),
            None
        );
        // Without a condition (an older Flagger), the status time is all there is.
        let s = Snapshot::from_status(Some(&json!({
            "phase": "Succeeded", "lastTransitionTime": "2026-01-01T10:05:00Z"})));
        assert_eq!(s.decided_at, at("2026-01-01T10:05:00Z"));
    }

    #[test]
    fn what_flagger_is_doing_is_named() {
        let mut s = snap("WaitingPromotion", 0, 0);
        assert_eq!(
            activity_of(&s, true, Some(50)),
            Activity::AtGate {
                gate: "confirm-promotion".into(),
                webhook: None,
                routed_weight: Some(50)
            }
        );
        let a = activity_of(&snap("Succeeded", 0, 0), false, None);
        assert!(
            a.describe().contains("has not picked up"),
            "{}",
            a.describe()
        );
        assert!(a.hint("gridos/gridos").contains("logs deploy/flagger"));
        s = snap("Progressing", 0, 1);
        s.iterations = 2;
        s.iterations_of = 5;
        let a = activity_of(&s, true, Some(100));
        assert_eq!(
            a.describe(),
            "still Progressing at iteration 2 of 5 with 1 failed check"
        );
        assert_eq!(
            s.describe(),
            "Progressing, iteration 2 of 5, 1 failed check"
        );
        let gate = activity_of(&snap("Waiting", 0, 0), true, None);
        assert!(gate.describe().starts_with("waiting for approval"));
        let hint = gate.hint("a/b");
        assert!(
            hint.contains(r#"POST {"name":"b","namespace":"a"} to its /gate/open"#),
            "{hint}"
        );
    }

    #[test]
    fn a_new_revision_starts_the_weights_over() {
        let mut t = Tracker::default();
        let mut s = snap("Progressing", 10, 1);
        s.revision = Some("a".into());
        t.observe(&s);
        s.weight = 25;
        t.observe(&s);
        s.revision = Some("b".into());
        s.weight = 0;
        s.failed_checks = 0;
        t.observe(&s);
        s.weight = 10;
        t.observe(&s);
        assert_eq!(t.weights, vec![10]);
        assert_eq!(t.max_failed, 0);
    }

    #[test]
    fn the_template_owner_dates_the_change() {
        let d: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "gridos", "managedFields": [
                {"manager": "kubectl-set", "operation": "Update", "time": "2026-01-01T10:00:00Z",
                 "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:template": {"f:spec": {}}}}},
                {"manager": "flagger", "operation": "Update", "time": "2026-01-01T10:09:00Z",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
                 "time": "2026-01-01T10:09:30Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {}}}
            ]}
        }))
        .expect("deployment");
        assert_eq!(template_changed_at(&d), at("2026-01-01T10:00:00Z"));
    }

    #[test]
    fn a_status_is_read_as_flagger_writes_it() {
        let s = Snapshot::from_status(Some(&json!({
            "phase": "Progressing", "canaryWeight": 25.0, "failedChecks": 2,
            "conditions": [{"type": "Promoted", "message": "New revision detected, progressing canary analysis."}]
        })));
        assert_eq!(s.phase.as_deref(), Some("Progressing"));
        assert_eq!((s.weight, s.failed_checks), (25, 2));
        assert_eq!(
            s.message.as_deref(),
            Some("New revision detected, progressing canary analysis.")
        );
        assert_eq!(s.describe(), "Progressing, weight 25%, 2 failed checks");
        assert_eq!(Snapshot::from_status(None), Snapshot::default());
        assert_eq!(Snapshot::default().describe(), "no status from Flagger yet");
        assert_eq!(
            snap("Initialized", 0, 0).describe(),
            "Initialized: no rollout in progress"
        );
    }

    #[test]
    fn the_tracker_reports_changes_and_collects_weights() {
        let mut t = Tracker::default();
        assert!(t.observe(&Snapshot::default()));
        assert!(t.observe(&snap("Progressing", 0, 0)));
        assert!(t.observe(&snap("Progressing", 10, 0)));
        assert!(
            !t.observe(&snap("Progressing", 10, 0)),
            "no change, no line"
        );
        assert!(t.observe(&snap("Progressing", 10, 1)));
        assert!(t.observe(&snap("Progressing", 25, 1)));
        assert!(t.observe(&snap("Progressing", 50, 0)));
        assert!(t.observe(&snap("Promoting", 0, 0)));
        assert!(t.observe(&snap("Succeeded", 0, 0)));
        assert_eq!(t.weights, vec![10, 25, 50]);
        assert_eq!(t.max_failed, 1);
        assert!(t.saw_rollout);
        assert_eq!(
            t.messages,
            vec![
                "Progressing message",
                "Promoting message",
                "Succeeded message"
            ]
        );
        let s = t.summary(Outcome::Succeeded, &req(), Instant::now());
        assert!(
            s.text().contains("Succeeded after weights 10, 25, 50"),
            "{}",
            s.text()
        );
        assert!(s.error().is_none());
        let j = s.json();
        assert_eq!(j["event"], "summary");
        assert_eq!(j["result"], "succeeded");
        assert_eq!(j["weights_seen"], json!([10, 25, 50]));
        assert_eq!(
            j.as_object().and_then(|m| m.keys().next().cloned()),
            Some("event".to_string())
        );
    }

    #[test]
    fn a_failure_names_checks_messages_and_warnings() {
        let mut t = Tracker::default();
        t.observe(&snap("Progressing", 10, 5));
        t.observe(&snap("Failed", 0, 0));
        let mut s = t.summary(Outcome::Failed, &req(), Instant::now());
        s.warnings = vec!["Rolling back gridos.gridos failed checks threshold reached 5".into()];
        let e = s.error().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("canary gridos/gridos failed after weights 10 with 5 failed checks"),
            "{e}"
        );
        assert!(e.contains("Flagger: Failed message"), "{e}");
        assert!(e.contains("threshold reached 5"), "{e}");
        assert_eq!(s.error().map(|e| e.exit_code()), Some(exit::FAILED));
    }

    #[test]
    fn a_timeout_names_phase_and_weight() {
        let mut t = Tracker::default();
        t.observe(&snap("Progressing", 10, 0));
        t.observe(&snap("Progressing", 25, 0));
        let s = t.summary(Outcome::Timeout, &req(), Instant::now());
        let e = s.error().expect("a timeout is an error");
        assert_eq!(e.exit_code(), exit::TIMEOUT);
        let text = e.to_string();
        assert!(text.contains("timed out after 10s"), "{text}");
        assert!(text.contains("still Progressing at weight 25%"), "{text}");

        let mut t = Tracker::default();
        t.observe(&snap("Initialized", 0, 0));
        let e = t
            .summary(Outcome::Timeout, &req(), Instant::now())
            .error()
            .expect("error");
        assert!(
            e.to_string()
                .contains("no rollout in progress (phase Initialized)")
        );
        assert!(e.hint().contains("--allow-idle"));
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(600)), "10m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
    }
}
