//! Size probe for the facade feature `cqrs`: a real append and read through the typed store.

use allframe::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ping {
    n: u64,
}

impl Event for Ping {
    fn event_type(&self) -> &'static str {
        "Ping"
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let store = EventStore::new();
    let n = std::env::args().count() as u64;
    if let Err(error) = store.append("probe", vec![Ping { n }]).await {
        eprintln!("{error}");
    }
    match store.get_events("probe").await {
        Ok(events) => println!("{}", events.iter().map(|e| e.n).sum::<u64>()),
        Err(error) => eprintln!("{error}"),
    }
}
