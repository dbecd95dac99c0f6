//! Provisioning end to end, through the real `vcfd` binary: provision into a temporary root,
//! `vcfd check` the result, refuse to overwrite an identity without --force, replace it with
//! --force, and C-ECHO over mutual TLS against dcmtk's storescp (and against nothing).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vcfd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vcfd"))
        .args(args)
        .env("VCFD_LOG", "warn")
        .output()
        .expect("run vcfd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[path = "test_pki.rs"]
mod test_pki;
use test_pki::{make_ca, make_cert};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn provision(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "provision",
        "--root",
        s(root),
        "--ae-title",
        "VCFD_TEST",
        "--allow-ae",
        "CT1",
        "--allow-source",
        "10.0.0.0/8",
        "--organization",
        "Test Hospital",
    ];
    args.extend_from_slice(extra);
    vcfd(&args)
}

fn read_all(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn provision_check_refuse_then_force() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let ca = make_ca(tmp.path(), "site-ca");
    let tls = [
        "--pacs-host",
        "127.0.0.1",
        "--pacs-port",
        "2762",
        "--pacs-ae",
        "PACS",
        "--pacs-ca",
        s(&ca.pem),
        "--self-signed",
    ];
    let mut first = tls.to_vec();
    first.extend_from_slice(&["--serial", "VCF-IT0001"]);
    let out = provision(&root, &first);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("provisioned box VCF-IT0001"),
        "{}",
        text(&out)
    );

    let etc = root.join("etc/vcfd");
    let config = etc.join("vcfd.toml");
    let identity = [
        config.clone(),
        etc.join("identity/client.key"),
        etc.join("identity/client.csr"),
        etc.join("identity/client.crt"),
        etc.join("pacs-ca.pem"),
    ];
    for p in &identity {
        assert!(p.is_file(), "{} missing", p.display());
    }

    let out = vcfd(&["check", "--config", s(&config), "--no-echo"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("box VCF-IT0001"), "{t}");
    assert!(
        t.contains("client certificate matches the private key"),
        "{t}"
    );
    assert!(t.contains("CN=site-ca"), "{t}");
    assert!(t.contains("days left"), "{t}");
    assert!(t.contains("ready"), "{t}");

    // Second run without --force: refused, identity byte-for-byte untouched.
    let before = read_all(&identity);
    let out = provision(&root, &tls);
    let t = text(&out);
    assert!(!out.status.success(), "second provision succeeded: {t}");
    assert!(t.contains("already exists") && t.contains("--force"), "{t}");
    assert_eq!(
        read_all(&identity),
        before,
        "identity changed without --force"
    );

    // With --force: a new key and serial, and the box checks out again.
    let mut forced = tls.to_vec();
    forced.push("--force");
    let out = provision(&root, &forced);
    assert!(out.status.success(), "{}", text(&out));
    let after = read_all(&identity);
    assert_ne!(after[1], before[1], "key not replaced");
    assert_ne!(after[0], before[0], "config not replaced");
    let out = vcfd(&["check", "--config", s(&config), "--no-echo"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("VCF-IT0001"), "old serial kept");
}

/// Without --self-signed the box has a key and CSR but no certificate: check says what to do.
#[test]
fn check_explains_a_missing_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let ca = make_ca(tmp.path(), "site-ca");
    let out = provision(
        &root,
        &["--pacs-host", "pacs.example.org", "--pacs-ca", s(&ca.pem)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let config = root.join("etc/vcfd/vcfd.toml");
    let out = vcfd(&["check", "--config", s(&config), "--no-echo"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("not installed yet") && t.contains("client.csr"),
        "{t}"
    );
}

/// A broken config is reported as a whole, not one problem per run.
#[test]
fn check_lists_every_config_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("vcfd.toml");
    std::fs::write(
        &config,
        "[scp]\nae_title = \"\"\nallowed_sources = []\n[analysis]\nworkers = 0\n",
    )
    .unwrap();
    let out = vcfd(&["check", "--config", s(&config), "--no-echo"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for option in ["scp.ae_title", "scp.allowed_sources", "analysis.workers"] {
        assert!(t.contains(option), "{option} not reported: {t}");
    }
}

fn provision_for_echo(root: &Path, ca: &Path, port: u16) -> PathBuf {
    let port = port.to_string();
    let out = provision(
        root,
        &[
            "--pacs-host",
            "127.0.0.1",
            "--pacs-port",
            &port,
            "--pacs-ae",
            "STORESCP",
            "--pacs-ca",
            s(ca),
            "--self-signed",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    root.join("etc/vcfd/vcfd.toml")
}

#[test]
fn echo_against_a_closed_port_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = make_ca(tmp.path(), "site-ca");
    let port = free_port(); // bound and released: nothing listens there now
    let config = provision_for_echo(&tmp.path().join("root"), &ca.pem, port);
    let out = vcfd(&["check", "--config", s(&config), "--timeout", "5"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("FAIL  C-ECHO"), "{t}");
    assert!(t.contains(&format!("127.0.0.1:{port}")), "{t}");
    assert!(t.to_lowercase().contains("connection refused"), "{t}");
    assert!(t.contains("nothing listens there"), "{t}");
}

/// dcmtk storescp as a TLS PACS that requires a client certificate, trusting the box's
/// self-signed certificate.
struct StoreScp(Child);

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_storescp(dir: &Path, port: u16, key: &Path, cert: &Path, client: &Path) -> StoreScp {
    let child = Command::new("storescp")
        .args([
            "--aetitle",
            "STORESCP",
            "+tls",
            s(key),
            s(cert),
            "+cf",
            s(client),
        ])
        .args(["--require-peer-cert", "--output-directory", s(dir)])
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dcmtk storescp (apt-get install dcmtk)");
    let scp = StoreScp(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    scp
}

#[test]
fn echo_over_mutual_tls_and_wrong_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pacs_ca = make_ca(tmp.path(), "pacs-ca");
    let (key, cert) = make_cert(tmp.path(), &pacs_ca, "server", true);
    let port = free_port();
    let config = provision_for_echo(&tmp.path().join("root"), &pacs_ca.pem, port);
    let client = tmp.path().join("root/etc/vcfd/identity/client.crt");
    let out_dir = tmp.path().join("received");
    std::fs::create_dir(&out_dir).unwrap();
    let _scp = start_storescp(&out_dir, port, &key, &cert, &client);

    let out = vcfd(&["check", "--config", s(&config), "--timeout", "10"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("C-ECHO answered Success"), "{t}");

    // The same PACS, but the box trusts another CA: the handshake must fail, and say why.
    let other = make_ca(tmp.path(), "other-ca");
    let root2 = tmp.path().join("root2");
    let config2 = provision_for_echo(&root2, &other.pem, port);
    let out = vcfd(&["check", "--config", s(&config2), "--timeout", "10"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("FAIL  C-ECHO"), "{t}");
    assert!(t.contains("not signed by the configured CA"), "{t}");

    // Right CA, but storescp does not trust this box's (new) client certificate.
    let config3 = provision_for_echo(&tmp.path().join("root3"), &pacs_ca.pem, port);
    let out = vcfd(&["check", "--config", s(&config3), "--timeout", "10"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("does not accept this box's client certificate"),
        "{t}"
    );
}
