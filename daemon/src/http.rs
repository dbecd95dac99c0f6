//! The local status API (`/healthz`, `/api/studies`, `/api/outbox`, `/api/alerts`), JSON over a
//! minimal HTTP/1.1 server: sled allows one process at a time, so this is how tools and the
//! admin see the state while the daemon runs. GET only, one request per connection, bounded
//! request size and time: it listens on loopback by default and must not become a way in.

use crate::store::Store;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MAX_REQUEST: usize = 8 * 1024;

/// Serves until `shutdown` flips.
pub async fn serve(listener: TcpListener, store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => if let Ok((sock, _)) = r {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), handle(sock, store)).await;
                });
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(mut sock: TcpStream, store: Store) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return reply(&mut sock, 431, &json!({"error": "request too large"})).await;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return reply(&mut sock, 405, &json!({"error": "only GET"})).await;
    }
    let path = path.to_string();
    let body = tokio::task::spawn_blocking(move || route(&store, &path)).await;
    match body {
        Ok(Some(Ok(v))) => reply(&mut sock, 200, &v).await,
        Ok(Some(Err(e))) => reply(&mut sock, 500, &json!({"error": e.to_string()})).await,
        Ok(None) => reply(&mut sock, 404, &json!({"error": "not found"})).await,
        Err(e) => reply(&mut sock, 500, &json!({"error": e.to_string()})).await,
    }
}

/// The JSON for a path; `None` for unknown paths.
pub fn route(store: &Store, path: &str) -> Option<crate::Result<serde_json::Value>> {
    Some(match path {
        "/healthz" => Ok(json!({
            "status": "ok",
            "version": crate::VERSION,
            "instances": store.instance_count(),
            "outbox": store.outbox_len(),
        })),
        "/api/studies" => studies(store),
        "/api/outbox" => store.outbox().and_then(|o| {
            let dead = store.dead_letters()?;
            Ok(json!({"pending": o, "dead_letters": dead}))
        }),
        "/api/alerts" => store.alerts().map(|a| json!(a)),
        _ => return None,
    })
}

/// One entry per study: its series with state, job and verdict.
fn studies(store: &Store) -> crate::Result<serde_json::Value> {
    let mut by_study: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        Default::default();
    for (uid, s) in store.all_series()? {
        let job = store.job(&uid)?;
        by_study
            .entry(s.study_uid.clone())
            .or_default()
            .push(json!({
                "series_instance_uid": uid,
                "instances": s.instances,
                "series_state": s.state,
                "job_state": job.as_ref().map(|j| j.state),
                "attempts": job.as_ref().map_or(0, |j| j.attempts),
                "verdict": job.as_ref().and_then(|j| j.verdict.clone()),
                "last_error": job.as_ref().and_then(|j| j.last_error.clone()),
            }));
    }
    Ok(json!(by_study
        .into_iter()
        .map(|(study, series)| json!({"study_instance_uid": study, "series": series}))
        .collect::<Vec<_>>()))
}

async fn reply(sock: &mut TcpStream, code: u16, body: &serde_json::Value) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}
