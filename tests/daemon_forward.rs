//! Delivery end to end: `vcfd forward` (the daemon's forwarder, driven from the command line
//! because the SR writer does not exist yet) against dcmtk storescp with mutual TLS and
//! certificates made here: PACS down then up delivers everything exactly once; a PACS whose
//! certificate comes from the wrong CA is refused and dead-lettered with a clear reason; a
//! plain-TCP destination against a TLS-only PACS fails and says why; Orthanc with DICOM TLS
//! and client certificates required receives the SR and images (and refuses a box whose
//! certificate another CA signed); `kill -9` during delivery and during analysis, then a
//! restart, delivers everything exactly once.

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
    /// A box certificate from the wrong CA (a PACS requiring client certificates refuses it).
    rogue_client: (PathBuf, PathBuf),
}

fn pki(dir: &Path) -> Pki {
    let ca = make_ca(dir, "site-ca");
    let rogue = make_ca(dir, "rogue-ca");
    Pki {
        server: make_cert(dir, &ca, "pacs", true),
        client: make_cert(dir, &ca, "box", false),
        rogue_server: make_cert(dir, &rogue, "rogue-pacs", true),
        rogue_client: make_cert(dir, &rogue, "rogue-box", false),
        ca,
    }
}

/// dcmtk storescp: TLS only, client certificate required and checked against `trust`.
fn storescp(out: &Path, port: u16, server: &(PathBuf, PathBuf), trust: &Path) -> Proc {
    storescp_with(out, port, server, trust, &[])
}

/// As [`storescp`] with extra options (e.g. `--sleep-during 1` for a slow PACS).
fn storescp_with(
    out: &Path,
    port: u16,
    server: &(PathBuf, PathBuf),
    trust: &Path,
    extra: &[&str],
) -> Proc {
    std::fs::create_dir_all(out).unwrap();
    let child = Command::new("storescp")
        .args(["--aetitle", "PACS", "+tls", s(&server.0), s(&server.1)])
        .args(["+cf", s(trust), "--require-peer-cert", "+xa", "+uf"])
        .args(extra)
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

/// `[forward]` with short test backoff and one TLS `[[pacs]]` named `name`.
fn pacs_toml(name: &str, port: u16, ae: &str, ca: &Path, client: &(PathBuf, PathBuf)) -> String {
    format!(
        "[forward]\nbackoff_initial_s = 1\nbackoff_max_s = 2\ntimeout_s = 5\n\
         [[pacs]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         called_ae_title = \"{ae}\"\ntransport = \"tls\"\n\
         ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        s(ca),
        s(&client.1),
        s(&client.0)
    )
}

/// A `vcfd forward` config with its own state folder.
fn forward_config(dir: &Path, state: &str, pacs: &str) -> PathBuf {
    let cfg = dir.join(format!("vcfd-{state}.toml"));
    std::fs::write(&cfg, format!("[storage]\nstate_dir = \"{state}\"\n{pacs}")).unwrap();
    cfg
}

/// Every `TextValue` in an SR's content tree (Orthanc's simplified JSON).
fn text_values(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("TextValue", serde_json::Value::String(t)) => out.push(t.trim().to_string()),
                    _ => text_values(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| text_values(x, out)),
        _ => {}
    }
}

/// The SR as Orthanc stored it matches the file vcfd sent: SR class, same study, same
/// document title, and the same text items (the conclusion among them).
fn check_sr_at_pacs(at: &serde_json::Value, sr: &Path) {
    let local = dicom_object::open_file(sr).unwrap();
    let txt = |tag| {
        local
            .element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(['\0', ' '])
            .to_string()
    };
    use dicom_dictionary_std::tags;
    assert!(
        at["SOPClassUID"]
            .as_str()
            .unwrap()
            .starts_with("1.2.840.10008.5.1.4.1.1.88."),
        "not an SR: {at}"
    );
    assert_eq!(at["Modality"], "SR");
    assert_eq!(
        at["StudyInstanceUID"],
        txt(tags::STUDY_INSTANCE_UID).as_str()
    );
    let title = local
        .element(tags::CONCEPT_NAME_CODE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::CODE_VALUE)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        at["ConceptNameCodeSequence"][0]["CodeValue"],
        title.as_str(),
        "document title differs: {at}"
    );
    let mut texts = Vec::new();
    text_values(&at["ContentSequence"], &mut texts);
    assert!(!texts.is_empty(), "SR at the PACS has no text: {at}");
}

#[test]
fn orthanc_over_mutual_tls_receives_results_and_refuses_a_foreign_box() {
    let test = "orthanc_over_mutual_tls_receives_results_and_refuses_a_foreign_box";
    let Some(bin) = tool_or_skip("Orthanc", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let orthanc = Orthanc::start(
        &bin,
        &dir.path().join("orthanc"),
        &pki.server.1,
        &pki.server.0,
        &pki.ca.pem,
    );

    // The result writer's SR and image series for a phantom (findings from its truth), plus
    // three CT slices, delivered by vcfd's forwarder over mutual TLS.
    let ph = dir.path().join("phantom");
    let ct = phantom(&ph, 21);
    let loaded = vcfd::dicom_in::load_series(&ct).unwrap();
    let truth: vcfd_model::truth::Truth =
        serde_json::from_slice(&std::fs::read(ph.join("truth.json")).unwrap()).unwrap();
    let findings = vcfd::truth_findings::findings_from_truth(&truth);
    let res = vcfd::results::write_results(
        &loaded,
        &findings,
        None,
        "VCFD-TEST-0001",
        &dir.path().join("results"),
    )
    .unwrap();
    let mut files = vec![res.sr.clone()];
    files.extend(res.images.iter().cloned());
    files.extend(ct[..3].iter().cloned());
    let pacs = pacs_toml(
        "orthanc",
        orthanc.dicom,
        Orthanc::AET,
        &pki.ca.pem,
        &pki.client,
    );
    let cfg = forward_config(dir.path(), "state-fwd", &pacs);
    let out = run_bounded(&mut forward(&cfg, "60", &files), Duration::from_secs(90));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("delivered {}", files.len())), "{t}");
    let at = orthanc.instances();
    assert_eq!(at.len(), files.len(), "{:?}", at.keys());
    for f in &files {
        let (class, sop) = meta_uids(f);
        let tags = at
            .get(&sop)
            .unwrap_or_else(|| panic!("{} not at Orthanc", f.display()));
        assert_eq!(tags["SOPClassUID"], class.as_str(), "{}", f.display());
    }
    let sr_at = &at[&meta_uids(&res.sr).1];
    check_sr_at_pacs(sr_at, &res.sr);
    let mut texts = Vec::new();
    text_values(&sr_at["ContentSequence"], &mut texts);
    let conclusion = vcfd::sr::conclusion(&findings);
    assert!(
        texts.iter().any(|t| t == conclusion.trim()),
        "conclusion {conclusion:?} not in the SR at the PACS: {texts:?}"
    );

    // A box whose certificate another CA signed: Orthanc ends the handshake, vcfd says why
    // and dead-letters (retrying cannot help), nothing is stored.
    let rogue = pacs_toml(
        "orthanc",
        orthanc.dicom,
        Orthanc::AET,
        &pki.ca.pem,
        &pki.rogue_client,
    );
    let cfg = forward_config(dir.path(), "state-rogue", &rogue);
    let out = run_bounded(&mut forward(&cfg, "20", &ct[3..4]), Duration::from_secs(60));
    let t = text(&out);
    assert!(!out.status.success(), "a foreign box delivered: {t}");
    assert!(t.contains("dead-lettered 1"), "{t}");
    assert!(t.contains("does not trust this box"), "unclear: {t}");
    assert_eq!(orthanc.instances().len(), files.len());

    // The daemon end to end: ingest a phantom, analyse, forward what it produced. Every
    // result file it wrote must be recorded as delivered once and be at Orthanc; the SR is
    // checked when the analysis writes one.
    let mut d = Daemon::start_with(&dir.path().join("daemon"), "", &pacs);
    let study = phantom(&dir.path().join("phantom2"), 22);
    let out = d.storescu("CT1", &study, &[]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_done(1, Duration::from_secs(120));
    wait_for("the outbox to drain", Duration::from_secs(60), || {
        let v: serde_json::Value = serde_json::from_str(&http_get(d.http, "/api/outbox")?).ok()?;
        (v["pending"].as_array()?.is_empty()).then_some(())
    });
    let status = d.terminate();
    assert!(status.success(), "{}", d.log());
    let results = result_dicom_files(&d.state());
    let store = vcfd::store::Store::open(&d.state()).unwrap();
    let delivered: Vec<String> = store
        .deliveries()
        .unwrap()
        .into_iter()
        .map(|r| r.sop_instance_uid)
        .collect();
    assert!(store.dead_letters().unwrap().is_empty(), "{}", d.log());
    let at = orthanc.instances();
    let mut expected: Vec<String> = results.iter().map(|f| meta_uids(f).1).collect();
    expected.sort();
    let mut got = delivered;
    got.sort();
    assert_eq!(got, expected, "delivered != written for forwarding");
    for f in &results {
        let (class, sop) = meta_uids(f);
        let tags = at
            .get(&sop)
            .unwrap_or_else(|| panic!("{} not at Orthanc", f.display()));
        assert_eq!(tags["SOPClassUID"], class.as_str());
        if f.file_name().is_some_and(|n| n == "sr.dcm") {
            check_sr_at_pacs(tags, f);
        }
    }
    eprintln!(
        "the daemon forwarded {} result file(s) to Orthanc (SR: {})",
        results.len(),
        results.iter().any(|f| f.ends_with("sr.dcm"))
    );
}

/// Files storescp received (+uf: one file per reception, so a duplicate shows), by SOP UID.
fn received_uids(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .map(|p| {
                    let o = dicom_object::open_file(&p).unwrap();
                    o.element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .trim_end_matches('\0')
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn kill_9_during_delivery_then_restart_delivers_each_instance_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let files = phantom(&dir.path().join("phantom"), 14)[..4].to_vec();
    let port = free_port();
    let out_dir = dir.path().join("received");
    // A slow PACS (storescp sleeps in each progress callback, about 3 s per instance) so the
    // kill lands while an instance is on the wire, far from the moment it is written.
    let _pacs = storescp_with(
        &out_dir,
        port,
        &pki.server,
        &pki.ca.pem,
        &["--sleep-during", "1"],
    );
    let pacs = pacs_toml("pacs", port, "PACS", &pki.ca.pem, &pki.client);
    let mut d = Daemon::configure(&dir.path().join("daemon"), "", &pacs);

    // The daemon's forwarder, on the daemon's state: killed once one instance arrived and
    // the second is half-way.
    let child = forward(&d.config, "120", &files)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Proc(child);
    wait_for(
        "the first instance at the PACS",
        Duration::from_secs(30),
        || (received(&out_dir) >= 1).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    drop(child); // SIGKILL
    let at_kill = received(&out_dir);
    assert!(
        (1..files.len()).contains(&at_kill),
        "the kill did not land during delivery ({at_kill} received)"
    );
    {
        let store = vcfd::store::Store::open(&d.state()).unwrap();
        assert_eq!(store.deliveries().unwrap().len(), at_kill);
        assert_eq!(store.outbox_len(), files.len() - at_kill);
    }

    // The daemon resumes the outbox after the restart.
    d.restart();
    wait_for("the outbox to drain", Duration::from_secs(60), || {
        let v: serde_json::Value = serde_json::from_str(&http_get(d.http, "/api/outbox")?).ok()?;
        (v["pending"].as_array()?.is_empty()).then_some(())
    });
    assert!(d.terminate().success(), "{}", d.log());
    let mut sent: Vec<String> = files.iter().map(|f| uids(f).1).collect();
    sent.sort();
    assert_eq!(received_uids(&out_dir), sent, "not exactly once");
    let store = vcfd::store::Store::open(&d.state()).unwrap();
    assert_eq!(store.deliveries().unwrap().len(), files.len());
    assert!(store.dead_letters().unwrap().is_empty());
}

#[test]
fn kill_9_during_analysis_then_restart_resumes_and_delivers_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let port = free_port();
    let out_dir = dir.path().join("received");
    let _pacs = storescp(&out_dir, port, &pki.server, &pki.ca.pem);
    let pacs = pacs_toml("pacs", port, "PACS", &pki.ca.pem, &pki.client);
    let mut d = Daemon::start_with(&dir.path().join("daemon"), "", &pacs);

    // The real JPEG 2000 series: decoding it takes long enough to catch the job running.
    let sender = dir.path().join("sender");
    std::fs::create_dir_all(&sender).unwrap();
    let cfg = sender.join("vcfd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[scp]\nae_title = \"J2KSENDER\"\n[storage]\nstate_dir = \"state\"\n\
             [[pacs]]\nname = \"box\"\nhost = \"127.0.0.1\"\nport = {}\n\
             called_ae_title = \"VCFD\"\ntransport = \"plain\"\n",
            d.dicom
        ),
    )
    .unwrap();
    let j2k = j2k_files();
    let mut args = vec!["forward", "--config", s(&cfg), "--timeout", "60"];
    args.extend(j2k.iter().map(|p| s(p)));
    let out = vcfd(&args);
    assert!(out.status.success(), "{}", text(&out));

    let job_state = |d: &Daemon| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&http_get(d.http, "/api/studies")?).ok()?;
        v[0]["series"][0]["job_state"].as_str().map(str::to_string)
    };
    wait_for("the analysis to start", Duration::from_secs(60), || {
        let st = job_state(&d)?;
        assert_ne!(st, "done", "analysis finished before the kill could land");
        (st == "running").then_some(())
    });
    d.kill9();

    d.restart();
    let v = d.wait_done(1, Duration::from_secs(120));
    let series = &v[0]["series"][0];
    assert_eq!(series["attempts"], 2, "the interrupted attempt: {v}");
    assert_eq!(series["instances"], 20, "{v}");
    wait_for("the outbox to drain", Duration::from_secs(60), || {
        let v: serde_json::Value = serde_json::from_str(&http_get(d.http, "/api/outbox")?).ok()?;
        (v["pending"].as_array()?.is_empty()).then_some(())
    });
    assert!(d.terminate().success(), "{}", d.log());
    assert!(d
        .log()
        .contains("resuming 1 job(s) interrupted by a restart"));
    let results = result_dicom_files(&d.state());
    let report = d
        .state()
        .join("results")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("report.json");
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(rep["series"]["dims"], serde_json::json!([512, 512, 20]));
    // Whatever the analysis wrote for forwarding arrived exactly once.
    let mut expected: Vec<String> = results.iter().map(|f| meta_uids(f).1).collect();
    expected.sort();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(received_uids(&out_dir), expected, "not exactly once");
}
