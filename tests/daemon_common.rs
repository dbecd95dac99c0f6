//! Shared harness of the daemon end-to-end tests (included with `#[path]`): processes on
//! 127.0.0.1 only, killed on drop, every wait bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VCFD: &str = env!("CARGO_BIN_EXE_vcfd");
pub const J2K: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/totalseg-j2k-20"
);

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_port(port: u16) {
    wait_for(&format!("port {port}"), Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command with a time limit; panics if it does not finish in time.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    wait_bounded(child, timeout, &format!("{cmd:?}"))
}

/// Waits for an already started child with a time limit; kills it and panics on overrun.
pub fn wait_bounded(child: std::process::Child, timeout: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

pub fn vcfd(args: &[&str]) -> Output {
    run_bounded(
        Command::new(VCFD).args(args).env("VCFD_LOG", "info"),
        Duration::from_secs(120),
    )
}

/// A small phantom study (40 slices of 128x128) in `dir`.
pub fn phantom(dir: &Path, seed: u32) -> Vec<PathBuf> {
    phantom_slices(dir, seed, 40)
}

pub fn phantom_slices(dir: &Path, seed: u32, slices: usize) -> Vec<PathBuf> {
    let out = vcfd(&[
        "phantom",
        "--out",
        s(dir),
        "--seed",
        &seed.to_string(),
        "--slices",
        &slices.to_string(),
        "--rows",
        "128",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    assert_eq!(files.len(), slices);
    files
}

pub fn j2k_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(J2K)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// `vcfd serve` on free loopback ports with a state folder under `dir`.
pub struct Daemon {
    pub proc: Option<Proc>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub dicom: u16,
    pub http: u16,
}

impl Daemon {
    /// `extra_scp` is added to the [scp] section (e.g. allowed AE titles).
    pub fn start(dir: &Path, extra_scp: &str) -> Daemon {
        Daemon::start_with(dir, extra_scp, "")
    }

    /// As [`Daemon::start`], with `extra` TOML appended (e.g. `[forward]` and `[[pacs]]`).
    pub fn start_with(dir: &Path, extra_scp: &str, extra: &str) -> Daemon {
        let mut d = Daemon::configure(dir, extra_scp, extra);
        d.restart();
        d
    }

    /// Writes the config without starting the daemon (e.g. to run `vcfd forward` on its
    /// state first); [`Daemon::restart`] starts it.
    pub fn configure(dir: &Path, extra_scp: &str, extra: &str) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        let (dicom, http) = (free_port(), free_port());
        let config = dir.join("vcfd.toml");
        std::fs::write(
            &config,
            format!(
                "[scp]\nlisten = \"127.0.0.1:{dicom}\"\nidle_timeout_s = 3\n{extra_scp}\n\
                 [storage]\nstate_dir = \"state\"\nseries_quiet_period_s = 1\n\
                 [http]\nlisten = \"127.0.0.1:{http}\"\n{extra}"
            ),
        )
        .unwrap();
        Daemon {
            proc: None,
            dir: dir.to_path_buf(),
            config,
            dicom,
            http,
        }
    }

    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("serve.log"))
            .unwrap();
        let child = Command::new(VCFD)
            .args(["serve", "--config", s(&self.config)])
            .env("VCFD_LOG", "debug")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        wait_for("vcfd /healthz", Duration::from_secs(30), || {
            http_get(self.http, "/healthz").filter(|b| b.contains("\"ok\""))
        });
    }

    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.proc = None;
    }

    /// SIGTERM and wait (bounded); returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut p = self.proc.take().expect("running");
        let pid = p.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = wait_for(
            "vcfd to exit after SIGTERM",
            Duration::from_secs(40),
            || p.0.try_wait().unwrap(),
        );
        drop(p);
        status
    }

    pub fn studies(&self) -> serde_json::Value {
        let body = http_get(self.http, "/api/studies").expect("status API answers");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `n` series are in job state `done`.
    pub fn wait_done(&self, n: usize, timeout: Duration) -> serde_json::Value {
        wait_for(&format!("{n} series done"), timeout, || {
            let v = self.studies();
            let done = v
                .as_array()?
                .iter()
                .flat_map(|st| st["series"].as_array().cloned().unwrap_or_default())
                .filter(|se| se["job_state"] == "done")
                .count();
            (done >= n).then_some(v)
        })
    }

    pub fn storescu(&self, calling: &str, files: &[PathBuf], extra: &[&str]) -> Output {
        run_bounded(
            Command::new("storescu")
                .args(["-v", "-to", "10", "-ta", "10", "-td", "10", "-aet", calling])
                .args(["-aec", "VCFD"])
                .args(extra)
                .arg("127.0.0.1")
                .arg(self.dicom.to_string())
                .args(files),
            Duration::from_secs(120),
        )
    }

    pub fn echo(&self, calling: &str, called: &str) -> Output {
        run_bounded(
            Command::new("echoscu")
                .args(["-to", "10", "-ta", "10", "-aet", calling, "-aec", called])
                .arg("127.0.0.1")
                .arg(self.dicom.to_string()),
            Duration::from_secs(30),
        )
    }
}

/// GET on the status API; None while it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// A CT file's (series, SOP instance) UIDs as the daemon keys them (data set values).
pub fn uids(file: &Path) -> (String, String) {
    use dicom_dictionary_std::tags;
    let o = dicom_object::open_file(file).unwrap();
    let t = |tag| {
        o.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    (t(tags::SERIES_INSTANCE_UID), t(tags::SOP_INSTANCE_UID))
}

/// SOP Class and SOP Instance UIDs from a file's meta header (any SOP class: CT, SR, images).
pub fn meta_uids(file: &Path) -> (String, String) {
    let o = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let m = o.meta();
    let t = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
    (
        t(m.media_storage_sop_class_uid()),
        t(m.media_storage_sop_instance_uid()),
    )
}

/// The DICOM files the daemon wrote for forwarding (`results/<study>/sr.dcm`, `series/*.dcm`).
pub fn result_dicom_files(state: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(studies) = std::fs::read_dir(state.join("results")) else {
        return out;
    };
    for study in studies.flatten().map(|e| e.path()) {
        let sr = study.join("sr.dcm");
        if sr.is_file() {
            out.push(sr);
        }
        if let Ok(series) = std::fs::read_dir(study.join("series")) {
            out.extend(
                series
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "dcm")),
            );
        }
    }
    out.sort();
    out
}

/// Finds `tool` on PATH or in the sbin folders (Debian installs Orthanc as /usr/sbin/Orthanc,
/// which is not on a normal user's PATH). When it is missing the test is skipped with a
/// message on a developer machine, and fails in CI (CI set and not "false"), where
/// scripts/test.sh installs it.
pub fn tool_or_skip(tool: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    if found.is_some() {
        return found;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{test}: `{tool}` is not installed and CI is set: scripts/test.sh must install it"
    );
    eprintln!("SKIPPED {test}: `{tool}` is not installed (apt-get install orthanc); CI fails here");
    None
}

/// Orthanc as a PACS with DICOM TLS only and client certificates required, run as a plain
/// process with its own config: no plugins, loopback HTTP, storage in `dir`.
pub struct Orthanc {
    _proc: Proc,
    pub dicom: u16,
    pub http: u16,
    pub dir: PathBuf,
}

impl Orthanc {
    pub const AET: &'static str = "ORTHANC";

    /// `cert`/`key`: its server certificate; `trusted`: the CA its DICOM clients must chain to.
    pub fn start(bin: &Path, dir: &Path, cert: &Path, key: &Path, trusted: &Path) -> Orthanc {
        std::fs::create_dir_all(dir.join("db")).unwrap();
        let (dicom, http) = (free_port(), free_port());
        let config = serde_json::json!({
            "Name": "vcfd-test-pacs",
            "StorageDirectory": dir.join("db"),
            "IndexDirectory": dir.join("db"),
            // The Debian package loads plugins only from this list (its service points it at
            // /usr/share/orthanc/plugins); none here.
            "Plugins": [],
            "DicomAet": Orthanc::AET,
            "DicomPort": dicom,
            "DicomCheckCalledAet": true,
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": cert,
            "DicomTlsPrivateKey": key,
            "DicomTlsTrustedCertificates": trusted,
            "DicomTlsRemoteCertificateRequired": true,
            "HttpPort": http,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
            "SaveJobs": false,
        });
        let cfg = dir.join("orthanc.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.join("orthanc.log")).unwrap();
        let child = Command::new(bin)
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let o = Orthanc {
            _proc: Proc(child),
            dicom,
            http,
            dir: dir.to_path_buf(),
        };
        wait_for("Orthanc REST API", Duration::from_secs(60), || {
            http_get(http, "/system")
        });
        // "explorer.js" is Orthanc's own entry in that list, not a plugin.
        let plugins = o.get("/plugins");
        assert!(
            plugins
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p == "explorer.js"),
            "plugins loaded: {plugins}"
        );
        o
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let body = http_get(self.http, path).unwrap_or_else(|| {
            panic!(
                "Orthanc GET {path} failed; its log:\n{}",
                std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
            )
        });
        serde_json::from_str(&body).unwrap()
    }

    /// Simplified tags of every stored instance, keyed by SOP Instance UID.
    pub fn instances(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        let ids = self.get("/instances");
        ids.as_array()
            .unwrap()
            .iter()
            .map(|id| {
                let tags = self.get(&format!(
                    "/instances/{}/tags?simplify",
                    id.as_str().unwrap()
                ));
                (tags["SOPInstanceUID"].as_str().unwrap().to_string(), tags)
            })
            .collect()
    }
}
