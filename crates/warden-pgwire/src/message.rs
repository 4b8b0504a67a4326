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
    pub const SYSTEM_ERROR: &str = "58000";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
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

/// Frontend `Query` with `sql` (the proxy's own statements: read-write toggles, refusals).
pub fn query(sql: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(6 + sql.len());
    let at = begin(&mut b, b'Q');
    put_cstr(&mut b, sql);
    finish(&mut b, at);
    b
}

/// Frontend `Parse` of the unnamed statement with no parameter types, then `Sync`.
pub fn parse_unnamed_and_sync(sql: &str) -> BytesMut {
    let mut b = BytesMut::with_capacity(16 + sql.len());
    let at = begin(&mut b, b'P');
    b.put_u8(0);
    put_cstr(&mut b, sql);
    b.put_i16(0);
    finish(&mut b, at);
    b.extend_from_slice(&SYNC);
    b
}

/// A `ParameterStatus` body: name and value.
pub fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((lossy(name), lossy(value)))
}

/// Frontend `Sync`.
pub const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

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

/// A `Parse` body: statement name and query text.
pub fn parse_parts(body: &[u8]) -> Result<(&[u8], String), FrameError> {
    let (name, rest) = cstr(body).ok_or(FrameError::Malformed("Parse"))?;
    let (text, _) = cstr(rest).ok_or(FrameError::Malformed("Parse"))?;
    Ok((name, lossy(text)))
}

/// The portal and statement names at the start of a `Bind` body; a prefix of the body is
/// enough. `None` when the names are not all there (or not terminated).
pub fn bind_names(head: &[u8]) -> Option<(&[u8], &[u8])> {
    let (portal, rest) = cstr(head)?;
    let (statement, _) = cstr(rest)?;
    Some((portal, statement))
}

/// Bytes of one parameter shown to a reviewer before the value is cut.
const PARAM_SHOWN: usize = 1024;

/// The parameters of a whole `Bind` body, rendered for a reviewer and the audit trail:
/// `$1 = '42', $2 = NULL, $3 = '\x0102'` (text values as SQL literals, binary ones as hex;
/// a value above 1 KiB is cut with its full length noted). Empty when there are none.
pub fn bind_params(body: &[u8]) -> Result<String, FrameError> {
    const BAD: FrameError = FrameError::Malformed("Bind");
    let (_, rest) = cstr(body).ok_or(BAD)?;
    let (_, mut rest) = cstr(rest).ok_or(BAD)?;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        if rest.len() < n {
            return Err(BAD);
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let nformats = usize::try_from(i16_at(take(2)?)).map_err(|_| BAD)?;
    let mut formats = Vec::with_capacity(nformats);
    for _ in 0..nformats {
        formats.push(i16_at(take(2)?));
    }
    let nparams = usize::try_from(i16_at(take(2)?)).map_err(|_| BAD)?;
    let mut out = String::new();
    for i in 0..nparams {
        let b = take(4)?;
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("${} = ", i + 1));
        if len < 0 {
            out.push_str("NULL");
            continue;
        }
        let value = take(len as usize)?;
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i).copied().unwrap_or(0) == 1,
        };
        let shown = &value[..value.len().min(PARAM_SHOWN)];
        if binary {
            out.push_str("'\\x");
            out.push_str(&hex_lower(shown));
            out.push('\'');
            // Drivers send strings in binary format too: show them readably as well.
            if let Ok(text) = std::str::from_utf8(shown)
                && !text.is_empty()
                && !text.chars().any(char::is_control)
            {
                out.push_str(&format!(
                    " (binary; as text '{}')",
                    text.replace('\'', "''")
                ));
            }
        } else {
            out.push('\'');
            out.push_str(&lossy(shown).replace('\'', "''"));
            out.push('\'');
        }
        if shown.len() < value.len() {
            out.push_str(&format!(" (cut: {} bytes in all)", value.len()));
        }
    }
    Ok(out)
}

fn hex_lower(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(DIGITS[usize::from(c >> 4)] as char);
        s.push(DIGITS[usize::from(c & 15)] as char);
    }
    s
}

/// The portal name of an `Execute` body.
pub fn execute_portal(body: &[u8]) -> Result<&[u8], FrameError> {
    Ok(cstr(body).ok_or(FrameError::Malformed("Execute"))?.0)
}

/// A `Close` or `Describe` body: `b'S'` (statement) or `b'P'` (portal), and the name.
pub fn target(body: &[u8]) -> Result<(u8, &[u8]), FrameError> {
    let (&kind, rest) = body
        .split_first()
        .ok_or(FrameError::Malformed("Close/Describe"))?;
    let (name, _) = cstr(rest).ok_or(FrameError::Malformed("Close/Describe"))?;
    Ok((kind, name))
}

/// Builds a frontend message whose body starts with `kind` (0 = none), then the NUL-terminated
/// `name`, then `rest` as is: how the proxy renames statements in `Parse`, `Bind`, `Describe`
/// and `Close`.
pub fn rebuild(tag: u8, kind: u8, name: &[u8], rest: &[u8]) -> BytesMut {
    let mut b = BytesMut::with_capacity(7 + name.len() + rest.len());
    let at = begin(&mut b, tag);
    if kind != 0 {
        b.extend_from_slice(&[kind]);
    }
    b.extend_from_slice(name);
    b.extend_from_slice(&[0]);
    b.extend_from_slice(rest);
    finish(&mut b, at);
    b
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
        assert_eq!(parse_parts(b"s1\0select $1\0\0\0").unwrap().0, b"s1");
        assert_eq!(bind_names(b"p\0s1\0\0\0"), Some((&b"p"[..], &b"s1"[..])));
        assert_eq!(bind_names(b"p\0s1"), None);
        assert_eq!(execute_portal(b"p\0\0\0\0\0").unwrap(), b"p");
        assert_eq!(target(b"Ss1\0").unwrap(), (b'S', &b"s1"[..]));
        assert!(target(b"").is_err());
    }

    #[test]
    fn bind_parameters_render_for_reviewers() {
        // portal "", statement "s", formats [0, 0, 1], 3 params: 'it''s', NULL, binary 0x01ff
        let mut b = b"\0s\0".to_vec();
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.extend_from_slice(&4i32.to_be_bytes());
        b.extend_from_slice(b"it's");
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(&[0x01, 0xff]);
        b.extend_from_slice(&0i16.to_be_bytes());
        assert_eq!(
            bind_params(&b).unwrap(),
            "$1 = 'it''s', $2 = NULL, $3 = '\\x01ff'"
        );
        let mut b = b[..b.len() - 2 - 2 - 4].to_vec();
        b.extend_from_slice(&2i32.to_be_bytes());
        b.extend_from_slice(b"ok");
        b.extend_from_slice(&0i16.to_be_bytes());
        assert_eq!(
            bind_params(&b).unwrap(),
            "$1 = 'it''s', $2 = NULL, $3 = '\\x6f6b' (binary; as text 'ok')"
        );
        // Truncated or lying lengths are malformed, never a panic.
        for cut in 0..b.len() - 2 {
            let _ = bind_params(&b[..cut]);
        }
        let mut lying = b.clone();
        lying[9..13].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(bind_params(&lying).is_err());
        let framed = rebuild(b'B', 0, b"", &[&b"_warden_1\0"[..], &b[3..]].concat());
        assert_eq!(framed[0], b'B');
        assert_eq!(
            bind_names(&framed[5..]),
            Some((&b""[..], &b"_warden_1"[..]))
        );
    }
}
