//! The memory backend never waits, so an append must still let the runtime run other tasks:
//! writers appending in a loop must not starve a timer on the same runtime (tokio's
//! cooperative budget). Without that, sixteen writers on two workers kept both workers
//! forever and a timer in the same program never fired.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use allframe_backend_memory::InMemoryBackend;
use allframe_cqrs_core::{EventStoreBackend, ExpectedVersion, NewEvent};

/// Appends each writer makes at most; a starved timer lets every writer reach it.
const CAP: u64 = 400_000;

#[test]
fn looping_writers_do_not_starve_a_timer() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (finished_early, total) = runtime.block_on(async {
        let backend = Arc::new(InMemoryBackend::new());
        backend.append("taken", ExpectedVersion::NoStream, vec![NewEvent::new("T", "{}")]).await.unwrap();
        let fired = Arc::new(AtomicBool::new(false));
        let appends = Arc::new(AtomicU64::new(0));
        let timer = {
            let fired = Arc::clone(&fired);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                fired.store(true, Ordering::SeqCst);
            })
        };
        // Each writer retries a conflicting append (nothing is stored, so memory stays flat)
        // until the timer has fired or it reaches the cap.
        let writers: Vec<_> = (0..16)
            .map(|_| {
                let (backend, fired, appends) = (Arc::clone(&backend), Arc::clone(&fired), Arc::clone(&appends));
                tokio::spawn(async move {
                    for done in 0..CAP {
                        if fired.load(Ordering::SeqCst) {
                            return done < CAP;
                        }
                        let event = vec![NewEvent::new("T", "{}")];
                        assert!(backend.append("taken", ExpectedVersion::NoStream, event).await.is_err());
                        appends.fetch_add(1, Ordering::Relaxed);
                    }
                    false
                })
            })
            .collect();
        let mut finished_early = 0;
        for writer in writers {
            finished_early += usize::from(writer.await.unwrap());
        }
        timer.await.unwrap();
        (finished_early, appends.load(Ordering::Relaxed))
    });
    assert_eq!(
        finished_early, 16,
        "the timer fired only after writers had run to their cap ({total} appends): appends starve the runtime"
    );
}
