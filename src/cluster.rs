//! Connecting to a cluster the way kubectl does: `--kubeconfig`, else `KUBECONFIG` (a list), else `~/.kube/config`; `--context`, else the current one.
//!
//! In-cluster credentials are never used as a silent fallback: an installer that picked up a pod's
//! service account instead of the user's context would write to the wrong cluster.

use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Which cluster to talk to, as the user said it.
#[derive(Clone, Debug, Default)]
pub struct ConnectRequest {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A connected client and the names to show before the first write.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub context: String,
    pub server: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no kubeconfig found (looked at {looked})")]
    NoKubeconfig { looked: String },
    #[error("cannot read kubeconfig {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("context {context:?} is not in the kubeconfig")]
    UnknownContext {
        context: String,
        available: Vec<String>,
    },
    #[error("the kubeconfig has no current context")]
    NoCurrentContext { available: Vec<String> },
    #[error("kubeconfig is not usable: {reason}")]
    Invalid { reason: String },
}

impl ConnectError {
    /// Whether the user's input is at fault (exit 2) rather than the cluster.
    pub fn is_input(&self) -> bool {
        !matches!(self, ConnectError::Invalid { .. })
    }

    pub fn hint(&self) -> String {
        match self {
            ConnectError::NoKubeconfig { .. } => {
                "pass --kubeconfig FILE, set KUBECONFIG, or run `az aks get-credentials`".into()
            }
            ConnectError::Unreadable { .. } => "check the path and its permissions".into(),
            ConnectError::UnknownContext { available, .. }
            | ConnectError::NoCurrentContext { available } => {
                format!("pass --context with one of: {}", available.join(", "))
            }
            ConnectError::Invalid { .. } => {
                "check the kubeconfig with `kubectl config view`".into()
            }
        }
    }
}

fn load_kubeconfig(req: &ConnectRequest) -> Result<Kubeconfig, ConnectError> {
    if let Some(path) = &req.kubeconfig {
        return Kubeconfig::read_from(path).map_err(|e| ConnectError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        });
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let mut merged: Option<Kubeconfig> = None;
        for path in std::env::split_paths(&list).filter(|p| p.exists()) {
            let kc = Kubeconfig::read_from(&path).map_err(|e| ConnectError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            merged = Some(match merged {
                None => kc,
                Some(m) => m.merge(kc).map_err(|e| ConnectError::Invalid {
                    reason: e.to_string(),
                })?,
            });
        }
        return merged.ok_or_else(|| ConnectError::NoKubeconfig {
            looked: format!("KUBECONFIG={}", list.to_string_lossy()),
        });
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let default = home.join(".kube").join("config");
    if !default.exists() {
        return Err(ConnectError::NoKubeconfig {
            looked: default.display().to_string(),
        });
    }
    Kubeconfig::read_from(&default).map_err(|e| ConnectError::Unreadable {
        path: default.display().to_string(),
        reason: e.to_string(),
    })
}

/// Builds a client with connect and read timeouts, so an unreachable server fails in seconds.
pub async fn connect(req: &ConnectRequest) -> Result<Cluster, ConnectError> {
    let kc = load_kubeconfig(req)?;
    let available: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
    let context = match &req.context {
        Some(c) if !available.contains(c) => {
            return Err(ConnectError::UnknownContext {
                context: c.clone(),
                available,
            });
        }
        Some(c) => c.clone(),
        None => kc
            .current_context
            .clone()
            .ok_or(ConnectError::NoCurrentContext { available })?,
    };
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| ConnectError::Invalid {
            reason: e.to_string(),
        })?;
    // Reads keep kube's default, which is longer than a watch's server-side timeout.
    config.connect_timeout = Some(Duration::from_secs(5));
    // kube sends no User-Agent; naming ourselves lets the apiserver's audit log and metrics tell
    // gridos-setup's requests from kubectl's and from controllers'.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("gridos-setup/", env!("CARGO_PKG_VERSION"))),
    ));
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| ConnectError::Invalid {
        reason: e.to_string(),
    })?;
    Ok(Cluster {
        client,
        context,
        server,
    })
}
