//! `vcfd check`: is this box ready? Validates the config, the certificates and keys it names,
//! and C-ECHOes every PACS, printing one clear line per finding. Exits non-zero on any failure
//! so it can gate `systemctl start` or a support script.

use anyhow::{anyhow, Context};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vcfd::config::{self, Config, PacsConfig, Transport, VERIFICATION_SOP_CLASS};
use vcfd::provision;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file to check.
    #[arg(long)]
    pub config: PathBuf,
    /// Skip the C-ECHO of each PACS (offline checks only).
    #[arg(long)]
    pub no_echo: bool,
    /// Network timeout of each C-ECHO, seconds; default: forward.timeout_s of the config.
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Certificates expiring sooner than this are flagged so there is time to renew them.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Collects findings; only failures make the check fail.
#[derive(Default)]
struct Report {
    failures: usize,
    warnings: usize,
}

impl Report {
    fn ok(&mut self, what: &str) {
        println!("  ok    {what}");
    }
    fn warn(&mut self, what: &str) {
        self.warnings += 1;
        println!("  WARN  {what}");
    }
    fn fail(&mut self, what: &str) {
        self.failures += 1;
        println!("  FAIL  {what}");
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut r = Report::default();
    println!("config {}", args.config.display());
    let config = Config::load_unvalidated(&args.config)?;
    let problems = config.validate();
    if problems.is_empty() {
        r.ok(&format!(
            "valid: box {}, SCP {} on {}, {} PACS destination(s)",
            if config.appliance.serial.is_empty() {
                "(no serial: unprovisioned)"
            } else {
                &config.appliance.serial
            },
            config.scp.ae_title,
            config.scp.listen,
            config.pacs.len()
        ));
    }
    for p in &problems {
        r.fail(&p.to_string());
    }
    let state = &config.storage.state_dir;
    if state.is_dir() {
        r.ok(&format!("state folder {} exists", state.display()));
    } else {
        println!(
            "  note  state folder {} does not exist yet (the daemon, systemd's StateDirectory= \
             or tmpfiles.d create it)",
            state.display()
        );
    }
    if config.pacs.is_empty() {
        println!(
            "  note  no PACS: results stay on the box under {}",
            state.join("results").display()
        );
    }

    for pacs in &config.pacs {
        println!(
            "pacs {:?} ({}, {})",
            pacs.name,
            pacs.address(),
            pacs.transport
        );
        let tls_ok = match pacs.transport {
            Transport::Tls => check_tls_material(pacs, &mut r),
            Transport::Plain => {
                r.warn("plain TCP: images and reports cross the network unencrypted");
                true
            }
        };
        if args.no_echo {
            continue;
        }
        if !problems.is_empty() || !tls_ok {
            r.fail("C-ECHO not attempted: fix the problems above first");
            continue;
        }
        let timeout = Duration::from_secs(args.timeout.unwrap_or(config.forward.timeout_s).max(1));
        match echo(&config, pacs, timeout) {
            Ok(took) => r.ok(&format!(
                "C-ECHO answered Success in {} ms",
                took.as_millis()
            )),
            Err(e) => {
                let msg = format!("{e:#}");
                r.fail(&format!("C-ECHO: {msg}{}", hint(&msg)));
            }
        }
    }

    if r.failures > 0 {
        anyhow::bail!(
            "{} problem(s), {} warning(s) in {}",
            r.failures,
            r.warnings,
            args.config.display()
        );
    }
    println!("ready ({} warning(s))", r.warnings);
    Ok(())
}

/// CA, client certificate and key of one TLS destination; true when all are usable.
fn check_tls_material(pacs: &PacsConfig, r: &mut Report) -> bool {
    let before = r.failures;
    if let Some(ca) = &pacs.ca {
        match config::load_root_store(ca) {
            Ok(store) => {
                r.ok(&format!(
                    "CA {}: {} trust anchor(s)",
                    ca.display(),
                    store.len()
                ));
                if let Ok(certs) = config::read_certificates(ca) {
                    for der in &certs {
                        report_cert(ca, der, "CA", r);
                    }
                }
            }
            Err(e) => r.fail(&format!("CA: {e}")),
        }
    }
    let (Some(cert), Some(key)) = (&pacs.client_cert, &pacs.client_key) else {
        // validate() already reported the missing option.
        return false;
    };
    let key_der = match config::read_private_key(key) {
        Ok(k) => {
            match provision::key_mode_problem(key) {
                Ok(None) => r.ok(&format!("private key {}", key.display())),
                Ok(Some(m)) => r.fail(&format!("private key {}: {m}", key.display())),
                Err(e) => r.fail(&e.to_string()),
            }
            Some(k)
        }
        Err(e) => {
            r.fail(&format!("private key: {e}"));
            None
        }
    };
    if !cert.exists() {
        r.fail(&missing_cert_message(cert, key));
        return false;
    }
    match config::read_certificates(cert) {
        Ok(chain) => {
            report_cert(cert, &chain[0], "client certificate", r);
            if let Some(k) = key_der {
                match provision::check_key_matches(cert, chain, key, k) {
                    Ok(()) => r.ok("client certificate matches the private key"),
                    Err(e) => r.fail(&e.to_string()),
                }
            }
        }
        Err(e) => r.fail(&format!("client certificate: {e}")),
    }
    if r.failures == before {
        // Last word: would rustls itself accept this combination?
        if let Err(e) = pacs.tls_client_config() {
            r.fail(&e.to_string());
        }
    }
    r.failures == before
}

fn missing_cert_message(cert: &Path, key: &Path) -> String {
    let csr = key.with_file_name("client.csr");
    if csr.exists() {
        format!(
            "client certificate {} not installed yet: have {} signed by a CA the PACS trusts \
             and save the certificate (PEM) there",
            cert.display(),
            csr.display()
        )
    } else {
        format!("client certificate {} does not exist", cert.display())
    }
}

fn report_cert(
    path: &Path,
    der: &rustls::pki_types::CertificateDer<'_>,
    what: &str,
    r: &mut Report,
) {
    match provision::inspect_certificate(path, der) {
        Ok(info) => {
            let line = format!(
                "{what} {:?} valid {} .. {} ({} days left)",
                info.subject, info.not_before, info.not_after, info.days_left
            );
            if !info.valid_now {
                r.fail(&format!(
                    "{line}: NOT VALID NOW (expired or not yet valid; check the clock)"
                ));
            } else if info.days_left < EXPIRY_WARNING_DAYS {
                r.warn(&format!("{line}: renew soon"));
            } else {
                r.ok(&line);
            }
        }
        Err(e) => r.fail(&e.to_string()),
    }
}

/// One C-ECHO (Verification SOP class) over a fresh association, released afterwards.
fn echo(config: &Config, pacs: &PacsConfig, timeout: Duration) -> anyhow::Result<Duration> {
    use dicom_ul::ClientAssociationOptions;
    let start = Instant::now();
    let opts = ClientAssociationOptions::new()
        .calling_ae_title(pacs.calling_ae_title(config))
        .called_ae_title(pacs.called_ae_title.as_str())
        .with_abstract_syntax(VERIFICATION_SOP_CLASS)
        .connection_timeout(timeout)
        .read_timeout(timeout)
        .write_timeout(timeout);
    let addr = (pacs.host.as_str(), pacs.port);
    let what = || format!("{} over {}", pacs.address(), pacs.transport);
    match pacs.tls_client_config()? {
        None => {
            let mut a = opts.establish(addr).map_err(ul_error).with_context(what)?;
            let pc = accepted_context(a.presentation_contexts())?;
            verify(&mut a, pc)?;
            a.release().map_err(ul_error).context("release")?;
        }
        Some(tls) => {
            let mut a = opts
                .tls_config(tls)
                .server_name(pacs.tls_server_name())
                .establish_tls(addr)
                .map_err(ul_error)
                .with_context(what)?;
            let pc = accepted_context(a.presentation_contexts())?;
            verify(&mut a, pc)?;
            a.release().map_err(ul_error).context("release")?;
        }
    }
    Ok(start.elapsed())
}

fn accepted_context(pcs: &[dicom_ul::pdu::PresentationContextNegotiated]) -> anyhow::Result<u8> {
    use dicom_ul::pdu::PresentationContextResultReason::Acceptance;
    pcs.iter()
        .find(|pc| {
            pc.reason == Acceptance
                && pc.abstract_syntax.trim_end_matches('\0') == VERIFICATION_SOP_CLASS
        })
        .or_else(|| pcs.iter().find(|pc| pc.reason == Acceptance))
        .map(|pc| pc.id)
        .ok_or_else(|| {
            anyhow!("the PACS accepted the association but not the Verification SOP class")
        })
}

/// Sends C-ECHO-RQ and expects C-ECHO-RSP with status Success.
fn verify<S>(a: &mut dicom_ul::ClientAssociation<S>, pc_id: u8) -> anyhow::Result<()>
where
    S: dicom_ul::association::CloseSocket + std::io::Read + std::io::Write,
{
    use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dicom_ul::Pdu;

    const C_ECHO_RQ: u16 = 0x0030;
    const C_ECHO_RSP: u16 = 0x8030;
    const NO_DATA_SET: u16 = 0x0101;
    let message_id = 1u16;
    // UIDs are padded with NUL to an even length (PS3.5 9.1).
    let sop_class = format!("{VERIFICATION_SOP_CLASS}\0");
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class),
        ),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [C_ECHO_RQ])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
    ]);
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut data = Vec::new();
    cmd.write_dataset_with_ts(&mut data, &ts)
        .context("encoding C-ECHO-RQ")?;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data,
        }],
    })
    .map_err(ul_error)
    .context("sending C-ECHO-RQ")?;

    let mut command = Vec::new();
    loop {
        match a
            .receive()
            .map_err(ul_error)
            .context("waiting for C-ECHO-RSP")?
        {
            Pdu::PData { data } => {
                let mut last = false;
                for pdv in data {
                    if pdv.value_type == PDataValueType::Command {
                        command.extend_from_slice(&pdv.data);
                        last |= pdv.is_last;
                    }
                }
                if last {
                    break;
                }
            }
            Pdu::AbortRQ { source } => {
                anyhow::bail!("the PACS aborted the association ({source:?})")
            }
            other => anyhow::bail!("unexpected reply to C-ECHO-RQ: {other:?}"),
        }
    }
    let rsp =
        InMemDicomObject::read_dataset_with_ts(&command[..], &ts).context("decoding C-ECHO-RSP")?;
    let field = |tag| -> anyhow::Result<u16> {
        rsp.element(tag)
            .map_err(|e| anyhow!("C-ECHO-RSP without {tag}: {e}"))?
            .to_int::<u16>()
            .map_err(|e| anyhow!("C-ECHO-RSP {tag}: {e}"))
    };
    let command_field = field(tags::COMMAND_FIELD)?;
    if command_field != C_ECHO_RSP {
        anyhow::bail!("expected C-ECHO-RSP, got command 0x{command_field:04X}");
    }
    match field(tags::STATUS)? {
        0x0000 => Ok(()),
        s => anyhow::bail!("the PACS answered C-ECHO with status 0x{s:04X}"),
    }
}

/// The likely cause of common failures, in the admin's terms.
fn hint(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    if m.contains("connection refused") {
        " (nothing listens there: wrong host or port, or the PACS is down)"
    } else if m.contains("timed out") || m.contains("would block") {
        " (no answer: a firewall, a wrong address, or the PACS is overloaded)"
    } else if m.contains("unknownissuer") {
        " (the PACS certificate is not signed by the configured CA)"
    } else if m.contains("notvalidforname") {
        " (the PACS certificate does not name this host; set server_name)"
    } else if m.contains("unknownca")
        || m.contains("badcertificate")
        || m.contains("certificaterequired")
    {
        " (the PACS does not accept this box's client certificate: have the PACS trust its CA)"
    } else if m.contains("rejected") {
        " (check called_ae_title and that the PACS knows this box's AE title)"
    } else {
        ""
    }
}

/// dicom-ul errors print only their top level; [`vcfd::error::error_chain`] keeps the cause.
fn ul_error(e: dicom_ul::association::Error) -> anyhow::Error {
    anyhow!(vcfd::error::error_chain(&e))
}
