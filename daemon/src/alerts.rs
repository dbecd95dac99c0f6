//! Scan-quality alerts for the technician at the scanner.
//!
//! Each quality flag of an analysed study becomes a stored alert (sled, shown on the status
//! page and under `/api/alerts`) and a journald entry at WARNING with structured fields
//! (`VCFD_ALERT`, `VCFD_STATION`, `VCFD_DEVICE_SERIAL`, `VCFD_MODEL`, `VCFD_STUDY_TIME`,
//! `VCFD_STUDY_HASH`), so a site's log collector can page someone without reading our page.
//! Nothing that identifies the patient goes into either: the study is named by the scanner,
//! its date and time, and a hash of its StudyInstanceUID.
//!
//! A failing detector shows as ring artifacts on every study of one scanner. Ring artifacts on
//! K studies in a row from the same scanner (StationName + DeviceSerialNumber) therefore
//! escalate to one `detector_fault` alert ("detector fault suspected: call service") that
//! stays open until someone acknowledges it; a clean study restarts the count but does not
//! close the escalation (one clean study does not prove the detector repaired).

use crate::dicom_in::SeriesMeta;
use crate::store::{AlertRec, ScannerRun, Store};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vcfd_model::findings::{Quality, QualityFlag, Severity};

/// Kind of the quality flag that feeds the escalation.
pub const RING_ARTIFACT: &str = "ring_artifact";
/// Kind of the escalated alert.
pub const DETECTOR_FAULT: &str = "detector_fault";
/// Default K: ring artifacts on this many studies in a row escalate.
pub const DEFAULT_RING_ESCALATION_STUDIES: u32 = 3;
/// Log target of every alert (journald field `TARGET`).
pub const LOG_TARGET: &str = "vcfd::alert";

/// The scanner a study came from, as its DICOM header names it (untrusted text: escape it
/// wherever it is shown).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScannerId {
    /// StationName (0008,1010).
    pub station_name: String,
    /// DeviceSerialNumber (0018,1000).
    pub device_serial_number: String,
    /// ManufacturerModelName (0008,1090); informational, not part of the identity.
    pub manufacturer_model: String,
}

impl ScannerId {
    pub fn from_meta(meta: &SeriesMeta) -> Self {
        ScannerId {
            station_name: meta.station_name.trim().to_string(),
            device_serial_number: meta.device_serial_number.trim().to_string(),
            manufacturer_model: meta.manufacturer_model_name.trim().to_string(),
        }
    }

    /// Identity of the scanner for the ring count: station and serial (two stations may share
    /// a model, and a serial alone may be missing).
    pub fn key(&self) -> String {
        format!("{}\0{}", self.station_name, self.device_serial_number)
    }

    /// "STATION (serial S, MODEL)" for messages; "unknown scanner" when the header said nothing.
    pub fn label(&self) -> String {
        let station = if self.station_name.is_empty() {
            "unknown station"
        } else {
            &self.station_name
        };
        let mut parts = Vec::new();
        if !self.device_serial_number.is_empty() {
            parts.push(format!("serial {}", self.device_serial_number));
        }
        if !self.manufacturer_model.is_empty() {
            parts.push(self.manufacturer_model.clone());
        }
        if parts.is_empty() {
            station.to_string()
        } else {
            format!("{station} ({})", parts.join(", "))
        }
    }
}

/// "YYYY-MM-DD HH:MM:SS" from DICOM StudyDate (DA) and StudyTime (TM); whatever is unparsable
/// is passed through trimmed so the technician still sees what the scanner wrote.
pub fn study_time(date: &str, time: &str) -> String {
    let (date, time) = (date.trim(), time.trim());
    let d = if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
    } else {
        date.to_string()
    };
    let digits: String = time.chars().take_while(|c| c.is_ascii_digit()).collect();
    let t = match digits.len() {
        6.. => format!("{}:{}:{}", &digits[..2], &digits[2..4], &digits[4..6]),
        4 | 5 => format!("{}:{}", &digits[..2], &digits[2..4]),
        _ => time.to_string(),
    };
    match (d.is_empty(), t.is_empty()) {
        (true, _) => t,
        (false, true) => d,
        (false, false) => format!("{d} {t}"),
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The journald fields of one alert (valid journal field names: upper case, digits, `_`).
pub fn journal_fields(
    kind: &str,
    scanner: &ScannerId,
    study_time: &str,
    study_hash: &str,
) -> [(&'static str, String); 6] {
    [
        ("VCFD_ALERT", kind.to_string()),
        ("VCFD_STATION", scanner.station_name.clone()),
        ("VCFD_DEVICE_SERIAL", scanner.device_serial_number.clone()),
        ("VCFD_MODEL", scanner.manufacturer_model.clone()),
        ("VCFD_STUDY_TIME", study_time.to_string()),
        ("VCFD_STUDY_HASH", study_hash.to_string()),
    ]
}

/// Logs one alert with its structured fields. systemd-journal-logger turns each key-value of
/// the record into a journal field of the same (upper-case) name; the stderr logger prints
/// only the message, which therefore repeats the essentials.
fn log_alert(level: log::Level, fields: &[(&'static str, String)], message: &str) {
    let kvs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let kvs: &[(&str, &str)] = &kvs;
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(LOG_TARGET)
            .module_path_static(Some(module_path!()))
            .file_static(Some(file!()))
            .line(Some(line!()))
            .key_values(&kvs)
            .args(format_args!("{message}"))
            .build(),
    );
}

/// One step of a scanner's ring count for a study (`ring`: the study has ring artifacts).
/// Several series of one study count once. Returns the new state and whether to escalate now.
pub fn advance(mut run: ScannerRun, study_hash: &str, ring: bool, k: u32) -> (ScannerRun, bool) {
    if run.last_study_hash == study_hash {
        // Another series of the same study: rings in any of its series make it a ring study.
        if ring && !run.last_study_ring {
            run.ring_run += 1;
            run.last_study_ring = true;
        }
    } else {
        run.last_study_hash = study_hash.to_string();
        run.last_study_ring = ring;
        run.ring_run = if ring { run.ring_run + 1 } else { 0 };
    }
    let escalate = run.open_escalation.is_none() && run.ring_run >= k.max(1);
    (run, escalate)
}

fn flag_alert(
    scanner: &ScannerId,
    study_time: &str,
    study_hash: &str,
    flag: &QualityFlag,
) -> AlertRec {
    let mut a = AlertRec::new(
        &flag.kind,
        severity_name(flag.severity),
        &scanner.label(),
        &flag.text,
    );
    a.scanner = Some(scanner.clone());
    a.study_hash = Some(study_hash.to_string());
    a.study_time = Some(study_time.to_string());
    a.values = flag.values.clone();
    a
}

/// Records the quality flags of one analysed study of `scanner`: one stored alert and one
/// journald WARNING per flag (once per study and kind), then the ring count of the scanner,
/// which raises one `detector_fault` alert after `ring_escalation_studies` ring studies in a
/// row. `study_hash` is [`crate::spool::uid_hash`] of the StudyInstanceUID. Returns the
/// alerts stored by this call.
pub fn record_quality(
    store: &Store,
    scanner: &ScannerId,
    study_time: &str,
    study_hash: &str,
    quality: &Quality,
    ring_escalation_studies: u32,
) -> Result<Vec<AlertRec>> {
    let mut stored = Vec::new();
    for flag in &quality.flags {
        let Some(a) = store.put_flag_alert(flag_alert(scanner, study_time, study_hash, flag))?
        else {
            continue;
        };
        log_alert(
            log::Level::Warn,
            &journal_fields(&flag.kind, scanner, study_time, study_hash),
            &format!(
                "ALERT {} ({}) on {}, study of {} [{}]: {}",
                flag.kind,
                a.severity,
                scanner.label(),
                study_time,
                study_hash,
                flag.text
            ),
        );
        stored.push(a);
    }
    let ring = quality.flags.iter().any(|f| f.kind == RING_ARTIFACT);
    let k = ring_escalation_studies.max(1);
    let (run, escalation) = store.update_scanner(&scanner.key(), |cur| {
        let (mut next, escalate) = advance(cur, study_hash, ring, k);
        next.scanner = scanner.clone();
        let alert = escalate.then(|| {
            let mut a = AlertRec::new(
                DETECTOR_FAULT,
                "critical",
                &scanner.label(),
                &format!(
                    "detector fault suspected: call service. Ring artifacts on {} studies in \
                     a row from {} (last: study of {study_time}).",
                    next.ring_run,
                    scanner.label()
                ),
            );
            a.scanner = Some(scanner.clone());
            a.study_hash = Some(study_hash.to_string());
            a.study_time = Some(study_time.to_string());
            a.values
                .insert("ring_studies_in_a_row".into(), next.ring_run.into());
            a
        });
        (next, alert)
    })?;
    if let Some(a) = escalation {
        log_alert(
            log::Level::Error,
            &journal_fields(DETECTOR_FAULT, scanner, study_time, study_hash),
            &format!(
                "ALERT {DETECTOR_FAULT} on {}: {}",
                scanner.label(),
                a.message
            ),
        );
        stored.push(a);
    } else if ring {
        log::debug!(
            target: LOG_TARGET,
            "ring artifacts on {} studies in a row from {} (escalation {})",
            run.ring_run,
            scanner.label(),
            if run.open_escalation.is_some() { "open" } else { "not yet" }
        );
    }
    Ok(stored)
}

/// The scanner and the study date/time of a received series, from the header of one file.
pub fn study_header(file: &Path) -> Result<(ScannerId, String)> {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| Error::Dicom {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
            .unwrap_or_default()
    };
    Ok((
        ScannerId {
            station_name: text(tags::STATION_NAME),
            device_serial_number: text(tags::DEVICE_SERIAL_NUMBER),
            manufacturer_model: text(tags::MANUFACTURER_MODEL_NAME),
        },
        study_time(&text(tags::STUDY_DATE), &text(tags::STUDY_TIME)),
    ))
}

/// The `quality` of a written report.json (no flags when the report has no analysis).
pub fn report_quality(report: &Path) -> Result<Quality> {
    let bytes = std::fs::read(report).map_err(|e| Error::io(report, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Write(format!("{}: {e}", report.display())))?;
    match v.get("quality") {
        None | Some(serde_json::Value::Null) => Ok(Quality {
            reliable: true,
            flags: Vec::new(),
        }),
        Some(q) => serde_json::from_value(q.clone())
            .map_err(|e| Error::Write(format!("{}: quality: {e}", report.display()))),
    }
}

/// The worker's hook after a series was analysed: its quality flags become alerts (see
/// [`record_quality`]), with the scanner and study time from the series' own header.
pub fn record_series(
    store: &Store,
    series_files: &[PathBuf],
    report: &Path,
    study_uid: &str,
    ring_escalation_studies: u32,
) -> Result<Vec<AlertRec>> {
    let quality = report_quality(report)?;
    let Some(first) = series_files.first() else {
        return Ok(Vec::new());
    };
    let (scanner, time) = study_header(first)?;
    record_quality(
        store,
        &scanner,
        &time,
        &crate::spool::uid_hash(study_uid),
        &quality,
        ring_escalation_studies,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AckOutcome;
    use std::sync::{Mutex, OnceLock};

    fn flag(kind: &str) -> QualityFlag {
        QualityFlag {
            kind: kind.into(),
            severity: Severity::Critical,
            values: [("radii_mm".to_string(), serde_json::json!([40.0, 80.5]))].into(),
            text: format!("{kind} seen"),
        }
    }

    fn quality(kinds: &[&str]) -> Quality {
        Quality {
            reliable: kinds.is_empty(),
            flags: kinds.iter().map(|k| flag(k)).collect(),
        }
    }

    fn scanner(station: &str, serial: &str) -> ScannerId {
        ScannerId {
            station_name: station.into(),
            device_serial_number: serial.into(),
            manufacturer_model: "Model X".into(),
        }
    }

    fn open_faults(store: &Store) -> Vec<AlertRec> {
        store
            .alerts()
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == DETECTOR_FAULT && !a.acknowledged)
            .collect()
    }

    #[test]
    fn ring_run_escalates_once_per_scanner_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ct1 = scanner("CT1", "S-1");
        let ct2 = scanner("CT2", "S-2");
        let ring = quality(&[RING_ARTIFACT]);
        let rec = |sc: &ScannerId, study: &str, q: &Quality| {
            record_quality(&store, sc, "2024-03-01 09:30:00", study, q, 3).unwrap()
        };

        rec(&ct1, "a1", &ring);
        rec(&ct1, "a2", &ring);
        // Another scanner in between does not break CT1's run, and a second series of the
        // same study does not count twice.
        rec(&ct2, "b1", &ring);
        rec(&ct1, "a2", &ring);
        assert!(open_faults(&store).is_empty(), "escalated before K studies");
        let new = rec(&ct1, "a3", &ring);
        assert_eq!(
            new.iter().map(|a| a.kind.as_str()).collect::<Vec<_>>(),
            [RING_ARTIFACT, DETECTOR_FAULT]
        );
        let faults = open_faults(&store);
        assert_eq!(faults.len(), 1);
        assert_eq!(faults[0].scanner.as_ref(), Some(&ct1));
        assert!(faults[0].message.contains("call service"));

        // More ring studies and a clean one: still one open escalation, not closed by the
        // clean study.
        rec(&ct1, "a4", &ring);
        rec(&ct1, "a5", &quality(&[]));
        rec(&ct1, "a6", &ring);
        rec(&ct1, "a7", &ring);
        rec(&ct1, "a8", &ring);
        assert_eq!(open_faults(&store).len(), 1, "duplicate escalation");

        // Per-flag alerts: one per study and kind (a2 was recorded twice).
        let ring_alerts = store
            .alerts()
            .unwrap()
            .into_iter()
            .filter(|a| a.kind == RING_ARTIFACT)
            .count();
        assert_eq!(ring_alerts, 8);

        // Acknowledging closes it and restarts the count: K more ring studies escalate again.
        let id = faults[0].id;
        assert!(
            matches!(store.ack_alert(id).unwrap(), AckOutcome::Acknowledged(a) if a.acknowledged_ms.is_some())
        );
        assert!(matches!(
            store.ack_alert(id).unwrap(),
            AckOutcome::AlreadyAcknowledged(_)
        ));
        assert_eq!(store.ack_alert(u64::MAX).unwrap(), AckOutcome::NotFound);
        assert!(open_faults(&store).is_empty());
        rec(&ct1, "a9", &ring);
        rec(&ct1, "a10", &ring);
        assert!(
            open_faults(&store).is_empty(),
            "re-escalated right after the ack"
        );
        rec(&ct1, "a11", &ring);
        assert_eq!(open_faults(&store).len(), 1);

        // CT2 had one ring study only; a clean study resets it.
        rec(&ct2, "b2", &quality(&[]));
        rec(&ct2, "b3", &ring);
        rec(&ct2, "b4", &ring);
        assert_eq!(
            open_faults(&store).len(),
            1,
            "CT2 escalated without K in a row"
        );

        // State survives a restart.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let runs = store.scanners().unwrap();
        let ct2_run = runs.iter().find(|r| r.scanner == ct2).unwrap();
        assert_eq!(ct2_run.ring_run, 2);
        assert_eq!(open_faults(&store).len(), 1);
    }

    #[test]
    fn same_station_with_another_serial_is_another_scanner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ring = quality(&[RING_ARTIFACT]);
        for (i, serial) in ["S-1", "S-2", "S-1", "S-2"].iter().enumerate() {
            record_quality(
                &store,
                &scanner("CT1", serial),
                "",
                &format!("s{i}"),
                &ring,
                3,
            )
            .unwrap();
        }
        assert!(open_faults(&store).is_empty());
        record_quality(&store, &scanner("CT1", "S-1"), "", "s9", &ring, 3).unwrap();
        assert_eq!(open_faults(&store).len(), 1);
    }

    #[test]
    fn advance_counts_studies_not_series() {
        let (r, e) = advance(ScannerRun::default(), "a", false, 2);
        assert_eq!((r.ring_run, e), (0, false));
        // First series clean, second series of the same study with rings: a ring study.
        let (r, e) = advance(r, "a", true, 2);
        assert_eq!((r.ring_run, e), (1, false));
        let (r, e) = advance(r, "a", false, 2);
        assert_eq!((r.ring_run, e), (1, false));
        let (r, e) = advance(r, "b", true, 2);
        assert_eq!((r.ring_run, e), (2, true));
        let (r, _) = advance(r, "c", false, 2);
        assert_eq!(r.ring_run, 0);
        // K = 0 is treated as 1.
        let (_, e) = advance(ScannerRun::default(), "a", true, 0);
        assert!(e);
    }

    #[test]
    fn record_series_reads_scanner_from_the_header_and_flags_from_the_report() {
        use crate::dicom_out::{write_ct_series, CtSeriesMeta};
        let dir = tempfile::tempdir().unwrap();
        let g = vcfd_model::Geometry {
            dims: [8, 8, 2],
            origin: [0.0, 0.0, 0.0],
            spacing: [1.0, 1.0, 2.0],
            axes: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let mut meta = CtSeriesMeta::synthetic(3);
        meta.station_name = "CT<ER>".into();
        meta.device_serial_number = "SN 42".into();
        meta.study_date = "20240305".into();
        meta.study_time = "101500".into();
        let vol = vcfd_model::Volume::filled(g, 0).unwrap();
        let files = write_ct_series(&vol, &meta, &dir.path().join("ct")).unwrap();
        let store = Store::open(&dir.path().join("state")).unwrap();
        let report = dir.path().join("report.json");

        // A report without analysis (or a clean one) raises nothing.
        std::fs::write(&report, br#"{"vcfd_version": "x"}"#).unwrap();
        let none = record_series(&store, &files, &report, &meta.study_instance_uid, 3).unwrap();
        assert!(none.is_empty());
        std::fs::write(
            &report,
            serde_json::to_vec(&serde_json::json!({
                "quality": quality(&[RING_ARTIFACT]),
                "vertebrae": [],
            }))
            .unwrap(),
        )
        .unwrap();
        let got = record_series(&store, &files, &report, &meta.study_instance_uid, 3).unwrap();
        assert_eq!(got.len(), 1);
        let a = &got[0];
        assert_eq!(a.kind, RING_ARTIFACT);
        assert_eq!(a.scanner.as_ref().unwrap().station_name, "CT<ER>");
        assert_eq!(a.scanner.as_ref().unwrap().device_serial_number, "SN 42");
        assert_eq!(a.study_time.as_deref(), Some("2024-03-05 10:15:00"));
        assert_eq!(
            a.study_hash.as_deref(),
            Some(&*crate::spool::uid_hash(&meta.study_instance_uid))
        );
        let json = serde_json::to_string(&store.alerts().unwrap()).unwrap();
        for secret in [
            &meta.patient_name,
            &meta.patient_id,
            &meta.study_instance_uid,
        ] {
            assert!(!json.contains(secret.as_str()), "{secret} in an alert");
        }
        std::fs::write(&report, b"{ not json").unwrap();
        assert!(record_series(&store, &files, &report, "1.2", 3).is_err());
    }

    #[test]
    fn study_time_is_readable() {
        assert_eq!(study_time("20240301", "093000.123"), "2024-03-01 09:30:00");
        assert_eq!(study_time("20240301", "0930"), "2024-03-01 09:30");
        assert_eq!(study_time("20240301", ""), "2024-03-01");
        assert_eq!(study_time("", ""), "");
        assert_eq!(study_time("garbage", "x"), "garbage x");
    }

    /// Captures the records of the alert target (the one global logger of this test binary).
    /// Level, message and key-values of one captured record.
    type Captured = (log::Level, String, Vec<(String, String)>);

    struct Capture(Mutex<Vec<Captured>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            struct V<'a>(&'a mut Vec<(String, String)>);
            impl<'kvs> log::kv::VisitSource<'kvs> for V<'_> {
                fn visit_pair(
                    &mut self,
                    k: log::kv::Key<'kvs>,
                    v: log::kv::Value<'kvs>,
                ) -> std::result::Result<(), log::kv::Error> {
                    self.0.push((k.to_string(), v.to_string()));
                    Ok(())
                }
            }
            if r.target() != LOG_TARGET {
                return;
            }
            let mut kvs = Vec::new();
            let _ = r.key_values().visit(&mut V(&mut kvs));
            if let Ok(mut g) = self.0.lock() {
                g.push((r.level(), r.args().to_string(), kvs));
            }
        }
        fn flush(&self) {}
    }

    fn capture() -> &'static Capture {
        static C: OnceLock<&'static Capture> = OnceLock::new();
        C.get_or_init(|| {
            let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
            let _ = log::set_logger(c);
            log::set_max_level(log::LevelFilter::Trace);
            c
        })
    }

    #[test]
    fn each_flag_is_logged_as_warning_with_journal_fields_and_no_patient_identity() {
        let cap = capture();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sc = scanner("CT-LOGTEST", "SER<9>");
        let q = quality(&[RING_ARTIFACT, "scoliosis"]);
        let stored = record_quality(&store, &sc, "2024-03-01 09:30:00", "h4sh", &q, 1).unwrap();
        assert_eq!(stored.len(), 3, "two flags and the escalation (K = 1)");
        let records: Vec<_> = cap
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                r.2.iter()
                    .any(|(k, v)| k == "VCFD_STATION" && v == "CT-LOGTEST")
            })
            .cloned()
            .collect();
        let kinds: Vec<(log::Level, String)> = records
            .iter()
            .map(|r| {
                let kind = r.2.iter().find(|(k, _)| k == "VCFD_ALERT").unwrap();
                (r.0, kind.1.clone())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (log::Level::Warn, RING_ARTIFACT.to_string()),
                (log::Level::Warn, "scoliosis".to_string()),
                (log::Level::Error, DETECTOR_FAULT.to_string()),
            ]
        );
        let want = [
            ("VCFD_ALERT", RING_ARTIFACT),
            ("VCFD_STATION", "CT-LOGTEST"),
            ("VCFD_DEVICE_SERIAL", "SER<9>"),
            ("VCFD_MODEL", "Model X"),
            ("VCFD_STUDY_TIME", "2024-03-01 09:30:00"),
            ("VCFD_STUDY_HASH", "h4sh"),
        ];
        let got: Vec<(&str, &str)> = records[0]
            .2
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, want);
        // Journal field names must survive systemd-journal-logger's escaping unchanged.
        for (k, _) in want {
            assert!(k
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
        }
        // Recording the same study again logs and stores nothing new.
        let again = record_quality(&store, &sc, "2024-03-01 09:30:00", "h4sh", &q, 1).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }
}
