//! `application/x-www-form-urlencoded` bodies as an ordered list of pairs, so repeated keys
//! (checkbox groups, multi-selects) survive; with small typed getters for the pages.
//!
//! # What it must never do
//! Accept an unbounded body (the limit is [`MAX_FORM_BYTES`]) or interpret values: pages decide
//! what a value means and the `App` use cases validate it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Largest form accepted (a command may be up to 256 KiB, percent-encoding can triple it).
pub const MAX_FORM_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form {
            pairs: url::form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, or "".
    pub fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    /// The first value of `key` trimmed, `None` when blank.
    pub fn opt(&self, key: &str) -> Option<String> {
        self.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Every value of `key`, in order.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A checkbox: present and not "false"/"off"/"0".
    pub fn checked(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| !matches!(v, "" | "false" | "off" | "0"))
    }

    /// A comma/space/newline-separated list (group names), blanks dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        split_list(&self.all(key).join(","))
    }
}

/// Splits `a, b c\nd` into `[a, b, c, d]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("form rejected: {}", e.body_text()),
            )
                .into_response()
        })?;
        if bytes.len() > MAX_FORM_BYTES {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response());
        }
        Ok(Form::parse(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_lists_and_checkboxes() {
        let f = Form::parse(b"a=1&c=x&c=y&g=dba%2C+sec%0Aops&on=on&off=&t=+hi+");
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.all("c"), vec!["x", "y"]);
        assert_eq!(f.list("g"), vec!["dba", "sec", "ops"]);
        assert!(f.checked("on") && !f.checked("off") && !f.checked("missing"));
        assert_eq!(f.opt("t").as_deref(), Some("hi"));
        assert_eq!(f.opt("off"), None);
        assert_eq!(f.str("missing"), "");
    }
}
