//! Size probe: the command bus taking a command by name as JSON, checked against its JSON
//! Schema (feature `cqrs-json-schema`), as an HTTP endpoint would.

use std::sync::Arc;

use allframe::cqrs::*;

include!("../../counter.rs");

#[command(stream = "counter-{name}", schema)]
#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Bump {
    name: String,
    by: u32,
}

#[command_handler]
fn bump(_: &Counter, command: &Bump) -> Result<Vec<CounterEvent>, NoError> {
    Ok(vec![CounterEvent::Bumped { by: command.by }])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bus = CommandBus::builder(Arc::new(InMemoryBackend::new())).discover().build().expect("wired");
    let body = std::env::args().nth(1).unwrap_or_else(|| r#"{"name":"a","by":1}"#.into());
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match bus.dispatch_json("Bump", json, CommandOptions::new()).await {
        Ok(outcome) => println!("{}", outcome.stream_version),
        Err(error) => eprintln!("{error}"),
    }
}
