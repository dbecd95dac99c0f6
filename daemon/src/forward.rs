//! Delivery of results to PACS: C-STORE SCU over TLS 1.2/1.3 (rustls, ring) with mutual
//! authentication, or plain TCP when a destination says `transport = "plain"`.
//!
//! Each failure is classified once, where it happens, into [`Retry::Transient`] (connection
//! refused, timeout, TLS handshake cut short, association rejected transiently, A7xx "out of
//! resources") or [`Retry::Permanent`] (certificate invalid, our certificate refused, AE title
//! not recognised, SOP class or transfer syntax rejected, other error statuses). Transient ones
//! are retried forever with exponential backoff, jitter and a cap; permanent ones go to dead
//! letters with an alert, since retrying cannot help until someone changes something.
//!
//! Exactly once per destination: the delivery is recorded and the outbox entry removed in one
//! sled transaction after the PACS answered Success, and an entry already recorded as delivered
//! is never sent again. The one window DICOM cannot close is a crash after the PACS stored the
//! instance but before its Success reached us: the instance is then sent again with the same SOP
//! Instance UID, which PACS treat as the same object.

use crate::config::{Config, PacsConfig, Transport};
use crate::store::{now_ms, OutboxRec, Store};
use crate::{Error, Result};
use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{
    AssociationRJResult, AssociationRJServiceUserReason, AssociationRJSource, PDataValue,
    PDataValueType, PresentationContextResultReason,
};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Whether a failed delivery may succeed later without anyone changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retry {
    Transient,
    Permanent,
}

impl Error {
    /// Whether retrying this error later can help (only delivery errors say so; everything
    /// else, e.g. a local file that vanished, is permanent).
    pub fn retry(&self) -> Retry {
        match self {
            Error::Delivery { retry, .. } => *retry,
            Error::Store(_) => Retry::Transient,
            _ => Retry::Permanent,
        }
    }
}

/// Exponential backoff with equal jitter: `d/2 + random(0..d/2)`, `d = initial * 2^attempts`
/// capped at `max`, so retries of many boxes do not synchronise.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempts.min(20))
            .min(self.max);
        let half = exp / 2;
        let jitter = half.mul_f64(random_unit());
        half + jitter
    }
}

/// A uniform number in [0, 1) without a random-number crate: std's per-process SipHash keys
/// plus the clock are plenty for jitter.
fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One configured PACS, ready to connect (TLS material loaded once).
pub struct Destination {
    pub pacs: PacsConfig,
    calling_ae: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl Destination {
    pub fn new(config: &Config, pacs: &PacsConfig) -> Result<Destination> {
        Ok(Destination {
            calling_ae: pacs.calling_ae_title(config).to_string(),
            tls: pacs.tls_client_config()?,
            timeout: Duration::from_secs(config.forward.timeout_s.max(1)),
            pacs: pacs.clone(),
        })
    }

    fn err(&self, retry: Retry, reason: String) -> Error {
        Error::Delivery {
            destination: self.pacs.name.clone(),
            retry,
            reason,
        }
    }
}

/// A DICOM file split into what C-STORE needs.
struct Payload {
    sop_class: String,
    sop_instance: String,
    transfer_syntax: String,
    data_set: Vec<u8>,
}

fn read_payload(entry: &OutboxRec) -> Result<Payload> {
    let bytes = std::fs::read(&entry.path).map_err(|e| Error::io(&entry.path, e))?;
    let bad = |reason: String| Error::Dicom {
        path: entry.path.clone(),
        reason,
    };
    let mut rest = bytes
        .get(128..)
        .ok_or_else(|| bad("shorter than a DICOM preamble".into()))?;
    let meta = dicom_object::FileMetaTable::from_reader(&mut rest)
        .map_err(|e| bad(format!("file meta: {e}")))?;
    Ok(Payload {
        sop_class: meta.media_storage_sop_class_uid().to_string(),
        sop_instance: meta.media_storage_sop_instance_uid().to_string(),
        transfer_syntax: meta.transfer_syntax().to_string(),
        data_set: rest.to_vec(),
    })
}

/// How a failed association or exchange should be handled, with a message in admin terms.
fn classify(dest: &Destination, e: &dicom_ul::association::Error) -> Error {
    use dicom_ul::association::Error as E;
    let detail = crate::error::error_chain(e);
    let plain = dest.pacs.transport == Transport::Plain;
    let (retry, hint): (Retry, String) = match e {
        E::Rejected { association_rj, .. } => {
            let permanent = association_rj.result == AssociationRJResult::Permanent;
            let hint = match &association_rj.source {
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CallingAETitleNotRecognized,
                ) => format!(
                    "the PACS does not know our AE title {:?}: register it there",
                    dest.calling_ae
                ),
                AssociationRJSource::ServiceUser(
                    AssociationRJServiceUserReason::CalledAETitleNotRecognized,
                ) => format!(
                    "the PACS is not {:?}: check called_ae_title",
                    dest.pacs.called_ae_title
                ),
                _ => "association rejected".into(),
            };
            (
                if permanent {
                    Retry::Permanent
                } else {
                    Retry::Transient
                },
                hint,
            )
        }
        E::TlsNotSupported => (
            Retry::Permanent,
            "the PACS answered with TLS: it accepts TLS only; set transport = \"tls\" with ca, \
             client_cert and client_key"
                .into(),
        ),
        E::NoAcceptedPresentationContexts { .. } => (
            Retry::Permanent,
            "the PACS accepts none of the SOP classes / transfer syntaxes offered".into(),
        ),
        _ => tls_or_io(dest, e, plain),
    };
    dest.err(
        retry,
        format!(
            "{} over {}: {detail} ({hint})",
            dest.pacs.address(),
            dest.pacs.transport
        ),
    )
}

/// Looks through the error chain for rustls and I/O causes.
fn tls_or_io(
    dest: &Destination,
    e: &(dyn std::error::Error + 'static),
    plain: bool,
) -> (Retry, String) {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t) = tls {
            return match t {
                rustls::Error::InvalidCertificate(c) => (
                    Retry::Permanent,
                    format!(
                        "the PACS certificate is not acceptable ({c:?}): is it signed by the CA \
                         in `ca`, valid now, and does it name {:?}?",
                        dest.pacs.tls_server_name()
                    ),
                ),
                rustls::Error::AlertReceived(a) => (
                    Retry::Permanent,
                    format!(
                        "the PACS refused the TLS connection ({a:?}): it probably does not trust \
                         this box's client certificate"
                    ),
                ),
                other => (Retry::Transient, format!("TLS failure: {other}")),
            };
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let plain_hint = if plain {
                " — this destination uses transport = \"plain\"; a TLS-only PACS drops plain \
                 DICOM like this: set transport = \"tls\" with ca, client_cert and client_key"
            } else {
                ""
            };
            let hint = match io.kind() {
                K::ConnectionRefused => "nothing listens there: PACS down or wrong port".into(),
                K::TimedOut | K::WouldBlock => "no answer in time".into(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                    format!("the PACS closed the connection{plain_hint}")
                }
                _ => format!("network error{plain_hint}"),
            };
            return (Retry::Transient, hint);
        }
        cur = err.source();
    }
    let hint = if plain {
        "the PACS did not speak DICOM back; a TLS-only PACS answers plain DICOM like this: set \
         transport = \"tls\""
            .to_string()
    } else {
        "protocol error".to_string()
    };
    (Retry::Transient, hint)
}

/// Status classes of C-STORE-RSP (PS3.4 B.2.3): success and warnings are delivered.
fn store_status(dest: &Destination, status: u16) -> Result<()> {
    match status {
        0x0000 | 0x0001 | 0xB000 | 0xB006 | 0xB007 => Ok(()),
        s if s & 0xFF00 == 0xA700 => Err(dest.err(
            Retry::Transient,
            format!("the PACS is out of resources (status 0x{s:04X})"),
        )),
        0x0122 => Err(dest.err(
            Retry::Permanent,
            "the PACS refused the SOP class (status 0x0122)".into(),
        )),
        s => Err(dest.err(
            Retry::Permanent,
            format!("the PACS refused the instance (status 0x{s:04X})"),
        )),
    }
}

trait Assoc {
    fn send(&mut self, pdu: &Pdu) -> std::result::Result<(), dicom_ul::association::Error>;
    fn receive(&mut self) -> std::result::Result<Pdu, dicom_ul::association::Error>;
    fn send_data(&mut self, pc_id: u8, data: &[u8]) -> std::io::Result<()>;
    fn contexts(&self) -> Vec<(u8, String, String)>;
    fn release(self: Box<Self>);
}

impl<S> Assoc for ClientAssociation<S>
where
    S: dicom_ul::association::CloseSocket + std::io::Read + std::io::Write,
{
    fn send(&mut self, pdu: &Pdu) -> std::result::Result<(), dicom_ul::association::Error> {
        ClientAssociation::send(self, pdu)
    }
    fn receive(&mut self) -> std::result::Result<Pdu, dicom_ul::association::Error> {
        ClientAssociation::receive(self)
    }
    fn send_data(&mut self, pc_id: u8, data: &[u8]) -> std::io::Result<()> {
        let mut w = self.send_pdata(pc_id);
        w.write_all(data)?;
        w.finish()
    }
    fn contexts(&self) -> Vec<(u8, String, String)> {
        self.presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.id,
                    pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    pc.transfer_syntax.trim_end_matches('\0').to_string(),
                )
            })
            .collect()
    }
    fn release(self: Box<Self>) {
        let _ = ClientAssociation::release(*self);
    }
}

fn connect(dest: &Destination, payloads: &[&Payload]) -> Result<Box<dyn Assoc>> {
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(dest.calling_ae.as_str())
        .called_ae_title(dest.pacs.called_ae_title.as_str())
        .connection_timeout(dest.timeout)
        .read_timeout(dest.timeout)
        .write_timeout(dest.timeout);
    let mut proposed = std::collections::BTreeSet::new();
    for p in payloads {
        if proposed.insert((p.sop_class.clone(), p.transfer_syntax.clone())) {
            opts = opts
                .with_presentation_context(p.sop_class.clone(), vec![p.transfer_syntax.clone()]);
        }
    }
    let addr = (dest.pacs.host.as_str(), dest.pacs.port);
    match &dest.tls {
        None => Ok(Box::new(
            opts.establish(addr).map_err(|e| classify(dest, &e))?,
        )),
        Some(tls) => Ok(Box::new(
            opts.tls_config(tls.clone())
                .server_name(dest.pacs.tls_server_name())
                .establish_tls(addr)
                .map_err(|e| classify(dest, &e))?,
        )),
    }
}

/// One C-STORE; on failure also says whether the association can still be used.
fn c_store(
    dest: &Destination,
    a: &mut dyn Assoc,
    p: &Payload,
    message_id: u16,
) -> std::result::Result<(), (Error, bool)> {
    let broken = |e: Error| (e, false);
    let Some(&(pc_id, _, _)) = a
        .contexts()
        .iter()
        .find(|(_, sc, ts)| *sc == p.sop_class && *ts == p.transfer_syntax)
    else {
        return Err((
            dest.err(
                Retry::Permanent,
                format!(
                    "the PACS rejected SOP class {} in transfer syntax {}",
                    p.sop_class, p.transfer_syntax
                ),
            ),
            true,
        ));
    };
    let uid = |s: &str| {
        let mut s = s.to_string();
        if s.len() % 2 == 1 {
            s.push('\0');
        }
        PrimitiveValue::from(s)
    };
    let cmd = InMemDicomObject::command_from_element_iter([
        DataElement::new(tags::AFFECTED_SOP_CLASS_UID, VR::UI, uid(&p.sop_class)),
        DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0001])),
        DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [message_id])),
        DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0x0000])),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [0x0000]),
        ),
        DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            uid(&p.sop_instance),
        ),
    ]);
    let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut bytes = Vec::new();
    cmd.write_dataset_with_ts(&mut bytes, &ts)
        .map_err(|e| broken(dest.err(Retry::Permanent, format!("encoding C-STORE-RQ: {e}"))))?;
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: bytes,
        }],
    })
    .map_err(|e| broken(classify(dest, &e)))?;
    a.send_data(pc_id, &p.data_set)
        .map_err(|e| broken(dest.err(Retry::Transient, format!("sending the data set: {e}"))))?;
    let mut command = Vec::new();
    loop {
        match a.receive().map_err(|e| broken(classify(dest, &e)))? {
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
                return Err(broken(dest.err(
                    Retry::Transient,
                    format!("the PACS aborted the association ({source:?})"),
                )))
            }
            _ => {
                return Err(broken(dest.err(
                    Retry::Transient,
                    "unexpected PDU instead of C-STORE-RSP".into(),
                )))
            }
        }
    }
    let rsp = InMemDicomObject::read_dataset_with_ts(&command[..], &ts)
        .map_err(|e| broken(dest.err(Retry::Transient, format!("undecodable C-STORE-RSP: {e}"))))?;
    let status = rsp
        .element(tags::STATUS)
        .ok()
        .and_then(|e| e.to_int::<u16>().ok())
        .ok_or_else(|| broken(dest.err(Retry::Transient, "C-STORE-RSP without status".into())))?;
    // A refusing status leaves the association usable for the next instance.
    store_status(dest, status).map_err(|e| (e, true))
}

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    pub delivered: usize,
    pub retried: usize,
    pub dead: usize,
}

/// Delivers `entries` (all for `dest`) over one association; every entry ends delivered,
/// rescheduled or dead-lettered in sled.
pub fn deliver(
    store: &Store,
    dest: &Destination,
    entries: Vec<OutboxRec>,
    backoff: Backoff,
) -> Result<RoundStats> {
    let mut stats = RoundStats::default();
    let mut todo = Vec::new();
    for e in entries {
        if store.is_delivered(&e.destination, &e.sop_instance_uid)? {
            // Delivered before a crash removed nothing: finish the bookkeeping, send nothing.
            store.record_delivery(&e)?;
            continue;
        }
        match read_payload(&e) {
            Ok(p) => todo.push((e, p)),
            Err(err) => {
                store.dead_letter(&e, &err.to_string())?;
                stats.dead += 1;
            }
        }
    }
    if todo.is_empty() {
        return Ok(stats);
    }
    let fail = |store: &Store, e: &OutboxRec, err: &Error, stats: &mut RoundStats| -> Result<()> {
        match err.retry() {
            Retry::Transient => {
                let next = now_ms() + backoff.delay(e.attempts).as_millis() as u64;
                store.reschedule(e, &err.to_string(), next)?;
                stats.retried += 1;
            }
            Retry::Permanent => {
                store.dead_letter(e, &err.to_string())?;
                stats.dead += 1;
            }
        }
        Ok(())
    };
    let payloads: Vec<&Payload> = todo.iter().map(|(_, p)| p).collect();
    let mut assoc = match connect(dest, &payloads) {
        Ok(a) => a,
        Err(err) => {
            log::warn!(stage = "forward"; "{err}");
            for (e, _) in &todo {
                fail(store, e, &err, &mut stats)?;
            }
            return Ok(stats);
        }
    };
    let mut broken: Option<Error> = None;
    for (i, (e, p)) in todo.iter().enumerate() {
        if let Some(err) = &broken {
            fail(store, e, err, &mut stats)?;
            continue;
        }
        match c_store(dest, assoc.as_mut(), p, (i % 65535) as u16 + 1) {
            Ok(()) => {
                store.record_delivery(e)?;
                stats.delivered += 1;
                log::info!(
                    study = crate::spool::uid_hash(&e.study_uid).as_str(), stage = "forward";
                    "delivered {} to {}", crate::spool::uid_hash(&e.sop_instance_uid), dest.pacs.name
                );
            }
            Err((err, usable)) => {
                log::warn!(stage = "forward"; "{err}");
                fail(store, e, &err, &mut stats)?;
                if !usable {
                    broken = Some(err);
                }
            }
        }
    }
    if broken.is_none() {
        assoc.release();
    }
    Ok(stats)
}

/// Outbox entries due now, grouped by destination, at most `batch` per destination.
pub fn due(store: &Store, batch: usize) -> Result<BTreeMap<String, Vec<OutboxRec>>> {
    let now = now_ms();
    let mut out: BTreeMap<String, Vec<OutboxRec>> = BTreeMap::new();
    for e in store.outbox()? {
        if e.next_attempt_ms <= now {
            let v = out.entry(e.destination.clone()).or_default();
            if v.len() < batch {
                v.push(e);
            }
        }
    }
    Ok(out)
}

/// One delivery round over every destination with due entries (blocking).
pub fn round(store: &Store, dests: &[Arc<Destination>], backoff: Backoff) -> Result<RoundStats> {
    let mut total = RoundStats::default();
    for (name, entries) in due(store, 64)? {
        let Some(dest) = dests.iter().find(|d| d.pacs.name == name) else {
            // The destination was removed from the config: nothing can deliver these.
            for e in entries {
                store.dead_letter(&e, "destination no longer configured")?;
                total.dead += 1;
            }
            continue;
        };
        let s = deliver(store, dest, entries, backoff)?;
        total.delivered += s.delivered;
        total.retried += s.retried;
        total.dead += s.dead;
    }
    Ok(total)
}

/// The forwarder task: a round whenever woken (new results) or every second, until shutdown.
pub async fn run(
    store: Store,
    dests: Vec<Arc<Destination>>,
    backoff: Backoff,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let dests = Arc::new(dests);
    loop {
        let (s, d) = (store.clone(), dests.clone());
        match tokio::task::spawn_blocking(move || round(&s, &d, backoff)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("forwarding: {e}"),
            Err(e) => log::error!("forwarding task: {e}"),
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(60),
        };
        for attempts in 0..40 {
            let d = b.delay(attempts);
            let exp = (2u64 << attempts.min(20)).min(60);
            assert!(d >= Duration::from_secs(exp) / 2, "{attempts}: {d:?}");
            assert!(d <= Duration::from_secs(exp), "{attempts}: {d:?}");
        }
        let distinct: std::collections::HashSet<_> = (0..20).map(|_| b.delay(10)).collect();
        assert!(distinct.len() > 1, "no jitter");
    }

    #[test]
    fn statuses_are_classified() {
        let config = Config::default();
        let pacs = PacsConfig {
            name: "p".into(),
            host: "127.0.0.1".into(),
            port: 1,
            called_ae_title: "P".into(),
            calling_ae_title: None,
            transport: Transport::Plain,
            ca: None,
            client_cert: None,
            client_key: None,
            server_name: None,
        };
        let d = Destination::new(&config, &pacs).unwrap();
        assert!(store_status(&d, 0x0000).is_ok());
        assert!(store_status(&d, 0xB000).is_ok());
        assert_eq!(
            store_status(&d, 0xA700).unwrap_err().retry(),
            Retry::Transient
        );
        assert_eq!(
            store_status(&d, 0xA702).unwrap_err().retry(),
            Retry::Transient
        );
        assert_eq!(
            store_status(&d, 0x0122).unwrap_err().retry(),
            Retry::Permanent
        );
        assert_eq!(
            store_status(&d, 0xA900).unwrap_err().retry(),
            Retry::Permanent
        );
        assert_eq!(
            store_status(&d, 0xC000).unwrap_err().retry(),
            Retry::Permanent
        );
    }

    #[test]
    fn refused_connection_is_transient() {
        // Bind then drop a listener: the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config::default();
        let pacs = PacsConfig {
            name: "p".into(),
            host: "127.0.0.1".into(),
            port,
            called_ae_title: "P".into(),
            calling_ae_title: None,
            transport: Transport::Plain,
            ca: None,
            client_cert: None,
            client_key: None,
            server_name: None,
        };
        let d = Destination::new(&config, &pacs).unwrap();
        let p = Payload {
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance: "1.2.3".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            data_set: vec![],
        };
        let err = connect(&d, &[&p]).err().unwrap();
        assert_eq!(err.retry(), Retry::Transient, "{err}");
        assert!(err.to_string().contains("nothing listens"), "{err}");
    }
}
