//! The local status server: the HTML status page (`/`) for the technician, JSON for tools
//! (`/healthz`, `/api/studies`, `/api/outbox`, `/api/alerts`) and alert acknowledgement
//! (`POST /api/alerts/<id>/ack` with `Authorization: Bearer <token>`, or the page's form at
//! `POST /alerts/<id>/ack` with a `token` field). sled allows one process at a time, so this is
//! how tools and people see the state while the daemon runs.
//!
//! A minimal HTTP/1.1 server on purpose: one request per connection, bounded header and body
//! size, bounded time per connection and a bounded number of connections. It listens on
//! loopback by default and must not become a way in: acknowledging needs the configured token
//! (compared in constant time), and nothing it serves names a patient.

use crate::status_page;
use crate::store::{AckOutcome, Store};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Request line and headers.
const MAX_HEAD: usize = 8 * 1024;
/// A form with a token fits easily; anything bigger is not for us.
const MAX_BODY: usize = 4 * 1024;
/// Whole request and response, per connection.
const CONNECTION_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once instead of queueing without bound.
const MAX_CONNECTIONS: usize = 32;

/// The message of every refused acknowledgement when no token is configured.
pub const ACK_DISABLED: &str = "acknowledgement disabled: set [http].ack_token in the config";

/// What the server needs besides the store.
pub struct HttpContext {
    pub store: Store,
    /// Token that acknowledges alerts; empty disables acknowledging.
    pub ack_token: String,
    /// The daemon's state folder (its file system's use is shown on the page).
    pub state_dir: PathBuf,
    /// Shown on the page: which model produced the findings.
    pub model_version: String,
    /// `storage.disk_watermark_percent`, shown next to the disk use.
    pub disk_watermark_percent: u8,
}

/// A parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// What followed `?`, undecoded.
    pub query: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response before serialisation.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// For 303 after a form post.
    pub location: Option<String>,
}

impl Response {
    fn json(status: u16, v: &serde_json::Value) -> Self {
        Response {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            location: None,
        }
    }

    fn html(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            location: None,
        }
    }

    fn error(status: u16, msg: &str) -> Self {
        Response::json(status, &json!({ "error": msg }))
    }
}

/// Serves until `shutdown` flips.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            r = listener.accept() => if let Ok((sock, _)) = r {
                // Over the limit the connection is dropped at once (closed by the peer's view).
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIME, handle(sock, ctx)).await;
                    drop(permit);
                });
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(mut sock: TcpStream, ctx: Arc<HttpContext>) -> std::io::Result<()> {
    let req = match read_request(&mut sock).await? {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        Err(resp) => return write_response(&mut sock, &resp).await,
    };
    let resp = tokio::task::spawn_blocking(move || respond(&ctx, &req))
        .await
        .unwrap_or_else(|e| Response::error(500, &e.to_string()));
    write_response(&mut sock, &resp).await
}

/// Reads one request within the size bounds; `Err` is the response that refuses it, `None`
/// a peer that closed before sending a request.
async fn read_request(
    sock: &mut TcpStream,
) -> std::io::Result<std::result::Result<Option<Request>, Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err(Response::error(431, "request header too large")));
        }
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Ok(None));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > MAX_HEAD {
        return Ok(Err(Response::error(431, "request header too large")));
    }
    let mut req = match parse_head(&buf[..head_end]) {
        Ok(r) => r,
        Err(msg) => return Ok(Err(Response::error(400, msg))),
    };
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Ok(Err(Response::error(400, "bad Content-Length"))),
        },
    };
    if req.header("transfer-encoding").is_some() {
        return Ok(Err(Response::error(
            411,
            "send a Content-Length, not chunks",
        )));
    }
    if len > MAX_BODY {
        return Ok(Err(Response::error(413, "request body too large")));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(Response::error(400, "request body cut short")));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(Ok(Some(req)))
}

/// Request line and headers (without the blank line).
pub fn parse_head(head: &[u8]) -> std::result::Result<Request, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("bad request line");
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err("bad request line");
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            return Err("bad header line");
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        query: target.split_once('?').map_or("", |(_, q)| q).to_string(),
        headers,
        body: Vec::new(),
    })
}

/// The response to one request (blocking: reads sled).
pub fn respond(ctx: &HttpContext, req: &Request) -> Response {
    let path = req.path.as_str();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", [""]) => {
            let acked = form_field(req.query.as_bytes(), "acked").and_then(|v| v.parse().ok());
            page(ctx, acked)
        }
        ("GET", _) => match route(&ctx.store, path) {
            Some(Ok(v)) => Response::json(200, &v),
            Some(Err(e)) => Response::error(500, &e.to_string()),
            None => Response::error(404, "not found"),
        },
        ("POST", ["api", "alerts", id, "ack"]) => {
            let token = req
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            api_ack(ctx, id, token)
        }
        ("POST", ["alerts", id, "ack"]) => {
            let token = form_field(&req.body, "token").unwrap_or_default();
            form_ack(ctx, id, &token)
        }
        ("POST", _) => Response::error(404, "not found"),
        _ => Response::error(405, "only GET, and POST to acknowledge"),
    }
}

fn page(ctx: &HttpContext, acked: Option<u64>) -> Response {
    match status_page::render_from(ctx, acked) {
        Ok(html) => Response::html(200, html),
        Err(e) => Response::html(500, status_page::error_page(500, &e.to_string())),
    }
}

/// Whether `given` is the configured token. Both sides are hashed first, so the comparison
/// takes the same time whatever the length or content of a wrong guess.
pub fn token_matches(configured: &str, given: &str) -> bool {
    if configured.is_empty() {
        return false;
    }
    let a = ring::digest::digest(&ring::digest::SHA256, configured.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, given.as_bytes());
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Token check shared by the API and the form: None when allowed, else the refusal.
fn ack_refusal(ctx: &HttpContext, token: &str) -> Option<&'static str> {
    if ctx.ack_token.is_empty() {
        Some(ACK_DISABLED)
    } else if token.is_empty() {
        Some("acknowledgement needs the token")
    } else if !token_matches(&ctx.ack_token, token) {
        Some("wrong token")
    } else {
        None
    }
}

fn api_ack(ctx: &HttpContext, id: &str, token: &str) -> Response {
    if let Some(msg) = ack_refusal(ctx, token) {
        return Response::error(403, msg);
    }
    let Ok(id) = id.parse::<u64>() else {
        return Response::error(404, "no such alert");
    };
    match ctx.store.ack_alert(id) {
        Ok(AckOutcome::Acknowledged(a)) => {
            log_ack(&a);
            Response::json(200, &json!({"acknowledged": a, "already": false}))
        }
        Ok(AckOutcome::AlreadyAcknowledged(a)) => {
            Response::json(200, &json!({"acknowledged": a, "already": true}))
        }
        Ok(AckOutcome::NotFound) => Response::error(404, "no such alert"),
        Err(e) => Response::error(500, &e.to_string()),
    }
}

fn form_ack(ctx: &HttpContext, id: &str, token: &str) -> Response {
    if let Some(msg) = ack_refusal(ctx, token) {
        return Response::html(403, status_page::error_page(403, msg));
    }
    let Ok(id) = id.parse::<u64>() else {
        return Response::html(404, status_page::error_page(404, "no such alert"));
    };
    match ctx.store.ack_alert(id) {
        Ok(AckOutcome::Acknowledged(a)) => {
            log_ack(&a);
            see_other(&format!("/?acked={id}"))
        }
        Ok(AckOutcome::AlreadyAcknowledged(_)) => see_other(&format!("/?acked={id}")),
        Ok(AckOutcome::NotFound) => {
            Response::html(404, status_page::error_page(404, "no such alert"))
        }
        Err(e) => Response::html(500, status_page::error_page(500, &e.to_string())),
    }
}

fn log_ack(a: &crate::store::AlertRec) {
    log::info!(
        target: crate::alerts::LOG_TARGET,
        vcfd_alert_ack = a.kind.as_str(), vcfd_alert_id = a.id;
        "alert {} ({}) on {} acknowledged", a.id, a.kind, a.subject
    );
}

/// Post/redirect/get: a reload of the page does not post again.
fn see_other(location: &str) -> Response {
    Response {
        status: 303,
        content_type: "text/plain; charset=utf-8",
        body: b"acknowledged\n".to_vec(),
        location: Some(location.to_string()),
    }
}

/// One field of an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (url_decode(k)? == name).then(|| url_decode(v)).flatten()
    })
}

fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The JSON for a GET path; `None` for unknown paths.
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
        "/api/alerts" => alerts_json(store),
        _ => return None,
    })
}

/// Open and acknowledged alerts (newest first) and the ring count of every scanner.
fn alerts_json(store: &Store) -> crate::Result<serde_json::Value> {
    let mut all = store.alerts()?;
    all.reverse();
    let (acked, open): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.acknowledged);
    Ok(json!({
        "open": open,
        "acknowledged": acked,
        "scanners": store.scanners()?,
    }))
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

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        303 => "See Other",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    }
}

/// The bytes of a response. The page loads nothing from anywhere (the box is offline) and
/// may not be framed or post anywhere else; the CSP says so to the browser.
pub fn serialise(resp: &Response) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    if let Some(l) = &resp.location {
        head.push_str(&format!("Location: {l}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    out
}

async fn write_response(sock: &mut TcpStream, resp: &Response) -> std::io::Result<()> {
    sock.write_all(&serialise(resp)).await?;
    sock.shutdown().await?;
    if resp.status >= 400 {
        // A refused request may still be arriving; closing with unread input would reset the
        // connection and the client would never see why it was refused. Drain a little.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut total = 0usize;
            while total < 256 * 1024 {
                match sock.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        })
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AlertRec;

    fn ctx(dir: &std::path::Path, token: &str) -> HttpContext {
        HttpContext {
            store: Store::open(dir).unwrap(),
            ack_token: token.into(),
            state_dir: dir.to_path_buf(),
            model_version: "test-model".into(),
            disk_watermark_percent: 90,
        }
    }

    fn post(path: &str, headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: path.into(),
            query: String::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn body(r: &Response) -> String {
        String::from_utf8_lossy(&r.body).into_owned()
    }

    const TOKEN: &str = "0123456789abcdef0123";

    #[test]
    fn ack_needs_the_configured_token() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path(), TOKEN);
        let a = c
            .store
            .put_alert(AlertRec::new("ring_artifact", "critical", "CT1", "rings"))
            .unwrap();
        let path = format!("/api/alerts/{}/ack", a.id);
        for auth in [
            vec![],
            vec![("authorization", "Bearer wrong-token-wrong-token")],
            vec![("authorization", TOKEN)],
            vec![("authorization", "Bearer ")],
        ] {
            let r = respond(&c, &post(&path, &auth, ""));
            assert_eq!(r.status, 403, "{auth:?}: {}", body(&r));
        }
        assert!(!c.store.alert(a.id).unwrap().unwrap().acknowledged);
        let bearer = format!("Bearer {TOKEN}");
        let r = respond(&c, &post(&path, &[("authorization", bearer.as_str())], ""));
        assert_eq!(r.status, 200, "{}", body(&r));
        assert!(c.store.alert(a.id).unwrap().unwrap().acknowledged);
        let r = respond(&c, &post(&path, &[("authorization", bearer.as_str())], ""));
        assert!(body(&r).contains("\"already\":true"));
        let r = respond(
            &c,
            &post(
                "/api/alerts/999999/ack",
                &[("authorization", bearer.as_str())],
                "",
            ),
        );
        assert_eq!(r.status, 404);

        // The form variant: token in the body, redirect back to the page.
        let b = c
            .store
            .put_alert(AlertRec::new("metal", "warning", "CT1", "metal"))
            .unwrap();
        let fpath = format!("/alerts/{}/ack", b.id);
        let r = respond(&c, &post(&fpath, &[], "token=nope"));
        assert_eq!(r.status, 403);
        assert!(body(&r).contains("wrong token"));
        let r = respond(&c, &post(&fpath, &[], &format!("token={TOKEN}")));
        assert_eq!(r.status, 303);
        assert_eq!(r.location.as_deref(), Some(&*format!("/?acked={}", b.id)));
        assert!(c.store.alert(b.id).unwrap().unwrap().acknowledged);

        let v = route(&c.store, "/api/alerts").unwrap().unwrap();
        assert_eq!(v["open"].as_array().unwrap().len(), 0);
        assert_eq!(v["acknowledged"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn without_a_token_ack_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path(), "");
        let a = c
            .store
            .put_alert(AlertRec::new("ring_artifact", "critical", "CT1", "rings"))
            .unwrap();
        for (req, bearer) in [
            (
                post(
                    &format!("/api/alerts/{}/ack", a.id),
                    &[("authorization", "Bearer ")],
                    "",
                ),
                true,
            ),
            (post(&format!("/alerts/{}/ack", a.id), &[], "token="), false),
        ] {
            let r = respond(&c, &req);
            assert_eq!(r.status, 403, "bearer={bearer}");
            assert!(body(&r).contains(ACK_DISABLED), "{}", body(&r));
        }
        assert!(!c.store.alert(a.id).unwrap().unwrap().acknowledged);
    }

    #[test]
    fn token_comparison_and_form_decoding() {
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "abcd"));
        assert!(!token_matches("", ""));
        assert_eq!(
            form_field(b"a=1&token=x%2By+z&b=", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"tok=1", "token"), None);
    }

    #[test]
    fn parses_and_bounds_requests() {
        let r = parse_head(b"GET /api/alerts?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t")
            .unwrap();
        assert_eq!(r.path, "/api/alerts");
        assert_eq!(r.header("authorization"), Some("Bearer t"));
        assert!(parse_head(b"GET /\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nnocolon").is_err());
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path(), TOKEN);
        let get = |p: &str| {
            respond(
                &c,
                &Request {
                    method: "GET".into(),
                    path: p.into(),
                    ..Default::default()
                },
            )
        };
        assert_eq!(get("/nope").status, 404);
        let page = get("/");
        assert_eq!(page.status, 200);
        assert!(page.content_type.starts_with("text/html"));
        let bytes = String::from_utf8(serialise(&page)).unwrap();
        assert!(bytes.contains("Content-Security-Policy: default-src 'none'"));
        let r = respond(
            &c,
            &Request {
                method: "DELETE".into(),
                path: "/".into(),
                ..Default::default()
            },
        );
        assert_eq!(r.status, 405);
    }

    /// The socket side: oversized heads and bodies are refused, a real GET is answered.
    #[test]
    fn socket_limits() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(ctx(dir.path(), TOKEN));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            let (_tx, rx) = watch::channel(false);
            tokio::spawn(serve(l, c, rx));
            async fn exchange(port: u16, req: Vec<u8>) -> String {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let _ = s.write_all(&req).await;
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                String::from_utf8_lossy(&out).into_owned()
            }
            let r = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{r}");
            let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
            big.extend(std::iter::repeat_n(b'a', 20_000));
            let r = exchange(port, big).await;
            assert!(r.starts_with("HTTP/1.1 431"), "{r}");
            let r = exchange(
                port,
                b"POST /alerts/1/ack HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec(),
            )
            .await;
            assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        });
    }
}
