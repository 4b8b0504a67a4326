//! Standard Webhooks signing (<https://www.standardwebhooks.com>): every request carries
//! `webhook-id` (stable across retries of one message), `webhook-timestamp` (unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key is
//! the base64-decoded part of the endpoint's `whsec_…` secret.
//!
//! # What it must never do
//! Log or return a secret after creation, or accept a secret too short to be one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;

pub const SECRET_PREFIX: &str = "whsec_";
/// The spec asks for 24 to 64 bytes of key material.
const MIN_KEY: usize = 24;
const MAX_KEY: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "the webhook secret must be whsec_ followed by base64 (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)"
    )]
    NotBase64,
    #[error("the webhook secret must decode to 24..64 bytes (it decodes to {0})")]
    BadLength(usize),
}

/// The key bytes of a `whsec_…` secret (the prefix is optional, as in the reference libraries).
pub fn parse_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let s = secret.trim();
    let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
    let key = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
    if !(MIN_KEY..=MAX_KEY).contains(&key.len()) {
        return Err(SecretError::BadLength(key.len()));
    }
    Ok(key)
}

/// A fresh `whsec_…` secret (32 random bytes).
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// `v1,<base64 signature>` of one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vector() {
        // The example of the Standard Webhooks reference implementations.
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(parse_secret("whsec_c2hvcnQ=").is_err());
        assert!(parse_secret("whsec_!!!").is_err());
        let g = generate_secret();
        assert!(g.starts_with(SECRET_PREFIX) && parse_secret(&g).is_ok());
    }
}
