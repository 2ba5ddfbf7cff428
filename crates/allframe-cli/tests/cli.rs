//! The `allframe` binary, tested as a process: exit codes, output, bad addresses, a missing
//! directory, a locked store, a corrupted store, a copy killed part-way then resumed, and the
//! demo (through the command bus, in memory, and twice on one AllSource store).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use allframe::allsource::{AllSourceBackend, AllSourceConfig, SyncMode};
use allframe::{EventStoreBackend, ExpectedVersion, NewEvent};

fn allframe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_allframe")).args(args).output().expect("run allframe")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An AllSource store at `dir` with `events` events in `streams` streams.
async fn make_store(dir: &Path, events: u64, streams: u64) {
    let config = AllSourceConfig::durable(dir).sync(SyncMode::NoSync);
    let backend = AllSourceBackend::with_config(config).expect("open");
    let per_append = 100;
    for n in (0..events).step_by(per_append as usize) {
        let batch = (n..(n + per_append).min(events))
            .map(|i| NewEvent::new("Counted", format!(r#"{{"n":{i},"note":"some payload to copy"}}"#)))
            .collect();
        backend.append(&format!("stream-{}", (n / per_append) % streams), ExpectedVersion::Any, batch).await.unwrap();
    }
    backend.flush().await.unwrap();
}

#[test]
fn help_lists_every_command_and_store() {
    let out = allframe(&["help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "copy",
        "verify",
        "inspect",
        "check",
        "demo",
        "completions",
        "allsource:PATH",
        "rocksdb:PATH",
        "postgres://",
        "exit codes",
    ] {
        assert!(help.contains(word), "help mentions {word}");
    }
    let out = allframe(&[]);
    assert_eq!(out.status.code(), Some(2), "no command is a usage error");
    let out = allframe(&["help", "copy"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("<FROM>") && help.contains("<TO>") && help.contains("--no-snapshots"), "{help}");
}

#[test]
fn typos_get_a_suggestion_on_one_line() {
    let out = allframe(&["verfiy", "memory:", "memory:"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("'verify'"), "suggests the command: {stderr}");
    let out = allframe(&["copy", "memory:"]);
    let stderr = text(&out.stderr);
    assert_eq!((out.status.code(), stderr.trim().lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("<TO>"), "names the missing argument: {stderr}");
}

#[test]
fn completions_are_printed_for_a_shell() {
    let out = allframe(&["completions", "bash"]);
    assert!(out.status.success());
    let script = text(&out.stdout);
    assert!(script.contains("allframe") && script.contains("inspect"), "a bash completion script");
    assert_eq!(allframe(&["completions", "cmd.exe"]).status.code(), Some(2));
}

#[test]
fn usage_errors_are_one_line_with_exit_code_2() {
    for args in [
        vec!["copy", "foo:", "memory:"],
        vec!["copy", "memory:"],
        vec!["frobnicate"],
        vec!["inspect", "memory:", "--bogus"],
        vec!["copy", "allsource:", "memory:"],
    ] {
        let out = allframe(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("allframe: usage: "), "{stderr}");
    }
    let stderr = text(&allframe(&["copy", "foo:", "memory:"]).stderr);
    assert!(
        stderr.contains("`foo:`") && stderr.contains("allsource:PATH"),
        "names the address and the forms: {stderr}"
    );
}

#[test]
fn missing_directory_is_a_store_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("allsource:{}", dir.path().join("nothing-here").display());
    let out = allframe(&["inspect", &missing]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&missing) && stderr.contains("no store at this path"), "{stderr}");
    assert!(!dir.path().join("nothing-here").exists(), "inspect never creates a store");
}

#[tokio::test]
async fn locked_store_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path(), 10, 1).await;
    let _held = AllSourceBackend::production(dir.path()).unwrap();
    let out = allframe(&["inspect", &format!("allsource:{}", dir.path().display())]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("locked") && stderr.contains("another process"), "{stderr}");
}

#[tokio::test]
async fn copy_verify_inspect_and_check_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    make_store(&src, 2_000, 4).await;
    let (src, dst) = (format!("allsource:{}", src.display()), format!("allsource:{}", dst.display()));
    let out = allframe(&["copy", &src, &dst, "--page", "300"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("copied 2000 events (0 already there"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("events/s"), "progress on stderr");
    let out = allframe(&["verify", &src, &dst]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("same: 4 streams, 2000 events"), "{}", text(&out.stdout));
    let out = allframe(&["inspect", &dst, "--json", "--stream", "stream-1", "--last", "3"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(json["events"], 2000);
    assert_eq!(json["streams"], 4);
    assert_eq!(json["last_events"]["events"].as_array().unwrap().len(), 3);
    assert_eq!(json["last_events"]["events"][2]["version"], 500);
    let out = allframe(&["check", &dst]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // The destination gets one more event: verify names the stream and version.
    let backend = AllSourceBackend::production(dir.path().join("dst")).unwrap();
    backend.append("stream-2", ExpectedVersion::Any, vec![NewEvent::new("Extra", "{}")]).await.unwrap();
    drop(backend);
    let out = allframe(&["verify", &src, &dst]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("stream `stream-2` version 501"), "{}", text(&out.stdout));
}

#[tokio::test]
async fn check_reports_corruption_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path(), 500, 2).await;
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a log file");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[3000] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    let out = allframe(&["check", &format!("allsource:{}", dir.path().display())]);
    assert_eq!(out.status.code(), Some(1), "stdout: {} stderr: {}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("problem:") && stdout.contains("offset"), "{stdout}");
    assert!(stdout.contains(&segment.file_name().unwrap().to_string_lossy().into_owned()), "names the file: {stdout}");
}

#[tokio::test]
async fn copy_killed_part_way_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let (src_dir, dst_dir) = (dir.path().join("src"), dir.path().join("dst"));
    make_store(&src_dir, 60_000, 3).await;
    let (src, dst) = (format!("allsource:{}", src_dir.display()), format!("allsource:{}", dst_dir.display()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_allframe"))
        .args(["copy", &src, &dst, "--page", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.starts_with("copy: "), "first progress line: {line}");
    child.kill().expect("SIGKILL the copy");
    child.wait().unwrap();
    let partial = AllSourceBackend::production(&dst_dir).unwrap().stats().await.unwrap().events;
    assert!(partial < 60_000, "the copy was interrupted ({partial} events copied)");
    let out = allframe(&["copy", &src, &dst]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("({partial} already there")), "{}", text(&out.stdout));
    let out = allframe(&["verify", &src, &dst]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// The lines of the demo's output that start with `prefix`.
fn lines_starting<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output.lines().filter(|line| line.trim_start().starts_with(prefix)).collect()
}

/// The demo's `store: N events ...` figure.
fn demo_events(output: &str) -> u64 {
    let line = lines_starting(output, "store: ").pop().unwrap_or_else(|| panic!("a store line: {output}"));
    line["store: ".len()..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn demo_runs_in_memory_through_the_command_bus() {
    let out = allframe(&["demo", "--backend", "memory"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("(store: memory:)"), "{stdout}");
    assert_eq!(lines_starting(&stdout, "command bus: "), ["command bus: DepositMoney, OpenAccount, WithdrawMoney"]);
    // A field rule refused before anything was loaded, with its code and status.
    let invalid = lines_starting(&stdout, "deposit 0 refused");
    assert!(
        invalid.len() == 1 && invalid[0].contains("amount: ") && invalid[0].ends_with("(invalid_command, HTTP 400)"),
        "{stdout}"
    );
    // A business rule: the handler's own error, as text and as an API's JSON.
    assert!(
        stdout.contains(
            "withdraw 1000 refused: insufficient funds: balance 175, asked 1000 (insufficient_funds, HTTP 422)"
        ),
        "{stdout}"
    );
    let json = lines_starting(&stdout, "as an API answers it: ");
    let json: serde_json::Value =
        serde_json::from_str(json[0].trim_start().trim_start_matches("as an API answers it: ")).unwrap();
    assert_eq!(
        (json["code"].as_str(), json["status"].as_u64(), json["details"]["asked"].as_u64()),
        (Some("insufficient_funds"), Some(422), Some(1000))
    );
    // The tellers' race: one appended first, the other was decided again once.
    let tellers = lines_starting(&stdout, "teller ");
    assert_eq!(tellers.len(), 2, "{stdout}");
    let retried = tellers.iter().filter(|line| line.ends_with("(conflict_retries: 1)")).count();
    let first = tellers.iter().filter(|line| line.ends_with("(conflict_retries: 0)")).count();
    assert_eq!((retried, first), (1, 1), "{stdout}");
    // The same key twice: the first outcome, stored once.
    assert!(stdout.contains("replayed: true, same command id: true, version 4: stored once"), "{stdout}");
    assert!(!stdout.contains("(replayed)"), "a fresh store replays nothing else: {stdout}");
    // The snapshot (every 4 events), the metadata, the projection and the query.
    assert!(
        stdout.contains("account balance 45 at version 6 (loaded from the snapshot at version Some(4), then 2 events)"),
        "{stdout}"
    );
    assert!(stdout.contains("(its command's id)") && stdout.contains("channel=demo teller=counter"), "{stdout}");
    // The registry's projection, read at least at the position the tellers' commands wrote.
    assert!(
        stdout
            .contains("projection `balances`: account-ada balance Some(45) (query BalanceOf at least at position 10)"),
        "{stdout}"
    );
    assert!(stdout.contains("Running at position 10 of 10, lag 0 events"), "{stdout}");
    // Six events of the account, and the schema registry's four records (three types, the chain).
    assert_eq!(demo_events(&stdout), 10, "{stdout}");
    assert!(stdout.contains("event schemas: version 3 of 3 types, 3 newly registered"), "{stdout}");
}

#[test]
fn projections_list_status_and_rebuild_the_demos_projection_on_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bank");
    let data = data.to_str().unwrap();
    assert!(allframe(&["demo", "--backend", "allsource", "--data", data]).status.success());
    let store = format!("allsource:{data}");

    let list = allframe(&["projections", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout)
            .contains("| balances | 1 | MoneyDeposited, MoneyWithdrawn | in memory (replayed at each start) |"),
        "{}",
        text(&list.stdout)
    );

    let status = allframe(&["projections", "status", "--store", &store]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let row = lines_starting(&text(&status.stdout), "| balances |").pop().unwrap_or_default().to_owned();
    assert!(row.starts_with("| balances | 1 | Running | 10 | 10 | 0 |"), "{}", text(&status.stdout));

    let rebuilt = allframe(&["projections", "rebuild", "balances", "--store", &store]);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));
    assert!(text(&rebuilt.stdout).contains("rebuilt `balances` from position 0 to 10"), "{}", text(&rebuilt.stdout));
    assert!(text(&rebuilt.stderr).contains("rebuild: 100% 10/10 events"), "the progress: {}", text(&rebuilt.stderr));

    let unknown = allframe(&["projections", "rebuild", "nope", "--store", &store]);
    assert_eq!(unknown.status.code(), Some(3));
    assert!(text(&unknown.stderr).contains("no projection named `nope` is registered"), "{}", text(&unknown.stderr));
}

#[test]
fn demo_run_twice_on_allsource_replays_its_idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bank");
    let data = data.to_str().unwrap();
    let first = allframe(&["demo", "--backend", "allsource", "--data", data]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first = text(&first.stdout);
    assert!(first.contains("opened account-ada for Ada -> version 1") && !first.contains("(replayed)"), "{first}");
    let second = allframe(&["demo", "--backend", "allsource", "--data", data]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let second = text(&second.stdout);
    assert!(second.contains("account-ada was opened by an earlier run"), "{second}");
    assert_eq!(
        lines_starting(&second, "deposited ").iter().filter(|l| l.ends_with("(replayed)")).count(),
        3,
        "{second}"
    );
    assert_eq!(lines_starting(&second, "teller ").iter().filter(|l| l.ends_with("(replayed)")).count(), 2, "{second}");
    assert!(second.contains("7 commands were answered by their idempotency keys"), "{second}");
    // The refusal sees the first run's balance; nothing was stored again.
    assert!(second.contains("insufficient funds: balance 45, asked 1000"), "{second}");
    assert!(second.contains("account balance 45 at version 6"), "{second}");
    assert_eq!((demo_events(&first), demo_events(&second)), (10, 10), "{second}");
    assert!(second.contains("event schemas: version 3 of 3 types (registered by an earlier run)"), "{second}");
}

/// A store earlier builds of the demo wrote (events of versions 1 and 2, no schemas), as raw
/// records.
async fn version_1_store(dir: &Path) {
    let backend = AllSourceBackend::with_config(AllSourceConfig::durable(dir).sync(SyncMode::NoSync)).expect("open");
    let v1 = |event_type: &'static str, payload: &str| NewEvent::new(event_type, payload.as_bytes().to_vec());
    let events = vec![
        v1("AccountOpened", r#"{"Opened":{"owner":"Eve"}}"#),
        v1("MoneyDeposited", r#"{"Deposited":{"amount":100}}"#),
        v1("MoneyWithdrawn", r#"{"Withdrawn":{"amount":60}}"#),
        // One written by a build at version 2.
        v1("MoneyWithdrawn", r#"{"Withdrawn":{"amount":10,"teller":"B"}}"#)
            .with_metadata(allframe::Metadata::new().with_header("allframe.schema_version", "2")),
    ];
    backend.append("account-eve", ExpectedVersion::NoStream, events).await.unwrap();
    backend.flush().await.unwrap();
}

#[tokio::test]
async fn schema_list_show_and_check_and_copy_upcast_on_a_store_an_earlier_build_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    version_1_store(&data).await;
    let store = format!("allsource:{}", data.display());
    let out = allframe(&["schema", "list", "--store", &store]);
    assert!(out.status.success() && text(&out.stdout).contains("no schemas registered"), "{}", text(&out.stdout));

    // The demo (version 2 of its events) registers its schemas and reads Eve's version-1 events.
    let out = allframe(&["demo", "--data", &data.display().to_string()]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains("event schemas: version 3 of 3 types, 3 newly registered"),
        "{}",
        text(&out.stdout)
    );
    let out = allframe(&["schema", "list", "--store", &store]);
    let listed = text(&out.stdout);
    assert!(listed.contains("events read at version 3, 4 upcasters"), "{listed}");
    assert!(
        listed.lines().any(|l| l.starts_with("MoneyWithdrawn") && l.contains(" 3 ") && l.contains("backward")),
        "{listed}"
    );
    let out = allframe(&["schema", "show", "MoneyWithdrawn", "--store", &store]);
    assert!(out.status.success() && text(&out.stdout).contains("\"teller\""), "{}", text(&out.stdout));
    let out = allframe(&["schema", "show", "Nothing", "--store", &store]);
    assert_eq!(out.status.code(), Some(3), "an unknown type: {}", text(&out.stderr));
    let out = allframe(&["schema", "check", "--store", &store]);
    let checked = text(&out.stdout);
    assert!(out.status.success(), "{checked}");
    assert!(
        checked.lines().any(|l| l.starts_with("MoneyWithdrawn") && l.contains("(no schema registered)")),
        "{checked}"
    );
    let out = allframe(&["check", &store]);
    assert!(text(&out.stdout).contains("the recorded chain of upcasters reads every event"), "{}", text(&out.stdout));

    // The migration pipeline: every event rewritten at version 2.
    let copy = format!("allsource:{}", dir.path().join("copy").display());
    let out = allframe(&["copy", "--upcast", &store, &copy]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("every event is at schema version 3"), "{}", text(&out.stdout));
    let out = allframe(&["inspect", &copy, "--stream", "account-eve"]);
    let shown = text(&out.stdout);
    assert!(shown.contains("MoneyWithdrawn (schema v3)") && shown.contains(r#""teller":"unknown""#), "{shown}");
    assert!(shown.contains(r#"{"Opened":{"holder":"Eve"}}"#) && shown.contains(r#""teller":"B""#), "{shown}");
    let out = allframe(&["schema", "check", "--store", &copy]);
    let checked = text(&out.stdout);
    assert!(out.status.success() && !checked.contains("no schema registered"), "{checked}");

    // Events a build cannot read, and one that breaks its schema, in a copy of the demo's
    // store (schemas and chain included): both commands say which.
    let bad = dir.path().join("bad");
    let bad_store = format!("allsource:{}", bad.display());
    assert!(allframe(&["copy", &store, &bad_store]).status.success());
    let newer = NewEvent::new("MoneyWithdrawn", br#"{"Withdrawn":{"amount":1,"teller":"A","till":3}}"#.to_vec())
        .with_metadata(allframe::Metadata::new().with_header("allframe.schema_version", "4"));
    let invalid = NewEvent::new("MoneyWithdrawn", br#"{"Withdrawn":{"amount":1}}"#.to_vec())
        .with_metadata(allframe::Metadata::new().with_header("allframe.schema_version", "3"));
    {
        let backend = AllSourceBackend::with_config(AllSourceConfig::durable(&bad).sync(SyncMode::NoSync)).unwrap();
        backend.append("account-zed", ExpectedVersion::NoStream, vec![newer, invalid]).await.unwrap();
        backend.flush().await.unwrap();
    }
    let out = allframe(&["schema", "check", "--store", &bad_store]);
    let checked = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{checked}");
    assert!(
        checked.contains("stream `account-zed` version 1")
            && checked.contains("newer than the application's version 3"),
        "{checked}"
    );
    assert!(
        checked.contains("stream `account-zed` version 2") && checked.contains("\"teller\" is a required property"),
        "{checked}"
    );
    let out = allframe(&["check", &bad_store]);
    let checked = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{checked}");
    assert!(checked.contains("1 `MoneyWithdrawn` event(s) at schema version 4 cannot be read"), "{checked}");
    let out =
        allframe(&["copy", "--upcast", &bad_store, &format!("allsource:{}", dir.path().join("bad-copy").display())]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("account-zed"), "{}", text(&out.stderr));
}

/// A saga whose second step fails and whose first step's compensation fails while `undo_fails`.
fn payout(undo_fails: bool) -> allframe::cqrs::SagaDefinition {
    use allframe::cqrs::{Retry, Saga, Step, StepContext, StepError};
    Saga::new("payout")
        .step(
            Step::new("reserve", |_ctx: StepContext| async { Ok::<_, StepError>(7) })
                .compensate(move |_ctx: StepContext| async move {
                    if undo_fails { Err(StepError::transient("the ledger is offline")) } else { Ok(()) }
                })
                .compensation_retry(Retry::never()),
        )
        .step(Step::new("charge", |_ctx: StepContext| async { Err::<(), _>(StepError::failed("card declined")) }))
        .build()
        .unwrap()
}

/// Runs `payout` on the AllSource store at `dir` until instance `p-1` is stuck or finished.
fn run_payout(dir: &Path, undo_fails: bool, begin: bool) -> allframe::cqrs::SagaState {
    use allframe::cqrs::{CommandBus, SagaOrchestrator};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = runtime.block_on(async {
        let backend: allframe::DynBackend = std::sync::Arc::new(AllSourceBackend::production(dir).unwrap());
        let bus = CommandBus::builder(backend).build().unwrap();
        let sagas = SagaOrchestrator::builder(bus).saga(payout(undo_fails)).build().unwrap();
        sagas.start().await.unwrap();
        if begin {
            sagas.begin("payout", "p-1", &"ada").await.unwrap();
        }
        let state = sagas.wait("payout", "p-1", std::time::Duration::from_secs(30)).await.unwrap();
        sagas.stop();
        state
    });
    // The runtime's tasks, and with them the store's last handles, go with it.
    drop(runtime);
    state
}

#[test]
fn sagas_list_show_and_resume_a_stuck_instance() {
    let dir = tempfile::tempdir().unwrap();
    let state = run_payout(dir.path(), true, true);
    assert_eq!(state.label(), "stuck", "{state:?}");
    let store = format!("allsource:{}", dir.path().display());

    let out = allframe(&["sagas", "list", "--store", &store]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains("payout") && listed.contains("p-1") && listed.contains("stuck"), "{listed}");
    let out = allframe(&["sagas", "show", "payout", "p-1", "--store", &store]);
    let shown = text(&out.stdout);
    assert!(shown.contains("stuck undoing `reserve`: the ledger is offline"), "{shown}");
    assert!(shown.contains("charge: attempt 1 failed (card declined)"), "{shown}");

    let out = allframe(&["sagas", "resume", "payout", "p-1", "--store", &store]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = allframe(&["sagas", "resume", "payout", "p-1", "--store", &store]);
    assert_eq!(out.status.code(), Some(3), "resumed already: not stuck");
    assert!(text(&out.stderr).contains("not stuck"), "{}", text(&out.stderr));
    let out = allframe(&["sagas", "show", "payout", "nope", "--store", &store]);
    assert_eq!(out.status.code(), Some(3));

    // The application's orchestrator, its ledger back, honours the resume.
    let state = run_payout(dir.path(), false, false);
    assert_eq!(state.label(), "rolled back", "{state:?}");
}
