//! The running agent: the shared state of `serve` (configuration, domains, trust store, spool,
//! sinks, caches) and its pipelines. [`inbound`] turns a spooled message into sink deliveries or
//! a quarantine record; [`outbound`] seals and queues messages and delivers queued entries.

mod committer;
mod context;
pub mod gate;
pub mod inbound;
pub mod notify;
pub mod pending;
pub mod pingpong;
pub mod reply;
pub mod validation;
pub mod workers;

pub use context::{Context, SealRefusal};
pub mod outbound;
pub mod serve;

/// Wait until `wake` is notified, `period` passes or shutdown is signalled; returns true when the
/// caller should stop. A dropped shutdown sender counts as shutdown, so no loop spins on it.
pub(crate) async fn idle(
    wake: Option<&tokio::sync::Notify>,
    period: std::time::Duration,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let notified = async {
        match wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = notified => false,
        _ = tokio::time::sleep(period) => false,
        changed = shutdown.changed() => changed.is_err() || *shutdown.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn idle_stops_on_shutdown_and_on_a_dropped_sender_but_not_on_wake() {
        let wake = tokio::sync::Notify::new();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        wake.notify_one();
        assert!(!super::idle(Some(&wake), Duration::from_secs(30), &mut rx).await);
        assert!(!super::idle(None, Duration::from_millis(1), &mut rx).await);
        tx.send(true).unwrap();
        assert!(super::idle(None, Duration::from_secs(30), &mut rx).await);
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        drop(tx);
        assert!(super::idle(None, Duration::from_secs(30), &mut rx).await);
    }
}
