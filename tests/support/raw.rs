//! Raw HTTP on loopback, for what well-behaved clients and servers refuse to do: an upstream
//! that parses HTTP/1.1 itself, strictly, and records every request it receives, and an
//! HTTP/2 client that writes its frames by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Client;

// ---------------------------------------------------------------------------------------
// A raw recording upstream: parses HTTP/1.1 itself, strictly, and records every request
// line and head it receives, so a request the gateway split, merged or smuggled shows up as
// an extra (or malformed) request.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Seen {
    pub line: String,
    pub head: String,
    pub body: Vec<u8>,
    pub trailers: String,
    pub complete: bool,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or("")
    }
    /// Values of header `name` (case-insensitive) in the head as received.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    errors: Vec<String>,
}

pub struct RawUpstream {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `s` into `buf` until `buf` contains `pat`; returns the index after it.
pub async fn fill_until(s: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i + pat.len());
        }
        if buf.len() > 256 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

pub async fn fill_len(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    while buf.len() < n {
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

impl RawUpstream {
    pub async fn start() -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut conn = 0;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conn += 1;
                tokio::spawn(serve_raw(stream, conn, shared.clone()));
            }
        });
        RawUpstream { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().seen.clone()
    }

    pub fn errors(&self) -> Vec<String> {
        self.log.lock().unwrap().errors.clone()
    }
}

async fn serve_raw(mut s: TcpStream, conn: usize, log: Arc<Mutex<Log>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(end) = fill_until(&mut s, &mut buf, b"\r\n\r\n").await else {
            if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                log.lock().unwrap().errors.push(format!(
                    "conn {conn}: connection ended inside a request head: {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end - 4]).into_owned();
        buf.drain(..end);
        let line = head.split("\r\n").next().unwrap_or("").to_owned();
        let parts: Vec<&str> = line.split(' ').collect();
        let well_formed = parts.len() == 3
            && !parts[0].is_empty()
            && parts[0]
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-')
            && parts[1].starts_with('/')
            && parts[2] == "HTTP/1.1";
        if !well_formed {
            log.lock()
                .unwrap()
                .errors
                .push(format!("conn {conn}: malformed request line {line:?}"));
            return;
        }
        let mut seen = Seen {
            line,
            head: head.clone(),
            body: Vec::new(),
            trailers: String::new(),
            complete: false,
        };
        let te = seen.header_values("transfer-encoding");
        let cl = seen.header_values("content-length");
        if !te.is_empty() && !cl.is_empty() {
            log.lock().unwrap().errors.push(format!(
                "conn {conn}: {} arrived with both Content-Length and Transfer-Encoding",
                seen.line
            ));
        }
        if cl.len() > 1 || cl.iter().any(|v| v.parse::<u64>().is_err()) {
            log.lock().unwrap().errors.push(format!(
                "conn {conn}: {} arrived with Content-Length {cl:?}",
                seen.line
            ));
        }
        let index = {
            let mut l = log.lock().unwrap();
            l.seen.push(seen.clone());
            l.seen.len() - 1
        };
        let chunked = te
            .last()
            .is_some_and(|v| v.to_ascii_lowercase().trim().ends_with("chunked"));
        let ok = if chunked {
            loop {
                let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                    break false;
                };
                let size_line = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                buf.drain(..e);
                let size = size_line.split(';').next().unwrap_or("").trim();
                let Ok(n) = usize::from_str_radix(size, 16) else {
                    log.lock()
                        .unwrap()
                        .errors
                        .push(format!("conn {conn}: bad chunk size {size_line:?}"));
                    return;
                };
                if n == 0 {
                    let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                        break false;
                    };
                    // Trailer fields, up to the empty line.
                    let mut first = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                    buf.drain(..e);
                    while !first.is_empty() {
                        seen.trailers.push_str(&first);
                        seen.trailers.push('\n');
                        let Some(e) = fill_until(&mut s, &mut buf, b"\r\n").await else {
                            break;
                        };
                        first = String::from_utf8_lossy(&buf[..e - 2]).into_owned();
                        buf.drain(..e);
                    }
                    break true;
                }
                if !fill_len(&mut s, &mut buf, n + 2).await {
                    break false;
                }
                seen.body.extend_from_slice(&buf[..n]);
                buf.drain(..n + 2);
            }
        } else if let Some(n) = cl.first().and_then(|v| v.parse::<usize>().ok()) {
            let ok = fill_len(&mut s, &mut buf, n).await;
            if ok {
                seen.body.extend_from_slice(&buf[..n]);
                buf.drain(..n);
            }
            ok
        } else {
            true
        };
        seen.complete = ok;
        log.lock().unwrap().seen[index] = seen.clone();
        if !ok {
            return;
        }
        let body = json!({
            "line": seen.line,
            "body_len": seen.body.len(),
            "trailers": seen.trailers,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: raw\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/2 client: frames written by hand, so requests the h2 crate would refuse to
// send (connection-specific headers, upper-case names, misplaced pseudo-headers) reach the
// gateway's HTTP/2 server as an attacker would send them.
// ---------------------------------------------------------------------------------------

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman coding.
pub fn hpack_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[derive(Debug, PartialEq, Eq)]
pub enum H2Outcome {
    /// Response headers for stream 1: the first byte of the header block (0x88 is 200).
    Response(u8),
    /// RST_STREAM on stream 1 with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// Nothing conclusive before the connection closed or the wait ran out.
    Nothing,
}

/// Sends one request on stream 1 as raw frames: `fields` as a HEADERS frame, then `data`
/// (if any) as one DATA frame ending the stream.
pub async fn h2_raw(
    c: &Client,
    sni: &str,
    fields: &[(&str, &str)],
    data: Option<&[u8]>,
) -> H2Outcome {
    let mut tls = c.connect(sni, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    let block = hpack_block(fields);
    let flags = if data.is_some() { 0x4 } else { 0x5 };
    out.extend(h2_frame(0x1, flags, 1, &block));
    if let Some(d) = data {
        out.extend(h2_frame(0x0, 0x1, 1, d));
    }
    if tls.write_all(&out).await.is_err() {
        return H2Outcome::Nothing;
    }
    let mut buf: Vec<u8> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match (kind, stream) {
                (0x4, 0) if flags & 0x1 == 0 => {
                    let _ = tls.write_all(&h2_frame(0x4, 0x1, 0, &[])).await;
                }
                (0x1, 1) => {
                    // Skip padding and priority fields if present.
                    let mut p = &payload[..];
                    if flags & 0x8 != 0 {
                        p = &p[1..];
                    }
                    if flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    return H2Outcome::Response(p.first().copied().unwrap_or(0));
                }
                (0x3, 1) => {
                    return H2Outcome::Reset(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]))
                }
                (0x7, 0) => {
                    return H2Outcome::GoAway(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]))
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(left, tls.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return H2Outcome::Nothing,
        }
    }
}

/// Like [`Client::raw`], but tolerates a server that answers and closes before the whole
/// request is written (as it should for an oversized head).
pub async fn raw_tolerant(c: &Client, sni: &str, bytes: &[u8], wait: Duration) -> String {
    let tls = c.connect(sni, &[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        let _ = wr.flush().await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = writer.await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Like [`Client::raw`], and whether the server closed the connection within `wait` (false:
/// it was still open, so a missing answer is a hang, not a refusal).
pub async fn raw_outcome(c: &Client, sni: &str, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut tls = c.connect(sni, &[b"http/1.1"]).await;
    let _ = tls.write_all(bytes).await;
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}
