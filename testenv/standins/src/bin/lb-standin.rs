//! Test stand-in for the Service part of Azure's cloud controller: gives LoadBalancer Services an address.
//!
//! It only writes `status.loadBalancer.ingress` and the Events the real controller emits
//! (EnsuringLoadBalancer, EnsuredLoadBalancer); nothing ever connects to the addresses, which come
//! from documentation ranges: 203.0.113.0/24 for public, 198.51.100.0/24 for internal load balancers.
//! The delay comes from `--delay`, overridden at run time by the `delay` key of the ConfigMap
//! `kube-system/gridos-lb-standin`, so a test can make it answer never (timeout tests) or at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Config, Resource, ResourceExt};

const INTERNAL: &str = "service.beta.kubernetes.io/azure-load-balancer-internal";
const CONFIG_MAP: &str = "gridos-lb-standin";

#[derive(Parser)]
#[command(about = "Stand-in for Azure's cloud controller (LoadBalancer Services only)")]
struct Args {
    /// Kubeconfig of the test control plane.
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Delay before an address is assigned: a duration such as 2s or 500ms, or `never`.
    #[arg(long, default_value = "2s")]
    delay: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Delay {
    After(Duration),
    Never,
}

fn parse_delay(s: &str) -> Result<Delay> {
    let s = s.trim();
    if s == "never" {
        return Ok(Delay::Never);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad delay {s:?}: use e.g. 2s, 500ms or never"))?;
    Ok(Delay::After(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => bail!("bad delay {s:?}: use e.g. 2s, 500ms or never"),
    }))
}

struct Standin {
    client: Client,
    default_delay: Delay,
    recorder: Recorder,
    /// Services whose address is being assigned, so repeated watch events do not start twice.
    pending: Mutex<HashSet<(String, String)>>,
    /// Next free host number per range; addresses are never reused within one run.
    next: Mutex<BTreeMap<bool, u8>>,
}

impl Standin {
    async fn current_delay(&self) -> Delay {
        let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), "kube-system");
        match cms.get_opt(CONFIG_MAP).await {
            Ok(Some(cm)) => match cm.data.as_ref().and_then(|d| d.get("delay")) {
                Some(d) => parse_delay(d).unwrap_or(self.default_delay),
                None => self.default_delay,
            },
            _ => self.default_delay,
        }
    }

    fn allocate(&self, internal: bool) -> String {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let host = next.entry(internal).or_insert(10);
        let ip = if internal {
            format!("198.51.100.{host}")
        } else {
            format!("203.0.113.{host}")
        };
        *host = host.wrapping_add(1).max(10);
        ip
    }

    async fn event(&self, svc: &Service, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &svc.object_ref(&())).await {
            tracing::warn!("event for {}: {e}", svc.name_any());
        }
    }

    async fn ensure(self: Arc<Self>, svc: Service) {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let key = (ns.clone(), name.clone());
        let internal = svc
            .annotations()
            .get(INTERNAL)
            .map(|v| v == "true")
            .unwrap_or(false);
        self.event(
            &svc,
            EventType::Normal,
            "EnsuringLoadBalancer",
            "Ensuring load balancer".into(),
        )
        .await;
        // "never" is re-read every second, so a test can let a waiting Service through later.
        let mut said = false;
        loop {
            match self.current_delay().await {
                Delay::Never => {
                    if !said {
                        tracing::info!(
                            "{ns}/{name}: delay is never, leaving it without an address"
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Delay::After(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
            }
        }
        let ip = self.allocate(internal);
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                // The log line is the moment the address was set: the benchmark reads it.
                tracing::info!(
                    "address set {ns}/{name} {ip} at_unix_ms={}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or(0)
                );
                self.event(
                    &svc,
                    EventType::Normal,
                    "EnsuredLoadBalancer",
                    "Ensured load balancer".into(),
                )
                .await;
            }
            Err(e) => tracing::warn!("{ns}/{name}: setting the address failed: {e}"),
        }
        // Done either way: a later change (public <-> internal, or a failed patch) starts again.
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

/// A LoadBalancer Service without an address, or with one from the wrong range: Azure moves the
/// frontend when a Service switches between public and internal, and so does the stand-in.
fn needs_address(svc: &Service) -> bool {
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let internal = svc.annotations().get(INTERNAL).is_some_and(|v| v == "true");
    let range = if internal {
        "198.51.100."
    } else {
        "203.0.113."
    };
    let current_ok = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| {
            i.iter()
                .any(|e| e.ip.as_deref().is_some_and(|ip| ip.starts_with(range)))
        });
    is_lb && !current_ok && svc.metadata.deletion_timestamp.is_none()
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let args = Args::parse();
    let default_delay = parse_delay(&args.delay)?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let reporter = Reporter {
        controller: "service-controller".into(),
        instance: Some("gridos-lb-standin".into()),
    };
    let standin = Arc::new(Standin {
        client: client.clone(),
        default_delay,
        recorder: Recorder::new(client.clone(), reporter),
        pending: Mutex::new(HashSet::new()),
        next: Mutex::new(BTreeMap::new()),
    });
    tracing::info!(
        "lb-standin watching Services (default delay {:?})",
        default_delay
    );
    let services: Api<Service> = Api::all(client);
    // Touch the API once so a wrong kubeconfig fails at start rather than inside the watch.
    services.list(&ListParams::default().limit(1)).await?;
    let mut stream = watcher(services, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let svc = match ev {
            Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => s,
            Ok(watcher::Event::Delete(s)) => {
                let key = (s.namespace().unwrap_or_default(), s.name_any());
                standin
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("watch: {e}");
                continue;
            }
        };
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        if !needs_address(&svc) {
            if svc.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
                standin
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key);
            }
            continue;
        }
        if standin
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
        {
            tokio::spawn(standin.clone().ensure(svc));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse() {
        assert_eq!(parse_delay("never").unwrap(), Delay::Never);
        assert_eq!(
            parse_delay("2s").unwrap(),
            Delay::After(Duration::from_secs(2))
        );
        assert_eq!(parse_delay("0").unwrap(), Delay::After(Duration::ZERO));
        assert_eq!(
            parse_delay("250ms").unwrap(),
            Delay::After(Duration::from_millis(250))
        );
        assert!(parse_delay("soon").is_err());
    }
}
