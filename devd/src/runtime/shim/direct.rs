//! [`DirectHttp`]: requests straight to an instance's URLs (the docker target's
//! published ports on loopback), with reqwest.

use futures_util::future::BoxFuture;

use super::{ShimAnswer, ShimRequest, ShimTransport, TransportError};

/// Plain HTTP to the instance; every failure is [`TransportError::Unreachable`].
#[derive(Clone, Debug)]
pub struct DirectHttp {
    http: reqwest::Client,
}

impl DirectHttp {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }
}

impl ShimTransport for DirectHttp {
    fn send(&self, request: ShimRequest) -> BoxFuture<'_, Result<ShimAnswer, TransportError>> {
        Box::pin(async move {
            let mut builder = self.http.request(request.method, &request.url).headers(request.headers).timeout(request.timeout);
            if let Some(body) = request.body {
                builder = builder.body(body);
            }
            let unreachable = |e: reqwest::Error| TransportError::Unreachable(Box::new(e));
            let response = builder.send().await.map_err(unreachable)?;
            let status = response.status();
            let body = response.bytes().await.map_err(unreachable)?;
            Ok(ShimAnswer { status, body: body.to_vec() })
        })
    }
}
