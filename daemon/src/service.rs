//! Running as a system service: binding (or systemd socket activation), privilege drop,
//! journald logging, sd_notify (READY, STATUS, WATCHDOG, STOPPING) and an orderly SIGTERM.
//!
//! Shutdown order: stop accepting associations, let each open association finish the message
//! in flight (bounded), stop the other tasks, flush sled, exit 0. Analyses still running stay
//! `Running` in sled and resume on the next start.

use crate::config::Config;
use crate::forward::{Backoff, Destination};
use crate::scp::{self, ScpContext};
use crate::spool::Spool;
use crate::store::{JobState, Store};
use crate::worker::{self, WorkerConfig};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Whether stderr is connected to the journal (systemd sets JOURNAL_STREAM for services).
pub fn journal_requested() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Installs the journald logger (structured fields from `log`'s key-values: STUDY, SERIES,
/// STAGE, PEER_AE). Returns false when the journal is not reachable, so the caller can fall
/// back to stderr.
pub fn init_journal(level: log::LevelFilter) -> bool {
    if !systemd_journal_logger::connected_to_journal() {
        return false;
    }
    match systemd_journal_logger::JournalLog::new() {
        Ok(j) => {
            if j.with_syslog_identifier("vcfd".into()).install().is_ok() {
                log::set_max_level(level);
                true
            } else {
                false
            }
        }
        Err(_) => false,
    }
}

/// Sends one sd_notify message if systemd asked for them (Type=notify); a no-op otherwise.
pub fn notify(msg: &str) {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &path)
    };
    if let Err(e) = res {
        log::debug!("sd_notify: {e}");
    }
}

/// Half the watchdog interval systemd asked for (WATCHDOG_USEC, for this process).
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The SCP listener handed over by systemd (vcfd.socket, e.g. port 104), if any.
fn socket_activated() -> Option<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: sd_listen_fds(3): with LISTEN_PID equal to our pid, fd 3 is an open listening
    // socket passed to this process and owned by nobody else in it.
    let l = unsafe { std::net::TcpListener::from_raw_fd(3) };
    Some(l)
}

/// The bound listeners; bound before the privilege drop so port 104 works without root later.
pub struct Listeners {
    pub scp: std::net::TcpListener,
    pub http: std::net::TcpListener,
}

pub fn bind(config: &Config) -> Result<Listeners> {
    let bind = |addr: std::net::SocketAddr, what: &str| {
        std::net::TcpListener::bind(addr)
            .map_err(|e| Error::Service(format!("cannot bind {what} on {addr}: {e}")))
    };
    let scp = match socket_activated() {
        Some(l) => {
            log::info!("DICOM port handed over by systemd (socket activation)");
            l
        }
        None => bind(config.scp.listen, "the DICOM receiver (scp.listen)")?,
    };
    let http = bind(config.http.listen, "the status API (http.listen)")?;
    for l in [&scp, &http] {
        l.set_nonblocking(true)
            .map_err(|e| Error::Service(format!("listener: {e}")))?;
    }
    Ok(Listeners { scp, http })
}

/// Started as root: switch to `user` (supplementary groups, group, then user, in that order so
/// no root group survives). Must run before any thread is started.
pub fn drop_privileges(user: &str) -> Result<()> {
    use nix::unistd::{geteuid, setgid, setgroups, setuid, User};
    if !geteuid().is_root() {
        return Ok(());
    }
    if user.is_empty() {
        log::warn!("running as root: set service.user to drop privileges after binding");
        return Ok(());
    }
    let u = User::from_name(user)
        .map_err(|e| Error::Service(format!("looking up service.user {user:?}: {e}")))?
        .ok_or_else(|| Error::Service(format!("service.user {user:?} does not exist")))?;
    let fail = |what: &str, e: nix::Error| Error::Service(format!("{what} for {user:?}: {e}"));
    setgroups(&[u.gid]).map_err(|e| fail("setgroups", e))?;
    setgid(u.gid).map_err(|e| fail("setgid", e))?;
    setuid(u.uid).map_err(|e| fail("setuid", e))?;
    if setuid(nix::unistd::Uid::from_raw(0)).is_ok() {
        return Err(Error::Service("privilege drop did not stick".into()));
    }
    log::info!("running as {user:?} (uid {}, gid {})", u.uid, u.gid);
    Ok(())
}

/// The whole daemon: bind, drop privileges, run until SIGTERM/SIGINT, shut down cleanly.
pub fn run(config: Config) -> Result<()> {
    let listeners = bind(&config)?;
    drop_privileges(&config.service.user)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()
        .map_err(|e| Error::Service(format!("runtime: {e}")))?;
    let res = rt.block_on(serve(config, listeners));
    rt.shutdown_timeout(Duration::from_secs(5));
    res
}

async fn serve(config: Config, listeners: Listeners) -> Result<()> {
    let state = config.storage.state_dir.clone();
    std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
    let spool = Spool::open(&state, config.storage.disk_watermark_percent)?;
    let store = Store::open(&state)?;
    let dests = config
        .pacs
        .iter()
        .map(|p| Destination::new(&config, p).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let scp_listener = tokio::net::TcpListener::from_std(listeners.scp)
        .map_err(|e| Error::Service(format!("DICOM listener: {e}")))?;
    let http_listener = tokio::net::TcpListener::from_std(listeners.http)
        .map_err(|e| Error::Service(format!("HTTP listener: {e}")))?;
    let scp_addr = scp_listener.local_addr().ok();

    let (stop_tx, stop_rx) = watch::channel(false);
    let jobs_ready = Arc::new(Notify::new());
    let mut background = tokio::task::JoinSet::new();
    background.spawn(crate::completion::run(
        store.clone(),
        Duration::from_secs(config.storage.series_quiet_period_s),
        Duration::from_millis(500),
        jobs_ready.clone(),
        stop_rx.clone(),
    ));
    background.spawn(worker::run(
        store.clone(),
        WorkerConfig {
            results_dir: state.join("results"),
            destinations: config.pacs.iter().map(|p| p.name.clone()).collect(),
            max_attempts: config.analysis.max_attempts,
            workers: config.analysis.workers,
            retry_delay: Duration::from_secs(5),
            box_serial: if config.appliance.serial.is_empty() {
                "unprovisioned".into()
            } else {
                config.appliance.serial.clone()
            },
            ring_escalation_studies: config.alerts.ring_escalation_studies,
        },
        jobs_ready.clone(),
        stop_rx.clone(),
    ));
    if !dests.is_empty() {
        background.spawn(crate::forward::run(
            store.clone(),
            dests,
            Backoff {
                initial: Duration::from_secs(config.forward.backoff_initial_s),
                max: Duration::from_secs(config.forward.backoff_max_s),
            },
            jobs_ready.clone(),
            stop_rx.clone(),
        ));
    }
    background.spawn(crate::http::serve(
        http_listener,
        Arc::new(crate::http::HttpContext {
            store: store.clone(),
            ack_token: config.http.ack_token.clone(),
            state_dir: state.clone(),
            model_version: vcfd_model::analysis::model_version(
                vcfd_model::keypoints::DEFAULT_PRECISION,
            ),
            disk_watermark_percent: config.storage.disk_watermark_percent,
        }),
        stop_rx.clone(),
    ));
    background.spawn(crate::retention::run(
        store.clone(),
        state.join("results"),
        Duration::from_secs(config.retention.source_grace_hours.saturating_mul(3600)),
        Duration::from_secs(config.retention.results_days.saturating_mul(86_400)),
        Duration::from_secs(600),
        stop_rx.clone(),
    ));
    background.spawn(status_loop(store.clone(), stop_rx.clone()));
    let ctx = Arc::new(ScpContext {
        config: config.scp.clone(),
        spool,
        store: store.clone(),
    });
    let scp_task = tokio::spawn(scp::serve(
        scp_listener,
        ctx,
        stop_rx.clone(),
        Duration::from_secs(30),
    ));
    log::info!(
        "vcfd {} listening: DICOM {} as {:?}, status API {}; state in {}",
        crate::VERSION,
        scp_addr.map_or("?".into(), |a| a.to_string()),
        config.scp.ae_title,
        config.http.listen,
        state.display()
    );
    notify("READY=1\nSTATUS=receiving");

    wait_for_signal().await;
    log::info!("shutting down: no new associations; finishing the messages in flight");
    notify("STOPPING=1\nSTATUS=shutting down");
    let _ = stop_tx.send(true);
    let _ = scp_task.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    background.abort_all();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush())
        .await
        .map_err(|e| Error::Service(format!("flush task: {e}")))??;
    log::info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            log::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// STATUS= for `systemctl status` and WATCHDOG=1 while the runtime is responsive.
async fn status_loop(store: Store, mut stop: watch::Receiver<bool>) {
    let wd = watchdog_interval();
    let tick = wd
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(10));
    loop {
        let pending = store
            .jobs()
            .map(|j| {
                j.iter()
                    .filter(|j| matches!(j.state, JobState::Pending | JobState::Running))
                    .count()
            })
            .unwrap_or(0);
        let mut msg = format!(
            "STATUS={} instance(s), {pending} job(s) queued, {} outbox",
            store.instance_count(),
            store.outbox_len()
        );
        if wd.is_some() {
            msg.push_str("\nWATCHDOG=1");
        }
        notify(&msg);
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Tests run threaded: this env var is only read by this test.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
