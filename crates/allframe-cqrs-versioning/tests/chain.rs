//! Building chains (each refusal with its message) and applying them: renames, JSON changes,
//! splits, drops, typed steps on postcard, types without steps, current and newer versions.

use allframe_cqrs_core::{Codec, Event};
use allframe_cqrs_versioning::{ChainError, Upcasters};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Version 3 of an account's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Account {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

impl Event for Account {
    const SCHEMA_VERSION: u32 = 3;
    const EVENT_TYPES: &'static [&'static str] = &["Opened", "Deposited", "Withdrawn"];
}

/// v1 `MoneyDeposited { amount }` → v2 `Deposited { amount }` → v3 `Deposited { cents }`;
/// v2 `Transferred { amount }` splits into a withdrawal and a deposit at v3; v1 `Audited` is
/// dropped at v2.
fn chain() -> allframe_cqrs_versioning::Chain {
    Upcasters::<Account>::new()
        .rename("MoneyDeposited", 1, "Deposited")
        .unchanged("Deposited", 1)
        .json("Deposited", 2, |mut payload| {
            let amount = payload["Deposited"]["amount"].take();
            payload["Deposited"] = json!({ "cents": amount });
            Ok(payload)
        })
        .json_into("Transferred", 2, |payload| {
            let amount = payload["Transferred"]["amount"].clone();
            Ok(vec![
                ("Withdrawn".into(), json!({ "Withdrawn": { "cents": amount } })),
                ("Deposited".into(), json!({ "Deposited": { "cents": amount } })),
            ])
        })
        .drop_event("Audited", 1)
        .unchanged("Audited", 2)
        .build()
        .unwrap()
}

fn read(
    chain: &allframe_cqrs_versioning::Chain,
    event_type: &str,
    version: u32,
    payload: Value,
) -> Option<Vec<Account>> {
    let bytes = serde_json::to_vec(&payload).unwrap();
    chain
        .apply(event_type, version, &bytes, Codec::Json)
        .unwrap()
        .map(|events| events.into_iter().map(|(_, payload)| serde_json::from_slice(&payload).unwrap()).collect())
}

#[test]
fn every_version_reads_as_the_current_one() {
    let chain = chain();
    let v1 = json!({ "MoneyDeposited": { "amount": 5 } });
    assert_eq!(
        read(&chain, "MoneyDeposited", 1, v1),
        Some(vec![Account::Deposited { cents: 5 }]),
        "rename, then a field"
    );
    let v2 = json!({ "Deposited": { "amount": 7 } });
    assert_eq!(read(&chain, "Deposited", 2, v2), Some(vec![Account::Deposited { cents: 7 }]));
    let split = json!({ "Transferred": { "amount": 9 } });
    assert_eq!(
        read(&chain, "Transferred", 2, split),
        Some(vec![Account::Withdrawn { cents: 9 }, Account::Deposited { cents: 9 }])
    );
    assert_eq!(read(&chain, "Audited", 1, json!({ "Audited": {} })), Some(vec![]), "dropped");
    // Current (or newer) events, and types that never changed, are left as they are.
    assert_eq!(read(&chain, "Deposited", 3, json!({ "Deposited": { "cents": 1 } })), None);
    assert_eq!(read(&chain, "Deposited", 4, json!({ "Deposited": { "cents": 1 } })), None);
    assert_eq!(read(&chain, "Opened", 1, json!({ "Opened": { "owner": "ada" } })), None);
}

#[test]
fn a_failing_step_or_a_version_no_step_reads_is_an_error_naming_it() {
    let chain = chain();
    let not_json = chain.apply("Deposited", 2, b"not json", Codec::Json).unwrap_err().to_string();
    assert!(not_json.starts_with("upcasting `Deposited` from schema version 2:"), "{not_json}");
    let postcard = chain.apply("Deposited", 2, b"\x07", Codec::Postcard).unwrap_err().to_string();
    assert!(postcard.contains("a JSON upcaster cannot read a postcard payload"), "{postcard}");
    // `Transferred` has steps from v2 only: a v1 one has no chain.
    let early = chain.apply("Transferred", 1, b"{}", Codec::Json).unwrap_err().to_string();
    assert_eq!(early, "no upcaster reads `Transferred` at schema version 1");
}

#[test]
fn typed_steps_work_on_binary_codecs() {
    #[derive(Serialize, Deserialize)]
    enum Old {
        Deposited { amount: u32 },
    }
    let chain = Upcasters::<Account>::new()
        .typed::<Old, Account>("Deposited", 1, "Deposited", |Old::Deposited { amount }| Account::Deposited {
            cents: u64::from(amount) * 100,
        })
        .unchanged("Deposited", 2)
        .build()
        .unwrap();
    let stored = Codec::Postcard.encode(&Old::Deposited { amount: 3 }).unwrap();
    let events = chain.apply("Deposited", 1, &stored, Codec::Postcard).unwrap().unwrap();
    let current: Account = Codec::Postcard.decode(&events[0].1).unwrap();
    assert_eq!(current, Account::Deposited { cents: 300 });
}

#[test]
fn broken_chains_are_refused_at_start_up_with_what_breaks() {
    let cases: Vec<(Upcasters<Account>, ChainError, &str)> = vec![
        (
            Upcasters::new().unchanged("Deposited", 1).unchanged("Deposited", 1).unchanged("Deposited", 2),
            ChainError::Duplicate { event_type: "Deposited".into(), from: 1 },
            "two upcasters read `Deposited` at schema version 1",
        ),
        (
            Upcasters::new().unchanged("Deposited", 3),
            ChainError::BeyondCurrent { event_type: "Deposited".into(), from: 3, current: 3 },
            "an upcaster reads `Deposited` at schema version 3, but the current version is 3",
        ),
        (
            Upcasters::new().unchanged("Deposited", 0),
            ChainError::BeyondCurrent { event_type: "Deposited".into(), from: 0, current: 3 },
            "an upcaster reads `Deposited` at schema version 0, but the current version is 3",
        ),
        (
            Upcasters::new().unchanged("Deposited", 1),
            ChainError::Gap { event_type: "Deposited".into(), missing: 2, current: 3 },
            "`Deposited` has no upcaster from schema version 2 (the current version is 3); add one, or \
             `unchanged(\"Deposited\", 2)` if it did not change",
        ),
        (
            Upcasters::new().unchanged("Opened", 1).rename("Opened", 2, "Created"),
            ChainError::UnknownTarget { event_type: "Opened".into(), from: 2, target: "Created".into() },
            "the upcaster of `Opened` at schema version 2 makes `Created`, which the event type does not read",
        ),
    ];
    for (upcasters, expected, message) in cases {
        let error = upcasters.build().unwrap_err();
        assert_eq!(error, expected);
        assert_eq!(error.to_string(), message);
    }
}
