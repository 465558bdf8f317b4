//! Retrying API calls through transient faults (apiserver restarts, etcd leader changes, throttling) with bounded, jittered backoff.
//!
//! kube's retry layer (kept in our client stack) already retries 429/503/504 responses a few times; this layer
//! sits above it so that refused or reset connections while the apiserver restarts, 500s from an
//! etcd leader change, and throttling that outlasts kube's own retries are waited out too. Anything
//! else (403, 404, 409, 422, ...) is the caller's to handle and is returned at once.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;

use tokio::time::Instant;

/// How long and how often to retry.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max_delay: Duration,
    /// No retry starts after this much time since the first attempt.
    pub budget: Duration,
}

/// Long enough to outlast an apiserver restart (a few seconds to ready) or an etcd election.
pub const DEFAULT: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max_delay: Duration::from_secs(4),
    budget: Duration::from_secs(90),
};

/// When retrying must stop: the budget after the first attempt, or the run's deadline if sooner.
fn give_up_at(start: Instant, b: &Backoff, deadline: Option<Instant>) -> Instant {
    let by_budget = start + b.budget;
    deadline.map_or(by_budget, |d| d.min(by_budget))
}

/// Whether an error is worth retrying, and after how long the server asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Transient { retry_after: Option<Duration> },
    Permanent,
}

/// Messages of the apiserver passing on etcd's own transient failures (code 500 or 504).
const ETCD_TRANSIENT: [&str; 4] = [
    "etcdserver: leader changed",
    "etcdserver: request timed out",
    "etcdserver: no leader",
    "etcdserver: too many requests",
];

/// Classifies an error of the Kubernetes client.
pub fn classify(e: &kube::Error) -> Class {
    match e {
        kube::Error::Api(s) => classify_status(s.code, &s.message, retry_after_of(s)),
        // Refused, reset or broken connections, TLS handshakes cut short by a restarting server.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Class::Transient { retry_after: None }
        }
        _ => Class::Permanent,
    }
}

fn retry_after_of(s: &kube::core::Status) -> Option<Duration> {
    s.details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)))
}

/// Classifies a response status: 429, 500, 503, 504 and etcd's transient messages.
pub fn classify_status(code: u16, message: &str, retry_after: Option<Duration>) -> Class {
    let etcd = ETCD_TRANSIENT.iter().any(|m| message.contains(m));
    match code {
        429 | 503 | 504 => Class::Transient { retry_after },
        500 => Class::Transient { retry_after },
        _ if etcd => Class::Transient { retry_after },
        _ => Class::Permanent,
    }
}

pub fn is_transient(e: &kube::Error) -> bool {
    matches!(classify(e), Class::Transient { .. })
}

/// A number in [0, 1) that differs between processes and calls: enough to spread retries apart.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay before retry number `attempt` (0-based): exponential, capped, with "equal jitter"
/// (half fixed, half random) so that many clients do not retry in lockstep. A server's Retry-After
/// is honoured (up to the cap) and never shortened.
pub fn delay(b: &Backoff, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = b
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(b.max_delay);
    let jittered = exp / 2 + exp.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
    honour_retry_after(b, jittered, retry_after)
}

/// A server's Retry-After lengthens a delay (up to the cap) and never shortens it.
fn honour_retry_after(b: &Backoff, delay: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(r) => r.min(b.max_delay).max(delay),
        None => delay,
    }
}

/// Runs `op` until it succeeds, fails permanently, or the budget is spent (the last error is returned).
///
/// `deadline` is the command's own `--timeout` (from its run context): no retry starts after it,
/// whatever the backoff's budget says, so `install --timeout 20s` against a server gone for good
/// ends near 20 s, not after 90. The loop is backon's; the delays are [`delay`]'s.
pub async fn retry<T, F, Fut>(
    what: &str,
    b: Backoff,
    deadline: Option<Instant>,
    op: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let give_up = give_up_at(Instant::now(), &b, deadline);
    op.retry(Delays::new(b))
        .sleep(tokio::time::sleep)
        .when(is_transient)
        .adjust(|e, next| {
            let retry_after = match classify(e) {
                Class::Transient { retry_after } => retry_after,
                Class::Permanent => None,
            };
            let wait = honour_retry_after(&b, next?, retry_after);
            (Instant::now() + wait <= give_up).then_some(wait)
        })
        .notify(|e, wait| tracing::info!("{what}: {e}; retrying in {}ms", wait.as_millis()))
        .await
}

/// [`retry`] with the [`DEFAULT`] backoff.
pub async fn with_retry<T, F, Fut>(
    what: &str,
    deadline: Option<Instant>,
    op: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry(what, DEFAULT, deadline, op).await
}

/// Whether a watch stream's error is one to re-watch through (kube-runtime relists on its own).
pub fn watch_error_is_transient(e: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => is_transient(e),
        // 410 Gone: the watch fell too far behind (e.g. after an etcd compaction); a relist follows.
        W::WatchError(s) => {
            s.code == 410
                || matches!(
                    classify_status(s.code, &s.message, None),
                    Class::Transient { .. }
                )
        }
        W::NoResourceVersion => true,
    }
}

/// The delays of a [`Backoff`], one per retry: what backon's loop sleeps between API calls, and
/// kube-runtime's watchers between re-watches, so a dropped watch is re-opened within seconds of
/// the apiserver coming back (kube's default grows to 30 s).
#[derive(Clone, Debug)]
pub struct Delays {
    backoff: Backoff,
    attempt: u32,
}

impl Delays {
    pub fn new(backoff: Backoff) -> Self {
        Delays {
            backoff,
            attempt: 0,
        }
    }
}

impl Default for Delays {
    fn default() -> Self {
        Self::new(DEFAULT)
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = delay(&self.backoff, self.attempt, None, jitter_fraction());
        self.attempt = self.attempt.saturating_add(1);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for Delays {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_deadline_cuts_the_budget_short_but_never_extends_it() {
        let start = Instant::now();
        let near = start + Duration::from_secs(5);
        let far = start + Duration::from_secs(600);
        assert_eq!(give_up_at(start, &DEFAULT, Some(near)), near);
        assert_eq!(
            give_up_at(start, &DEFAULT, Some(far)),
            start + DEFAULT.budget
        );
        assert_eq!(give_up_at(start, &DEFAULT, None), start + DEFAULT.budget);
    }

    fn api(code: u16, message: &str, retry_after: u32) -> kube::Error {
        let mut s = kube::core::Status::failure(message, "x").with_code(code);
        if retry_after > 0 {
            s.details = Some(kube::core::response::StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: retry_after,
            });
        }
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn transient_and_permanent_errors_are_told_apart() {
        for code in [429, 500, 503, 504] {
            assert!(is_transient(&api(code, "x", 0)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 410, 422] {
            assert!(!is_transient(&api(code, "x", 0)), "{code}");
        }
        assert!(is_transient(&api(
            599,
            "rpc error: etcdserver: leader changed",
            0
        )));
        assert_eq!(
            classify(&api(429, "too many requests", 3)),
            Class::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        let refused: Box<dyn std::error::Error + Send + Sync> =
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_transient(&kube::Error::Service(refused)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_transient(&kube::Error::ReadEvents(reset)));
        let bad_json = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!is_transient(&kube::Error::SerdeError(bad_json)));
    }

    #[test]
    fn delays_grow_stay_bounded_and_are_jittered() {
        let b = DEFAULT;
        assert_eq!(delay(&b, 0, None, 0.0), Duration::from_millis(50));
        assert_eq!(delay(&b, 0, None, 1.0), Duration::from_millis(100));
        assert_eq!(delay(&b, 3, None, 0.0), Duration::from_millis(400));
        for attempt in 0..100 {
            for j in [0.0, 0.3, 0.999] {
                let d = delay(&b, attempt, None, j);
                assert!(
                    d <= b.max_delay && d >= b.initial / 2,
                    "{attempt} {j} {d:?}"
                );
            }
        }
        assert_eq!(delay(&b, 50, None, 0.0), b.max_delay / 2);
        for _ in 0..100 {
            let j = jitter_fraction();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let b = DEFAULT;
        assert_eq!(
            delay(&b, 0, Some(Duration::from_secs(2)), 0.5),
            Duration::from_secs(2)
        );
        assert_eq!(
            delay(&b, 0, Some(Duration::from_secs(60)), 0.5),
            b.max_delay
        );
    }

    #[tokio::test]
    async fn retries_transient_errors_then_stops_at_permanent_ones() {
        let b = Backoff {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            budget: Duration::from_secs(5),
        };
        let mut calls = 0;
        let r = retry("t", b, None, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(api(503, "x", 0)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
        let mut calls = 0;
        let r: Result<(), _> = retry("t", b, None, || {
            calls += 1;
            async { Err(api(403, "forbidden", 0)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        let short = Backoff {
            budget: Duration::from_millis(20),
            ..b
        };
        let mut calls = 0;
        let r: Result<(), _> = retry("t", short, None, || {
            calls += 1;
            async { Err(api(500, "x", 0)) }
        })
        .await;
        assert!(r.is_err());
        assert!(calls > 1 && calls < 40, "{calls}");
    }
}
