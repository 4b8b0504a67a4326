//! Byte streams: plain TCP, TLS on either side, or (to a server) a Unix socket, split into a
//! read half and a write half.
//!
//! The relay is written once over [`BoxRead`]/[`BoxWrite`]; this module is the only place that
//! knows whether TLS is in use. It never interprets the bytes it carries.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// The read half of a client or upstream connection.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a client or upstream connection.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A connection before it is split for the relay.
pub enum Stream {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A server's Unix socket (no TLS there, as with libpq).
    Unix(UnixStream),
    /// Left behind while the real stream is moved out (e.g. for the TLS handshake); every
    /// operation on it fails.
    Detached,
}

impl Stream {
    /// The TCP socket under the stream (`None` once detached).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(t) => Some(t),
            Stream::ServerTls(s) => Some(s.get_ref().0),
            Stream::ClientTls(s) => Some(s.get_ref().0),
            Stream::Unix(_) | Stream::Detached => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// Moves the stream out, leaving [`Stream::Detached`].
    pub fn take(&mut self) -> Stream {
        std::mem::replace(self, Stream::Detached)
    }

    /// Splits into independently usable halves (lock-free for plain TCP).
    pub fn split(self) -> (BoxRead, BoxWrite) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::ServerTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
            Stream::ClientTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Detached => (Box::new(tokio::io::empty()), Box::new(tokio::io::sink())),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::Detached => std::task::Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::Detached => std::task::Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::Detached => std::task::Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::Detached => std::task::Poll::Ready(Ok(())),
        }
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream detached")
}

/// Upgrades an upstream TCP connection to TLS as `tls` asks: encryption only for
/// `prefer`/`require`, the certificate verified for `verify-ca`/`verify-full` (the one
/// configuration of [`crate::conninfo::tls_client_config`], shared with the executor).
pub async fn connect_tls(
    tcp: TcpStream,
    host: &str,
    tls: &crate::UpstreamTls,
) -> io::Result<Stream> {
    let config =
        crate::conninfo::tls_client_config(tls.sslmode(), tls.root()).map_err(io::Error::other)?;
    let name = crate::conninfo::server_name(host)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))?;
    Ok(Stream::ClientTls(Box::new(tls)))
}
