//! Reading and resuming instances from the store alone, without the sagas' definitions: what
//! `allframe sagas list | show | resume` does on any store, and what the orchestrator's own
//! `list`, `instance` and `resume` build on.

use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, StreamId};

use crate::error::SagaError;
use crate::progress::{Progress, SagaState};
use crate::record::{Record, SAGA_STREAM_PREFIX, instance_of, stream_of};

/// One instance, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The saga's name.
    pub saga: String,
    /// The instance's id.
    pub id: String,
    /// Its progress (state, input, outputs, history).
    pub progress: Progress,
}

/// Reads instance `id` of `saga` and folds its records.
///
/// # Errors
///
/// [`SagaError::NotFound`], an unreadable record, a store error.
pub async fn load(backend: &dyn EventStoreBackend, saga: &str, id: &str) -> Result<Progress, SagaError> {
    let stream = stream_of(saga, id);
    let mut progress = Progress::default();
    loop {
        let page = backend.read_stream(&stream, progress.version, 512).await?;
        let full = page.len() == 512;
        for event in &page {
            let record = Record::from_event(event).map_err(|error| SagaError::Corrupt {
                stream: stream.clone(),
                version: event.version,
                reason: error.to_string(),
            })?;
            progress.apply(record);
        }
        if !full {
            break;
        }
    }
    if !progress.started() {
        return Err(SagaError::NotFound { saga: saga.to_owned(), id: id.to_owned() });
    }
    Ok(progress)
}

/// Every instance of `saga` (of every saga: `None`) in `backend`, by saga and id.
///
/// # Errors
///
/// An unreadable record, a store error.
pub async fn list(backend: &dyn EventStoreBackend, saga: Option<&str>) -> Result<Vec<Instance>, SagaError> {
    let prefix = saga.map_or_else(|| SAGA_STREAM_PREFIX.to_owned(), |saga| stream_of(saga, ""));
    let mut after = Some(StreamId::from(prefix.as_str()));
    let mut instances = Vec::new();
    'pages: while let Some(from) = after.take() {
        let page = backend.list_streams(Some(from.as_str()), 256).await?;
        let full = page.len() == 256;
        for (stream, _) in &page {
            if !stream.as_str().starts_with(prefix.as_str()) {
                break 'pages;
            }
            let Some((saga, id)) = instance_of(stream.as_str()) else { continue };
            let progress = load(backend, saga, id).await?;
            instances.push(Instance { saga: saga.to_owned(), id: id.to_owned(), progress });
        }
        if full {
            after = page.last().map(|(stream, _)| stream.clone());
        }
    }
    Ok(instances)
}

/// Resumes a stuck instance: the runner of its saga tries its compensation again, with a fresh
/// count of attempts.
///
/// # Errors
///
/// [`SagaError::NotStuck`] when it is not stuck, [`SagaError::NotFound`], a store error
/// (a conflict when the instance changed meanwhile).
pub async fn resume(backend: &dyn EventStoreBackend, saga: &str, id: &str) -> Result<(), SagaError> {
    let progress = load(backend, saga, id).await?;
    let state = progress.state();
    if !matches!(state, SagaState::Stuck { .. }) {
        return Err(SagaError::NotStuck { saga: saga.to_owned(), id: id.to_owned(), state: state.label() });
    }
    let expected = ExpectedVersion::Exact(progress.version);
    backend.append(&stream_of(saga, id), expected, vec![Record::Resumed.to_event()]).await?;
    Ok(())
}
