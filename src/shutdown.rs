//! When to stop: SIGTERM or SIGINT, as one future; and a fan-out so every listener stops
//! together.

use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
                }
            }
            _ => {
                // Without signal handlers, Ctrl-C is the only way to ask for a clean stop.
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A stop flag many tasks can wait on.
#[derive(Debug, Clone)]
pub struct Stop(watch::Receiver<bool>);

/// The side that sets the flag.
#[derive(Debug)]
pub struct StopHandle(watch::Sender<bool>);

/// A new, unset stop flag.
pub fn channel() -> (StopHandle, Stop) {
    let (tx, rx) = watch::channel(false);
    (StopHandle(tx), Stop(rx))
}

impl StopHandle {
    /// Sets the flag; every [`Stop::wait`] resolves.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    /// Resolves once the flag is set (or its handle is gone).
    pub async fn wait(mut self) {
        while !*self.0.borrow() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }

    /// The underlying receiver, for tasks that poll the flag.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}
