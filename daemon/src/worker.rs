//! The analysis worker pool: durable jobs, bounded concurrency, quarantine.
//!
//! Job states (persisted in sled, see [`crate::store`]):
//! `Pending -> Running -> Done`, `Running -> Pending` (failure with attempts left, or a
//! restart), `Running -> Quarantined` (the `max_attempts`-th failure, with an alert). The
//! attempt is counted when the job is claimed, before any work, so a series that crashes the
//! whole daemon is also quarantined eventually instead of crash-looping the box.
//!
//! Analyses run on `spawn_blocking` threads limited by a semaphore (1 worker leaves the second
//! core of a 2-core box to the SCP), so the SCP's async tasks are never blocked.

use crate::pipeline;
use crate::store::{now_ms, JobRec, JobState, OutboxRec, Store};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

/// What a worker needs to know about the appliance.
#[derive(Clone)]
pub struct WorkerConfig {
    /// `state_dir/results`; each study's results go to `<results>/<StudyInstanceUID>/`.
    pub results_dir: PathBuf,
    /// PACS destination names; empty means results stay on the box.
    pub destinations: Vec<String>,
    pub max_attempts: u32,
    pub workers: u32,
    /// Delay before retrying a failed job, multiplied by the attempt count.
    pub retry_delay: Duration,
    /// This box's serial, for the SR's device observer ("unprovisioned" before provisioning).
    pub box_serial: String,
    /// `alerts.ring_escalation_studies`: ring studies in a row that escalate (see `alerts`).
    pub ring_escalation_studies: u32,
}

/// A UID as a folder name: UIDs are digits and dots, anything else is replaced so a hostile
/// UID cannot escape the results folder.
pub fn safe_dir_name(uid: &str) -> String {
    let s: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_digit() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("uid-{}", crate::spool::uid_hash(uid))
    } else {
        s
    }
}

/// Marks a pending job running and counts the attempt (flushed before any work starts).
fn claim(store: &Store, mut job: JobRec) -> Result<JobRec> {
    job.state = JobState::Running;
    job.attempts += 1;
    job.updated_ms = now_ms();
    store.put_job(&job)?;
    Ok(job)
}

/// Runs one claimed job to its next persisted state.
pub fn run_job(store: &Store, cfg: &WorkerConfig, mut job: JobRec) -> Result<JobRec> {
    let series = crate::spool::uid_hash(&job.series_uid);
    let study = crate::spool::uid_hash(&job.study_uid);
    let outcome = (|| {
        let files = store.series_files(&job.series_uid)?;
        let out_dir = cfg.results_dir.join(safe_dir_name(&job.study_uid));
        let outcome = pipeline::process_series(&files, &out_dir, &cfg.box_serial)?;
        for file in &outcome.forward {
            enqueue_file(store, &cfg.destinations, file)?;
        }
        Ok::<_, Error>((outcome, out_dir))
    })();
    job.updated_ms = now_ms();
    match outcome {
        Ok((o, out_dir)) => {
            log::info!(
                study = study.as_str(), series = series.as_str(), stage = "analysis";
                "series {series} done: {} ({} result file(s) queued)", o.verdict, o.forward.len()
            );
            // Before the job is marked done, so whoever sees "done" also sees its alerts. A
            // failure here must not fail an analysis that succeeded: it is logged instead.
            if let Err(e) = store.series_files(&job.series_uid).and_then(|files| {
                crate::alerts::record_series(
                    store,
                    &files,
                    &o.report,
                    &job.study_uid,
                    cfg.ring_escalation_studies,
                )
            }) {
                log::error!(study = study.as_str(); "recording the quality alerts of study {study}: {e}");
            }
            job.state = JobState::Done;
            job.last_error = None;
            job.out_dir = Some(out_dir);
            job.verdict = Some(o.verdict);
        }
        Err(e) => {
            job.last_error = Some(e.to_string());
            if job.attempts >= cfg.max_attempts {
                job.state = JobState::Quarantined;
                store.raise_alert(
                    "quarantine",
                    &series,
                    &format!(
                        "series {series} of study {study} failed {} time(s), quarantined: {e}",
                        job.attempts
                    ),
                )?;
            } else {
                log::warn!(
                    study = study.as_str(), series = series.as_str(), stage = "analysis";
                    "series {series} failed (attempt {} of {}): {e}", job.attempts, cfg.max_attempts
                );
                job.state = JobState::Pending;
                job.not_before_ms =
                    now_ms() + cfg.retry_delay.as_millis() as u64 * u64::from(job.attempts);
            }
        }
    }
    store.put_job(&job)?;
    Ok(job)
}

/// Puts one DICOM file into the outbox of every destination.
pub fn enqueue_file(store: &Store, destinations: &[String], file: &Path) -> Result<usize> {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| Error::Dicom {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
    let meta = obj.meta();
    let trim = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    let study_uid = obj
        .element(tags::STUDY_INSTANCE_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| trim(&s))
        .unwrap_or_default();
    let mut added = 0;
    for dest in destinations {
        let rec = OutboxRec {
            destination: dest.clone(),
            sop_instance_uid: trim(meta.media_storage_sop_instance_uid()),
            sop_class_uid: trim(meta.media_storage_sop_class_uid()),
            study_uid: study_uid.clone(),
            path: file.to_path_buf(),
            enqueued_ms: now_ms(),
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        };
        if store.enqueue(&rec)? {
            added += 1;
        }
    }
    Ok(added)
}

/// Pending jobs whose backoff has passed, oldest first.
fn due_jobs(store: &Store) -> Result<Vec<JobRec>> {
    let now = now_ms();
    let mut jobs: Vec<JobRec> = store
        .jobs()?
        .into_iter()
        .filter(|j| j.state == JobState::Pending && j.not_before_ms <= now)
        .collect();
    jobs.sort_by_key(|j| j.updated_ms);
    Ok(jobs)
}

/// The pool: resumes interrupted jobs, then claims due jobs as workers free up, until
/// `shutdown`. Running analyses are not waited for on shutdown: they stay `Running` in sled
/// and resume after the restart.
pub async fn run(
    store: Store,
    cfg: WorkerConfig,
    ready: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    match store.requeue_interrupted() {
        Ok(0) => {}
        Ok(n) => log::info!("resuming {n} job(s) interrupted by a restart"),
        Err(e) => log::error!("cannot requeue interrupted jobs: {e}"),
    }
    let slots = Arc::new(Semaphore::new(cfg.workers.max(1) as usize));
    let cfg = Arc::new(cfg);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let jobs = match due_jobs(&store) {
            Ok(j) => j,
            Err(e) => {
                log::error!("reading jobs: {e}");
                Vec::new()
            }
        };
        for job in jobs {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = shutdown.changed() => return,
            };
            let job = match claim(&store, job) {
                Ok(j) => j,
                Err(e) => {
                    log::error!("claiming job: {e}");
                    continue;
                }
            };
            let (store, cfg, ready) = (store.clone(), cfg.clone(), ready.clone());
            tokio::spawn(async move {
                let res = tokio::task::spawn_blocking(move || run_job(&store, &cfg, job)).await;
                drop(permit);
                match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => log::error!("job bookkeeping failed: {e}"),
                    Err(e) => log::error!("analysis panicked: {e}"),
                }
                // Results may be in the outbox now; and a failed job may be due again later.
                ready.notify_waiters();
            });
        }
        tokio::select! {
            _ = ready.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::InstanceRec;

    #[test]
    fn failing_series_is_quarantined_after_max_attempts_and_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bad = dir.path().join("bad.dcm");
        std::fs::write(&bad, b"not dicom").unwrap();
        store
            .record_instance(
                "1.9.1",
                &InstanceRec {
                    study_uid: "1.9".into(),
                    series_uid: "1.9.0".into(),
                    sop_class_uid: String::new(),
                    path: bad,
                    received_ms: 0,
                    calling_ae: "X".into(),
                },
            )
            .unwrap();
        store.complete_quiet_series(20_000, 10_000).unwrap();
        let cfg = WorkerConfig {
            results_dir: dir.path().join("results"),
            destinations: vec![],
            max_attempts: 2,
            box_serial: "test-box".into(),
            ring_escalation_studies: 3,
            workers: 1,
            retry_delay: Duration::ZERO,
        };
        // First attempt is interrupted (claimed, then the "process" dies).
        let job = due_jobs(&store).unwrap().remove(0);
        claim(&store, job).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert!(
            due_jobs(&store).unwrap().is_empty(),
            "running job looked due"
        );
        assert_eq!(store.requeue_interrupted().unwrap(), 1);
        let job = due_jobs(&store).unwrap().remove(0);
        assert_eq!(job.attempts, 1, "the interrupted attempt was not counted");
        let job = run_job(&store, &cfg, claim(&store, job).unwrap()).unwrap();
        assert_eq!(job.state, JobState::Quarantined);
        assert!(job.last_error.unwrap().contains("DICOM"), "unclear error");
        let alerts = store.alerts().unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, "quarantine");
        assert!(!alerts[0].message.contains("1.9.0"), "UID in an alert");
    }

    #[test]
    fn hostile_uids_stay_inside_results() {
        assert_eq!(safe_dir_name("1.2.840.1"), "1.2.840.1");
        assert_eq!(safe_dir_name("../../etc"), ".._..____");
        assert!(safe_dir_name("..").starts_with("uid-"));
        assert!(safe_dir_name("").starts_with("uid-"));
    }
}
