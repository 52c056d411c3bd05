//! The client side of the shim protocol (devd/shim/README.md): `PUT /v1/binary`,
//! `GET /v1/status`, `POST /v1/restart`, plus the service's `GET /health`.

use std::path::Path;
use std::time::Duration;

use stand_shim_protocol::{Refusal, BINARY_PATH, RESTART_PATH, SHA_HEADER, STATUS_PATH, TOKEN_HEADER};

use super::Instance;
use crate::status::HealthReport;

/// Upload plus the shim's grace period; a debug binary of ~50 MB over loopback takes
/// well under a second.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `{sha256, pid, restarts}`: what a swap or a restart answers.
pub type ShimReply = stand_shim_protocol::Swapped;

/// `GET /v1/status`.
pub type ShimStatus = stand_shim_protocol::Status;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The new binary exited within the grace period; the previous one runs again.
    #[error("rolled back: {reason}")]
    RolledBack { reason: String },
    #[error("shim at {url} refused the request ({status}): {message}")]
    Refused { url: String, status: u16, code: String, message: String },
    #[error("shim at {url} is not reachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn request(http: &reqwest::Client, method: reqwest::Method, instance: &Instance, path: &str) -> (String, reqwest::RequestBuilder) {
    let url = format!("{}{path}", instance.shim_url);
    // Both forms of the token: `X-Stand-Token` is the one that passes a proxy that owns
    // `Authorization` (a target behind one overrides these methods or its client).
    let builder = http
        .request(method, &url)
        .header(TOKEN_HEADER, &instance.shim_token)
        .bearer_auth(&instance.shim_token);
    (url, builder)
}

async fn answer<T: for<'de> serde::Deserialize<'de>>(url: String, response: Result<reqwest::Response, reqwest::Error>) -> Result<T, ShimError> {
    let response = response.map_err(|source| ShimError::Unreachable { url: url.clone(), source })?;
    let status = response.status();
    if status.is_success() {
        return response.json().await.map_err(|source| ShimError::Unreachable { url, source });
    }
    let body = response.bytes().await.unwrap_or_default();
    match Refusal::from_answer(status.as_u16(), &body) {
        Refusal::RolledBack { reason } => Err(ShimError::RolledBack { reason }),
        Refusal::Other { status, code, message } => Err(ShimError::Refused { url, status, code, message }),
    }
}

pub async fn put_binary(http: &reqwest::Client, instance: &Instance, binary: &Path, sha256: &str) -> Result<ShimReply, ShimError> {
    let body = tokio::fs::read(binary)
        .await
        .map_err(|source| ShimError::Read { path: binary.display().to_string(), source })?;
    let (url, builder) = request(http, reqwest::Method::PUT, instance, BINARY_PATH);
    let response = builder.header(SHA_HEADER, sha256).timeout(PUT_TIMEOUT).body(body).send().await;
    answer(url, response).await
}

pub async fn restart(http: &reqwest::Client, instance: &Instance) -> Result<ShimReply, ShimError> {
    let (url, builder) = request(http, reqwest::Method::POST, instance, RESTART_PATH);
    answer(url, builder.timeout(PUT_TIMEOUT).send().await).await
}

pub async fn status(http: &reqwest::Client, instance: &Instance) -> Result<ShimStatus, ShimError> {
    let (url, builder) = request(http, reqwest::Method::GET, instance, STATUS_PATH);
    answer(url, builder.timeout(STATUS_TIMEOUT).send().await).await
}

pub async fn health(http: &reqwest::Client, instance: &Instance) -> HealthReport {
    let url = format!("{}/health", instance.service_url);
    let response = match http.get(&url).timeout(HEALTH_TIMEOUT).send().await {
        Ok(response) => response,
        Err(e) => return HealthReport::unreachable(format!("no answer from /health: {e}")),
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(body) => HealthReport::from_answer(status, &body),
        Err(e) => HealthReport::unreachable(format!("/health answer cut off: {e}")),
    }
}
