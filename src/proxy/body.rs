//! The response body type: a synthetic page or an upstream stream, counted for the access log.
//!
//! Upstream bodies are streamed frame by frame, never collected. The byte count and the
//! access-log line are emitted when the body is dropped, which is when hyper has finished
//! writing it or the client has gone away, so the log shows what was really sent. An
//! upstream body is read by driving the connection it comes on (see the `upstream` module);
//! read to its end, it gives its connection back to the site's pool then, and one abandoned
//! half read takes its connection with it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::log::AccessLog;
use super::upstream::Checkin;

pin_project! {
    #[project = InnerProj]
    enum Inner {
        Full { #[pin] body: Full<Bytes> },
        Stream { #[pin] body: Incoming },
    }
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Full { body } => body.is_end_stream(),
            Inner::Stream { body } => body.is_end_stream(),
        }
    }
}

pin_project! {
    /// What the gateway sends back to a client.
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        log: Option<Box<AccessLog>>,
        in_flight: Option<super::InFlight>,
        // The upstream connection the body comes from, and whether it has been read to its
        // end, when the connection goes back to its pool.
        checkin: Option<Checkin>,
        ended: bool,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(log) = this.log.take() {
                log.emit();
            }
            // hyper stops polling a body that says it has ended, so ask it too.
            let ended = *this.ended || this.inner.is_end_stream();
            if let (Some(checkin), true) = (this.checkin.take(), ended) {
                checkin.done();
            }
        }
    }
}

impl ResponseBody {
    /// A body held in memory (gateway pages).
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody {
            inner: Inner::Full {
                body: Full::new(bytes.into()),
            },
            log: None,
            in_flight: None,
            checkin: None,
            ended: false,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// An upstream body, streamed; `checkin` returns its connection to the pool once the
    /// body has been read to its end.
    pub fn stream(body: Incoming, checkin: Checkin) -> Self {
        ResponseBody {
            inner: Inner::Stream { body },
            log: None,
            in_flight: None,
            checkin: Some(checkin),
            ended: false,
        }
    }

    /// Keeps the connection's request counted as in flight until the body is finished or
    /// abandoned. Set in place: a response is 272 bytes, and taking it apart and putting it
    /// back together copies it twice.
    pub fn set_in_flight(&mut self, guard: super::InFlight) {
        self.in_flight = Some(guard);
    }

    /// Attaches the access-log record, emitted once the body is finished or abandoned.
    pub fn set_log(&mut self, log: Box<AccessLog>) {
        self.log = Some(log);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = match this.inner.project() {
            InnerProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            InnerProj::Stream { mut body } => match this.checkin.as_mut() {
                // The connection is driven here, by the task sending the body on.
                Some(checkin) => checkin.read(cx, |cx| body.as_mut().poll_frame(cx)),
                None => body.poll_frame(cx),
            },
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(log)) = (&polled, this.log.as_mut()) {
            if let Some(data) = frame.data_ref() {
                log.bytes += data.len() as u64;
            }
        }
        if let Poll::Ready(None) = polled {
            *this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full { body } => body.size_hint(),
            Inner::Stream { body } => body.size_hint(),
        }
    }
}
