//! The errors a caller acts on, each with the exit code of the command-line contract and a hint that names the fix.

use std::path::PathBuf;

/// Exit codes of the command-line contract (design section 2).
pub mod exit {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const TIMEOUT: i32 = 3;
    pub const CHANGES: i32 = 4;
    /// `canary wait`: Flagger holds the rollout at a manual gate (confirm-rollout or
    /// confirm-promotion) until someone approves or rejects it.
    pub const APPROVAL: i32 = 5;
    pub const INTERRUPTED: i32 = 130;
}

/// Bad input: refused before anything is written, exit code 2.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    #[error("no profile given")]
    MissingProfile { valid: Vec<String> },
    #[error("unknown profile {name:?}")]
    UnknownProfile { name: String, valid: Vec<String> },
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}:{line}:{column}: invalid YAML: {reason}", file.display())]
    Yaml {
        file: PathBuf,
        line: u64,
        column: u64,
        reason: String,
    },
    #[error("{origin}: {what} is not a mapping of values")]
    NotAMapping { origin: String, what: String },
    #[error("{origin}: unknown key {path:?}")]
    UnknownKey {
        origin: String,
        path: String,
        nearest: Option<String>,
    },
    #[error("{origin}: {path}: {reason}")]
    WrongType {
        origin: String,
        path: String,
        reason: String,
    },
    #[error("--set {arg:?} has no '='")]
    SetSyntax { arg: String },
    #[error("no terminal to confirm in, and --yes was not given")]
    NeedsYes,
    #[error("no host given")]
    MissingHost,
    #[error("host {host:?} is not a DNS name: {reason}")]
    InvalidHost { host: String, reason: String },
    /// A flag that cannot work as given (a missing companion flag, a tool not installed).
    #[error("{flag} {reason}")]
    Flag {
        flag: String,
        reason: String,
        fix: String,
    },
    #[error("{path} = {value}: {reason}")]
    OutOfRange {
        path: String,
        value: String,
        reason: String,
        fix: String,
    },
}

impl InputError {
    /// The fix, in one clause, shown after the problem.
    pub fn hint(&self) -> String {
        match self {
            InputError::MissingProfile { valid } | InputError::UnknownProfile { valid, .. } => format!(
                "use --profile with one of: {} (or a path to your own profile file)",
                valid.join(", ")
            ),
            InputError::Unreadable { .. } => "check the path and its permissions".into(),
            InputError::Yaml { .. } => "fix the YAML at that line and column".into(),
            InputError::NotAMapping { .. } => {
                "a profile or values file is a YAML mapping such as `host: app.example.com`".into()
            }
            InputError::UnknownKey { nearest: Some(n), .. } => format!("did you mean {n:?}? (`gridos-setup profiles show nginx` lists every key)"),
            InputError::UnknownKey { nearest: None, .. } => {
                "`gridos-setup profiles show nginx` lists every key".into()
            }
            InputError::WrongType { .. } => {
                "give a value of that type (`gridos-setup profiles show nginx` shows each key's default)".into()
            }
            InputError::SetSyntax { .. } => "write --set key.path=value, e.g. --set canary.threshold=3".into(),
            InputError::NeedsYes => "pass --yes to install without a confirmation (as CI must)".into(),
            InputError::MissingHost => "pass --host app.example.com (or set host in a --values file)".into(),
            InputError::InvalidHost { .. } => {
                "use a lower-case DNS name such as app.example.com (letters, digits, '-' and '.')".into()
            }
            InputError::OutOfRange { fix, .. } | InputError::Flag { fix, .. } => fix.clone(),
        }
    }
}

/// Any failure of a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Input(#[from] InputError),
    /// A bug in an embedded template: never the user's fault.
    #[error("internal error rendering {template}: {reason}")]
    Template { template: String, reason: String },
    #[error(transparent)]
    Connect(#[from] crate::cluster::ConnectError),
    #[error(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    Wait(#[from] crate::wait::WaitError),
    #[error(transparent)]
    Canary(#[from] crate::canary::CanaryError),
    /// The cluster cannot take this install as asked (a missing CRD the values require, ...).
    #[error("{problem}")]
    Preflight { problem: String, hint: String },
    /// SIGINT or SIGTERM: writes stopped, in-flight ones finished; `done` says what was applied.
    #[error("interrupted: {done}")]
    Interrupted { done: String },
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Adopt(#[from] crate::adopt::AdoptError),
    #[error(transparent)]
    Prompt(crate::prompt::PromptError),
    #[error("{context}: {source}")]
    Api {
        context: String,
        source: kube::Error,
    },
}

/// What an interruption at a question reports, whichever way it arrives (main's signal handler
/// or the terminal read failing with EINTR).
pub const STOPPED_AT_A_QUESTION: &str = "stopped at a question, before anything was written";

impl From<crate::prompt::PromptError> for Error {
    fn from(e: crate::prompt::PromptError) -> Self {
        if e.interrupted() {
            Error::Interrupted {
                done: STOPPED_AT_A_QUESTION.into(),
            }
        } else {
            Error::Prompt(e)
        }
    }
}

impl From<crate::interrupt::Interrupted> for Error {
    fn from(_: crate::interrupt::Interrupted) -> Self {
        Error::Interrupted {
            done: "stopped before the next write".into(),
        }
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => exit::USAGE,
            Error::Connect(e) if e.is_input() => exit::USAGE,
            Error::Wait(crate::wait::WaitError::Timeout { .. }) => exit::TIMEOUT,
            Error::Canary(e) => e.exit_code(),
            Error::Lock(crate::lock::LockError::Timeout { .. }) => exit::TIMEOUT,
            Error::Lock(crate::lock::LockError::Interrupted) => exit::INTERRUPTED,
            Error::Interrupted { .. } => exit::INTERRUPTED,
            _ => exit::FAILED,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Input(e) => Some(e.hint()),
            Error::Template { .. } => Some("please report this as a bug in gridos-setup".into()),
            Error::Connect(e) => Some(e.hint()),
            Error::Apply(e) => Some(e.hint()),
            Error::Wait(e) => Some(e.hint()),
            Error::Canary(e) => Some(e.hint()),
            Error::Preflight { hint, .. } => Some(hint.clone()),
            Error::Interrupted { .. } => Some(
                "re-run the same command to resume; nothing needs cleaning up first".into(),
            ),
            Error::Dns(e) => Some(e.hint()),
            Error::Lock(e) => Some(e.hint()),
            Error::Adopt(e) => Some(e.hint()),
            Error::Prompt(e) => Some(e.hint()),
            Error::Api { .. } => Some("check that the cluster is reachable (`kubectl cluster-info`) and re-run; a re-run resumes".into()),
        }
    }

    /// The Kubernetes client error behind this one, if any.
    fn kube_source(&self) -> Option<&kube::Error> {
        use crate::apply::ApplyError;
        match self {
            Error::Api { source, .. }
            | Error::Lock(crate::lock::LockError::Api { source })
            | Error::Apply(ApplyError::Api { source, .. })
            | Error::Apply(ApplyError::Discovery(source))
            | Error::Apply(ApplyError::Parent(source)) => Some(source),
            _ => None,
        }
    }

    /// The one line printed for this error: the problem, then the fix.
    pub fn one_line(&self) -> String {
        // A connection failure reads "ServiceError: client error (Connect)" at the top; the cause
        // (refused, reset, timed out) is at the bottom of the chain. Transport errors only: they
        // carry no credentials, unlike some parse errors further down other chains.
        let cause = self
            .kube_source()
            .filter(|e| matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_)))
            .map(|e| crate::cluster::innermost(e))
            .filter(|c| !c.is_empty() && !self.to_string().contains(c.as_str()));
        let problem = match cause {
            Some(c) => format!("{self} ({c})"),
            None => self.to_string(),
        };
        let text = match self.hint() {
            Some(h) => format!("error: {problem}; {h}"),
            None => format!("error: {problem}"),
        };
        // Messages from the server or a library may span lines; the contract is one line.
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper's shape: a vague outer message over the io error that says what happened.
    #[derive(Debug)]
    struct Connect(std::io::Error);

    impl std::fmt::Display for Connect {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Connect {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_connection_failure_names_its_cause_on_the_one_line() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Error::Api {
            context: "reading Service ingress-nginx-controller".into(),
            source: kube::Error::Service(Box::new(Connect(refused))),
        };
        let line = e.one_line();
        assert!(
            line.starts_with("error: reading Service ingress-nginx-controller: ServiceError: client error (Connect) (Connection refused); check"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }
}
