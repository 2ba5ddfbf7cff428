//! Declaring upcasters: one step per (event type, schema version it reads), each turning the
//! stored form of version n into version n + 1, and [`Upcasters::build`], which checks the
//! whole chain before the first read.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use allframe_cqrs_core::{BoxError, Codec, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::chain::Chain;
use crate::error::ChainError;
use crate::json_edit::{self, Known};

/// The object at `path` in `value`, if there is one.
fn at_path<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut serde_json::Map<String, Value>> {
    path.iter().try_fold(value, |value, key| value.get_mut(key))?.as_object_mut()
}

/// `value` with serde's external tag `old` (an object whose one key it is) renamed `to`.
fn rename_tag(value: Value, old: &str, to: &str) -> Value {
    match value {
        Value::Object(mut object) if object.len() == 1 && object.contains_key(old) => {
            let inner = object.remove(old).unwrap_or_default();
            object.insert(to.to_owned(), inner);
            Value::Object(object)
        }
        other => other,
    }
}

fn edit(mut value: Value, f: &impl Fn(&mut Value)) -> Value {
    f(&mut value);
    value
}

/// What one step makes of one stored event: zero (dropped), one (changed or renamed) or several
/// (split) events, each as its type name and payload.
pub(crate) type StepFn = Arc<dyn Fn(Payload, Codec, &mut Made) -> Result<(), BoxError> + Send + Sync>;

/// What one step made of one event, each with its type name (`None`: the name it read), pushed
/// into a buffer the chain reuses from step to step.
pub(crate) type Made = Vec<(Option<String>, Payload)>;

/// A payload between steps: as stored (bytes in the store's codec), or parsed JSON, kept
/// parsed from one JSON step to the next so that a chain parses and writes it once.
pub(crate) enum Payload {
    /// As stored, with what the declarative steps before know of it as JSON text.
    Bytes(Vec<u8>, Known),
    Json(Value),
}

impl Payload {
    /// The JSON form (stores with the JSON codec only).
    pub(crate) fn into_json(self, codec: Codec) -> Result<Value, BoxError> {
        match self {
            Payload::Json(value) => Ok(value),
            Payload::Bytes(..) if !codec.is_json() => {
                Err(format!("a JSON upcaster cannot read a {} payload: use `typed`", codec.name()).into())
            }
            Payload::Bytes(bytes, _) => Ok(serde_json::from_slice(&bytes)?),
        }
    }

    /// The bytes in the store's codec.
    pub(crate) fn into_bytes(self) -> Result<Vec<u8>, BoxError> {
        match self {
            Payload::Bytes(bytes, _) => Ok(bytes),
            Payload::Json(value) => Ok(serde_json::to_vec(&value)?),
        }
    }
}

/// The upcasters of event type `E` (every type name it stores), built into a [`Chain`].
///
/// ```
/// use allframe_cqrs_core::Event;
/// use allframe_cqrs_versioning::Upcasters;
/// use serde::{Deserialize, Serialize};
///
/// // Version 3: `Deposited { cents }` (v1 was `MoneyDeposited { amount }`, v2 `Deposited { amount }`).
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum Account { Deposited { cents: u64 } }
/// impl Event for Account {
///     const SCHEMA_VERSION: u32 = 3;
/// }
///
/// let chain = Upcasters::<Account>::new()
///     .rename("MoneyDeposited", 1, "Deposited")
///     .json("Deposited", 2, |mut payload| {
///         let amount = payload["Deposited"]["amount"].take();
///         payload["Deposited"] = serde_json::json!({ "cents": amount });
///         Ok(payload)
///     })
///     .build()
///     .unwrap();
/// assert_eq!(chain.current_version(), 3);
/// ```
pub struct Upcasters<E> {
    steps: BTreeMap<(String, u32), StepFn>,
    /// The types each step turns events into, when known before it runs (not for `json_into`).
    outputs: BTreeMap<(String, u32), Vec<String>>,
    duplicates: Vec<(String, u32)>,
    _event: PhantomData<fn() -> E>,
}

impl<E> std::fmt::Debug for Upcasters<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters").field("steps", &self.steps.keys().collect::<Vec<_>>()).finish()
    }
}

impl<E: Event> Default for Upcasters<E> {
    fn default() -> Self {
        Upcasters { steps: BTreeMap::new(), outputs: BTreeMap::new(), duplicates: Vec::new(), _event: PhantomData }
    }
}

impl<E: Event> Upcasters<E> {
    /// No steps yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn step(mut self, event_type: &str, from: u32, outputs: Option<Vec<String>>, step: StepFn) -> Self {
        let key = (event_type.to_owned(), from);
        if self.steps.insert(key.clone(), step).is_some() {
            self.duplicates.push(key.clone());
        }
        match outputs {
            Some(outputs) => self.outputs.insert(key, outputs),
            None => self.outputs.remove(&key),
        };
        self
    }

    /// `event_type` at version `from` becomes version `from + 1` of the same type through `f`,
    /// on its JSON form (stores with the JSON codec).
    pub fn json(
        self,
        event_type: &str,
        from: u32,
        f: impl Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    ) -> Self {
        let same = Some(vec![event_type.to_owned()]);
        let step: StepFn = Arc::new(move |payload, codec, made| {
            made.push((None, Payload::Json(f(payload.into_json(codec)?)?)));
            Ok(())
        });
        self.step(event_type, from, same, step)
    }

    /// `event_type` at version `from` becomes the events `f` returns, each with its type name,
    /// at version `from + 1`: a split (several), a rename (another name), or a drop (none). On
    /// the JSON form.
    pub fn json_into(
        self,
        event_type: &str,
        from: u32,
        f: impl Fn(Value) -> Result<Vec<(String, Value)>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        let step: StepFn = Arc::new(move |payload, codec, made| {
            for (name, value) in f(payload.into_json(codec)?)? {
                made.push((Some(name), Payload::Json(value)));
            }
            Ok(())
        });
        self.step(event_type, from, None, step)
    }

    /// The member `field` of the object at `path` (a list of keys from the payload's root: for
    /// an enum event, its variant's name) is called `to` from version `from + 1` on. Declared
    /// rather than written as a closure, so that on a stored JSON payload it is an edit of the
    /// text (no parse into a `serde_json::Value`, no write back): a chain of such steps costs a
    /// fraction of a `json` step. A payload without that object or member is unchanged.
    pub fn rename_field(self, event_type: &str, from: u32, path: &[&str], field: &str, to: &str) -> Self {
        let path: Vec<String> = path.iter().map(|key| (*key).to_owned()).collect();
        let (field, to) = (field.to_owned(), to.to_owned());
        self.edit_step(
            event_type,
            from,
            {
                let (path, field, to) = (path.clone(), field.clone(), to.clone());
                let quoted = serde_json::to_vec(&to).unwrap_or_default();
                move |bytes: &mut Vec<u8>, known: &mut Known| {
                    json_edit::rename(bytes, known, &path, &field, &to, &quoted)
                }
            },
            move |value: &mut Value| {
                if let Some(object) = at_path(value, &path)
                    && let Some(member) = object.remove(&field)
                {
                    object.insert(to.clone(), member);
                }
            },
        )
    }

    /// The member `field` with `value` is added to the object at `path` (as for
    /// [`rename_field`](Self::rename_field)) where it is missing, from version `from + 1` on: a
    /// new field with a default, as an edit of the stored text.
    pub fn add_field(self, event_type: &str, from: u32, path: &[&str], field: &str, value: Value) -> Self {
        let path: Vec<String> = path.iter().map(|key| (*key).to_owned()).collect();
        let field = field.to_owned();
        let mut member = serde_json::to_vec(&field).unwrap_or_default();
        member.push(b':');
        member.extend(serde_json::to_vec(&value).unwrap_or_else(|_| b"null".to_vec()));
        self.edit_step(
            event_type,
            from,
            {
                let (path, field) = (path.clone(), field.clone());
                move |bytes: &mut Vec<u8>, known: &mut Known| json_edit::add(bytes, known, &path, &field, &member)
            },
            move |payload: &mut Value| {
                if let Some(object) = at_path(payload, &path) {
                    object.entry(field.clone()).or_insert_with(|| value.clone());
                }
            },
        )
    }

    /// A step that edits stored JSON text with `on_bytes` when it can, else the parsed value
    /// with `on_value` (a payload a JSON step before it already parsed, or text `on_bytes`
    /// declines).
    fn edit_step(
        self,
        event_type: &str,
        from: u32,
        on_bytes: impl Fn(&mut Vec<u8>, &mut Known) -> bool + Send + Sync + 'static,
        on_value: impl Fn(&mut Value) + Send + Sync + 'static,
    ) -> Self {
        let outputs = Some(vec![event_type.to_owned()]);
        let step: StepFn = Arc::new(move |payload, codec, made| {
            let (mut bytes, mut known) = match payload {
                Payload::Bytes(bytes, known) if codec.is_json() => (bytes, known),
                other => {
                    made.push((None, Payload::Json(edit(other.into_json(codec)?, &on_value))));
                    return Ok(());
                }
            };
            let edited = if on_bytes(&mut bytes, &mut known) {
                Payload::Bytes(bytes, known)
            } else {
                Payload::Json(edit(serde_json::from_slice(&bytes)?, &on_value))
            };
            made.push((None, edited));
            Ok(())
        });
        self.step(event_type, from, outputs, step)
    }

    /// `event_type` at version `from` is read under the name `to` from version `from + 1` on.
    /// With the JSON codec, the payload of an enum variant (an object whose one key is the old
    /// name, serde's external tag) gets the new name as its key; other payloads are unchanged.
    pub fn rename(self, event_type: &str, from: u32, to: &str) -> Self {
        let outputs = Some(vec![to.to_owned()]);
        let (old, to) = (event_type.to_owned(), to.to_owned());
        let quoted = serde_json::to_vec(&to).unwrap_or_default();
        let step: StepFn = Arc::new(move |payload, codec, made| {
            let renamed = match payload {
                payload if !codec.is_json() => payload,
                // The stored text's tag renamed in place, when that can be done with certainty.
                Payload::Bytes(mut bytes, mut known) => {
                    if json_edit::rename_tag(&mut bytes, &mut known, &old, &to, &quoted) {
                        Payload::Bytes(bytes, known)
                    } else {
                        Payload::Json(rename_tag(serde_json::from_slice(&bytes)?, &old, &to))
                    }
                }
                Payload::Json(value) => Payload::Json(rename_tag(value, &old, &to)),
            };
            made.push((Some(to.clone()), renamed));
            Ok(())
        });
        self.step(event_type, from, outputs, step)
    }

    /// `event_type` at version `from` is dropped: readers of version `from + 1` on never see it.
    pub fn drop_event(self, event_type: &str, from: u32) -> Self {
        let step: StepFn = Arc::new(|_, _, _| Ok(()));
        self.step(event_type, from, Some(Vec::new()), step)
    }

    /// `event_type` did not change from version `from` to `from + 1` (fills a version that a
    /// type with other steps skips, which is otherwise a gap).
    pub fn unchanged(self, event_type: &str, from: u32) -> Self {
        let outputs = Some(vec![event_type.to_owned()]);
        let step: StepFn = Arc::new(|payload, _, made| {
            made.push((None, payload));
            Ok(())
        });
        self.step(event_type, from, outputs, step)
    }

    /// `event_type` at version `from`, decoded as `Old` with the store's codec (any codec),
    /// becomes `f(old)` under the name `to` at version `from + 1`: for binary codecs, where
    /// there is no JSON form to edit.
    pub fn typed<Old, New>(
        self,
        event_type: &str,
        from: u32,
        to: &str,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Self
    where
        Old: DeserializeOwned + 'static,
        New: Serialize + 'static,
    {
        let outputs = Some(vec![to.to_owned()]);
        let to = to.to_owned();
        let step: StepFn = Arc::new(move |payload, codec, made| {
            let old: Old = codec.decode(&payload.into_bytes()?)?;
            made.push((Some(to.clone()), Payload::Bytes(codec.encode(&f(old))?, Known::Unread)));
            Ok(())
        });
        self.step(event_type, from, outputs, step)
    }

    /// Checks the chain and builds it: every step reads a version below `E::SCHEMA_VERSION`;
    /// no (type, version) has two steps; wherever an event of a type with steps can be (from
    /// the type's first step, and wherever a rename, a typed step or an unchanged one sends
    /// events) there is a step for it (no gap); the types the chain ends at are ones `E` reads
    /// (`Event::EVENT_TYPES`, when listed). What a `json_into` step makes is checked when it
    /// runs. Each step raises the version by one, so a chain cannot loop.
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`ChainError`].
    pub fn build(self) -> Result<Chain, ChainError> {
        let current = E::SCHEMA_VERSION;
        if let Some((event_type, from)) = self.duplicates.first() {
            return Err(ChainError::Duplicate { event_type: event_type.clone(), from: *from });
        }
        let mut first: BTreeMap<&str, u32> = BTreeMap::new();
        for (event_type, from) in self.steps.keys() {
            if *from == 0 || *from >= current {
                return Err(ChainError::BeyondCurrent { event_type: event_type.clone(), from: *from, current });
            }
            first.entry(event_type.as_str()).or_insert(*from);
        }
        // Walk every (type, version) an event can be at: from each type's first step, and
        // wherever a step with known outputs sends events. A type with steps must have one at
        // each of them; a type without steps reads the same at every version.
        let mut reached: Vec<(String, u32)> = first.iter().map(|(t, v)| ((*t).to_owned(), *v)).collect();
        let mut seen = std::collections::BTreeSet::new();
        while let Some((event_type, at)) = reached.pop() {
            if at >= current || !first.contains_key(event_type.as_str()) || !seen.insert((event_type.clone(), at)) {
                continue;
            }
            if !self.steps.contains_key(&(event_type.clone(), at)) {
                return Err(ChainError::Gap { event_type, missing: at, current });
            }
            for target in self.outputs.get(&(event_type.clone(), at)).into_iter().flatten() {
                if at + 1 == current && !E::EVENT_TYPES.is_empty() && !E::EVENT_TYPES.contains(&target.as_str()) {
                    return Err(ChainError::UnknownTarget { event_type, from: at, target: target.clone() });
                }
                reached.push((target.clone(), at + 1));
            }
        }
        Ok(Chain::new(self.steps, current, E::EVENT_TYPES))
    }
}
