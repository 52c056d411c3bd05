//! devd's HTTP API: status reads, readiness for Tilt (`/api/v1/ready` for the stand,
//! `/api/v1/services/<n>/ready` per service), an SSE event stream, and actions.
//!
//! Listens on loopback. Every request must be addressed to loopback (a page on another
//! site cannot reach it through DNS rebinding: 403): the authority of an absolute-form
//! request line, else the `Host` header; two `Host` headers, or a request line and a
//! `Host` that disagree, are 400. Actions need the bearer token that
//! devd writes to a 0600 file (401 without it).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use crate::status::{Event, StatusHub};

/// What the API asks the daemon to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Rebuild { service: String },
    /// Restart the service process in every instance (the shim's `POST /v1/restart`).
    Restart { service: String },
}

#[derive(Clone)]
pub struct ApiState {
    pub hub: StatusHub,
    pub token: Arc<str>,
    pub actions: mpsc::Sender<Action>,
    /// Turns true when devd shuts down: every open event stream ends then, so that the
    /// server's graceful shutdown does not wait for `devd status --watch` clients.
    pub stopping: watch::Receiver<bool>,
}

/// One error shape for the whole API: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // Inside the request's span (see `request_spans`).
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        let mut response =
            (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub fn app(state: ApiState) -> Router {
    let actions = Router::new()
        .route("/api/v1/services/{name}/rebuild", post(rebuild))
        .route("/api/v1/services/{name}/restart", post(restart))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/ready", get(stand_ready))
        .route("/api/v1/services/{name}", get(service))
        .route("/api/v1/services/{name}/ready", get(ready))
        .route("/api/v1/events", get(events))
        .merge(actions)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn(require_loopback_host))
        .layer(request_spans())
        .with_state(state)
}

/// The TraceLayer of [`request_spans`]: a span per request, no other callbacks.
type RequestSpans = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&Request) -> tracing::Span,
    (),
    (),
    (),
    (),
    (),
>;

/// One `request{method, uri}` span around each request (the Host check included), so
/// that what is logged while serving it (a refused Host, a 5xx) names the request.
fn request_spans() -> RequestSpans {
    fn span(request: &Request) -> tracing::Span {
        // At warn, devd's default filter: a span below the filter is off, and the
        // warnings and errors inside it would not carry it.
        // An origin-form target (`/path?query`, every request but a proxy's) as the
        // string it already is: `Uri`'s Display, piece by piece, was ~25 us of the
        // ~120 us of CPU a status answer took (debug build).
        let uri = request.uri();
        match uri.path_and_query().filter(|_| uri.scheme().is_none() && uri.authority().is_none()) {
            Some(target) => tracing::warn_span!("request", method = %request.method(), uri = %target.as_str()),
            None => tracing::warn_span!("request", method = %request.method(), uri = %uri),
        }
    }
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(span as fn(&Request) -> tracing::Span)
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Is `host` (a Host header value) this machine's loopback, with any port?
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:port
        rest.split_once(']').map_or(rest, |(name, _)| name)
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    matches!(name.to_ascii_lowercase().as_str(), "127.0.0.1" | "localhost" | "::1")
}

/// The authority a request is addressed to, as the server routes it: the request
/// line's authority (absolute-form, `GET http://host/path`; RFC 9112 §3.2.2 says it
/// wins over `Host`), else the one `Host` header. Two `Host` headers, or an
/// absolute-form authority that a `Host` header contradicts, are refused: a proxy or a
/// client could pick either one.
fn addressed_authority(request: &Request) -> Result<String, ApiError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "duplicate_host", "a request must carry one Host header, not several"));
    }
    let host = match host {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_host", "the Host header is not visible ASCII")
        })?),
    };
    match (request.uri().authority(), host) {
        (Some(authority), Some(host)) if !authority.as_str().eq_ignore_ascii_case(host) => {
            // Each one on its own must be loopback; then they must also agree.
            let foreign = [authority.as_str(), host].into_iter().find(|a| !is_loopback_host(a));
            if let Some(foreign) = foreign {
                return Ok(foreign.to_owned());
            }
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "host_mismatch",
                format!("the request line names {authority} but the Host header {host}"),
            ))
        }
        (Some(authority), _) => Ok(authority.as_str().to_owned()),
        (None, host) => Ok(host.unwrap_or("").to_owned()),
    }
}

async fn require_loopback_host(request: Request, next: Next) -> Response {
    let authority = match addressed_authority(&request) {
        Ok(authority) => authority,
        Err(refusal) => {
            tracing::warn!(code = refusal.code, message = %refusal.message, "refused a request with ambiguous Host");
            return refusal.into_response();
        }
    };
    if !is_loopback_host(&authority) {
        tracing::warn!(host = %authority, "refused a request addressed to a foreign host");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_host",
            "devd answers only requests addressed to 127.0.0.1, localhost or [::1]",
        )
        .into_response();
    }
    next.run(request).await
}

/// Compares in time that depends only on the lengths (the token's is not a secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

async fn require_token(State(state): State<ApiState>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "the bearer token is not devd's").into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no_token",
            "actions need `Authorization: Bearer <token>`; the token is in devd's state dir (.stand/token)",
        )
        .into_response(),
    }
}

async fn status(State(state): State<ApiState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.hub.snapshot_json())
}

fn known(state: &ApiState, name: &str) -> Result<crate::status::ServiceStatus, ApiError> {
    state.hub.service(name).ok_or_else(|| {
        let names: Vec<String> = state.hub.snapshot().services.into_iter().map(|s| s.name).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_service",
            format!("no service {name:?} in this stand; known: {}", names.join(", ")),
        )
    })
}

async fn service(State(state): State<ApiState>, Path(name): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(known(&state, &name)?))
}

/// The stand's readiness (Tilt's probe of the `devd` resource): 200 when the target
/// answers and every service runs its current build, else 503 with the reason.
async fn stand_ready(State(state): State<ApiState>) -> Response {
    match state.hub.snapshot().readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "reason": reason}))).into_response(),
    }
}

async fn ready(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let service = known(&state, &name)?;
    // The worst instance's health; null without instances.
    let health = service.health().map(crate::status::Health::as_str);
    // An unreachable target first: nothing the instances said is current then.
    let readiness = match state.hub.snapshot().target_unready() {
        Some(reason) => Err(reason),
        None => service.readiness(),
    };
    Ok(match readiness {
        // Degraded is ready (docs/CONTRACTS.md says why); `reason` then says what is degraded.
        Ok(note) => {
            (StatusCode::OK, Json(json!({"ready": true, "service": name, "health": health, "reason": note}))).into_response()
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "service": name, "health": health, "reason": reason})),
        )
            .into_response(),
    })
}

async fn act(state: &ApiState, name: String, action: Action) -> Result<Response, ApiError> {
    known(state, &name)?;
    state
        .actions
        .send(action.clone())
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", "devd is shutting down"))?;
    tracing::info!(?action, "action accepted");
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": true, "service": name}))).into_response())
}

async fn rebuild(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    act(&state, name.clone(), Action::Rebuild { service: name }).await
}

async fn restart(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    act(&state, name.clone(), Action::Restart { service: name }).await
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Replay events after this sequence number (like `Last-Event-ID`).
    after: Option<u64>,
}

async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(query.after)
        .unwrap_or(0);
    let (past, receiver) = state.hub.subscribe(after);
    let last = past.last().map_or(after, |e| e.seq);
    let live = stream::unfold((receiver, last), |(mut receiver, last)| async move {
        loop {
            match receiver.recv().await {
                Ok(event) if event.seq <= last => continue,
                Ok(event) => {
                    let seq = event.seq;
                    return Some((event, (receiver, seq)));
                }
                // A slow reader missed events: end the stream; the client reconnects
                // with Last-Event-ID and gets them from the history.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let mut stopping = state.stopping.clone();
    // Ends when devd stops (or is gone): the client sees the end of the stream.
    let stopped = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    let stream = stream::iter(past).chain(live).take_until(stopped).map(|event| Ok(to_sse(&event)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.seq.to_string())
        .event(event.kind())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::status::StandStatus;

    /// The real router, served on loopback the way the daemon serves it.
    async fn served() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (actions, _) = mpsc::channel(1);
        let (_, stopping) = watch::channel(false);
        let app = app(ApiState { hub: StatusHub::new(StandStatus::default()), token: Arc::from("t"), actions, stopping });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// Writes exactly `request` on a fresh connection; returns the status code and body.
    async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection (Connection: close)")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let code = answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status line: {answer:?}"));
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (code, body)
    }

    /// What is logged while a request is served carries the request's span.
    #[tokio::test]
    async fn refusals_and_5xx_are_logged_inside_the_request_span() {
        use tower::ServiceExt as _;

        let (logs, _guard) = crate::test_logs::capture_warnings();

        let (actions, closed) = mpsc::channel(1);
        drop(closed); // devd is shutting down: actions answer 503
        let (_, stopping) = watch::channel(false);
        let hub = StatusHub::new(StandStatus {
            services: vec![crate::status::ServiceStatus { name: "svc".into(), ..Default::default() }],
            ..StandStatus::default()
        });
        let app = app(ApiState { hub, token: Arc::from("t"), actions, stopping });
        let request = |method: &str, uri: &str, host: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header(header::HOST, host)
                .header(header::AUTHORIZATION, "Bearer t")
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let refused = app.clone().oneshot(request("GET", "/api/v1/status", "evil.example")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let failed = app.oneshot(request("POST", "/api/v1/services/svc/rebuild", "127.0.0.1")).await.unwrap();
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        let logs = logs.text();
        let line = |needle: &str| logs.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in {logs}")).to_owned();
        assert!(line("foreign host").contains("request{method=GET uri=/api/v1/status}"), "{logs}");
        let failed = line("request failed");
        assert!(failed.contains("request{method=POST uri=/api/v1/services/svc/rebuild}") && failed.contains("status=503"), "{logs}");
    }

    #[tokio::test]
    async fn the_host_check_judges_the_authority_the_server_routes_on() {
        let addr = served().await;
        let cases: &[(&str, &str, u16, &str)] = &[
            ("plain loopback", "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 200, "event_seq"),
            ("foreign Host", "GET /api/v1/status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", 403, "foreign_host"),
            (
                "absolute-form to a foreign authority, loopback Host",
                "GET http://evil.example/api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                403,
                "foreign_host",
            ),
            (
                "absolute-form to loopback, foreign Host",
                "GET http://127.0.0.1/api/v1/status HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
                403,
                "foreign_host",
            ),
            (
                "absolute-form and Host disagree (both loopback)",
                "GET http://localhost:7700/api/v1/status HTTP/1.1\r\nHost: 127.0.0.1:7700\r\nConnection: close\r\n\r\n",
                400,
                "host_mismatch",
            ),
            (
                "absolute-form to loopback, same Host",
                "GET http://127.0.0.1:7700/api/v1/status HTTP/1.1\r\nHost: 127.0.0.1:7700\r\nConnection: close\r\n\r\n",
                200,
                "event_seq",
            ),
            (
                "two Host headers",
                "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
                400,
                "duplicate_host",
            ),
            (
                "two equal loopback Host headers",
                "GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                400,
                "duplicate_host",
            ),
            ("no Host (HTTP/1.0)", "GET /api/v1/status HTTP/1.0\r\n\r\n", 403, "foreign_host"),
        ];
        let mut wrong = Vec::new();
        for (what, request, code, needle) in cases {
            let (got, body) = raw(addr, request).await;
            if got != *code || !body.contains(needle) {
                wrong.push(format!("{what}: expected {code} with {needle:?}, got {got} {body}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1", "127.0.0.1:7700", "localhost", "LOCALHOST:1", "[::1]:7700", "[::1]"] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["", "example.com", "evil.localhost.example:7700", "127.0.0.1.nip.io", "10.0.0.1:7700", "localhost:abc"] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
