//! `/login` and `/logout`: email + password through `App::login` (rate-limited and audited
//! there), the login token stored only in the HttpOnly session cookie.
//!
//! # What it must never do
//! Put the token anywhere but the cookie (never in a URL, a page or a log), follow a `next`
//! that is not a local path, or accept a login form without its pre-session CSRF binding.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;

use super::{
    CSRF_FIELD, Form, LOGIN_COOKIE, Posted, SESSION_COOKIE, cookie, csrf_ok, csrf_token,
    render_status, safe_next, see_other, set_cookie,
};
use crate::app::AppError;
use crate::http::AppState;

/// Cookie lifetime: the login token's own lifetime (`App::login` issues 12-hour tokens).
const LOGIN_TOKEN_TTL_SEC: i64 = 12 * 3600;

pub fn routes() -> axum::Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<super::Nav>,
    csrf: String,
    next: String,
    email: String,
    error: String,
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// A fresh pre-session value (binds the login form's CSRF token).
fn pre_session() -> String {
    let mut b = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn login_form(
    app: &AppState,
    status: StatusCode,
    next: &str,
    email: &str,
    error: &str,
) -> Response {
    let pre = pre_session();
    let mut resp = render_status(
        status,
        &LoginPage {
            nav: None,
            csrf: csrf_token(app, "login", &pre),
            next: safe_next(next),
            email: email.into(),
            error: error.into(),
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app, LOGIN_COOKIE, &pre, 1800),
    );
    resp
}

async fn login_page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = q.next.unwrap_or_default();
    // Already signed in: go straight on.
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && app.authenticate(token).await.is_ok()
    {
        return see_other(&safe_next(&next));
    }
    login_form(&app, StatusCode::OK, &next, "", "")
}

async fn login(
    State(app): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let next = form.str("next").to_string();
    let email = form.str("email").trim().to_string();
    let bound = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|pre| csrf_ok(&app, "login", pre, form.get(CSRF_FIELD)));
    if !bound {
        return login_form(
            &app,
            StatusCode::FORBIDDEN,
            &next,
            &email,
            "Your sign-in form expired. Please try again.",
        );
    }
    match app
        .login(&email, form.str("password"), "web", peer.ip())
        .await
    {
        Ok((token, _user)) => {
            let mut resp = see_other(&safe_next(&next));
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&app, SESSION_COOKIE, &token, LOGIN_TOKEN_TTL_SEC),
            );
            h.append(header::SET_COOKIE, set_cookie(&app, LOGIN_COOKIE, "", 0));
            h.append(header::SET_COOKIE, super::hint_cookie(&app, true));
            resp
        }
        Err(AppError::Unauthorized(_)) => login_form(
            &app,
            StatusCode::UNAUTHORIZED,
            &next,
            &email,
            "Wrong email or password.",
        ),
        Err(AppError::RateLimited(m)) => login_form(
            &app,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            &email,
            &format!("Too many attempts: {m}."),
        ),
        Err(e) => super::WebError::App(e).into_response(),
    }
}

async fn logout(State(app): State<AppState>, posted: Posted) -> Response {
    if let Err(e) = app.logout_token(posted.viewer.token()).await {
        tracing::warn!(error = %e, "logout: could not revoke the session token");
    }
    let mut resp = see_other("/login");
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", 0));
    h.append(header::SET_COOKIE, super::hint_cookie(&app, false));
    resp
}
