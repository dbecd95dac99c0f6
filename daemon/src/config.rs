//! The daemon's configuration: one TOML file, every option optional with a documented default.
//!
//! `provisioning/vcfd.toml.example` documents every option; a unit test keeps it equal to
//! [`Config::default`], which is what `vcfd serve` runs on without a config file (SCP on
//! 127.0.0.1:11112 as `VCFD`, loopback peers only, status API on 127.0.0.1:8080, state under
//! `./var`, no PACS). Relative paths in a config *file* are resolved against the file's folder,
//! so the meaning of a file does not depend on the daemon's working directory.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// The DICOM Verification SOP class, which every PACS answers and `vcfd check` uses.
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

/// Whole configuration of one appliance; `Default` is the embedded configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub appliance: ApplianceConfig,
    pub scp: ScpConfig,
    pub storage: StorageConfig,
    pub analysis: AnalysisConfig,
    pub forward: ForwardConfig,
    pub retention: RetentionConfig,
    pub http: HttpConfig,
    pub alerts: AlertsConfig,
    pub service: ServiceConfig,
    /// PACS destinations; results go to every one of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pacs: Vec<PacsConfig>,
}

/// Who this box is: written once by `vcfd provision`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApplianceConfig {
    /// Box serial; also the CN of its TLS client certificate. Empty on an unprovisioned box.
    pub serial: String,
}

/// The DICOM receiver (C-ECHO and C-STORE SCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScpConfig {
    /// Address and port to bind when not socket-activated by systemd.
    pub listen: SocketAddr,
    /// Our AE title; associations that call another title are rejected.
    pub ae_title: String,
    /// Calling AE titles allowed to send; empty means any title (sources still apply).
    pub allowed_calling_ae_titles: Vec<String>,
    /// Source networks allowed to connect, in CIDR notation.
    pub allowed_sources: Vec<IpNet>,
    /// Associations served at once; further ones are rejected (transient).
    pub max_associations: u32,
    /// Largest PDU we accept, in bytes.
    pub max_pdu_length: u32,
    /// An association idle for this long is aborted, in seconds.
    pub idle_timeout_s: u64,
}

/// Where state lives and when the disk counts as full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Spool, job database and results.
    pub state_dir: PathBuf,
    /// Above this disk usage (percent of the state file system) C-STOREs get Out of Resources.
    pub disk_watermark_percent: u8,
    /// A series is complete when no instance arrived for this long, in seconds.
    pub series_quiet_period_s: u64,
}

/// The analysis worker pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Concurrent analyses; 1 leaves the second core of a 2-core box to the SCP.
    pub workers: u32,
    /// A series that fails this many times is quarantined and alerted.
    pub max_attempts: u32,
}

/// Delivery to PACS: retry policy shared by every destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// First retry delay after a transient failure, in seconds (doubles, with jitter).
    pub backoff_initial_s: u64,
    /// Cap on the retry delay, in seconds; transient failures are retried forever.
    pub backoff_max_s: u64,
    /// Connect and per-PDU network timeout, in seconds.
    pub timeout_s: u64,
}

/// How long data stays on the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Received instances are deleted this long after their results were delivered, in hours.
    pub source_grace_hours: u64,
    /// Results (report, SR, images) are kept this many days.
    pub results_days: u64,
}

/// The local status API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of `/healthz` and `/api/*`.
    pub listen: SocketAddr,
    /// Bearer token required to acknowledge alerts; empty disables acknowledging over HTTP.
    pub ack_token: String,
}

/// Scan-quality alerts for the technician (daemon/src/alerts.rs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Ring artifacts on this many studies in a row from one scanner escalate to one
    /// "detector fault suspected: call service" alert.
    pub ring_escalation_studies: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            ring_escalation_studies: crate::alerts::DEFAULT_RING_ESCALATION_STUDIES,
        }
    }
}

/// How the daemon runs as a system service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// User to switch to after binding when started as root; empty keeps the starting user.
    pub user: String,
}

/// One PACS destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsConfig {
    /// Short unique name used in logs, the outbox and `vcfd check`.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The PACS's AE title.
    pub called_ae_title: String,
    /// Our AE title towards this PACS; defaults to `scp.ae_title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae_title: Option<String>,
    /// `tls` (default) or `plain`; plain TCP only when written here explicitly.
    #[serde(default)]
    pub transport: Transport,
    /// CA certificate(s) (PEM) that the PACS server certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Our client certificate chain (PEM) for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM, PKCS#8) of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Name the server certificate must carry; defaults to `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TLS 1.2/1.3, server verified against `ca`, client certificate presented.
    #[default]
    Tls,
    /// Unencrypted DICOM; for PACS on an isolated network that cannot do TLS.
    Plain,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tls => "TLS",
            Transport::Plain => "plain TCP",
        })
    }
}

impl Default for ScpConfig {
    fn default() -> Self {
        ScpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 11112),
            ae_title: "VCFD".into(),
            allowed_calling_ae_titles: Vec::new(),
            allowed_sources: vec![IpNet::LOOPBACK_V4, IpNet::LOOPBACK_V6],
            max_associations: 4,
            max_pdu_length: 65536,
            idle_timeout_s: 60,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            state_dir: PathBuf::from("./var"),
            disk_watermark_percent: 90,
            series_quiet_period_s: 10,
        }
    }
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            workers: 1,
            max_attempts: 3,
        }
    }
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            backoff_initial_s: 5,
            backoff_max_s: 300,
            timeout_s: 30,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            source_grace_hours: 24,
            results_days: 30,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            ack_token: String::new(),
        }
    }
}

/// One thing wrong with a configuration: the option and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted option name, e.g. `scp.ae_title` or `pacs[main].ca`.
    pub option: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

impl Config {
    /// Parses TOML without validating or resolving paths (tests, templates).
    pub fn from_toml_str(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: PathBuf::from("<text>"),
            reason: e.to_string(),
        })
    }

    /// Reads a config file and resolves its relative paths; does not validate.
    pub fn load_unvalidated(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config: Config = toml::from_str(&text).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Reads, resolves and validates a config file; every problem is reported at once.
    pub fn load(path: &Path) -> Result<Config> {
        let config = Config::load_unvalidated(path)?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::ConfigInvalid {
                path: path.to_path_buf(),
                problems: problems.iter().map(ToString::to_string).collect(),
            })
        }
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.storage.state_dir);
        for pacs in &mut self.pacs {
            for p in [&mut pacs.ca, &mut pacs.client_cert, &mut pacs.client_key]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
    }

    /// Every semantic problem in the configuration (empty when it is usable). Pure: files are
    /// checked by `vcfd check`, not here, so the daemon and tests can validate anywhere.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |option: &str, message: String| {
            out.push(Problem {
                option: option.to_string(),
                message,
            })
        };

        let serial = &self.appliance.serial;
        if !serial.is_empty() {
            if let Err(m) = check_serial(serial) {
                bad("appliance.serial", m);
            }
        }

        let scp = &self.scp;
        if scp.listen.port() == 0 {
            bad(
                "scp.listen",
                "port 0 is not a fixed port; modalities need to know where to send".into(),
            );
        }
        if let Err(m) = check_ae_title(&scp.ae_title) {
            bad("scp.ae_title", m);
        }
        for ae in &scp.allowed_calling_ae_titles {
            if let Err(m) = check_ae_title(ae) {
                bad("scp.allowed_calling_ae_titles", format!("{ae:?}: {m}"));
            }
        }
        if scp.allowed_sources.is_empty() {
            bad(
                "scp.allowed_sources",
                "empty: every peer would be rejected; list the modalities' networks \
                 (\"0.0.0.0/0\" and \"::/0\" accept any source)"
                    .into(),
            );
        }
        if !(1..=256).contains(&scp.max_associations) {
            bad(
                "scp.max_associations",
                format!("{} is outside 1..=256", scp.max_associations),
            );
        }
        if !(MIN_PDU..=MAX_PDU).contains(&scp.max_pdu_length) {
            bad(
                "scp.max_pdu_length",
                format!(
                    "{} is outside {MIN_PDU}..={MAX_PDU} bytes",
                    scp.max_pdu_length
                ),
            );
        }
        if !(1..=86_400).contains(&scp.idle_timeout_s) {
            bad(
                "scp.idle_timeout_s",
                format!("{} is outside 1..=86400 s", scp.idle_timeout_s),
            );
        }

        let st = &self.storage;
        if st.state_dir.as_os_str().is_empty() {
            bad(
                "storage.state_dir",
                "empty; give the folder for spool, database and results".into(),
            );
        }
        if !(50..=99).contains(&st.disk_watermark_percent) {
            bad(
                "storage.disk_watermark_percent",
                format!("{} is outside 50..=99 %", st.disk_watermark_percent),
            );
        }
        if !(1..=3600).contains(&st.series_quiet_period_s) {
            bad(
                "storage.series_quiet_period_s",
                format!("{} is outside 1..=3600 s", st.series_quiet_period_s),
            );
        }

        if !(1..=64).contains(&self.analysis.workers) {
            bad(
                "analysis.workers",
                format!("{} is outside 1..=64", self.analysis.workers),
            );
        }
        if !(1..=100).contains(&self.analysis.max_attempts) {
            bad(
                "analysis.max_attempts",
                format!("{} is outside 1..=100", self.analysis.max_attempts),
            );
        }

        let fw = &self.forward;
        if fw.backoff_initial_s == 0 {
            bad(
                "forward.backoff_initial_s",
                "0 would retry in a tight loop; use at least 1 s".into(),
            );
        }
        if fw.backoff_max_s < fw.backoff_initial_s {
            bad(
                "forward.backoff_max_s",
                format!(
                    "{} is below forward.backoff_initial_s ({})",
                    fw.backoff_max_s, fw.backoff_initial_s
                ),
            );
        }
        if !(1..=3600).contains(&fw.timeout_s) {
            bad(
                "forward.timeout_s",
                format!("{} is outside 1..=3600 s", fw.timeout_s),
            );
        }

        if self.retention.results_days == 0 {
            bad(
                "retention.results_days",
                "0 would delete results before anyone can look at them; use at least 1".into(),
            );
        }

        let http = &self.http;
        if http.listen.port() == 0 {
            bad("http.listen", "port 0 is not a fixed port".into());
        }
        if http.listen == scp.listen {
            bad("http.listen", format!("{} is also scp.listen", http.listen));
        }
        if !http.ack_token.is_empty() && http.ack_token.len() < MIN_TOKEN_LEN {
            bad(
                "http.ack_token",
                format!("shorter than {MIN_TOKEN_LEN} characters; use a random token (or \"\" to disable)"),
            );
        }

        if self.alerts.ring_escalation_studies == 0 {
            bad(
                "alerts.ring_escalation_studies",
                "0 would escalate before any study; use at least 1 (default 3)".into(),
            );
        }

        let mut names: Vec<&str> = Vec::new();
        for (i, p) in self.pacs.iter().enumerate() {
            let label = if p.name.is_empty() {
                format!("pacs[{i}]")
            } else {
                format!("pacs[{}]", p.name)
            };
            let opt = |field: &str| format!("{label}.{field}");
            if p.name.is_empty() {
                bad(
                    &opt("name"),
                    "empty; give each destination a short unique name".into(),
                );
            } else if names.contains(&p.name.as_str()) {
                bad(&opt("name"), "used by more than one destination".into());
            }
            names.push(&p.name);
            if p.host.trim().is_empty() {
                bad(&opt("host"), "empty".into());
            }
            if p.port == 0 {
                bad(&opt("port"), "0 is not a port".into());
            }
            if let Err(m) = check_ae_title(&p.called_ae_title) {
                bad(&opt("called_ae_title"), m);
            }
            if let Some(ae) = &p.calling_ae_title {
                if let Err(m) = check_ae_title(ae) {
                    bad(&opt("calling_ae_title"), m);
                }
            }
            match p.transport {
                Transport::Tls => {
                    if p.ca.is_none() {
                        bad(
                            &opt("ca"),
                            "missing: TLS needs the CA that signed the PACS certificate \
                             (or transport = \"plain\" to send unencrypted)"
                                .into(),
                        );
                    }
                    match (&p.client_cert, &p.client_key) {
                        (Some(_), Some(_)) => {}
                        (None, None) => bad(
                            &opt("client_cert"),
                            "missing: mutual TLS needs client_cert and client_key \
                             (see `vcfd provision`)"
                                .into(),
                        ),
                        (None, Some(_)) => bad(
                            &opt("client_cert"),
                            "missing while client_key is set".into(),
                        ),
                        (Some(_), None) => bad(
                            &opt("client_key"),
                            "missing while client_cert is set".into(),
                        ),
                    }
                    let name = p.tls_server_name();
                    if rustls::pki_types::ServerName::try_from(name.to_string()).is_err() {
                        bad(
                            &opt("server_name"),
                            format!("{name:?} is neither a DNS name nor an IP address"),
                        );
                    }
                }
                Transport::Plain => {
                    for (field, set) in [
                        ("ca", p.ca.is_some()),
                        ("client_cert", p.client_cert.is_some()),
                        ("client_key", p.client_key.is_some()),
                        ("server_name", p.server_name.is_some()),
                    ] {
                        if set {
                            bad(
                                &opt(field),
                                "set, but transport = \"plain\" does not use TLS; remove it \
                                 or use transport = \"tls\""
                                    .into(),
                            );
                        }
                    }
                }
            }
        }
        out
    }
}

/// Smallest and largest PDU we negotiate: below 4 KiB throughput collapses; above 4 MiB a
/// misbehaving peer could make each association hold a lot of memory.
const MIN_PDU: u32 = 4096;
const MAX_PDU: u32 = 4 << 20;
/// A bearer token shorter than this is guessable.
const MIN_TOKEN_LEN: usize = 16;

impl PacsConfig {
    /// Our AE title towards this destination.
    pub fn calling_ae_title<'a>(&'a self, config: &'a Config) -> &'a str {
        self.calling_ae_title
            .as_deref()
            .unwrap_or(&config.scp.ae_title)
    }

    /// Name the server certificate is verified against.
    pub fn tls_server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }

    /// `AE@host:port`, as admins write DICOM addresses.
    pub fn address(&self) -> String {
        format!("{}@{}:{}", self.called_ae_title, self.host, self.port)
    }

    /// The rustls client configuration for this destination (ring provider, TLS 1.2 and 1.3,
    /// server verified against `ca`, client certificate presented); `None` for plain TCP.
    pub fn tls_client_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        if self.transport == Transport::Plain {
            return Ok(None);
        }
        let tls_err = |reason: String| Error::Tls {
            destination: self.name.clone(),
            reason,
        };
        let ca = self
            .ca
            .as_deref()
            .ok_or_else(|| tls_err("no CA configured".into()))?;
        let roots = load_root_store(ca)?;
        let (cert, key) = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => (c, k),
            _ => return Err(tls_err("client_cert and client_key are required".into())),
        };
        let chain = read_certificates(cert)?;
        let key = read_private_key(key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err(format!("client certificate and key: {e}")))?;
        Ok(Some(Arc::new(config)))
    }
}

/// All certificates in a PEM file; an empty file or one without certificates is an error.
pub fn read_certificates(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn read_private_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::{pem::PemObject, PrivateKeyDer};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| Error::Pem {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// A rustls root store holding every CA certificate of a PEM file; refuses a file whose
/// certificates are all unusable as trust anchors, since that would trust nothing.
pub fn load_root_store(path: &Path) -> Result<rustls::RootCertStore> {
    let certs = read_certificates(path)?;
    let mut store = rustls::RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            reason: format!("none of its {ignored} certificate(s) is usable as a trust anchor"),
        });
    }
    Ok(store)
}

/// DICOM AE title rules (PS3.5 VR AE): 1 to 16 characters of the default repertoire, no
/// backslash or control characters; we also refuse leading/trailing spaces because peers
/// trim them inconsistently.
pub fn check_ae_title(ae: &str) -> std::result::Result<(), String> {
    if ae.is_empty() || ae.trim().is_empty() {
        return Err("empty AE title".into());
    }
    if ae.len() > 16 {
        return Err(format!("AE title {ae:?} is longer than 16 characters"));
    }
    if ae.trim() != ae {
        return Err(format!("AE title {ae:?} has leading or trailing spaces"));
    }
    if let Some(c) = ae.chars().find(|c| !(' '..='~').contains(c) || *c == '\\') {
        return Err(format!(
            "AE title {ae:?} contains {c:?}; use ASCII letters, digits, '-' or '_'"
        ));
    }
    Ok(())
}

/// Serials go into file names, certificate subjects and logs: keep them boring.
pub fn check_serial(serial: &str) -> std::result::Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if serial.is_empty() || serial.len() > 64 || !serial.chars().all(ok_char) {
        return Err(format!(
            "{serial:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// An IP network in CIDR notation (`10.1.0.0/16`, `::1/128`; a bare address means one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub const LOOPBACK_V4: IpNet = IpNet {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    };
    pub const LOOPBACK_V6: IpNet = IpNet {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        prefix: 128,
    };

    /// Whether `ip` lies in this network; IPv4-mapped IPv6 peers (from dual-stack sockets)
    /// match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network such as 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../provisioning/vcfd.toml.example");

    #[test]
    fn example_equals_embedded_defaults() {
        let parsed = Config::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
        assert!(
            Config::default().validate().is_empty(),
            "{:?}",
            Config::default().validate()
        );
    }

    /// Every option the daemon knows appears, uncommented, in the example; serde's
    /// deny_unknown_fields covers the other direction.
    #[test]
    fn example_documents_every_option() {
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for (section, table) in &defaults {
            let table = table.as_table().unwrap();
            let ex = example
                .get(section)
                .and_then(|t| t.as_table())
                .unwrap_or_else(|| panic!("[{section}] missing from the example"));
            for (key, value) in table {
                assert_eq!(
                    ex.get(key),
                    Some(value),
                    "{section}.{key} differs or is missing"
                );
            }
        }
        // Each option line carries its own documentation just above it.
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let l = line.trim_start();
            if !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ") {
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#'),
                    "undocumented option line {}: {line}",
                    i + 1
                );
            }
        }
    }

    /// The commented-out PACS block in the example is a valid destination once uncommented.
    #[test]
    fn example_pacs_block_is_valid() {
        let mut text = String::from(EXAMPLE);
        let start = EXAMPLE
            .find("# [[pacs]]")
            .expect("example has a [[pacs]] block");
        for line in EXAMPLE[start..].lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let key = rest.split(" = ").next().unwrap_or("");
            if rest == "[[pacs]]"
                || (rest.contains(" = ") && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            {
                text.push_str(rest);
                text.push('\n');
            }
        }
        let config = Config::from_toml_str(&text).unwrap();
        assert_eq!(config.pacs.len(), 1);
        assert_eq!(config.pacs[0].transport, Transport::Tls);
        assert!(config.validate().is_empty(), "{:?}", config.validate());
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut c = Config::default();
        c.scp.ae_title = "THIS TITLE IS FAR TOO LONG".into();
        c.scp.allowed_sources.clear();
        c.storage.disk_watermark_percent = 100;
        c.forward.backoff_max_s = 1;
        c.http.ack_token = "short".into();
        c.pacs.push(PacsConfig {
            name: "main".into(),
            host: "pacs".into(),
            port: 0,
            called_ae_title: "PACS\\1".into(),
            calling_ae_title: None,
            transport: Transport::Tls,
            ca: None,
            client_cert: None,
            client_key: Some("k.pem".into()),
            server_name: None,
        });
        c.pacs.push(PacsConfig {
            name: "main".into(),
            host: "p2".into(),
            port: 104,
            called_ae_title: "P2".into(),
            calling_ae_title: None,
            transport: Transport::Plain,
            ca: Some("ca.pem".into()),
            client_cert: None,
            client_key: None,
            server_name: None,
        });
        let problems: Vec<String> = c.validate().iter().map(|p| p.option.clone()).collect();
        assert_eq!(
            problems,
            [
                "scp.ae_title",
                "scp.allowed_sources",
                "storage.disk_watermark_percent",
                "forward.backoff_max_s",
                "http.ack_token",
                "pacs[main].port",
                "pacs[main].called_ae_title",
                "pacs[main].ca",
                "pacs[main].client_cert",
                "pacs[main].name",
                "pacs[main].ca",
            ]
        );
    }

    #[test]
    fn unknown_option_is_a_parse_error() {
        let err = Config::from_toml_str("[scp]\nae_titel = \"X\"\n").unwrap_err();
        assert!(err.to_string().contains("ae_titel"), "{err}");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut c = Config::from_toml_str(
            "[storage]\nstate_dir = \"state\"\n[[pacs]]\nname = \"a\"\nhost = \"h\"\nport = 1\n\
             called_ae_title = \"A\"\nca = \"ca.pem\"\nclient_cert = \"/abs/c.pem\"\n",
        )
        .unwrap();
        c.resolve_paths(Path::new("/etc/vcfd"));
        assert_eq!(c.storage.state_dir, Path::new("/etc/vcfd/state"));
        assert_eq!(c.pacs[0].ca.as_deref(), Some(Path::new("/etc/vcfd/ca.pem")));
        assert_eq!(
            c.pacs[0].client_cert.as_deref(),
            Some(Path::new("/abs/c.pem"))
        );
    }

    #[test]
    fn ae_titles() {
        assert!(check_ae_title("VCFD").is_ok());
        assert!(check_ae_title("A B-C_1").is_ok());
        for bad in [
            "",
            "   ",
            " X",
            "X ",
            "ABCDEFGHIJKLMNOPQ",
            "A\\B",
            "Ä",
            "A\tB",
        ] {
            assert!(check_ae_title(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ip_networks() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let any: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("192.0.2.1".parse().unwrap()));
        assert!(!any.contains("2001:db8::1".parse().unwrap()));
        let host: IpNet = "192.0.2.7".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.7/32");
        assert!(IpNet::LOOPBACK_V4.contains("127.0.0.1".parse().unwrap()));
        assert!(IpNet::LOOPBACK_V6.contains("::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "foo", "10.0.0.0/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad} accepted");
        }
    }
}
