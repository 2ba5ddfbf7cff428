//! `copy_upcast`, the migration pipeline of `allframe copy --upcast` (issue 20): a store of
//! version-1 events copied with every event at version 3 (renamed, changed, split, dropped,
//! the library's streams as they are), on all four backends as source and destination; a copy
//! failed at each of its appends in turn and a copy killed with SIGKILL again and again, each
//! resumed, end equal to an uninterrupted one.

#[path = "support/account_chain.rs"]
mod account_chain;
#[path = "support/hooked.rs"]
mod hooked;
#[path = "support/kill.rs"]
mod kill;
#[path = "support/targets.rs"]
mod targets;

use std::sync::Arc;
use std::time::Duration;

use allframe::backends::{self, OpenOptions};
use allframe::cqrs::versioning::copy_upcast;
use allframe::cqrs::*;
use allframe::migrate::{CopyOptions, verify_stores};
use allframe::{NewEvent, schema_version};
use hooked::{AppendHook, Hooked, injected};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Version 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(version = 3)]
enum Account {
    Opened { owner: String },
    Deposited { cents: u64 },
    Withdrawn { cents: u64 },
}

/// The chain of `support/account_chain.rs` (a rename, a field change, a split, a drop).
fn chain() -> Chain {
    account_chain::upcasters::<Account>().build().unwrap()
}

/// `streams` accounts of version-1 events, written round-robin so that the log interleaves
/// them (each copy run is one event), and a record of the library's own.
async fn write_version_1(backend: &DynBackend, streams: u64, rounds: u64) {
    let v1 = |event_type: &'static str, payload: serde_json::Value| {
        NewEvent::new(event_type, serde_json::to_vec(&payload).unwrap())
    };
    for round in 0..rounds {
        for account in 0..streams {
            let event = match (round + account) % 4 {
                _ if round == 0 => v1("Opened", json!({ "Opened": { "owner": format!("owner-{account}") } })),
                0 => v1("Transferred", json!({ "Transferred": { "amount": round } })),
                1 => v1("Audited", json!({ "Audited": {} })),
                _ => v1("MoneyDeposited", json!({ "MoneyDeposited": { "amount": round * 10 + account } })),
            };
            backend.append(&format!("account-{account}"), ExpectedVersion::Any, vec![event]).await.unwrap();
        }
    }
    let library = NewEvent::new("allframe.Note", b"{}".to_vec());
    backend.append("$allframe-notes", ExpectedVersion::Any, vec![library]).await.unwrap();
}

fn options() -> CopyOptions {
    CopyOptions { page_size: 16, ..CopyOptions::default() }
}

/// What every copy must hold: each account's events at version 3, split and dropped as the
/// chain says, versions contiguous, ids kept (a split's second part derived), headers at 3.
async fn check_upcast(name: &str, source: &DynBackend, copy: &DynBackend, streams: u64) {
    let store: EventStore<Account, dyn EventStoreBackend> = EventStore::from_shared(Arc::clone(copy));
    let upcasting: DynBackend = Arc::new(Upcasting::new(Arc::clone(source), chain(), Codec::Json));
    let through_chain: EventStore<Account, dyn EventStoreBackend> = EventStore::from_shared(upcasting);
    for account in 0..streams {
        let stream = format!("account-{account}");
        // Read without a chain, the copy is what the chain reads from the source.
        let copied = store.get_events(&stream).await.unwrap();
        assert_eq!(copied, through_chain.get_events(&stream).await.unwrap(), "{name}: {stream}");
        let records = copy.read_stream(&stream, 0, 10_000).await.unwrap();
        let versions: Vec<u64> = records.iter().map(|r| r.version).collect();
        assert_eq!(versions, (1..=records.len() as u64).collect::<Vec<_>>(), "{name}: {stream} renumbered");
        assert!(records.iter().all(|r| schema_version::of(&r.metadata) == 3), "{name}: {stream} at version 3");
        let mut ids: Vec<_> = records.iter().map(|r| r.metadata.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), records.len(), "{name}: {stream}: every event has its own id");
    }
    assert_eq!(copy.stream_version("$allframe-notes").await.unwrap(), 1, "{name}: the library's streams are copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upcasting_copy_writes_every_event_at_its_current_version_between_any_two_backends() {
    let reference: DynBackend = Arc::new(InMemoryBackend::new());
    write_version_1(&reference, 5, 12).await;
    let reference_copy: DynBackend = Arc::new(InMemoryBackend::new());
    copy_upcast(&*reference, &*reference_copy, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
    let sources = targets::targets("copy_upcast_from").await;
    for (target, into) in sources.iter().zip(targets::targets("copy_upcast_into").await) {
        let name = target.name;
        // From this backend into memory, and from memory into this backend.
        let source = target.open().await;
        write_version_1(&source, 5, 12).await;
        let into_memory: DynBackend = Arc::new(InMemoryBackend::new());
        let done = copy_upcast(&*source, &*into_memory, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
        assert_eq!((done.read, done.snapshots), (61, 0), "{name}: {done:?}");
        check_upcast(name, &source, &into_memory, 5).await;

        let destination = into.open().await;
        let done = copy_upcast(&*reference, &*destination, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
        check_upcast(name, &reference, &destination, 5).await;
        // Run again on a finished copy: everything is found and skipped.
        let again = copy_upcast(&*reference, &*destination, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
        assert_eq!((again.written, again.skipped), (0, done.written), "{name}: {again:?}");
        let same = verify_stores(&*reference_copy, &*destination, 64).await.unwrap();
        assert_eq!(same.difference, None, "{name}: the same copy as into memory");
        target.cleanup().await;
        into.cleanup().await;
    }
}

#[tokio::test]
async fn an_event_no_chain_reads_stops_the_copy_naming_it_and_writes_nothing_of_it() {
    let source: DynBackend = Arc::new(InMemoryBackend::new());
    write_version_1(&source, 2, 3).await;
    let bad = NewEvent::new("MoneyDeposited", b"{\"MoneyDeposited\":".to_vec());
    source.append("account-9", ExpectedVersion::NoStream, vec![bad]).await.unwrap();
    let copy: DynBackend = Arc::new(InMemoryBackend::new());
    let error = copy_upcast(&*source, &*copy, &chain(), Codec::Json, options(), |_| {}).await.unwrap_err();
    assert!(matches!(&error, allframe::Error::Decode { stream, version: 1, .. } if stream.as_str() == "account-9"));
    assert_eq!(copy.stream_version("account-9").await.unwrap(), 0);
}

/// Fails the `fail_at`-th append, before it is applied or after, alternately: an interrupted
/// copy in every state it can be left in.
struct FailAt(usize);

#[allframe::async_trait]
impl AppendHook for FailAt {
    async fn before(&self, _: &str, call: usize) -> allframe::Result<()> {
        if call == self.0 && call.is_multiple_of(2) { Err(injected()) } else { Ok(()) }
    }
    async fn after(&self, _: &str, call: usize) -> allframe::Result<()> {
        if call == self.0 && !call.is_multiple_of(2) { Err(injected()) } else { Ok(()) }
    }
}

#[tokio::test]
async fn a_copy_failed_at_any_of_its_appends_and_run_again_ends_equal_to_an_uninterrupted_one() {
    let source: DynBackend = Arc::new(InMemoryBackend::new());
    write_version_1(&source, 3, 8).await;
    let whole: DynBackend = Arc::new(InMemoryBackend::new());
    copy_upcast(&*source, &*whole, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
    let counting = Hooked::new(Arc::new(InMemoryBackend::new()), FailAt(usize::MAX));
    copy_upcast(&*source, &counting, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
    let appends = counting.appends();
    assert!(appends > 10, "{appends} appends");
    for fail_at in 0..appends {
        let inner: DynBackend = Arc::new(InMemoryBackend::new());
        let failing = Hooked::new(Arc::clone(&inner), FailAt(fail_at));
        let first = copy_upcast(&*source, &failing, &chain(), Codec::Json, options(), |_| {}).await;
        assert!(first.is_err(), "append {fail_at} failed the copy");
        copy_upcast(&*source, &*inner, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
        let same = verify_stores(&*whole, &*inner, 64).await.unwrap();
        assert_eq!(same.difference, None, "failed at append {fail_at}, then resumed");
    }
}

const CHILD_SOURCE: &str = "ALLFRAME_COPY_UPCAST_SOURCE";
const CHILD_DESTINATION: &str = "ALLFRAME_COPY_UPCAST_DESTINATION";

async fn open(address: &str) -> DynBackend {
    let address = backends::parse(address).unwrap();
    address.open(OpenOptions::new()).await.unwrap()
}

/// The child: copies the source into the destination with progress lines, until killed or done.
#[test]
#[ignore = "helper process for a_killed_upcasting_copy_resumed_ends_equal_to_an_uninterrupted_one"]
fn copy_upcast_child() {
    let (Ok(source), Ok(destination)) = (std::env::var(CHILD_SOURCE), std::env::var(CHILD_DESTINATION)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let (source, destination) = (open(&source).await, open(&destination).await);
        println!("READY");
        let page =
            |p: allframe::migrate::CopyProgress| println!("read {} of {}, written {} PAGE", p.read, p.total, p.written);
        copy_upcast(&*source, &*destination, &chain(), Codec::Json, options(), page).await.unwrap();
        println!("DONE");
    });
}

#[test]
fn a_killed_upcasting_copy_resumed_ends_equal_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| format!("allsource:{}", dir.path().join(name).display());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let whole: DynBackend = Arc::new(InMemoryBackend::new());
    runtime.block_on(async {
        let source = open(&at("source")).await;
        write_version_1(&source, 20, 150).await;
        copy_upcast(&*source, &*whole, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
    });
    let mut random = kill::random_from_clock("copy --upcast kill test");
    let env = [(CHILD_SOURCE, at("source")), (CHILD_DESTINATION, at("copy"))];
    let mut killed_midway = 0;
    for _round in 0..5 {
        // Killed a little after a page was written: in the middle of the copy, at a moment
        // that differs from round to round.
        let mut child = kill::Spawned::start("copy_upcast_child", &env);
        assert!(child.wait_for("READY", Duration::from_secs(60)), "the child got ready");
        assert!(child.wait_for("PAGE", Duration::from_secs(60)), "the child copied a page");
        std::thread::sleep(Duration::from_millis(random() % 40));
        let lines = child.kill();
        if !lines.iter().any(|line| line == "DONE") {
            killed_midway += 1;
        }
    }
    assert!(killed_midway >= 3, "only {killed_midway} of 5 children were killed in the middle of their copy");
    runtime.block_on(async {
        let (source, copy) = (open(&at("source")).await, open(&at("copy")).await);
        let done = copy_upcast(&*source, &*copy, &chain(), Codec::Json, options(), |_| {}).await.unwrap();
        let same = verify_stores(&*whole, &*copy, 256).await.unwrap();
        assert_eq!(same.difference, None, "resumed after {killed_midway} kills mid-copy ({done:?})");
        check_upcast("allsource", &source, &copy, 20).await;
    });
}
