//! Output accumulation shared by every executor: a text buffer that stops growing at the output
//! cap (cut on a char boundary), plus the trailing marker lines (truncation, timeout), the
//! password scrubbing applied to every message that comes from a connection attempt, and the
//! [`Masker`] that replaces a connection's secret values in whatever it prints.
//!
//! Nothing here decides access; it only shapes what the user is shown.

use std::time::Duration;

/// Text output with a byte cap. Once the cap is reached, further text is dropped and the buffer
/// is marked truncated; [`CappedText::finish`] then appends the truncation marker line.
#[derive(Debug)]
pub(crate) struct CappedText {
    buf: String,
    cap: usize,
    truncated: bool,
}

impl CappedText {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: String::new(),
            cap,
            truncated: false,
        }
    }

    /// Appends `s`, or as much of it as fits under the cap (cut on a char boundary).
    pub(crate) fn push_str(&mut self, s: &str) {
        if self.truncated {
            return;
        }
        let room = self.cap.saturating_sub(self.buf.len());
        if s.len() <= room {
            self.buf.push_str(s);
        } else {
            self.buf.push_str(&s[..floor_char_boundary(s, room)]);
            self.truncated = true;
        }
    }

    /// Bytes still accepted before the cap is hit.
    pub(crate) fn room(&self) -> usize {
        self.cap.saturating_sub(self.buf.len())
    }

    /// Marks the output truncated even though nothing overflowed the buffer itself (used when an
    /// executor stopped collecting rows because they could not fit anyway).
    pub(crate) fn mark_truncated(&mut self) {
        self.truncated = true;
    }

    /// The final text: the kept output, then the truncation marker when something was cut, then
    /// `trailer` (e.g. the timeout line), each on its own line. The markers are not counted
    /// against the cap.
    pub(crate) fn finish(self, trailer: Option<&str>) -> (String, bool) {
        let mut out = self.buf;
        if self.truncated {
            ensure_newline(&mut out);
            out.push_str(&format!("… output truncated at {} bytes\n", self.cap));
        }
        if let Some(t) = trailer {
            ensure_newline(&mut out);
            out.push_str(t);
            if !t.ends_with('\n') {
                out.push('\n');
            }
        }
        (out, self.truncated)
    }
}

/// What a masked secret becomes.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not masked (masking `"1"` would hide every digit).
pub const MIN_SECRET_LEN: usize = 4;

/// Replaces the exact bytes of a connection's secrets in an output stream, chunk by chunk:
/// it holds back only the last `longest secret − 1` bytes of each chunk (a secret may continue
/// in the next one), never the whole output, so a secret split across reads — or cut by the
/// output cap — is still masked.
#[derive(Debug, Default)]
pub(crate) struct Masker {
    secrets: Vec<Vec<u8>>,
    held: Vec<u8>,
    longest: usize,
}

impl Masker {
    pub(crate) fn new(secrets: &[String]) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        // Longest first: at one position the longer secret wins.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let longest = secrets.first().map_or(0, Vec::len);
        Self {
            secrets,
            held: Vec::new(),
            longest,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Masks `chunk` (after what was held back) and returns what can be shown now.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        let mut plain = 0;
        while i < buf.len() {
            match self.secrets.iter().find(|s| buf[i..].starts_with(s)) {
                Some(s) => {
                    out.extend_from_slice(&buf[plain..i]);
                    out.extend_from_slice(REDACTED.as_bytes());
                    i += s.len();
                    plain = i;
                }
                None if buf.len() - i < self.longest
                    && self.secrets.iter().any(|s| s.starts_with(&buf[i..])) =>
                {
                    // The rest may be the start of a secret: hold it for the next chunk.
                    break;
                }
                None => i += 1,
            }
        }
        out.extend_from_slice(&buf[plain..i]);
        self.held = buf[i..].to_vec();
        out
    }

    /// The end of the stream: what was held back (it was no secret).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Masks a whole text at once.
    pub(crate) fn mask(&mut self, s: &str) -> String {
        let mut out = self.push(s.as_bytes());
        out.extend(self.finish());
        String::from_utf8_lossy(&out).into_owned()
    }
}

fn ensure_newline(s: &mut String) {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
}

/// The largest index `<= i` that is a char boundary of `s`.
pub(crate) fn floor_char_boundary(s: &str, i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    let mut i = i;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `1s`, `1.5s`, `250ms`, `5m`: how a timeout is shown in messages.
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Removes every occurrence of each secret from `msg` (replaced by `***`). Applied to every
/// connection error text before it reaches the output, as a second line of defence: our own
/// messages never include the URL, but driver messages are not under our control.
pub(crate) fn scrub<S: AsRef<str>>(msg: &str, secrets: &[S]) -> String {
    let mut out = msg.to_string();
    for s in secrets {
        let s = s.as_ref();
        if s.len() >= 2 && out.contains(s) {
            out = out.replace(s, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_across_chunk_boundaries() {
        let secrets = [
            "hunter2-pw".to_string(),
            "abc".to_string(),
            "s3cr3t".to_string(),
        ];
        let text = "pw=hunter2-pw; again hunter2-pwhunter2-pw; s3cr3 s3cr3t; abc stays";
        let want = "pw=[redacted]; again [redacted][redacted]; s3cr3 [redacted]; abc stays";
        for size in 1..text.len() {
            let mut m = Masker::new(&secrets);
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                out.extend(m.push(chunk));
            }
            out.extend(m.finish());
            assert_eq!(String::from_utf8(out).unwrap(), want, "chunks of {size}");
        }
        // Nothing is held back once no secret can start in what is left.
        let mut m = Masker::new(&secrets);
        assert_eq!(m.push(b"plain text"), b"plain text");
        assert_eq!(m.push(b"x hunt"), b"x ");
        assert_eq!(m.finish(), b"hunt");
        assert!(Masker::new(&["ab".into()]).is_empty(), "too short to mask");
        assert_eq!(
            Masker::new(&["ünï€".into()]).mask("a ünï€ b"),
            "a [redacted] b"
        );
    }

    #[test]
    fn caps_on_char_boundary() {
        let mut t = CappedText::new(5);
        t.push_str("ab");
        t.push_str("cdé"); // é is 2 bytes: "abcd" + "é" would be 6
        t.push_str("more");
        let (out, truncated) = t.finish(None);
        assert!(truncated);
        assert_eq!(out, "abcd\n… output truncated at 5 bytes\n");
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let mut t = CappedText::new(3);
        t.push_str("abc");
        assert_eq!(t.room(), 0);
        let (out, truncated) = t.finish(Some("… killed after 1s timeout"));
        assert!(!truncated);
        assert_eq!(out, "abc\n… killed after 1s timeout\n");
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(fmt_duration(Duration::from_secs(300)), "5m");
        assert_eq!(fmt_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn scrubs() {
        assert_eq!(
            scrub("auth failed for hunter2!", &["hunter2", ""]),
            "auth failed for ***!"
        );
    }
}
