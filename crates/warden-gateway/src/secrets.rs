//! Connection secrets at rest: XChaCha20-Poly1305 with a random 24-byte nonce and the connection
//! name as associated data (a ciphertext copied onto another connection does not decrypt).
//! Stored format: `key_id (8 bytes) ‖ nonce (24) ‖ ciphertext`.
//!
//! The key comes from `WARDEN_SECRET_KEY` (32 bytes, base64 or hex) or a key file created in the
//! data dir with mode 0600. This module never logs or returns plaintext except to executors and
//! proxies, through [`ConnectionSecrets`] whose Debug is redacted.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_core::secret::Secret;

/// The secret parts of a connection, decrypted only to run a command or open an upstream.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ConnectionSecrets {
    /// The full target URL including its password.
    pub url: Option<String>,
    /// Env vars for `command` connections.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for ConnectionSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionSecrets(<secret>)")
    }
}

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key_id: [u8; 8],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBox(key_id={})", hex::encode(self.key_id))
    }
}

fn decode_key(text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| anyhow!("WARDEN_SECRET_KEY must be 32 bytes, base64 or hex encoded"))?
    };
    bytes
        .try_into()
        .map_err(|_| anyhow!("WARDEN_SECRET_KEY must decode to exactly 32 bytes"))
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> SecretBox {
        let id = Sha256::digest(key);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&id[..8]);
        SecretBox {
            cipher: XChaCha20Poly1305::new(&key.into()),
            key_id,
        }
    }

    /// From the configured key, or the data dir's key file (created on first start).
    pub fn load(configured: Option<&Secret<String>>, data_dir: &Path) -> Result<SecretBox> {
        if let Some(k) = configured {
            return Ok(SecretBox::new(decode_key(k.expose())?));
        }
        let path = data_dir.join("secret.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading key file {}", path.display()))?;
            return Ok(SecretBox::new(decode_key(&text)?));
        }
        crate::datadir::create_private_dir(data_dir)?;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let encoded = base64::engine::general_purpose::STANDARD.encode(key);
        write_private(&path, &encoded)?;
        Ok(SecretBox::new(key))
    }

    pub fn seal(&self, aad: &str, secrets: &ConnectionSecrets) -> Result<Vec<u8>> {
        let plain = serde_json::to_vec(secrets)?;
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(8 + 24 + ct.len());
        out.extend_from_slice(&self.key_id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, aad: &str, blob: &[u8]) -> Result<ConnectionSecrets> {
        if blob.is_empty() {
            return Ok(ConnectionSecrets::default());
        }
        if blob.len() < 32 {
            bail!("stored secret is truncated");
        }
        if blob[..8] != self.key_id {
            bail!("connection secrets were encrypted with another key (check WARDEN_SECRET_KEY)");
        }
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&blob[8..32]),
                Payload {
                    msg: &blob[32..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow!("connection secrets failed authentication (tampered or wrong key)")
            })?;
        Ok(serde_json::from_slice(&plain)?)
    }
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = crate::datadir::create_private(path).context("creating the key file")?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing key file {}", path.display()))?;
    Ok(())
}

/// True for a URL query parameter whose value is a secret: `password`, `sslpassword`, `pass`,
/// `passwd`, `pwd`, or any key containing "password", "secret" or "token" (case-insensitive).
fn secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(k.as_str(), "pass" | "passwd" | "pwd")
        || ["password", "secret", "token"]
            .iter()
            .any(|w| k.contains(w))
}

/// `postgres://user:pass@host/db?password=x` → `postgres://user:***@host/db?password=***` (for
/// display, the API and the audit log): the userinfo password and every secret query value
/// ([`secret_param`]) become `***`; everything else is kept as written.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if let Some(query) = u.query().map(str::to_string) {
                let redacted: Vec<String> = query
                    .split('&')
                    .map(|pair| {
                        let key = pair.split('=').next().unwrap_or_default();
                        let decoded: String = url::form_urlencoded::parse(key.as_bytes())
                            .map(|(k, _)| k.into_owned())
                            .collect();
                        if secret_param(&decoded) {
                            format!("{key}=***")
                        } else {
                            pair.to_string()
                        }
                    })
                    .collect();
                u.set_query(Some(&redacted.join("&")));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let b = SecretBox::new([7u8; 32]);
        let s = ConnectionSecrets {
            url: Some("postgres://u:p@h/db".into()),
            env: vec![("K".into(), "V".into())],
        };
        let blob = b.seal("pg", &s).unwrap();
        assert!(!String::from_utf8_lossy(&blob).contains("postgres://"));
        assert_eq!(
            b.open("pg", &blob).unwrap().url.as_deref(),
            Some("postgres://u:p@h/db")
        );
        assert!(b.open("other", &blob).is_err(), "aad binds the name");
        let mut t = blob.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(b.open("pg", &t).is_err());
        assert!(SecretBox::new([8u8; 32]).open("pg", &blob).is_err());
        assert_eq!(format!("{s:?}"), "ConnectionSecrets(<secret>)");
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(None, dir.path()).unwrap();
        let b = SecretBox::load(None, dir.path()).unwrap();
        let blob = a.seal("x", &ConnectionSecrets::default()).unwrap();
        assert!(b.open("x", &blob).is_ok());
        assert!(decode_key("short").is_err());
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }

    #[test]
    fn query_string_secrets_are_redacted() {
        for (url, shown) in [
            (
                "postgres://u@h/db?password=hunter2",
                "postgres://u@h/db?password=***",
            ),
            (
                "postgres://u:p@h/db?sslmode=require&sslpassword=k&application_name=x",
                "postgres://u:***@h/db?sslmode=require&sslpassword=***&application_name=x",
            ),
            (
                "mysql://h/db?pass=a&PWD=b&api_token=c&client_secret=d&Password=e&user=f",
                "mysql://h/db?pass=***&PWD=***&api_token=***&client_secret=***&Password=***&user=f",
            ),
            // Percent-encoded keys are matched decoded.
            (
                "postgres://h/db?pass%77ord=x",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "postgres://h/db?sslmode=disable",
                "postgres://h/db?sslmode=disable",
            ),
            (
                "sqlite:///var/app.db?mode=ro",
                "sqlite:///var/app.db?mode=ro",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        // Idempotent: re-redacting a shown URL changes nothing.
        let once = redact_url("postgres://u:p@h/db?password=x");
        assert_eq!(redact_url(&once), once);
    }
}
