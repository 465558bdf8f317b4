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
    /// A rollout runs (Progressing, Waiting, WaitingPromotion, Promoting, Finalising, or a phase
    /// a newer Flagger adds: waiting on is the safe reading of an unknown phase).
    InProgress,
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
        Some(_) => Stage::InProgress,
    }
}

/// What Flagger last wrote, reduced to what the wait reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub phase: Option<String>,
    pub weight: i64,
    #[serde(rename = "failedChecks")]
    pub failed_checks: i64,
    /// The `Promoted` condition's message (Flagger keeps exactly one condition).
    #[serde(skip)]
    pub message: Option<String>,
}

/// A status number; the CRD types them as `number`, so a float is read too.
fn number(v: Option<&serde_json::Value>) -> i64 {
    v.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

impl Snapshot {
    pub fn of(obj: &DynamicObject) -> Snapshot {
        Snapshot::from_status(obj.data.get("status"))
    }

    pub fn from_status(status: Option<&serde_json::Value>) -> Snapshot {
        let Some(s) = status.filter(|s| s.is_object()) else {
            return Snapshot::default();
        };
        let message = s
            .get("conditions")
            .and_then(|c| c.as_array())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Promoted"))
                    .or_else(|| cs.last())
            })
            .and_then(|c| c.get("message"))
            .and_then(|m| m.as_str())
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        Snapshot {
            phase: s
                .get("phase")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .map(str::to_string),
            weight: number(s.get("canaryWeight")),
            failed_checks: number(s.get("failedChecks")),
            message,
        }
    }

    pub fn stage(&self) -> Stage {
        stage(self.phase.as_deref())
    }

    /// `Progressing, weight 25%, 1 failed check` and the like, for progress lines and timeouts.
    pub fn describe(&self) -> String {
        match (self.stage(), self.phase.as_deref()) {
            (Stage::Unreported, _) => "no status from Flagger yet".into(),
            (Stage::Idle, Some(p)) => format!("{p}: no rollout in progress"),
            (_, p) => format!(
                "{}, weight {}%, {}",
                p.unwrap_or("?"),
                self.weight,
                checks(self.failed_checks)
            ),
        }
    }

    /// Whether the part people watch changed (a new lastTransitionTime alone is not news).
    fn same_progress(&self, other: &Snapshot) -> bool {
        self.phase == other.phase
            && self.weight == other.weight
            && self.failed_checks == other.failed_checks
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
    /// The last distinct messages of the `Promoted` condition.
    pub messages: Vec<String>,
    /// Recent Warning events on the Canary (failures and timeouts), newest last.
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
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
    fn stage(&self) -> Stage {
        stage(self.phase.as_deref())
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
            Outcome::Failed | Outcome::Timeout => {
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
            Outcome::Timeout => {
                let (state, hint) = match self.stage() {
                    Stage::Unreported => (
                        "Flagger has not written a status for it".to_string(),
                        "check that Flagger runs (`kubectl -n flagger-system get deploy flagger`) and watches this namespace".to_string(),
                    ),
                    Stage::Idle => (
                        format!("no rollout in progress (phase {})", self.phase.as_deref().unwrap_or("?")),
                        "deploy a new revision of the canary's target to start a rollout, or pass --allow-idle to accept an idle canary".to_string(),
                    ),
                    _ => (
                        format!(
                            "still {} at weight {}% with {}",
                            self.phase.as_deref().unwrap_or("?"),
                            self.weight,
                            checks(self.failed_checks)
                        ),
                        format!(
                            "give the analysis longer with --timeout (it takes about analysis.interval times the number of steps), or see why it stalls: `kubectl -n {} describe canary {}`",
                            self.canary.split('/').next().unwrap_or_default(),
                            self.canary.split('/').nth(1).unwrap_or_default()
                        ),
                    ),
                };
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
            CanaryError::Timeout { hint, .. } => hint.clone(),
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
    max_failed: i64,
    messages: Vec<String>,
    saw_rollout: bool,
}

impl Tracker {
    /// Records a snapshot; true when phase, weight or failed checks changed.
    fn observe(&mut self, s: &Snapshot) -> bool {
        if s.weight > 0 && self.weights.last() != Some(&s.weight) {
            self.weights.push(s.weight);
        }
        self.max_failed = self.max_failed.max(s.failed_checks);
        if s.stage() == Stage::InProgress {
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
            messages: self.messages.clone(),
            warnings: Vec::new(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            timeout: req.timeout,
            saw_rollout: self.saw_rollout,
            watch_error: None,
        }
    }
}

/// Whether a stage ends the wait, and how.
pub fn verdict(stage: Stage, allow_idle: bool) -> Option<Outcome> {
    match stage {
        Stage::Succeeded => Some(Outcome::Succeeded),
        Stage::Failed => Some(Outcome::Failed),
        Stage::Idle if allow_idle => Some(Outcome::Idle),
        _ => None,
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
async fn first_read(api: &Api<DynamicObject>, req: &WaitRequest) -> Result<String, CanaryError> {
    let canary = format!("{}/{}", req.namespace, req.name);
    match api.get(&req.name).await {
        Ok(o) => Ok(o.uid().unwrap_or_default()),
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

/// The last Warning events about the Canary (newest last), repeated messages folded into one
/// with their count. Best effort: without them the verdict still stands.
pub async fn warnings(client: &Client, ns: &str, name: &str, uid: &str) -> Vec<String> {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Canary,involvedObject.name={name},type=Warning"
    ));
    let Ok(list) = events.list(&lp).await else {
        return Vec::new();
    };
    let mut items: Vec<_> = list
        .items
        .into_iter()
        // A Canary deleted and re-created under the same name has older events of its own.
        .filter(|e| uid.is_empty() || e.involved_object.uid.as_deref().is_none_or(|u| u == uid))
        .collect();
    items.sort_by_key(|e| {
        e.series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or(e.last_timestamp.as_ref().map(|t| t.0))
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    // Folded by message, ordered by each message's newest occurrence.
    let mut counts: BTreeMap<String, (usize, i64)> = BTreeMap::new();
    for (i, e) in items.iter().enumerate() {
        let msg = e.message.clone().unwrap_or_default();
        if msg.is_empty() {
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

/// When the Canary's target Deployment was last changed by anyone but its controllers: the newest
/// managedFields time outside the status subresource. `None` when unknown (no target yet).
async fn target_changed_at(
    client: &Client,
    api: &Api<DynamicObject>,
    req: &WaitRequest,
) -> Option<k8s_openapi::jiff::Timestamp> {
    let canary = api.get(&req.name).await.ok()?;
    let target = canary.data["spec"]["targetRef"]["name"]
        .as_str()?
        .to_string();
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &req.namespace);
    let d = deployments.get_opt(&target).await.ok()??;
    d.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() != Some("status"))
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

/// Whether the Canary's decision (its lastTransitionTime) is older than the target's last change.
fn verdict_predates(
    obj: &DynamicObject,
    target_changed_at: Option<k8s_openapi::jiff::Timestamp>,
) -> bool {
    let Some(changed) = target_changed_at else {
        return false;
    };
    let decided = obj.data["status"]["lastTransitionTime"]
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    decided.is_some_and(|d| d < changed)
}

/// What one delivered state of the Canary means: reported if it changed, then a verdict, an
/// error (being deleted), or nothing yet.
fn judge(
    obj: &DynamicObject,
    tracker: &mut Tracker,
    canary: &str,
    req: &WaitRequest,
    target_changed_at: Option<k8s_openapi::jiff::Timestamp>,
    progress: &dyn Reporter,
) -> Result<Option<Outcome>, CanaryError> {
    let snap = Snapshot::of(obj);
    if tracker.observe(&snap) {
        progress.event(&Event::Canary {
            canary: canary.to_string(),
            description: snap.describe(),
            phase: snap.phase.clone(),
            weight: snap.weight,
            failed_checks: snap.failed_checks,
        });
    }
    if snap.stage() == Stage::Deleting {
        return Err(CanaryError::Deleting {
            canary: canary.to_string(),
            phase: snap.phase.unwrap_or_default(),
        });
    }
    let outcome = verdict(snap.stage(), req.allow_idle);
    // A verdict older than the target's last change belongs to the previous rollout: right after
    // `kubectl set image`, Flagger has not noticed the new revision yet.
    if matches!(outcome, Some(Outcome::Succeeded | Outcome::Failed))
        && verdict_predates(obj, target_changed_at)
    {
        return Ok(None);
    }
    Ok(outcome)
}

/// Watches the Canary until Flagger has decided or the deadline passes. Failed and timed-out
/// waits come back as a [`Summary`] too (see [`Summary::error`]), so `-o json` can print one.
pub async fn wait(
    client: &Client,
    req: &WaitRequest,
    progress: &dyn Reporter,
) -> Result<Summary, CanaryError> {
    let started = Instant::now();
    let deadline = crate::context::deadline_after(started, req.timeout);
    let canary = format!("{}/{}", req.namespace, req.name);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &req.namespace, &resource());
    let uid = first_read(&api, req).await?;
    let target_changed_at = target_changed_at(client, &api, req).await;

    // Only what the watcher delivers is reported: its first object comes from the list the watch
    // then continues from, so once the first line is out no later change can be missed.
    let config = watcher::Config::default().fields(&format!("metadata.name={}", req.name));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut tracker = Tracker::default();
    let mut seen_in_list = false;
    let mut watch_error: Option<String> = None;
    let result = loop {
        let event = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break Outcome::Timeout,
            // The watcher restarts itself; an ended stream is not expected, but is a timeout
            // rather than a hang.
            Ok(None) => {
                watch_error.get_or_insert_with(|| "the watch ended".into());
                break Outcome::Timeout;
            }
            Ok(Some(ev)) => ev,
        };
        let obj = match event {
            Ok(watcher::Event::Init) => {
                seen_in_list = false;
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                watch_error = None;
                if !seen_in_list {
                    return Err(CanaryError::Deleted { canary });
                }
                continue;
            }
            Ok(watcher::Event::Delete(_)) => return Err(CanaryError::Deleted { canary }),
            Ok(watcher::Event::InitApply(o)) => {
                seen_in_list = true;
                o
            }
            Ok(watcher::Event::Apply(o)) => o,
            Err(e) => {
                if let Some(fatal) = fatal_watch_error(&e, &canary) {
                    return Err(fatal);
                }
                tracing::info!("watching canary {canary}: {e}; reconnecting");
                watch_error = Some(e.to_string());
                continue;
            }
        };
        watch_error = None;
        if let Some(outcome) = judge(
            &obj,
            &mut tracker,
            &canary,
            req,
            target_changed_at,
            progress,
        )? {
            break outcome;
        }
    };
    let mut summary = tracker.summary(result, req, started);
    summary.watch_error = watch_error;
    if matches!(result, Outcome::Failed | Outcome::Timeout) {
        summary.warnings = warnings(client, &req.namespace, &req.name, &uid).await;
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
        for p in [
            "Waiting",
            "Progressing",
            "WaitingPromotion",
            "Promoting",
            "Finalising",
            "SomethingNew",
        ] {
            assert_eq!(stage(Some(p)), Stage::InProgress, "{p}");
        }
        assert_eq!(stage(Some("Succeeded")), Stage::Succeeded);
        assert_eq!(stage(Some("Failed")), Stage::Failed);
        assert_eq!(stage(Some("Terminating")), Stage::Deleting);
    }

    #[test]
    fn idle_ends_the_wait_only_when_allowed() {
        assert_eq!(verdict(Stage::Idle, false), None);
        assert_eq!(verdict(Stage::Idle, true), Some(Outcome::Idle));
        assert_eq!(verdict(Stage::Unreported, true), None);
        assert_eq!(verdict(Stage::InProgress, true), None);
        assert_eq!(verdict(Stage::Failed, false), Some(Outcome::Failed));
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
