//! The one error type of the HTTP layer: a status code and a JSON body that names
//! the problem, never the internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::db::DbError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String, status: StatusCode },
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error(transparent)]
    Database(#[from] DbError),
}

impl AppError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::BadRequest { code: "invalid_input", message: message.into(), status: StatusCode::UNPROCESSABLE_ENTITY }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, status, .. } => (*status, code),
            Self::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Database(DbError::NotConfigured) => (StatusCode::SERVICE_UNAVAILABLE, "database_not_configured"),
            Self::Database(DbError::Unavailable) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Self::Database(DbError::Query(e)) if e.is_closed() => {
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            Self::Database(DbError::Query(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "database_error"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Database(DbError::Query(e)) if !e.is_closed() => {
                // Logged inside the request's span; the client gets no internals.
                tracing::error!(error = %e, "database query failed");
                "the database could not complete the request".to_owned()
            }
            Self::Database(DbError::Query(_)) => DbError::Unavailable.to_string(),
            other => other.to_string(),
        };
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(%status, code, "request failed");
        }
        (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
    }
}
