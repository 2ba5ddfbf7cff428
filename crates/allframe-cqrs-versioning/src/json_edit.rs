//! Editing a JSON document in place, as bytes, for the declarative steps (`rename_field`,
//! `add_field`): one pass over the text to find an object by its path of keys, then one copy with
//! the key replaced or a member added. It parses nothing into a tree, so a chain of such steps
//! costs a few hundred nanoseconds on a small event instead of a parse and a write. Anything it
//! cannot edit with certainty (an escaped key, a duplicate target key, text that is not JSON)
//! returns `None`, and the step does the same edit on the parsed value instead.

/// A member of an object: its key's span (quotes included) and whether the key has escapes.
#[derive(Clone, Copy, Default)]
struct Member {
    key: (u32, u32),
    escaped: bool,
}

impl Member {
    /// The key's text, without its quotes.
    fn name<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.key.0 as usize + 1..self.key.1 as usize - 1]
    }
}

/// Replaces `range` of `bytes` with `with`, moving the rest once.
fn replace(bytes: &mut Vec<u8>, range: std::ops::Range<usize>, with: &[u8]) {
    let (start, end) = (range.start, range.end);
    let grow = with.len().saturating_sub(end - start);
    if grow > 0 {
        let old_len = bytes.len();
        bytes.resize(old_len + grow, 0);
        bytes.copy_within(end..old_len, start + with.len());
    } else {
        bytes.copy_within(end.., start + with.len());
        bytes.truncate(bytes.len() - (end - start - with.len()));
    }
    bytes[start..start + with.len()].copy_from_slice(with);
}

/// The most members of an object edited in place (a larger one is edited as a parsed value).
const MAX_MEMBERS: usize = 16;

/// An object's members and the index of its closing brace.
struct Object {
    members: [Member; MAX_MEMBERS],
    count: usize,
    close: usize,
}

impl Object {
    fn members(&self) -> &[Member] {
        &self.members[..self.count]
    }
}

/// Renames the member `field` of the object at `path` to `to` (`quoted_to`: the new name as a
/// JSON string) in `bytes`, in place; nothing to do when there is no such object or member.
/// `false`: not edited, to be done on the parsed value.
pub(crate) fn rename(
    bytes: &mut Vec<u8>,
    checked: bool,
    path: &[String],
    field: &str,
    to: &str,
    quoted_to: &[u8],
) -> bool {
    let Some(found) = find(bytes, checked, path) else { return false };
    let Some(object) = found else { return true };
    if object.members().iter().any(|m| m.escaped) {
        return false;
    }
    let mut named = object.members().iter().filter(|m| m.name(bytes) == field.as_bytes());
    let Some(&member) = named.next() else { return true };
    if named.next().is_some() || (field != to && object.members().iter().any(|m| m.name(bytes) == to.as_bytes())) {
        return false;
    }
    replace(bytes, member.key.0 as usize..member.key.1 as usize, quoted_to);
    true
}

/// Adds the member `field: value` (`member`: `"field":value` as JSON text) to the object at
/// `path` in `bytes`, in place, when it has no such member; nothing to do when there is no such
/// object. `false`: not edited, to be done on the parsed value.
pub(crate) fn add(bytes: &mut Vec<u8>, checked: bool, path: &[String], field: &str, member: &[u8]) -> bool {
    let Some(found) = find(bytes, checked, path) else { return false };
    let Some(object) = found else { return true };
    if object.members().iter().any(|m| m.escaped) {
        return false;
    }
    if object.members().iter().any(|m| m.name(bytes) == field.as_bytes()) {
        return true;
    }
    let close = object.close;
    if object.members().is_empty() {
        replace(bytes, close..close, member);
    } else {
        replace(bytes, close..close, b",");
        replace(bytes, close + 1..close + 1, member);
    }
    true
}

/// The object at `path`: `Some(None)` when the document has none there (a missing key, or a
/// value that is not an object), `None` when the text cannot be edited with certainty.
/// `checked`: the text is known to be well-formed JSON (an edit of text read before), so values
/// are skipped by brackets and quotes alone instead of being checked.
fn find(bytes: &[u8], checked: bool, path: &[String]) -> Option<Option<Object>> {
    let root = skip_ws(bytes, 0);
    // The whole document is read once: a root object with its members, anything else skipped.
    let (end, mut object) = if bytes.get(root) == Some(&b'{') {
        let object = object(bytes, root, checked)?;
        (object.close + 1, Some(object))
    } else {
        (skip_value(bytes, root)?, None)
    };
    if !checked && skip_ws(bytes, end) != bytes.len() {
        return None;
    }
    for key in path {
        let Some(current) = object else { return Some(None) };
        let mut found = None;
        for member in current.members() {
            if member.escaped {
                return None;
            }
            if member.name(bytes) == key.as_bytes() {
                if found.is_some() {
                    return None;
                }
                found = Some(value_after_key(bytes, member.key.1 as usize)?);
            }
        }
        let Some(value) = found else { return Some(None) };
        object = if bytes.get(value) == Some(&b'{') { Some(self::object(bytes, value, checked)?) } else { None };
    }
    Some(object)
}

/// Where the value after a key ending at `key_end` starts.
fn value_after_key(bytes: &[u8], key_end: usize) -> Option<usize> {
    let colon = skip_ws(bytes, key_end);
    (bytes.get(colon) == Some(&b':')).then(|| skip_ws(bytes, colon + 1))
}

/// The members of the object whose `{` is at `open` (`None` beyond [`MAX_MEMBERS`]).
fn object(bytes: &[u8], open: usize, checked: bool) -> Option<Object> {
    let mut object = Object { members: [Member::default(); MAX_MEMBERS], count: 0, close: 0 };
    object.close = scan_object(bytes, open, checked, Some(&mut object))?;
    Some(object)
}

/// The index of the `}` closing the object whose `{` is at `open`, its members recorded in
/// `into` when given.
fn scan_object(bytes: &[u8], open: usize, checked: bool, mut into: Option<&mut Object>) -> Option<usize> {
    let mut at = skip_ws(bytes, open + 1);
    if bytes.get(at) == Some(&b'}') {
        return Some(at);
    }
    loop {
        let (key_end, escaped) = string(bytes, at)?;
        if let Some(object) = into.as_deref_mut() {
            let key = (u32::try_from(at).ok()?, u32::try_from(key_end).ok()?);
            *object.members.get_mut(object.count)? = Member { key, escaped };
            object.count += 1;
        }
        let value = value_after_key(bytes, key_end)?;
        let end = if checked { skip_checked(bytes, value)? } else { skip_value(bytes, value)? };
        at = skip_ws(bytes, end);
        match bytes.get(at)? {
            b',' => at = skip_ws(bytes, at + 1),
            b'}' => return Some(at),
            _ => return None,
        }
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// The end of the string starting at `at` (after its closing quote), and whether it has escapes.
fn string(bytes: &[u8], at: usize) -> Option<(usize, bool)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut escaped = false;
    let mut i = at + 1;
    loop {
        // Straight to the next quote or backslash (a control character in a string is left to
        // the decoder that reads the text, which refuses it).
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i += 2;
    }
}

/// The end of the value starting at `at`.
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string(bytes, at).map(|(end, _)| end),
        b'{' => scan_object(bytes, at, false, None).map(|close| close + 1),
        b'[' => {
            let mut i = skip_ws(bytes, at + 1);
            if bytes.get(i) == Some(&b']') {
                return Some(i + 1);
            }
            loop {
                i = skip_ws(bytes, skip_value(bytes, i)?);
                match bytes.get(i)? {
                    b',' => i = skip_ws(bytes, i + 1),
                    b']' => return Some(i + 1),
                    _ => return None,
                }
            }
        }
        b'-' | b'0'..=b'9' => {
            let mut i = at + 1;
            while matches!(bytes.get(i), Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')) {
                i += 1;
            }
            Some(i)
        }
        _ => ["true", "false", "null"]
            .iter()
            .find(|word| bytes[at..].starts_with(word.as_bytes()))
            .map(|word| at + word.len()),
    }
}

/// The end of the value starting at `at` in well-formed text: strings skipped to their closing
/// quote, objects and arrays to their closing bracket by depth, anything else to the next
/// delimiter.
fn skip_checked(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string(bytes, at).map(|(end, _)| end),
        b'{' | b'[' => {
            let (mut depth, mut i) = (1usize, at + 1);
            loop {
                i += bytes.get(i..)?.iter().position(|&b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))?;
                match bytes[i] {
                    b'"' => i = string(bytes, i)?.0,
                    b'{' | b'[' => {
                        depth += 1;
                        i += 1;
                    }
                    _ => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                }
            }
        }
        _ => Some(
            at + bytes[at..]
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(bytes.len() - at),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| (*k).to_owned()).collect()
    }

    /// The edited text, or `None` when the edit is left to the parsed value.
    fn renamed(text: &[u8], path: &[String], field: &str, to: &str) -> Option<Vec<u8>> {
        let mut bytes = text.to_vec();
        let quoted = serde_json::to_vec(to).unwrap();
        rename(&mut bytes, false, path, field, to, &quoted).then_some(bytes)
    }

    #[test]
    fn renames_and_adds_in_place() {
        let text = br#"{"Deposited": {"amount": 5, "note": "a \"b\" {c}", "lines": [[1, {"amount": 2}]]}}"#;
        assert_eq!(
            String::from_utf8(renamed(text, &path(&["Deposited"]), "amount", "cents").unwrap()).unwrap(),
            r#"{"Deposited": {"cents": 5, "note": "a \"b\" {c}", "lines": [[1, {"amount": 2}]]}}"#
        );
        let mut added = text.to_vec();
        assert!(add(&mut added, false, &path(&["Deposited"]), "channel", br#""channel":"web""#));
        assert!(String::from_utf8(added).unwrap().ends_with(r#"{"amount": 2}]],"channel":"web"}}"#));
        let mut empty = b"{}".to_vec();
        assert!(add(&mut empty, false, &[], "a", br#""a":1"#));
        assert_eq!(empty, br#"{"a":1}"#);
    }

    #[test]
    fn leaves_what_it_cannot_edit_with_certainty_to_the_parsed_value() {
        assert!(renamed(br#"{"a\u0062":1}"#, &[], "ab", "c").is_none(), "an escaped key");
        assert!(renamed(br#"{"a":1,"b":2}"#, &[], "a", "b").is_none(), "the new name is taken");
        assert!(renamed(br#"{"a":1"#, &[], "a", "b").is_none(), "not JSON");
        assert!(renamed(br#"{"a":1} x"#, &[], "a", "b").is_none(), "text after the document");
        assert_eq!(renamed(br#"{"a":1}"#, &path(&["x"]), "a", "b").unwrap(), br#"{"a":1}"#, "no such object");
        assert_eq!(renamed(b"[1]", &[], "a", "b").unwrap(), b"[1]", "not an object");
        let large: String = (0..40).map(|n| format!(r#""k{n}":{n}"#)).collect::<Vec<_>>().join(",");
        assert!(renamed(format!("{{{large}}}").as_bytes(), &[], "k1", "b").is_none(), "too many members");
    }
}
