//! `warden connect`'s local tunnel: a listener on the user's machine that logs in to the
//! gateway's PostgreSQL listener with the user's email and API token, then splices bytes.
//!
//! Local clients need no token: whatever user and password they give are ignored (the client is
//! never even asked for a password). The tunnel never inspects or changes statements; the
//! gateway enforces everything.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};
use warden_core::secret::Secret;

use crate::backend::{Upstream, UpstreamTls};
use crate::frame::{self, StartupPacket};
use crate::message::{self, Severity, sqlstate};
use crate::upstream::{self, UpstreamError};

/// The gateway's PostgreSQL listener as the user named it: `host` is what TCP resolves and what
/// TLS verifies (`verify-full` checks the certificate names it), so it stays a name, not the
/// address it resolved to.
#[derive(Clone, Debug)]
pub struct GatewayAddr {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for GatewayAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for GatewayAddr {
    fn from(a: SocketAddr) -> Self {
        GatewayAddr {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// Where and as whom the tunnel logs in.
#[derive(Clone, Debug)]
struct Target {
    gateway: GatewayAddr,
    email: String,
    token: Secret<String>,
    connection: String,
    tls: UpstreamTls,
}

/// Accepts local clients on `listener` and tunnels each to the gateway's PostgreSQL listener at
/// `gateway`, logged in as `email` with `token`, on `connection`. `tls` applies to the gateway
/// hop: with `verify-full` the token is sent only to a server whose certificate chains to the
/// given root and names `gateway.host`. Runs until `shutdown` resolves.
pub async fn run_tunnel(
    listener: TcpListener,
    gateway: GatewayAddr,
    email: String,
    token: Secret<String>,
    connection: String,
    tls: UpstreamTls,
    shutdown: impl Future + Send,
) -> io::Result<()> {
    let target = std::sync::Arc::new(Target {
        gateway,
        email,
        token,
        connection,
        tls,
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let target = target.clone();
                    tokio::spawn(async move {
                        if let Err(e) = tunnel_one(tcp, &target).await {
                            debug!(%peer, "tunnel connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("tunnel accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn tunnel_one(mut client: TcpStream, target: &Target) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(1024);
    let params = loop {
        let packet = loop {
            match frame::startup(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Some((p, len)) => {
                    let _ = buf.split_to(len);
                    break p;
                }
                None => {
                    if client.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
            }
        };
        match packet {
            // The local hop stays on this machine: no TLS there; the gateway hop has its own.
            StartupPacket::Ssl | StartupPacket::GssEnc => client.write_all(b"N").await?,
            StartupPacket::Cancel { pid, secret } => {
                let gw = &target.gateway;
                return upstream::cancel(&gw.host, gw.port, &target.tls, pid, secret)
                    .await
                    .map_err(io::Error::other);
            }
            StartupPacket::Startup { params, .. } => break params,
        }
    };
    let upstream = Upstream {
        host: target.gateway.host.clone(),
        port: target.gateway.port,
        user: target.email.clone(),
        password: Some(target.token.clone()),
        database: target.connection.clone(),
        tls: target.tls.clone(),
    };
    let extra: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "password"))
        .collect();
    let mut gateway = match upstream::connect(&upstream, &extra).await {
        Ok(c) => c,
        Err(UpstreamError::Server { frame, .. }) => {
            // The gateway's own refusal (bad token, window over, …) is what the user must see.
            client.write_all(&frame).await?;
            return Ok(());
        }
        Err(e) => {
            let m = format!(
                "warden connect: could not log in to the gateway at {}: {e}",
                target.gateway
            );
            client
                .write_all(&message::error_frame(
                    Severity::Fatal,
                    sqlstate::CONNECTION_FAILURE,
                    &m,
                ))
                .await?;
            return Err(io::Error::other(e));
        }
    };
    let mut hello = BytesMut::new();
    message::authentication(&mut hello, 0);
    hello.extend_from_slice(&gateway.parameters);
    if let Some((pid, secret)) = gateway.key {
        // The gateway's key: a cancel sent to the tunnel is forwarded to the gateway as is.
        message::backend_key_data(&mut hello, pid, secret);
    }
    message::ready_for_query(&mut hello, gateway.status);
    hello.extend_from_slice(&gateway.leftover);
    client.write_all(&hello).await?;
    if !buf.is_empty() {
        gateway.stream.write_all(&buf).await?;
        gateway.stream.flush().await?;
    }
    tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut gateway.stream,
        64 * 1024,
        64 * 1024,
    )
    .await?;
    Ok(())
}
