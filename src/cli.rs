//! Command-line arguments (clap) and their translation into the library's validated requests.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gridos_setup::apply::Outcome;
use gridos_setup::cluster::ConnectRequest;
use gridos_setup::dns::DnsZone;
use gridos_setup::error::{Error, InputError, exit};
use gridos_setup::install::{self, InstallRequest, Summary};
use gridos_setup::profile::{self, ProfileSource, ValuesRequest};
use gridos_setup::progress::{self, OutputFormat};
use gridos_setup::render;

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
    #[arg(long, env = "GRIDOS_PROFILE", value_name = "PROFILE")]
    pub profile: Option<String>,
    /// The DNS name the app is served on, e.g. app.example.com.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// A YAML file of values; repeatable, later files win.
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Set one value, e.g. --set canary.threshold=3; repeatable, applied after --values.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ValuesArgs {
    fn request(&self) -> ValuesRequest {
        ValuesRequest {
            profile: self.profile.as_deref().map(ProfileSource::parse),
            values_files: self.values.clone(),
            sets: self.set.clone(),
            host: self.host.clone(),
        }
    }
}

/// Flags of the commands that change (or would change) a cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub values: ValuesArgs,
    /// How long to wait for everything to be ready, e.g. 90s, 10m, 1h.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub timeout: String,
    /// Take ownership of fields another tool (helm, kubectl, the AKS add-on) manages.
    #[arg(long)]
    pub force_conflicts: bool,
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
        #[arg(long, value_name = "RESOURCE_GROUP/ZONE")]
        dns_zone: Option<String>,
        /// After the install, run the `az network dns` commands for the records whose value is known (needs --dns-zone and az).
        #[arg(long)]
        apply_dns: bool,
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
        /// How long to wait for everything to be gone.
        #[arg(long, default_value = "5m", value_name = "DURATION")]
        timeout: String,
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
        #[arg(long = "serviceaccount", value_name = "NAMESPACE:NAME")]
        service_account: Vec<String>,
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
    /// Watch a Canary until Flagger promotes it (exit 0) or rolls it back (exit 1); exit 3 at the deadline.
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
        /// How long to wait for the verdict, e.g. 90s, 10m, 1h.
        #[arg(long, default_value = "10m", value_name = "DURATION")]
        timeout: String,
        /// Exit 0 when no rollout is in progress (Initializing or Initialized) instead of waiting for one.
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

/// `90s`, `10m`, `1h30m`, `500ms` (kubectl's --timeout form); a bare number is seconds.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, InputError> {
    let bad = || InputError::OutOfRange {
        path: flag.into(),
        value: format!("{text:?}"),
        reason: "not a duration".into(),
        fix: "write a duration such as 90s, 10m or 1h".into(),
    };
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    gridos_setup::profile::go_duration(text).ok_or_else(bad)
}

fn connect_request(args: &Args) -> ConnectRequest {
    ConnectRequest {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
    }
}

fn install_request(
    args: &Args,
    apply: &ApplyArgs,
    dry_run: bool,
    no_wait: bool,
) -> Result<InstallRequest, Error> {
    let values = apply.values.request();
    if values.profile.is_none() {
        let valid = profile::BUILTIN.iter().map(|s| s.to_string()).collect();
        return Err(InputError::MissingProfile { valid }.into());
    }
    Ok(InstallRequest {
        values,
        connect: connect_request(args),
        dry_run,
        no_wait,
        timeout: parse_duration("--timeout", &apply.timeout)?,
        force_conflicts: apply.force_conflicts,
    })
}

fn format_of(o: Output) -> OutputFormat {
    match o {
        Output::Text => OutputFormat::Text,
        Output::Json => OutputFormat::Json,
    }
}

/// Whether a program is on PATH, as `which` would say.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
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
            az_available: on_path("az"),
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
            if list_objects {
                for o in &summary.objects {
                    text.push_str(&format!("{} {}\n", o.id, o.result.as_str()));
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
            if let Some(a) = &summary.address {
                let scope = if summary.internal {
                    "internal"
                } else {
                    "public"
                };
                text.push_str(&format!("Ingress address ({scope}): {a}\n"));
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
    if !on_path("az") {
        return refuse(
            "needs the Azure CLI, and az is not on PATH",
            "install the Azure CLI and run `az login`, or drop --apply-dns",
        );
    }
    Ok(())
}

/// Runs the `az network dns` commands for the records the install knows the value of, reporting each.
fn apply_dns_records(
    summary: &Summary,
    zone: &DnsZone,
    address: &str,
    format: OutputFormat,
) -> Result<(), Error> {
    let commands = gridos_setup::guidance::az_dns_commands(
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
    if commands.is_empty() {
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
    }
    gridos_setup::dns::run_commands(&commands, &mut |c| report(c, "done")).map_err(Error::from)
}

fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

pub async fn run(args: Args) -> Result<i32, Error> {
    let terminal = std::io::stderr().is_terminal() && std::io::stdin().is_terminal();
    match &args.command {
        Command::Install {
            apply,
            yes,
            dry_run,
            no_wait,
            dns_zone,
            apply_dns,
        } => {
            let dns_zone = dns_zone.as_deref().map(DnsZone::parse).transpose()?;
            check_apply_dns(*apply_dns, dns_zone.as_ref(), *dry_run, *no_wait)?;
            let mut req = match install_request(&args, apply, *dry_run, *no_wait) {
                Err(Error::Input(InputError::MissingProfile { .. })) if terminal => {
                    let mut values = apply.values.clone();
                    values.profile = Some(gridos_setup::prompt::pick_profile()?);
                    install_request(
                        &args,
                        &ApplyArgs {
                            values,
                            ..apply.clone()
                        },
                        *dry_run,
                        *no_wait,
                    )?
                }
                other => other?,
            };
            if !*yes && !*dry_run && !terminal {
                return Err(InputError::NeedsYes.into());
            }
            // Values are checked before any question about the cluster, so a typo never waits for an answer.
            let values = match profile::resolve(&req.values) {
                Err(InputError::MissingHost) if terminal => {
                    req.values.host = Some(gridos_setup::prompt::ask_host()?);
                    profile::resolve(&req.values)?
                }
                other => other?,
            };
            if let Some(z) = &dns_zone {
                z.check_host(&values.host)?;
            }
            if !*yes && !*dry_run {
                eprintln!("Working out the plan (server-side dry run, nothing is written)...");
                let plan_req = InstallRequest {
                    dry_run: true,
                    no_wait: true,
                    ..req.clone()
                };
                let plan = install::install(&plan_req, &progress::Recorder::default()).await?;
                eprint!("{}", gridos_setup::prompt::plan_text(&plan));
                let question = if plan.changed() {
                    "Apply these changes and wait until everything is ready?"
                } else {
                    "Nothing would change; run the install anyway (waits for readiness and prints the guidance)?"
                };
                if !gridos_setup::prompt::confirm(question)? {
                    eprintln!("Nothing was changed.");
                    return Ok(exit::FAILED);
                }
            }
            let format = format_of(apply.output);
            let reporter = progress::reporter(format, terminal);
            let summary = install::install_with(&req, reporter.as_ref(), &INTERRUPT).await;
            reporter.finish();
            let summary = summary?;
            let applied = match (&dns_zone, *apply_dns, summary.address.as_deref()) {
                (Some(z), true, Some(address)) => apply_dns_records(&summary, z, address, format),
                _ => Ok(()),
            };
            print_summary(&summary, format, false, !summary.dry_run, dns_zone.as_ref())?;
            applied?;
            return Ok(exit::OK);
        }
        Command::Plan {
            apply,
            detailed_exitcode,
            show_objects,
        } => {
            let req = install_request(&args, apply, true, true)?;
            let format = format_of(apply.output);
            let reporter: Box<dyn progress::Reporter> = match format {
                OutputFormat::Json => progress::reporter(format, false),
                OutputFormat::Text => Box::new(progress::Recorder::default()),
            };
            let summary = install::install(&req, reporter.as_ref()).await?;
            print_summary(&summary, format, *show_objects, false, None)?;
            return Ok(if *detailed_exitcode && summary.changed() {
                exit::CHANGES
            } else {
                exit::OK
            });
        }
        Command::Status { output } => {
            let report = gridos_setup::status::status(&connect_request(&args)).await?;
            match output {
                Output::Json => write_stdout(&format!(
                    "{}\n",
                    serde_json::to_string(&report).unwrap_or_default()
                ))?,
                Output::Text => write_stdout(&report.to_text())?,
            }
            return Ok(if report.healthy() {
                exit::OK
            } else {
                exit::FAILED
            });
        }
        Command::Uninstall {
            yes,
            purge_crds,
            timeout,
        } => {
            let timeout = parse_duration("--timeout", timeout)?;
            if !*yes {
                if !terminal {
                    return Err(InputError::NeedsYes.into());
                }
                let what = if *purge_crds {
                    "Delete everything gridos-setup installed, including Flagger's CRDs and with them EVERY Canary, MetricTemplate and AlertProvider?"
                } else {
                    "Delete everything gridos-setup installed (Flagger's CRDs and Canaries stay)?"
                };
                if !confirm(what) {
                    eprintln!("Nothing was changed.");
                    return Ok(exit::FAILED);
                }
            }
            let req = gridos_setup::uninstall::UninstallRequest {
                connect: connect_request(&args),
                purge_crds: *purge_crds,
                timeout,
            };
            let summary = gridos_setup::uninstall::uninstall_with(&req, &INTERRUPT).await?;
            let mut text = String::new();
            if summary.nothing_installed {
                text.push_str(
                    "Nothing to uninstall: gridos-setup has not installed anything here.\n",
                );
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
            return Ok(exit::OK);
        }
        Command::Render { values } => {
            let req = values.request();
            if req.profile.is_none() {
                let valid = profile::BUILTIN.iter().map(|s| s.to_string()).collect();
                return Err(InputError::MissingProfile { valid }.into());
            }
            let v = profile::resolve(&req)?;
            let objects = render::render(&v, &render::RenderInputs::offline(&v))?;
            write_stdout(&render::to_yaml(&objects)?)?;
        }
        Command::Check {
            pre,
            values,
            output,
        } => {
            let req = gridos_setup::preflight::CheckRequest {
                connect: connect_request(&args),
                values: values.request(),
                pre: *pre,
            };
            let report = gridos_setup::preflight::check(&req).await?;
            match output {
                Output::Json => write_stdout(&report.to_json_lines())?,
                Output::Text => write_stdout(&report.to_text())?,
            }
            return Ok(if report.failed() {
                exit::FAILED
            } else {
                exit::OK
            });
        }
        Command::Rbac {
            values,
            user,
            group,
            service_account,
        } => {
            let mut subjects = gridos_setup::rbac::Subjects {
                users: user.clone(),
                groups: group.clone(),
                service_accounts: Vec::new(),
            };
            for sa in service_account {
                match sa.split_once(':') {
                    Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                        subjects.service_accounts.push((ns.into(), name.into()))
                    }
                    _ => {
                        return Err(InputError::OutOfRange {
                            path: "--serviceaccount".into(),
                            value: format!("{sa:?}"),
                            reason: "not NAMESPACE:NAME".into(),
                            fix: "write --serviceaccount NAMESPACE:NAME, e.g. --serviceaccount ci:deployer".into(),
                        }
                        .into());
                    }
                }
            }
            let req = gridos_setup::preflight::defaulted(&values.request())?;
            let v = profile::resolve(&req)?;
            let rules = gridos_setup::preflight::rbac_rules(&v)?;
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
                text.push_str(
                    "# Bind it with --user, --group or --serviceaccount NAMESPACE:NAME.\n",
                );
            }
            let yaml = render::to_yaml(&objects)?;
            text.push_str(&yaml.replace("# Source: manifests/rbac\n", ""));
            write_stdout(&text)?;
        }
        Command::Completions { shell } => {
            let mut cmd = <Args as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "gridos-setup", &mut out);
            write_stdout(&String::from_utf8_lossy(&out))?;
        }
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
                timeout: parse_duration("--timeout", timeout)?,
                allow_idle: *allow_idle,
            };
            let terminal = std::io::stderr().is_terminal();
            // Only reads: on SIGINT or SIGTERM the wait is dropped at once, nothing to finish.
            return tokio::select! {
                biased;
                _ = INTERRUPT.cancelled() => Err(Error::Interrupted {
                    done: "the canary wait stopped (it never writes, so nothing changed)".into(),
                }),
                r = gridos_setup::canary::wait_and_report(&req, format_of(*output), terminal) => r,
            };
        }
        Command::Profiles { action: None } => {
            let mut text = String::new();
            for name in profile::BUILTIN {
                let v = profile::builtin(name)?;
                text.push_str(&format!("{:<10} {}\n", name, v.description));
            }
            write_stdout(&text)?;
        }
        Command::Profiles {
            action: Some(ProfilesAction::Show { profile: p }),
        } => {
            let v = profile::builtin(p)?;
            let text = render::to_yaml_value(&v).map_err(|e| Error::Template {
                template: p.clone(),
                reason: e.to_string(),
            })?;
            write_stdout(&text)?;
        }
    }
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
