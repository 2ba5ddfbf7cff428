// The body every size probe shares, included with `include!("../../probe.rs")` after the probe
// has imported `Event`, `EventStore` and written `async fn open()`, which returns its store.
// It does a real append and read through the typed store, so link-time optimisation cannot
// remove the backend.

/// The probe's event.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    let store = match open(&target).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("{error}");
            return;
        }
    };
    let n = std::env::args().count() as u64;
    if let Err(error) = store.append("probe", vec![Ping { n }]).await {
        eprintln!("{error}");
    }
    match store.get_events("probe").await {
        Ok(events) => println!("{}", events.iter().map(|e: &Ping| e.n).sum::<u64>()),
        Err(error) => eprintln!("{error}"),
    }
}
