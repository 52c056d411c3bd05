//! devd's HTTP API: status reads, readiness for Tilt (`/api/v1/ready` for the stand,
//! `/api/v1/services/<n>/ready` per service), an SSE event stream, and actions.
//!
//! Listens on loopback. Every request must carry a loopback `Host` (a page on another
//! site cannot reach it through DNS rebinding: 403). Actions need the bearer token that
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
use tokio::sync::{broadcast, mpsc};

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
        .with_state(state)
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

async fn require_loopback_host(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !is_loopback_host(host) {
        tracing::warn!(host, "refused a request with a foreign Host header");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_host",
            "devd answers only requests addressed to 127.0.0.1, localhost or [::1]",
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    Json(state.hub.snapshot())
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
    let readiness = match state.hub.snapshot().target_unready() {
        Some(reason) => Err(reason),
        None => service.readiness(),
    };
    Ok(match readiness {
        Ok(()) => (StatusCode::OK, Json(json!({"ready": true, "service": name}))).into_response(),
        Err(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"ready": false, "service": name, "reason": reason})))
                .into_response()
        }
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
    let stream = stream::iter(past).chain(live).map(|event| Ok(to_sse(&event)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default()
        .id(event.seq.to_string())
        .event(event.kind.clone())
        .data(serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

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
