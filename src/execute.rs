//! Executing a plan: the install's stages in order, each a short function over the run context.
//!
//! authorize -> foundation -> establish CRDs -> workloads -> rollouts -> admission and custom
//! resources -> address -> prune. No write starts after an interruption; the ApplySet record is
//! widened before the first object write, so an interrupted run is resumed by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use tokio::time::Instant;

use crate::apply::{self, ApplyError, ApplyOptions, ObjectResult, Outcome, Resolver};
use crate::applyset::{self, ApplySetRecord, Ledger, Settled};
use crate::context::{Phase, RunContext};
use crate::error::Error;
use crate::permissions;
use crate::plan::{CONTROLLER_SERVICE, Plan, component_of};
use crate::profile::TrafficLayer;
use crate::progress::{Event, State};
use crate::render::{Object, Wave};
use crate::wait;

/// What a finished execution found out.
pub struct Executed {
    pub objects: Vec<ObjectResult>,
    /// The controller's load-balancer address, once known.
    pub address: Option<String>,
}

/// How to execute, beyond the plan.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecuteOptions {
    pub force_conflicts: bool,
    /// Return after applying, without waiting for rollouts or the address.
    pub no_wait: bool,
}

/// One execution's state between stages.
struct Execution<'p, 'c, 'r> {
    /// The plan; its resolver is refreshed once new kinds are served.
    plan: &'p mut Plan,
    ctx: &'c mut RunContext<'r>,
    ledger: Ledger,
    after: ApplySetRecord,
    opts: ApplyOptions,
    wait: bool,
    results: Vec<ObjectResult>,
    /// Objects already applied ahead of their wave (a re-run applies everything at once).
    applied_ahead: BTreeMap<String, DynamicObject>,
    /// The Gateway as applied (Gateway API layer), whose status may already say Programmed.
    applied_gateway: Option<DynamicObject>,
    /// The rendered CRDs this run has seen settled, by name: recorded when the run finishes.
    settled: BTreeMap<String, Settled>,
}

/// A Deployment still rolling out: (component, namespace, name).
type Rollout = (String, String, String);

/// Runs the stages of `plan` and returns what they did.
pub async fn execute(
    plan: &mut Plan,
    ctx: &mut RunContext<'_>,
    options: ExecuteOptions,
) -> Result<Executed, Error> {
    let mut run = Execution {
        ledger: Ledger::new(ctx.client.clone(), &plan.before, ctx.until()),
        after: plan.after.clone(),
        opts: ApplyOptions {
            dry_run: false,
            force: options.force_conflicts,
            deadline: ctx.until(),
        },
        wait: !options.no_wait,
        plan,
        ctx,
        results: Vec::new(),
        applied_ahead: BTreeMap::new(),
        applied_gateway: None,
        settled: BTreeMap::new(),
    };
    run.namespaces_gone().await?;
    run.authorize().await?;
    let pending = run.foundation().await?;
    run.establish(&pending).await?;
    let (rollouts, controller_service) = run.workloads().await?;
    run.rollouts(rollouts).await?;
    run.admission_and_custom().await?;
    let address = run.address(controller_service.as_ref()).await?;
    run.prune().await?;
    Ok(Executed {
        objects: run.results,
        address,
    })
}

fn parent_error(e: kube::Error) -> Error {
    Error::Apply(ApplyError::Parent(e))
}

const CRD: &str = "CustomResourceDefinition";

/// Deserializes an applied object into its typed form.
fn typed<T: serde::de::DeserializeOwned>(o: &DynamicObject) -> Option<T> {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

impl Execution<'_, '_, '_> {
    /// Waits until the rendered namespaces that were being deleted are gone, before any check or
    /// write that would meet them (see `Plan::terminating`).
    async fn namespaces_gone(&mut self) -> Result<(), Error> {
        if self.plan.terminating.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        let names = self.plan.terminating.clone();
        for n in &names {
            self.ctx.notice(format!(
                "namespace {n} is still being deleted (a prune or uninstall just before): waiting for it to go"
            ));
        }
        let (client, deadline) = (self.ctx.client.clone(), self.ctx.deadline);
        let interrupt = self.ctx.interrupt.clone();
        interrupt
            .guard(async {
                try_join_all(
                    names
                        .iter()
                        .map(|n| wait::namespace_gone(&client, n, deadline)),
                )
                .await
                .map_err(Error::from)
            })
            .await?;
        self.ctx.timings.add(Phase::Wait, t);
        Ok(())
    }

    /// Refused here, a user without the rights leaves the cluster untouched; then the record is
    /// widened, the run's first write.
    async fn authorize(&mut self) -> Result<(), Error> {
        let p = &*self.plan;
        let until = self.ctx.until();
        permissions::authorize_writes(&self.ctx.client, &p.resolver, &p.objects, &p.before, until)
            .await?;
        self.ctx.interrupt.check()?;
        self.ledger.widen(&self.after).await.map_err(parent_error)?;
        // Adoption: what must be created anew (the chart's certgen webhook Secret) goes first.
        crate::adopt::before_apply(&self.ctx.client, &p.resolver, &p.adoption, false).await?;
        crate::adopt::hand_over(&self.ctx.client, &p.resolver, &p.adoption, false).await?;
        // A re-run applies every object at once: four round trips fewer than wave by wave.
        if self.plan.is_rerun() {
            let t = Instant::now();
            let unchanged = self.unchanged_crds().await?;
            let objects: Vec<Object> = self
                .plan
                .objects
                .iter()
                .filter(|o| !unchanged.contains_key(&o.id()))
                .cloned()
                .collect();
            for id in unchanged.keys() {
                self.record(ObjectResult {
                    id: id.clone(),
                    result: Outcome::Unchanged,
                });
            }
            let applied = self.apply_wave(&objects).await?;
            self.applied_ahead = objects.iter().map(Object::id).zip(applied).collect();
            tracing::debug!(
                "re-run: applied every object at once but {} settled CRDs no one has written since the last run",
                unchanged.len()
            );
            self.applied_ahead.extend(unchanged);
            self.ctx.timings.add(Phase::Apply, t);
        }
        Ok(())
    }

    /// The rendered CRDs that the last finished run left settled, rendered the same now, and not
    /// written by anyone since (their resourceVersion has not moved), as the cluster holds them,
    /// by object id. One list request, and none when no CRD qualifies; not while adopting, which
    /// rewrites objects Helm left.
    async fn unchanged_crds(&self) -> Result<BTreeMap<String, DynamicObject>, Error> {
        let p = &*self.plan;
        if !p.adoption.is_empty() {
            return Ok(BTreeMap::new());
        }
        let candidates: BTreeMap<&str, (&Object, &Settled)> = p
            .objects
            .iter()
            .filter(|o| o.kind() == CRD)
            .filter_map(|o| {
                let s = p.before.settled.get(o.name())?;
                (s.digest == applyset::digest(o)).then_some((o.name(), (o, s)))
            })
            .collect();
        if candidates.is_empty() {
            return Ok(BTreeMap::new());
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.ctx.client.clone());
        let lp = ListParams::default().labels(&format!(
            "{}={}",
            applyset::PART_OF,
            applyset::applyset_id()
        ));
        let list = crate::retry::with_retry("listing the CRDs", self.ctx.until(), || api.list(&lp))
            .await
            .map_err(|e| Error::Api {
                context: "listing the CRDs of the last run".into(),
                source: e,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|crd| {
                let name = crd.metadata.name.as_deref()?;
                let (o, s) = candidates.get(name)?;
                // The digest was compared above.
                let rv = applyset::settled_version(&crd.metadata, wait::crd_is_established(&crd))?;
                if rv != s.resource_version {
                    return None;
                }
                let live = serde_json::from_value(serde_json::to_value(&crd).ok()?).ok()?;
                Some((o.id(), live))
            })
            .collect())
    }

    /// Notes a rendered CRD as the cluster holds it after this run's apply or wait.
    fn note_crd(&mut self, obj: &Object, live: &CustomResourceDefinition) {
        match applyset::settled(obj, &live.metadata, wait::crd_is_established(live)) {
            Some(s) => self.settled.insert(obj.name().to_string(), s),
            None => self.settled.remove(obj.name()),
        };
    }

    /// Namespaces and CRDs. The namespaces this run created are recorded at once, so an
    /// interrupted run does not forget them. Returns the CRDs not yet Established.
    async fn foundation(&mut self) -> Result<Vec<Object>, Error> {
        let t = Instant::now();
        let foundation = self.plan.wave(Wave::Foundation);
        let applied = self.apply_wave(&foundation).await?;
        self.ctx.timings.add(Phase::Apply, t);
        let mut pending = Vec::new();
        for (o, a) in foundation.iter().zip(&applied) {
            if o.kind() != CRD {
                continue;
            }
            let crd: Option<CustomResourceDefinition> = typed(a);
            if let Some(crd) = &crd {
                self.note_crd(o, crd);
            }
            if !crd.as_ref().is_some_and(wait::crd_is_established) {
                pending.push(o.clone());
            }
        }
        let before = &self.plan.before;
        let created: BTreeSet<String> = foundation
            .iter()
            .zip(&applied)
            .filter(|(o, a)| {
                o.kind() == "Namespace" && apply::outcome(before, o, a) == Outcome::Created
            })
            .map(|(o, _)| o.name().to_string())
            .collect();
        self.after
            .created_namespaces
            .extend(created.iter().cloned());
        if !created.is_empty() {
            self.ctx.interrupt.check()?;
            self.ledger
                .record_namespaces(&created)
                .await
                .map_err(parent_error)?;
        }
        Ok(pending)
    }

    /// Waits for new CRDs to be Established, then until discovery serves every rendered kind.
    async fn establish(&mut self, pending: &[Object]) -> Result<(), Error> {
        let t = Instant::now();
        for crd in pending {
            self.ctx
                .running("flagger", format!("waiting for CRD {}", crd.name()));
        }
        let (client, deadline) = (self.ctx.client.clone(), self.ctx.deadline);
        let interrupt = self.ctx.interrupt.clone();
        let established = interrupt
            .guard(async {
                try_join_all(
                    pending
                        .iter()
                        .map(|o| wait::crd_established(&client, o.name(), deadline)),
                )
                .await
                .map_err(Error::from)
            })
            .await?;
        for (o, crd) in pending.iter().zip(&established) {
            self.note_crd(o, crd);
        }
        let unresolved = self
            .plan
            .objects
            .iter()
            .any(|o| self.plan.resolver.resolve(o).is_err());
        if !pending.is_empty() || unresolved {
            let resolver = interrupt
                .guard(refresh_discovery(&client, &self.plan.objects, deadline))
                .await?;
            self.plan.resolver = resolver;
        }
        self.ctx.timings.add(Phase::Wait, t);
        Ok(())
    }

    /// RBAC and configuration, then Services and Deployments. Returns the Deployments still
    /// rolling out and the controller Service as applied.
    async fn workloads(&mut self) -> Result<(Vec<Rollout>, Option<Service>), Error> {
        let t = Instant::now();
        self.apply_wave(&self.plan.wave(Wave::Config)).await?;
        let workloads = self.plan.wave(Wave::Workloads);
        let applied = self.apply_wave(&workloads).await?;
        self.ctx.timings.add(Phase::Apply, t);
        let mut rollouts = Vec::new();
        let mut controller = None;
        for (o, a) in workloads.iter().zip(&applied) {
            match o.kind() {
                "Service" if o.name() == CONTROLLER_SERVICE => controller = typed(a),
                "Deployment" => {
                    let d: Option<Deployment> = typed(a);
                    if !d.as_ref().is_some_and(wait::deployment_is_rolled_out) {
                        let ns = o.namespace().unwrap_or_default().to_string();
                        rollouts.push((component_of(o), ns, o.name().to_string()));
                    }
                }
                _ => {}
            }
        }
        Ok((rollouts, controller))
    }

    /// Waits for every Deployment to roll out (not with `--no-wait`); the first to fail ends the run.
    async fn rollouts(&mut self, rollouts: Vec<Rollout>) -> Result<(), Error> {
        if !self.wait || rollouts.is_empty() {
            return Ok(());
        }
        let t = Instant::now();
        for (component, _, name) in &rollouts {
            self.ctx.running(
                component,
                format!("waiting for Deployment {name} to roll out"),
            );
        }
        let (client, deadline) = (&self.ctx.client, self.ctx.deadline);
        let waits = rollouts.iter().map(|(component, ns, name)| async move {
            wait::deployment_rolled_out(client, ns, name, deadline)
                .await
                .map(|_| ())
                .map_err(|e| (component.clone(), e))
        });
        let all = self
            .ctx
            .interrupt
            .guard(async { Ok::<_, Error>(try_join_all(waits).await) })
            .await?;
        if let Err((component, e)) = all {
            self.ctx.finished(&component, State::Failed, e.to_string());
            return Err(e.into());
        }
        self.ctx.timings.add(Phase::Wait, t);
        Ok(())
    }

    /// The webhook once its backend runs, then the custom resources.
    async fn admission_and_custom(&mut self) -> Result<(), Error> {
        let t = Instant::now();
        self.apply_wave(&self.plan.wave(Wave::Admission)).await?;
        let custom = self.plan.wave(Wave::Custom);
        let applied = self.apply_wave(&custom).await?;
        self.applied_gateway = custom
            .iter()
            .zip(applied)
            .find(|(o, _)| o.kind() == "Gateway")
            .map(|(_, a)| a);
        self.ctx.timings.add(Phase::Apply, t);
        Ok(())
    }

    /// The controller's load-balancer address: as applied, or waited for (not with `--no-wait`).
    /// After a switch between public and internal the old address does not count.
    async fn address(&mut self, service: Option<&Service>) -> Result<Option<String>, Error> {
        if self.plan.values.traffic.layer == TrafficLayer::GatewayApi {
            return self.gateway_address().await;
        }
        let stale = self.plan.stale_address();
        let known = service
            .and_then(wait::service_address)
            .filter(|a| Some(a) != stale.as_ref());
        // A switch of layer prunes the other layer next: only once this one has its address,
        // even with --no-wait, so there is no moment without either.
        if known.is_some() || (!self.wait && !self.plan.layer_switch()) {
            return Ok(known);
        }
        let ns = self.plan.values.namespaces.ingress.clone();
        let (client, deadline) = (self.ctx.client.clone(), self.ctx.deadline);
        self.wait_for_address(
            "ingress-nginx",
            format!("waiting for the load-balancer address of Service {CONTROLLER_SERVICE}"),
            format!("Service {ns}/{CONTROLLER_SERVICE}"),
            |on_event| async move {
                wait::load_balancer_address(
                    &client,
                    &ns,
                    CONTROLLER_SERVICE,
                    stale,
                    deadline,
                    on_event,
                )
                .await
                .map(|(_, a)| a)
            },
        )
        .await
        .map(Some)
    }

    /// The Gateway's address once it is Programmed: as applied, or waited for (not with
    /// `--no-wait`, unless the run switches layers and prunes the other one next).
    async fn gateway_address(&mut self) -> Result<Option<String>, Error> {
        let v = &self.plan.values;
        let (ns, name) = (v.namespaces.gateway.clone(), v.gateway.name.clone());
        let service = crate::render::gateway_service_name(v);
        let stale = self.plan.stale_address();
        let applied = self
            .applied_gateway
            .as_ref()
            .filter(|gw| wait::gateway_is_programmed(gw))
            .and_then(wait::gateway_address)
            .filter(|a| Some(a) != stale.as_ref());
        if applied.is_some() || (!self.wait && !self.plan.layer_switch()) {
            return Ok(applied);
        }
        let (client, deadline) = (self.ctx.client.clone(), self.ctx.deadline);
        let subject = format!("Gateway {ns}/{name}");
        self.wait_for_address(
            "gateway",
            format!("waiting for {subject} to be Programmed with an address"),
            subject,
            |on_event| async move {
                wait::gateway_programmed(&client, &ns, &name, &service, stale, deadline, on_event)
                    .await
                    .map(|(_, a)| a)
            },
        )
        .await
        .map(Some)
    }

    /// Runs one address wait for `component`: the events it sees become notices about
    /// `subject`, a failure marks the component failed.
    async fn wait_for_address<F, Fut>(
        &mut self,
        component: &str,
        running: String,
        subject: String,
        wait: F,
    ) -> Result<String, Error>
    where
        F: FnOnce(Box<dyn Fn(&str, &str) + Send + Sync>) -> Fut,
        Fut: std::future::Future<Output = Result<String, wait::WaitError>>,
    {
        let t = Instant::now();
        self.ctx.running(component, running);
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = seen.clone();
        let on_event = Box::new(move |reason: &str, message: &str| {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{reason}: {message}"));
        });
        let waiting = wait(on_event);
        let result = self
            .ctx
            .interrupt
            .guard(async { Ok::<_, Error>(waiting.await) })
            .await?;
        for line in seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            self.ctx.notice(format!("{subject}: {line}"));
        }
        match result {
            Ok(a) => {
                self.ctx.timings.add(Phase::Wait, t);
                Ok(a)
            }
            Err(e) => {
                self.ctx.finished(component, State::Failed, e.to_string());
                Err(e.into())
            }
        }
    }

    /// Members no longer rendered go only after everything else worked; then the record says
    /// exactly this run's members, and every component is done.
    async fn prune(&mut self) -> Result<(), Error> {
        if !self.plan.stale.is_empty() {
            self.ctx.interrupt.check()?;
            let (client, p) = (&self.ctx.client, &*self.plan);
            for (s, deleted) in apply::prune_all(client, &p.resolver, &p.stale, self.opts).await? {
                if deleted {
                    self.record(ObjectResult {
                        id: s.id(),
                        result: Outcome::Pruned,
                    });
                }
            }
        }
        // Adoption: the releases' leftovers and records go once everything else worked.
        if !self.plan.adoption.is_empty() {
            self.ctx.interrupt.check()?;
            let (client, p) = (&self.ctx.client, &*self.plan);
            for id in crate::adopt::finish(client, &p.resolver, &p.adoption, false).await? {
                self.ctx
                    .notice(format!("{id} deleted (Helm release object)"));
            }
        }
        // The adoption is finished: later commands no longer see it as started.
        self.after.adopting.clear();
        self.ctx.interrupt.check()?;
        self.after.settled = std::mem::take(&mut self.settled);
        self.ledger
            .finish(&self.after)
            .await
            .map_err(parent_error)?;
        for c in self.ctx.timings.components() {
            let n = self
                .plan
                .objects
                .iter()
                .filter(|o| component_of(o) == c)
                .count();
            self.ctx.finished(&c, State::Done, format!("{n} objects"));
        }
        Ok(())
    }

    fn record(&mut self, r: ObjectResult) {
        self.ctx.reporter.event(&Event::Object {
            id: r.id.clone(),
            result: r.result.as_str().into(),
        });
        self.results.push(r);
    }

    /// Applies one wave (unless a re-run applied it ahead), reporting each object.
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
            let s = if n == 1 { "" } else { "s" };
            self.ctx.running(&c, format!("applying {n} object{s}"));
        }
        let p = &*self.plan;
        // Objects an adoption takes over are applied taking ownership, like members.
        let owned: BTreeSet<String> = p
            .before
            .members
            .iter()
            .cloned()
            .chain(crate::adopt::owned_ids(&p.adoption))
            .collect();
        let mut applied = apply::apply_many_until(
            &self.ctx.client,
            &p.resolver,
            objects,
            self.opts,
            &owned,
            &self.ctx.interrupt,
        )
        .await
        .map_err(|e| self.fail(objects, e))?;
        if p.adopting {
            self.strip_helm(objects, &mut applied, &owned).await?;
        }
        for (o, a) in objects.iter().zip(&applied) {
            let result = apply::outcome(&self.plan.before, o, a);
            self.record(ObjectResult { id: o.id(), result });
        }
        Ok(applied)
    }

    /// Adoption: removes Helm's marks from objects just applied and applies them once more, so
    /// what Helm set and gridos-setup does not render goes too (see `adopt::strip`).
    async fn strip_helm(
        &mut self,
        objects: &[Object],
        applied: &mut [DynamicObject],
        owned: &BTreeSet<String>,
    ) -> Result<(), Error> {
        let p = &*self.plan;
        let pairs: Vec<(Object, DynamicObject)> = objects
            .iter()
            .cloned()
            .zip(applied.iter().cloned())
            .collect();
        let taken = crate::adopt::owned_ids(&p.adoption);
        let stripped =
            crate::adopt::strip(&self.ctx.client, &p.resolver, &pairs, &taken, false).await?;
        if stripped.is_empty() {
            return Ok(());
        }
        let again = apply::apply_many_until(
            &self.ctx.client,
            &p.resolver,
            &stripped,
            self.opts,
            owned,
            &self.ctx.interrupt,
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

    fn fail(&self, objects: &[Object], e: ApplyError) -> Error {
        if matches!(e, ApplyError::Interrupted) {
            return crate::interrupt::Interrupted.into();
        }
        if let Some(c) = objects.first().map(component_of) {
            self.ctx.finished(&c, State::Failed, e.to_string());
        }
        Error::Apply(e)
    }
}

/// Refreshes discovery until every rendered kind resolves: the apiserver publishes a new CRD's kind
/// in discovery a moment after the CRD is Established, and discovery cannot be watched.
async fn refresh_discovery(
    client: &kube::Client,
    objects: &[Object],
    deadline: Instant,
) -> Result<Resolver, Error> {
    let mut delay = Duration::from_millis(50);
    loop {
        let resolver = Resolver::new(client, Some(deadline)).await?;
        let missing: Vec<String> = objects
            .iter()
            .filter(|o| resolver.resolve(o).is_err())
            .map(Object::id)
            .collect();
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
