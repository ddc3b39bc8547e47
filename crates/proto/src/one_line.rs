//! Text that must stay on one line of a log or a listing whatever it holds: a path may contain
//! a newline or a terminal escape, and printed as is it would forge lines of its own; and text
//! from a client or an archive that must not fill one.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character written as its Rust escape (`\n`, `\u{1b}`);
/// borrowed when there is none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(escaped, "{}", c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// `text`, or its first `max` bytes (at a character's boundary) and how long it was:
/// `xxxx… (1048576 bytes)`.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let end = (0..=max)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_s_boundary_with_its_length() {
        assert!(matches!(cut("short", 5), Cow::Borrowed("short")));
        assert_eq!(cut("abcdef", 4), "abcd… (6 bytes)");
        // "é" is two bytes: not split.
        assert_eq!(cut("aébc", 2), "a… (5 bytes)");
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(escape_controls("/srv/données"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\n[26/11/2026 23:00] Deleting\r\t\u{1b}[31m"),
            "a\\n[26/11/2026 23:00] Deleting\\r\\t\\u{1b}[31m"
        );
    }
}
