//! What every HTTP adapter shares: the state handlers get ([`AppState`]), the error shape and
//! status mapping ([`ApiError`], [`status_of`]), the JSON extractor whose rejections are API
//! errors, the bearer-token caller ([`Caller`]) and paged lists.
//!
//! The API, the web app and the integrations import this module and nothing of each other;
//! `server` assembles their routers. It holds no handler and decides nothing: authorization
//! lives in the `App` use cases.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use warden_core::User;

use crate::app::{App, AppError};

pub type AppState = Arc<App>;

/// An error as the API shows it.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

pub fn status_of(e: &AppError) -> StatusCode {
    match e {
        AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        AppError::Forbidden(_) => StatusCode::FORBIDDEN,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::Conflict { .. } => StatusCode::CONFLICT,
        AppError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        let message = match &self.0 {
            AppError::Internal(e) => {
                tracing::error!(error = ?e, "internal error");
                "internal error; see the gateway log".to_string()
            }
            other => other.to_string(),
        };
        (
            status,
            axum::Json(json!({"error": message, "code": self.0.code()})),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A page of a list as a JSON array, with the total number of matches in `X-Total-Count`.
pub fn paged<T: Serialize>(items: Vec<T>, total: i64) -> Response {
    let mut resp = axum::Json(items).into_response();
    resp.headers_mut()
        .insert("x-total-count", axum::http::HeaderValue::from(total));
    resp
}

/// JSON body extractor whose rejections are API errors (400 with what to fix).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => {
                let code = match &rej {
                    JsonRejection::MissingJsonContentType(_) => "content_type",
                    JsonRejection::JsonSyntaxError(_) => "bad_json",
                    JsonRejection::JsonDataError(_) => "invalid_fields",
                    _ => "bad_body",
                };
                Err(ApiError(AppError::bad(code, rej.body_text())))
            }
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The authenticated caller (from `Authorization: Bearer <token>`).
pub struct Caller(pub User);

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError(AppError::Unauthorized(
                "missing Authorization: Bearer <token> (get one with warden login)".into(),
            ))
        })?;
        Ok(Caller(app.authenticate(token).await?))
    }
}
