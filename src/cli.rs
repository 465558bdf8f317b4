//! Command-line arguments (clap) and their translation into the library's validated requests.

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gridos_setup::error::{Error, InputError, exit};
use gridos_setup::profile::{self, ProfileSource, ValuesRequest};
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

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the complete install for a profile as multi-document YAML, without touching a cluster.
    #[command(
        after_help = "Example:\n  gridos-setup render --profile nginx --host app.example.com > install.yaml"
    )]
    Render {
        #[command(flatten)]
        values: ValuesArgs,
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

fn write_stdout(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    Ok(())
}

pub fn run(args: Args) -> Result<i32, Error> {
    match args.command {
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
            let v = profile::builtin(&p)?;
            let text = render::to_yaml_value(&v).map_err(|e| Error::Template {
                template: p,
                reason: e.to_string(),
            })?;
            write_stdout(&text)?;
        }
    }
    Ok(exit::OK)
}
