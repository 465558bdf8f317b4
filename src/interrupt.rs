//! Cooperative interruption (SIGINT, SIGTERM): the binary requests it; runs stop starting writes, let in-flight ones finish, and end waits.
//!
//! A watch channel rather than a flag alone, so that waits can select on the request instead of
//! polling for it.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// The marker error of an interrupted step; callers turn it into their own error type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// A request to stop, shared by the binary's signal handler and the run.
#[derive(Clone, Debug)]
pub struct Interrupt {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Self::new()
    }
}

impl Interrupt {
    /// One that nobody has requested yet (and, for library callers without signals, never will).
    pub fn new() -> Self {
        Interrupt {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    pub fn request(&self) {
        self.tx.send_replace(true);
    }

    pub fn requested(&self) -> bool {
        *self.tx.borrow()
    }

    /// `Err(Interrupted)` once requested: checked before starting each write.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.requested() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resolves once interruption is requested.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Runs a read-only step (a wait) unless interrupted first: dropping it writes nothing.
    pub async fn guard<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<Interrupted>,
    {
        tokio::select! {
            biased;
            _ = self.cancelled() => Err(Interrupted.into()),
            r = f => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_ends_a_guarded_wait_and_fails_checks() {
        let i = Interrupt::new();
        assert_eq!(i.check(), Ok(()));
        let j = i.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            j.request();
        });
        let r: Result<(), Interrupted> = i
            .guard(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .await;
        assert_eq!(r, Err(Interrupted));
        assert_eq!(i.check(), Err(Interrupted));
    }
}
