//! Opening an authenticated connection to a PostgreSQL server as a client.
//!
//! The one PostgreSQL client login in the workspace, used three times: by the proxy to open a
//! session's upstream with the grant's stored credentials (which never travel to the proxy's
//! own client), by `warden connect`'s tunnel to log in to the gateway with the user's email and
//! token, and by the executor (`warden-exec`) before it runs an approved script. TCP or a Unix
//! socket (a host that starts with `/`, as libpq reads it), TLS per `sslmode`. Handles TLS negotiation and cleartext, md5
//! and SCRAM-SHA-256 authentication; stops at the first `ReadyForQuery`, keeping the
//! `ParameterStatus` frames and `BackendKeyData` for the caller. It never relays a query.

use std::io;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::backend::{Upstream, UpstreamTls};
use crate::conninfo::{ConnInfo, Host};
use crate::frame::{self, FrameError, cstr, lossy};
use crate::message::{error_fields, field};
use crate::stream::{self, Stream};

/// Cap on a message body during startup/authentication.
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// Why an upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not reach {0}")]
    Io(#[from] io::Error),
    #[error("the server does not accept TLS but TLS is required")]
    TlsRefused,
    /// The handshake failed: most often a certificate that `verify-ca`/`verify-full` refused.
    #[error("{0}")]
    Tls(String),
    #[error("the server asked for a password and none is configured")]
    PasswordRequired,
    #[error("the server asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("the server refused: {code} {message}")]
    Server {
        code: String,
        message: String,
        /// The server's ErrorResponse frame as received (the tunnel shows it to its client).
        frame: BytesMut,
    },
    #[error("protocol error from the server: {0}")]
    Protocol(String),
}

impl From<FrameError> for UpstreamError {
    fn from(e: FrameError) -> Self {
        UpstreamError::Protocol(e.to_string())
    }
}

/// An authenticated connection, ready for queries.
pub struct Connected {
    pub stream: Stream,
    /// Bytes received after the first `ReadyForQuery`: they belong to the relay.
    pub leftover: BytesMut,
    /// The server's `ParameterStatus` (and any `NoticeResponse`) frames, verbatim, in order.
    pub parameters: BytesMut,
    /// The server's `BackendKeyData` (pid, secret), needed to cancel.
    pub key: Option<(i32, i32)>,
    /// Transaction status of the first `ReadyForQuery`.
    pub status: u8,
}

/// Reads one typed message: `(type, whole frame)`. The frame is split off `buf`.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<(u8, BytesMut), ReadError> {
    loop {
        if let Some((tag, total)) = frame::header(buf, max)? {
            if buf.len() >= total {
                return Ok((tag, buf.split_to(total)));
            }
            buf.reserve(total - buf.len());
        }
        if r.read_buf(buf).await? == 0 {
            return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// A failed [`read_message`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl From<ReadError> for UpstreamError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => UpstreamError::Io(e),
            ReadError::Frame(e) => e.into(),
        }
    }
}

/// Opens TCP (and TLS per `tls`) to `host:port`, or the Unix socket `host/.s.PGSQL.port` when
/// `host` names a directory ([`Host::parse`]; TLS does not apply there, as with libpq).
pub async fn open(host: &str, port: u16, tls: &UpstreamTls) -> Result<Stream, UpstreamError> {
    if let Host::Unix(dir) = Host::parse(host) {
        let path = dir.join(format!(".s.PGSQL.{port}"));
        return Ok(Stream::Unix(UnixStream::connect(&path).await?));
    }
    let mut tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    if *tls == UpstreamTls::Disable {
        return Ok(Stream::Plain(tcp));
    }
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match (answer[0], tls) {
        (b'S', _) => stream::connect_tls(tcp, host, tls)
            .await
            .map_err(|e| UpstreamError::Tls(e.to_string())),
        (b'N', UpstreamTls::Prefer) => Ok(Stream::Plain(tcp)),
        (b'N', _) => Err(UpstreamError::TlsRefused),
        (other, _) => Err(UpstreamError::Protocol(format!(
            "unexpected SSLRequest answer {other:#x}"
        ))),
    }
}

impl Upstream {
    /// The server, login and TLS a connection URL names, as [`ConnInfo::parse`] read it.
    pub fn from_conninfo(info: ConnInfo) -> Upstream {
        Upstream {
            host: info.host.to_host_string(),
            port: info.port,
            user: info.user,
            password: info.password.map(warden_core::secret::Secret::new),
            database: info.dbname,
            tls: UpstreamTls::new(info.sslmode, info.sslrootcert),
        }
    }
}

/// Connects and authenticates as `upstream.user`, passing `extra` startup parameters
/// (application_name, client_encoding, …) through.
pub async fn connect(
    upstream: &Upstream,
    extra: &[(String, String)],
) -> Result<Connected, UpstreamError> {
    let mut stream = open(&upstream.host, upstream.port, &upstream.tls).await?;
    let mut out = BytesMut::new();
    let mut params: Vec<(&str, &str)> =
        vec![("user", &upstream.user), ("database", &upstream.database)];
    params.extend(
        extra
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "user" | "database") && !k.starts_with("_pq_."))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    frontend::startup_message(params, &mut out)?;
    stream.write_all(&out).await?;
    stream.flush().await?;

    let mut buf = BytesMut::with_capacity(8192);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = BytesMut::new();
    let mut key = None;
    loop {
        let (tag, msg) = read_message(&mut stream, &mut buf, MAX_STARTUP_MESSAGE).await?;
        let body = &msg[5..];
        match tag {
            b'R' => {
                let reply = authenticate(upstream, body, &mut scram)?;
                if let Some(reply) = reply {
                    stream.write_all(&reply).await?;
                    stream.flush().await?;
                }
            }
            b'S' | b'N' => parameters.extend_from_slice(&msg),
            b'K' if body.len() == 8 => {
                let mut b = body;
                key = Some((b.get_i32(), b.get_i32()));
            }
            b'v' => {} // NegotiateProtocolVersion: we asked for 3.0, nothing to adjust.
            b'Z' if body.len() == 1 => {
                return Ok(Connected {
                    stream,
                    leftover: buf,
                    parameters,
                    key,
                    status: body[0],
                });
            }
            b'E' => {
                let f = error_fields(body);
                return Err(UpstreamError::Server {
                    code: field(&f, b'C').unwrap_or("").to_string(),
                    message: field(&f, b'M').unwrap_or("").to_string(),
                    frame: msg,
                });
            }
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message {} during startup",
                    frame::TypeByte(other)
                )));
            }
        }
    }
}

/// Answers one `Authentication*` request; `None` when nothing is to be sent.
fn authenticate(
    upstream: &Upstream,
    mut body: &[u8],
    scram: &mut Option<ScramSha256>,
) -> Result<Option<BytesMut>, UpstreamError> {
    if body.len() < 4 {
        return Err(FrameError::Malformed("Authentication").into());
    }
    let code = body.get_i32();
    let password = || {
        upstream
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes())
            .ok_or(UpstreamError::PasswordRequired)
    };
    let mut out = BytesMut::new();
    match code {
        0 => return Ok(None),
        3 => frontend::password_message(password()?, &mut out)?,
        5 => {
            if body.len() < 4 {
                return Err(FrameError::Malformed("AuthenticationMD5Password").into());
            }
            let salt = [body[0], body[1], body[2], body[3]];
            let hash = postgres_protocol::authentication::md5_hash(
                upstream.user.as_bytes(),
                password()?,
                salt,
            );
            frontend::password_message(hash.as_bytes(), &mut out)?;
        }
        10 => {
            let mut offered = Vec::new();
            let mut rest = body;
            while let Some((m, tail)) = cstr(rest) {
                if m.is_empty() {
                    break;
                }
                offered.push(lossy(m));
                rest = tail;
            }
            if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                return Err(UpstreamError::UnsupportedAuth(offered.join(", ")));
            }
            // Channel binding is not implemented: say so ('n'), which servers accept.
            let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
            frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out)?;
            *scram = Some(s);
        }
        11 => {
            let s = scram
                .as_mut()
                .ok_or_else(|| UpstreamError::Protocol("SASLContinue before SASL".into()))?;
            s.update(body)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            frontend::sasl_response(s.message(), &mut out)?;
        }
        12 => {
            let mut s = scram
                .take()
                .ok_or_else(|| UpstreamError::Protocol("SASLFinal before SASL".into()))?;
            s.finish(body)
                .map_err(|e| UpstreamError::Protocol(format!("server signature: {e}")))?;
            return Ok(None);
        }
        other => return Err(UpstreamError::UnsupportedAuth(format!("code {other}"))),
    }
    Ok(Some(out))
}

/// Sends a `CancelRequest` for `(pid, secret)` to a server, over TLS when `tls` asks for it.
pub async fn cancel(
    host: &str,
    port: u16,
    tls: &UpstreamTls,
    pid: i32,
    secret: i32,
) -> Result<(), UpstreamError> {
    let mut stream = open(host, port, tls).await?;
    let mut out = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    // The server closes without answering; wait for that so the request is surely read.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut sink)).await;
    Ok(())
}

/// Writes everything and flushes (TLS buffers until flushed).
pub(crate) async fn send<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    bytes: &[u8],
) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
