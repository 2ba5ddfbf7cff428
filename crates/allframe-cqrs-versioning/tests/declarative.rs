//! The declarative steps (`rename_field`, `add_field`) edit stored JSON text without parsing it;
//! whatever the payload, what they make must be what the same edit of the parsed value makes:
//! checked on random documents (nested objects and arrays, escapes, the names involved placed
//! anywhere, taken or missing), as text and after a JSON step that parsed it; and for random
//! chains of such steps at several depths, which hand the text and what they know of it (the
//! offsets of its members, moved by each edit) from one step to the next.

use allframe_cqrs_core::{Codec, Event};
use allframe_cqrs_versioning::{Chain, Upcasters};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Any;

impl Event for Any {
    const SCHEMA_VERSION: u32 = 3;
}

/// Keys drawn from the names the steps use, so that they meet them often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Placed".to_owned()),
        Just("order".to_owned()),
        Just("order_id".to_owned()),
        Just("channel".to_owned()),
        Just("or\"der".to_owned()),
        "[a-z]{1,3}",
    ]
}

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z \"\\\\{}\\[\\],:]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Some documents as a `Placed` variant would store them.
fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        document(),
        document().prop_map(|inner| json!({ "Placed": inner })),
        (key(), document()).prop_map(|(tag, inner)| json!({ tag: inner })),
    ]
}

fn declarative() -> Chain {
    Upcasters::<Any>::new()
        .rename_field("Placed", 1, &["Placed"], "order", "order_id")
        .add_field("Placed", 2, &["Placed"], "channel", json!({ "name": "web", "n": [1] }))
        .build()
        .unwrap()
}

fn on_values() -> Chain {
    Upcasters::<Any>::new()
        .json("Placed", 1, |mut payload| {
            if let Some(object) = payload.get_mut("Placed").and_then(Value::as_object_mut)
                && let Some(order) = object.remove("order")
            {
                object.insert("order_id".into(), order);
            }
            Ok(payload)
        })
        .json("Placed", 2, |mut payload| {
            if let Some(object) = payload.get_mut("Placed").and_then(Value::as_object_mut) {
                object.entry("channel").or_insert(json!({ "name": "web", "n": [1] }));
            }
            Ok(payload)
        })
        .build()
        .unwrap()
}

/// One declarative step, to be built both ways.
#[derive(Clone, Debug)]
enum Edit {
    Rename {
        path: Vec<&'static str>,
        field: String,
        to: String,
    },
    Add {
        path: Vec<&'static str>,
        field: String,
        value: Value,
    },
    /// The type renamed (`rename`): its external tag too.
    Tag {
        to: String,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let path = prop_oneof![Just(vec![]), Just(vec!["Placed"]), Just(vec!["Placed", "order"]), Just(vec!["order_id"])];
    let value = prop_oneof![Just(json!("web")), Just(json!({ "order": 1, "k": [2] })), Just(json!({}))];
    prop_oneof![
        (path.clone(), key(), key()).prop_map(|(path, field, to)| Edit::Rename { path, field, to }),
        (path, key(), value).prop_map(|(path, field, value)| Edit::Add { path, field, value }),
        key().prop_map(|to| Edit::Tag { to }),
    ]
}

/// Six versions of steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seven;

impl Event for Seven {
    const SCHEMA_VERSION: u32 = 7;
}

/// `edits` as declarative steps, and as `json` steps doing the same to the parsed value.
fn both_ways(edits: &[Edit]) -> (Chain, Chain) {
    let (mut declared, mut values) = (Upcasters::<Seven>::new(), Upcasters::<Seven>::new());
    let mut name = "Placed".to_owned();
    for (from, edit) in (1..).zip(edits.iter().cloned()) {
        let object_at = |value: &mut Value, path: &[&str]| -> Option<serde_json::Map<String, Value>> {
            path.iter().try_fold(&mut *value, |value, key| value.get_mut(*key))?.as_object().cloned()
        };
        match edit {
            Edit::Rename { path, field, to } => {
                declared = declared.rename_field(&name, from, &path, &field, &to);
                values = values.json(&name, from, move |mut payload| {
                    if let Some(mut object) = object_at(&mut payload, &path)
                        && let Some(member) = object.remove(&field)
                    {
                        object.insert(to.clone(), member);
                        *path.iter().fold(&mut payload, |value, key| &mut value[*key]) = Value::Object(object);
                    }
                    Ok(payload)
                });
            }
            Edit::Add { path, field, value } => {
                declared = declared.add_field(&name, from, &path, &field, value.clone());
                values = values.json(&name, from, move |mut payload| {
                    if let Some(mut object) = object_at(&mut payload, &path) {
                        object.entry(field.clone()).or_insert_with(|| value.clone());
                        *path.iter().fold(&mut payload, |value, key| &mut value[*key]) = Value::Object(object);
                    }
                    Ok(payload)
                });
            }
            Edit::Tag { to } => {
                declared = declared.rename(&name, from, &to);
                let (old, new) = (name.clone(), to.clone());
                values = values.json_into(&name, from, move |payload| {
                    let renamed = match payload {
                        Value::Object(mut object) if object.len() == 1 && object.contains_key(&old) => {
                            let inner = object.remove(&old).unwrap();
                            object.insert(new.clone(), inner);
                            Value::Object(object)
                        }
                        other => other,
                    };
                    Ok(vec![(new.clone(), renamed)])
                });
                name = to;
            }
        }
    }
    (declared.build().unwrap(), values.build().unwrap())
}

fn read(chain: &Chain, text: &[u8]) -> Option<Value> {
    read_named(chain, text).map(|(_, value)| value)
}

/// The one event `chain` makes of `text`, with its type name.
fn read_named(chain: &Chain, text: &[u8]) -> Option<(String, Value)> {
    let upcast = chain.apply("Placed", 1, text, Codec::Json).ok()??;
    assert_eq!(upcast.len(), 1);
    Some((upcast[0].0.to_string(), serde_json::from_slice(&upcast[0].1).ok()?))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn declarative_steps_make_what_the_same_edit_of_the_parsed_value_makes(payload in payload(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_vec_pretty(&payload) } else { serde_json::to_vec(&payload) }.unwrap();
        prop_assert_eq!(read(&declarative(), &text), read(&on_values(), &text));
    }

    #[test]
    fn chains_of_declarative_steps_make_what_the_same_edits_of_the_parsed_value_make(
        payload in payload(),
        edits in prop::collection::vec(edit(), 6),
        pretty in any::<bool>(),
    ) {
        let text = if pretty { serde_json::to_vec_pretty(&payload) } else { serde_json::to_vec(&payload) }.unwrap();
        let (declared, values) = both_ways(&edits);
        prop_assert_eq!(read_named(&declared, &text), read_named(&values, &text));
    }
}

#[test]
fn after_a_step_that_parsed_the_payload_they_edit_the_value() {
    let chain = Upcasters::<Any>::new()
        .json("Placed", 1, |mut payload| {
            payload["Placed"]["order"] = json!(7);
            Ok(payload)
        })
        .rename_field("Placed", 2, &["Placed"], "order", "order_id")
        .build()
        .unwrap();
    let text = br#"{"Placed":{"x":1}}"#;
    let out = chain.apply("Placed", 1, text, Codec::Json).unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out[0].1).unwrap(), json!({ "Placed": { "x": 1, "order_id": 7 } }));
}

#[test]
fn text_that_is_not_json_fails_the_read_as_a_json_step_does() {
    assert!(declarative().apply("Placed", 1, br#"{"Placed":{"order":1"#, Codec::Json).is_err());
    assert!(on_values().apply("Placed", 1, br#"{"Placed":{"order":1"#, Codec::Json).is_err());
}
