//! Box identity and first-boot provisioning.
//!
//! An identity is the box serial (in the config), an ECDSA P-256 private key (mode 0600) and a
//! certificate signing request for the PACS TLS client certificate, optionally a self-signed
//! certificate for tests. Replacing an identity breaks trust with every PACS, so it is only
//! done with `force`. The config is written from `provisioning/vcfd.toml.example` (embedded in
//! the binary) with the site's values, keeping its documentation.
//!
//! Files, under `root` (normally `/`):
//! `etc/vcfd/vcfd.toml` (0640), `etc/vcfd/pacs-ca.pem`, `etc/vcfd/identity/client.key`
//! (0600), `client.csr`, `client.crt`. The config names them relative to its own folder, so a
//! config provisioned into a staging root is valid on the box unchanged.

use crate::config::{self, check_ae_title, check_serial, Config, IpNet};
use crate::{Error, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The documented example config that provisioning fills in.
pub const CONFIG_TEMPLATE: &str = include_str!("../../provisioning/vcfd.toml.example");

/// Where provisioning puts things, relative to a root folder.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("etc/vcfd")
    }
    pub fn config(&self) -> PathBuf {
        self.config_dir().join("vcfd.toml")
    }
    pub fn identity_dir(&self) -> PathBuf {
        self.config_dir().join("identity")
    }
    pub fn key(&self) -> PathBuf {
        self.identity_dir().join("client.key")
    }
    pub fn csr(&self) -> PathBuf {
        self.identity_dir().join("client.csr")
    }
    pub fn cert(&self) -> PathBuf {
        self.identity_dir().join("client.crt")
    }
    pub fn pacs_ca(&self) -> PathBuf {
        self.config_dir().join("pacs-ca.pem")
    }
    /// Files whose presence means "this box already has an identity".
    fn identity_files(&self) -> [PathBuf; 4] {
        [self.config(), self.key(), self.csr(), self.cert()]
    }
}

/// The PACS destination given on the command line.
#[derive(Debug, Clone)]
pub struct PacsSite {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub called_ae_title: String,
    /// CA bundle to copy onto the box; required for TLS.
    pub ca: Option<PathBuf>,
    /// Explicitly unencrypted DICOM.
    pub plain: bool,
}

/// What `vcfd provision` was asked to do.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    pub root: PathBuf,
    /// Factory serial; generated when absent.
    pub serial: Option<String>,
    pub ae_title: String,
    pub listen: SocketAddr,
    pub allowed_calling_ae_titles: Vec<String>,
    pub allowed_sources: Vec<IpNet>,
    /// State folder as the running box sees it (not prefixed with `root`).
    pub state_dir: PathBuf,
    pub pacs: Option<PacsSite>,
    /// Organisation (O) in the certificate subject.
    pub organization: Option<String>,
    /// Also write a self-signed client certificate valid this many days (tests, labs).
    pub self_signed_days: Option<u32>,
    pub force: bool,
    /// System user the daemon runs as; the key and config are handed to it when it exists.
    pub service_user: String,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub serial: String,
    pub config: PathBuf,
    pub key: PathBuf,
    pub csr: PathBuf,
    pub cert: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Things the admin should know (ownership not changed, ...).
    pub notes: Vec<String>,
}

/// Creates the identity and the config. Nothing is written unless every input is valid, and an
/// existing identity is left untouched unless `force`.
pub fn provision(opts: &ProvisionOptions) -> Result<Provisioned> {
    let layout = Layout::new(&opts.root);
    let serial = match &opts.serial {
        Some(s) => {
            check_serial(s).map_err(|m| Error::Provision(format!("--serial {m}")))?;
            s.clone()
        }
        None => generate_serial()?,
    };
    if let Some(days) = opts.self_signed_days {
        if !(1..=3650).contains(&days) {
            return Err(Error::Provision(format!(
                "self-signed validity of {days} days is outside 1..=3650"
            )));
        }
    }

    // Validate the CA before anything is written: a wrong file here is the commonest mistake.
    let ca_pem = match opts.pacs.as_ref().and_then(|p| p.ca.as_ref()) {
        Some(src) => {
            config::load_root_store(src)?;
            Some(std::fs::read(src).map_err(|e| Error::io(src, e))?)
        }
        None => None,
    };
    let text = fill_template(opts, &serial, &generate_token()?)?;
    let mut check = Config::from_toml_str(&text)?;
    check.resolve_paths(&layout.config_dir());
    let problems = check.validate();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(Error::Provision(format!(
            "the resulting config would be invalid:\n  {}",
            list.join("\n  ")
        )));
    }

    let existing: Vec<PathBuf> = layout
        .identity_files()
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !opts.force {
        return Err(Error::IdentityExists { existing });
    }

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Error::Provision(format!("key generation: {e}")))?;
    let params = client_cert_params(&serial, opts.organization.as_deref(), opts.self_signed_days)?;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| Error::Provision(format!("certificate signing request: {e}")))?;
    let cert = match opts.self_signed_days {
        Some(_) => Some(
            params
                .self_signed(&key)
                .map_err(|e| Error::Provision(format!("self-signed certificate: {e}")))?
                .pem(),
        ),
        None => None,
    };

    create_dir(&layout.config_dir(), 0o750)?;
    create_dir(&layout.identity_dir(), 0o750)?;
    // The key first: a box left with a key but no config is re-provisioned with --force;
    // one with a config naming a missing key would fail later and less clearly.
    write_atomic(&layout.key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&layout.csr(), csr.as_bytes(), 0o644)?;
    match &cert {
        Some(pem) => write_atomic(&layout.cert(), pem.as_bytes(), 0o644)?,
        // A certificate for the old key would no longer match.
        None => remove_if_exists(&layout.cert())?,
    }
    if let Some(pem) = &ca_pem {
        write_atomic(&layout.pacs_ca(), pem, 0o644)?;
    }
    write_atomic(&layout.config(), text.as_bytes(), 0o640)?;

    let mut notes = Vec::new();
    hand_to_service_user(&layout, &opts.service_user, &mut notes);
    Ok(Provisioned {
        serial,
        config: layout.config(),
        key: layout.key(),
        csr: layout.csr(),
        cert: cert.map(|_| layout.cert()),
        ca: ca_pem.map(|_| layout.pacs_ca()),
        notes,
    })
}

/// Subject CN = serial (what PACS admins see in their logs), OU = vcfd, EKU clientAuth.
fn client_cert_params(
    serial: &str,
    organization: Option<&str>,
    days: Option<u32>,
) -> Result<rcgen::CertificateParams> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, serial);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, crate::PRODUCT_NAME);
    if let Some(o) = organization.filter(|o| !o.trim().is_empty()) {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, o.trim());
    }
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if let Some(days) = days {
        let now = time::OffsetDateTime::now_utc();
        // A little slack for a PACS whose clock runs behind.
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days));
    }
    Ok(params)
}

/// Fills the documented template with the site's values, keeping every comment.
fn fill_template(opts: &ProvisionOptions, serial: &str, token: &str) -> Result<String> {
    use toml_edit::{Array, DocumentMut, Item, Value};
    let mut doc: DocumentMut = CONFIG_TEMPLATE
        .parse()
        .map_err(|e| Error::Provision(format!("config template: {e}")))?;

    fn set(doc: &mut DocumentMut, section: &str, key: &str, mut v: Value) -> Result<()> {
        let table = doc
            .get_mut(section)
            .and_then(Item::as_table_mut)
            .ok_or_else(|| Error::Provision(format!("config template has no [{section}]")))?;
        match table.get_mut(key).and_then(Item::as_value_mut) {
            Some(old) => {
                *v.decor_mut() = old.decor().clone();
                *old = v;
            }
            None => {
                table.insert(key, Item::Value(v));
            }
        }
        Ok(())
    }
    let strings =
        |items: &[String]| Value::Array(items.iter().map(String::as_str).collect::<Array>());

    for ae in std::iter::once(&opts.ae_title).chain(&opts.allowed_calling_ae_titles) {
        check_ae_title(ae).map_err(Error::Provision)?;
    }
    let sources: Vec<String> = opts
        .allowed_sources
        .iter()
        .map(ToString::to_string)
        .collect();
    set(&mut doc, "appliance", "serial", serial.into())?;
    set(&mut doc, "scp", "listen", opts.listen.to_string().into())?;
    set(&mut doc, "scp", "ae_title", opts.ae_title.as_str().into())?;
    set(
        &mut doc,
        "scp",
        "allowed_calling_ae_titles",
        strings(&opts.allowed_calling_ae_titles),
    )?;
    set(&mut doc, "scp", "allowed_sources", strings(&sources))?;
    let state = opts
        .state_dir
        .to_str()
        .ok_or_else(|| Error::Provision("--state-dir is not valid UTF-8".into()))?;
    set(&mut doc, "storage", "state_dir", state.into())?;
    set(&mut doc, "http", "ack_token", token.into())?;

    if let Some(p) = &opts.pacs {
        let mut t = toml_edit::Table::new();
        t.insert("name", toml_edit::value(p.name.as_str()));
        t.insert("host", toml_edit::value(p.host.as_str()));
        t.insert("port", toml_edit::value(i64::from(p.port)));
        t.insert(
            "called_ae_title",
            toml_edit::value(p.called_ae_title.as_str()),
        );
        if p.plain {
            if p.ca.is_some() {
                return Err(Error::Provision(
                    "--pacs-plain and --pacs-ca contradict each other".into(),
                ));
            }
            t.insert("transport", toml_edit::value("plain"));
        } else {
            if p.ca.is_none() {
                return Err(Error::Provision(
                    "a TLS PACS needs --pacs-ca (the CA that signed the PACS certificate); \
                     use --pacs-plain only for a PACS that cannot do TLS"
                        .into(),
                ));
            }
            t.insert("transport", toml_edit::value("tls"));
            // Relative to the config's folder: valid whatever root it was provisioned into.
            t.insert("ca", toml_edit::value("pacs-ca.pem"));
            t.insert("client_cert", toml_edit::value("identity/client.crt"));
            t.insert("client_key", toml_edit::value("identity/client.key"));
        }
        // Move the commented example above the real destination so the file reads in order.
        let trailing = doc.trailing().as_str().unwrap_or("").to_string();
        doc.set_trailing("");
        t.decor_mut().set_prefix(format!(
            "{trailing}\n# Destination written by `vcfd provision`.\n"
        ));
        let mut aot = toml_edit::ArrayOfTables::new();
        aot.push(t);
        doc.insert("pacs", Item::ArrayOfTables(aot));
    }
    Ok(doc.to_string())
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Provision("the system random generator failed".into()))?;
    Ok(buf)
}

/// `VCF-` and 10 hex digits: 40 random bits make a collision within a fleet negligible.
fn generate_serial() -> Result<String> {
    let b: [u8; 5] = random_bytes()?;
    Ok(format!("VCF-{}", hex_upper(&b)))
}

fn generate_token() -> Result<String> {
    let b: [u8; 24] = random_bytes()?;
    Ok(hex_upper(&b).to_ascii_lowercase())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn create_dir(dir: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(dir, e))
}

/// Temp file created with its final mode (a key is never readable by others, not even
/// briefly), synced, renamed over the target, directory synced.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::io(path, e))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// The daemon runs as `user`, not root: it must be able to read its key (0600, owned by it)
/// and config (0640, its group). Looks the user up in `<root>/etc/passwd` and `group` (where
/// sysusers.d puts system users), so it also works on a staging root.
fn hand_to_service_user(layout: &Layout, user: &str, notes: &mut Vec<String>) {
    let id_of = |file: &str, field: usize| -> Option<u32> {
        let text = std::fs::read_to_string(layout.root.join(file)).ok()?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&user) && f.len() > field)
            .and_then(|f| f[field].parse().ok())
    };
    let (Some(uid), Some(gid)) = (id_of("etc/passwd", 2), id_of("etc/group", 2)) else {
        notes.push(format!(
            "user {user:?} not found under {}; key and config keep the current owner \
             (systemd-tmpfiles fixes ownership on the box: provisioning/tmpfiles.d/vcfd.conf)",
            layout.root.display()
        ));
        return;
    };
    let plan = [
        (layout.config_dir(), None),
        (layout.identity_dir(), None),
        (layout.config(), None),
        (layout.key(), Some(uid)),
    ];
    for (path, owner) in plan {
        if let Err(e) = std::os::unix::fs::chown(&path, owner, Some(gid)) {
            notes.push(format!(
                "could not hand {} to {user}: {e} (run provisioning as root)",
                path.display()
            ));
        }
    }
}

/// What an admin needs to know about a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// Whole days until expiry; negative once expired.
    pub days_left: i64,
    /// Inside its validity period now.
    pub valid_now: bool,
    pub is_ca: bool,
}

/// Parses one DER certificate for subject, issuer and validity.
pub fn inspect_certificate(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| Error::Pem {
        path: path.to_path_buf(),
        reason: format!("not an X.509 certificate: {e}"),
    })?;
    let validity = cert.validity();
    let now = time::OffsetDateTime::now_utc();
    let days_left = (validity.not_after.to_datetime() - now).whole_days();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        days_left,
        valid_now: validity.is_valid(),
        is_ca: cert.is_ca(),
    })
}

/// Whether `key` is the private key of the first certificate of `chain`.
pub fn check_key_matches(
    cert_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key_path: &Path,
    key: PrivateKeyDer<'static>,
) -> Result<()> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| Error::Pem {
            path: key_path.to_path_buf(),
            reason: format!("unsupported private key: {e}"),
        })?;
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .map_err(|e| Error::Pem {
            path: cert_path.to_path_buf(),
            reason: format!(
                "does not belong to the private key {}: {e}",
                key_path.display()
            ),
        })
}

/// Whether a private key file is readable by anyone but its owner.
pub fn key_mode_problem(path: &Path) -> Result<Option<String>> {
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .permissions()
        .mode();
    Ok((mode & 0o077 != 0).then(|| {
        format!(
            "mode {:04o}: readable by others; run chmod 600 {}",
            mode & 0o7777,
            path.display()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(root: &Path) -> ProvisionOptions {
        ProvisionOptions {
            root: root.to_path_buf(),
            serial: Some("VCF-TEST1".into()),
            ae_title: "VCFD_SITE".into(),
            listen: "0.0.0.0:104".parse().unwrap(),
            allowed_calling_ae_titles: vec!["CT1".into(), "CT2".into()],
            allowed_sources: vec!["10.1.0.0/16".parse().unwrap()],
            state_dir: "/var/lib/vcfd".into(),
            pacs: None,
            organization: Some("Example Hospital".into()),
            self_signed_days: Some(30),
            force: false,
            service_user: "vcfd".into(),
        }
    }

    #[test]
    fn provisioned_config_keeps_docs_and_site_values() {
        let dir = tempfile::tempdir().unwrap();
        let out = provision(&options(dir.path())).unwrap();
        let text = std::fs::read_to_string(&out.config).unwrap();
        assert!(
            text.contains("# AE title of this box"),
            "documentation lost"
        );
        let c = Config::load(&out.config).unwrap();
        assert_eq!(c.appliance.serial, "VCF-TEST1");
        assert_eq!(c.scp.ae_title, "VCFD_SITE");
        assert_eq!(c.scp.allowed_calling_ae_titles, ["CT1", "CT2"]);
        assert_eq!(c.scp.allowed_sources, ["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(c.http.ack_token.len(), 48);
        assert!(c.pacs.is_empty());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.key), 0o600);
        assert_eq!(mode(&out.config), 0o640);
        // The self-signed certificate belongs to the key and carries the serial.
        let cert = out.cert.unwrap();
        let chain = config::read_certificates(&cert).unwrap();
        let info = inspect_certificate(&cert, &chain[0]).unwrap();
        assert!(info.subject.contains("CN=VCF-TEST1"), "{}", info.subject);
        assert!(info.valid_now);
        assert!((29..=30).contains(&info.days_left), "{}", info.days_left);
        let key = config::read_private_key(&out.key).unwrap();
        check_key_matches(&cert, chain, &out.key, key).unwrap();
        let csr = std::fs::read_to_string(&out.csr).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn a_foreign_key_does_not_match() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let pa = provision(&options(a.path())).unwrap();
        let pb = provision(&options(b.path())).unwrap();
        let chain = config::read_certificates(pa.cert.as_ref().unwrap()).unwrap();
        let key = config::read_private_key(&pb.key).unwrap();
        let err = check_key_matches(pa.cert.as_ref().unwrap(), chain, &pb.key, key).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn invalid_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.allowed_calling_ae_titles
            .push("MUCH TOO LONG AE TITLE".into());
        assert!(provision(&o).is_err());
        let mut o = options(dir.path());
        o.pacs = Some(PacsSite {
            name: "main".into(),
            host: "pacs".into(),
            port: 2762,
            called_ae_title: "PACS".into(),
            ca: None,
            plain: false,
        });
        let err = provision(&o).unwrap_err();
        assert!(err.to_string().contains("--pacs-ca"), "{err}");
        assert!(!dir.path().join("etc").exists());
    }

    #[test]
    fn plain_pacs_is_written_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = options(dir.path());
        o.pacs = Some(PacsSite {
            name: "lab".into(),
            host: "10.1.2.3".into(),
            port: 104,
            called_ae_title: "LABPACS".into(),
            ca: None,
            plain: true,
        });
        let out = provision(&o).unwrap();
        let c = Config::load(&out.config).unwrap();
        assert_eq!(c.pacs.len(), 1);
        assert_eq!(c.pacs[0].transport, config::Transport::Plain);
        assert_eq!(c.pacs[0].address(), "LABPACS@10.1.2.3:104");
    }

    #[test]
    fn generated_serials_are_well_formed_and_differ() {
        let a = generate_serial().unwrap();
        let b = generate_serial().unwrap();
        assert!(check_serial(&a).is_ok());
        assert_eq!(a.len(), 14);
        assert_ne!(a, b);
    }
}
