//! The handful of wire messages the proxy reads or writes itself; everything else is relayed as
//! bytes and never decoded.
//!
//! Readers take a frame body (as [`crate::frame`] hands it out) and validate it once; writers
//! append a complete frame to a buffer so a message is always written whole.

use bytes::{BufMut, BytesMut};

use crate::frame::{FrameError, cstr, lossy};

/// Backend `ErrorResponse`/`NoticeResponse` severities the proxy uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// SQLSTATE codes the proxy emits.
pub mod sqlstate {
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const SUCCESSFUL_COMPLETION: &str = "00000";
}

fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early and corrupt the frame: drop it.
    buf.extend(s.bytes().filter(|&b| b != 0));
    buf.put_u8(0);
}

/// `ErrorResponse` (or `NoticeResponse` for [`Severity::Notice`]) with severity, SQLSTATE and
/// message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let tag = if severity == Severity::Notice {
        b'N'
    } else {
        b'E'
    };
    let at = begin(buf, tag);
    for (field, value) in [
        (b'S', severity.as_str()),
        (b'V', severity.as_str()),
        (b'C', code),
        (b'M', message),
    ] {
        buf.put_u8(field);
        put_cstr(buf, value);
    }
    buf.put_u8(0);
    finish(buf, at);
}

/// A complete `ErrorResponse` frame as its own buffer.
pub fn error_frame(severity: Severity, code: &str, message: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(64 + message.len());
    error_response(&mut b, severity, code, message);
    b
}

/// `ReadyForQuery` with a transaction status (`I`, `T` or `E`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    finish(buf, at);
}

/// `AuthenticationOk` (0) or `AuthenticationCleartextPassword` (3).
pub fn authentication(buf: &mut BytesMut, code: i32) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    finish(buf, at);
}

/// `BackendKeyData`.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    finish(buf, at);
}

/// `NegotiateProtocolVersion`: the newest minor version supported and the options not understood.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unsupported: &[String]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(buf, o);
    }
    finish(buf, at);
}

/// Frontend `Terminate`.
pub const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// The text of a `Query` body.
pub fn query_text(body: &[u8]) -> Result<String, FrameError> {
    let (text, _) = cstr(body).ok_or(FrameError::Malformed("Query"))?;
    Ok(lossy(text))
}

/// The query text of a `Parse` body (statement name, then query).
pub fn parse_text(body: &[u8]) -> Result<String, FrameError> {
    let (_name, rest) = cstr(body).ok_or(FrameError::Malformed("Parse"))?;
    let (text, _) = cstr(rest).ok_or(FrameError::Malformed("Parse"))?;
    Ok(lossy(text))
}

/// The tag of a `CommandComplete` body.
pub fn command_tag(body: &[u8]) -> String {
    match cstr(body) {
        Some((t, _)) => lossy(t),
        None => lossy(body),
    }
}

/// Fields of an `ErrorResponse`/`NoticeResponse` body: `(code, value)` pairs.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some((value, tail)) = cstr(tail) else {
            break;
        };
        out.push((code, lossy(value)));
        rest = tail;
    }
    out
}

/// One field of a parsed `ErrorResponse`.
pub fn field(fields: &[(u8, String)], code: u8) -> Option<&str> {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::whole;

    #[test]
    fn error_round_trip() {
        let mut b = BytesMut::new();
        error_response(&mut b, Severity::Fatal, "28P01", "bad\0 password");
        let (tag, body, len) = whole(&b, 1000).unwrap().unwrap();
        assert_eq!((tag, len), (b'E', b.len()));
        let f = error_fields(body);
        assert_eq!(field(&f, b'S'), Some("FATAL"));
        assert_eq!(field(&f, b'C'), Some("28P01"));
        assert_eq!(field(&f, b'M'), Some("bad password"));
    }

    #[test]
    fn texts() {
        assert_eq!(query_text(b"select 1\0").unwrap(), "select 1");
        assert!(query_text(b"select 1").is_err());
        assert_eq!(parse_text(b"s1\0select $1\0\0\0").unwrap(), "select $1");
        assert_eq!(command_tag(b"UPDATE 3\0"), "UPDATE 3");
    }
}
