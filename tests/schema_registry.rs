//! The schema registry kept in the store (issue 20), on all four backends: versions 1, 2 and 3
//! of an account's events registered in turn through their chains (a rename, a split, a drop, a
//! field changed), each refusal with its message (a new required field, a changed type, a
//! forward break, a type no longer read, a schema changed without a new version, an older
//! build), nothing stored by a refusal, concurrent registrations (one wins), and the registry
//! surviving a reopen and travelling with a copy.

#[path = "support/account_chain.rs"]
mod account_chain;
#[path = "support/hooked.rs"]
mod hooked;
#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;

use allframe::DynBackend;
use allframe::cqrs::versioning::{SCHEMAS_STREAM, Step};
use allframe::cqrs::*;
use allframe::migrate::{CopyOptions, copy_store};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Holds the first two appends to the registry until both have arrived: two registrations that
/// both read the registry before either wrote, every time.
struct BothRead(tokio::sync::Barrier);

#[allframe::async_trait]
impl hooked::AppendHook for BothRead {
    async fn before(&self, stream: &str, call: usize) -> allframe::Result<()> {
        if stream == SCHEMAS_STREAM && call < 2 {
            self.0.wait().await;
        }
        Ok(())
    }
}

mod v1 {
    use super::*;
    /// Version 1, as the first build stored it.
    #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
    pub enum Account {
        Opened { owner: String },
        MoneyDeposited { amount: u64 },
        Transferred { amount: u64 },
        Audited { by: String },
    }
    pub fn chain() -> Chain {
        Upcasters::<Account>::new().build().unwrap()
    }
}

mod v2 {
    use super::*;
    /// Version 2: `MoneyDeposited` renamed, `Audited` dropped.
    #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
    #[event(version = 2)]
    pub enum Account {
        Opened { owner: String },
        Deposited { amount: u64 },
        Transferred { amount: u64 },
    }
    pub fn chain() -> Chain {
        Upcasters::<Account>::new()
            .rename("MoneyDeposited", 1, "Deposited")
            .unchanged("Transferred", 1)
            .drop_event("Audited", 1)
            .build()
            .unwrap()
    }
    /// Version 2 as a careless build would change it: an amount as text, same version.
    pub mod changed {
        use super::*;
        #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
        #[event(version = 2)]
        pub enum Account {
            Opened { owner: String },
            Deposited { amount: String },
            Transferred { amount: u64 },
        }
        /// (With a step of its own, so that nothing it stores is the same record as v2's.)
        pub fn chain() -> Chain {
            Upcasters::<Account>::new()
                .rename("MoneyDeposited", 1, "Deposited")
                .unchanged("Transferred", 1)
                .unchanged("Opened", 1)
                .drop_event("Audited", 1)
                .build()
                .unwrap()
        }
    }
}

/// Version 3: amounts in cents; a transfer split into a withdrawal and a deposit.
mod v3 {
    use super::*;
    #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
    #[event(version = 3)]
    pub enum Account {
        Opened { owner: String },
        Deposited { cents: u64 },
        Withdrawn { cents: u64 },
    }
    pub use super::account_chain::upcasters;
    pub fn chain() -> Chain {
        upcasters::<Account>().build().unwrap()
    }

    /// Version 3 with a new field that has no default and that no upcaster fills.
    pub mod required_field {
        use super::*;
        #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
        #[event(version = 3)]
        pub enum Account {
            Opened { owner: String },
            Deposited { cents: u64, currency: String },
            Withdrawn { cents: u64 },
        }
    }
    /// Version 3 with `cents` as text.
    pub mod changed_type {
        use super::*;
        #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
        #[event(version = 3)]
        pub enum Account {
            Opened { owner: String },
            Deposited { cents: String },
            Withdrawn { cents: u64 },
        }
    }
    /// Version 3 with `owner` renamed to `name` (no upcaster), which older readers miss.
    pub mod renamed_field {
        use super::*;
        #[derive(Clone, Debug, Serialize, Deserialize, Event, JsonSchema)]
        #[event(version = 3)]
        pub enum Account {
            Opened {
                #[serde(default)]
                name: String,
            },
            Deposited {
                cents: u64,
            },
            Withdrawn {
                cents: u64,
            },
        }
    }
    /// Version 3 whose chain forgot that transfers are split: the type is no longer read.
    pub mod forgot_transfers {
        use super::*;
        pub fn chain() -> Chain {
            Upcasters::<v3::Account>::new()
                .rename("MoneyDeposited", 1, "Deposited")
                .unchanged("Deposited", 1)
                .json("Deposited", 2, |mut payload| {
                    let amount = payload["Deposited"]["amount"].take();
                    payload["Deposited"] = json!({ "cents": amount });
                    Ok(payload)
                })
                .drop_event("Audited", 1)
                .build()
                .unwrap()
        }
    }
}

async fn stored_records(backend: &DynBackend) -> u64 {
    backend.stream_version(SCHEMAS_STREAM).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_register_in_turn_and_breaking_changes_are_refused_with_what_breaks_on_every_backend() {
    for target in targets::targets("schemas").await {
        let name = target.name;
        let backend = target.open().await;

        let first = SchemaRegistration::<v1::Account>::new(&v1::chain()).register(&*backend).await.unwrap();
        assert_eq!(first.registered.len(), 4, "{name}: {first:?}");
        assert!(first.chain_recorded, "{name}");
        let again = SchemaRegistration::<v1::Account>::new(&v1::chain()).register(&*backend).await.unwrap();
        assert_eq!((again.registered.len(), again.unchanged, again.chain_recorded), (0, 4, false), "{name}");
        assert_eq!(stored_records(&backend).await, 5, "{name}: registering again stores nothing");

        let second = SchemaRegistration::<v2::Account>::new(&v2::chain()).register(&*backend).await.unwrap();
        assert_eq!(second.registered, [("Deposited".into(), 2), ("Opened".into(), 2), ("Transferred".into(), 2)]);

        // A schema changed under the same version is refused.
        let error = SchemaRegistration::<v2::changed::Account>::new(&v2::changed::chain())
            .register(&*backend)
            .await
            .unwrap_err();
        assert!(matches!(&error, RegistryError::Changed { event_type, version: 2, .. } if event_type == "Deposited"));
        assert!(error.to_string().contains("raise the event type's version"), "{error}");

        let before = stored_records(&backend).await;
        // A new required field that stored events lack and no upcaster fills.
        let error = SchemaRegistration::<v3::required_field::Account>::new(
            &v3::upcasters::<v3::required_field::Account>().build().unwrap(),
        )
        .register(&*backend)
        .await
        .unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(&error, RegistryError::Incompatible { event_type, direction: "backward", .. } if event_type == "Deposited"),
            "{name}: {error:?}"
        );
        assert!(text.contains("at `/Deposited`") && text.contains("\"currency\" is a required property"), "{text}");
        assert!(text.contains("for example {\"Deposited\":{\"amount\":0}}"), "{text}");

        // A field whose type changed.
        let error = SchemaRegistration::<v3::changed_type::Account>::new(
            &v3::upcasters::<v3::changed_type::Account>().build().unwrap(),
        )
        .register(&*backend)
        .await
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("at `/Deposited/cents`") && text.contains("is not of type \"string\""), "{text}");

        // A field renamed: new readers cope (it has a default), old ones do not (forward).
        let renamed = v3::upcasters::<v3::renamed_field::Account>().build().unwrap();
        let error = SchemaRegistration::<v3::renamed_field::Account>::new(&renamed)
            .compatibility("Opened", Compatibility::Forward)
            .register(&*backend)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(matches!(&error, RegistryError::Incompatible { direction: "forward", .. }), "{error:?}");
        assert!(text.contains("at `/Opened`") && text.contains("\"owner\" is a required property"), "{text}");

        // A stored type the new chain no longer reads.
        let error = SchemaRegistration::<v3::Account>::new(&v3::forgot_transfers::chain())
            .register(&*backend)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("it is read as `Transferred`, which version 3 does not have"), "{error}");
        assert_eq!(stored_records(&backend).await, before, "{name}: a refusal stores nothing");

        // The real version 3: every stored version reads through the chain.
        let third = SchemaRegistration::<v3::Account>::new(&v3::chain()).register(&*backend).await.unwrap();
        assert_eq!(third.registered.len(), 3, "{name}: {third:?}");
        // An older build starting on the store afterwards is told.
        let error = SchemaRegistration::<v2::Account>::new(&v2::chain()).register(&*backend).await.unwrap_err();
        assert!(matches!(error, RegistryError::Newer { stored: 3, current: 2, .. }), "{error:?}");

        let registry = SchemaRegistry::load(&*backend).await.unwrap();
        assert_eq!(
            registry.versions("Deposited").map(|s| s.version).collect::<Vec<_>>(),
            [2, 3],
            "{name}: Deposited's versions"
        );
        assert_eq!(
            registry.latest("Deposited").unwrap().schema["properties"]["Deposited"]["required"],
            json!(["cents"])
        );
        let (shape, _) = registry.chain().unwrap();
        assert_eq!(shape.version, 3);
        assert!(shape.steps.contains(&Step { event_type: "Transferred".into(), from: 2 }));
        assert!(shape.reads("MoneyDeposited", 1).is_ok() && shape.reads("Opened", 2).is_ok());
        assert!(shape.reads("Withdrawn", 4).is_err());

        // It travels with a copy, and survives a reopen.
        let copy: DynBackend = Arc::new(InMemoryBackend::new());
        copy_store(&*backend, &*copy, CopyOptions::default(), |_| {}).await.unwrap();
        let copied = SchemaRegistry::load(&*copy).await.unwrap();
        for event_type in registry.event_types() {
            let versions =
                |r: &SchemaRegistry| r.versions(event_type).map(|s| (s.version, s.schema.clone())).collect::<Vec<_>>();
            assert_eq!(versions(&copied), versions(&registry), "{name}: copied {event_type}");
        }
        if target.durable {
            drop(backend);
            let reopened = target.open().await;
            let read = SchemaRegistry::load(&*reopened).await.unwrap();
            assert_eq!(read.event_types().count(), registry.event_types().count(), "{name}: reopened");
            assert_eq!(read.chain().map(|(s, _)| s.clone()), registry.chain().map(|(s, _)| s.clone()));
        }
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_builds_registering_one_version_with_different_schemas_at_once_one_wins_on_every_backend() {
    for target in targets::targets("schemas_race").await {
        let name = target.name;
        let backend = target.open().await;
        // Six instances of one build starting at once store each record once.
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let backend = Arc::clone(&backend);
            tasks.push(tokio::spawn(async move {
                SchemaRegistration::<v1::Account>::new(&v1::chain()).register(&*backend).await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(stored_records(&backend).await, 5, "{name}: 4 schemas and a chain, once each");
        for round in 0..4 {
            // Version 2 registered by two builds at once (later rounds: the store has one).
            let gated: DynBackend =
                Arc::new(hooked::Hooked::new(Arc::clone(&backend), BothRead(tokio::sync::Barrier::new(2))));
            let (a, b) = (Arc::clone(&gated), Arc::clone(&gated));
            let one = tokio::spawn(async move {
                SchemaRegistration::<v2::Account>::new(&v2::chain()).register(&*a).await.map(|_| "v2")
            });
            let other = tokio::spawn(async move {
                // (Checked with no compatibility mode: its amounts cannot read version 1's.)
                SchemaRegistration::<v2::changed::Account>::new(&v2::changed::chain())
                    .default_compatibility(Compatibility::None)
                    .register(&*b)
                    .await
                    .map(|_| "changed")
            });
            let results = [one.await.unwrap(), other.await.unwrap()];
            let won: Vec<&str> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
            if round == 0 {
                assert_eq!(won.len(), 1, "{name}: exactly one registration wins: {results:?}");
                let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
                assert!(matches!(lost, RegistryError::Changed { version: 2, .. }), "{name}: {lost:?}");
                let registry = SchemaRegistry::load(&*backend).await.unwrap();
                let amount =
                    &registry.get("Deposited", 2).unwrap().schema["properties"]["Deposited"]["properties"]["amount"];
                let expected = if won[0] == "v2" { "integer" } else { "string" };
                assert_eq!(amount["type"], json!(expected), "{name}: the registry holds the winner's schema");
            } else {
                // Later rounds: the winner's build registers nothing more; the other is refused.
                assert_eq!(won.len(), 1, "{name}: round {round}: {results:?}");
            }
        }
        target.cleanup().await;
    }
}
