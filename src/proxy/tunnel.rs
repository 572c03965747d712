//! Upgraded connections (WebSocket and other `Upgrade` protocols): bytes copied both ways
//! until either side closes, the tunnel sits idle too long, or the gateway shuts down.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;

/// A reader that stamps the time of its last successful read.
struct Stamped<R> {
    inner: R,
    origin: Instant,
    last: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Stamped<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let ms = self.origin.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

/// Copies between the client's and the upstream's upgraded connections until one closes,
/// neither sends a byte for `idle`, or `shutdown` flips to true.
pub async fn pump(
    client: Upgraded,
    upstream: Upgraded,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let origin = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (cr, mut cw) = tokio::io::split(TokioIo::new(client));
    let (ur, mut uw) = tokio::io::split(TokioIo::new(upstream));
    let mut cr = Stamped {
        inner: cr,
        origin,
        last: last.clone(),
    };
    let mut ur = Stamped {
        inner: ur,
        origin,
        last: last.clone(),
    };
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = origin + since + idle;
            if Instant::now() >= deadline {
                tracing::debug!(idle = ?idle, "tunnel idle timeout");
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    let stop = async {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                // The gateway is gone; nothing will ever stop us otherwise.
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = watchdog => {}
        _ = stop => {}
    }
}
