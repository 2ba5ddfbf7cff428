//! Size probe: the feature `prometheus`: the Prometheus recorder installed, `/metrics` and
//! `/health` served over HTTP for a `Metered` memory store, and the figures rendered once.

use std::sync::Arc;

use allframe::prelude::*;
use allframe::prometheus::Exporter;
use allframe::{InMemoryBackend, Metered};

async fn open(address: &str) -> Result<EventStore<Ping, Metered<InMemoryBackend>>, Error> {
    let exporter = Exporter::install().map_err(|e| Error::Configuration { reason: e.to_string() })?;
    println!("{}", exporter.render().len());
    let backend = Arc::new(Metered::new(InMemoryBackend::new()));
    let checked = Arc::clone(&backend);
    let at = address.parse().unwrap_or_else(|_| "127.0.0.1:0".parse().expect("an address"));
    let server = exporter
        .serve(at, move || {
            let backend = Arc::clone(&checked);
            async move { backend.health().await }
        })
        .await
        .map_err(|e| Error::Configuration { reason: e.to_string() })?;
    println!("{}", server.local_addr());
    std::mem::forget(server);
    Ok(EventStore::from_shared(backend))
}

include!("../../probe.rs");
