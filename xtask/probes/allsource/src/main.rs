//! Size probe: allframe-backend-allsource used directly. A real append and read through the typed store, so nothing is
//! optimised away.

use allframe_backend_allsource::AllSourceBackend;
use allframe_cqrs_core::{Event, EventStore};
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
    let target = std::env::args().nth(1).unwrap_or_default();
    let backend = match AllSourceBackend::production(&target) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("{error}");
            return;
        }
    };
    let store = EventStore::with_backend(backend);
    let n = std::env::args().count() as u64;
    if let Err(error) = store.append("probe", vec![Ping { n }]).await {
        eprintln!("{error}");
    }
    match store.get_events("probe").await {
        Ok(events) => println!("{}", events.iter().map(|e: &Ping| e.n).sum::<u64>()),
        Err(error) => eprintln!("{error}"),
    }
}
