//! `allframe schema list | show TYPE | check`: the schema registry a store keeps of its own
//! (the JSON Schema of each event type and version, and the shape of the application's chain
//! of upcasters), read from the store, so it needs none of the application's code.

use std::collections::BTreeMap;

use allframe::cqrs::{SchemaRegistry, versioning};
use allframe::{DynBackend, is_system_stream, schema_version};

use crate::CliError;
use crate::address::{self, Address, Open};

/// Arguments of `allframe schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
    /// The store (default: the demo's, `allsource:./allframe-data`).
    #[arg(long, value_name = "STORE", global = true)]
    pub store: Option<Address>,
}

/// What `allframe schema` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Every registered event type: its versions, compatibility mode and when it was registered.
    List,
    /// The JSON Schemas of one event type (every version, or --version N).
    Show {
        /// The stored event type.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// Only this version.
        #[arg(long, value_name = "N")]
        version: Option<u32>,
    },
    /// Read every stored event: is it valid under the schema registered for its type and
    /// version, and can the recorded chain read it? Exit 1 when one is not.
    Check,
}

/// `allframe schema ...`.
pub async fn schema(args: &SchemaArgs) -> Result<u8, CliError> {
    let store = crate::projections::store_or_demo(args.store.as_ref())?;
    let backend = address::open(&store, Open::Existing).await?;
    let registry = load(&store, &backend).await?;
    match &args.action {
        Action::List => list(&store, &registry),
        Action::Show { event_type, version } => show(&store, &registry, event_type, *version),
        Action::Check => check(&store, &backend, &registry).await,
    }
}

/// The registry of `store`.
pub async fn load(store: &Address, backend: &DynBackend) -> Result<SchemaRegistry, CliError> {
    SchemaRegistry::load(&**backend).await.map_err(|error| match error {
        allframe::cqrs::RegistryError::Store(error) => CliError::store(store, &error),
        other => CliError::new(store, other.to_string(), "the registry's records are in stream `$allframe-schemas`"),
    })
}

fn list(store: &Address, registry: &SchemaRegistry) -> Result<u8, CliError> {
    let types: Vec<&str> = registry.event_types().collect();
    if types.is_empty() && registry.chain().is_none() {
        println!("no schemas registered in {store}");
        println!(
            "an application registers them at start-up with `SchemaRegistration::<E>::new(&chain).register(&store)`"
        );
        return Ok(0);
    }
    println!("schema registry of {store}: {} event types", types.len());
    if let Some((shape, at)) = registry.chain() {
        println!(
            "chain recorded {}: events read at version {}, {} upcasters",
            at.to_rfc3339(),
            shape.version,
            shape.steps.len()
        );
    }
    println!("\n{:<28} {:<12} {:<14} LATEST REGISTERED", "TYPE", "VERSIONS", "COMPATIBILITY");
    for event_type in types {
        let versions: Vec<String> = registry.versions(event_type).map(|s| s.version.to_string()).collect();
        let Some(latest) = registry.latest(event_type) else { continue };
        println!(
            "{event_type:<28} {:<12} {:<14} {}",
            versions.join(", "),
            latest.compatibility.name(),
            latest.registered_at.to_rfc3339()
        );
    }
    Ok(0)
}

fn show(store: &Address, registry: &SchemaRegistry, event_type: &str, version: Option<u32>) -> Result<u8, CliError> {
    let shown: Vec<_> = registry.versions(event_type).filter(|s| version.is_none_or(|v| v == s.version)).collect();
    if shown.is_empty() {
        let what = version.map_or(format!("`{event_type}`"), |v| format!("version {v} of `{event_type}`"));
        return Err(CliError::new(store, format!("{what} is not registered"), "list them with `allframe schema list`"));
    }
    for schema in shown {
        println!(
            "`{event_type}` version {} ({}, registered {}):",
            schema.version,
            schema.compatibility.name(),
            schema.registered_at.to_rfc3339()
        );
        println!("{}", serde_json::to_string_pretty(&schema.schema).unwrap_or_default());
    }
    Ok(0)
}

/// What `check` found for one (type, version).
#[derive(Default)]
struct Tally {
    events: u64,
    invalid: u64,
    unreadable: u64,
    registered: bool,
}

async fn check(store: &Address, backend: &DynBackend, registry: &SchemaRegistry) -> Result<u8, CliError> {
    let mut tallies: BTreeMap<(String, u32), Tally> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut validators = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = backend.read_all(after, 4096).await.map_err(|e| CliError::store(store, &e))?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in page.iter().filter(|e| !is_system_stream(&e.stream_id)) {
            let version = schema_version::of(&event.metadata);
            let tally = tallies.entry((event.event_type.to_string(), version)).or_default();
            tally.events += 1;
            let at = format!("stream `{}` version {} (position {})", event.stream_id, event.version, event.position);
            if let Some((shape, _)) = registry.chain()
                && let Err(why) = shape.reads(&event.event_type, version)
            {
                tally.unreadable += 1;
                problems.push(format!("{at}: `{}` v{version} cannot be read: {why}", event.event_type));
            }
            tally.registered = registry.get(&event.event_type, version).is_some();
            let invalid =
                versioning::validate_stored(registry, &mut validators, &event.event_type, version, &event.payload)
                    .map_err(|e| CliError::new(store, e.to_string(), "the registered schema does not compile"))?;
            if let Some(why) = invalid {
                tally.invalid += 1;
                problems.push(format!("{at}: `{}` v{version} does not match its schema: {why}", event.event_type));
            }
        }
    }
    println!("{:<28} {:>7} {:>10} {:>8} {:>11}", "TYPE", "VERSION", "EVENTS", "INVALID", "UNREADABLE");
    for ((event_type, version), tally) in &tallies {
        let registered = if tally.registered { "" } else { "  (no schema registered)" };
        println!(
            "{event_type:<28} {version:>7} {:>10} {:>8} {:>11}{registered}",
            tally.events, tally.invalid, tally.unreadable
        );
    }
    if registry.chain().is_none() {
        println!(
            "\nno chain recorded in {store}: readability not checked (an application records it when it registers)"
        );
    }
    if problems.is_empty() {
        let events: u64 = tallies.values().map(|t| t.events).sum();
        let checked: u64 = tallies.values().filter(|t| t.registered).map(|t| t.events).sum();
        let read = if registry.chain().is_some() { "the recorded chain reads every one; " } else { "" };
        println!("\nok: {events} events; {read}{checked} stored at a registered version, each valid under its schema");
        return Ok(0);
    }
    println!();
    for problem in problems.iter().take(20) {
        println!("problem: {problem}");
    }
    if problems.len() > 20 {
        println!("... and {} more", problems.len() - 20);
    }
    println!("{} problem(s) found in {store}", problems.len());
    Ok(1)
}
