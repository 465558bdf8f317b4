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
    /// The server's answer to `/version`, when that was the first request ([`Probe::Version`]).
    pub version: Option<k8s_openapi::apimachinery::pkg::version::Info>,
}

/// The first request, which proves the server reachable and the credentials good before anything
/// else happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `/version`: for the commands that report the server's version (`check`, `status`).
    Version,
    /// The aggregated discovery of the API groups (`/apis`), for the commands that need discovery
    /// anyway (install, plan, uninstall): probing with it saves them a request on every run.
    Discovery,
}

/// What the probe learnt besides reachability.
pub enum Probed {
    Version,
    /// The non-core API groups from aggregated discovery (the core group is fixed, see
    /// `apply::Resolver`).
    Discovery(Box<kube::Discovery>),
    /// The server reached, but aggregated discovery not served (Kubernetes before 1.30 without the
    /// beta feature): the caller runs the classic discovery walk.
    NoAggregatedDiscovery,
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
    /// Refused rather than honoured: an installer that writes cluster-admin objects must know whom it talks to.
    #[error(
        "cluster {cluster:?} in the kubeconfig sets insecure-skip-tls-verify, and gridos-setup never turns TLS verification off"
    )]
    InsecureSkipTls { cluster: String },
    #[error("the kubeconfig's credential plugin {command:?} (user {user:?}) is not on PATH")]
    ExecPluginMissing {
        command: String,
        user: String,
        install_hint: Option<String>,
    },
    #[error("TLS verification of {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("{server} rejected the credentials of context {context:?} (401 Unauthorized)")]
    Unauthorized { server: String, context: String },
    #[error("getting credentials for context {context:?} failed: {reason}")]
    Credentials { context: String, reason: String },
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("{server} did not answer within {secs} s")]
    NoAnswer { server: String, secs: u64 },
    #[error("first request to {server} failed: {reason}")]
    Failed { server: String, reason: String },
}

impl ConnectError {
    /// Whether the user's input (kubeconfig, context, credentials) is at fault (exit 2) rather than
    /// the cluster or the network (exit 1): exit 2 means re-running unchanged cannot help.
    pub fn is_input(&self) -> bool {
        !matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::NoAnswer { .. }
                | ConnectError::Failed { .. }
        )
    }

    pub fn hint(&self) -> String {
        match self {
            ConnectError::NoKubeconfig { .. } => {
                "pass --kubeconfig FILE, set KUBECONFIG, or run `az aks get-credentials`".into()
            }
            ConnectError::Unreadable { reason, .. } if reason.contains("line ") => {
                "fix the kubeconfig's YAML at that line and column, or rewrite it with `az aks get-credentials --overwrite-existing`".into()
            }
            ConnectError::Unreadable { .. } => {
                "pass --kubeconfig with a readable kubeconfig file (`az aks get-credentials --file FILE` writes one)".into()
            }
            ConnectError::UnknownContext { available, .. }
            | ConnectError::NoCurrentContext { available } => {
                if available.is_empty() {
                    "the kubeconfig has no contexts; run `az aks get-credentials` to add one".into()
                } else {
                    format!("pass --context with one of: {}", available.join(", "))
                }
            }
            ConnectError::Invalid { .. } => {
                "check the kubeconfig with `kubectl config view`".into()
            }
            ConnectError::InsecureSkipTls { cluster } => format!(
                "remove insecure-skip-tls-verify from cluster {cluster:?} and give its CA in certificate-authority-data (`az aks get-credentials --overwrite-existing` writes both)"
            ),
            ConnectError::ExecPluginMissing {
                command,
                install_hint,
                ..
            } => {
                if command == "kubelogin" || command.ends_with("/kubelogin") {
                    "install kubelogin with `az aks install-cli` (or put it on PATH), then re-run".into()
                } else if let Some(h) = install_hint {
                    format!("install {command} ({h}) or put it on PATH, then re-run")
                } else {
                    format!("install {command} or put it on PATH, then re-run")
                }
            }
            ConnectError::Tls { .. } => {
                "the kubeconfig's CA does not match the server's certificate: refresh the kubeconfig with `az aks get-credentials --overwrite-existing` or fix certificate-authority-data for this cluster".into()
            }
            ConnectError::Unauthorized { .. } => {
                "the token or certificate is invalid or expired: refresh it with `az aks get-credentials --overwrite-existing` (and `kubelogin convert-kubeconfig` for Entra ID), then re-run".into()
            }
            ConnectError::Credentials { .. } => {
                "run the kubeconfig's credential command yourself to see why it fails (`kubectl get --raw /version` does the same)".into()
            }
            ConnectError::Unreachable { .. } | ConnectError::NoAnswer { .. } => {
                "check the server address in the kubeconfig and the network path to it (VPN, private cluster, firewall) with `kubectl cluster-info`".into()
            }
            ConnectError::Failed { .. } => {
                "check the cluster with `kubectl get --raw /version` and re-run".into()
            }
        }
    }
}

/// The innermost cause (kube's outer message repeats the path the error already names), cut to its
/// first line with quoted text removed: the YAML parser quotes the offending source lines and values,
/// and in a kubeconfig those can be tokens or keys.
pub(crate) fn innermost(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    without_quotes(cur.to_string().lines().next().unwrap_or_default())
}

fn without_quotes(text: &str) -> String {
    let mut out = String::new();
    let mut open: Option<char> = None;
    for c in text.chars() {
        match open {
            Some(q) if c == q => {
                out.push_str("...");
                out.push(q);
                open = None;
            }
            Some(_) => {}
            None if matches!(c, '"' | '`' | '\'') => {
                out.push(c);
                open = Some(c);
            }
            None => out.push(c),
        }
    }
    if let Some(q) = open {
        out.push_str("...");
        out.push(q);
    }
    out
}

fn load_kubeconfig(req: &ConnectRequest) -> Result<Kubeconfig, ConnectError> {
    if let Some(path) = &req.kubeconfig {
        return Kubeconfig::read_from(path).map_err(|e| ConnectError::Unreadable {
            path: path.display().to_string(),
            reason: innermost(&e),
        });
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let mut merged: Option<Kubeconfig> = None;
        for path in std::env::split_paths(&list).filter(|p| p.exists()) {
            let kc = Kubeconfig::read_from(&path).map_err(|e| ConnectError::Unreadable {
                path: path.display().to_string(),
                reason: innermost(&e),
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
        reason: innermost(&e),
    })
}

/// Covers the TCP connect and the TLS handshake: a server that accepts and then stays silent is
/// given up on as soon as one that never accepts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the first request may take in all: the connect timeout plus the server's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);

/// Whether `program` can be run: a path to an executable file, or a bare name found on PATH as
/// one (as the shell and `which` find it; a file without the executable bit does not count).
pub fn runnable(program: &str) -> bool {
    which::which(program).is_ok()
}

/// Refusals that need no network: a cluster entry that turns TLS verification off, a credential
/// plugin that is not installed (kube would only find out at the first request, with a vaguer error).
fn check_context(kc: &Kubeconfig, context: &str) -> Result<(), ConnectError> {
    let Some(ctx) = kc
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
    else {
        return Ok(());
    };
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.as_ref());
    if cluster.is_some_and(|c| c.insecure_skip_tls_verify == Some(true)) {
        return Err(ConnectError::InsecureSkipTls {
            cluster: ctx.cluster.clone(),
        });
    }
    let user = ctx.user.clone().unwrap_or_default();
    let exec = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_ref())
        .and_then(|a| a.exec.as_ref());
    if let Some(command) = exec.and_then(|e| e.command.as_ref())
        && !runnable(command)
    {
        return Err(ConnectError::ExecPluginMissing {
            command: command.clone(),
            user,
            install_hint: exec.and_then(|e| e.install_hint.clone()),
        });
    }
    Ok(())
}

/// The credentials in a loaded config, so that no message derived from a library error can carry them.
fn secrets_of(config: &Config) -> Vec<String> {
    use kube::config::AuthInfo;
    let AuthInfo {
        token,
        password,
        client_key_data,
        client_certificate_data,
        ..
    } = &config.auth_info;
    use secrecy::ExposeSecret;
    let mut out: Vec<String> = [token, password, client_key_data]
        .into_iter()
        .flatten()
        .map(|s| s.expose_secret().to_string())
        .collect();
    out.extend(client_certificate_data.clone());
    out.retain(|s| s.len() >= 8);
    out
}

/// Replaces every credential in `text` with a marker.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for s in secrets {
        for part in s.lines().map(str::trim).filter(|l| l.len() >= 8) {
            text = text.replace(part, "[redacted]");
        }
        text = text.replace(s.as_str(), "[redacted]");
    }
    text
}

/// What the first request's failure means for the user, named the way they can act on it.
pub fn classify(e: &kube::Error, server: &str, context: &str) -> ConnectError {
    if let kube::Error::Api(status) = e {
        if status.code == 401 {
            return ConnectError::Unauthorized {
                server: server.into(),
                context: context.into(),
            };
        }
        return ConnectError::Failed {
            server: server.into(),
            reason: format!("{} ({})", status.message, status.code),
        };
    }
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    while let Some(next) = chain.last().and_then(|c| c.source()) {
        chain.push(next);
    }
    if let Some(auth) = chain
        .iter()
        .find_map(|c| c.downcast_ref::<kube::client::AuthError>())
    {
        return ConnectError::Credentials {
            context: context.into(),
            reason: auth_reason(auth),
        };
    }
    let messages: Vec<String> = chain.iter().map(|c| c.to_string()).collect();
    if let Some(m) = messages.iter().find(|m| {
        let l = m.to_lowercase();
        l.contains("invalid peer certificate")
            || l.contains("certificate verify failed")
            || l.contains("unknownissuer")
            || l.contains("notvalidforname")
    }) {
        // rustls's variant names are terse; say what each means for a kubeconfig.
        let reason = if m.contains("UnknownIssuer") {
            "the server's certificate is not signed by the kubeconfig's CA (UnknownIssuer)".into()
        } else if m.contains("NotValidForName") {
            "the server's certificate does not name this server (NotValidForName)".into()
        } else {
            m.trim_start_matches("invalid peer certificate: ")
                .to_string()
        };
        return ConnectError::Tls {
            server: server.into(),
            reason,
        };
    }
    let io_kind = chain
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    let innermost = messages.last().cloned().unwrap_or_default();
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => ConnectError::Unreachable {
            server: server.into(),
            reason: "connection refused".into(),
        },
        Some(std::io::ErrorKind::TimedOut) => ConnectError::NoAnswer {
            server: server.into(),
            secs: CONNECT_TIMEOUT.as_secs(),
        },
        _ if matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            ConnectError::Unreachable {
                server: server.into(),
                reason: innermost,
            }
        }
        _ => ConnectError::Failed {
            server: server.into(),
            reason: innermost,
        },
    }
}

/// A credential plugin's failure without its output: a half-written ExecCredential on stdout could
/// hold a token, so only the status and the last line of stderr (where plugins explain) are shown.
fn auth_reason(e: &kube::client::AuthError) -> String {
    use kube::client::AuthError;
    match e {
        // `cmd` is kube's rendering with the plugin's environment prefixed: too long for one line.
        AuthError::AuthExecRun { out, .. } => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            let last: String = last.chars().take(200).collect();
            if last.is_empty() {
                format!("the credential command failed ({})", out.status)
            } else {
                format!("the credential command failed ({}): {last}", out.status)
            }
        }
        AuthError::AuthExecParse(_) => {
            "the credential command's output is not an ExecCredential".into()
        }
        AuthError::AuthExecStart(io) => format!("cannot start the credential command: {io}"),
        other => other.to_string(),
    }
}

/// Builds a client with connect and read timeouts and makes the first request (`/version`), so
/// that an unreachable server, a CA that does not match or rejected credentials fail here, before
/// anything is rendered or written, with an error that names the cause.
pub async fn connect(req: &ConnectRequest) -> Result<Cluster, ConnectError> {
    connect_with(req, Probe::Version).await.map(|(c, _)| c)
}

/// [`connect`] with the first request of the caller's choice.
pub async fn connect_with(
    req: &ConnectRequest,
    probe: Probe,
) -> Result<(Cluster, Probed), ConnectError> {
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
        None => kc.current_context.clone().filter(|c| !c.is_empty()).ok_or(
            ConnectError::NoCurrentContext {
                available: available.clone(),
            },
        )?,
    };
    if !available.contains(&context) {
        return Err(ConnectError::UnknownContext { context, available });
    }
    check_context(&kc, &context)?;
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let mut config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| unusable(&e, &context, &[]))?;
    let secrets = secrets_of(&config);
    // Belt and braces: nothing in gridos-setup sets it, and the kubeconfig's flag was refused above.
    if config.accept_invalid_certs {
        return Err(ConnectError::InsecureSkipTls {
            cluster: context.clone(),
        });
    }
    // Reads keep kube's default, which is longer than a watch's server-side timeout.
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    // kube sends no User-Agent; naming ourselves lets the apiserver's audit log and metrics tell
    // gridos-setup's requests from kubectl's and from controllers'.
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("gridos-setup/", env!("CARGO_PKG_VERSION"))),
    ));
    let server = config.cluster_url.to_string();
    let client = build_client(&config).map_err(|e| unusable(&e, &context, &secrets))?;
    let mut cluster = Cluster {
        client,
        context,
        server,
        version: None,
    };
    let probed = match probe {
        Probe::Version => Probed::Version,
        Probe::Discovery => match probe_discovery(&cluster, &secrets).await? {
            Some(d) => Probed::Discovery(Box::new(d)),
            None => Probed::NoAggregatedDiscovery,
        },
    };
    if !matches!(probed, Probed::Discovery(_)) {
        cluster.version = Some(probe_version(&cluster, &secrets).await?);
    }
    Ok((cluster, probed))
}

async fn probe_version(
    c: &Cluster,
    secrets: &[String],
) -> Result<k8s_openapi::apimachinery::pkg::version::Info, ConnectError> {
    match tokio::time::timeout(PROBE_TIMEOUT, c.client.apiserver_version()).await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(e)) => Err(scrub_error(classify(&e, &c.server, &c.context), secrets)),
        Err(_) => Err(ConnectError::NoAnswer {
            server: c.server.clone(),
            secs: PROBE_TIMEOUT.as_secs(),
        }),
    }
}

/// Aggregated discovery of the non-core groups as the first request. `None` when the server
/// answered but not with aggregated discovery: whatever it was, the `/version` probe that follows
/// then reports it the way it always has.
async fn probe_discovery(
    c: &Cluster,
    secrets: &[String],
) -> Result<Option<kube::Discovery>, ConnectError> {
    let discovery = kube::Discovery::new(c.client.clone())
        .exclude(&[""])
        .run_aggregated();
    match tokio::time::timeout(PROBE_TIMEOUT, discovery).await {
        Ok(Ok(d)) => Ok(Some(d)),
        Ok(Err(e)) => match classify(&e, &c.server, &c.context) {
            ConnectError::Failed { .. } => Ok(None),
            other => Err(scrub_error(other, secrets)),
        },
        Err(_) => Err(ConnectError::NoAnswer {
            server: c.server.clone(),
            secs: PROBE_TIMEOUT.as_secs(),
        }),
    }
}

/// kube's own stack with HTTP/2 offered by ALPN. kube-client 5 only enables HTTP/1.1, so each
/// concurrent request opened its own TLS connection (a client-certificate handshake each); over
/// HTTP/2 they share one connection, as kubectl's do. Servers that only speak HTTP/1.1 still get it.
fn build_client(config: &Config) -> Result<Client, kube::Error> {
    use kube::client::ConfigExt;
    use tower::ServiceBuilder;

    // Proxies need kube's own connector chain (and its error when the feature is missing).
    if config.proxy_url.is_some() {
        return Client::try_from(config.clone());
    }
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    // HTTP/2 writes a request's HEADERS and DATA frames separately; with Nagle on, the second waits
    // for the server's delayed ACK (tens of ms per request).
    http.set_nodelay(true);
    let mut tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| kube::Error::Service(format!("tls-server-name {name:?}: {e}").into()))?;
        tls = tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    // The connect timeout covers the TLS handshake as well (a server that accepts and then stays
    // silent), as in kube's own stack.
    let mut connector = hyper_timeout::TimeoutConnector::new(
        tls.enable_http1().enable_http2().wrap_connector(http),
    );
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        // kube's own short retry of 429/503/504 (src/retry.rs backs it for longer outages).
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // `-vv` shows each request (method and URL, never headers), as kube's own stack does.
        // Failures stay at debug too: the caller reports them once, in its own words.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|req: &http::Request<kube::client::Body>| {
                    tracing::debug_span!("HTTP", method = %req.method(), url = %req.uri())
                })
                .on_failure(
                    tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
                ),
        )
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// A kubeconfig that cannot become a client. Credential plugins run while it is built, and kube's
/// message for a failed one includes the plugin's whole stdout, so that case gets its own wording.
fn unusable(
    e: &(dyn std::error::Error + 'static),
    context: &str,
    secrets: &[String],
) -> ConnectError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(auth) = c.downcast_ref::<kube::client::AuthError>() {
            return ConnectError::Credentials {
                context: context.into(),
                reason: scrub(&auth_reason(auth), secrets),
            };
        }
        cur = c.source();
    }
    ConnectError::Invalid {
        reason: scrub(&e.to_string(), secrets),
    }
}

fn scrub_error(e: ConnectError, secrets: &[String]) -> ConnectError {
    match e {
        ConnectError::Credentials { context, reason } => ConnectError::Credentials {
            context,
            reason: scrub(&reason, secrets),
        },
        ConnectError::Failed { server, reason } => ConnectError::Failed {
            server,
            reason: scrub(&reason, secrets),
        },
        ConnectError::Unreachable { server, reason } => ConnectError::Unreachable {
            server,
            reason: scrub(&reason, secrets),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_secrets_and_their_pem_lines() {
        let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\nAwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        let secrets = vec![
            "eyJhbGciOiJSUzI1NiJ9.payload.signature".to_string(),
            key.to_string(),
        ];
        let text = "token eyJhbGciOiJSUzI1NiJ9.payload.signature and a line MIGHAgEAMBMGByqGSM49AgEGCCqGSM49 of the key";
        let out = scrub(text, &secrets);
        assert!(!out.contains("eyJhbGciOiJSUzI1NiJ9"), "{out}");
        assert!(!out.contains("MIGHAgEAMBMGByqGSM49"), "{out}");
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn parse_errors_keep_position_and_lose_quoted_text() {
        assert_eq!(
            without_quotes("line 6 column 12: invalid type: string \"s3cr3t\", expected a map"),
            "line 6 column 12: invalid type: string \"...\", expected a map"
        );
        assert_eq!(without_quotes("token `abc"), "token `...`");
    }

    #[test]
    fn short_values_are_not_treated_as_secrets() {
        // A one-letter password would otherwise blank every such letter of a message.
        let mut config = Config::new("https://example.com".parse().unwrap());
        config.auth_info.password = Some("a".to_string().into());
        assert!(secrets_of(&config).is_empty());
    }

    #[test]
    fn only_network_failures_are_not_input_errors() {
        let unreachable = ConnectError::Unreachable {
            server: "https://x".into(),
            reason: "connection refused".into(),
        };
        assert!(!unreachable.is_input());
        let tls = ConnectError::Tls {
            server: "https://x".into(),
            reason: "UnknownIssuer".into(),
        };
        assert!(tls.is_input());
        let skip = ConnectError::InsecureSkipTls {
            cluster: "aks".into(),
        };
        assert!(skip.is_input());
    }
}
