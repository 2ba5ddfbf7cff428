//! Migration testing with golden files: stored examples of every historical version of an
//! application's events, kept in its repository, each with the events of the current type it
//! must be read as. [`check_golden`] upcasts each through the application's chain and
//! compares, and fails when a step of the chain has no example, so that a new step comes with
//! the stored form it reads.
//!
//! One example per file, `*.json` in one directory:
//!
//! ```json
//! {
//!   "event_type": "MoneyDeposited",
//!   "schema_version": 1,
//!   "payload": { "MoneyDeposited": { "amount": 5 } },
//!   "current": [ { "Deposited": { "cents": 5 } } ]
//! }
//! ```

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::Path;

use allframe_cqrs_core::{Codec, Event};
use allframe_cqrs_versioning::Chain;
use serde::Deserialize;
use serde_json::Value;

/// One stored example: what an older build stored, and what it reads as now.
#[derive(Debug, Clone, Deserialize)]
pub struct Golden {
    /// The stored type name.
    pub event_type: String,
    /// The schema version it was stored with.
    pub schema_version: u32,
    /// The stored payload (JSON codec).
    pub payload: Value,
    /// The events of the current type it must be read as (none when it is dropped).
    pub current: Vec<Value>,
}

/// What [`check_golden`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenReport {
    /// Examples read.
    pub examples: usize,
    /// Steps of the chain that have an example.
    pub steps_covered: usize,
}

/// Upcasts every example of `dir` through `chain` and compares it, decoded as `E`, with the
/// events it must be read as; then checks that every step of the chain has an example.
///
/// # Errors
///
/// Every problem found, one per line: a file that does not parse, an example that upcasts to
/// other events or fails, a step without an example.
pub fn check_golden<E: Event + PartialEq + Debug>(dir: &Path, chain: &Chain) -> Result<GoldenReport, String> {
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    let mut examples = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|error| format!("{}: {error}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    for path in files {
        let name = path.display();
        let golden: Golden = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        {
            Ok(golden) => golden,
            Err(error) => {
                problems.push(format!("{name}: not a golden example: {error}"));
                continue;
            }
        };
        examples += 1;
        covered.insert((golden.event_type.clone(), golden.schema_version));
        match read_as::<E>(chain, &golden) {
            Ok(events) => {
                let expected: Result<Vec<E>, _> =
                    golden.current.iter().map(|v| serde_json::from_value::<E>(v.clone())).collect();
                match expected {
                    Ok(expected) if expected == events => {}
                    Ok(expected) => problems.push(format!("{name}: read as {events:?}, not {expected:?}")),
                    Err(error) => problems.push(format!("{name}: `current` is not the current type: {error}")),
                }
            }
            Err(error) => problems.push(format!("{name}: {error}")),
        }
    }
    let mut steps_covered = 0;
    for (event_type, from) in chain.steps() {
        if covered.contains(&(event_type.to_owned(), from)) {
            steps_covered += 1;
        } else {
            problems.push(format!("no golden example of `{event_type}` at schema version {from}, which a step reads"));
        }
    }
    if problems.is_empty() { Ok(GoldenReport { examples, steps_covered }) } else { Err(problems.join("\n")) }
}

/// The events `golden`'s stored form is read as now.
fn read_as<E: Event>(chain: &Chain, golden: &Golden) -> Result<Vec<E>, String> {
    let payload = serde_json::to_vec(&golden.payload).map_err(|e| e.to_string())?;
    let upcast =
        chain.apply(&golden.event_type, golden.schema_version, &payload, Codec::Json).map_err(|e| e.to_string())?;
    let events = match upcast {
        Some(events) => events.into_iter().map(|(_, payload)| payload).collect(),
        None => vec![payload],
    };
    events
        .iter()
        .map(|payload| serde_json::from_slice::<E>(payload).map_err(|e| format!("does not decode: {e}")))
        .collect()
}
