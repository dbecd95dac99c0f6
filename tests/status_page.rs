//! The status page end to end in a real browser: `vcfd serve` with an acknowledgement token,
//! a ring-artifact phantom sent through the SCP with dcmtk's storescu, the analysis flags it,
//! the alert and the "detector fault" escalation appear on the page (headless Chromium driven
//! over the WebDriver protocol by chromedriver), a wrong token is refused, the right one
//! acknowledges, and the page shows it acknowledged.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them). The
//! screenshot goes to docs/status-page.png with VCFD_UPDATE_SCREENSHOT=1, else to a temp dir.

#[path = "daemon_common.rs"]
mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "e2e-token-5f1c9a7d3b2e";
/// W3C WebDriver's key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// One HTTP/1.1 exchange with chromedriver (JSON both ways, connection closed after).
fn wd(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver reachable");
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    )
    .unwrap();
    let (head, body) = read_reply(&mut s)
        .unwrap_or_else(|| panic!("no complete WebDriver reply to {method} {path}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {head}\n{body}"));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path} failed: {head}\n{v}"
    );
    v["value"].clone()
}

/// Head and body of one HTTP response, by its Content-Length: chromedriver keeps the
/// connection open even when asked to close it, so reading to the end would hang.
fn read_reply(s: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, String::from_utf8_lossy(&body).into_owned()))
}

/// A WebDriver session of headless Chromium; deleted (browser closed) on drop.
struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let driver = find_program(&["chromedriver"]).expect(
            "chromedriver not found: apt-get install chromium chromium-driver (scripts/test.sh does)",
        );
        let chromium = find_program(&["chromium", "chromium-browser"])
            .expect("chromium not found: apt-get install chromium chromium-driver");
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc(child);
        wait_port(port);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let v = wd(port, "POST", "/session", Some(&caps));
        let session = v["sessionId"].as_str().expect("session id").to_string();
        Browser {
            port,
            session,
            _driver: proc,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        wd(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url })));
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element matching a CSS selector (panics when there is none).
    fn element(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.call(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map_or(0, |a| a.len())
    }

    fn text(&self, css: &str) -> String {
        let e = self.element(css);
        self.call("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/clear"), Some(&json!({})));
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(&json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.call("POST", &format!("/element/{e}/click"), Some(&json!({})));
    }

    /// Clicks a form's submit button and waits for the response page: the WebDriver click
    /// can return before the form's navigation has committed (seen in CI: the URL read right
    /// after the click was still the page the form was on).
    fn submit(&self, css: &str) {
        let before = self.url();
        self.click(css);
        wait_for("the form's response page", Duration::from_secs(20), || {
            let state = self.call(
                "POST",
                "/execute/sync",
                Some(&json!({"script": "return document.readyState", "args": []})),
            );
            (self.url() != before && state == "complete").then_some(())
        });
    }

    fn screenshot_png(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closes Chromium; chromedriver itself is killed by its Proc.
        let _ = TcpStream::connect(("127.0.0.1", self.port)).map(|mut s| {
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
                 Content-Length: 0\r\n\r\n",
                self.session
            );
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = read_reply(&mut s);
        });
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn alerts(d: &Daemon) -> Value {
    serde_json::from_str(&http_get(d.http, "/api/alerts").expect("alerts API answers")).unwrap()
}

fn open_of_kind(v: &Value, kind: &str) -> Option<u64> {
    v["open"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == kind)
        .and_then(|a| a["id"].as_u64())
}

#[test]
fn ring_artifact_alert_is_shown_and_acknowledged_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("phantom");
    let out = vcfd(&[
        "phantom",
        "--out",
        s(&ph),
        "--seed",
        "11",
        "--rows",
        "192",
        "--slices",
        "60",
        "--rings",
        "80",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&ph)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();

    // K = 1: this one ring study also raises the scanner's "detector fault" escalation.
    let d = Daemon::start_with(
        &dir.path().join("box"),
        "",
        &format!("ack_token = \"{TOKEN}\"\n[alerts]\nring_escalation_studies = 1\n"),
    );
    let out = d.storescu("CT1", &files, &[]);
    assert!(out.status.success(), "storescu: {}", text(&out));

    let (ring_id, fault_id) = wait_for(
        "the ring-artifact alert and its escalation",
        Duration::from_secs(420),
        || {
            let v = alerts(&d);
            let ring = open_of_kind(&v, "ring_artifact");
            let fault = open_of_kind(&v, "detector_fault");
            if ring.is_none() {
                // Fail fast with the verdict when the study was analysed without the flag.
                let st = d.studies();
                let done = st.to_string().contains("\"job_state\":\"done\"");
                assert!(
                    !done || fault.is_some() || ring.is_some(),
                    "study analysed but no ring_artifact alert: {st}\nalerts: {v}"
                );
            }
            Some((ring?, fault?))
        },
    );

    let profile = tempfile::tempdir().unwrap();
    let b = Browser::start(profile.path());
    let base = format!("http://127.0.0.1:{}", d.http);
    b.goto(&format!("{base}/"));
    assert!(
        b.text("body")
            .contains("DETECTOR FAULT SUSPECTED: CALL SERVICE"),
        "{}",
        b.source()
    );
    let ring_row = b.text(&format!("#alert-{ring_id}"));
    assert!(ring_row.contains("ring_artifact"), "{ring_row}");
    assert!(b.text("#studies").contains("ring_artifact"));
    // The scanner is named as its header names it (the phantom's station and serial).
    assert!(b.text("#alerts").contains("VCFDPHANTOM (serial SEED11"));
    let open = alerts(&d)["open"].as_array().unwrap().len();
    assert!(open >= 2, "ring alert and escalation");
    assert_eq!(b.count("form.ack"), open, "one form per open alert");

    // A wrong token is refused and nothing changes.
    b.type_into(
        &format!("#alert-{fault_id} input[name=token]"),
        "not-the-token",
    );
    b.submit(&format!("#alert-{fault_id} button"));
    assert!(b.text("#error").contains("wrong token"), "{}", b.source());
    assert!(open_of_kind(&alerts(&d), "detector_fault").is_some());

    // The right token acknowledges the escalation; the ring alert stays open.
    b.goto(&format!("{base}/"));
    b.type_into(&format!("#alert-{fault_id} input[name=token]"), TOKEN);
    b.submit(&format!("#alert-{fault_id} button"));
    assert!(
        b.url().ends_with(&format!("/?acked={fault_id}")),
        "{}",
        b.url()
    );
    assert_eq!(b.text("#notice"), format!("Alert {fault_id} acknowledged."));
    assert_eq!(b.count(&format!("#alert-{fault_id}")), 0, "still open");
    assert!(b
        .text(&format!("#ack-{fault_id}"))
        .contains("detector_fault"));
    assert!(!b.text("body").contains("DETECTOR FAULT SUSPECTED"));
    assert_eq!(b.count(&format!("#alert-{ring_id}")), 1);
    let v = alerts(&d);
    assert!(v["acknowledged"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == fault_id && a["acknowledged_ms"].is_u64()));

    let png = b.screenshot_png();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let shot = if std::env::var_os("VCFD_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png")
    } else {
        dir.path().join("status-page.png")
    };
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // The API refuses a missing token too; and no patient identity reached the log.
    let refused = raw_post(d.http, &format!("/api/alerts/{ring_id}/ack"), "");
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    let log = d.log();
    assert!(log.contains("ALERT ring_artifact"), "{log}");
    for secret in ["PHANTOM^SEED11", "PHANTOM-11", "19600101"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

fn raw_post(port: u16, path: &str, auth: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: Bearer {auth}\r\n")
    };
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}
