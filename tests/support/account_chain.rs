//! The account events' chain from version 1 to 3 shared by the registry and migration tests:
//! v1 `MoneyDeposited { amount }` → v2 `Deposited { amount }` → v3 `Deposited { cents }`;
//! `Transferred` (unchanged at v2) splits at v3 into a withdrawal and a deposit; `Audited` is
//! dropped at v2. Generic over the event type, so that the tests can pair it with variants of
//! version 3 that break it.

#![allow(dead_code)]

use allframe::cqrs::{Event, Upcasters};
use serde_json::json;

/// The steps, not yet built.
pub fn upcasters<E: Event>() -> Upcasters<E> {
    Upcasters::<E>::new()
        .rename("MoneyDeposited", 1, "Deposited")
        .unchanged("Deposited", 1)
        .json("Deposited", 2, |mut payload| {
            let amount = payload["Deposited"]["amount"].take();
            payload["Deposited"] = json!({ "cents": amount });
            Ok(payload)
        })
        .unchanged("Transferred", 1)
        .json_into("Transferred", 2, |payload| {
            let amount = payload["Transferred"]["amount"].clone();
            Ok(vec![
                ("Withdrawn".into(), json!({ "Withdrawn": { "cents": amount } })),
                ("Deposited".into(), json!({ "Deposited": { "cents": amount } })),
            ])
        })
        .drop_event("Audited", 1)
}
