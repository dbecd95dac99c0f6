//! Retention: received instances are deleted once their series was analysed, its results left
//! the box (no outbox entry of the study remains) and `retention.source_grace_hours` passed;
//! result folders are deleted `retention.results_days` after they were last written.
//! Quarantined series are kept: a human has to look at them.

use crate::store::{now_ms, JobState, Store};
use crate::Result;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub series: usize,
    pub files: usize,
    pub result_dirs: usize,
}

/// One retention pass at time `now_ms`.
pub fn sweep(
    store: &Store,
    results_dir: &Path,
    source_grace: Duration,
    results_age: Duration,
    now_ms: u64,
) -> Result<Swept> {
    let mut out = Swept::default();
    let grace = source_grace.as_millis() as u64;
    for job in store.jobs()? {
        if job.state != JobState::Done
            || job.updated_ms.saturating_add(grace) > now_ms
            || store.study_has_pending_deliveries(&job.study_uid)?
        {
            continue;
        }
        let files = store.forget_instances(&job.series_uid)?;
        if files.is_empty() {
            continue;
        }
        out.series += 1;
        for f in files {
            if std::fs::remove_file(&f).is_ok() {
                out.files += 1;
            }
            if let Some(dir) = f.parent() {
                // Removes the series folder once empty; fails harmlessly otherwise.
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    // A retention longer than the epoch is "keep forever", not a panic.
    let cutoff = (SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms)).checked_sub(results_age);
    if let (Some(cutoff), Ok(entries)) = (cutoff, std::fs::read_dir(results_dir)) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old && e.path().is_dir() && std::fs::remove_dir_all(e.path()).is_ok() {
                out.result_dirs += 1;
            }
        }
    }
    Ok(out)
}

/// Sweeps every `tick` until `shutdown`.
pub async fn run(
    store: Store,
    results_dir: std::path::PathBuf,
    source_grace: Duration,
    results_age: Duration,
    tick: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (s, r) = (store.clone(), results_dir.clone());
        let res =
            tokio::task::spawn_blocking(move || sweep(&s, &r, source_grace, results_age, now_ms()))
                .await;
        match res {
            Ok(Ok(sw)) if sw != Swept::default() => log::info!(
                stage = "retention";
                "retention: removed {} file(s) of {} series, {} result folder(s)",
                sw.files, sw.series, sw.result_dirs
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("retention: {e}"),
            Err(e) => log::error!("retention task: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{InstanceRec, OutboxRec};

    #[test]
    fn sources_go_after_delivery_and_grace_results_after_their_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let src = spool.join("a.dcm");
        std::fs::write(&src, b"x").unwrap();
        store
            .record_instance(
                "1.5.1",
                &InstanceRec {
                    study_uid: "1.5".into(),
                    series_uid: "1.5.0".into(),
                    sop_class_uid: String::new(),
                    path: src.clone(),
                    received_ms: 0,
                    calling_ae: "X".into(),
                },
            )
            .unwrap();
        store.complete_quiet_series(20_000, 10_000).unwrap();
        let mut job = store.job("1.5.0").unwrap().unwrap();
        job.state = JobState::Done;
        job.updated_ms = 100_000;
        store.put_job(&job).unwrap();
        let pending = OutboxRec {
            destination: "p".into(),
            sop_instance_uid: "9.9".into(),
            sop_class_uid: String::new(),
            study_uid: "1.5".into(),
            path: "/r".into(),
            enqueued_ms: 0,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        };
        store.enqueue(&pending).unwrap();
        let results = dir.path().join("results");
        std::fs::create_dir_all(results.join("1.5")).unwrap();
        let hour = Duration::from_secs(3600);
        let day = 24 * hour;
        // Within the grace period: nothing.
        let s = sweep(&store, &results, hour, day, 100_000 + 1000).unwrap();
        assert_eq!(s, Swept::default());
        // Grace passed but a result is still queued for the PACS: sources stay.
        let later = 100_000 + 2 * 3_600_000;
        assert_eq!(sweep(&store, &results, hour, day, later).unwrap().files, 0);
        assert!(src.exists());
        store.record_delivery(&pending).unwrap();
        let s = sweep(&store, &results, hour, day, later).unwrap();
        assert_eq!((s.series, s.files), (1, 1));
        assert!(!src.exists());
        assert_eq!(store.instance_count(), 0);
        assert!(results.join("1.5").exists(), "fresh results deleted");
        // Results older than their days go.
        let far = now_ms() + 2 * 86_400_000;
        assert_eq!(
            sweep(&store, &results, hour, day, far).unwrap().result_dirs,
            1
        );
        assert!(!results.join("1.5").exists());
    }
}
