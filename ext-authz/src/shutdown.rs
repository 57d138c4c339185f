//! Shutdown plumbing: a one-shot trigger many tasks can wait on (the OS signals that pull it are
//! `edge_process::shutdown_signal`).

use tokio::sync::watch;

/// Pulls the shutdown for every [`ShutdownSignal`] made from it. Cloneable.
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

/// Resolves once shutdown was triggered. Cloneable; every clone sees the trigger.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<bool>,
}

/// A connected trigger/signal pair.
pub fn channel() -> (ShutdownTrigger, ShutdownSignal) {
    let (tx, rx) = watch::channel(false);
    (
        ShutdownTrigger {
            tx: std::sync::Arc::new(tx),
        },
        ShutdownSignal { rx },
    )
}

impl ShutdownTrigger {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl ShutdownSignal {
    /// Waits until shutdown is triggered (returns at once if it already was). If every trigger
    /// is dropped without firing, this never resolves.
    pub async fn wait(&mut self) {
        if self.rx.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let (trigger, signal) = channel();
        let mut a = signal.clone();
        let mut b = signal;
        assert!(!a.is_triggered());
        let waiter = tokio::spawn(async move { a.wait().await });
        trigger.trigger();
        waiter.await.unwrap();
        b.wait().await;
        assert!(b.is_triggered());
    }
}
