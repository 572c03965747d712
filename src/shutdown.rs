//! When to stop: SIGTERM or SIGINT, as one future; and a fan-out so every listener stops
//! together.

use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled, so a signal that arrives in between is not lost (nor
/// does it kill the process with the default action). Call it inside the runtime.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
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
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUPs, from the moment this is made: a reload asked for right after start-up is
/// neither lost nor fatal (SIGHUP's default action ends the process).
#[derive(Debug)]
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Installs the handler now. Call it inside the runtime.
    pub fn new() -> Hangups {
        Hangups {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// The next SIGHUP; `false` when none can come (no handler could be installed).
    pub async fn recv(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            return s.recv().await.is_some();
        }
        false
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Self::new()
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
