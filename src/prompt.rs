//! Questions on a terminal for `install`: the profile picker, the host, and the confirmation that shows the plan first.
//!
//! Only called when stdin and stderr are terminals; without one the caller refuses with exit 2
//! instead, so a pipeline never hangs on a question. Prompts draw on stderr, keeping stdout for
//! the result.

use std::sync::atomic::{AtomicBool, Ordering};

use dialoguer::console::Term;
use dialoguer::theme::ColorfulTheme;
use dialoguer::{Confirm, Input, Select};

use crate::apply::Outcome;
use crate::install::Summary;
use crate::profile;

/// The terminal could not be read or written, or the user pressed Ctrl-C.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot ask on the terminal: {0}")]
    Terminal(std::io::Error),
}

impl PromptError {
    /// Ctrl-C at a question is an interruption (exit 130), not a failure.
    pub fn interrupted(&self) -> bool {
        let PromptError::Terminal(e) = self;
        e.kind() == std::io::ErrorKind::Interrupted
    }

    pub fn hint(&self) -> String {
        "pass --profile, --host and --yes to run without questions".into()
    }
}

impl From<dialoguer::Error> for PromptError {
    fn from(e: dialoguer::Error) -> Self {
        let dialoguer::Error::IO(io) = e;
        if io.kind() == std::io::ErrorKind::Interrupted {
            // Before the open question's guard clears ASKING, so that a reader never sees neither.
            STOPPED_AT_QUESTION.store(true, Ordering::SeqCst);
        }
        // Ctrl-C in the picker ends it without its cleanup: the cursor would stay hidden.
        restore_terminal();
        PromptError::Terminal(io)
    }
}

/// Set while a question waits for an answer. A signal then (SIGINT from another process, SIGTERM
/// from a pipeline) cannot reach the blocking terminal read, and nothing has been written yet, so
/// the signal handler may end the process at once instead of waiting for the run to stop.
static ASKING: AtomicBool = AtomicBool::new(false);

/// Set once a question has ended because of a signal. `console` answers a terminal read that a
/// signal interrupted by raising SIGINT itself (console's unix_term.rs, "signal SIGINT to
/// ourselves"), so a SIGTERM at a question arrives at main's handler as two signals; the second
/// one must still be reported as a stop at a question, even after the question has closed.
static STOPPED_AT_QUESTION: AtomicBool = AtomicBool::new(false);

/// Whether a question is on the terminal now.
pub fn asking() -> bool {
    ASKING.load(Ordering::SeqCst)
}

/// Whether a signal now finds the run at a question: one is open, or one just ended because of
/// a signal. Either way nothing has been written.
pub fn at_question() -> bool {
    // ASKING first: the prompt sets STOPPED_AT_QUESTION before it clears ASKING.
    asking() || STOPPED_AT_QUESTION.load(Ordering::SeqCst)
}

/// No colours in questions and progress (`--no-color`, `NO_COLOR`): both draw through `console`.
pub fn disable_colors() {
    dialoguer::console::set_colors_enabled(false);
    dialoguer::console::set_colors_enabled_stderr(false);
}

/// Puts the terminal back as the questions found it (the picker hides the cursor while open).
pub fn restore_terminal() {
    let _ = Term::stderr().show_cursor();
}

/// Marks a question as open for as long as it lives.
struct Asking;

impl Asking {
    fn start() -> Self {
        ASKING.store(true, Ordering::SeqCst);
        Asking
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        ASKING.store(false, Ordering::SeqCst);
    }
}

/// One line per built-in profile for the picker: what sits in front, what the user creates in Azure.
pub fn profile_choices() -> Vec<(&'static str, &'static str)> {
    profile::BUILTIN
        .iter()
        .map(|name| {
            let what = match *name {
                "nginx" => "public Azure Load Balancer in front; you create: an A record for the host",
                "appgw" => {
                    "your Application Gateway v2 (WAF) in front of an internal Load Balancer; \
                     you create: the gateway's backend pool, probe and HTTP settings, and an A record"
                }
                "frontdoor" => {
                    "Azure Front Door in front of a Load Balancer open only to Front Door; \
                     you create: the Front Door origin, custom domain and route, a TXT and a CNAME record"
                }
                _ => "",
            };
            (*name, what)
        })
        .collect()
}

/// A picker of `(name, description)` lines, the first preselected; returns the chosen name.
fn pick(prompt: &str, choices: &[(&'static str, &'static str)]) -> Result<String, PromptError> {
    let width = choices.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let items: Vec<String> = choices
        .iter()
        .map(|(n, d)| format!("{n:width$}  {d}"))
        .collect();
    let _asking = Asking::start();
    let i = Select::with_theme(&ColorfulTheme::default())
        .with_prompt(prompt)
        .items(&items)
        .default(0)
        .interact_on(&Term::stderr())?;
    Ok(choices[i].0.to_string())
}

/// Shows the picker of built-in profiles and returns the chosen one's name.
pub fn pick_profile() -> Result<String, PromptError> {
    pick(
        "Which front does the cluster sit behind? (arrows, Enter)",
        &profile_choices(),
    )
}

/// One line per traffic layer for the picker: what routes the traffic, what the cluster needs first.
pub fn layer_choices() -> Vec<(&'static str, &'static str)> {
    profile::LAYERS
        .iter()
        .map(|layer| {
            let what = match layer {
                profile::TrafficLayer::IngressNginx => {
                    "gridos-setup installs the ingress-nginx controller (retired upstream in March 2026)"
                }
                profile::TrafficLayer::GatewayApi => concat!(
                    "Gateway API on AKS application routing (approuting-istio); needs first: ",
                    crate::gateway_enable_command!()
                ),
            };
            (layer.as_str(), what)
        })
        .collect()
}

/// Shows the picker of traffic layers (after the profile) and returns the chosen one's value.
pub fn pick_layer() -> Result<String, PromptError> {
    pick(
        "Which traffic layer routes the app and shifts the canary? (arrows, Enter)",
        &layer_choices(),
    )
}

/// Asks for the host until it is a valid DNS name (the same check as `--host`).
pub fn ask_host() -> Result<String, PromptError> {
    let _asking = Asking::start();
    let host: String = Input::with_theme(&ColorfulTheme::default())
        .with_prompt("Host the app is served on (e.g. app.example.com)")
        .validate_with(|h: &String| -> Result<(), String> {
            profile::check_host(h.trim()).map_err(|e| format!("{e}; {}", e.hint()))
        })
        .interact_text_on(&Term::stderr())?;
    Ok(host.trim().to_string())
}

/// Yes/no with No as the default, so Enter alone changes nothing.
pub fn confirm(question: &str) -> Result<bool, PromptError> {
    let _asking = Asking::start();
    Ok(Confirm::with_theme(&ColorfulTheme::default())
        .with_prompt(question)
        .default(false)
        .wait_for_newline(true)
        .interact_on(&Term::stderr())?)
}

/// What a dry run says install would do: the objects to be created, changed and pruned, then the counts.
pub fn plan_text(summary: &Summary) -> String {
    let mut out = format!(
        "Plan for profile {} with host {} in context {} ({}):\n",
        summary.profile, summary.host, summary.context, summary.server
    );
    for (outcome, verb) in [
        (Outcome::Created, "create"),
        (Outcome::Configured, "change"),
        (Outcome::Pruned, "prune (delete)"),
    ] {
        let ids: Vec<&str> = summary
            .objects
            .iter()
            .filter(|o| o.result == outcome)
            .map(|o| o.id.as_str())
            .collect();
        if ids.is_empty() {
            continue;
        }
        out.push_str(&format!("  {verb} {}:\n", ids.len()));
        for id in ids {
            out.push_str(&format!("    {id}\n"));
        }
    }
    out.push_str(&format!(
        "{} to create, {} to change, {} unchanged, {} to prune\n",
        summary.count(Outcome::Created),
        summary.count(Outcome::Configured),
        summary.count(Outcome::Unchanged),
        summary.count(Outcome::Pruned),
    ));
    for n in &summary.notices {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The picker names the enablement as the one call the preflight's hint gives (Learn, "managed
    /// Gateway API": the implementing add-on before or together with `--enable-gateway-api`).
    #[test]
    fn the_gateway_layer_names_the_one_call_enablement() {
        let (_, line) = layer_choices()
            .into_iter()
            .find(|(l, _)| *l == profile::TrafficLayer::GatewayApi.as_str())
            .unwrap();
        assert!(line.ends_with(crate::gateway::FIX_ENABLE), "{line}");
        assert!(
            crate::gateway::FIX_ENABLE.ends_with("--enable-gateway-api --enable-app-routing-istio")
        );
        assert!(!line.contains("approuting gateway istio enable"), "{line}");
    }

    #[test]
    fn every_builtin_profile_has_a_line_in_the_picker() {
        let choices = profile_choices();
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, profile::BUILTIN);
        for (n, d) in choices {
            assert!(
                d.contains(" in front") && d.contains("you create:"),
                "{n}: {d}"
            );
        }
    }
}
