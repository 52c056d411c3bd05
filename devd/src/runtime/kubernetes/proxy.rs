//! [`PodProxy`]: requests to a pod's shim and service through the API server's pod
//! proxy subresource (`.../pods/{pod}:{port}/proxy/...`), with the kube client and so
//! its credentials and TLS settings.

use futures_util::future::BoxFuture;
use http::Request;
use kube::client::Body;
use kube::Client;

use super::KubeError;
use crate::runtime::shim::{ShimAnswer, ShimRequest, ShimTransport, TransportError};

/// The code of [`crate::runtime::ShimError::Refused`] when the API server answered for
/// itself (the pod is gone, RBAC, nothing listens on the port) or did not answer.
pub const API_SERVER_CODE: &str = "kubernetes_api";

/// The pod proxy as a [`ShimTransport`]: the shim's (and the service's) own answers
/// come through as they are; the API server's own errors are
/// [`TransportError::Proxy`].
#[derive(Clone)]
pub struct PodProxy {
    client: Client,
}

impl std::fmt::Debug for PodProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProxy").finish_non_exhaustive()
    }
}

impl PodProxy {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn exchange(&self, request: ShimRequest) -> Result<ShimAnswer, TransportError> {
        let mut builder = Request::builder().method(request.method).uri(&request.url);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(request.headers);
        }
        let body = request.body.map_or_else(Body::empty, Body::from);
        let request = builder
            .body(body)
            .map_err(|e| TransportError::Unreachable(format!("cannot build the request to {}: {e}", request.url).into()))?;
        let response = self.client.send(request).await.map_err(api_server_error)?;
        let status = response.status();
        let body = response.into_body().collect_bytes().await.map_err(api_server_error)?;
        if !status.is_success() {
            if let Some(mut s) = api_server_status(&body) {
                if s.code == 0 {
                    s.code = status.as_u16();
                }
                return Err(api_server_error(kube::Error::Api(s.boxed())));
            }
        }
        Ok(ShimAnswer { status, body: body.to_vec() })
    }
}

impl ShimTransport for PodProxy {
    fn send(&self, request: ShimRequest) -> BoxFuture<'_, Result<ShimAnswer, TransportError>> {
        Box::pin(async move {
            let timeout = request.timeout;
            tokio::time::timeout(timeout, self.exchange(request)).await.unwrap_or_else(|_| {
                Err(TransportError::Unreachable(format!("no answer through the pod proxy within {timeout:?}").into()))
            })
        })
    }
}

/// A non-2xx body that is the API server's own `metav1.Status` rather than the shim's
/// JSON error (which has neither `message` nor `reason` at the top).
fn api_server_status(body: &[u8]) -> Option<kube::core::Status> {
    serde_json::from_slice::<kube::core::Status>(body).ok().filter(|s| !(s.message.is_empty() && s.reason.is_empty()))
}

/// The API server's error (or the client's failure to reach it), worded as every
/// [`KubeError::Api`] is: with its status, and for a 403 what to check.
fn api_server_error(source: kube::Error) -> TransportError {
    let error = KubeError::Api { what: "the pod proxy".into(), source };
    TransportError::Proxy { status: error.api_code().unwrap_or(502), code: API_SERVER_CODE, message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::{HeaderMap, Method, Response};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_api_server_that_never_answers_is_unreachable_after_the_timeout() {
        let silent = tower::service_fn(|_: Request<Body>| std::future::pending::<Result<Response<Body>, Infallible>>());
        let proxy = PodProxy::new(Client::new(silent, "default"));
        let request = ShimRequest {
            method: Method::GET,
            url: "/api/v1/namespaces/stand/pods/p:7070/proxy/v1/status".into(),
            headers: HeaderMap::new(),
            body: None,
            timeout: Duration::from_secs(3),
        };
        let start = tokio::time::Instant::now();
        match proxy.send(request).await {
            Err(TransportError::Unreachable(e)) => assert!(e.to_string().contains("within 3s"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(3), "the request's own timeout");
    }
}
