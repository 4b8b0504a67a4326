//! Pure framing of the PostgreSQL wire protocol: no I/O, no allocation on the hot path.
//!
//! Two shapes exist on the wire: the untyped startup packets a client sends first
//! (`i32 length` + `i32 code` + body: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest)
//! and the typed messages after that (`u8 type` + `i32 length` + body, the length counting
//! itself but not the type byte). This module recognises both, checks every length against a
//! cap, and tells "need more bytes" (normal) apart from "broken input" (an error that ends the
//! session). It must never panic on any input: `fuzz/` feeds it arbitrary bytes.
//!
//! [`Scanner`] is what the relay uses: it walks a buffer frame by frame, hands back whole frames
//! only for the message types the caller inspects, and lets every other byte pass through
//! without being buffered, even when a frame is larger than the buffer.

use std::fmt;

/// `SSLRequest` code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest` code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// `CancelRequest` code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
/// PostgreSQL's own cap on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// Broken input: the session that sent it ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length smaller than the length field itself, or negative.
    #[error("invalid length {len} in a message of type {tag}")]
    BadLength { tag: TypeByte, len: i32 },
    /// A length above the configured cap.
    #[error("message of type {tag} is {len} bytes long, above the {max}-byte limit")]
    TooLarge {
        tag: TypeByte,
        len: usize,
        max: usize,
    },
    /// A body that does not match its message type.
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// A message type byte, printed as a character when it is one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeByte(pub u8);

impl fmt::Display for TypeByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", self.0 as char)
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

impl fmt::Debug for TypeByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn be_i32(b: &[u8]) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    i32::from_be_bytes(a)
}

/// Reads a typed message header at the start of `buf`.
///
/// Returns `Ok(None)` when fewer than 5 bytes are there, otherwise the type byte and the
/// total frame length (type byte included), checked against `max` (the body's cap).
pub fn header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = be_i32(&buf[1..5]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: TypeByte(tag),
            len,
        });
    }
    let body = len as usize - 4;
    if body > max {
        return Err(FrameError::TooLarge {
            tag: TypeByte(tag),
            len: body,
            max,
        });
    }
    Ok(Some((tag, 1 + len as usize)))
}

/// A whole typed message: `(type, body, total length)`.
pub type Whole<'a> = (u8, &'a [u8], usize);

/// A whole typed message at the start of `buf`, if all of it is there.
pub fn whole(buf: &[u8], max: usize) -> Result<Option<Whole<'_>>, FrameError> {
    match header(buf, max)? {
        Some((tag, total)) if buf.len() >= total => Ok(Some((tag, &buf[5..total], total))),
        _ => Ok(None),
    }
}

/// The first packet(s) of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// A StartupMessage: protocol version and its `name=value` parameters in order.
    Startup {
        version: i32,
        params: Vec<(String, String)>,
    },
}

/// Parses one startup packet at the start of `buf`: `Ok(None)` means "need more bytes",
/// otherwise the packet and its length.
pub fn startup(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be_i32(&buf[..4]);
    if len < 8 {
        return Err(FrameError::BadLength {
            tag: TypeByte(0),
            len,
        });
    }
    let len = len as usize;
    if len > MAX_STARTUP_PACKET {
        return Err(FrameError::TooLarge {
            tag: TypeByte(0),
            len,
            max: MAX_STARTUP_PACKET,
        });
    }
    if buf.len() < len {
        return Ok(None);
    }
    let code = be_i32(&buf[4..8]);
    let body = &buf[8..len];
    let packet = match code {
        SSL_REQUEST if body.is_empty() => StartupPacket::Ssl,
        GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEnc,
        CANCEL_REQUEST if body.len() == 8 => StartupPacket::Cancel {
            pid: be_i32(&body[..4]),
            secret: be_i32(&body[4..]),
        },
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST => {
            return Err(FrameError::Malformed("startup request"));
        }
        version if version >> 16 == 3 => StartupPacket::Startup {
            version,
            params: startup_params(body)?,
        },
        _ => {
            return Err(FrameError::Malformed(
                "startup (unsupported protocol version)",
            ));
        }
    };
    Ok(Some((packet, len)))
}

fn startup_params(mut body: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body).ok_or(FrameError::Malformed("startup"))?;
        if name.is_empty() {
            return if rest.is_empty() {
                Ok(params)
            } else {
                Err(FrameError::Malformed("startup"))
            };
        }
        let (value, rest) = cstr(rest).ok_or(FrameError::Malformed("startup"))?;
        params.push((lossy(name), lossy(value)));
        body = rest;
    }
}

/// Splits a NUL-terminated string off the front of `b`.
pub fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

/// Text from the wire; invalid UTF-8 is replaced rather than rejected (audit keeps what it can).
pub fn lossy(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// What the relay needs of one message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Nothing: the bytes pass through.
    Pass,
    /// The whole message (buffered until complete; capped by the scanner's `max`).
    Whole,
    /// The first `n` bytes of the body (or all of a shorter one); the rest passes through
    /// without being buffered.
    Head(usize),
}

/// One step of [`Scanner::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// This many bytes at the start of the input pass through untouched (whole uninspected
    /// frames or a piece of one).
    Pass(usize),
    /// A whole inspected frame at the start of the input.
    Frame { tag: u8, body: &'a [u8], len: usize },
    /// The start of a [`Look::Head`] frame: `head` is its first body bytes; `pass` bytes at the
    /// start of the input (the frame, or the part of it that has arrived) pass through.
    Head {
        tag: u8,
        head: &'a [u8],
        pass: usize,
    },
    /// Nothing more can be decided until more bytes arrive; `total` is the length of the
    /// inspected frame being waited for (0 when only a partial header is there).
    NeedMore { total: usize },
}

/// Walks a stream of typed messages. State between calls: how much of a passed-through frame
/// is still to come.
#[derive(Debug, Clone)]
pub struct Scanner {
    skip: usize,
    max: usize,
}

impl Scanner {
    /// `max` caps every frame's body length.
    pub fn new(max: usize) -> Self {
        Self { skip: 0, max }
    }

    /// True between frames (no passed-through frame is partly sent): the only points where
    /// the proxy may inject a message of its own.
    pub fn at_boundary(&self) -> bool {
        self.skip == 0
    }

    /// The next step over `buf` (the bytes not consumed yet). `look(tag)` says what the
    /// caller needs of each message type.
    pub fn next<'a>(
        &mut self,
        buf: &'a [u8],
        look: impl Fn(u8) -> Look,
    ) -> Result<Item<'a>, FrameError> {
        if self.skip > 0 {
            if buf.is_empty() {
                return Ok(Item::NeedMore { total: 0 });
            }
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Ok(Item::Pass(n));
        }
        let Some((tag, total)) = header(buf, self.max)? else {
            return Ok(Item::NeedMore { total: 0 });
        };
        match look(tag) {
            Look::Whole if buf.len() >= total => Ok(Item::Frame {
                tag,
                body: &buf[5..total],
                len: total,
            }),
            Look::Whole => Ok(Item::NeedMore { total }),
            Look::Head(n) => {
                let head_end = total.min(5 + n);
                if buf.len() < head_end {
                    return Ok(Item::NeedMore { total: head_end });
                }
                let pass = total.min(buf.len());
                self.skip = total - pass;
                Ok(Item::Head {
                    tag,
                    head: &buf[5..head_end],
                    pass,
                })
            }
            Look::Pass if buf.len() >= total => Ok(Item::Pass(total)),
            Look::Pass => {
                self.skip = total - buf.len();
                Ok(Item::Pass(buf.len()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn header_checks_length() {
        assert_eq!(header(b"Q\0\0", 10), Ok(None));
        assert!(matches!(
            header(b"Q\0\0\0\x03", 10),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\xff\xff\xff\xff", 10),
            Err(FrameError::BadLength { .. })
        ));
        assert!(matches!(
            header(b"Q\0\0\0\x20", 10),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(header(b"Q\0\0\0\x05x", 10), Ok(Some((b'Q', 6))));
    }

    #[test]
    fn scanner_peeks_at_heads_and_streams_the_rest() {
        let mut buf = msg(b'B', &[b'p', 0, b's', 0, 9, 9, 9, 9, 9, 9]);
        buf.extend(msg(b'E', b"p\0\0\0\0\0"));
        let look = |t| match t {
            b'B' => Look::Head(4),
            b'E' => Look::Whole,
            _ => Look::Pass,
        };
        let mut s = Scanner::new(1000);
        assert_eq!(s.next(&buf[..8], look), Ok(Item::NeedMore { total: 9 }));
        assert_eq!(
            s.next(&buf[..12], look),
            Ok(Item::Head {
                tag: b'B',
                head: &buf[5..9],
                pass: 12
            })
        );
        assert!(!s.at_boundary());
        assert_eq!(s.next(&buf[12..], look), Ok(Item::Pass(3)));
        assert!(s.at_boundary());
        let Ok(Item::Frame { tag: b'E', len, .. }) = s.next(&buf[15..], look) else {
            panic!()
        };
        assert_eq!(15 + len, buf.len());
    }

    #[test]
    fn scanner_passes_large_frames_and_holds_inspected_ones() {
        let mut buf = msg(b'D', &[7u8; 100]);
        buf.extend(msg(b'Z', b"I"));
        let mut s = Scanner::new(1000);
        let z = |t| if t == b'Z' { Look::Whole } else { Look::Pass };
        // Only the first 50 bytes have arrived.
        assert_eq!(s.next(&buf[..50], z), Ok(Item::Pass(50)));
        assert!(!s.at_boundary());
        assert_eq!(s.next(&buf[50..60], z), Ok(Item::Pass(10)));
        let rest = &buf[60..];
        let Ok(Item::Pass(n)) = s.next(rest, z) else {
            panic!()
        };
        assert_eq!(60 + n, 105);
        assert!(s.at_boundary());
        assert_eq!(s.next(&rest[n..n + 3], z), Ok(Item::NeedMore { total: 0 }));
        assert_eq!(s.next(&rest[n..n + 5], z), Ok(Item::NeedMore { total: 6 }));
        assert_eq!(
            s.next(&rest[n..], z),
            Ok(Item::Frame {
                tag: b'Z',
                body: b"I",
                len: 6
            })
        );
    }

    #[test]
    fn startup_packets() {
        let ssl = [0, 0, 0, 8, 4, 210, 22, 47];
        assert_eq!(startup(&ssl), Ok(Some((StartupPacket::Ssl, 8))));
        let mut s = vec![0, 0, 0, 0, 0, 3, 0, 0];
        s.extend_from_slice(b"user\0a@b\0database\0db\0\0");
        let len = s.len() as i32;
        s[..4].copy_from_slice(&len.to_be_bytes());
        let Ok(Some((StartupPacket::Startup { params, .. }, n))) = startup(&s) else {
            panic!()
        };
        assert_eq!(n, s.len());
        assert_eq!(params[0], ("user".into(), "a@b".into()));
        assert_eq!(startup(&s[..s.len() - 1]), Ok(None));
        assert!(startup(&[0, 0, 0, 4]).is_err());
        assert!(startup(&[0x7f, 0, 0, 4]).is_err());
    }
}
