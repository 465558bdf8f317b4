//! Command-line arguments (clap) and their translation into the library's validated requests.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gridos_setup::apply::Outcome;
use gridos_setup::cluster::{ConnectRequest, runnable};
use gridos_setup::dns::DnsZone;
use gridos_setup::error::{Error, InputError, exit};
use gridos_setup::install::{self, InstallRequest, Summary};
use gridos_setup::profile::{self, ProfileSource, ValuesRequest};
use gridos_setup::progress::{self, OutputFormat, Reporter};
use gridos_setup::{prompt, render};

#[derive(Parser, Debug)]
#[command(
    name = "gridos-setup",
    version,
    about = "Bootstrap an AKS cluster for canary releases: ingress-nginx, Flagger, Prometheus and the gridos Canary"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// More logging: -v for info, -vv for debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No colours (also when NO_COLOR is set).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// `--profile`, `--host`, `--values`, `--set`: the inputs every rendering command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct ValuesArgs {
    /// Profile: nginx, appgw, frontdoor, or a path to your own profile file.
    #[arg(long, env = "GRIDOS_PROFILE", value_name = "PROFILE", value_parser = parse_profile)]
    pub profile: Option<ProfileSource>,
    /// The DNS name the app is served on, e.g. app.example.com.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// A YAML file of values; repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Set one value, e.g. --set canary.threshold=3; repeatable, applied after --values.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Traffic layer: ingress-nginx (default) or gateway-api (AKS application routing, GatewayClass approuting-istio); the same as --set traffic.layer=LAYER, applied after it.
    #[arg(long, value_name = "LAYER", value_parser = ["ingress-nginx", "gateway-api"])]
    pub traffic: Option<String>,
}

impl ValuesArgs {
    fn request(&self) -> ValuesRequest {
        ValuesRequest {
            profile: self.profile.clone(),
            values_files: self.values.clone(),
            sets: traffic_set(&self.set, self.traffic.as_deref()),
            host: self.host.clone(),
        }
    }
}

/// `--set` with `--traffic` appended as its `--set traffic.layer=...`, so it wins over every `--set`.
fn traffic_set(sets: &[String], traffic: Option<&str>) -> Vec<String> {
    let mut all = sets.to_vec();
    if let Some(layer) = traffic {
        all.push(format!("traffic.layer={layer}"));
    }
    all
}

/// Flags of the commands that change (or would change) a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub values: ValuesArgs,
    /// How long to wait for everything to be ready, e.g. 90s, 10m, 1h (1s to 24h).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Take ownership of fields another tool (helm, kubectl, the AKS add-on) manages.
    #[arg(long)]
    pub force_conflicts: bool,
    /// Take over ingress-nginx, Flagger and the load tester from the Helm releases install-flagger.sh made, keeping the controller Service and its address.
    #[arg(long)]
    pub adopt_helm: bool,
    /// With --adopt-helm: keep Helm's release records (`helm list` keeps showing the releases).
    #[arg(long, requires = "adopt_helm")]
    pub keep_helm_history: bool,
    /// Adopt a controller Service whose load balancer is internal under a public profile (or the
    /// reverse): the Service stays, Azure moves it to the other kind of address.
    #[arg(long)]
    pub allow_address_change: bool,
    /// Output: text for people, json (one event per line, then a summary object) for pipelines.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install (or update) everything for a profile, wait until it works, print the address and next steps.
    #[command(
        after_help = "Examples:\n  gridos-setup install --profile nginx --host app.example.com --yes\n  gridos-setup install --profile appgw --host app.example.com --yes -o json   # in a pipeline\n  gridos-setup install   # on a terminal: pick a profile, type the host, confirm the plan\n  gridos-setup install --profile nginx --host app.example.com --dns-zone dns-rg/example.com --apply-dns --yes"
    )]
    Install {
        #[command(flatten)]
        apply: ApplyArgs,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
        /// Server-side dry run: show what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply and return without waiting for readiness or the address.
        // A dry run writes nothing, so there is nothing to not wait for: both at once is a mistake.
        #[arg(long, conflicts_with = "dry_run")]
        no_wait: bool,
        /// The Azure DNS zone holding the host, as RESOURCE_GROUP/ZONE: fills in the `az` DNS commands.
        #[arg(long, value_name = "RESOURCE_GROUP/ZONE", value_parser = parse_dns_zone)]
        dns_zone: Option<DnsZone>,
        /// After the install, run the `az network dns` commands for the records whose value is known (needs --dns-zone and az).
        #[arg(long)]
        apply_dns: bool,
        /// How long to wait for another run's lock on this cluster (one writing run at a time), e.g. 90s, 10m.
        #[arg(long, default_value = gridos_setup::lock::DEFAULT_WAIT, value_name = "DURATION", value_parser = parse_timeout)]
        lock_timeout: Duration,
    },
    /// Show what install would create, change, leave unchanged or prune (server-side dry run).
    #[command(
        after_help = "Example:\n  gridos-setup plan --profile nginx --host app.example.com --detailed-exitcode"
    )]
    Plan {
        #[command(flatten)]
        apply: ApplyArgs,
        /// Exit 0 when nothing would change, 4 when something would.
        #[arg(long)]
        detailed_exitcode: bool,
        /// List every object, not just the counts.
        #[arg(long)]
        show_objects: bool,
    },
    /// Show what is installed: components ready/desired, the address, each Canary's phase and weight.
    #[command(
        after_help = "Examples:\n  gridos-setup status\n  gridos-setup status -o json | jq .canaries"
    )]
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
    /// Delete what gridos-setup installed (its ApplySet), in reverse order, and wait until it is gone.
    #[command(
        after_help = "Examples:\n  gridos-setup uninstall --yes\n  gridos-setup uninstall --yes --purge-crds   # also deletes every Canary"
    )]
    Uninstall {
        /// Do not ask for confirmation (required without a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
        /// Also delete Flagger's CRDs, and with them every Canary, MetricTemplate and AlertProvider.
        #[arg(long)]
        purge_crds: bool,
        /// How long to wait for everything to be gone (1s to 24h).
        #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Duration,
        /// How long to wait for another run's lock on this cluster (one writing run at a time), e.g. 90s, 10m.
        #[arg(long, default_value = gridos_setup::lock::DEFAULT_WAIT, value_name = "DURATION", value_parser = parse_timeout)]
        lock_timeout: Duration,
    },
    /// Print the complete install for a profile as multi-document YAML, without touching a cluster.
    #[command(
        after_help = "Example:\n  gridos-setup render --profile nginx --host app.example.com > install.yaml"
    )]
    Render {
        #[command(flatten)]
        values: ValuesArgs,
    },
    /// Wait for Flagger's verdict on a canary rollout, to gate a pipeline on it.
    #[command(
        after_help = "Examples:\n  gridos-setup canary wait                       # the gridos Canary in namespace gridos\n  gridos-setup canary wait podinfo -n test --timeout 30m -o json"
    )]
    Canary {
        #[command(subcommand)]
        action: CanaryAction,
    },
    /// Check a cluster: before install (--pre: API version, AKS, credentials, permissions, conflicts) or after it (components, CRDs, address, Canary).
    #[command(
        after_help = "Examples:\n  gridos-setup check --pre --profile appgw\n  gridos-setup check -o json   # after install"
    )]
    Check {
        /// Before install: can install work here, and may this user do it?
        #[arg(long)]
        pre: bool,
        /// Profile, host and values to render what install would (default: profile nginx, a placeholder host).
        #[command(flatten)]
        values: ValuesArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the least-privilege ClusterRole (and, with a subject, its ClusterRoleBinding) install, status and uninstall need.
    #[command(
        after_help = "Examples:\n  gridos-setup rbac --user alice@example.com | kubectl apply -f -\n  gridos-setup rbac --group 0c9d...-aad-group-id --profile appgw\n  gridos-setup rbac --serviceaccount ci:deployer"
    )]
    Rbac {
        #[command(flatten)]
        values: ValuesArgs,
        /// Bind a user (repeatable), e.g. an Entra ID user principal name.
        #[arg(long, value_name = "NAME")]
        user: Vec<String>,
        /// Bind a group (repeatable), e.g. an Entra ID group object id.
        #[arg(long, value_name = "NAME")]
        group: Vec<String>,
        /// Bind a ServiceAccount (repeatable), as NAMESPACE:NAME.
        #[arg(long = "serviceaccount", value_name = "NAMESPACE:NAME", value_parser = parse_service_account)]
        service_account: Vec<(String, String)>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  gridos-setup completions bash > /etc/bash_completion.d/gridos-setup\n  gridos-setup completions zsh > \"${fpath[1]}/_gridos-setup\""
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// List the built-in profiles, or show one profile's values.
    #[command(
        after_help = "Examples:\n  gridos-setup profiles\n  gridos-setup profiles show frontdoor"
    )]
    Profiles {
        #[command(subcommand)]
        action: Option<ProfilesAction>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProfilesAction {
    /// Print every value of one profile (the defaults it starts from included).
    Show { profile: String },
}

#[derive(Subcommand, Debug)]
pub enum CanaryAction {
    /// Watch a Canary until Flagger promotes it (exit 0) or rolls it back (exit 1); exit 5 when a manual gate holds it, 3 at the deadline.
    #[command(
        after_help = "Examples:\n  kubectl -n gridos set image deployment/gridos gridos=myacr.azurecr.io/gridos-api:1.4.2\n  gridos-setup canary wait --timeout 30m"
    )]
    Wait {
        /// The Canary's name.
        #[arg(default_value = gridos_setup::canary::DEFAULT_NAME)]
        name: String,
        /// The Canary's namespace.
        #[arg(short = 'n', long, default_value = gridos_setup::canary::DEFAULT_NAMESPACE)]
        namespace: String,
        /// How long to wait for the verdict, e.g. 90s, 10m, 1h (1s to 24h).
        #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Duration,
        /// Exit 0 when no rollout is in progress (Initializing or Initialized, written after the target's last change) instead of waiting for one.
        #[arg(long)]
        allow_idle: bool,
        /// Output: text for people, json (one event per change, then a summary object) for pipelines.
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: Output,
    },
}

/// Set by the binary's SIGINT/SIGTERM handler; runs that can stop cleanly watch it.
pub static INTERRUPT: std::sync::LazyLock<gridos_setup::interrupt::Interrupt> =
    std::sync::LazyLock::new(gridos_setup::interrupt::Interrupt::new);

fn write_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(())
}

/// The shortest and longest `--timeout`: long enough for any rollout or canary analysis, short
/// enough that no deadline arithmetic can overflow.
pub const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));
const TIMEOUT_RANGE_TEXT: &str = "1s to 24h";

/// A value parser's refusal as clap shows it after "invalid value ...": the problem, then the fix.
fn refusal(e: InputError) -> String {
    format!("{e}; {}", e.hint())
}

/// `90s`, `10m`, `1h30m`, `500ms` (humantime's units, as kubectl's --timeout); a bare number is
/// seconds. Anything outside [`TIMEOUT_RANGE`] is refused with the range.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let (min, max) = TIMEOUT_RANGE;
    let value = format!("{text:?}");
    let bad = |reason: String| {
        refusal(InputError::OutOfRange {
            path: "--timeout".into(),
            value: value.clone(),
            reason,
            fix: "write a duration such as 90s, 10m or 1h".into(),
        })
    };
    let out_of_range = || bad(format!("out of range: allowed from {TIMEOUT_RANGE_TEXT}"));
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let parsed = match text.parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        // More seconds than a u64 holds.
        Err(_) if digits => return Err(out_of_range()),
        // "1h 30m" with a space would need quoting in a pipeline: only the joined form is documented.
        Err(_) if text.contains(char::is_whitespace) || text.is_empty() => {
            return Err(bad("not a duration".into()));
        }
        Err(_) => humantime::parse_duration(text),
    };
    let d = match parsed {
        Ok(d) => d,
        Err(humantime::DurationError::NumberOverflow) => return Err(out_of_range()),
        Err(e) => return Err(bad(format!("not a duration ({e})"))),
    };
    if d < min || d > max {
        return Err(out_of_range());
    }
    Ok(d)
}

fn parse_profile(text: &str) -> Result<ProfileSource, String> {
    Ok(ProfileSource::parse(text))
}

fn parse_dns_zone(text: &str) -> Result<DnsZone, String> {
    DnsZone::parse(text).map_err(refusal)
}

/// `NAMESPACE:NAME`, both non-empty.
fn parse_service_account(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.into(), name.into())),
        _ => Err(refusal(InputError::OutOfRange {
            path: "--serviceaccount".into(),
            value: format!("{text:?}"),
            reason: "not NAMESPACE:NAME".into(),
            fix: "write --serviceaccount NAMESPACE:NAME, e.g. --serviceaccount ci:deployer".into(),
        })),
    }
}

fn connect_request(args: &Args) -> ConnectRequest {
    ConnectRequest {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
    }
}

fn missing_profile() -> Error {
    let valid = profile::BUILTIN.iter().map(|s| s.to_string()).collect();
    InputError::MissingProfile { valid }.into()
}

fn install_request(args: &Args, apply: &ApplyArgs, dry_run: bool, no_wait: bool) -> InstallRequest {
    InstallRequest {
        values: apply.values.request(),
        connect: connect_request(args),
        dry_run,
        no_wait,
        timeout: apply.timeout,
        force_conflicts: apply.force_conflicts,
        lock_wait: None,
        adopt_helm: apply.adopt_helm,
        keep_helm_history: apply.keep_helm_history,
        allow_address_change: apply.allow_address_change,
    }
}

fn format_of(o: Output) -> OutputFormat {
    match o {
        Output::Text => OutputFormat::Text,
        Output::Json => OutputFormat::Json,
    }
}

/// Prints the end of a run: the summary object with `-o json`, counts and the address as text;
/// after an install (not a plan), the DNS records and next steps for the profile.
fn print_summary(
    summary: &Summary,
    format: OutputFormat,
    list_objects: bool,
    with_guidance: bool,
    dns_zone: Option<&DnsZone>,
) -> Result<(), Error> {
    let guidance = with_guidance.then(|| {
        gridos_setup::guidance::guidance(&gridos_setup::guidance::GuidanceInput {
            values: &summary.values,
            address: summary.address.as_deref(),
            az_available: runnable("az"),
            dns_zone: dns_zone.map(|z| (z.resource_group.as_str(), z.zone.as_str())),
        })
    });
    match format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(summary).unwrap_or_default();
            if let Some(m) = v.as_object_mut() {
                m.insert("event".into(), "summary".into());
                if let Some(g) = &guidance {
                    m.insert(
                        "dns".into(),
                        serde_json::to_value(&g.dns).unwrap_or_default(),
                    );
                    m.insert(
                        "next_steps".into(),
                        serde_json::to_value(&g.next_steps).unwrap_or_default(),
                    );
                    m.insert(
                        "warnings".into(),
                        serde_json::to_value(&g.warnings).unwrap_or_default(),
                    );
                }
            }
            write_stdout(&format!("{v}\n"))
        }
        OutputFormat::Text => {
            let mut text = String::new();
            // A switch of traffic layer lists what comes and what goes, even without --show-objects.
            if list_objects || summary.switch.is_some() {
                for o in &summary.objects {
                    if list_objects || o.result != Outcome::Unchanged {
                        text.push_str(&format!("{} {}\n", o.id, o.result.as_str()));
                    }
                }
            }
            let verb = if summary.dry_run { "would be " } else { "" };
            text.push_str(&format!(
                "{} {verb}created, {} {verb}configured, {} unchanged, {} {verb}pruned ({:.1}s)\n",
                summary.count(Outcome::Created),
                summary.count(Outcome::Configured),
                summary.count(Outcome::Unchanged),
                summary.count(Outcome::Pruned),
                summary.durations.total_ms as f64 / 1000.0
            ));
            for line in summary.adoption.iter().flat_map(|a| a.lines()) {
                text.push_str(&line);
                text.push('\n');
            }
            if let Some(s) = &summary.switch {
                text.push_str(&format!("note: {s}\n"));
            }
            if let Some(a) = &summary.address {
                let scope = if summary.internal {
                    "internal"
                } else {
                    "public"
                };
                let what = match summary.values.traffic.layer {
                    profile::TrafficLayer::GatewayApi => "Gateway",
                    profile::TrafficLayer::IngressNginx => "Ingress",
                };
                text.push_str(&format!("{what} address ({scope}): {a}\n"));
            }
            if let Some(g) = &guidance {
                text.push('\n');
                text.push_str(&gridos_setup::guidance::to_text(g));
            }
            write_stdout(&text)
        }
    }
}

/// `--apply-dns` needs a zone, an address to write (so no --dry-run or --no-wait) and `az`; refused before any write.
fn check_apply_dns(
    apply_dns: bool,
    zone: Option<&DnsZone>,
    dry_run: bool,
    no_wait: bool,
) -> Result<(), InputError> {
    if !apply_dns {
        return Ok(());
    }
    let refuse = |reason: &str, fix: &str| {
        Err(InputError::Flag {
            flag: "--apply-dns".into(),
            reason: reason.into(),
            fix: fix.into(),
        })
    };
    if zone.is_none() {
        return refuse(
            "needs --dns-zone",
            "add --dns-zone RESOURCE_GROUP/ZONE, e.g. --dns-zone dns-rg/example.com",
        );
    }
    if dry_run || no_wait {
        return refuse(
            "needs the load-balancer address, which --dry-run and --no-wait do not wait for",
            "drop --dry-run/--no-wait, or drop --apply-dns",
        );
    }
    if !runnable("az") {
        return refuse(
            "needs the Azure CLI, and az is not on PATH",
            "install the Azure CLI and run `az login`, or drop --apply-dns",
        );
    }
    Ok(())
}

/// Sets the A record the install knows the value of with `az network dns`, reporting each command.
fn apply_dns_records(
    summary: &Summary,
    zone: &DnsZone,
    address: &str,
    format: OutputFormat,
) -> Result<(), Error> {
    let record = gridos_setup::guidance::az_dns_record(
        &summary.values,
        address,
        &zone.resource_group,
        &zone.zone,
    );
    let report = |command: &str, result: &str| match format {
        OutputFormat::Json => {
            let ev = serde_json::json!({"event": "dns", "command": command, "result": result});
            let _ = write_stdout(&format!("{ev}\n"));
        }
        OutputFormat::Text => eprintln!("dns: {command}: {result}"),
    };
    let Some(record) = record else {
        let message = format!(
            "--apply-dns: no record whose value gridos-setup knows for profile {} (Azure has the values); \
             create the records the guidance lists",
            summary.profile
        );
        match format {
            OutputFormat::Json => {
                let ev = serde_json::json!({"event": "notice", "message": message});
                let _ = write_stdout(&format!("{ev}\n"));
            }
            OutputFormat::Text => eprintln!("note: {message}"),
        }
        return Ok(());
    };
    gridos_setup::dns::replace_a_record(&record, &mut |c| report(c, "done")).map_err(Error::from)
}

/// Whether questions can be asked: stdin and stderr are terminals.
fn terminal() -> bool {
    std::io::stderr().is_terminal() && std::io::stdin().is_terminal()
}

pub async fn run(args: Args) -> Result<i32, Error> {
    match &args.command {
        Command::Install {
            apply,
            yes,
            dry_run,
            no_wait,
            dns_zone,
            apply_dns,
            lock_timeout,
        } => {
            let flags = InstallFlags {
                yes: *yes,
                dry_run: *dry_run,
                no_wait: *no_wait,
                dns_zone: dns_zone.as_ref(),
                apply_dns: *apply_dns,
                lock_timeout: *lock_timeout,
            };
            install_command(&args, apply, &flags).await
        }
        Command::Plan {
            apply,
            detailed_exitcode,
            show_objects,
        } => plan_command(&args, apply, *detailed_exitcode, *show_objects).await,
        Command::Status { output } => status_command(&args, *output).await,
        Command::Uninstall {
            yes,
            purge_crds,
            timeout,
            lock_timeout,
        } => uninstall_command(&args, *yes, *purge_crds, *timeout, *lock_timeout).await,
        Command::Render { values } => render_command(values),
        Command::Check {
            pre,
            values,
            output,
        } => check_command(&args, *pre, values, *output).await,
        Command::Rbac {
            values,
            user,
            group,
            service_account,
        } => rbac_command(values, user, group, service_account),
        Command::Completions { shell } => completions_command(*shell),
        Command::Canary {
            action:
                CanaryAction::Wait {
                    name,
                    namespace,
                    timeout,
                    allow_idle,
                    output,
                },
        } => {
            let req = gridos_setup::canary::WaitRequest {
                connect: connect_request(&args),
                namespace: namespace.clone(),
                name: name.clone(),
                timeout: *timeout,
                allow_idle: *allow_idle,
            };
            canary_wait_command(&req, *output).await
        }
        Command::Profiles { action } => profiles_command(action.as_ref()),
    }
}

/// The install flags besides the shared ones.
struct InstallFlags<'a> {
    yes: bool,
    dry_run: bool,
    no_wait: bool,
    dns_zone: Option<&'a DnsZone>,
    apply_dns: bool,
    lock_timeout: Duration,
}

/// `install`: questions for what is missing (on a terminal), one plan, then its diff (`--dry-run`),
/// or its confirmation and execution.
async fn install_command(
    args: &Args,
    apply: &ApplyArgs,
    f: &InstallFlags<'_>,
) -> Result<i32, Error> {
    let terminal = terminal();
    check_apply_dns(f.apply_dns, f.dns_zone, f.dry_run, f.no_wait)?;
    let mut req = install_request(args, apply, f.dry_run, f.no_wait);
    if req.values.profile.is_none() {
        if !terminal {
            return Err(missing_profile());
        }
        req.values.profile = Some(ProfileSource::Builtin(prompt::pick_profile()?));
        let layer_given = apply.values.traffic.is_some()
            || apply
                .values
                .set
                .iter()
                .any(|s| s.starts_with("traffic.layer="));
        if !layer_given {
            let layer = prompt::pick_layer()?;
            req.values.sets.push(format!("traffic.layer={layer}"));
        }
    }
    if !f.yes && !f.dry_run && !terminal {
        return Err(InputError::NeedsYes.into());
    }
    // Values are checked before any question about the cluster, so a typo never waits for an answer.
    let values = match profile::resolve(&req.values) {
        Err(InputError::MissingHost) if terminal => {
            req.values.host = Some(prompt::ask_host()?);
            profile::resolve(&req.values)?
        }
        other => other?,
    };
    if let Some(z) = f.dns_zone {
        z.check_host(&values.host)?;
    }
    let format = format_of(apply.output);
    let reporter = progress::reporter(format, terminal);
    // With --yes the plan is made under the run lock; a confirmation is asked without holding
    // it, and the confirmed install plans again under it (a person may take minutes to answer).
    if f.yes {
        req.lock_wait = Some(f.lock_timeout);
    }
    let first = INTERRUPT
        .guard(install::plan_locked(
            &req,
            values.clone(),
            reporter.as_ref(),
            &INTERRUPT,
        ))
        .await
        .map_err(|e| install::before_any_write(e, &INTERRUPT));
    let mut plan = match first {
        // On a terminal, the Helm releases' adoption is offered instead of refused.
        Err(Error::Adopt(e @ gridos_setup::adopt::AdoptError::HelmInstalled { .. }))
            if terminal && !f.yes && !f.dry_run =>
        {
            eprintln!("{e}");
            if !prompt::confirm(
                "Take them over (--adopt-helm: the controller Service and its load-balancer address stay)?",
            )? {
                eprintln!("Nothing was changed.");
                return Ok(exit::FAILED);
            }
            req.adopt_helm = true;
            INTERRUPT
                .guard(install::plan_values(&req, values.clone()))
                .await
                .map_err(|e| install::before_any_write(e, &INTERRUPT))?
        }
        other => other?,
    };
    if f.dry_run {
        let summary = install::preview(&plan, &req, reporter.as_ref()).await?;
        print_summary(&summary, format, false, false, None)?;
        return Ok(exit::OK);
    }
    if !f.yes {
        if !confirm_plan(&plan, &req).await? {
            eprintln!("Nothing was changed.");
            return Ok(exit::FAILED);
        }
        // Under the lock, the plan is made again: what another run changed meanwhile is read.
        req.lock_wait = Some(f.lock_timeout);
        plan = INTERRUPT
            .guard(install::plan_locked(
                &req,
                values,
                reporter.as_ref(),
                &INTERRUPT,
            ))
            .await
            .map_err(|e| install::before_any_write(e, &INTERRUPT))?;
    }
    // The DNS records are written under the same lock as the install.
    let lock = plan.lock.take();
    let result =
        install::execute_under(plan, &req, reporter.as_ref(), &INTERRUPT, lock.as_ref()).await;
    let applied = match (&result, f.dns_zone, f.apply_dns) {
        (Ok(summary), Some(z), true) => match summary.address.as_deref() {
            Some(address) => apply_dns_records(summary, z, address, format),
            None => Ok(()),
        },
        _ => Ok(()),
    };
    if let Some(l) = lock {
        l.release().await;
    }
    let summary = result?;
    print_summary(&summary, format, false, true, f.dns_zone)?;
    applied?;
    Ok(exit::OK)
}

/// Shows the plan's diff and asks whether to execute it; the default is No.
async fn confirm_plan(
    plan: &gridos_setup::plan::Plan,
    req: &InstallRequest,
) -> Result<bool, Error> {
    eprintln!("Working out the plan (server-side dry run, nothing is written)...");
    let diff = INTERRUPT
        .guard(install::preview(plan, req, &progress::Recorder::default()))
        .await
        .map_err(|e| install::before_any_write(e, &INTERRUPT))?;
    eprint!("{}", prompt::plan_text(&diff));
    let question = if diff.changed() {
        "Apply these changes and wait until everything is ready?"
    } else {
        "Nothing would change; run the install anyway (waits for readiness and prints the guidance)?"
    };
    Ok(prompt::confirm(question)?)
}

/// `plan`: the install's plan as a diff; `--detailed-exitcode` says whether anything would change.
async fn plan_command(
    args: &Args,
    apply: &ApplyArgs,
    detailed_exitcode: bool,
    show_objects: bool,
) -> Result<i32, Error> {
    let req = install_request(args, apply, true, true);
    if req.values.profile.is_none() {
        return Err(missing_profile());
    }
    let format = format_of(apply.output);
    let reporter: Box<dyn Reporter> = match format {
        OutputFormat::Json => progress::reporter(format, false),
        OutputFormat::Text => Box::new(progress::Recorder::default()),
    };
    let summary = install::install_with(&req, reporter.as_ref(), &INTERRUPT).await?;
    print_summary(&summary, format, show_objects, false, None)?;
    // The text recorder prints no events: the plan's notices go to stderr as install's do (the
    // layer switch is in the summary already).
    if format == OutputFormat::Text {
        for n in summary
            .notices
            .iter()
            .filter(|n| summary.switch.as_ref() != Some(*n))
        {
            eprintln!("note: {n}");
        }
    }
    Ok(if detailed_exitcode && summary.changed() {
        exit::CHANGES
    } else {
        exit::OK
    })
}

async fn status_command(args: &Args, output: Output) -> Result<i32, Error> {
    let report = gridos_setup::status::status(&connect_request(args)).await?;
    match output {
        Output::Json => write_stdout(&format!(
            "{}\n",
            serde_json::to_string(&report).unwrap_or_default()
        ))?,
        Output::Text => write_stdout(&report.to_text())?,
    }
    Ok(if report.healthy() {
        exit::OK
    } else {
        exit::FAILED
    })
}

async fn uninstall_command(
    args: &Args,
    yes: bool,
    purge_crds: bool,
    timeout: Duration,
    lock_timeout: Duration,
) -> Result<i32, Error> {
    if !yes {
        if !terminal() {
            return Err(InputError::NeedsYes.into());
        }
        let what = if purge_crds {
            "Delete everything gridos-setup installed, including Flagger's CRDs and with them EVERY Canary, MetricTemplate and AlertProvider?"
        } else {
            "Delete everything gridos-setup installed (Flagger's CRDs and Canaries stay)?"
        };
        if !prompt::confirm(what)? {
            eprintln!("Nothing was changed.");
            return Ok(exit::FAILED);
        }
    }
    let req = gridos_setup::uninstall::UninstallRequest {
        connect: connect_request(args),
        purge_crds,
        timeout,
        lock_wait: Some(lock_timeout),
    };
    let summary = gridos_setup::uninstall::uninstall_with(&req, &INTERRUPT).await?;
    let mut text = String::new();
    if summary.nothing_installed {
        text.push_str("Nothing to uninstall: gridos-setup has not installed anything here.\n");
    }
    for id in &summary.deleted {
        text.push_str(&format!("{id} deleted\n"));
    }
    for (id, why) in &summary.kept {
        text.push_str(&format!("{id} kept: {why}\n"));
    }
    text.push_str(&format!(
        "{} deleted, {} kept\n",
        summary.deleted.len(),
        summary.kept.len()
    ));
    write_stdout(&text)?;
    Ok(exit::OK)
}

fn render_command(values: &ValuesArgs) -> Result<i32, Error> {
    let req = values.request();
    if req.profile.is_none() {
        return Err(missing_profile());
    }
    let v = profile::resolve(&req)?;
    let objects = render::render(&v, &render::RenderInputs::offline(&v))?;
    write_stdout(&render::to_yaml(&objects)?)?;
    Ok(exit::OK)
}

async fn check_command(
    args: &Args,
    pre: bool,
    values: &ValuesArgs,
    output: Output,
) -> Result<i32, Error> {
    let req = gridos_setup::preflight::CheckRequest {
        connect: connect_request(args),
        values: values.request(),
        pre,
    };
    let report = gridos_setup::preflight::check(&req).await?;
    match output {
        Output::Json => write_stdout(&report.to_json_lines())?,
        Output::Text => write_stdout(&report.to_text())?,
    }
    Ok(if report.failed() {
        exit::FAILED
    } else {
        exit::OK
    })
}

fn rbac_command(
    values: &ValuesArgs,
    users: &[String],
    groups: &[String],
    service_accounts: &[(String, String)],
) -> Result<i32, Error> {
    let subjects = gridos_setup::rbac::Subjects {
        users: users.to_vec(),
        groups: groups.to_vec(),
        service_accounts: service_accounts.to_vec(),
    };
    let req = gridos_setup::preflight::defaulted(&values.request())?;
    let v = profile::resolve(&req)?;
    let rules = gridos_setup::permissions::installer_rules(&v)?;
    let objects: Vec<render::Object> = gridos_setup::rbac::objects(rules, &subjects)
        .into_iter()
        .map(|data| render::Object {
            template: "rbac".into(),
            data,
        })
        .collect();
    let mut text = format!(
        "# What `gridos-setup install --profile {}` (and its re-runs, status, check and uninstall) needs.\n",
        v.name
    );
    if subjects.is_empty() {
        text.push_str("# Bind it with --user, --group or --serviceaccount NAMESPACE:NAME.\n");
    }
    let yaml = render::to_yaml(&objects)?;
    text.push_str(&yaml.replace("# Source: manifests/rbac\n", ""));
    write_stdout(&text)?;
    Ok(exit::OK)
}

fn completions_command(shell: clap_complete::Shell) -> Result<i32, Error> {
    let mut cmd = <Args as clap::CommandFactory>::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "gridos-setup", &mut out);
    write_stdout(&String::from_utf8_lossy(&out))?;
    Ok(exit::OK)
}

async fn canary_wait_command(
    req: &gridos_setup::canary::WaitRequest,
    output: Output,
) -> Result<i32, Error> {
    let terminal = std::io::stderr().is_terminal();
    // Only reads: on SIGINT or SIGTERM the wait is dropped at once, nothing to finish.
    tokio::select! {
        biased;
        _ = INTERRUPT.cancelled() => Err(Error::Interrupted {
            done: "the canary wait stopped (it never writes, so nothing changed)".into(),
        }),
        r = gridos_setup::canary::wait_and_report(req, format_of(output), terminal) => r,
    }
}

fn profiles_command(action: Option<&ProfilesAction>) -> Result<i32, Error> {
    let text = match action {
        None => {
            let mut text = String::new();
            for name in profile::BUILTIN {
                let v = profile::builtin(name)?;
                text.push_str(&format!("{:<10} {}\n", name, v.description));
            }
            text
        }
        Some(ProfilesAction::Show { profile: p }) => {
            let v = profile::builtin(p)?;
            render::to_yaml_value(&v).map_err(|e| Error::Template {
                template: p.clone(),
                reason: e.to_string(),
            })?
        }
    };
    write_stdout(&text)?;
    Ok(exit::OK)
}

/// Parses the command line; a usage error (unknown flag, conflicting flags, bad value) is printed as
/// one line naming the problem and the fix, exit 2, like every other bad input.
pub fn parse_args() -> Args {
    use clap::error::ErrorKind;
    match Args::try_parse() {
        Ok(a) => a,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{}", usage_error_line(&e.render().to_string()));
                std::process::exit(exit::USAGE)
            }
        },
    }
}

/// clap's multi-line usage error as one line: the problem, clap's tip if it has one, then where to look.
fn usage_error_line(rendered: &str) -> String {
    let mut problem = String::new();
    let mut tips = Vec::new();
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(p) = line.strip_prefix("error:") {
            problem = p.trim().to_string();
        } else if let Some(t) = line.strip_prefix("tip:") {
            tips.push(t.trim().to_string());
        } else if let Some(v) = line
            .strip_prefix("[possible values:")
            .and_then(|v| v.strip_suffix(']'))
        {
            tips.push(format!("give one of: {}", v.trim()));
        }
    }
    let mut text = format!("error: {problem}; ");
    for t in tips {
        text.push_str(&t);
        text.push_str("; ");
    }
    if rendered.contains("cannot be used with") {
        text.push_str("pass only one of them; ");
    }
    text.push_str("see `gridos-setup help` or the command's --help for its flags");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_take_humantime_units_and_bare_seconds() {
        assert_eq!(parse_timeout("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("24h"), Ok(Duration::from_secs(86400)));
    }

    #[test]
    fn any_number_is_refused_with_the_range_not_a_panic() {
        for text in [
            "18446744073709551615",
            "18446744073709551615m",
            "99999999999999999999999h",
            "5d",
            "0",
            "500ms",
        ] {
            let e = parse_timeout(text).expect_err(text);
            assert!(e.contains("--timeout"), "{text}: {e}");
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
            assert!(
                e.contains("from 1s to 24h") || e.contains("not a duration"),
                "{text}: {e}"
            );
        }
        for huge in [
            "18446744073709551615",
            "99999999999999999999999",
            "18446744073709551615m",
            "307445734561825861m",
        ] {
            let e = parse_timeout(huge).unwrap_err();
            assert!(e.contains("allowed from 1s to 24h"), "{huge}: {e}");
        }
        assert!(parse_timeout("86401").is_err() && parse_timeout("1s").is_ok());
        for text in ["ten minutes", "", "10x", "m"] {
            let e = parse_timeout(text).expect_err(text);
            assert!(
                e.contains("not a duration") && e.contains("10m"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn usage_errors_become_one_line_with_the_tip_and_where_to_look() {
        let clap_text = "error: unexpected argument '--yes' found\n\n  tip: to pass '--yes' as a value, use '-- --yes'\n\nUsage: gridos-setup plan [OPTIONS]\n\nFor more information, try '--help'.\n";
        let line = usage_error_line(clap_text);
        assert_eq!(
            line,
            "error: unexpected argument '--yes' found; to pass '--yes' as a value, use '-- --yes'; see `gridos-setup help` or the command's --help for its flags"
        );
        let conflict =
            "error: the argument '--dry-run' cannot be used with '--no-wait'\n\nUsage: x\n";
        assert!(usage_error_line(conflict).contains("pass only one of them"));
    }

    #[test]
    fn every_command_line_refusal_is_exit_2_material() {
        for args in [
            vec![
                "gridos-setup",
                "install",
                "--timeout",
                "18446744073709551615",
            ],
            vec!["gridos-setup", "rbac", "--serviceaccount", "deployer"],
            vec!["gridos-setup", "install", "--dns-zone", "example.com"],
            vec!["gridos-setup", "install", "--dry-run", "--no-wait"],
        ] {
            let e = Args::try_parse_from(&args).expect_err("refused");
            let line = usage_error_line(&e.render().to_string());
            assert_eq!(line.lines().count(), 1, "{args:?}: {line}");
            assert!(line.starts_with("error: "), "{line}");
        }
    }

    #[test]
    fn service_accounts_are_namespace_and_name() {
        assert_eq!(
            parse_service_account("ci:deployer"),
            Ok(("ci".into(), "deployer".into()))
        );
        for bad in ["deployer", ":x", "x:"] {
            assert!(
                parse_service_account(bad)
                    .unwrap_err()
                    .contains("NAMESPACE:NAME")
            );
        }
    }
}
