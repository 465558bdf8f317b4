//! The run context: what every stage of a run shares (client, deadline, interrupt, reporter, timings), passed explicitly.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use tokio::time::Instant;

use crate::interrupt::Interrupt;
use crate::progress::{Event, Reporter, State};

/// Milliseconds of a duration, saturating.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a run's time went, for the summary's `durations`.
#[derive(Clone, Debug)]
pub struct Timings {
    pub started: Instant,
    pub apply: Duration,
    pub wait: Duration,
    /// When each component first reported work, for its elapsed time.
    components: BTreeMap<String, Instant>,
}

/// What a span of time was spent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Apply,
    Wait,
}

impl Timings {
    pub fn new() -> Self {
        Self::since(Instant::now())
    }

    /// Timings of a run that began at `started`.
    pub fn since(started: Instant) -> Self {
        Timings {
            started,
            apply: Duration::ZERO,
            wait: Duration::ZERO,
            components: BTreeMap::new(),
        }
    }

    /// Adds the time since `since` to `phase`.
    pub fn add(&mut self, phase: Phase, since: Instant) {
        let d = since.elapsed();
        match phase {
            Phase::Apply => self.apply += d,
            Phase::Wait => self.wait += d,
        }
    }

    /// The components that reported work, in name order.
    pub fn components(&self) -> Vec<String> {
        self.components.keys().cloned().collect()
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

/// What the stages of one run share.
pub struct RunContext<'a> {
    pub client: Client,
    /// The end of `--timeout`: waits end and no retry starts after it.
    pub deadline: Instant,
    pub interrupt: Interrupt,
    pub reporter: &'a dyn Reporter,
    pub timings: Timings,
}

impl<'a> RunContext<'a> {
    /// A context whose clock started at `started`: the deadline is `timeout` after it.
    pub fn new(
        client: Client,
        started: Instant,
        timeout: Duration,
        interrupt: Interrupt,
        reporter: &'a dyn Reporter,
    ) -> Self {
        let timings = Timings::since(started);
        RunContext {
            client,
            deadline: deadline_after(timings.started, timeout),
            interrupt,
            reporter,
            timings,
        }
    }

    /// The deadline as the retry and apply layers take it.
    pub fn until(&self) -> Option<Instant> {
        Some(self.deadline)
    }

    /// A component starts (or goes on with) some work.
    pub fn running(&mut self, component: &str, detail: String) {
        self.timings
            .components
            .entry(component.to_string())
            .or_insert_with(Instant::now);
        self.reporter.event(&Event::Component {
            component: component.into(),
            state: State::Running,
            detail,
            elapsed_ms: None,
        });
    }

    /// A component is done or failed, with the time since it first reported work.
    pub fn finished(&self, component: &str, state: State, detail: String) {
        let elapsed = self
            .timings
            .components
            .get(component)
            .map(|t| ms(t.elapsed()));
        self.reporter.event(&Event::Component {
            component: component.into(),
            state,
            detail,
            elapsed_ms: elapsed,
        });
    }

    pub fn notice(&self, message: String) {
        self.reporter.event(&Event::Notice { message });
    }
}

/// `start + timeout`, or far in the future when that does not fit (a timeout of centuries).
pub fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_timeout_gives_a_far_deadline_not_a_panic() {
        let now = Instant::now();
        assert!(deadline_after(now, Duration::MAX) > now + Duration::from_secs(3600));
        assert_eq!(
            deadline_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn timings_add_to_their_phase() {
        let mut t = Timings::new();
        let since = Instant::now() - Duration::from_millis(5);
        t.add(Phase::Wait, since);
        assert!(t.wait >= Duration::from_millis(5));
        assert_eq!(t.apply, Duration::ZERO);
    }
}
