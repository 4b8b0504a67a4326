//! Text shown to the people who decide: commands, reasons and outputs rendered so that what an
//! approver reads is what runs. [`visible`] escapes every code point that moves the cursor,
//! reorders, hides or recolours text — C0 and C1 controls (ESC and so terminal escape
//! sequences, carriage return, backspace), DEL, bidi embeddings/overrides/isolates and marks,
//! zero-width and other invisible format characters, tag characters — as `\x1b` (C0 and DEL) or
//! `\u{202e}` (everything else). Line feed and tab are kept: they lay text out visibly.
//! [`is_blank`] says whether a text holds nothing a reader can see.
//!
//! Backslashes are not escaped: a literal `\u{202e}` typed in a command shows as itself, which
//! can only make a command look stranger than it is, never hide anything.
//!
//! # What it must never do
//! Change text that has nothing to hide (it is borrowed back unchanged), or drop a code point:
//! every escaped character is still there, just visible.

use std::borrow::Cow;
use std::fmt::Write;

/// True for the code points [`visible`] escapes.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        // C0 controls (but line feed and tab), DEL, C1 controls (NEL, CSI, …).
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Soft hyphen, Arabic letter mark, Mongolian vowel separator.
        | '\u{ad}' | '\u{61c}' | '\u{180e}'
        // Hangul fillers (render as blank).
        | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}'
        // Zero-width space/non-joiner/joiner, LRM, RLM.
        | '\u{200b}'..='\u{200f}'
        // Line and paragraph separators, bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
        | '\u{2028}'..='\u{202e}'
        // Word joiner, invisible operators, bidi isolates (LRI, RLI, FSI, PDI), deprecated
        // format characters.
        | '\u{2060}'..='\u{206f}'
        // Variation selectors, byte order mark / zero-width no-break space.
        | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        // Interlinear annotation characters.
        | '\u{fff9}'..='\u{fffb}'
        // Tag characters (invisible ASCII look-alikes) and supplementary variation selectors.
        | '\u{e0000}'..='\u{e007f}' | '\u{e0100}'..='\u{e01ef}'
    )
}

/// `text` with every hidden code point ([`is_hidden`]) escaped; borrowed when there is none.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !is_hidden(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// True when `text` holds nothing a reader can see: only whitespace and hidden code points.
pub fn is_blank(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || is_hidden(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "SELECT * FROM t WHERE a = 'Ünïcødé 日本'\n\tAND b = 1; -- é ✓ 🎉";
        assert!(matches!(visible(s), Cow::Borrowed(x) if x == s));
    }

    #[test]
    fn terminal_escapes_and_controls_are_shown() {
        assert_eq!(
            visible("rm -rf /\x1b[2K\rls"),
            "rm -rf /\\x1b[2K\\x0dls",
            "ESC and CR cannot erase the line"
        );
        assert_eq!(visible("a\u{8}\u{7f}\u{0}"), "a\\x08\\x7f\\x00");
        assert_eq!(
            visible("\u{9b}31m\u{85}"),
            "\\u{9b}31m\\u{85}",
            "C1 CSI and NEL"
        );
    }

    #[test]
    fn bidi_and_invisible_code_points_are_shown() {
        assert_eq!(
            visible("SELECT 1 /*\u{202e} } \u{2066}*/"),
            "SELECT 1 /*\\u{202e} } \\u{2066}*/"
        );
        for c in [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{2060}',
            '\u{feff}',
            '\u{ad}',
            '\u{61c}',
            '\u{e0041}',
            '\u{2028}',
            '\u{3164}',
        ] {
            let shown = visible(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", c as u32));
            assert!(!shown.chars().any(is_hidden));
        }
    }

    #[test]
    fn blank_means_nothing_to_see() {
        assert!(is_blank(""));
        assert!(is_blank(" \t\n"));
        assert!(is_blank("\u{200b}\u{202e}\u{feff} \u{2066}"));
        assert!(is_blank("\u{3164}\u{e0020}"));
        assert!(!is_blank(" ok "));
        assert!(!is_blank("\u{202e}x"));
    }
}
