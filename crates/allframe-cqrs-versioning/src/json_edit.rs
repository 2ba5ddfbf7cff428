//! Editing a JSON document in place, as bytes, for the declarative steps (`rename_field`,
//! `add_field`, and `rename`'s external tag): the first step reads the text once, checking it and
//! indexing the members of its root object (and of the object below it that a step edits); each
//! edit replaces a key or adds a member with one move of the bytes after it and moves the indexed
//! offsets, so the next step reads nothing again. It parses nothing into a tree, so a chain of
//! such steps costs a fraction of a parse and a write. Anything it cannot edit with certainty (an
//! escaped key, a duplicate or taken key, more than 16 members, text that is not JSON) is left to
//! the step, which does the same edit on the parsed value instead.

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
#[derive(Clone, Copy)]
pub(crate) struct Object {
    members: [Member; MAX_MEMBERS],
    count: usize,
    close: usize,
}

impl Object {
    fn members(&self) -> &[Member] {
        &self.members[..self.count]
    }

    /// Every offset at or after `at` moved by `delta` (an edit ending at `at`).
    fn shift(&mut self, at: usize, delta: isize) {
        let moved = |offset: usize| if offset >= at { offset.wrapping_add_signed(delta) } else { offset };
        for member in &mut self.members[..self.count] {
            member.key = (moved(member.key.0 as usize) as u32, moved(member.key.1 as usize) as u32);
        }
        self.close = moved(self.close);
    }
}

/// What the declarative steps know of a JSON text from one edit to the next: whether it is
/// well-formed, and the members of its root object and of one object below it, at their offsets
/// in the text as it is now (each edit moves them). A chain of edits thus reads the text once.
#[derive(Default)]
pub(crate) enum Known {
    /// As stored: to be checked.
    #[default]
    Unread,
    /// Well-formed; its root is not an object, or an object too large to index.
    WellFormed,
    /// Well-formed, with its root object's members (boxed: payloads move from step to step).
    Indexed(Box<Index>),
}

/// The members of a text's root object and of the object whose `{` is at the offset given, one
/// key below the root.
pub(crate) struct Index {
    root: Object,
    below: Option<(usize, Object)>,
}

impl Known {
    /// Whether the text is known to be well-formed.
    fn checked(&self) -> bool {
        !matches!(self, Known::Unread)
    }

    /// Every indexed offset at or after `at` moved by `delta`.
    fn shift(&mut self, at: usize, delta: isize) {
        if let Known::Indexed(index) = self {
            index.root.shift(at, delta);
            if let Some((open, object)) = &mut index.below {
                *open = if *open >= at { open.wrapping_add_signed(delta) } else { *open };
                object.shift(at, delta);
            }
        }
    }
}

/// Where the object at a path is.
#[expect(clippy::large_enum_variant, reason = "a value on the stack for one edit, never stored")]
enum Found {
    /// The text has no object there.
    Nothing,
    /// The root object, indexed.
    Root,
    /// The object below the root, indexed.
    Below,
    /// An object deeper down, read for this edit only.
    Deep(Object),
}

/// Renames the member `field` of the object at `path` to `to` (`quoted_to`: the new name as a
/// JSON string) in `bytes`, in place; nothing to do when there is no such object or member.
/// `false`: not edited, to be done on the parsed value.
pub(crate) fn rename(
    bytes: &mut Vec<u8>,
    known: &mut Known,
    path: &[String],
    field: &str,
    to: &str,
    quoted_to: &[u8],
) -> bool {
    let Some(found) = locate(bytes, known, path) else { return false };
    let Some(object) = found_object(known, &found) else { return true };
    // One pass: the member to rename, and none escaped, named twice, or already named `to`.
    let mut named = None;
    for member in object.members() {
        let name = member.name(bytes);
        if member.escaped || (name == to.as_bytes() && field != to) || (name == field.as_bytes() && named.is_some()) {
            return false;
        }
        if name == field.as_bytes() {
            named = Some(*member);
        }
    }
    let Some(member) = named else { return true };
    let (start, end) = (member.key.0 as usize, member.key.1 as usize);
    replace(bytes, start..end, quoted_to);
    known.shift(end, quoted_to.len() as isize - (end - start) as isize);
    if quoted_to.contains(&b'\\') {
        // The index keeps keys without escapes only: the next step reads the text again.
        *known = Known::WellFormed;
    }
    true
}

/// Adds the member `field: value` (`member`: `"field":value` as JSON text) to the object at
/// `path` in `bytes`, in place, when it has no such member; nothing to do when there is no such
/// object. `false`: not edited, to be done on the parsed value.
pub(crate) fn add(bytes: &mut Vec<u8>, known: &mut Known, path: &[String], field: &str, member: &[u8]) -> bool {
    let Some(found) = locate(bytes, known, path) else { return false };
    let Some(object) = found_object(known, &found) else { return true };
    if object.members().iter().any(|m| m.escaped) {
        return false;
    }
    if object.members().iter().any(|m| m.name(bytes) == field.as_bytes()) {
        return true;
    }
    let (close, comma) = (object.close, usize::from(object.count > 0));
    replace(bytes, close..close, &b","[..comma]);
    replace(bytes, close + comma..close + comma, member);
    known.shift(close, (comma + member.len()) as isize);
    // The new member joins the index of its object (a full one is no longer indexed).
    let (key_len, escaped) = string(member, 0).unwrap_or((0, true));
    let added = Member { key: ((close + comma) as u32, (close + comma + key_len) as u32), escaped };
    let indexed = match (&mut *known, found) {
        (Known::Indexed(index), Found::Root) => Some(&mut index.root),
        (Known::Indexed(index), Found::Below) => index.below.as_mut().map(|(_, below)| below),
        _ => None,
    };
    if let Some(object) = indexed
        && object.push(added).is_none()
    {
        *known = Known::WellFormed;
    }
    true
}

/// Renames the root object's one member `old` (serde's external tag of an enum variant) to `to`
/// (`quoted_to`: as a JSON string); nothing to do when the root is not an object with that one
/// member. `false`: not edited, to be done on the parsed value.
pub(crate) fn rename_tag(bytes: &mut Vec<u8>, known: &mut Known, old: &str, to: &str, quoted_to: &[u8]) -> bool {
    let Some(found) = locate(bytes, known, &[]) else { return false };
    let Some(root) = found_object(known, &found) else { return true };
    let members = root.members();
    if members.iter().any(|m| m.escaped) {
        return false;
    }
    match members {
        [member] if member.name(bytes) == old.as_bytes() => rename(bytes, known, &[], old, to, quoted_to),
        // Duplicate keys of one object parse as one member: left to the parsed value.
        [_, _, ..] if members.iter().any(|m| m.name(bytes) == old.as_bytes()) => false,
        _ => true,
    }
}

impl Object {
    /// `member` added at the end (`None`: the object is full).
    fn push(&mut self, member: Member) -> Option<()> {
        *self.members.get_mut(self.count)? = member;
        self.count += 1;
        Some(())
    }
}

/// The object `found` names, copied out of `known` or of the search.
fn found_object(known: &Known, found: &Found) -> Option<Object> {
    match (known, found) {
        (Known::Indexed(index), Found::Root) => Some(index.root),
        (Known::Indexed(index), Found::Below) => index.below.map(|(_, below)| below),
        (_, Found::Deep(object)) => Some(*object),
        _ => None,
    }
}

/// Where the object at `path` is (`Found::Nothing` when the document has none there: a missing
/// key, or a value that is not an object), reading the text into `known` first when it has not
/// been read; `None` when the text cannot be edited with certainty.
fn locate(bytes: &[u8], known: &mut Known, path: &[String]) -> Option<Found> {
    if !matches!(known, Known::Indexed(..)) {
        let (checked, root) = (known.checked(), skip_ws(bytes, 0));
        // The whole document is read once: a root object with its members, anything else skipped.
        let (end, indexed) = if bytes.get(root) == Some(&b'{') {
            let object = object(bytes, root, checked)?;
            (object.close + 1, Some(object))
        } else {
            (skip_value(bytes, root)?, None)
        };
        if !checked && skip_ws(bytes, end) != bytes.len() {
            return None;
        }
        *known = indexed.map_or(Known::WellFormed, |root| Known::Indexed(Box::new(Index { root, below: None })));
    }
    let Known::Indexed(index) = known else { return Some(Found::Nothing) };
    let Index { root, below } = &mut **index;
    let Some((first, deeper)) = path.split_first() else { return Some(Found::Root) };
    let Some(open) = member_object(bytes, root, first)? else { return Some(Found::Nothing) };
    // The object below the root is read once for the steps that edit it (the text is known to be
    // well-formed by now).
    if !matches!(below, Some((at, _)) if *at == open) {
        *below = Some((open, object(bytes, open, true)?));
    }
    let below = (*below)?.1;
    if deeper.is_empty() {
        return Some(Found::Below);
    }
    let mut current = below;
    for key in deeper {
        let Some(open) = member_object(bytes, &current, key)? else { return Some(Found::Nothing) };
        current = object(bytes, open, true)?;
    }
    Some(Found::Deep(current))
}

/// Where the object that is the value of `object`'s member `key` opens: `Some(None)` when there
/// is no such member or its value is not an object, `None` when that cannot be told with
/// certainty (an escaped key, a duplicate one).
fn member_object(bytes: &[u8], object: &Object, key: &str) -> Option<Option<usize>> {
    let mut found = None;
    for member in object.members() {
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
    Some(found.filter(|&value| bytes.get(value) == Some(&b'{')))
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
            object.push(Member { key: (u32::try_from(at).ok()?, u32::try_from(key_end).ok()?), escaped })?;
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
        rename(&mut bytes, &mut Known::Unread, path, field, to, &quoted).then_some(bytes)
    }

    #[test]
    fn renames_and_adds_in_place() {
        let text = br#"{"Deposited": {"amount": 5, "note": "a \"b\" {c}", "lines": [[1, {"amount": 2}]]}}"#;
        assert_eq!(
            String::from_utf8(renamed(text, &path(&["Deposited"]), "amount", "cents").unwrap()).unwrap(),
            r#"{"Deposited": {"cents": 5, "note": "a \"b\" {c}", "lines": [[1, {"amount": 2}]]}}"#
        );
        let mut added = text.to_vec();
        assert!(add(&mut added, &mut Known::Unread, &path(&["Deposited"]), "channel", br#""channel":"web""#));
        assert!(String::from_utf8(added).unwrap().ends_with(r#"{"amount": 2}]],"channel":"web"}}"#));
        let mut empty = b"{}".to_vec();
        assert!(add(&mut empty, &mut Known::Unread, &[], "a", br#""a":1"#));
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
