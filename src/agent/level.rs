//! Reads a log level out of one log-file line.
//!
//! Owns the mapping from free-form text to one of six canonical level names:
//! `TRACE`, `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL` (the Python
//! `logging` names the second seed's ecosystem uses; `WARN` maps to
//! `WARNING`, `FATAL` to `CRITICAL`).
//!
//! Invariants: never allocates, never panics, linear in the line length, and
//! always answers (default `INFO`).
//!
//! How a level is found, strongest form first, case-insensitive:
//! 1. keyed: `level=error`, `lvl=warn`, `severity="ERROR"`, `"level":"info"`,
//!    `level: debug` (anywhere in the line);
//! 2. bracketed: `[ERROR]`, `<warn>`, `(info)` (anywhere in the line);
//! 3. a bare word: the first level word in the line, e.g.
//!    `2024-01-01 12:00:00 WARN disk almost full`.
//!
//! A "word" is a maximal run of ASCII letters, digits and `_`, so `log_error`
//! or `errors` do not count as `ERROR`.

/// The level used when a line names none.
pub const DEFAULT_LEVEL: &str = "INFO";

/// Returns the canonical level named by `line`, or [`DEFAULT_LEVEL`].
pub fn parse_level(line: &str) -> &'static str {
    let bytes = line.as_bytes();
    let mut bracketed: Option<&'static str> = None;
    let mut bare: Option<&'static str> = None;
    // The word before the current one, as a byte range, for the keyed form.
    let mut prev: Option<(usize, usize)> = None;

    let mut i = 0;
    while i < bytes.len() {
        if !is_word_byte(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word_byte(bytes[i]) {
            i += 1;
        }
        let end = i;
        if let Some(level) = canonical(&bytes[start..end]) {
            if let Some((ps, pe)) = prev
                && is_level_key(&bytes[ps..pe])
                && is_key_separator(&bytes[pe..start])
            {
                return level;
            }
            if bracketed.is_none() && is_bracketed(bytes, start, end) {
                bracketed = Some(level);
            }
            if bare.is_none() {
                bare = Some(level);
            }
        }
        prev = Some((start, end));
    }
    bracketed.or(bare).unwrap_or(DEFAULT_LEVEL)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Maps one word to its canonical level name.
fn canonical(word: &[u8]) -> Option<&'static str> {
    // The longest level word is "critical" (8 bytes).
    if word.len() < 4 || word.len() > 8 {
        return None;
    }
    let mut buf = [0u8; 8];
    for (dst, src) in buf.iter_mut().zip(word) {
        *dst = src.to_ascii_lowercase();
    }
    match &buf[..word.len()] {
        b"trace" => Some("TRACE"),
        b"debug" => Some("DEBUG"),
        b"info" => Some("INFO"),
        b"warn" | b"warning" => Some("WARNING"),
        b"error" => Some("ERROR"),
        b"fatal" | b"critical" => Some("CRITICAL"),
        _ => None,
    }
}

fn is_level_key(word: &[u8]) -> bool {
    word.eq_ignore_ascii_case(b"level")
        || word.eq_ignore_ascii_case(b"lvl")
        || word.eq_ignore_ascii_case(b"severity")
}

/// What may sit between a key and its value: `=`, `:`, quotes and spaces,
/// with at least one `=` or `:`.
fn is_key_separator(between: &[u8]) -> bool {
    between.len() <= 6
        && between.iter().any(|&b| b == b'=' || b == b':')
        && between
            .iter()
            .all(|&b| matches!(b, b'=' | b':' | b'"' | b'\'' | b' '))
}

fn is_bracketed(bytes: &[u8], start: usize, end: usize) -> bool {
    if start == 0 || end >= bytes.len() {
        return false;
    }
    matches!(
        (bytes[start - 1], bytes[end]),
        (b'[', b']') | (b'<', b'>') | (b'(', b')')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_words_in_any_case() {
        assert_eq!(
            parse_level("2024-01-01 12:00:00 ERROR disk failed"),
            "ERROR"
        );
        assert_eq!(parse_level("warn: almost full"), "WARNING");
        assert_eq!(parse_level("Warning something"), "WARNING");
        assert_eq!(parse_level("DEBUG x=1"), "DEBUG");
        assert_eq!(parse_level("trace enter fn"), "TRACE");
        assert_eq!(parse_level("FATAL out of memory"), "CRITICAL");
        assert_eq!(parse_level("Critical: on fire"), "CRITICAL");
        assert_eq!(parse_level("INFO started"), "INFO");
    }

    #[test]
    fn default_is_info() {
        assert_eq!(parse_level("just a line"), "INFO");
        assert_eq!(parse_level(""), "INFO");
        assert_eq!(parse_level("   \t "), "INFO");
    }

    #[test]
    fn only_whole_words_count() {
        assert_eq!(parse_level("log_error happened"), "INFO");
        assert_eq!(parse_level("3 errors so far"), "INFO");
        assert_eq!(parse_level("information superhighway"), "INFO");
        assert_eq!(parse_level("terrors"), "INFO");
    }

    #[test]
    fn brackets() {
        assert_eq!(parse_level("[2024-01-01] [error] boom"), "ERROR");
        assert_eq!(parse_level("<WARN> x"), "WARNING");
        assert_eq!(parse_level("app (debug) y"), "DEBUG");
    }

    #[test]
    fn bracketed_beats_an_earlier_bare_word() {
        assert_eq!(parse_level("info about [ERROR] handling"), "ERROR");
    }

    #[test]
    fn first_bare_word_wins() {
        assert_eq!(parse_level("INFO retrying after error"), "INFO");
        assert_eq!(parse_level("error then info"), "ERROR");
    }

    #[test]
    fn keyed_forms_beat_everything() {
        assert_eq!(
            parse_level("ts=1 level=warn msg=\"error later\""),
            "WARNING"
        );
        assert_eq!(parse_level("lvl=DEBUG x"), "DEBUG");
        assert_eq!(parse_level("severity=\"Error\" a"), "ERROR");
        assert_eq!(
            parse_level(r#"{"msg":"[INFO] x","level":"error"}"#),
            "ERROR"
        );
        assert_eq!(parse_level("level: trace"), "TRACE");
        assert_eq!(parse_level("[info] level=fatal"), "CRITICAL");
    }

    #[test]
    fn keyed_with_unknown_value_falls_back() {
        assert_eq!(parse_level("level=verbose something"), "INFO");
        assert_eq!(parse_level("level=verbose WARN"), "WARNING");
    }

    #[test]
    fn non_ascii_does_not_panic() {
        assert_eq!(parse_level("ÉRROR ünïcode [ERROR]"), "ERROR");
        assert_eq!(parse_level("日本語 warn"), "WARNING");
    }
}
