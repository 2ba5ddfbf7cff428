//! Size probe: the schema registry with the feature `cqrs-schema-registry`: version 1 of an
//! event type registered, then version 2 (a field renamed through an upcaster) checked for
//! backward compatibility and registered, and the registry read back.

use allframe::cqrs::*;

mod v1 {
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, allframe::cqrs::Event, schemars::JsonSchema)]
    pub enum CounterEvent {
        Incremented { n: u32 },
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, Event, schemars::JsonSchema)]
#[event(version = 2)]
enum CounterEvent {
    Incremented { by: u32 },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = InMemoryBackend::new();
    let first = Upcasters::<v1::CounterEvent>::new().build().expect("a sound chain");
    SchemaRegistration::<v1::CounterEvent>::new(&first).register(&store).await.expect("registered");
    let chain = Upcasters::<CounterEvent>::new()
        .json("Incremented", 1, |mut stored| {
            let n = stored["Incremented"]["n"].take();
            stored["Incremented"] = serde_json::json!({ "by": n });
            Ok(stored)
        })
        .build()
        .expect("a sound chain");
    let registered = SchemaRegistration::<CounterEvent>::new(&chain).register(&store).await.expect("compatible");
    let registry = SchemaRegistry::load(&store).await.expect("read");
    println!(
        "{} registered; Incremented has {} versions",
        registered.registered.len(),
        registry.versions("Incremented").count()
    );
}
