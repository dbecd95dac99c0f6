//! Series completion: DICOM has no "end of series" message, so a series counts as complete
//! when no instance of it arrived for a quiet period (default 10 s; Orthanc uses 60 s, MONAI's
//! gateway 5 s). Completion is a sled transaction that also creates the job, so a crash cannot
//! complete a series without queueing its analysis.

use crate::store::{now_ms, Store};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Checks for quiet series every `tick` until `shutdown` flips; wakes `jobs_ready` when a job
/// was created.
pub async fn run(
    store: Store,
    quiet: Duration,
    tick: Duration,
    jobs_ready: std::sync::Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let quiet_ms = quiet.as_millis() as u64;
    loop {
        let s = store.clone();
        let res =
            tokio::task::spawn_blocking(move || s.complete_quiet_series(now_ms(), quiet_ms)).await;
        match res {
            Ok(Ok(done)) => {
                for uid in &done {
                    log::info!(
                        series = crate::spool::uid_hash(uid).as_str(), stage = "complete";
                        "series {} complete after {} s quiet",
                        crate::spool::uid_hash(uid),
                        quiet.as_secs()
                    );
                }
                if !done.is_empty() {
                    jobs_ready.notify_one();
                }
            }
            Ok(Err(e)) => log::error!("series completion: {e}"),
            Err(e) => log::error!("series completion task: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}
