//! JSON payloads in a `jsonb` store: valid JSON that merely looks like a NUL escape is
//! stored; what `jsonb` cannot hold (a real `\u0000`, a number beyond `numeric`) is refused
//! with `Error::InvalidPayload` naming the event type, and a refused append stores nothing.

mod common;

use allframe_cqrs_core::{Error, EventStoreBackend, ExpectedVersion, NewEvent, Snapshot};

/// Appends `events` to a fresh stream and checks that the append is refused with
/// `InvalidPayload` naming `refused_type`, and that nothing of it was stored.
async fn assert_refused(backend: &common::TestBackend, stream: &str, events: Vec<NewEvent>, refused_type: &str) {
    let head = backend.head_position().await.expect("head");
    let result = backend.append(stream, ExpectedVersion::Any, events).await;
    match &result {
        Err(Error::InvalidPayload { event_type, .. }) => assert_eq!(event_type, refused_type, "{result:?}"),
        other => panic!("expected InvalidPayload for `{refused_type}`, got {other:?}"),
    }
    assert_eq!(backend.stream_version(stream).await.expect("version"), 0, "the refused append stored nothing");
    assert_eq!(backend.head_position().await.expect("head"), head, "no position was taken");
    assert!(backend.read_stream(stream, 0, 10).await.expect("read").is_empty());
}

#[tokio::test]
async fn an_escaped_backslash_before_u0000_is_not_a_nul() {
    let Some(backend) = common::fresh().await else { return };
    // The JSON strings hold a backslash followed by the letters `u0000`, no NUL, in a value
    // and in a key.
    let payloads = [r#"{"path":"C:\\u0000"}"#, r#"{"C:\\u0000":"\\\\u0000"}"#];
    for payload in payloads {
        backend.append("paths", ExpectedVersion::Any, vec![NewEvent::new("Path", payload)]).await.expect("append");
    }
    let stored = backend.read_stream("paths", 0, 10).await.expect("read");
    assert_eq!(stored.len(), payloads.len());
    for (event, payload) in stored.iter().zip(payloads) {
        let expected: serde_json::Value = serde_json::from_str(payload).unwrap();
        let actual: serde_json::Value = serde_json::from_slice(&event.payload).expect("stored JSON");
        assert_eq!(actual, expected, "read back equal as JSON");
    }
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored[0].payload).unwrap()["path"].as_str(),
        Some("C:\\u0000")
    );
    // The same text is a valid snapshot payload too.
    backend.save_snapshot("paths", Snapshot::new(2, payloads[0])).await.expect("snapshot");
    assert!(backend.get_latest_snapshot("paths").await.expect("get").is_some());
}

#[tokio::test]
async fn a_real_nul_escape_is_refused_in_values_and_keys() {
    let Some(backend) = common::fresh().await else { return };
    assert_refused(&backend, "nul-value", vec![NewEvent::new("NulValue", r#"{"a":"x\u0000"}"#)], "NulValue").await;
    assert_refused(&backend, "nul-key", vec![NewEvent::new("NulKey", r#"{"\u0000":1}"#)], "NulKey").await;
    // An escaped backslash followed by a real escape.
    assert_refused(&backend, "nul-after", vec![NewEvent::new("NulAfter", r#"{"p":"C:\\\u0000"}"#)], "NulAfter").await;
}

#[tokio::test]
async fn a_number_beyond_numeric_is_invalid_payload_naming_its_event() {
    let Some(backend) = common::fresh().await else { return };
    // serde_json accepts these; PostgreSQL's numeric cannot hold them.
    assert_refused(&backend, "big", vec![NewEvent::new("Huge", r#"{"n":1e999999}"#)], "Huge").await;
    assert_refused(&backend, "tiny", vec![NewEvent::new("Tiny", r#"[1e-999999]"#)], "Tiny").await;
    // In a batch, the error names the event that was refused, and the batch stores nothing.
    let mut batch: Vec<NewEvent> = (0..9).map(|i| NewEvent::new("Fine", format!(r#"{{"i":{i}}}"#))).collect();
    batch.insert(6, NewEvent::new("Overflowing", r#"{"n":-1e999999}"#));
    assert_refused(&backend, "batch", batch, "Overflowing").await;

    // The store works afterwards.
    let result = backend.append("big", ExpectedVersion::NoStream, vec![NewEvent::new("Ok", r#"{"n":1e300}"#)]).await;
    assert_eq!(result.expect("append after the refusals").stream_version, 1);
}

#[tokio::test]
async fn a_snapshot_beyond_numeric_is_invalid_payload() {
    let Some(backend) = common::fresh().await else { return };
    backend.append("s", ExpectedVersion::NoStream, vec![NewEvent::new("E", "{}")]).await.expect("append");
    let result = backend.save_snapshot("s", Snapshot::new(1, r#"{"n":1e999999}"#)).await;
    assert!(matches!(result, Err(Error::InvalidPayload { .. })), "{result:?}");
    assert!(backend.get_latest_snapshot("s").await.expect("get").is_none(), "nothing stored");
}

#[tokio::test]
async fn a_lone_surrogate_escape_is_invalid_payload() {
    let Some(backend) = common::fresh().await else { return };
    assert_refused(&backend, "surrogate", vec![NewEvent::new("Lone", r#"{"s":"\ud800"}"#)], "Lone").await;
}
