//! The status page (`/`) for the technician and the admin: open alerts per scanner with an
//! acknowledge form, recent studies with verdicts and quality flags, the outbox, disk use and
//! the model version.
//!
//! Plain HTML with inline CSS and no script: the box is offline, and a page without script or
//! external assets cannot be turned against the browser that shows it. Everything that comes
//! from DICOM headers or the database (UIDs, station names, messages) is untrusted and goes
//! through [`escape`].

use crate::http::HttpContext;
use crate::store::{AlertRec, JobState, ScannerRun, SeriesState, Store};
use crate::Result;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Rows of the studies table.
const RECENT_STUDIES: usize = 30;
/// Rows of the acknowledged-alerts table.
const RECENT_ACKNOWLEDGED: usize = 20;
/// The page reloads itself this often (no script needed).
const REFRESH_S: u32 = 30;

/// Text as HTML text or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters from a hostile header have no business on the page.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch as "YYYY-MM-DD HH:MM:SS" UTC.
pub fn utc(ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "?".into(),
    }
}

/// One series (the unit of analysis) in the studies table.
#[derive(Debug, Clone)]
pub struct StudyRow {
    pub updated_ms: u64,
    pub study_uid: String,
    pub study_hash: String,
    pub instances: u64,
    pub state: String,
    pub verdict: String,
    /// (kind, severity) of the quality alerts of this study.
    pub flags: Vec<(String, String)>,
}

/// Outbox entries of one destination.
#[derive(Debug, Clone, Default)]
pub struct OutboxRow {
    pub destination: String,
    pub pending: usize,
    pub oldest_ms: Option<u64>,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub dead_letters: usize,
}

/// Everything the page shows, gathered first so rendering is a pure function.
#[derive(Debug, Clone, Default)]
pub struct PageData {
    pub version: String,
    pub model_version: String,
    pub now_ms: u64,
    pub ack_enabled: bool,
    /// Newest first.
    pub open: Vec<AlertRec>,
    /// Newest first, at most [`RECENT_ACKNOWLEDGED`].
    pub acknowledged: Vec<AlertRec>,
    pub scanners: Vec<ScannerRun>,
    pub studies: Vec<StudyRow>,
    pub outbox: Vec<OutboxRow>,
    pub disk_percent: Option<f64>,
    pub disk_watermark_percent: u8,
    pub db_bytes: Option<u64>,
    /// The alert just acknowledged through the form.
    pub acked: Option<u64>,
}

/// Reads what the page shows from the store and the file system.
pub fn gather(ctx: &HttpContext, acked: Option<u64>) -> Result<PageData> {
    let store = &ctx.store;
    let mut alerts = store.alerts()?;
    alerts.reverse();
    let mut flags: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for a in &alerts {
        if let Some(h) = &a.study_hash {
            let e = flags.entry(h.clone()).or_default();
            let item = (a.kind.clone(), a.severity.clone());
            if !e.contains(&item) {
                e.push(item);
            }
        }
    }
    let (acknowledged, open): (Vec<_>, Vec<_>) = alerts.into_iter().partition(|a| a.acknowledged);
    Ok(PageData {
        version: crate::VERSION.to_string(),
        model_version: ctx.model_version.clone(),
        now_ms: crate::store::now_ms(),
        ack_enabled: !ctx.ack_token.is_empty(),
        open,
        acknowledged: acknowledged.into_iter().take(RECENT_ACKNOWLEDGED).collect(),
        scanners: store.scanners()?,
        studies: studies(store, &flags)?,
        outbox: outbox(store)?,
        disk_percent: crate::spool::disk_usage_percent(&ctx.state_dir).ok(),
        disk_watermark_percent: ctx.disk_watermark_percent,
        db_bytes: store.size_on_disk().ok(),
        acked,
    })
}

fn studies(
    store: &Store,
    flags: &BTreeMap<String, Vec<(String, String)>>,
) -> Result<Vec<StudyRow>> {
    let mut rows = Vec::new();
    for (uid, s) in store.all_series()? {
        let job = store.job(&uid)?;
        let state = match (&job, s.state) {
            (Some(j), _) => match j.state {
                JobState::Pending if j.attempts > 0 => "retrying",
                JobState::Pending => "queued",
                JobState::Running => "analysing",
                JobState::Done => "done",
                JobState::Quarantined => "quarantined",
            },
            (None, SeriesState::Receiving) => "receiving",
            (None, SeriesState::Complete) => "complete",
        };
        let verdict = match &job {
            Some(j) => j
                .verdict
                .clone()
                .or_else(|| j.last_error.clone())
                .unwrap_or_default(),
            None => String::new(),
        };
        let hash = crate::spool::uid_hash(&s.study_uid);
        rows.push(StudyRow {
            updated_ms: job
                .as_ref()
                .map_or(s.last_ms, |j| j.updated_ms.max(s.last_ms)),
            flags: flags.get(&hash).cloned().unwrap_or_default(),
            study_hash: hash,
            study_uid: s.study_uid,
            instances: s.instances,
            state: state.into(),
            verdict,
        });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
    rows.truncate(RECENT_STUDIES);
    Ok(rows)
}

fn outbox(store: &Store) -> Result<Vec<OutboxRow>> {
    let mut by: BTreeMap<String, OutboxRow> = BTreeMap::new();
    for e in store.outbox()? {
        let r = by.entry(e.destination.clone()).or_default();
        r.pending += 1;
        r.oldest_ms = Some(r.oldest_ms.map_or(e.enqueued_ms, |o| o.min(e.enqueued_ms)));
        r.max_attempts = r.max_attempts.max(e.attempts);
        if e.last_error.is_some() {
            r.last_error = e.last_error.clone();
        }
    }
    for d in store.dead_letters()? {
        by.entry(d.entry.destination.clone())
            .or_default()
            .dead_letters += 1;
    }
    Ok(by
        .into_iter()
        .map(|(k, mut v)| {
            v.destination = k;
            v
        })
        .collect())
}

/// The page for the server: gather, then render.
pub fn render_from(ctx: &HttpContext, acked: Option<u64>) -> Result<String> {
    Ok(render(&gather(ctx, acked)?))
}

const CSS: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1f24}\
header{background:#1b2a3a;color:#fff;padding:10px 20px;display:flex;flex-wrap:wrap;gap:6px 24px;align-items:baseline}\
header h1{font-size:20px;margin:0}header span{opacity:.85}\
main{padding:12px 20px;max-width:1200px}\
section{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:10px 14px;margin:0 0 14px}\
h2{font-size:17px;margin:2px 0 8px}h3{font-size:15px;margin:10px 0 4px}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e6e8eb;vertical-align:top}\
th{font-size:13px;color:#555;font-weight:600}\
code{font-size:12px;word-break:break-all}\
.fault{background:#b00020;color:#fff;border-radius:6px;padding:10px 14px;margin:0 0 14px;font-weight:600}\
.notice{background:#e3f4e8;border:1px solid #7cc495;border-radius:6px;padding:8px 14px;margin:0 0 14px}\
.ok{color:#17692f}.muted{color:#666}\
.sev{display:inline-block;border-radius:3px;padding:0 6px;font-size:12px;font-weight:600;margin:0 4px 2px 0}\
.sev-critical,.sev-error{background:#fbe3e6;color:#9b0019}\
.sev-warning{background:#fff1d6;color:#7a4b00}\
.sev-info{background:#e5eefb;color:#1d4f91}\
tr.open td{background:#fffafa}\
form.ack{display:flex;gap:6px;margin:0}\
form.ack input{width:11em;padding:3px 6px}\
form.ack button{padding:3px 10px;font-weight:600;cursor:pointer}\
";

fn sev(severity: &str, text: &str) -> String {
    let class = match severity {
        "critical" | "error" | "warning" | "info" => severity,
        _ => "info",
    };
    format!("<span class=\"sev sev-{class}\">{}</span>", escape(text))
}

fn values_text(a: &AlertRec) -> String {
    a.values
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scanner_label(a: &AlertRec) -> String {
    match &a.scanner {
        Some(s) => s.label(),
        None => "This appliance".into(),
    }
}

/// The whole page.
pub fn render(d: &PageData) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>vcfd status{}</title><style>{CSS}</style></head><body>\
         <header><h1>vcfd status</h1><span>vcfd {}</span><span>model {}</span>\
         <span>updated {} UTC</span></header><main>",
        if d.open.is_empty() {
            String::new()
        } else {
            format!(" ({} open alert(s))", d.open.len())
        },
        escape(&d.version),
        escape(&d.model_version),
        utc(d.now_ms)
    );
    if let Some(id) = d.acked {
        let _ = write!(
            h,
            "<p class=\"notice\" id=\"notice\">Alert {id} acknowledged.</p>"
        );
    }
    for a in d
        .open
        .iter()
        .filter(|a| a.kind == crate::alerts::DETECTOR_FAULT)
    {
        let _ = write!(
            h,
            "<p class=\"fault\">DETECTOR FAULT SUSPECTED: CALL SERVICE &mdash; {}</p>",
            escape(&scanner_label(a))
        );
    }
    open_alerts(&mut h, d);
    studies_section(&mut h, d);
    outbox_section(&mut h, d);
    disk_section(&mut h, d);
    acknowledged_section(&mut h, d);
    h.push_str("</main></body></html>\n");
    h
}

fn open_alerts(h: &mut String, d: &PageData) {
    h.push_str("<section id=\"alerts\"><h2>Open alerts</h2>");
    if d.open.is_empty() {
        h.push_str("<p class=\"ok\">No open alerts.</p></section>");
        return;
    }
    if !d.ack_enabled {
        let _ = write!(
            h,
            "<p class=\"muted\">{}</p>",
            escape(crate::http::ACK_DISABLED)
        );
    }
    let mut by_scanner: BTreeMap<String, Vec<&AlertRec>> = BTreeMap::new();
    for a in &d.open {
        by_scanner.entry(scanner_label(a)).or_default().push(a);
    }
    for (scanner, alerts) in by_scanner {
        let run = alerts
            .iter()
            .find_map(|a| a.scanner.as_ref())
            .and_then(|s| d.scanners.iter().find(|r| &r.scanner == s));
        let _ = write!(h, "<h3>{}</h3>", escape(&scanner));
        if let Some(r) = run.filter(|r| r.ring_run > 0) {
            let _ = write!(
                h,
                "<p class=\"muted\">Ring artifacts on the last {} studies in a row.</p>",
                r.ring_run
            );
        }
        h.push_str(
            "<table><tr><th>Raised (UTC)</th><th>Alert</th><th>Study</th><th>What</th>\
             <th></th></tr>",
        );
        for a in alerts {
            let study = match (&a.study_time, &a.study_hash) {
                (Some(t), Some(hs)) => format!(
                    "{}<br><code title=\"hash of the StudyInstanceUID\">{}</code>",
                    escape(t),
                    escape(hs)
                ),
                _ => String::new(),
            };
            let values = values_text(a);
            let _ = write!(
                h,
                "<tr class=\"open\" id=\"alert-{id}\"><td>{}</td><td>{}<br>{}</td><td>{}</td>\
                 <td>{}{}</td><td>",
                utc(a.ms),
                sev(&a.severity, &a.severity),
                escape(&a.kind),
                study,
                escape(&a.message),
                if values.is_empty() {
                    String::new()
                } else {
                    format!("<br><span class=\"muted\">{}</span>", escape(&values))
                },
                id = a.id
            );
            if d.ack_enabled {
                let _ = write!(
                    h,
                    "<form class=\"ack\" method=\"post\" action=\"/alerts/{id}/ack\">\
                     <input type=\"password\" name=\"token\" placeholder=\"token\" required \
                     autocomplete=\"current-password\" aria-label=\"acknowledgement token\">\
                     <button type=\"submit\">Acknowledge</button></form>",
                    id = a.id
                );
            } else {
                h.push_str("<button type=\"button\" disabled>Acknowledge</button>");
            }
            h.push_str("</td></tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("</section>");
}

fn studies_section(h: &mut String, d: &PageData) {
    h.push_str("<section id=\"studies\"><h2>Recent studies</h2>");
    if d.studies.is_empty() {
        h.push_str("<p class=\"muted\">No studies received yet.</p></section>");
        return;
    }
    h.push_str(
        "<table><tr><th>Updated (UTC)</th><th>Study</th><th>Images</th><th>State</th>\
         <th>Verdict</th><th>Quality flags</th></tr>",
    );
    for s in &d.studies {
        let flags = if s.flags.is_empty() {
            if s.state == "done" {
                "<span class=\"ok\">none</span>".to_string()
            } else {
                String::new()
            }
        } else {
            s.flags
                .iter()
                .map(|(k, sv)| sev(sv, k))
                .collect::<Vec<_>>()
                .join("")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code><br><code class=\"muted\">{}</code></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            utc(s.updated_ms),
            escape(&s.study_hash),
            escape(&s.study_uid),
            s.instances,
            escape(&s.state),
            escape(&s.verdict),
            flags
        );
    }
    h.push_str("</table></section>");
}

fn outbox_section(h: &mut String, d: &PageData) {
    h.push_str("<section id=\"outbox\"><h2>Outbox</h2>");
    if d.outbox.is_empty() {
        h.push_str("<p class=\"ok\">Nothing waiting for a PACS.</p></section>");
        return;
    }
    h.push_str(
        "<table><tr><th>Destination</th><th>Waiting</th><th>Oldest (UTC)</th>\
         <th>Attempts</th><th>Last error</th><th>Failed permanently</th></tr>",
    );
    for o in &d.outbox {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&o.destination),
            o.pending,
            o.oldest_ms.map(utc).unwrap_or_default(),
            o.max_attempts,
            escape(o.last_error.as_deref().unwrap_or("")),
            o.dead_letters
        );
    }
    h.push_str("</table></section>");
}

fn disk_section(h: &mut String, d: &PageData) {
    h.push_str("<section id=\"disk\"><h2>Disk</h2><p>");
    match d.disk_percent {
        Some(p) => {
            let class = if p >= f64::from(d.disk_watermark_percent) {
                "sev sev-critical"
            } else {
                "ok"
            };
            let _ = write!(
                h,
                "State folder's file system: <span class=\"{class}\">{p:.1} % used</span> \
                 (new studies are refused above {} %).",
                d.disk_watermark_percent
            );
        }
        None => h.push_str("Disk use unknown."),
    }
    if let Some(b) = d.db_bytes {
        let _ = write!(
            h,
            " State database: {:.1} MB.",
            b as f64 / (1024.0 * 1024.0)
        );
    }
    h.push_str("</p></section>");
}

fn acknowledged_section(h: &mut String, d: &PageData) {
    h.push_str("<section id=\"acknowledged\"><h2>Acknowledged alerts</h2>");
    if d.acknowledged.is_empty() {
        h.push_str("<p class=\"muted\">None.</p></section>");
        return;
    }
    h.push_str(
        "<table><tr><th>Raised (UTC)</th><th>Acknowledged (UTC)</th><th>Scanner</th>\
         <th>Alert</th><th>What</th></tr>",
    );
    for a in &d.acknowledged {
        let _ = write!(
            h,
            "<tr class=\"acknowledged\" id=\"ack-{}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            a.id,
            utc(a.ms),
            a.acknowledged_ms.map(utc).unwrap_or_default(),
            escape(&scanner_label(a)),
            escape(&a.kind),
            escape(&a.message)
        );
    }
    h.push_str("</table></section>");
}

/// A short page for a refused or failed form post, with the way back.
pub fn error_page(status: u16, message: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>vcfd: {status}</title><style>{CSS}</style></head><body><main>\
         <section><h2>Not done ({status})</h2><p id=\"error\">{}</p>\
         <p><a href=\"/\">Back to the status page</a></p></section></main></body></html>\n",
        escape(message)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::ScannerId;

    fn hostile_alert() -> AlertRec {
        let mut a = AlertRec::new(
            "ring_artifact",
            "critical",
            "<script>alert(1)</script>",
            "rings \"at\" <b>40 mm</b> & more",
        );
        a.id = 7;
        a.scanner = Some(ScannerId {
            station_name: "<img src=x onerror=alert(1)>".into(),
            device_serial_number: "S'1".into(),
            manufacturer_model: "M&M".into(),
        });
        a.study_hash = Some("abc".into());
        a.study_time = Some("2024-01-01 <09:00>".into());
        a.values
            .insert("radii_mm".into(), serde_json::json!(["<x>"]));
        a
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let d = PageData {
            version: "1".into(),
            model_version: "<m>".into(),
            ack_enabled: true,
            open: vec![hostile_alert()],
            studies: vec![StudyRow {
                updated_ms: 0,
                study_uid: "1.2.3\"><script>x()</script>".into(),
                study_hash: "abc".into(),
                instances: 3,
                state: "done".into(),
                verdict: "<i>ok</i>".into(),
                flags: vec![("ring_artifact".into(), "critical".into())],
            }],
            outbox: vec![OutboxRow {
                destination: "<pacs>".into(),
                pending: 1,
                last_error: Some("</td><script>".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let html = render(&d);
        for bad in [
            "<script", "<img", "<b>", "<i>", "<x>", "<m>", "<pacs>", "1.2.3\"",
        ] {
            assert!(!html.contains(bad), "{bad} unescaped in page");
        }
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains("S&#39;1"));
        assert!(html.contains("action=\"/alerts/7/ack\""));
        assert!(!html.contains("DETECTOR FAULT"), "no escalation was open");
        assert!(!html.contains("src=\"http"), "external asset");
        assert!(!error_page(403, "<script>").contains("<script>"));
    }

    #[test]
    fn page_shows_escalation_ack_state_and_disabled_ack() {
        let mut fault = hostile_alert();
        fault.kind = crate::alerts::DETECTOR_FAULT.into();
        fault.message = "detector fault suspected: call service".into();
        let mut acked = hostile_alert();
        acked.id = 8;
        acked.acknowledged = true;
        acked.acknowledged_ms = Some(1_700_000_000_000);
        let d = PageData {
            open: vec![fault],
            acknowledged: vec![acked],
            ack_enabled: false,
            acked: Some(8),
            ..Default::default()
        };
        let html = render(&d);
        assert!(html.contains("DETECTOR FAULT SUSPECTED: CALL SERVICE"));
        assert!(html.contains("id=\"ack-8\""));
        assert!(html.contains("Alert 8 acknowledged."));
        assert!(html.contains(crate::http::ACK_DISABLED));
        assert!(html.contains("disabled>Acknowledge"));
        assert!(!html.contains("<form"), "a form although ack is disabled");
        assert!(html.contains("2023-11-14 22:13:20"), "{html}");
    }

    #[test]
    fn utc_formats_epoch_ms() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_999), "2023-11-14 22:13:20");
    }
}
