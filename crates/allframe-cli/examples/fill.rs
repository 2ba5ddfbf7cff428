//! Fills a new AllSource store with sample events, to try `allframe copy` on:
//! `cargo run --release -p allframe-cli --example fill -- ./data 200000 100`
//! (directory, events, streams; events go in as appends of 10 per stream, round robin).

use allframe::allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe::{EventStoreBackend, ExpectedVersion, NewEvent};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: fill DIR [EVENTS] [STREAMS]")?;
    let events: u64 = args.get(1).map_or(Ok(200_000), |a| a.parse())?;
    let streams: u64 = args.get(2).map_or(Ok(100), |a| a.parse())?;
    let config = AllSourceConfig::durable(dir).sync(SyncMode::NoSync);
    let backend = AllSourceBackend::with_config(config)?;
    for n in (0..events).step_by(10) {
        let batch = (n..(n + 10).min(events))
            .map(|i| {
                let payload = format!(
                    r#"{{"order_id":"order-{i:010}","customer_id":"customer-{:06}","lines":[["SKU-RED-SHOE-42",1,8999],["SKU-SOCKS-3PK",2,1299]],"currency":"EUR","note":"leave at the door"}}"#,
                    i % 100_000
                );
                NewEvent::new("OrderPlaced", payload)
            })
            .collect();
        backend.append(&format!("order-stream-{}", (n / 10) % streams), ExpectedVersion::Any, batch).await?;
    }
    backend.flush().await?;
    println!("{events} events in {streams} streams written to {dir}");
    Ok(())
}
