//! The dev-only HTTP endpoint: `PUT /v1/binary`, `GET /v1/status`,
//! `POST /v1/restart`, all behind a bearer token. Errors have one shape:
//! `{"error":{"code","message"}}` (plus `details` for a rollback).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http_body_util::BodyExt;
use stand_shim_protocol::{
    code, valid_lib, ErrorBody, ErrorDetails, ErrorInfo, Swapped, BINARY_PATH, LIBS_PATH,
    RESTART_PATH, SHA_HEADER, STATUS_PATH, TOKEN_HEADER,
};
use tokio::sync::oneshot;

use crate::status::{self, ExitRecord, Rollback, Shared, Status};
use crate::supervisor::{Handle, RestartError, Started};
use crate::upload::{self, UploadError};

pub use stand_shim_protocol::MAX_UPLOAD_BYTES;

pub struct App {
    pub supervisor: Handle,
    pub status: Shared,
    pub token: String,
    pub binary: PathBuf,
    pub grace: Duration,
    /// The shim owns the service's sockets: swaps start the new child beside the old
    /// one and stop the old one once the new one is ready.
    pub overlap: bool,
    /// With `overlap`: how long a new child may take to report ready.
    pub ready_timeout: Duration,
    /// Serializes everything that replaces the binary or restarts the child. It holds
    /// what only a swap changes: while the current binary is one that gave way before
    /// its probation was over, the last binary that lived through a whole probation,
    /// kept as `<binary>.good`. A binary that dies on probation is replaced by that
    /// one, not by one that never proved itself (it may crash a moment later).
    pub ops: tokio::sync::Mutex<Option<Good>>,
    /// Verified uploads waiting for `ops`: a binary on probation gives way to them.
    pub newer: Newer,
}

/// The last binary that lived through a whole probation (or the one the shim started
/// with), while a newer one that gave way early runs.
#[derive(Clone, Debug)]
pub struct Good {
    pub sha256: Option<String>,
}

/// Counts the verified uploads that wait for their swap. A binary on probation whose
/// successor is already here ends its probation at once (it answers 200): the next
/// swap replaces it anyway, and two saves in a row are not a second apart because
/// the first one's probation ran to its end. The rollback target stays the last
/// binary that lived through a whole probation ([`App::ops`]).
#[derive(Default)]
pub struct Newer {
    waiting: std::sync::atomic::AtomicUsize,
    arrived: tokio::sync::Notify,
}

/// One waiting upload; dropped once its swap holds `ops`.
struct Waiting<'a>(&'a Newer);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Newer {
    fn arrive(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.arrived.notify_waiters();
        Waiting(self)
    }

    /// Resolves once an upload waits for its swap (at once if one does).
    async fn waiting(&self) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.waiting.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return;
            }
            arrived.await;
        }
    }
}

/// Resolves with the held child's exit report; never if it has none.
async fn exited(exit: &mut Option<oneshot::Receiver<ExitRecord>>) -> ExitRecord {
    match exit.as_mut() {
        Some(rx) => match rx.await {
            Ok(record) => record,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// How a probation ended without the new child exiting.
enum Probation {
    Served,
    /// A newer upload is waiting: this one gave way early.
    GaveWay,
}

/// Waits out the probation of a new child (`rest`), or less when a newer upload
/// arrives. `Err`: the child exited meanwhile.
async fn probation(
    app: &App,
    started: &mut Started,
    rest: Duration,
) -> Result<Probation, ExitRecord> {
    let exit = exited(&mut started.exit);
    tokio::select! {
        biased;
        record = exit => Err(record),
        () = tokio::time::sleep(rest) => Ok(Probation::Served),
        () = app.newer.waiting() => Ok(Probation::GaveWay),
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(BINARY_PATH, put(put_binary))
        .route(STATUS_PATH, get(get_status))
        .route(RESTART_PATH, post(post_restart))
        .route(&format!("{LIBS_PATH}/{{sha256}}/{{name}}"), get(get_lib).put(put_lib))
        .fallback(|| async {
            AppError::new(StatusCode::NOT_FOUND, code::NOT_FOUND, "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            AppError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                code::METHOD_NOT_ALLOWED,
                "method not allowed here",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), require_token))
        .with_state(app)
}

#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Boxed: only a rollback or a failed restart carries details, and a small
    /// error keeps every handler's `Result` small (clippy::result_large_err).
    details: Option<Box<ErrorDetails>>,
}

impl AppError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code.to_owned(),
                message: self.message,
                details: self.details.map(|d| *d),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<UploadError> for AppError {
    fn from(e: UploadError) -> Self {
        let (status, code) = match &e {
            UploadError::HashMismatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, code::HASH_MISMATCH),
            UploadError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, code::TOO_LARGE),
            UploadError::Body(_) => (StatusCode::BAD_REQUEST, code::BAD_BODY),
            UploadError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, code::IO),
        };
        AppError::new(status, code, e.to_string())
    }
}

impl From<RestartError> for AppError {
    fn from(e: RestartError) -> Self {
        match e {
            RestartError::ShuttingDown => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                code::SHUTTING_DOWN,
                e.to_string(),
            ),
            RestartError::Spawn(_) => AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::SPAWN_FAILED,
                e.to_string(),
            ),
        }
    }
}

/// Constant-time comparison (the token is a secret; it is never logged).
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    // `X-Stand-Token` first: through the Kubernetes pod proxy, `Authorization` carries
    // the API server's credentials, not ours.
    let headers = req.headers();
    let given = headers
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim);
    let message = match given {
        Some(t) if token_matches(t.as_bytes(), app.token.as_bytes()) => return next.run(req).await,
        Some(_) => "wrong token",
        None => "missing token (Authorization: Bearer <token>, or X-Stand-Token: <token>)",
    };
    drain(req.into_body()).await;
    AppError::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message).into_response()
}

/// Reads and discards a request body (bounded in size and time), so that a client
/// still sending an upload gets the error answer rather than a broken pipe.
async fn drain(body: Body) {
    let mut body = body;
    let mut seen = 0u64;
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > MAX_UPLOAD_BYTES {
                return;
            }
        }
    })
    .await;
}

/// What `GET` and `PUT /v1/libs/<sha256>/<name>` answer with 200.
#[derive(serde::Serialize)]
struct Lib {
    sha256: String,
    name: String,
}

/// The file of a library, or a 400 for a name or hash the shim does not take.
fn lib_file(app: &App, sha256: &str, name: &str) -> Result<PathBuf, AppError> {
    if !valid_lib(sha256, name) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            code::BAD_LIBRARY,
            "a library is /v1/libs/<sha256: 64 lowercase hex digits>/<file name ending in .so>",
        ));
    }
    Ok(upload::lib_path(&app.binary, sha256, name))
}

async fn get_lib(
    State(app): State<Arc<App>>,
    UrlPath((sha256, name)): UrlPath<(String, String)>,
) -> Result<Json<Lib>, AppError> {
    if lib_file(&app, &sha256, &name)?.is_file() {
        Ok(Json(Lib { sha256, name }))
    } else {
        Err(AppError::new(StatusCode::NOT_FOUND, code::NOT_FOUND, format!("no library {sha256}/{name}")))
    }
}

/// Stores a library (verified against the sha256 of its path) for the binaries
/// linked against it; one that is there already stays as it is.
async fn put_lib(
    State(app): State<Arc<App>>,
    UrlPath((sha256, name)): UrlPath<(String, String)>,
    body: Body,
) -> Result<Json<Lib>, AppError> {
    let path = match lib_file(&app, &sha256, &name) {
        Ok(path) => path,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    if path.is_file() {
        drain(body).await;
        return Ok(Json(Lib { sha256, name }));
    }
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|source| {
            AppError::from(UploadError::Io { what: "creating", path: dir.to_path_buf(), source })
        })?;
    }
    let staged = upload::stage(&path, body, &sha256, MAX_UPLOAD_BYTES).await?;
    tracing::info!(sha256 = %staged.sha256, bytes = staged.size, %name, "library stored");
    let at = path.clone();
    blocking(move || upload::install_lib(&at, staged)).await?;
    Ok(Json(Lib { sha256, name }))
}

async fn get_status(State(app): State<Arc<App>>) -> Json<Status> {
    Json(app.status.get())
}

async fn post_restart(State(app): State<Arc<App>>) -> Result<Json<Swapped>, AppError> {
    // In its own task: a client that goes away does not cancel a restart half-way.
    let task = tokio::spawn(async move {
        let _ops = app.ops.lock().await;
        if app.overlap {
            return restart_overlapping(&app).await;
        }
        let started = app.supervisor.restart(false, None).await?;
        Ok(Json(Swapped {
            sha256: Some(started.sha256),
            pid: started.pid,
            restarts: started.restarts,
        }))
    });
    task.await.map_err(|e| {
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, e.to_string())
    })?
}

/// A restart without a gap: a new child from the same binary, the old one stopped
/// once the new one is ready; if the new one is not, the old one runs on (409).
async fn restart_overlapping(app: &App) -> Result<Json<Swapped>, AppError> {
    let start = Instant::now();
    let mut started = app.supervisor.candidate(app.status.get().sha256).await?;
    if let Err((reason, _)) = wait_ready(app, &mut started, start).await {
        app.supervisor.discard().await;
        tracing::warn!(%reason, "restart failed; the previous child keeps serving");
        let mut err = AppError::new(StatusCode::CONFLICT, code::RESTART_FAILED, reason);
        err.details = Some(Box::new(ErrorDetails {
            serving_pid: app.status.get().pid,
            ..ErrorDetails::default()
        }));
        return Err(err);
    }
    let gone = app.supervisor.promote().await;
    app.supervisor.release().await;
    if let Some(gone) = gone {
        let _ = gone.await;
    }
    tracing::info!(pid = started.pid, ms = start.elapsed().as_millis() as u64, "restarted without a gap");
    Ok(Json(Swapped {
        sha256: Some(started.sha256),
        pid: started.pid,
        restarts: started.restarts,
    }))
}

/// Waits until a candidate reports ready. Err: why it will not (it exited, or the
/// ready timeout passed), for the answer and the rollback record.
async fn wait_ready(
    app: &App,
    started: &mut Started,
    start: Instant,
) -> Result<(), (String, Option<ExitRecord>)> {
    let never = || async { std::future::pending::<()>().await };
    let Started { ready, exit, .. } = started;
    let ready = async {
        match ready.as_mut() {
            Some(rx) => {
                if rx.await.is_err() {
                    never().await;
                }
            }
            None => never().await,
        }
    };
    let exit = exited(exit);
    tokio::select! {
        () = ready => Ok(()),
        record = exit => Err((exit_reason(&record, start), Some(record))),
        () = tokio::time::sleep(app.ready_timeout) => Err((
            format!(
                "new binary did not report ready (READY=1 on NOTIFY_SOCKET) within {} ms",
                app.ready_timeout.as_millis()
            ),
            None,
        )),
    }
}

/// "new binary exited N ms after start (exit code 3); stderr: ..."
fn exit_reason(record: &ExitRecord, start: Instant) -> String {
    let mut reason = format!(
        "new binary exited {} ms after start ({})",
        start.elapsed().as_millis(),
        record.description
    );
    if !record.stderr_tail.is_empty() {
        let last: Vec<&str> = record
            .stderr_tail
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(String::as_str)
            .collect();
        reason.push_str("; stderr: ");
        reason.push_str(&last.join(" | "));
    }
    reason
}

async fn put_binary(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Swapped>, AppError> {
    let Some(expected) = headers
        .get(SHA_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        drain(body).await;
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            code::MISSING_SHA256,
            "header X-Stand-Sha256 is required",
        ));
    };
    if !upload::is_sha256_hex(expected) {
        drain(body).await;
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            code::BAD_SHA256,
            "X-Stand-Sha256 must be 64 hex digits (the sha256 of the body)",
        ));
    }
    let received = Instant::now();
    let staged = upload::stage(&app.binary, body, expected, MAX_UPLOAD_BYTES).await?;
    tracing::info!(sha256 = %staged.sha256, bytes = staged.size, ms = received.elapsed().as_millis() as u64, "upload verified");
    // In its own task: swap, restart and a possible rollback always run to the end.
    let task = tokio::spawn(swap(app, staged));
    task.await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, e.to_string()))?
}

async fn swap(app: Arc<App>, staged: upload::Staged) -> Result<Json<Swapped>, AppError> {
    let mut ops = {
        let _waiting = app.newer.arrive();
        app.ops.lock().await
    };
    let sha256 = staged.sha256.clone();
    let previous = app.status.get().sha256;
    // `Some`: the binary being replaced never finished its probation.
    let good = ops.clone();
    let binary = app.binary.clone();
    blocking(move || upload::install(&binary, staged)).await?;
    let start = Instant::now();
    let verdict = if app.overlap {
        swap_overlapping(&app, &sha256, start).await?
    } else {
        swap_stop_start(&app, &sha256, start).await?
    };
    let (reason, exit, restore) = match verdict {
        Ok((swapped, Probation::Served)) => {
            *ops = None;
            let binary = app.binary.clone();
            if let Err(e) = blocking(move || upload::forget_good(&binary)).await {
                tracing::warn!(error = %e.message, "cannot remove the kept good binary");
            }
            return Ok(Json(swapped));
        }
        Ok((swapped, Probation::GaveWay)) => {
            if good.is_none() {
                // The binary just replaced (`.prev`) did live through its probation.
                let binary = app.binary.clone();
                match blocking(move || upload::keep_good(&binary)).await {
                    Ok(()) => *ops = Some(Good { sha256: previous }),
                    Err(e) => tracing::warn!(error = %e.message, "cannot keep the previous binary as the good one; a rollback restores the one that gave way"),
                }
            }
            return Ok(Json(swapped));
        }
        Err(rejected) => rejected,
    };
    // A child still serving the replaced binary keeps it; a restart takes the last
    // binary that lived through its probation (unless that is the one just rejected:
    // the good one uploaded again, and dead this time).
    let mut restored_sha256 = previous.clone();
    let mut from = upload::Kept::Prev;
    if let (Restore::Start, Some(good)) = (&restore, good) {
        if good.sha256.as_deref() != Some(sha256.as_str()) {
            from = upload::Kept::Good;
            restored_sha256 = good.sha256;
        }
    }
    tracing::warn!(%sha256, %reason, restored = ?restored_sha256, "rolling back");
    let binary = app.binary.clone();
    if let Err(e) = blocking(move || upload::restore(&binary, from)).await {
        if from == upload::Kept::Prev {
            return Err(e);
        }
        // The good one is gone (removed by hand?): the one that gave way, then.
        tracing::warn!(error = %e.message, "cannot restore the kept good binary; restoring the one it replaced");
        restored_sha256 = previous;
        let binary = app.binary.clone();
        blocking(move || upload::restore(&binary, upload::Kept::Prev)).await?;
    }
    let restored_pid = match restore {
        // The previous child never stopped: it serves on, nothing to start.
        Restore::StillServing => app.status.get().pid,
        Restore::Start => {
            *ops = None;
            app.supervisor.restart(false, restored_sha256.clone()).await.ok().map(|s| s.pid)
        }
    };
    let rollback = Rollback {
        at: status::now(),
        rejected_sha256: sha256,
        restored_sha256,
        reason: reason.clone(),
        exit,
    };
    app.status
        .update(|s| s.last_rollback = Some(rollback.clone()));
    let mut err = AppError::new(StatusCode::CONFLICT, code::ROLLED_BACK, reason);
    err.details = Some(Box::new(ErrorDetails {
        rollback: Some(rollback),
        restored_pid,
        ..ErrorDetails::default()
    }));
    Err(err)
}

/// After a rejected binary: is the previous child still serving, or must it be started?
enum Restore {
    StillServing,
    Start,
}

type Verdict = Result<(Swapped, Probation), (String, Option<ExitRecord>, Restore)>;

/// Without shared sockets: stop the old child, start the new one on probation.
async fn swap_stop_start(app: &App, sha256: &str, start: Instant) -> Result<Verdict, AppError> {
    match app.supervisor.restart(true, Some(sha256.to_owned())).await {
        Ok(mut started) => match probation(app, &mut started, app.grace).await {
            Ok(how) => {
                app.supervisor.release().await;
                tracing::info!(pid = started.pid, %sha256, gave_way = matches!(how, Probation::GaveWay), "new binary running");
                Ok(Ok((swapped(sha256, &started), how)))
            }
            Err(record) => Ok(Err((exit_reason(&record, start), Some(record), Restore::Start))),
        },
        Err(RestartError::Spawn(record)) => Ok(Err((
            format!("new binary did not start: {}", record.description),
            Some(*record),
            Restore::Start,
        ))),
        Err(e) => Err(e.into()),
    }
}

/// With shared sockets: the new child starts beside the old one; the old one is
/// stopped once the new one is ready (it drains); the new one then serves out the
/// rest of its grace period on probation.
async fn swap_overlapping(app: &App, sha256: &str, start: Instant) -> Result<Verdict, AppError> {
    let mut started = match app.supervisor.candidate(Some(sha256.to_owned())).await {
        Ok(started) => started,
        Err(RestartError::Spawn(record)) => {
            return Ok(Err((
                format!("new binary did not start: {}", record.description),
                Some(*record),
                Restore::StillServing,
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if let Err((reason, exit)) = wait_ready(app, &mut started, start).await {
        app.supervisor.discard().await;
        return Ok(Err((reason, exit, Restore::StillServing)));
    }
    let gone = app.supervisor.promote().await;
    let rest = app.grace.saturating_sub(start.elapsed());
    let verdict = probation(app, &mut started, rest).await;
    if let Some(gone) = gone {
        let _ = gone.await;
    }
    match verdict {
        Ok(how) => {
            app.supervisor.release().await;
            let ms = start.elapsed().as_millis() as u64;
            match how {
                Probation::Served => tracing::info!(pid = started.pid, %sha256, ms, "new binary serving, the previous one stopped"),
                Probation::GaveWay => tracing::info!(pid = started.pid, %sha256, ms, "new binary serving, the previous one stopped; a newer upload ends its probation"),
            }
            Ok(Ok((swapped(sha256, &started), how)))
        }
        // Ready, then dead within the grace period: the old one is already gone.
        Err(record) => Ok(Err((exit_reason(&record, start), Some(record), Restore::Start))),
    }
}

fn swapped(sha256: &str, started: &Started) -> Swapped {
    Swapped {
        sha256: Some(sha256.to_owned()),
        pid: started.pid,
        restarts: started.restarts,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UploadError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, code::INTERNAL, e.to_string()))?
        .map_err(AppError::from)
}
