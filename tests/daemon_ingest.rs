//! The daemon's receiving side end to end, through the real binary and dcmtk: ingest of a
//! phantom study (storescu) and of the real JPEG 2000 files (vcfd's own SCU, since their data
//! sets carry no SOP Class UID and storescu refuses them), series completion and report.json;
//! access control; garbage and truncated PDUs; a non-CT object; kill -9 during ingest.

#[path = "daemon_common.rs"]
mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

fn report(d: &Daemon, study: &str) -> serde_json::Value {
    let p = d.state().join("results").join(study).join("report.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn study_of(v: &serde_json::Value, instances: u64) -> String {
    v.as_array()
        .unwrap()
        .iter()
        .find(|st| st["series"][0]["instances"] == instances)
        .unwrap_or_else(|| panic!("no study with {instances} instances in {v}"))
        ["study_instance_uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn phantom_and_real_j2k_are_received_completed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = phantom(&dir.path().join("phantom"), 5);
    let d = Daemon::start(dir.path(), "");

    let echo = d.echo("ANYONE", "VCFD");
    assert!(echo.status.success(), "C-ECHO failed: {}", text(&echo));

    let out = d.storescu("CT1", &files, &[]);
    assert!(out.status.success(), "storescu: {}", text(&out));

    // The real files go through `vcfd forward` to our own SCP (plain TCP, loopback).
    let sender = dir.path().join("sender");
    std::fs::create_dir_all(&sender).unwrap();
    let cfg = sender.join("vcfd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[scp]\nae_title = \"J2KSENDER\"\n[storage]\nstate_dir = \"state\"\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n\
             [[pacs]]\nname = \"box\"\nhost = \"127.0.0.1\"\nport = {}\n\
             called_ae_title = \"VCFD\"\ntransport = \"plain\"\n",
            free_port(),
            d.dicom
        ),
    )
    .unwrap();
    let j2k = j2k_files();
    let mut args = vec!["forward", "--config", s(&cfg), "--timeout", "60"];
    args.extend(j2k.iter().map(|p| s(p)));
    let out = vcfd(&args);
    assert!(out.status.success(), "vcfd forward: {}", text(&out));
    assert!(text(&out).contains("delivered 20"), "{}", text(&out));

    let v = d.wait_done(2, Duration::from_secs(60));
    let ph = report(&d, &study_of(&v, 40));
    assert_eq!(
        ph["series"]["dims"],
        serde_json::json!([128, 128, 40]),
        "{ph}"
    );
    let real = report(&d, &study_of(&v, 20));
    assert_eq!(
        real["series"]["dims"],
        serde_json::json!([512, 512, 20]),
        "{real}"
    );
    assert_eq!(real["series"]["transfer_syntax"], "1.2.840.10008.1.2.4.90");

    // Sending the same study again is idempotent: still 40 instances, still one series.
    let out = d.storescu("CT1", &files[..5], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let h: serde_json::Value =
        serde_json::from_str(&http_get(d.http, "/healthz").unwrap()).unwrap();
    assert_eq!(h["instances"], 60, "{h}");

    for path in ["/api/outbox", "/api/alerts"] {
        let body = http_get(d.http, path).unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap();
    }
    assert!(http_get(d.http, "/nope").is_none());
    // No UIDs or names in the log lines of the pipeline stages.
    let log = d.log();
    assert!(!log.contains(&study_of(&v, 40)), "study UID in the log");
}

#[test]
fn access_control_garbage_and_non_ct() {
    let dir = tempfile::tempdir().unwrap();
    let files = phantom(&dir.path().join("phantom"), 6);
    let d = Daemon::start(dir.path(), "allowed_calling_ae_titles = [\"CT1\"]");

    let out = d.echo("INTRUDER", "VCFD");
    assert!(!out.status.success(), "unknown calling AE accepted");
    assert!(
        text(&out)
            .to_lowercase()
            .contains("calling ae title not recognized"),
        "{}",
        text(&out)
    );
    let out = d.echo("CT1", "SOMEONE");
    assert!(!out.status.success(), "wrong called AE accepted");
    assert!(d.log().contains("refused association from \"INTRUDER\""));

    // Garbage, a PDU claiming a huge length, and a truncated A-ASSOCIATE-RQ.
    let mut g = TcpStream::connect(("127.0.0.1", d.dicom)).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\x13garbage")
        .unwrap();
    let mut huge = TcpStream::connect(("127.0.0.1", d.dicom)).unwrap();
    huge.write_all(&[0x01, 0, 0xff, 0xff, 0xff, 0xf0, 0, 1])
        .unwrap();
    let mut cut = TcpStream::connect(("127.0.0.1", d.dicom)).unwrap();
    cut.write_all(&[0x01, 0, 0, 0, 0, 200, 0, 1, 0, 0, b'V', b'C'])
        .unwrap();
    drop(cut);
    // An unreadable first PDU is answered with A-ABORT (type 7) and the connection closed; a
    // truncated one left hanging is closed without a word when scp.idle_timeout_s (3 s) passes.
    for (what, sock) in [("garbage", &mut g), ("huge length", &mut huge)] {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        std::io::Read::read_to_end(sock, &mut answer).unwrap();
        assert_eq!(
            answer.first(),
            Some(&0x07),
            "{what}: no A-ABORT: {answer:02x?}"
        );
    }
    let mut hang = TcpStream::connect(("127.0.0.1", d.dicom)).unwrap();
    hang.write_all(&[0x01, 0, 0, 0, 0, 200, 0, 1]).unwrap();
    hang.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut hang, &mut answer).unwrap();
    assert!(answer.is_empty(), "{answer:02x?}");
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(9)).contains(&t.elapsed()),
        "idle connection closed after {:?}",
        t.elapsed()
    );
    let out = d.echo("CT1", "VCFD");
    assert!(
        out.status.success(),
        "daemon stopped serving: {}",
        text(&out)
    );
    drop((g, huge));

    // A CT-classed object whose data set is MR: A900, and the association goes on.
    let mr = dir.path().join("mr.dcm");
    std::fs::copy(&files[0], &mr).unwrap();
    let out = run_bounded(
        std::process::Command::new("dcmodify").args(["-nb", "-m", "(0008,0060)=MR", s(&mr)]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = d.storescu("CT1", &[mr, files[1].clone()], &["--no-halt"]);
    let t = text(&out);
    assert!(
        t.contains("Store Response (Error: DataSetDoesNotMatchSOPClass)"),
        "expected status A900: {t}"
    );
    assert!(
        t.matches("Received Store Response (Success)").count() == 1,
        "{t}"
    );

    // A non-CT SOP class is refused per presentation context.
    let sc = dir.path().join("sc.dcm");
    std::fs::copy(&files[2], &sc).unwrap();
    let out = run_bounded(
        std::process::Command::new("dcmodify").args([
            "-nb",
            "-m",
            "(0008,0016)=1.2.840.10008.5.1.4.1.1.7",
            s(&sc),
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = d.storescu("CT1", &[sc], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("No presentation context"),
        "{}",
        text(&out)
    );
    let out = d.echo("CT1", "VCFD");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_instance() {
    let dir = tempfile::tempdir().unwrap();
    // Enough slices that the kill lands mid-study even on a fast disk.
    let files = phantom_slices(&dir.path().join("phantom"), 7, 200);
    let mut d = Daemon::start(dir.path(), "");

    // storescu in the background; kill -9 the daemon once some instances were acknowledged.
    let child = std::process::Command::new("storescu")
        .args(["-v", "-to", "10", "-ta", "10", "-td", "10", "-aec", "VCFD"])
        .arg("127.0.0.1")
        .arg(d.dicom.to_string())
        .args(&files)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("a few stored instances", Duration::from_secs(30), || {
        let h: serde_json::Value = serde_json::from_str(&http_get(d.http, "/healthz")?).ok()?;
        (h["instances"].as_u64()? >= 5).then_some(())
    });
    d.kill9();
    let out = child.wait_with_output().unwrap();
    let t = text(&out);

    // Files storescu saw Success for, in order ("Sending file: X" then the response).
    let mut acked: Vec<PathBuf> = Vec::new();
    let mut current = None;
    for line in t.lines() {
        if let Some(f) = line.split("Sending file: ").nth(1) {
            current = Some(PathBuf::from(f.trim()));
        } else if line.contains("Received Store Response (Success)") {
            acked.extend(current.take());
        }
    }
    assert!(acked.len() >= 5, "{t}");
    assert!(
        acked.len() < files.len(),
        "kill came too late to test anything: {t}"
    );

    // Restart: everything acknowledged is in sled and in the spool, and SIGTERM exits 0.
    d.restart();
    let status = d.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}\n{}", d.log());
    let store = vcfd::store::Store::open(&d.state()).unwrap();
    for f in &acked {
        let (series, sop) = uids(f);
        assert!(
            store.has_instance(&series, &sop).unwrap(),
            "lost {}",
            f.display()
        );
    }
    let spooled = store.series_files(&uids(&files[0]).0).unwrap();
    assert!(spooled.len() >= acked.len());
    for p in &spooled {
        dicom_object::open_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    drop(store);

    // The modality resends the study; the series completes with all slices.
    d.restart();
    let out = d.storescu("CT1", &files, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let v = d.wait_done(1, Duration::from_secs(60));
    assert_eq!(v[0]["series"][0]["instances"], 200, "{v}");
}
