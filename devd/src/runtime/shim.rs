//! The client side of the shim protocol (devd/shim/README.md): `PUT /v1/binary`,
//! `GET /v1/status`, `POST /v1/restart`, plus the service's `GET /health`.
//!
//! [`ShimClient`] knows the protocol once: each call's method and path, the token and
//! sha256 headers, the timeouts, the upload's content type, and how an answer becomes
//! a DTO or a [`ShimError`]. How a request reaches the instance is a [`ShimTransport`]:
//! [`DirectHttp`] (the docker target: published ports on loopback) or the kubernetes
//! target's pod proxy ([`super::kubernetes::PodProxy`]).

mod direct;

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use stand_shim_protocol::{code, lib_url_path, Refusal, BINARY_PATH, RESTART_PATH, SHA_HEADER, STATUS_PATH, TOKEN_HEADER};

pub use direct::DirectHttp;

use super::Instance;
use crate::build::SharedLib;
use crate::status::HealthReport;

/// A restart, or an upload's fixed part (the shim's grace period included); an upload
/// also gets [`upload_timeout`]'s time for its bytes.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an upload of `bytes` may take: [`PUT_TIMEOUT`] plus a second per MB (a
/// 100 MB debug binary to a remote cluster through the API server's pod proxy at
/// 10 Mbit/s needs ~80 s; over loopback it takes well under a second).
fn upload_timeout(bytes: usize) -> Duration {
    PUT_TIMEOUT + Duration::from_secs((bytes / 1_000_000) as u64)
}
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// The service's own health path (not the shim's).
const HEALTH_PATH: &str = "/health";

/// `{sha256, pid, restarts}`: what a swap or a restart answers.
pub type ShimReply = stand_shim_protocol::Swapped;

/// `GET /v1/status`.
pub type ShimStatus = stand_shim_protocol::Status;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The new binary exited within the grace period; the previous one runs again.
    #[error("rolled back: {reason}")]
    RolledBack { reason: String },
    /// A non-2xx answer: the shim's own (its status and `error.code`), or that of what
    /// stands between devd and the shim (the Kubernetes API server: code
    /// `kubernetes_api`).
    #[error("shim at {url} refused the request ({status}): {message}")]
    Refused { url: String, status: u16, code: String, message: String },
    #[error("shim at {url} is not reachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A 2xx answer that is not the protocol's DTO.
    #[error("shim at {url} sent an answer devd does not understand: {detail}")]
    BadAnswer { url: String, detail: String },
    /// The request cannot be sent as it is (a token that is no header value).
    #[error("cannot send a request to the shim at {url}: {detail}")]
    BadRequest { url: String, detail: String },
    /// A `PUT` of a shared library answered 404: the shim predates `/v1/libs` (an
    /// image built before devd linked against shared libraries), and the binary,
    /// which needs them, is not sent. The daemon then links the service statically
    /// (crate::deliver).
    #[error(
        "the shim at {url} takes no shared libraries (its image predates them): devd links this service's binaries \
         statically from now on; to have the shared library again, rebuild the service's image (`devd image build`, \
         or let Tilt rebuild it) and restart devd"
    )]
    NoLibraries { url: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One request to an instance, as the client built it.
#[derive(Debug)]
pub struct ShimRequest {
    pub method: Method,
    /// `{base}{path}`: an [`Instance`]'s `shim_url` or `service_url` and the path.
    pub url: String,
    pub headers: HeaderMap,
    /// `None`: no body at all.
    pub body: Option<Vec<u8>>,
    /// For the whole exchange, the answer's body included.
    pub timeout: Duration,
}

/// A whole answer: its status and its body.
#[derive(Debug)]
pub struct ShimAnswer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Why a transport has no answer from the instance itself.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing answered: connection refused, timed out, the answer cut off.
    #[error("{0}")]
    Unreachable(Box<dyn std::error::Error + Send + Sync>),
    /// What stands between devd and the instance answered for itself or failed (the
    /// Kubernetes API server: the pod is gone, RBAC, nothing listens on the port).
    /// `code` names it in [`ShimError::Refused`].
    #[error("{message}")]
    Proxy { status: u16, code: &'static str, message: String },
}

/// How requests reach an instance. Object safe (`&dyn ShimTransport`).
pub trait ShimTransport: Send + Sync {
    /// Sends one request and reads its whole answer within `request.timeout`.
    fn send(&self, request: ShimRequest) -> BoxFuture<'_, Result<ShimAnswer, TransportError>>;
}

/// The shim protocol over a transport.
pub struct ShimClient<'t, T: ShimTransport + ?Sized> {
    transport: &'t T,
}

impl<'t, T: ShimTransport + ?Sized> ShimClient<'t, T> {
    pub fn new(transport: &'t T) -> Self {
        Self { transport }
    }

    /// `PUT /v1/binary`: the file's bytes, verified by the shim against `sha256`.
    pub async fn put_binary(&self, instance: &Instance, binary: &Path, sha256: &str) -> Result<ShimReply, ShimError> {
        let body = tokio::fs::read(binary)
            .await
            .map_err(|source| ShimError::Read { path: binary.display().to_string(), source })?;
        let mut headers = token_headers(instance)?;
        headers.insert(SHA_HEADER, header_value(instance, SHA_HEADER, sha256)?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let timeout = upload_timeout(body.len());
        self.call(instance, Method::PUT, BINARY_PATH, headers, Some(body), timeout).await
    }

    /// The shared libraries a binary needs (`/v1/libs/<sha256>/<name>`): each one the
    /// shim does not have yet (`GET` answers 404 `not_found`) is put, verified by the
    /// shim against its sha256.
    pub async fn put_libs(&self, instance: &Instance, libs: &[SharedLib]) -> Result<(), ShimError> {
        for lib in libs {
            let path = lib_url_path(&lib.sha256, &lib.name);
            match self.call::<serde_json::Value>(instance, Method::GET, &path, token_headers(instance)?, None, STATUS_TIMEOUT).await {
                Ok(_) => continue,
                Err(ShimError::Refused { status: 404, code: ref found, .. }) if found == code::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
            let body = tokio::fs::read(&lib.path)
                .await
                .map_err(|source| ShimError::Read { path: lib.path.display().to_string(), source })?;
            let mut headers = token_headers(instance)?;
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            let timeout = upload_timeout(body.len());
            match self.call::<serde_json::Value>(instance, Method::PUT, &path, headers, Some(body), timeout).await {
                Ok(_) => {}
                // A shim that knows the path never answers its PUT with 404; an older
                // one answers so for every path it does not know.
                Err(ShimError::Refused { url, status: 404, code: found, .. }) if found == code::NOT_FOUND => {
                    return Err(ShimError::NoLibraries { url });
                }
                Err(e) => return Err(e),
            }
            tracing::debug!(instance = %instance.name, library = %lib.name, "shared library delivered");
        }
        Ok(())
    }

    /// `POST /v1/restart`: the shim restarts the service process.
    pub async fn restart(&self, instance: &Instance) -> Result<ShimReply, ShimError> {
        self.call(instance, Method::POST, RESTART_PATH, token_headers(instance)?, None, PUT_TIMEOUT).await
    }

    /// `GET /v1/status`: what the shim runs.
    pub async fn status(&self, instance: &Instance) -> Result<ShimStatus, ShimError> {
        self.call(instance, Method::GET, STATUS_PATH, token_headers(instance)?, None, STATUS_TIMEOUT).await
    }

    /// The service's own `GET /health` (no token): ok, degraded or unreachable.
    pub async fn health(&self, instance: &Instance) -> HealthReport {
        let request = ShimRequest {
            method: Method::GET,
            url: format!("{}{HEALTH_PATH}", instance.service_url),
            headers: HeaderMap::new(),
            body: None,
            timeout: HEALTH_TIMEOUT,
        };
        match self.transport.send(request).await {
            Ok(answer) => HealthReport::from_answer(answer.status.as_u16(), &answer.body),
            Err(e) => HealthReport::unreachable(format!("no answer from {HEALTH_PATH}: {e}")),
        }
    }

    async fn call<R: DeserializeOwned>(
        &self,
        instance: &Instance,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<R, ShimError> {
        let url = format!("{}{path}", instance.shim_url);
        let request = ShimRequest { method, url: url.clone(), headers, body, timeout };
        let answer = self.transport.send(request).await.map_err(|e| match e {
            TransportError::Unreachable(source) => ShimError::Unreachable { url: url.clone(), source },
            TransportError::Proxy { status, code, message } => {
                ShimError::Refused { url: url.clone(), status, code: code.to_owned(), message }
            }
        })?;
        read_answer(url, &answer)
    }
}

/// A 2xx answer as the DTO, anything else as the shim's refusal (409 `rolled_back`: a
/// rollback).
fn read_answer<R: DeserializeOwned>(url: String, answer: &ShimAnswer) -> Result<R, ShimError> {
    if answer.status.is_success() {
        return serde_json::from_slice(&answer.body).map_err(|e| ShimError::BadAnswer {
            detail: format!("{e}: {}", String::from_utf8_lossy(&answer.body).chars().take(200).collect::<String>()),
            url,
        });
    }
    match Refusal::from_answer(answer.status.as_u16(), &answer.body) {
        Refusal::RolledBack { reason } => Err(ShimError::RolledBack { reason }),
        Refusal::Other { status, code, message } => Err(ShimError::Refused { url, status, code, message }),
    }
}

/// The token in [`TOKEN_HEADER`]: the header that passes a proxy which owns
/// `Authorization` (the Kubernetes API server), and the one the shim prefers.
fn token_headers(instance: &Instance) -> Result<HeaderMap, ShimError> {
    let mut headers = HeaderMap::new();
    headers.insert(TOKEN_HEADER, header_value(instance, TOKEN_HEADER, &instance.shim_token)?);
    Ok(headers)
}

fn header_value(instance: &Instance, name: &str, value: &str) -> Result<HeaderValue, ShimError> {
    // Never the value in the message: it may be the token.
    HeaderValue::from_str(value).map_err(|_| ShimError::BadRequest {
        url: instance.shim_url.clone(),
        detail: format!("the value of {name} is not a valid header value"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_upload_gets_a_second_per_megabyte_beyond_the_fixed_part() {
        assert_eq!(upload_timeout(0), PUT_TIMEOUT);
        assert_eq!(upload_timeout(16_000_000), PUT_TIMEOUT + Duration::from_secs(16));
        assert_eq!(upload_timeout(120_500_000), PUT_TIMEOUT + Duration::from_secs(120));
    }

    use std::sync::Mutex;

    use super::*;

    /// Answers the requests with scripted answers, one each, in order, and keeps them.
    struct Scripted {
        answers: Mutex<std::collections::VecDeque<Result<ShimAnswer, TransportError>>>,
        sent: Mutex<Vec<ShimRequest>>,
    }

    impl Scripted {
        fn new(answer: Result<ShimAnswer, TransportError>) -> Self {
            Self { answers: Mutex::new([answer].into()), sent: Mutex::default() }
        }

        fn answering(status: u16, body: &str) -> Self {
            Self::answering_each(&[(status, body)])
        }

        fn answering_each(answers: &[(u16, &str)]) -> Self {
            let answer = |(status, body): &(u16, &str)| Ok(ShimAnswer { status: StatusCode::from_u16(*status).expect("status"), body: body.as_bytes().to_vec() });
            Self { answers: Mutex::new(answers.iter().map(answer).collect()), sent: Mutex::default() }
        }
    }

    impl ShimTransport for Scripted {
        fn send(&self, request: ShimRequest) -> BoxFuture<'_, Result<ShimAnswer, TransportError>> {
            self.sent.lock().expect("lock").push(request);
            let answer = self.answers.lock().expect("lock").pop_front().expect("a scripted answer for each request");
            Box::pin(async move { answer })
        }
    }

    fn instance() -> Instance {
        Instance {
            id: "c1".into(),
            name: "c1".into(),
            service: "svc".into(),
            shim_url: "http://127.0.0.1:1".into(),
            shim_token: "tok".into(),
            service_url: "http://127.0.0.1:2".into(),
            started_at: None,
        }
    }

    #[tokio::test]
    async fn an_upload_carries_the_token_the_hash_and_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = dir.path().join("svc");
        std::fs::write(&binary, b"new binary").expect("write");
        let transport = Scripted::answering(200, r#"{"sha256":"ab","pid":8,"restarts":1}"#);
        let reply = ShimClient::new(&transport).put_binary(&instance(), &binary, "ab").await.expect("swapped");
        assert_eq!((reply.sha256.as_deref(), reply.pid, reply.restarts), (Some("ab"), 8, 1));
        let sent = transport.sent.lock().expect("lock");
        let put = &sent[0];
        assert_eq!((&put.method, put.url.as_str(), put.timeout), (&Method::PUT, "http://127.0.0.1:1/v1/binary", PUT_TIMEOUT));
        assert_eq!(put.headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()), Some("tok"));
        assert_eq!(put.headers.get(SHA_HEADER).and_then(|v| v.to_str().ok()), Some("ab"));
        assert_eq!(put.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/octet-stream"));
        assert!(put.headers.get(http::header::AUTHORIZATION).is_none(), "Authorization may belong to a proxy");
        assert_eq!(put.body.as_deref(), Some(&b"new binary"[..]));
    }

    #[tokio::test]
    async fn answers_become_dtos_refusals_rollbacks_or_bad_answers() {
        let rolled_back = Scripted::answering(409, r#"{"error":{"code":"rolled_back","message":"exit code 3"}}"#);
        match ShimClient::new(&rolled_back).restart(&instance()).await {
            Err(ShimError::RolledBack { reason }) => assert_eq!(reason, "exit code 3"),
            other => panic!("{other:?}"),
        }
        let refused = Scripted::answering(401, r#"{"error":{"code":"unauthorized","message":"bad token"}}"#);
        match ShimClient::new(&refused).status(&instance()).await {
            Err(ShimError::Refused { url, status: 401, code, .. }) => {
                assert_eq!((url.as_str(), code.as_str()), ("http://127.0.0.1:1/v1/status", "unauthorized"));
            }
            other => panic!("{other:?}"),
        }
        let garbled = Scripted::answering(200, "<html>");
        assert!(matches!(ShimClient::new(&garbled).status(&instance()).await, Err(ShimError::BadAnswer { .. })));
        let proxy = Scripted::new(Err(TransportError::Proxy { status: 503, code: "kubernetes_api", message: "no endpoints".into() }));
        match ShimClient::new(&proxy).status(&instance()).await {
            Err(ShimError::Refused { status: 503, code, message, .. }) => assert_eq!((code.as_str(), message.as_str()), ("kubernetes_api", "no endpoints")),
            other => panic!("{other:?}"),
        }
        let gone = Scripted::new(Err(TransportError::Unreachable("connection refused".into())));
        assert!(matches!(ShimClient::new(&gone).status(&instance()).await, Err(ShimError::Unreachable { .. })));
        let status = Scripted::answering(200, r#"{"binary":"/app/svc","sha256":"ab","pid":7}"#);
        assert_eq!(ShimClient::new(&status).status(&instance()).await.expect("status").pid, Some(7));
        let sent = status.sent.lock().expect("lock");
        assert_eq!((&sent[0].method, sent[0].timeout, sent[0].body.is_none()), (&Method::GET, STATUS_TIMEOUT, true));
    }

    #[tokio::test]
    async fn a_library_goes_only_where_it_is_missing_and_a_shim_without_libraries_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("libdeps.so");
        std::fs::write(&path, b"elf").expect("write");
        let lib = SharedLib { name: "libdeps.so".into(), sha256: "ab".repeat(32), size: 3, path };
        let missing = r#"{"error":{"code":"not_found","message":"no such library"}}"#;
        let has_it = Scripted::answering(200, r#"{"sha256":"ab","size":3}"#);
        ShimClient::new(&has_it).put_libs(&instance(), std::slice::from_ref(&lib)).await.expect("there already");
        assert_eq!(has_it.sent.lock().expect("lock").len(), 1, "no upload of a library the shim has");
        let lacks_it = Scripted::answering_each(&[(404, missing), (200, r#"{"sha256":"ab","size":3}"#)]);
        ShimClient::new(&lacks_it).put_libs(&instance(), std::slice::from_ref(&lib)).await.expect("put");
        {
            let sent = lacks_it.sent.lock().expect("lock");
            assert_eq!((&sent[1].method, sent[1].body.as_deref()), (&Method::PUT, Some(&b"elf"[..])));
        }
        // A shim from before /v1/libs answers every unknown path 404 `not_found`.
        let unknown = r#"{"error":{"code":"not_found","message":"no such endpoint"}}"#;
        let old = Scripted::answering_each(&[(404, unknown), (404, unknown)]);
        let error = ShimClient::new(&old).put_libs(&instance(), std::slice::from_ref(&lib)).await.expect_err("an old shim");
        assert!(matches!(error, ShimError::NoLibraries { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("rebuild the service's image") && message.contains("statically from now on"), "{message}");
    }

    #[tokio::test]
    async fn health_asks_the_service_without_the_token() {
        let transport = Scripted::answering(200, r#"{"status":"degraded","message":"db down"}"#);
        let report = ShimClient::new(&transport).health(&instance()).await;
        assert_eq!((report.health, report.detail.as_deref()), (crate::status::Health::Degraded, Some("db down")));
        let sent = transport.sent.lock().expect("lock");
        assert_eq!((sent[0].url.as_str(), sent[0].headers.len()), ("http://127.0.0.1:2/health", 0));
    }
}
