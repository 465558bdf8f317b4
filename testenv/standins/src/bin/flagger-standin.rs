//! Test stand-in for Flagger's controller: writes one Canary's status through the phases of a rollout, as Flagger 1.44 does.
//!
//! The test control plane runs no Flagger (its pods would be kwok pods that never run a
//! process), so the tests of `gridos-setup canary wait` start this instead. It writes only what
//! Flagger writes and nothing is analysed: the status subresource (a merge patch on `/status`
//! with `phase`, `canaryWeight`, `failedChecks`, `iterations`, `lastAppliedSpec`,
//! `lastPromotedSpec`, `lastTransitionTime` and the one `Promoted` condition, whose reason is the
//! phase and whose message is Flagger's fixed text for it) and the Events Flagger records on the
//! Canary (reason `Synced`; the analysis failures as Warnings). The order of writes and their
//! values follow Flagger's scheduler (`pkg/controller/scheduler.go`, `pkg/canary/status.go`):
//! setStatusPhase zeroes weight and iterations outside Progressing and Waiting, a rollback marks
//! the Canary Failed with weight 0 and failedChecks 0 after its Warning events.
//!
//! Scenarios: `succeed` (weights 10, 25, 50, Promoting, Finalising, Succeeded), `fail` (weight 10,
//! failed checks up to the threshold, Failed), `stall` (weights 10 and 25, then nothing), `idle`
//! (Initializing, Initialized). Each write is retried until the apiserver takes it, so a test can
//! restart the apiserver in the middle.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Config, Resource};
use serde_json::{Value, json};

/// Spec hashes in the form Flagger writes (`rand.SafeEncodeString` of an FNV hash); the target
/// Deployment does not exist here, so they stand for "the first revision" and "a new revision".
const FIRST_REVISION: &str = "5f8c9d7b6";
const NEW_REVISION: &str = "6d4b5c8f9";
/// How long one write is retried before the stand-in gives up (an apiserver restart takes seconds).
const WRITE_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Succeed,
    Fail,
    Stall,
    Idle,
}

#[derive(Parser)]
#[command(
    about = "Test stand-in for Flagger's controller: writes one Canary's status as a rollout would"
)]
struct Args {
    /// Kubeconfig of the test control plane.
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    name: String,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Pause after each status write, in milliseconds (Flagger's analysis interval, shortened).
    #[arg(long, default_value_t = 300)]
    step_ms: u64,
}

fn now() -> Value {
    // Time serialises as Kubernetes does: RFC 3339, whole seconds, UTC.
    serde_json::to_value(Time(Timestamp::now())).unwrap_or(Value::Null)
}

/// The `Promoted` condition Flagger's MakeStatusConditions writes for a phase.
fn condition_for(phase: &str, target_kind: &str) -> (&'static str, String) {
    match phase {
        "Initializing" => (
            "Unknown",
            format!("New {target_kind} detected, starting initialization."),
        ),
        "Initialized" => ("True", format!("{target_kind} initialization completed.")),
        "Waiting" | "WaitingPromotion" => ("Unknown", "Waiting for approval.".into()),
        "Progressing" => (
            "Unknown",
            "New revision detected, progressing canary analysis.".into(),
        ),
        "Promoting" => (
            "Unknown",
            "Canary analysis completed, starting primary rolling update.".into(),
        ),
        "Finalising" => (
            "Unknown",
            "Canary analysis completed, routing all traffic to primary.".into(),
        ),
        "Succeeded" => (
            "True",
            "Canary analysis completed successfully, promotion finished.".into(),
        ),
        "Failed" => (
            "False",
            format!("Canary analysis failed, {target_kind} scaled to zero."),
        ),
        _ => ("Unknown", String::new()),
    }
}

struct Standin {
    api: Api<DynamicObject>,
    client: Client,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    name: String,
    namespace: String,
    target: String,
    target_kind: String,
    provider: String,
    threshold: i64,
    step_weights: Vec<i64>,
    step: Duration,
    /// The status as last written, for the fields a write keeps (conditions, lastAppliedSpec).
    status: Value,
}

impl Standin {
    async fn pause(&self) {
        tokio::time::sleep(self.step).await;
    }

    /// Merge-patches the status, retrying until the apiserver takes it.
    async fn write(&mut self, fields: Value) -> Result<()> {
        let patch = json!({ "status": fields });
        let give_up = tokio::time::Instant::now() + WRITE_DEADLINE;
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(o) => {
                    self.status = o.data.get("status").cloned().unwrap_or(Value::Null);
                    tracing::info!(
                        "status phase={} canaryWeight={} failedChecks={}",
                        self.status["phase"],
                        self.status["canaryWeight"],
                        self.status["failedChecks"]
                    );
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    bail!(
                        "canary {}/{} is gone: {}",
                        self.namespace,
                        self.name,
                        s.message
                    )
                }
                Err(e) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!("writing the status: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e).context("writing the status"),
            }
        }
    }

    /// Records an Event on the Canary as Flagger's recordEvent*f do (reason `Synced`).
    async fn event(&self, type_: EventType, note: String) {
        tracing::info!("event {type_:?}: {note}");
        // A recorder per event: kube-rs folds events with the same reason and action into one
        // series and keeps the first note, which would hide every message after the first.
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "flagger".into(),
                instance: Some("flagger-standin".into()),
            },
        );
        let ev = Event {
            type_,
            reason: "Synced".into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        let give_up = tokio::time::Instant::now() + WRITE_DEADLINE;
        loop {
            match recorder.publish(&ev, &self.reference).await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!("recording an event: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::warn!("recording an event: {e}; giving up");
                    return;
                }
            }
        }
    }

    async fn info(&self, note: String) {
        self.event(EventType::Normal, note).await;
    }

    async fn warning(&self, note: String) {
        self.event(EventType::Warning, note).await;
    }

    /// The condition for a phase, or None when Flagger would keep the current one (same status
    /// and reason); its lastTransitionTime stays when only the reason changes.
    fn conditions(&self, phase: &str) -> Option<Value> {
        let (status, message) = condition_for(phase, &self.target_kind);
        let current = self.status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Promoted"))
            .cloned();
        if let Some(c) = &current
            && c["status"] == status
            && c["reason"] == phase
        {
            return None;
        }
        let now = now();
        let transition = match &current {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => now.clone(),
        };
        Some(json!([{
            "type": "Promoted",
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": transition,
            "reason": phase,
            "message": message,
        }]))
    }

    /// Flagger's setStatusPhase.
    async fn set_phase(&mut self, phase: &str) -> Result<()> {
        let mut fields = json!({ "phase": phase, "lastTransitionTime": now() });
        if phase != "Progressing" && phase != "Waiting" {
            fields["canaryWeight"] = json!(0);
            fields["iterations"] = json!(0);
        }
        if phase == "Initialized" || phase == "Succeeded" {
            fields["lastPromotedSpec"] = self.status["lastAppliedSpec"].clone();
        }
        if let Some(c) = self.conditions(phase) {
            fields["conditions"] = c;
        }
        self.write(fields).await?;
        self.pause().await;
        Ok(())
    }

    /// Flagger's syncCanaryStatus: the whole progress at once, with the target's spec hash.
    async fn sync_status(
        &mut self,
        phase: &str,
        weight: i64,
        failed: i64,
        revision: &str,
    ) -> Result<()> {
        let mut fields = json!({
            "phase": phase,
            "canaryWeight": weight,
            "failedChecks": failed,
            "iterations": 0,
            "lastAppliedSpec": revision,
            "lastTransitionTime": now(),
        });
        if phase == "Initialized" {
            fields["lastPromotedSpec"] = json!(revision);
        }
        if let Some(c) = self.conditions(phase) {
            fields["conditions"] = c;
        }
        self.write(fields).await?;
        self.pause().await;
        Ok(())
    }

    /// Flagger's setStatusWeight, after routing the traffic.
    async fn set_weight(&mut self, weight: i64) -> Result<()> {
        self.write(json!({ "canaryWeight": weight, "lastTransitionTime": now() }))
            .await?;
        self.info(format!(
            "Advance {}.{} canary weight {weight}",
            self.name, self.namespace
        ))
        .await;
        self.pause().await;
        Ok(())
    }

    /// Flagger's setStatusFailedChecks, after a metric check halted the advancement.
    async fn failed_check(&mut self, n: i64) -> Result<()> {
        self.warning(format!(
            "Halt advancement no values found for {} metric request-success-rate probably {}.{} is not receiving traffic: running query failed: no values found",
            self.provider, self.target, self.namespace
        ))
        .await;
        self.write(json!({ "failedChecks": n, "lastTransitionTime": now() }))
            .await?;
        self.pause().await;
        Ok(())
    }

    /// A new Canary: Initializing, then Initialized once the primary exists.
    async fn initialize(&mut self) -> Result<()> {
        let phase = self.status["phase"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !(phase.is_empty() || phase == "Initializing") {
            return Ok(());
        }
        self.set_phase("Initializing").await?;
        self.sync_status("Initialized", 0, 0, FIRST_REVISION)
            .await?;
        self.info(format!(
            "Initialization done! {}.{}",
            self.name, self.namespace
        ))
        .await;
        Ok(())
    }

    /// A new revision of the target: the analysis starts.
    async fn start_rollout(&mut self) -> Result<()> {
        self.info(format!(
            "New revision detected! Scaling up {}.{}",
            self.target, self.namespace
        ))
        .await;
        self.sync_status("Progressing", 0, 0, NEW_REVISION).await?;
        self.info(format!(
            "Starting canary analysis for {}.{}",
            self.target, self.namespace
        ))
        .await;
        Ok(())
    }

    async fn succeed(&mut self) -> Result<()> {
        for w in self.step_weights.clone() {
            self.set_weight(w).await?;
        }
        self.info(format!(
            "Copying {t}.{ns} template spec to {t}-primary.{ns}",
            t = self.target,
            ns = self.namespace
        ))
        .await;
        self.set_phase("Promoting").await?;
        self.info("Routing all traffic to primary".into()).await;
        self.set_phase("Finalising").await?;
        self.set_phase("Succeeded").await?;
        self.info(format!(
            "Promotion completed! Scaling down {}.{}",
            self.target, self.namespace
        ))
        .await;
        Ok(())
    }

    async fn fail(&mut self) -> Result<()> {
        let first = self.step_weights.first().copied().unwrap_or(10);
        self.set_weight(first).await?;
        for n in 1..=self.threshold {
            self.failed_check(n).await?;
        }
        // Flagger's rollback: the threshold warning, the scale-down warning, then the status.
        self.warning(format!(
            "Rolling back {}.{} failed checks threshold reached {}",
            self.name, self.namespace, self.threshold
        ))
        .await;
        self.warning(format!(
            "Canary failed! Scaling down {}.{}",
            self.name, self.namespace
        ))
        .await;
        self.sync_status("Failed", 0, 0, NEW_REVISION).await?;
        Ok(())
    }

    async fn stall(&mut self) -> Result<()> {
        for w in self
            .step_weights
            .iter()
            .copied()
            .take(2)
            .collect::<Vec<_>>()
        {
            self.set_weight(w).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("flagger.app", "v1beta1", "Canary"),
        "canaries",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &args.namespace, &ar);
    let canary = api
        .get(&args.name)
        .await
        .with_context(|| format!("reading canary {}/{}", args.namespace, args.name))?;
    let spec = canary.data.get("spec").cloned().unwrap_or(Value::Null);
    let step_weights: Vec<i64> = spec["analysis"]["stepWeights"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w.as_i64()).collect())
        .filter(|ws: &Vec<i64>| !ws.is_empty())
        .unwrap_or_else(|| vec![10, 25, 50]);
    let mut standin = Standin {
        reference: canary.object_ref(&ar),
        api,
        client,
        name: args.name.clone(),
        namespace: args.namespace.clone(),
        target: spec["targetRef"]["name"]
            .as_str()
            .unwrap_or(&args.name)
            .to_string(),
        target_kind: spec["targetRef"]["kind"]
            .as_str()
            .unwrap_or("Deployment")
            .to_string(),
        provider: spec["provider"].as_str().unwrap_or("nginx").to_string(),
        threshold: spec["analysis"]["threshold"]
            .as_i64()
            .filter(|t| *t > 0)
            .unwrap_or(5),
        step_weights,
        step: Duration::from_millis(args.step_ms),
        status: canary.data.get("status").cloned().unwrap_or(Value::Null),
    };
    tracing::info!(
        "flagger-standin: canary {}/{} scenario {:?}",
        args.namespace,
        args.name,
        args.scenario
    );
    standin.initialize().await?;
    match args.scenario {
        Scenario::Idle => {}
        Scenario::Succeed => {
            standin.start_rollout().await?;
            standin.succeed().await?;
        }
        Scenario::Fail => {
            standin.start_rollout().await?;
            standin.fail().await?;
        }
        Scenario::Stall => {
            standin.start_rollout().await?;
            standin.stall().await?;
        }
    }
    tracing::info!("flagger-standin: done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_carry_flaggers_texts() {
        assert_eq!(
            condition_for("Succeeded", "Deployment"),
            (
                "True",
                "Canary analysis completed successfully, promotion finished.".to_string()
            )
        );
        assert_eq!(
            condition_for("Failed", "Deployment"),
            (
                "False",
                "Canary analysis failed, Deployment scaled to zero.".to_string()
            )
        );
        assert_eq!(condition_for("Progressing", "Deployment").0, "Unknown");
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        let t = now();
        let s = t.as_str().unwrap_or_default();
        assert_eq!(s.len(), "2026-01-01T00:00:00Z".len(), "{s}");
        assert!(s.ends_with('Z'));
    }
}
