//! Delivery end to end: `vcfd forward` (the daemon's forwarder, driven from the command line
//! because the SR writer does not exist yet) against dcmtk storescp with mutual TLS and
//! certificates made here: PACS down then up delivers everything exactly once; a PACS whose
//! certificate comes from the wrong CA is refused and dead-lettered with a clear reason; a
//! plain-TCP destination against a TLS-only PACS fails and says why.

#[path = "daemon_common.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "test_pki.rs"]
mod test_pki;
use test_pki::{make_ca, make_cert, Ca};

/// Everything one test needs: a CA for the PACS and the box, their certificates, a second
/// (wrong) CA with its own server certificate.
struct Pki {
    ca: Ca,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    rogue_server: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let ca = make_ca(dir, "site-ca");
    let rogue = make_ca(dir, "rogue-ca");
    Pki {
        server: make_cert(dir, &ca, "pacs", true),
        client: make_cert(dir, &ca, "box", false),
        rogue_server: make_cert(dir, &rogue, "rogue-pacs", true),
        ca,
    }
}

/// dcmtk storescp: TLS only, client certificate required and checked against `trust`.
fn storescp(out: &Path, port: u16, server: &(PathBuf, PathBuf), trust: &Path) -> Proc {
    std::fs::create_dir_all(out).unwrap();
    let child = Command::new("storescp")
        .args(["--aetitle", "PACS", "+tls", s(&server.0), s(&server.1)])
        .args(["+cf", s(trust), "--require-peer-cert", "+xa", "+uf"])
        .args(["--output-directory", s(out)])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_port(port);
    p
}

fn config(dir: &Path, port: u16, pki: &Pki, transport: &str) -> PathBuf {
    let cfg = dir.join(format!("vcfd-{transport}.toml"));
    let tls = if transport == "tls" {
        format!(
            "ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            s(&pki.ca.pem),
            s(&pki.client.1),
            s(&pki.client.0)
        )
    } else {
        String::new()
    };
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nstate_dir = \"state-{transport}\"\n\
             [forward]\nbackoff_initial_s = 1\nbackoff_max_s = 2\ntimeout_s = 5\n\
             [[pacs]]\nname = \"pacs\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             called_ae_title = \"PACS\"\ntransport = \"{transport}\"\n{tls}"
        ),
    )
    .unwrap();
    cfg
}

fn received(out: &Path) -> usize {
    std::fs::read_dir(out).map_or(0, |d| d.count())
}

fn forward(cfg: &Path, timeout: &str, files: &[PathBuf]) -> Command {
    let mut c = Command::new(VCFD);
    c.args(["forward", "--config", s(cfg), "--timeout", timeout])
        .args(files)
        .env("VCFD_LOG", "info");
    c
}

#[test]
fn pacs_down_then_up_gets_everything_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let files = phantom(&dir.path().join("phantom"), 11)[..6].to_vec();
    let port = free_port();
    let cfg = config(dir.path(), port, &pki, "tls");

    // The PACS is down: vcfd retries with backoff while we wait, then the PACS comes up.
    let child = forward(&cfg, "60", &files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let out_dir = dir.path().join("received");
    let _pacs = storescp(&out_dir, port, &pki.server, &pki.ca.pem);
    let out = common::wait_bounded(child, Duration::from_secs(90), "vcfd forward");
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("nothing listens there"), "no retry seen: {t}");
    assert!(t.contains("delivered 6"), "{t}");
    wait_for("6 files at the PACS", Duration::from_secs(10), || {
        (received(&out_dir) >= 6).then_some(())
    });

    // Again with the same files: recorded as delivered, nothing is sent twice.
    let out = run_bounded(&mut forward(&cfg, "30", &files), Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("queued 0"), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(received(&out_dir), 6, "an instance arrived twice");

    let store = vcfd::store::Store::open(&dir.path().join("state-tls")).unwrap();
    assert_eq!(store.deliveries().unwrap().len(), 6);
    assert_eq!(store.outbox_len(), 0);
}

#[test]
fn wrong_ca_is_refused_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let files = phantom(&dir.path().join("phantom"), 12)[..2].to_vec();
    let port = free_port();
    let out_dir = dir.path().join("received");
    let _pacs = storescp(&out_dir, port, &pki.rogue_server, &pki.ca.pem);
    let cfg = config(dir.path(), port, &pki, "tls");
    let out = run_bounded(&mut forward(&cfg, "30", &files), Duration::from_secs(60));
    let t = text(&out);
    eprintln!("{t}");
    assert!(!out.status.success(), "delivered to an untrusted PACS: {t}");
    assert!(t.contains("dead-lettered 2"), "{t}");
    assert!(t.contains("UnknownIssuer"), "{t}");
    assert!(t.contains("signed by the CA"), "unclear message: {t}");
    assert_eq!(received(&out_dir), 0);
    let store = vcfd::store::Store::open(&dir.path().join("state-tls")).unwrap();
    assert_eq!(store.dead_letters().unwrap().len(), 2);
    assert!(store
        .alerts()
        .unwrap()
        .iter()
        .any(|a| a.kind == "dead_letter"));
}

#[test]
fn plain_tcp_against_a_tls_only_pacs_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let files = phantom(&dir.path().join("phantom"), 13)[..1].to_vec();
    let port = free_port();
    let out_dir = dir.path().join("received");
    let _pacs = storescp(&out_dir, port, &pki.server, &pki.ca.pem);
    let cfg = config(dir.path(), port, &pki, "plain");
    let out = run_bounded(&mut forward(&cfg, "30", &files), Duration::from_secs(60));
    let t = text(&out);
    eprintln!("{t}");
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("transport = \"tls\""), "no hint: {t}");
    assert!(
        t.contains("dead-lettered 1"),
        "a configuration error was retried: {t}"
    );
    assert_eq!(received(&out_dir), 0);
}
