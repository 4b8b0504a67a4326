//! The web app (server-rendered pages at `/`). Placeholder router until the pages land.

use axum::Router;

use crate::api::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
