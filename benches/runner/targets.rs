//! The backends and modes a run compares, and how each is opened.

use std::sync::Arc;

use allframe::DynBackend;

/// Every target compiled into this binary, in report order.
pub fn names() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut names = vec!["memory"];
    #[cfg(feature = "allsource")]
    names.extend(["allsource-durable", "allsource-nosync", "allsource-memory"]);
    #[cfg(feature = "rocksdb")]
    names.extend(["rocksdb-sync", "rocksdb-nosync"]);
    #[cfg(feature = "postgres")]
    names.push("postgres");
    names
}

/// Whether a target acknowledges only after its data is on disk.
pub fn is_durable(name: &str) -> bool {
    matches!(name, "allsource-durable" | "rocksdb-sync" | "postgres")
}

/// Opens a fresh, empty store for `name`, or says why it cannot.
pub async fn open(name: &str) -> Result<DynBackend, String> {
    match name {
        "memory" => Ok(Arc::new(allframe::InMemoryBackend::new())),
        other => Err(format!("unknown target `{other}`")),
    }
}
