//! Progress output of every command (install, plan, canary wait): a spinner line per component on a terminal, one plain line per state change otherwise, NDJSON events with `-o json`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// How results are printed: text for people, JSON for pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// One thing that happened during a run.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The cluster about to be changed, printed before the first write.
    Target {
        context: String,
        server: String,
        profile: String,
        dry_run: bool,
    },
    /// A component's state: `running` with what it does now, then `done` or `failed`.
    Component {
        component: String,
        state: State,
        detail: String,
        elapsed_ms: Option<u64>,
    },
    /// One object's result.
    Object { id: String, result: String },
    /// Something worth knowing that is not a failure (a skipped ServiceMonitor, a renewed certificate).
    Notice { message: String },
    /// The run lock: `waiting` once per holder (named), then `acquired` or `taken_over` after waiting.
    Lock {
        state: String,
        holder: Option<crate::lock::Holder>,
        message: String,
        waited_ms: Option<u64>,
    },
    /// A Canary's phase, weight or failed checks changed (`canary wait`).
    Canary {
        /// `namespace/name`, for the text line.
        #[serde(skip)]
        canary: String,
        /// `Progressing, weight 25%, 1 failed check` and the like, for the text line.
        #[serde(skip)]
        description: String,
        phase: Option<String>,
        weight: i64,
        #[serde(rename = "failedChecks")]
        failed_checks: i64,
        /// `[n, m]`: iteration n of m, for A/B testing and blue/green.
        #[serde(skip_serializing_if = "Option::is_none")]
        iteration: Option<[i64; 2]>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Done,
    Failed,
}

/// Where events go; shared by the stages of a run.
pub trait Reporter: Send + Sync {
    fn event(&self, ev: &Event);
    /// Stops spinners before the final output is printed.
    fn finish(&self) {}
}

/// The reporter for an output format and whether stderr is a terminal.
pub fn reporter(format: OutputFormat, terminal: bool) -> Box<dyn Reporter> {
    match (format, terminal) {
        (OutputFormat::Json, _) => Box::new(JsonLines),
        (OutputFormat::Text, true) => Box::new(Spinners::new()),
        (OutputFormat::Text, false) => Box::new(PlainLines),
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map(|ms| format!(" ({:.1}s)", ms as f64 / 1000.0))
        .unwrap_or_default()
}

fn target_line(context: &str, server: &str, profile: &str, dry_run: bool) -> String {
    let mode = if dry_run {
        " (dry run: nothing is written)"
    } else {
        ""
    };
    format!("Installing profile {profile} into context {context} ({server}){mode}")
}

/// Without a terminal: one line per state change, on stderr, for CI logs.
pub struct PlainLines;

impl Reporter for PlainLines {
    fn event(&self, ev: &Event) {
        let line = match ev {
            Event::Target {
                context,
                server,
                profile,
                dry_run,
            } => target_line(context, server, profile, *dry_run),
            Event::Component {
                component,
                state: State::Running,
                detail,
                ..
            } => format!("{component}: {detail}"),
            Event::Component {
                component,
                state: State::Done,
                detail,
                elapsed_ms,
            } => {
                format!(
                    "{component}: done{}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(", {detail}")
                    },
                    seconds(*elapsed_ms)
                )
            }
            Event::Component {
                component,
                state: State::Failed,
                detail,
                elapsed_ms,
            } => {
                format!("{component}: failed: {detail}{}", seconds(*elapsed_ms))
            }
            Event::Object { id, result } => format!("  {id} {result}"),
            Event::Notice { message } | Event::Lock { message, .. } => format!("note: {message}"),
            Event::Canary {
                canary,
                description,
                ..
            } => format!("canary {canary}: {description}"),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// `-o json`: one JSON object per line on stdout; the caller prints the summary object last.
pub struct JsonLines;

impl Reporter for JsonLines {
    fn event(&self, ev: &Event) {
        if let Ok(line) = serde_json::to_string(ev) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// On a terminal: a spinner per component that turns into a done or failed mark with its time,
/// and a canary's line rewritten in place (cleared at the end, where the final line says it all).
pub struct Spinners {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    canary: Mutex<Option<ProgressBar>>,
}

impl Spinners {
    fn new() -> Self {
        Spinners {
            multi: MultiProgress::new(),
            bars: Mutex::new(BTreeMap::new()),
            canary: Mutex::new(None),
        }
    }

    fn canary_line(&self, message: String) {
        let mut line = self.canary.lock().unwrap_or_else(|e| e.into_inner());
        let bar = line.get_or_insert_with(|| {
            let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let pb = self.multi.add(ProgressBar::new_spinner().with_style(style));
            pb.enable_steady_tick(Duration::from_millis(100));
            pb
        });
        bar.set_message(message);
    }

    fn bar(&self, component: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(component.to_string())
            .or_insert_with(|| {
                let style = ProgressStyle::with_template("{spinner} {prefix:<16} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let pb = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(style)
                        .with_prefix(component.to_string()),
                );
                pb.enable_steady_tick(Duration::from_millis(100));
                pb
            })
            .clone()
    }
}

impl Reporter for Spinners {
    fn event(&self, ev: &Event) {
        match ev {
            Event::Target {
                context,
                server,
                profile,
                dry_run,
            } => {
                let _ = self
                    .multi
                    .println(target_line(context, server, profile, *dry_run));
            }
            Event::Component {
                component,
                state,
                detail,
                elapsed_ms,
            } => {
                let pb = self.bar(component);
                match state {
                    State::Running => pb.set_message(detail.clone()),
                    State::Done => {
                        pb.set_style(
                            ProgressStyle::with_template("✓ {prefix:<16} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        pb.finish_with_message(format!("{detail}{}", seconds(*elapsed_ms)));
                    }
                    State::Failed => {
                        pb.set_style(
                            ProgressStyle::with_template("✗ {prefix:<16} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        pb.finish_with_message(format!("failed: {detail}{}", seconds(*elapsed_ms)));
                    }
                }
            }
            Event::Object { .. } => {}
            Event::Notice { message } | Event::Lock { message, .. } => {
                let _ = self.multi.println(format!("note: {message}"));
            }
            Event::Canary {
                canary,
                description,
                ..
            } => self.canary_line(format!("canary {canary}: {description}")),
        }
    }

    fn finish(&self) {
        if let Some(line) = self.canary.lock().unwrap_or_else(|e| e.into_inner()).take() {
            line.finish_and_clear();
        }
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for pb in bars.values() {
            if !pb.is_finished() {
                pb.abandon();
            }
        }
    }
}

/// Collects events in memory: for tests, and for runs whose events are not shown (`plan` in text).
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
}

impl Reporter for Recorder {
    fn event(&self, ev: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ev.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_events_keep_the_documented_json_shape() {
        let ev = Event::Canary {
            canary: "gridos/gridos".into(),
            description: "Progressing, weight 25%, 0 failed checks".into(),
            phase: Some("Progressing".into()),
            weight: 25,
            failed_checks: 0,
            iteration: None,
        };
        assert_eq!(
            serde_json::to_string(&ev).unwrap(),
            r#"{"event":"canary","phase":"Progressing","weight":25,"failedChecks":0}"#
        );
        let ab = Event::Canary {
            canary: "gridos/ab".into(),
            description: "Progressing, iteration 2 of 3, 0 failed checks".into(),
            phase: Some("Progressing".into()),
            weight: 0,
            failed_checks: 0,
            iteration: Some([2, 3]),
        };
        assert_eq!(
            serde_json::to_string(&ab).unwrap(),
            r#"{"event":"canary","phase":"Progressing","weight":0,"failedChecks":0,"iteration":[2,3]}"#
        );
    }

    #[test]
    fn component_events_are_tagged_in_snake_case() {
        let ev = Event::Component {
            component: "flagger".into(),
            state: State::Done,
            detail: "12 objects".into(),
            elapsed_ms: Some(5),
        };
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["event"], "component");
        assert_eq!(v["state"], "done");
    }
}
