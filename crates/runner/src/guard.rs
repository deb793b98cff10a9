//! The local API's guard on request lines too long for its HTTP parser.
//!
//! hyper answers a request whose URI passes 64 KiB itself, with an empty 414, before the
//! router sees it. The guard reads each connection's first request line before hyper does:
//! one longer than [`LINE_LIMIT`] gets the API's own 414 with its JSON error body, and the
//! connection ends; anything shorter passes through untouched, so the router's 8 KiB limit
//! answers the rest. (In AWS, API Gateway refuses such requests before the function.)

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The longest first request line passed to the HTTP parser (below its own 64 KiB limit).
pub const LINE_LIMIT: usize = 60 * 1024;

/// A TCP listener whose connections are [`Guarded`].
pub struct GuardedListener(pub TcpListener);

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => return (Guarded::new(stream), addr),
                Err(err) => {
                    // Out of file descriptors and the like: wait, then accept again.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

enum State {
    /// Reading the first request line; `seen` bytes of it so far.
    Line { seen: usize },
    /// The line ended in time: everything passes through.
    Open,
    /// Writing the refusal; `written` bytes of it so far.
    Refusing { written: usize },
    /// Refused and answered: the parser is told the connection ended.
    Done,
}

/// A connection with its first request line checked.
pub struct Guarded {
    inner: TcpStream,
    state: State,
    /// Bytes read and checked, not yet handed to the parser.
    pending: Vec<u8>,
    refusal: Vec<u8>,
}

impl Guarded {
    fn new(inner: TcpStream) -> Self {
        let body = serde_json::json!({"error": {
            "code": "uri_too_long",
            "message": chimera_hitl_api::ApiError::UriTooLong.to_string(),
        }})
        .to_string();
        let refusal = format!(
            "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Guarded {
            inner,
            state: State::Line { seen: 0 },
            pending: Vec::new(),
            refusal,
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() && buf.remaining() > 0 {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.drain(..n);
                return Poll::Ready(Ok(()));
            }
            match this.state {
                State::Open => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Done => return Poll::Ready(Ok(())),
                State::Line { seen } => {
                    let mut chunk = [0u8; 8192];
                    let mut read = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let data = read.filled();
                    if data.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                    match data.iter().position(|b| *b == b'\n') {
                        Some(end) if seen + end < LINE_LIMIT => this.state = State::Open,
                        None if seen + data.len() < LINE_LIMIT => {
                            this.state = State::Line {
                                seen: seen + data.len(),
                            };
                        }
                        _ => {
                            this.state = State::Refusing { written: 0 };
                            continue;
                        }
                    }
                    this.pending.extend_from_slice(data);
                }
                State::Refusing { written } => {
                    let n =
                        ready!(Pin::new(&mut this.inner).poll_write(cx, &this.refusal[written..]))?;
                    let written = written + n;
                    if written < this.refusal.len() && n > 0 {
                        this.state = State::Refusing { written };
                        continue;
                    }
                    // The answer is whole: the client may read it and close; the parser is
                    // told the connection ended and closes it.
                    let _ = ready!(Pin::new(&mut this.inner).poll_flush(cx));
                    this.state = State::Done;
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if matches!(this.state, State::Done) {
            // Whatever the parser says after the refusal is not sent.
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn ask(addr: SocketAddr, target: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        let write = tokio::time::timeout(
            Duration::from_secs(10),
            stream.write_all(request.as_bytes()),
        );
        // The guard stops reading at its limit: a refused request may not be sent whole.
        let _ = write.await.expect("written in time");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered in time");
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_line_too_long_for_the_parser_gets_the_json_414() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "fine" }));
        tokio::spawn(async move { axum::serve(GuardedListener(listener), app).await });
        let ok = ask(addr, "/x?q=1").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("fine"), "{ok}");
        let long = ask(addr, &format!("/x?q={}", "a".repeat(100_000))).await;
        assert!(long.starts_with("HTTP/1.1 414"), "{long}");
        assert!(long.contains(r#""code":"uri_too_long""#), "{long}");
        // Just under the limit, the parser has it (and the route answers).
        let under = ask(addr, &format!("/x?q={}", "a".repeat(50_000))).await;
        assert!(under.starts_with("HTTP/1.1 200"), "{under}");
    }
}
