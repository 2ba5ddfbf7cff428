//! JSON text checks for `jsonb`: finding a real `\u0000` escape (which `jsonb` cannot store)
//! in a document already known to be valid JSON.

/// Whether the valid JSON document `text` contains a string (value or key) with a `\u0000`
/// escape, that is the NUL character, which PostgreSQL `jsonb` refuses.
///
/// A substring test is not enough: in `"C:\\u0000"` the backslash is itself escaped and the
/// string holds the six characters `\u0000`, no NUL. Here every escape is read as one unit,
/// so a `\u` counts only where it starts an escape.
pub(crate) fn has_nul_escape(text: &str) -> bool {
    // Fast path: without the six bytes anywhere there is no such escape.
    if !text.contains("\\u0000") {
        return false;
    }
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                // An escape: `\` and one character, or `\u` and four hex digits.
                match bytes.get(i + 1) {
                    Some(b'u') => {
                        if bytes.get(i + 2..i + 6) == Some(b"0000") {
                            return true;
                        }
                        i += 6;
                        continue;
                    }
                    _ => {
                        i += 2;
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn a_real_nul_escape_is_found_in_values_and_keys() {
        for text in [
            r#""\u0000""#,
            r#"{"a":"x\u0000y"}"#,
            r#"{"\u0000":1}"#,
            r#"["ok", {"k\u0000": 2}]"#,
            // An escaped backslash, then a real escape: `\\` then `\u0000`.
            r#"{"path":"C:\\\u0000"}"#,
            r#"{"q":"\"\u0000"}"#,
        ] {
            assert!(has_nul_escape(text), "{text}");
        }
    }

    #[test]
    fn escaped_backslashes_and_other_escapes_are_not_nul() {
        for text in [
            r#"{"path":"C:\\u0000"}"#,
            r#"{"\\u0000":"\\\\u0000"}"#,
            r#"{"a":"\u0001\u10000"}"#,
            r#"{"a":"\u1000"}"#,
            r#"{"a":"\"u0000"}"#,
            r#"{"a":1}"#,
            r#""\\u0000\\u0000""#,
        ] {
            assert!(!has_nul_escape(text), "{text}");
        }
    }
}
