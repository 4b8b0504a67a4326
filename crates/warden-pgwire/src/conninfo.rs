//! One PostgreSQL connection spec for every client the gateway opens: the executor
//! (`warden-exec`) and the proxy's upstream ([`crate::Upstream`]) read a connection's URL
//! through [`ConnInfo::parse`] and secure it through [`tls_client_config`], so both reach the
//! same server the same way and honour every `sslmode` alike.
//!
//! `sslmode` follows libpq: `disable`; `allow`/`prefer` = TLS when the server offers it;
//! `require` = TLS without certificate checks; `verify-ca` = the chain is checked against
//! `sslrootcert` (default `~/.postgresql/root.crt`), the host name is not; `verify-full` = the
//! chain and the host name. Nothing is downgraded: a server that refuses TLS fails `require`
//! and both `verify-*`.
//!
//! # What it must never do
//! Quote the URL in an error (it may hold a password), accept a parameter it does not
//! understand (a typo must not silently weaken a connection), or verify less than asked.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;

/// The connect timeout when the URL names none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Tcp(String),
    /// Directory holding the server's socket (`/var/run/postgresql`).
    Unix(PathBuf),
}

impl Host {
    /// libpq's reading of a host: empty is `localhost`, one that starts with `/` is the
    /// directory of a Unix socket, anything else a TCP host name or address.
    pub fn parse(host: &str) -> Host {
        if host.is_empty() {
            Host::Tcp("localhost".into())
        } else if host.starts_with('/') {
            Host::Unix(PathBuf::from(host))
        } else {
            Host::Tcp(host.to_string())
        }
    }

    /// The form [`Host::parse`] reads back (what `Upstream::host` holds).
    pub fn to_host_string(&self) -> String {
        match self {
            Host::Tcp(h) => h.clone(),
            Host::Unix(dir) => dir.display().to_string(),
        }
    }
}

/// A parsed connection URL. `Debug` never shows the password.
#[derive(Clone)]
pub struct ConnInfo {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    pub options: Option<String>,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("endpoint", &self.endpoint())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl ConnInfo {
    /// `host:port` or the socket path: safe to show (no credentials).
    pub fn endpoint(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }
}

fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "the connection URL holds invalid percent-encoded UTF-8".to_string())
}

impl ConnInfo {
    /// Parses a libpq-style URL (`postgres://user:pass@host:port/db?sslmode=require`). Errors never
    /// quote the URL (it may hold a password).
    pub fn parse(raw: &str) -> Result<ConnInfo, String> {
        let url =
            url::Url::parse(raw).map_err(|e| format!("invalid PostgreSQL connection URL ({e})"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!(
                "invalid PostgreSQL connection URL: scheme must be postgres:// or postgresql://, not {}://",
                url.scheme()
            ));
        }
        let mut user = decode(url.username())?;
        let mut password = url.password().map(decode).transpose()?;
        let mut host = match url.host_str() {
            Some(h) => decode(h.trim_start_matches('[').trim_end_matches(']'))?,
            None => String::new(),
        };
        let mut port = url.port().unwrap_or(5432);
        let mut dbname = decode(url.path().trim_start_matches('/'))?;
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        let mut application_name = "warden".to_string();
        let mut options = None;
        let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;

        for (k, v) in url.query_pairs() {
            let v = v.into_owned();
            match k.as_ref() {
                "user" => user = v,
                "password" => password = Some(v),
                "dbname" => dbname = v,
                "host" => host = v,
                "port" => {
                    port = v
                        .parse()
                        .map_err(|_| format!("invalid port in PostgreSQL connection URL: {v}"))?
                }
                "sslmode" => {
                    sslmode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "invalid sslmode in PostgreSQL connection URL: {other}"
                            ));
                        }
                    }
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v)),
                "application_name" => application_name = v,
                "options" => options = Some(v),
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| {
                        format!("invalid connect_timeout in PostgreSQL connection URL: {v}")
                    })?;
                    if secs > 0 {
                        connect_timeout = Duration::from_secs(secs.max(2));
                    }
                }
                // Accepted and ignored: only one host is ever tried.
                "target_session_attrs" | "sslnegotiation" => {}
                other => {
                    return Err(format!(
                        "unsupported parameter in PostgreSQL connection URL: {other}"
                    ));
                }
            }
        }
        if user.is_empty() {
            return Err("the PostgreSQL connection URL has no user name".into());
        }
        if dbname.is_empty() {
            dbname = user.clone();
        }
        let host = Host::parse(&host);
        Ok(ConnInfo {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            options,
            connect_timeout,
        })
    }
}

impl SslMode {
    /// The URL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
    /// True when a server that answers `N` to the SSL request must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// The name TLS checks the certificate against (`verify-full`) and sends as SNI.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|_| format!("invalid host name for TLS: {host}"))
}

/// The TLS client configuration for `sslmode` (with `sslrootcert` for `verify-*`). The
/// encrypt-only configuration of `prefer`/`require` is built once and shared.
pub fn tls_client_config(
    sslmode: SslMode,
    sslrootcert: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    static ENCRYPT_ONLY: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    match sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => tls_config(sslmode, sslrootcert).map(Arc::new),
        SslMode::Disable | SslMode::Prefer | SslMode::Require => ENCRYPT_ONLY
            .get_or_init(|| tls_config(SslMode::Require, None).map(Arc::new))
            .clone(),
    }
}

fn tls_config(
    sslmode: SslMode,
    sslrootcert: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut config = match sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let path = match sslrootcert {
                Some(p) => p.to_path_buf(),
                None => std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                    .ok_or_else(|| "sslmode=verify-* needs sslrootcert=<file>".to_string())?,
            };
            let roots = load_roots(&path)?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS setup failed: {e}"))?;
            let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
                if sslmode == SslMode::VerifyCa {
                    Arc::new(tls::ChainOnly(webpki))
                } else {
                    webpki
                };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(tls::NoCertCheck(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config)
}

fn load_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read root certificate {}: {e}", path.display()))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| format!("cannot read root certificate {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("invalid root certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(roots)
}

mod tls {
    //! Certificate verifiers for `sslmode=require` (encrypt only, like libpq) and `verify-ca`
    //! (chain checked, host name not).
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use std::sync::Arc;

    #[derive(Debug)]
    pub(super) struct NoCertCheck(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for NoCertCheck {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    #[derive(Debug)]
    pub(super) struct ChainOnly(pub(super) Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(Error::InvalidCertificate(CertificateError::NotValidForName))
                | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    ..
                })) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let i = ConnInfo::parse(
            "postgres://bob:p%40ss@db.example:6543/app?sslmode=require&application_name=x",
        )
        .unwrap();
        assert_eq!(i.host, Host::Tcp("db.example".into()));
        assert_eq!(
            (i.port, i.user.as_str(), i.password.as_deref()),
            (6543, "bob", Some("p@ss"))
        );
        assert_eq!(
            (i.dbname.as_str(), i.sslmode, i.application_name.as_str()),
            ("app", SslMode::Require, "x")
        );
        let i = ConnInfo::parse("postgresql://u@[::1]/").unwrap();
        assert_eq!(
            (i.host, i.port, i.dbname.as_str()),
            (Host::Tcp("::1".into()), 5432, "u")
        );
        let i = ConnInfo::parse("postgres:///db?host=/var/run/postgresql&user=me").unwrap();
        assert_eq!(i.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(i.endpoint(), "/var/run/postgresql/.s.PGSQL.5432");
        assert!(
            ConnInfo::parse("postgres://u:secret@h/db?bogus=1")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(
            !ConnInfo::parse("mysql://u:secret@h/db")
                .unwrap_err()
                .contains("secret")
        );
        assert!(ConnInfo::parse("postgres://h/db").is_err(), "no user");
    }

    #[test]
    fn every_sslmode_is_kept_as_written() {
        for (mode, want) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Prefer),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let i = ConnInfo::parse(&format!("postgres://u@h/db?sslmode={mode}")).unwrap();
            assert_eq!(i.sslmode, want, "{mode}");
        }
        assert!(ConnInfo::parse("postgres://u@h/db?sslmode=verify_full").is_err());
        let i = ConnInfo::parse("postgres://u@h/db").unwrap();
        assert_eq!(i.sslmode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn verify_modes_need_a_readable_root() {
        let missing = std::path::Path::new("/nonexistent/root.crt");
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = tls_client_config(mode, Some(missing)).unwrap_err();
            assert!(e.contains("cannot read root certificate"), "{e}");
        }
        assert!(tls_client_config(SslMode::Require, None).is_ok());
    }
}
