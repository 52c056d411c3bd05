//! The routes every service has: `/health`, `/db-status`, `/api/<name>` and its items.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::db::{Database, Migration};
use crate::error::AppError;

/// Longest item name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// The schema of the items table, shared by every service (each in its own database).
pub const ITEMS_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "create items",
    sql: "CREATE TABLE IF NOT EXISTS items (\
            id bigserial PRIMARY KEY, \
            name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200), \
            created_at timestamptz NOT NULL DEFAULT now())",
}];

/// What a service says about itself at `/api/<name>`.
#[derive(Clone, Debug)]
pub struct ServiceInfo {
    pub name: &'static str,
    pub version: &'static str,
    /// The service's own greeting, shown in its description.
    pub message: &'static str,
}

#[derive(Clone)]
pub struct AppState {
    pub info: ServiceInfo,
    pub db: Database,
    pub started: Instant,
}

impl AppState {
    pub fn new(info: ServiceInfo, db: Database) -> Arc<Self> {
        Arc::new(Self { info, db, started: Instant::now() })
    }
}

/// The service's router. Tests call it with `oneshot`; `serve` binds it to a port.
pub fn app(state: Arc<AppState>) -> Router {
    let base = format!("/api/{}", state.info.name);
    Router::new()
        .route("/health", get(health))
        .route("/db-status", get(db_status))
        .route(&base, get(describe))
        .route(&format!("{base}/items"), get(list_items).post(create_item))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(request_spans())
        .with_state(state)
}

/// One `request{method, uri, version}` span per request, at info so that it is there
/// under the default filter: what a handler logs (a failed query, a 5xx) carries the
/// request it belongs to. Responses are logged at debug (devd polls `/health` every
/// second or two); 5xx are logged by [`AppError`] itself, with what went wrong.
fn request_spans() -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    tower_http::trace::DefaultMakeSpan,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    (),
    (),
    (),
> {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
    TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
        .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    timestamp: DateTime<Utc>,
    database_connected: bool,
    message: String,
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    let connected = state.db.is_connected().await;
    let (status, message) = match (state.db.is_configured(), connected) {
        (false, _) => ("ok", "running without a database (none configured)".to_owned()),
        (true, true) => ("ok", "database connected".to_owned()),
        (true, false) => {
            let why = state.db.last_status().await.error.unwrap_or_else(|| "connecting".to_owned());
            ("degraded", format!("database unavailable: {why}"))
        }
    };
    Json(Health { status, timestamp: Utc::now(), database_connected: connected, message })
}

async fn db_status(State(state): State<Arc<AppState>>) -> Json<crate::db::DbStatus> {
    Json(state.db.check().await)
}

async fn describe(State(state): State<Arc<AppState>>) -> Json<Value> {
    let info = &state.info;
    Json(json!({
        "name": info.name,
        "version": info.version,
        "message": info.message,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "database_configured": state.db.is_configured(),
    }))
}

#[derive(Debug, Serialize)]
pub struct Item {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    name: String,
}

impl NewItem {
    fn validated(self) -> Result<String, AppError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(AppError::invalid("field `name` must not be empty"));
        }
        // PostgreSQL's text cannot hold U+0000 (the insert would fail as a database
        // error); the other control characters would be stored but make a name that
        // prints badly (a newline, an escape sequence): a name is one line of text.
        if let Some((at, c)) = name.chars().enumerate().find(|(_, c)| c.is_control()) {
            return Err(AppError::invalid(format!(
                "field `name` contains the control character U+{:04X} at character {}; names are one line of printable text",
                u32::from(c),
                at + 1
            )));
        }
        let chars = name.chars().count();
        if chars > MAX_NAME_CHARS {
            return Err(AppError::invalid(format!(
                "field `name` is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"
            )));
        }
        Ok(name)
    }
}

async fn create_item(
    State(state): State<Arc<AppState>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Json(value) = body.map_err(rejection)?;
    if !value.is_object() {
        return Err(AppError::invalid(r#"the body must be a JSON object like {"name": "..."}"#));
    }
    let new: NewItem = serde_json::from_value(value).map_err(|e| AppError::invalid(format!("invalid item: {e}")))?;
    let name = new.validated()?;
    let client = state.db.client().await?;
    let row = client
        .query_one("INSERT INTO items (name) VALUES ($1) RETURNING id, name, created_at", &[&name])
        .await
        .map_err(crate::db::DbError::from)?;
    let item = Item { id: row.get(0), name: row.get(1), created_at: row.get(2) };
    tracing::info!(id = item.id, "item stored");
    Ok((StatusCode::CREATED, Json(item)))
}

/// A body axum's `Json` refused: each kind of refusal keeps its status and gets a code
/// of its own (413 and 415 are not malformed JSON).
fn rejection(rejection: JsonRejection) -> AppError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "invalid_json",
    };
    AppError::BadRequest { code, message: rejection.body_text(), status }
}

async fn list_items(State(state): State<Arc<AppState>>) -> Result<Json<Vec<Item>>, AppError> {
    let client = state.db.client().await?;
    let rows = client
        .query("SELECT id, name, created_at FROM items ORDER BY id", &[])
        .await
        .map_err(crate::db::DbError::from)?;
    Ok(Json(rows.iter().map(|r| Item { id: r.get(0), name: r.get(1), created_at: r.get(2) }).collect()))
}

async fn not_found(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::NotFound { method: method.to_string(), path: uri.path().to_owned() }
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> AppError {
    AppError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_owned() }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn state() -> Arc<AppState> {
        AppState::new(ServiceInfo { name: "svc", version: "1.2.3", message: "hi" }, Database::none())
    }

    async fn call(method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let response = app(state()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: body is not JSON ({e}): {bytes:?}"));
        (status, json)
    }

    #[tokio::test]
    async fn health_without_database_is_ok() {
        let (status, body) = call("GET", "/health", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["database_connected"], false);
        assert!(body["timestamp"].as_str().unwrap().contains('T'));
        assert!(body["message"].as_str().unwrap().contains("without a database"));
    }

    #[tokio::test]
    async fn db_status_without_database_says_not_connected() {
        let (status, body) = call("GET", "/db-status", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["connected"], false);
        assert_eq!(body["configured"], false);
        assert!(body["version"].is_null() && body["tables_count"].is_null());
    }

    #[tokio::test]
    async fn describes_the_service() {
        let (status, body) = call("GET", "/api/svc", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["name"], "svc");
        assert_eq!(body["version"], "1.2.3");
        assert!(body["uptime_seconds"].as_f64().unwrap() >= 0.0);
    }

    #[tokio::test]
    async fn items_without_database_answer_503() {
        let (status, body) = call("GET", "/api/svc/items", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "database_not_configured");
        let (status, _) = call("POST", "/api/svc/items", Some(r#"{"name":"x"}"#)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Every bad input gets a 4xx JSON error that names the problem.
    #[tokio::test]
    async fn bad_input_is_a_named_4xx() {
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(MAX_NAME_CHARS + 1));
        let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
            ("POST", "/api/svc/items", Some("{not json"), 400, "parse"),
            ("POST", "/api/svc/items", Some("{}"), 422, "missing field `name`"),
            ("POST", "/api/svc/items", Some(r#"{"name":""}"#), 422, "must not be empty"),
            ("POST", "/api/svc/items", Some(r#"{"name":"   "}"#), 422, "must not be empty"),
            ("POST", "/api/svc/items", Some(r#"{"name":42}"#), 422, "invalid type: integer `42`"),
            ("POST", "/api/svc/items", Some("[]"), 422, "must be a JSON object"),
            ("POST", "/api/svc/items", Some(&long), 422, "at most 200"),
            ("POST", "/api/svc/items", Some(r#"{"name":"a","extra":1}"#), 422, "unknown field `extra`"),
            ("POST", "/api/svc/items", Some(r#"{"name":"nul\u0000byte"}"#), 422, "field `name` contains the control character U+0000 at character 4"),
            ("POST", "/api/svc/items", Some(r#"{"name":"two\nlines"}"#), 422, "U+000A"),
            ("POST", "/api/svc/items", Some(r#"{"name":"esc\u001b[31m"}"#), 422, "U+001B"),
            ("POST", "/api/svc/items", Some(r#"{"name":"c1\u0085c1"}"#), 422, "U+0085"),
            ("GET", "/api/nope", None, 404, "no route for GET /api/nope"),
            ("DELETE", "/api/svc/items", None, 405, "DELETE is not allowed"),
        ];
        for (method, uri, body, expected, needle) in cases {
            let (status, json) = call(method, uri, *body).await;
            assert_eq!(status.as_u16(), *expected, "{method} {uri} {body:?}: {json}");
            let message = json["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{method} {uri} {body:?}: {message:?} should contain {needle:?}");
        }
    }

    async fn answer(request: Request<Body>) -> (StatusCode, Value) {
        let response = app(state()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn missing_content_type_is_415_unsupported_media_type() {
        let request = Request::post("/api/svc/items").body(Body::from(r#"{"name":"a"}"#)).unwrap();
        let (status, body) = answer(request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_payload_too_large() {
        // axum's default body limit is 2 MB.
        let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(3 * 1024 * 1024));
        let request = Request::post("/api/svc/items")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(big))
            .unwrap();
        let (status, body) = answer(request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    }

    #[tokio::test]
    async fn malformed_json_keeps_the_invalid_json_code() {
        let request = Request::post("/api/svc/items")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .unwrap();
        let (status, body) = answer(request).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_json", "{body}");
    }

    #[test]
    fn printable_text_with_spaces_and_non_ascii_is_accepted() {
        let name = NewItem { name: "  Grüße, 世界 — tab-free  ".to_owned() }.validated().unwrap();
        assert_eq!(name, "Grüße, 世界 — tab-free");
    }

    #[test]
    fn two_hundred_characters_are_accepted_and_trimmed() {
        let name = NewItem { name: format!("  {}  ", "é".repeat(MAX_NAME_CHARS)) }.validated().unwrap();
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
    }
}
