//! Durable state in sled: what was received, which series are complete, the analysis jobs, the
//! outbox, what was delivered where, and alerts for the admin.
//!
//! Layout (values are JSON so `vcfd` versions and humans can read them):
//! - `instances`:  `<series UID>\0<SOP instance UID>` -> [`InstanceRec`]
//! - `series`:     `<series UID>` -> [`SeriesRec`] (receiving / complete)
//! - `jobs`:       `<series UID>` -> [`JobRec`] (state and attempts)
//! - `outbox`:     `<destination>\0<SOP instance UID>` -> [`OutboxRec`]
//! - `deliveries`: `<destination>\0<SOP instance UID>` -> [`DeliveryRec`]
//! - `dead_letters`: same key as the outbox, entries that failed permanently
//! - `alerts`:     big-endian id -> [`AlertRec`]
//! - `alert_keys`: `flag\0<study hash>\0<kind>` -> big-endian alert id (deduplication)
//! - `scanners`:   `<StationName>\0<DeviceSerialNumber>` -> [`ScannerRun`]
//!
//! Every state change that spans trees is one sled transaction, and callers flush before they
//! acknowledge anything to a peer, so a crash leaves either the old or the new state.

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (wall clock: stored timestamps survive restarts).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRec {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_class_uid: String,
    pub path: PathBuf,
    pub received_ms: u64,
    pub calling_ae: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesState {
    /// Instances are still arriving (or may).
    Receiving,
    /// Quiet period passed; a job exists.
    Complete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesRec {
    pub study_uid: String,
    pub state: SeriesState,
    pub instances: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker (new, failed with attempts left, or interrupted by a restart).
    Pending,
    /// A worker has it; on restart this means it was interrupted and goes back to Pending.
    Running,
    Done,
    /// Failed `analysis.max_attempts` times; needs a human.
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRec {
    pub series_uid: String,
    pub study_uid: String,
    pub state: JobState,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Earliest time of the next attempt (backoff after a failure).
    pub not_before_ms: u64,
    pub updated_ms: u64,
    /// Where the results were written.
    pub out_dir: Option<PathBuf>,
    /// Short outcome for the status API (the analysis stage fills in a verdict later).
    pub verdict: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRec {
    pub destination: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub study_uid: String,
    pub path: PathBuf,
    pub enqueued_ms: u64,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRec {
    pub destination: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub delivered_ms: u64,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRec {
    pub entry: OutboxRec,
    pub reason: String,
    pub dead_ms: u64,
}

/// One alert for the admin or the technician. Fields after `acknowledged` were added with the
/// scan-quality alerts; `serde(default)` keeps records written by earlier versions readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRec {
    pub id: u64,
    pub ms: u64,
    /// `quarantine`, `dead_letter`, a quality flag kind (`ring_artifact`, ...), or
    /// `detector_fault` (the escalation of ring artifacts on one scanner).
    pub kind: String,
    /// A hash, destination or scanner name; never a patient identifier.
    pub subject: String,
    pub message: String,
    pub acknowledged: bool,
    /// `info`, `warning`, `critical` (quality flags) or `error` (appliance problems).
    #[serde(default)]
    pub severity: String,
    /// The scanner that made the study, for alerts about a scan.
    #[serde(default)]
    pub scanner: Option<crate::alerts::ScannerId>,
    /// Hash of the StudyInstanceUID ([`crate::spool::uid_hash`]), never the UID itself.
    #[serde(default)]
    pub study_hash: Option<String>,
    /// Study date and time as the scanner recorded them, to find the study at the console.
    #[serde(default)]
    pub study_time: Option<String>,
    /// Measured values behind a quality flag (e.g. ring radii), for the page and the API.
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub acknowledged_ms: Option<u64>,
}

impl AlertRec {
    /// A new, unacknowledged alert; `id` and `ms` are set when it is stored.
    pub fn new(kind: &str, severity: &str, subject: &str, message: &str) -> Self {
        AlertRec {
            id: 0,
            ms: 0,
            kind: kind.into(),
            subject: subject.into(),
            message: message.into(),
            acknowledged: false,
            severity: severity.into(),
            scanner: None,
            study_hash: None,
            study_time: None,
            values: Default::default(),
            acknowledged_ms: None,
        }
    }
}

/// Per-scanner state of the ring-artifact escalation (tree `scanners`, key
/// [`crate::alerts::ScannerId::key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannerRun {
    pub scanner: crate::alerts::ScannerId,
    /// Studies in a row with ring artifacts, counted since the last clean study or the last
    /// acknowledged escalation.
    pub ring_run: u32,
    /// The last study seen, so that several series of one study count once.
    pub last_study_hash: String,
    pub last_study_ring: bool,
    /// The open `detector_fault` alert of this scanner, if any.
    pub open_escalation: Option<u64>,
    pub updated_ms: u64,
}

/// What [`Store::ack_alert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    Acknowledged(AlertRec),
    AlreadyAcknowledged(AlertRec),
    NotFound,
}

/// Handle to the state database; cheap to clone (sled trees are reference-counted).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    instances: sled::Tree,
    series: sled::Tree,
    jobs: sled::Tree,
    outbox: sled::Tree,
    deliveries: sled::Tree,
    dead: sled::Tree,
    alerts: sled::Tree,
    /// `flag\0<study hash>\0<kind>` -> alert id: a study re-sent or re-run raises no duplicates.
    alert_keys: sled::Tree,
    scanners: sled::Tree,
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Store(e.to_string()))
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Store(format!("corrupt record: {e}")))
}

fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn tx_err(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => e.into(),
    }
}

fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// Opens `state_dir/db`. sled takes an exclusive lock: a second process gets a clear error.
    pub fn open(state_dir: &Path) -> Result<Store> {
        let path = state_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .open()
            .map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
        let t = |n: &str| db.open_tree(n);
        Ok(Store {
            instances: t("instances")?,
            series: t("series")?,
            jobs: t("jobs")?,
            outbox: t("outbox")?,
            deliveries: t("deliveries")?,
            dead: t("dead_letters")?,
            alerts: t("alerts")?,
            alert_keys: t("alert_keys")?,
            scanners: t("scanners")?,
            db,
        })
    }

    /// Makes everything written so far durable; call before acknowledging to a peer.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub fn has_instance(&self, series_uid: &str, sop_uid: &str) -> Result<bool> {
        Ok(self.instances.contains_key(key2(series_uid, sop_uid))?)
    }

    /// Records a received instance and touches its series (back to receiving: a late
    /// instance restarts the quiet period). Returns false for a duplicate, which changes nothing.
    pub fn record_instance(&self, sop_uid: &str, rec: &InstanceRec) -> Result<bool> {
        let key = key2(&rec.series_uid, sop_uid);
        let value = enc(rec)?;
        let now = rec.received_ms;
        (&self.instances, &self.series)
            .transaction(|(inst, series)| {
                if inst.get(&key)?.is_some() {
                    return Ok(false);
                }
                inst.insert(key.as_slice(), value.as_slice())?;
                let mut s = match series.get(rec.series_uid.as_bytes())? {
                    Some(b) => dec::<SeriesRec>(&b).map_err(abort)?,
                    None => SeriesRec {
                        study_uid: rec.study_uid.clone(),
                        state: SeriesState::Receiving,
                        instances: 0,
                        first_ms: now,
                        last_ms: now,
                    },
                };
                s.instances += 1;
                s.last_ms = now;
                s.state = SeriesState::Receiving;
                series.insert(rec.series_uid.as_bytes(), enc(&s).map_err(abort)?)?;
                Ok(true)
            })
            .map_err(tx_err)
    }

    /// Files of a series, in SOP instance UID order.
    pub fn series_files(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        let mut prefix = series_uid.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.instances.scan_prefix(prefix) {
            let (_, v) = kv?;
            out.push(dec::<InstanceRec>(&v)?.path);
        }
        Ok(out)
    }

    /// Forgets the instances of a series (retention); the series and job records stay for the
    /// status API. Returns the spool files to delete, which the caller removes afterwards (a
    /// crash in between leaves orphan files, never records without files).
    pub fn forget_instances(&self, series_uid: &str) -> Result<Vec<PathBuf>> {
        let mut prefix = series_uid.as_bytes().to_vec();
        prefix.push(0);
        let mut files = Vec::new();
        for kv in self.instances.scan_prefix(&prefix) {
            let (k, v) = kv?;
            files.push(dec::<InstanceRec>(&v)?.path);
            self.instances.remove(k)?;
        }
        self.flush()?;
        Ok(files)
    }

    /// Whether any result of this study still waits in the outbox.
    pub fn study_has_pending_deliveries(&self, study_uid: &str) -> Result<bool> {
        Ok(self.outbox()?.iter().any(|e| e.study_uid == study_uid))
    }

    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    pub fn all_series(&self) -> Result<Vec<(String, SeriesRec)>> {
        self.series
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), dec(&v)?))
            })
            .collect()
    }

    /// Marks every series quiet since `quiet_ms` complete and creates (or re-arms) its job, in
    /// one transaction each. Returns the series UIDs that became complete.
    pub fn complete_quiet_series(&self, now: u64, quiet_ms: u64) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (uid, s) in self.all_series()? {
            if s.state != SeriesState::Receiving || s.last_ms.saturating_add(quiet_ms) > now {
                continue;
            }
            let changed = (&self.series, &self.jobs)
                .transaction(|(series, jobs)| {
                    let Some(b) = series.get(uid.as_bytes())? else {
                        return Ok(false);
                    };
                    let mut cur: SeriesRec = dec(&b).map_err(abort)?;
                    // Re-check inside the transaction: an instance may have just arrived.
                    if cur.state != SeriesState::Receiving
                        || cur.last_ms.saturating_add(quiet_ms) > now
                    {
                        return Ok(false);
                    }
                    cur.state = SeriesState::Complete;
                    series.insert(uid.as_bytes(), enc(&cur).map_err(abort)?)?;
                    let job = JobRec {
                        series_uid: uid.clone(),
                        study_uid: cur.study_uid.clone(),
                        state: JobState::Pending,
                        attempts: 0,
                        last_error: None,
                        not_before_ms: 0,
                        updated_ms: now,
                        out_dir: None,
                        verdict: None,
                    };
                    jobs.insert(uid.as_bytes(), enc(&job).map_err(abort)?)?;
                    Ok(true)
                })
                .map_err(tx_err)?;
            if changed {
                done.push(uid);
            }
        }
        if !done.is_empty() {
            self.flush()?;
        }
        Ok(done)
    }

    pub fn job(&self, series_uid: &str) -> Result<Option<JobRec>> {
        self.jobs
            .get(series_uid.as_bytes())?
            .map(|b| dec(&b))
            .transpose()
    }

    pub fn jobs(&self) -> Result<Vec<JobRec>> {
        self.jobs.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn put_job(&self, job: &JobRec) -> Result<()> {
        self.jobs.insert(job.series_uid.as_bytes(), enc(job)?)?;
        self.flush()
    }

    /// After a restart, jobs that were running were interrupted: they go back to the queue
    /// (their attempt stays counted, so a series that crashes the daemon is quarantined too).
    pub fn requeue_interrupted(&self) -> Result<usize> {
        let mut n = 0;
        for mut j in self.jobs()? {
            if j.state == JobState::Running {
                j.state = JobState::Pending;
                j.last_error = Some("interrupted by a restart".into());
                j.updated_ms = now_ms();
                self.jobs.insert(j.series_uid.as_bytes(), enc(&j)?)?;
                n += 1;
            }
        }
        self.flush()?;
        Ok(n)
    }

    /// Adds an entry unless this instance was already delivered to (or is queued for) this
    /// destination. Returns whether it was added.
    pub fn enqueue(&self, rec: &OutboxRec) -> Result<bool> {
        let key = key2(&rec.destination, &rec.sop_instance_uid);
        let value = enc(rec)?;
        let added = (&self.outbox, &self.deliveries)
            .transaction(|(outbox, deliveries)| {
                if deliveries.get(&key)?.is_some() || outbox.get(&key)?.is_some() {
                    return Ok(false);
                }
                outbox.insert(key.as_slice(), value.as_slice())?;
                Ok(true)
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(added)
    }

    pub fn outbox(&self) -> Result<Vec<OutboxRec>> {
        self.outbox.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn is_delivered(&self, destination: &str, sop_uid: &str) -> Result<bool> {
        Ok(self.deliveries.contains_key(key2(destination, sop_uid))?)
    }

    pub fn deliveries(&self) -> Result<Vec<DeliveryRec>> {
        self.deliveries.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetterRec>> {
        self.dead.iter().map(|kv| dec(&kv?.1)).collect()
    }

    /// Records the delivery and only then (same transaction, then flushed) drops the outbox
    /// entry: after a crash the entry is either still queued or known delivered.
    pub fn record_delivery(&self, entry: &OutboxRec) -> Result<()> {
        let key = key2(&entry.destination, &entry.sop_instance_uid);
        let rec = enc(&DeliveryRec {
            destination: entry.destination.clone(),
            sop_instance_uid: entry.sop_instance_uid.clone(),
            study_uid: entry.study_uid.clone(),
            delivered_ms: now_ms(),
            attempts: entry.attempts + 1,
        })?;
        (&self.deliveries, &self.outbox)
            .transaction(|(deliveries, outbox)| {
                deliveries.insert(key.as_slice(), rec.as_slice())?;
                outbox.remove(key.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// A transient failure: count it and schedule the next attempt.
    pub fn reschedule(&self, entry: &OutboxRec, error: &str, next_ms: u64) -> Result<()> {
        let key = key2(&entry.destination, &entry.sop_instance_uid);
        let mut e = entry.clone();
        e.attempts += 1;
        e.next_attempt_ms = next_ms;
        e.last_error = Some(error.to_string());
        if self.outbox.contains_key(&key)? {
            self.outbox.insert(key, enc(&e)?)?;
        }
        self.flush()
    }

    /// A permanent failure: out of the outbox, into dead letters, with an alert.
    pub fn dead_letter(&self, entry: &OutboxRec, reason: &str) -> Result<()> {
        let key = key2(&entry.destination, &entry.sop_instance_uid);
        let rec = enc(&DeadLetterRec {
            entry: entry.clone(),
            reason: reason.to_string(),
            dead_ms: now_ms(),
        })?;
        (&self.dead, &self.outbox)
            .transaction(|(dead, outbox)| {
                dead.insert(key.as_slice(), rec.as_slice())?;
                outbox.remove(key.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)?;
        self.raise_alert(
            "dead_letter",
            &entry.destination,
            &format!(
                "instance {} of study {} not delivered to {:?}: {reason}",
                crate::spool::uid_hash(&entry.sop_instance_uid),
                crate::spool::uid_hash(&entry.study_uid),
                entry.destination
            ),
        )
    }

    /// Stores an appliance alert (quarantine, dead letter) and logs it at error level.
    pub fn raise_alert(&self, kind: &str, subject: &str, message: &str) -> Result<()> {
        self.put_alert(AlertRec::new(kind, "error", subject, message))?;
        log::error!(target: "vcfd::alert", "ALERT {kind} {subject}: {message}");
        Ok(())
    }

    /// Stores `rec` under a fresh id (and the current time unless set); returns it as stored.
    pub fn put_alert(&self, mut rec: AlertRec) -> Result<AlertRec> {
        rec.id = self.db.generate_id()?;
        if rec.ms == 0 {
            rec.ms = now_ms();
        }
        self.alerts.insert(rec.id.to_be_bytes(), enc(&rec)?)?;
        self.flush()?;
        Ok(rec)
    }

    /// Stores the alert of one quality flag of one study unless that study already has an
    /// alert of this kind (a re-sent study or a re-run job). Returns the new alert, or None.
    pub fn put_flag_alert(&self, mut rec: AlertRec) -> Result<Option<AlertRec>> {
        let study = rec.study_hash.clone().unwrap_or_default();
        let key = key2(&format!("flag\0{study}"), &rec.kind);
        rec.id = self.db.generate_id()?;
        if rec.ms == 0 {
            rec.ms = now_ms();
        }
        let value = enc(&rec)?;
        let id = rec.id.to_be_bytes();
        let added = (&self.alerts, &self.alert_keys)
            .transaction(|(alerts, keys)| {
                if keys.get(&key)?.is_some() {
                    return Ok(false);
                }
                keys.insert(key.as_slice(), &id[..])?;
                alerts.insert(&id[..], value.as_slice())?;
                Ok(true)
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(added.then_some(rec))
    }

    /// Applies `step` to the ring-run state of the scanner under `key` (default state when
    /// new). When `step` returns an alert, it is stored and becomes the scanner's open
    /// escalation, in the same transaction. Returns the new state and the stored alert.
    pub fn update_scanner(
        &self,
        key: &str,
        step: impl Fn(ScannerRun) -> (ScannerRun, Option<AlertRec>),
    ) -> Result<(ScannerRun, Option<AlertRec>)> {
        let id = self.db.generate_id()?;
        let now = now_ms();
        let res = (&self.scanners, &self.alerts)
            .transaction(|(scanners, alerts)| {
                let cur = match scanners.get(key.as_bytes())? {
                    Some(b) => dec::<ScannerRun>(&b).map_err(abort)?,
                    None => ScannerRun::default(),
                };
                let (mut next, alert) = step(cur);
                next.updated_ms = now;
                let alert = match alert {
                    Some(mut a) => {
                        a.id = id;
                        a.ms = now;
                        alerts.insert(&id.to_be_bytes(), enc(&a).map_err(abort)?)?;
                        next.open_escalation = Some(id);
                        Some(a)
                    }
                    None => None,
                };
                scanners.insert(key.as_bytes(), enc(&next).map_err(abort)?)?;
                Ok((next, alert))
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(res)
    }

    /// Ring-run state of every scanner seen.
    pub fn scanners(&self) -> Result<Vec<ScannerRun>> {
        self.scanners.iter().map(|kv| dec(&kv?.1)).collect()
    }

    pub fn alert(&self, id: u64) -> Result<Option<AlertRec>> {
        self.alerts
            .get(id.to_be_bytes())?
            .map(|b| dec(&b))
            .transpose()
    }

    /// Marks an alert acknowledged. Acknowledging a scanner's open escalation also closes it
    /// and restarts that scanner's ring count, so it escalates again only after another run.
    pub fn ack_alert(&self, id: u64) -> Result<AckOutcome> {
        let now = now_ms();
        let out = (&self.alerts, &self.scanners)
            .transaction(|(alerts, scanners)| {
                let Some(b) = alerts.get(id.to_be_bytes())? else {
                    return Ok(AckOutcome::NotFound);
                };
                let mut rec: AlertRec = dec(&b).map_err(abort)?;
                if rec.acknowledged {
                    return Ok(AckOutcome::AlreadyAcknowledged(rec));
                }
                rec.acknowledged = true;
                rec.acknowledged_ms = Some(now);
                alerts.insert(&id.to_be_bytes(), enc(&rec).map_err(abort)?)?;
                if let Some(sc) = &rec.scanner {
                    let key = sc.key();
                    if let Some(b) = scanners.get(key.as_bytes())? {
                        let mut run: ScannerRun = dec(&b).map_err(abort)?;
                        if run.open_escalation == Some(id) {
                            run.open_escalation = None;
                            run.ring_run = 0;
                            run.updated_ms = now;
                            scanners.insert(key.as_bytes(), enc(&run).map_err(abort)?)?;
                        }
                    }
                }
                Ok(AckOutcome::Acknowledged(rec))
            })
            .map_err(tx_err)?;
        self.flush()?;
        Ok(out)
    }

    /// All alerts, oldest first.
    pub fn alerts(&self) -> Result<Vec<AlertRec>> {
        self.alerts.iter().map(|kv| dec(&kv?.1)).collect()
    }

    /// Size of the database on disk, bytes (for the status page).
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(series: &str, path: &str, ms: u64) -> InstanceRec {
        InstanceRec {
            study_uid: "1.2".into(),
            series_uid: series.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            path: path.into(),
            received_ms: ms,
            calling_ae: "CT1".into(),
        }
    }

    fn entry(dest: &str, sop: &str) -> OutboxRec {
        OutboxRec {
            destination: dest.into(),
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.88.22".into(),
            study_uid: "1.2".into(),
            path: "/x".into(),
            enqueued_ms: 0,
            attempts: 0,
            next_attempt_ms: 0,
            last_error: None,
        }
    }

    #[test]
    fn instances_are_idempotent_and_series_complete_after_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s
            .record_instance("1.2.3.1", &inst("1.2.3", "a", 1000))
            .unwrap());
        assert!(!s
            .record_instance("1.2.3.1", &inst("1.2.3", "a", 1100))
            .unwrap());
        assert!(s
            .record_instance("1.2.3.2", &inst("1.2.3", "b", 2000))
            .unwrap());
        assert_eq!(s.all_series().unwrap()[0].1.instances, 2);
        assert!(s.complete_quiet_series(5000, 10_000).unwrap().is_empty());
        assert_eq!(s.complete_quiet_series(12_000, 10_000).unwrap(), ["1.2.3"]);
        assert!(s.complete_quiet_series(13_000, 10_000).unwrap().is_empty());
        let job = s.job("1.2.3").unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Pending, 0));
        assert_eq!(
            s.series_files("1.2.3").unwrap(),
            [PathBuf::from("a"), PathBuf::from("b")]
        );
        // Survives reopening.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.instance_count(), 2);
    }

    #[test]
    fn outbox_delivers_once_per_destination() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.enqueue(&entry("a", "9.1")).unwrap());
        assert!(!s.enqueue(&entry("a", "9.1")).unwrap(), "queued twice");
        assert!(s.enqueue(&entry("b", "9.1")).unwrap());
        let e = s.outbox().unwrap().remove(0);
        s.reschedule(&e, "refused", 42).unwrap();
        let e = s.outbox().unwrap().remove(0);
        assert_eq!((e.attempts, e.next_attempt_ms), (1, 42));
        s.record_delivery(&e).unwrap();
        assert!(s.is_delivered("a", "9.1").unwrap());
        assert_eq!(s.outbox_len(), 1);
        assert!(
            !s.enqueue(&entry("a", "9.1")).unwrap(),
            "a delivered instance was queued again"
        );
        let b = s.outbox().unwrap().remove(0);
        s.dead_letter(&b, "SOP class rejected").unwrap();
        assert_eq!(s.outbox_len(), 0);
        assert_eq!(s.dead_letters().unwrap().len(), 1);
        assert_eq!(s.alerts().unwrap()[0].kind, "dead_letter");
    }
}
