//! The DICOM receiver: C-ECHO and C-STORE SCP on tokio with `dicom-ul`.
//!
//! Accepts CT Image Storage and Enhanced CT Image Storage in the transfer syntaxes the loader
//! decodes (other presentation contexts are rejected one by one, so a modality sending CT plus
//! a dose report still gets its CT through). Peers are checked at association time: source
//! address, calling AE title and called AE title; refusals are logged with the reason.
//!
//! An instance is answered Success only after it is in the spool (fsynced, renamed) and in
//! sled (flushed): a Success the modality saw is never lost, whatever happens next.

use crate::config::ScpConfig;
use crate::error::error_chain;
use crate::spool::{uid_hash, Spool};
use crate::store::{now_ms, InstanceRec, Store};
use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::Association;
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValue, PDataValueType, PresentationContextNegotiated,
    PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";

/// Transfer syntaxes the loader decodes (uncompressed, deflate, JPEG, JPEG-LS, JPEG 2000,
/// RLE); dicom-ul further drops any that this build's registry cannot decode.
pub const TRANSFER_SYNTAXES: &[&str] = &[
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
];

/// DIMSE status codes we answer with (PS3.4 Annex B, PS3.7 Annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

const C_STORE_RQ: u16 = 0x0001;
const C_ECHO_RQ: u16 = 0x0030;
const NO_DATA_SET: u16 = 0x0101;
/// One instance larger than this is refused (aborted): an Enhanced CT of a whole chest is a few
/// hundred MB; anything far beyond is a misbehaving peer.
const MAX_INSTANCE_BYTES: usize = 1 << 30;

/// What the SCP needs; shared by all associations.
pub struct ScpContext {
    pub config: ScpConfig,
    pub spool: Spool,
    pub store: Store,
}

/// Access control with the peer's address already judged (dicom-ul only shows us AE titles).
struct Acl {
    peer: SocketAddr,
    source_allowed: bool,
    calling: Vec<String>,
}

impl AccessControl for Acl {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let calling = calling_ae_title.trim();
        let called = called_ae_title.trim();
        let refuse = |why: &str, reason| {
            log::warn!(
                peer_ae = calling, stage = "association";
                "refused association from {calling:?} at {}: {why}", self.peer
            );
            Err(reason)
        };
        if !self.source_allowed {
            return refuse(
                "source address not in scp.allowed_sources",
                AssociationRJServiceUserReason::NoReasonGiven,
            );
        }
        if called != this_ae_title.trim() {
            return refuse(
                &format!("it called {called:?}, we are {this_ae_title:?}"),
                AssociationRJServiceUserReason::CalledAETitleNotRecognized,
            );
        }
        if !self.calling.is_empty() && !self.calling.iter().any(|t| t == calling) {
            return refuse(
                "calling AE title not in scp.allowed_calling_ae_titles",
                AssociationRJServiceUserReason::CallingAETitleNotRecognized,
            );
        }
        Ok(())
    }
}

/// Accepts associations until `shutdown` flips, then stops accepting and gives the open
/// associations up to `drain` to finish the message in flight.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ScpContext>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_associations.max(1) as usize));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let (ctx, sd) = (ctx.clone(), shutdown.clone());
                            tasks.spawn(async move {
                                handle(sock, peer, ctx, sd).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            log::warn!("refused association from {peer}: scp.max_associations reached");
                            tasks.spawn(reject_busy(sock));
                        }
                    }
                }
                Err(e) => {
                    log::error!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let n = tasks.len();
    if n > 0 {
        log::info!("waiting for {n} association(s) to finish their message in flight");
    }
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

/// A-ASSOCIATE-RJ (transient, local limit exceeded): the modality retries later.
async fn reject_busy(mut sock: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await;
    let mut out = Vec::new();
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    if dicom_ul::write_pdu(&mut out, &rj).is_ok() {
        let _ = sock.write_all(&out).await;
    }
    let _ = sock.shutdown().await;
}

/// A DIMSE message being assembled from P-DATA fragments.
#[derive(Default)]
struct Message {
    pc_id: u8,
    command: Vec<u8>,
    command_done: bool,
    data: Vec<u8>,
    data_done: bool,
}

async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ScpContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &ctx.config;
    let source_allowed = cfg.allowed_sources.iter().any(|n| n.contains(peer.ip()));
    let idle = Duration::from_secs(cfg.idle_timeout_s.max(1));
    let mut opts = ServerAssociationOptions::new()
        .ae_access_control(Acl {
            peer,
            source_allowed,
            calling: cfg.allowed_calling_ae_titles.clone(),
        })
        .ae_title(cfg.ae_title.as_str())
        .max_pdu_length(cfg.max_pdu_length)
        .read_timeout(idle)
        .write_timeout(idle)
        .with_abstract_syntax(VERIFICATION)
        .with_abstract_syntax(CT_IMAGE_STORAGE)
        .with_abstract_syntax(ENHANCED_CT_IMAGE_STORAGE);
    for ts in TRANSFER_SYNTAXES {
        opts = opts.with_transfer_syntax(*ts);
    }
    // A second handle on the socket, so that a peer whose first PDU cannot be read still gets
    // an A-ABORT (PS3.8 9.3.7, AA-1): dicom-ul answers unknown PDU types itself but drops the
    // connection silently on an unreadable one (garbage, a length over the PDU limit).
    let (sock, spare) = match split_for_abort(sock) {
        Ok(pair) => pair,
        Err(e) => {
            log::warn!("connection from {peer}: {e}");
            return;
        }
    };
    let mut assoc = match opts.establish_async(sock).await {
        Ok(a) => a,
        Err(e) => {
            log::warn!(
                "association attempt from {peer} failed: {}",
                error_chain(&e)
            );
            if let Some(reason) = abort_reason(&e) {
                abort_unreadable(spare, reason).await;
            }
            return;
        }
    };
    drop(spare);
    let calling = assoc.peer_ae_title().trim().to_string();
    let contexts: Vec<PresentationContextNegotiated> = assoc.presentation_contexts().to_vec();
    let accepted = contexts
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    log::info!(
        peer_ae = calling.as_str(), stage = "association";
        "association from {calling:?} at {peer}: {accepted} of {} presentation context(s) accepted",
        contexts.len()
    );

    let mut msg = Message::default();
    let mut stored = 0u32;
    loop {
        let idle_between_messages = msg.command.is_empty() && msg.data.is_empty();
        if idle_between_messages && *shutdown.borrow() {
            log::info!("closing association from {calling:?}: shutting down");
            let _ = assoc.abort().await;
            return;
        }
        let pdu = if idle_between_messages {
            tokio::select! {
                r = assoc.receive() => r,
                _ = shutdown.changed() => continue,
            }
        } else {
            assoc.receive().await
        };
        let pdu = match pdu {
            Ok(p) => p,
            Err(e) => {
                log::warn!(
                    peer_ae = calling.as_str(), stage = "association";
                    "association from {calling:?} at {peer} ended: {}", error_chain(&e)
                );
                return;
            }
        };
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    msg.pc_id = pdv.presentation_context_id;
                    match pdv.value_type {
                        PDataValueType::Command => {
                            msg.command.extend_from_slice(&pdv.data);
                            msg.command_done |= pdv.is_last;
                        }
                        PDataValueType::Data => {
                            msg.data.extend_from_slice(&pdv.data);
                            msg.data_done |= pdv.is_last;
                        }
                    }
                }
                if msg.data.len() > MAX_INSTANCE_BYTES {
                    log::warn!("aborting association from {calling:?}: instance over 1 GiB");
                    let _ = assoc.abort().await;
                    return;
                }
                if !msg.command_done {
                    continue;
                }
                let command = match InMemDicomObject::read_dataset_with_ts(
                    &msg.command[..],
                    &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("aborting association from {calling:?}: bad command set: {e}");
                        let _ = assoc.abort().await;
                        return;
                    }
                };
                let has_data = int(&command, tags::COMMAND_DATA_SET_TYPE) != Some(NO_DATA_SET);
                if has_data && !msg.data_done {
                    continue;
                }
                let m = std::mem::take(&mut msg);
                let reply = respond(&ctx, &contexts, &calling, m.pc_id, &command, m.data).await;
                if reply.1 == status::SUCCESS
                    && int(&command, tags::COMMAND_FIELD) == Some(C_STORE_RQ)
                {
                    stored += 1;
                }
                if let Err(e) = assoc.send(&reply.0).await {
                    log::warn!(
                        "association from {calling:?}: sending response: {}",
                        error_chain(&e)
                    );
                    return;
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                log::info!(
                    peer_ae = calling.as_str(), stage = "association";
                    "association from {calling:?} released after {stored} instance(s)"
                );
                return;
            }
            Pdu::AbortRQ { .. } => {
                log::warn!(
                    "association from {calling:?} aborted by the peer after {stored} instance(s)"
                );
                return;
            }
            other => {
                log::warn!(
                    "aborting association from {calling:?}: unexpected {}",
                    pdu_name(&other)
                );
                let _ = assoc.abort().await;
                return;
            }
        }
    }
}

/// The stream for dicom-ul and a duplicate of it for [`abort_unreadable`].
fn split_for_abort(sock: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_sock = sock.into_std()?;
    let spare = std_sock.try_clone()?;
    Ok((TcpStream::from_std(std_sock)?, spare))
}

/// Whether a failed association request deserves an A-ABORT, and with which reason. A peer
/// that went silent (ARTIM expiry, AA-2) or left only gets the connection closed.
fn abort_reason(e: &dicom_ul::association::Error) -> Option<AbortRQServiceProviderReason> {
    use dicom_ul::association::Error as E;
    use dicom_ul::pdu::ReadError as R;
    match e {
        E::ReceivePdu { source, .. } => match source {
            R::PduTooLarge { .. } => Some(AbortRQServiceProviderReason::InvalidPduParameter),
            R::ReadPdu { .. } | R::NoPduAvailable { .. } => None,
            _ => Some(AbortRQServiceProviderReason::UnrecognizedPdu),
        },
        _ => None,
    }
}

/// Sends A-ABORT (service provider, `reason`) on the spare handle and closes the connection.
async fn abort_unreadable(spare: std::net::TcpStream, reason: AbortRQServiceProviderReason) {
    let mut out = Vec::new();
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    };
    if dicom_ul::write_pdu(&mut out, &pdu).is_err() {
        return;
    }
    if let Ok(mut s) = TcpStream::from_std(spare) {
        let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&out)).await;
        let _ = s.shutdown().await;
        // Closing with unread input would send RST, which can destroy the A-ABORT before the
        // peer reads it: drain (bounded) until the peer closes.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut buf = [0u8; 4096];
            let mut total = 0usize;
            while let Ok(n) = s.read(&mut buf).await {
                total += n;
                if n == 0 || total > 1 << 20 {
                    break;
                }
            }
        })
        .await;
    }
}

fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        _ => "PDU",
    }
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<u16> {
    obj.get(tag)?.to_int::<u16>().ok()
}

/// `get`, not `element`: a missing tag must not build an error (with a backtrace when
/// RUST_BACKTRACE is set) on every instance received.
fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

/// Builds the response PDU for one request and returns it with its status.
async fn respond(
    ctx: &Arc<ScpContext>,
    contexts: &[PresentationContextNegotiated],
    calling: &str,
    pc_id: u8,
    command: &InMemDicomObject,
    data: Vec<u8>,
) -> (Pdu, u16) {
    let field = int(command, tags::COMMAND_FIELD).unwrap_or(0);
    let message_id = int(command, tags::MESSAGE_ID).unwrap_or(0);
    let sop_class = text(command, tags::AFFECTED_SOP_CLASS_UID);
    let sop_instance = text(command, tags::AFFECTED_SOP_INSTANCE_UID);
    let status = match field {
        C_ECHO_RQ => status::SUCCESS,
        C_STORE_RQ => {
            store(
                ctx,
                contexts,
                calling,
                pc_id,
                &sop_class,
                &sop_instance,
                data,
            )
            .await
        }
        _ => status::UNRECOGNIZED_OPERATION,
    };
    let mut elements = vec![
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            dicom_value!(U16, [field | 0x8000]),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            dicom_value!(U16, [message_id]),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            dicom_value!(U16, [NO_DATA_SET]),
        ),
        DataElement::new(tags::STATUS, VR::US, dicom_value!(U16, [status])),
    ];
    if !sop_class.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(even_uid(&sop_class)),
        ));
    }
    if !sop_instance.is_empty() {
        elements.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(even_uid(&sop_instance)),
        ));
    }
    let cmd = InMemDicomObject::command_from_element_iter(elements);
    let mut bytes = Vec::new();
    if let Err(e) = cmd.write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased()) {
        log::error!("encoding a response: {e}");
    }
    let pdu = Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: bytes,
        }],
    };
    (pdu, status)
}

/// Study and series UIDs of an instance; when the data set has none, stable stand-ins derived
/// from the frame of reference and image geometry (the loader synthesises its own later).
fn series_ids(obj: &InMemDicomObject) -> Option<(String, String)> {
    let study = text(obj, tags::STUDY_INSTANCE_UID);
    let series = text(obj, tags::SERIES_INSTANCE_UID);
    if !study.is_empty() && !series.is_empty() {
        return Some((study, series));
    }
    let frame = text(obj, tags::FRAME_OF_REFERENCE_UID);
    if frame.is_empty() {
        return None;
    }
    let key = [
        frame.clone(),
        text(obj, tags::IMAGE_ORIENTATION_PATIENT),
        text(obj, tags::ROWS),
        text(obj, tags::COLUMNS),
        text(obj, tags::PIXEL_SPACING),
        text(obj, tags::CONVOLUTION_KERNEL),
        text(obj, tags::SLICE_THICKNESS),
    ]
    .join("|");
    let uid = crate::dicom_out::uid_from_key;
    Some((
        if study.is_empty() {
            uid(&format!("vcfd study {frame}"))
        } else {
            study
        },
        if series.is_empty() {
            uid(&format!("vcfd series {key}"))
        } else {
            series
        },
    ))
}

/// For native (unencapsulated) pixel data: why the data set is too short to hold the frames its
/// header describes, or None. The header-only parse does not read the pixels, so a sender's
/// truncated data set would otherwise be accepted and fail only in the analysis.
fn short_native_pixels(
    obj: &InMemDicomObject,
    ts: &dicom_encoding::TransferSyntax,
    len: usize,
) -> Option<String> {
    if ts.is_encapsulated_pixel_data() || !ts.is_codec_free() {
        return None;
    }
    let n = |tag| obj.get(tag)?.to_int::<u64>().ok();
    let (rows, cols, bits) = (n(tags::ROWS)?, n(tags::COLUMNS)?, n(tags::BITS_ALLOCATED)?);
    let spp = n(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let frames = text(obj, tags::NUMBER_OF_FRAMES).parse().unwrap_or(1);
    let need = rows * cols * spp * frames * bits.div_ceil(8);
    (need > len as u64).then(|| {
        format!(
            "data set of {len} bytes cannot hold {frames} frame(s) of {rows}x{cols}x{spp} at {bits} bits"
        )
    })
}

/// UIDs are NUL-padded to an even length (PS3.5 9.1).
fn even_uid(uid: &str) -> String {
    if uid.len() % 2 == 1 {
        format!("{uid}\0")
    } else {
        uid.to_string()
    }
}

/// Checks, spools and records one C-STORE; returns the DIMSE status.
async fn store(
    ctx: &Arc<ScpContext>,
    contexts: &[PresentationContextNegotiated],
    calling: &str,
    pc_id: u8,
    sop_class: &str,
    sop_instance: &str,
    data: Vec<u8>,
) -> u16 {
    let Some(pc) = contexts
        .iter()
        .find(|pc| pc.id == pc_id && pc.reason == PresentationContextResultReason::Acceptance)
    else {
        log::warn!(
            "C-STORE from {calling:?} on presentation context {pc_id}, which was not accepted"
        );
        return status::SOP_CLASS_NOT_SUPPORTED;
    };
    let pc_class = pc.abstract_syntax.trim_end_matches('\0');
    if (sop_class != CT_IMAGE_STORAGE && sop_class != ENHANCED_CT_IMAGE_STORAGE)
        || sop_class != pc_class
    {
        log::warn!(
            peer_ae = calling, stage = "ingest";
            "C-STORE from {calling:?} of SOP class {sop_class} refused: only CT is analysed"
        );
        return status::SOP_CLASS_NOT_SUPPORTED;
    }
    let ts_uid = pc.transfer_syntax.trim_end_matches('\0').to_string();
    let Some(ts) = TransferSyntaxRegistry.get(&ts_uid) else {
        return status::CANNOT_UNDERSTAND;
    };
    let meta = match dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(ts_uid.as_str())
        .implementation_class_uid(crate::dicom_out::uid_from_key("vcfd implementation class"))
        .build()
    {
        Ok(m) => m,
        Err(e) => {
            log::warn!("C-STORE from {calling:?}: cannot build file meta: {e}");
            return status::CANNOT_UNDERSTAND;
        }
    };
    let mut header = vec![0u8; 128];
    header.extend_from_slice(b"DICM");
    if let Err(e) = meta.write(&mut header) {
        log::error!("writing file meta: {e}");
        return status::PROCESSING_FAILURE;
    }
    // Only the attributes before Pixel Data are needed here; the pixels are spooled as they
    // came and decoded by the analysis; parsing them here copied and converted every pixel.
    let obj = match dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(std::io::Read::chain(&header[128..], &data[..]))
    {
        Ok(o) => o,
        Err(e) => {
            log::warn!("C-STORE from {calling:?}: undecodable data set: {e}");
            return status::CANNOT_UNDERSTAND;
        }
    };
    if let Some(why) = short_native_pixels(&obj, ts, data.len()) {
        log::warn!("C-STORE from {calling:?}: {why}");
        return status::CANNOT_UNDERSTAND;
    }
    // Anonymisers sometimes empty the UIDs of the data set; the command (and later the file
    // meta) still carries the SOP UIDs, and the series is grouped by frame of reference and
    // image geometry, as the loader does. Present-but-different values are refused.
    let differs = |tag, expected: &str| {
        let v = text(&obj, tag);
        !v.is_empty() && v != expected
    };
    let modality = text(&obj, tags::MODALITY);
    let mismatch = if differs(tags::SOP_CLASS_UID, sop_class) {
        Some("SOP Class UID differs from the command's")
    } else if differs(tags::SOP_INSTANCE_UID, sop_instance) || sop_instance.is_empty() {
        Some("SOP Instance UID missing or different from the command's")
    } else if modality != "CT" {
        Some("Modality is not CT")
    } else {
        None
    };
    let ids = mismatch.map_or_else(
        || {
            series_ids(&obj)
                .ok_or("no Series Instance UID and no Frame of Reference UID to group by")
        },
        Err,
    );
    let (study_uid, series_uid) = match ids {
        Ok(ids) => ids,
        Err(why) => {
            log::warn!(
                peer_ae = calling, stage = "ingest";
                "C-STORE from {calling:?} refused (A900): {why}"
            );
            return status::DATA_SET_DOES_NOT_MATCH_SOP_CLASS;
        }
    };
    if ctx.spool.over_watermark() {
        log::error!(
            stage = "ingest";
            "disk above storage.disk_watermark_percent ({} %): answering Out of Resources",
            ctx.spool.watermark_percent()
        );
        return status::OUT_OF_RESOURCES;
    }
    match ctx.store.has_instance(&series_uid, sop_instance) {
        Ok(true) => {
            log::debug!("duplicate instance {} ignored", uid_hash(sop_instance));
            return status::SUCCESS;
        }
        Ok(false) => {}
        Err(e) => {
            log::error!("state database: {e}");
            return status::OUT_OF_RESOURCES;
        }
    }
    let path = ctx.spool.path_for(&series_uid, sop_instance);
    let rec = InstanceRec {
        study_uid: study_uid.clone(),
        series_uid: series_uid.clone(),
        sop_class_uid: sop_class.to_string(),
        path: path.clone(),
        received_ms: now_ms(),
        calling_ae: calling.to_string(),
    };
    let sop = sop_instance.to_string();
    // Spool and sled block on fsync: keep them off the async workers.
    let c = ctx.clone();
    let res = tokio::task::spawn_blocking(move || -> crate::Result<bool> {
        c.spool.write(&path, &[&header, &data])?;
        let new = c.store.record_instance(&sop, &rec)?;
        c.store.flush()?;
        Ok(new)
    })
    .await
    .unwrap_or_else(|e| Err(crate::Error::Service(format!("spool task: {e}"))));
    match res {
        Ok(_) => {
            log::debug!(
                study = uid_hash(&study_uid).as_str(), series = uid_hash(&series_uid).as_str(),
                stage = "ingest", peer_ae = calling;
                "stored instance {}", uid_hash(sop_instance)
            );
            status::SUCCESS
        }
        Err(e) => {
            log::error!("storing an instance from {calling:?}: {e}");
            if matches!(e, crate::Error::Io { .. }) {
                status::OUT_OF_RESOURCES
            } else {
                status::PROCESSING_FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, JPEG_2000_IMAGE_COMPRESSION_LOSSLESS_ONLY,
    };

    fn header(rows: u16, cols: u16, bits: u16) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            dicom_value!(U16, [rows]),
        ));
        o.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            dicom_value!(U16, [cols]),
        ));
        o.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            dicom_value!(U16, [bits]),
        ));
        o
    }

    #[test]
    fn native_pixels_shorter_than_the_header_says_are_refused() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let o = header(512, 512, 16);
        let full = 512 * 512 * 2 + 1000;
        assert_eq!(short_native_pixels(&o, &ts, full), None);
        let why = short_native_pixels(&o, &ts, 512 * 512).expect("half the pixels accepted");
        assert!(why.contains("512x512"), "{why}");
        // Encapsulated pixel data is compressed: its length says nothing here.
        let j2k = JPEG_2000_IMAGE_COMPRESSION_LOSSLESS_ONLY.erased();
        assert_eq!(short_native_pixels(&o, &j2k, 1000), None);
        // Without the image attributes there is nothing to check (the analysis says why).
        assert_eq!(
            short_native_pixels(&InMemDicomObject::new_empty(), &ts, 10),
            None
        );
    }
}
