//! The web portals: sign-in, My Security Info, My Access (and approvals), and the admin center.
//!
//! Server-rendered pages (askama templates in `templates/web`), forms that work without
//! JavaScript, and a little vendored JavaScript where it helps (htmx, the passkey ceremony, the
//! copy button). The pages are a client of Gatehouse's own API: a page handler turns a form into
//! the API call the API documents and makes it in-process with the signed-in user's session
//! ([`Portal::api`]). So a page can do exactly what its user may do through the API, with the
//! same validation and the same messages, and no authorization logic of its own beyond hiding
//! what its user cannot use.
//!
//! Security: the session is an HttpOnly, SameSite=Strict cookie holding the session token; every
//! form carries a CSRF token derived from the session (or, before sign-in, a double-submit
//! cookie); every response carries a strict Content-Security-Policy (no inline script or style,
//! nothing from elsewhere) and the usual headers.

// A page handler's early return is a whole page (a redirect, a 403): the large `Err` is the
// point, and it is not on a hot path.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod assets;
pub mod myaccess;
pub mod security_info;
pub mod signin;

use std::net::SocketAddr;

use askama::Template;
use axum::body::Body as AxumBody;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use gatehouse_core::auth::secret;
use gatehouse_core::roles::Role;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use crate::session::SessionKind;
use crate::state::AppState;

/// The session cookie (the token of a sign-in to Microsoft Graph).
pub const SESSION_COOKIE: &str = "gh_session";
/// The session for registering security info (a separate sign-in, as Entra asks for it).
pub const REGISTER_COOKIE: &str = "gh_register";
/// The sign-in in progress (flow id and flow token), between its steps.
pub const FLOW_COOKIE: &str = "gh_flow";
/// The double-submit CSRF cookie for forms shown before anyone is signed in.
pub const CSRF_COOKIE: &str = "gh_csrf";

/// The Microsoft Graph app: the portal signs users in to it, so a portal session is an API
/// session (and Conditional Access on "All resources" applies).
pub const GRAPH_APP: &str = "00000003-0000-0000-c000-000000000000";

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    let router = router.route("/", axum::routing::get(home));
    let router = assets::routes(router);
    let router = signin::routes(router);
    let router = security_info::routes(router);
    let router = myaccess::routes(router);
    admin::routes(router)
}

#[derive(Template)]
#[template(path = "web/home.html")]
struct HomePage {
    nav: Nav,
}

/// The landing page: every task one click away.
async fn home(p: Portal) -> Response {
    render(&p, &HomePage { nav: Nav::of(&p, "home") })
}

/// Is this path the API's (JSON) rather than a page?
pub fn is_api_path(path: &str) -> bool {
    path.starts_with("/v1.0")
        || path == "/healthz"
        || path.starts_with("/test/")
        || (path.starts_with("/signin/") && !path.starts_with("/signin/step/"))
}

/// Pages nobody serves get a page, not the API's JSON error.
pub async fn not_found_page(p: Portal) -> Response {
    error_page(
        &p,
        StatusCode::NOT_FOUND,
        "There is no such page",
        "Check the address, or start from the start page.",
    )
}

/// Strict headers on every response: nothing runs but our own files, nothing frames us.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if page {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
        h.insert(
            "permissions-policy",
            HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
        );
        h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    resp
}

/// The cookies of a request.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A Set-Cookie value: HttpOnly, SameSite=Strict, Path=/, Secure (browsers keep Secure cookies
/// on `localhost` too), for `max_age` seconds (0: delete it).
pub fn set_cookie(name: &str, value: &str, max_age: i64) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        max_age.max(0)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("gh_invalid=; Max-Age=0"))
}

/// The CSRF token of a session: derived from its token, so it needs no storage and dies with it.
pub fn csrf_of(session_token: &str) -> String {
    secret::hash(&format!("csrf:{session_token}")).chars().take(32).collect()
}

/// Who is looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub user_id: String,
    pub name: String,
    pub upn: String,
    pub roles: Vec<Role>,
    pub token: String,
    pub csrf: String,
}

impl Viewer {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles.iter().any(|r| roles.contains(r))
    }
}

/// The API's router, for in-process calls.
#[derive(Clone)]
pub struct ApiApp(pub axum::Router);

/// Everything a page handler needs: the state, the viewer (if signed in), the client's address
/// (for sign-in calls), the CSRF token for its forms.
#[derive(Clone)]
pub struct Portal {
    pub state: AppState,
    pub viewer: Option<Viewer>,
    /// The user signed in to register security info (the `registerSecurityInformation` session).
    pub register: Option<Viewer>,
    pub peer: SocketAddr,
    pub forwarded: Vec<String>,
    pub headers: HeaderMap,
    /// The CSRF token forms on this page carry.
    pub csrf: String,
    /// A fresh double-submit cookie to set (pages shown before sign-in).
    pub new_csrf_cookie: Option<String>,
    api_app: Option<axum::Router>,
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let viewer = match cookie(&parts.headers, SESSION_COOKIE) {
            Some(token) => viewer_of(state, token, Target::Graph).await,
            None => None,
        };
        let register = match cookie(&parts.headers, REGISTER_COOKIE) {
            Some(token) => viewer_of(state, token, Target::SecurityInfo).await,
            None => None,
        };
        let signed = viewer.as_ref().or(register.as_ref());
        let (csrf, new_csrf_cookie) = match (signed, cookie(&parts.headers, CSRF_COOKIE)) {
            (Some(v), _) => (v.csrf.clone(), None),
            (None, Some(c)) => (c.to_owned(), None),
            (None, None) => {
                let c = crate::random::token("").chars().take(32).collect::<String>();
                (c.clone(), Some(c))
            }
        };
        Ok(Portal {
            state: state.clone(),
            viewer,
            register,
            peer,
            forwarded,
            headers: parts.headers.clone(),
            csrf,
            new_csrf_cookie,
            api_app: parts.extensions.get::<ApiApp>().map(|a| a.0.clone()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Graph,
    SecurityInfo,
}

/// The signed-in user of a session token, if the session is live, for `target`, and its user
/// enabled. (A portal session is a sign-in to Microsoft Graph; an API token is not accepted
/// from a cookie: the portals only set cookies from sign-ins.)
async fn viewer_of(state: &AppState, token: &str, target: Target) -> Option<Viewer> {
    let session = crate::http::auth::session_for(state, token).await.ok().flatten()?;
    let session_target = session.target.as_deref().unwrap_or_default();
    let fits = session.kind == SessionKind::SignIn
        && match target {
            Target::Graph => session_target.eq_ignore_ascii_case(GRAPH_APP),
            Target::SecurityInfo => session_target == crate::signin::REGISTER_SECURITY_INFO,
        };
    if !fits {
        return None;
    }
    let dir = state.dir();
    let user = dir.user(&session.user_id).filter(|u| u.account_enabled)?;
    Some(Viewer {
        user_id: user.id.clone(),
        name: user.display_name.clone(),
        upn: user.user_principal_name.clone().unwrap_or_default(),
        roles: dir.roles_of(&user.id),
        token: token.to_owned(),
        csrf: csrf_of(token),
    })
}

/// Whether a session token still works (a write may have just ended it).
pub async fn still_live(p: &Portal, token: &str) -> bool {
    crate::http::auth::session_for(&p.state, token).await.ok().flatten().is_some()
}

/// What an in-process API call answered.
pub struct ApiReply {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiReply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The Graph error's message, for showing on the page.
    pub fn message(&self) -> String {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("The request failed ({}).", self.status))
    }

    pub fn code(&self) -> String {
        self.body.pointer("/error/code").and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

impl Portal {
    pub fn signed_in(&self) -> bool {
        self.viewer.is_some()
    }

    /// Calls the API in-process as the viewer (or anonymously, or with `token`).
    pub async fn api_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ApiReply {
        self.call(token, method, path, body, &[]).await
    }

    /// An in-process API call with extra request headers (an `Idempotency-Key`, say).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> ApiReply {
        let Some(router) = self.api_app.clone() else {
            return ApiReply { status: StatusCode::SERVICE_UNAVAILABLE, body: Value::Null };
        };
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(lang) = self.headers.get(header::ACCEPT_LANGUAGE) {
            req = req.header(header::ACCEPT_LANGUAGE, lang.clone());
        }
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for f in &self.forwarded {
            req = req.header("x-forwarded-for", f.as_str());
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                AxumBody::from(b.to_string())
            }
            None => AxumBody::empty(),
        };
        let Ok(mut req) = req.body(body) else {
            return ApiReply { status: StatusCode::BAD_REQUEST, body: Value::Null };
        };
        req.extensions_mut().insert(ConnectInfo(self.peer));
        match router.oneshot(req).await {
            Ok(resp) => {
                let status = resp.status();
                let bytes = axum::body::to_bytes(resp.into_body(), 16 * 1024 * 1024)
                    .await
                    .unwrap_or_default();
                ApiReply { status, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
            }
            Err(never) => match never {},
        }
    }

    pub async fn api(&self, method: Method, path: &str, body: Option<&Value>) -> ApiReply {
        let token = self.viewer.as_ref().map(|v| v.token.clone());
        self.api_as(token.as_deref(), method, path, body).await
    }

    pub async fn get(&self, path: &str) -> ApiReply {
        self.api(Method::GET, path, None).await
    }

    /// Checks a form's CSRF token (constant time).
    pub fn check_csrf(&self, given: &str) -> Result<(), Response> {
        let ok: bool = self.csrf.as_bytes().ct_eq(given.as_bytes()).into();
        if ok && !self.csrf.is_empty() {
            Ok(())
        } else {
            Err(error_page(
                self,
                StatusCode::FORBIDDEN,
                "This form has expired",
                "Reload the page and try again.",
            ))
        }
    }

    /// The viewer, or a redirect to the sign-in page that comes back here.
    pub fn require(&self, back: &str) -> Result<&Viewer, Response> {
        self.viewer.as_ref().ok_or_else(|| {
            Redirect::to(&format!("/signin?return={}", urlencode(back))).into_response()
        })
    }

    /// The viewer holding one of `roles`, else a 403 page.
    pub fn require_roles(&self, back: &str, roles: &[Role]) -> Result<&Viewer, Response> {
        let v = self.require(back)?;
        if v.has_any(roles) {
            Ok(v)
        } else {
            Err(error_page(
                self,
                StatusCode::FORBIDDEN,
                "You cannot open this page",
                "Your roles do not include what this page needs. Ask a Global Administrator.",
            ))
        }
    }
}

/// The navigation shown to the viewer.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub signed_in: bool,
    /// Signed in to the portals (not only to register security info).
    pub portal: bool,
    pub name: String,
    pub admin: bool,
    pub csrf: String,
    pub current: &'static str,
}

impl Nav {
    pub fn of(p: &Portal, current: &'static str) -> Nav {
        match p.viewer.as_ref().or(p.register.as_ref()) {
            Some(v) => Nav {
                signed_in: true,
                portal: p.viewer.is_some(),
                name: v.name.clone(),
                admin: p.viewer.as_ref().is_some_and(admin::may_see_admin),
                csrf: p.csrf.clone(),
                current,
            },
            None => Nav { csrf: p.csrf.clone(), current, ..Nav::default() },
        }
    }
}

/// Renders a template as an HTML response (with the pre-sign-in CSRF cookie when new).
pub fn render(p: &Portal, t: &impl Template) -> Response {
    render_status(p, StatusCode::OK, t)
}

pub fn render_status(p: &Portal, status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => {
            let mut resp = (status, Html(html)).into_response();
            if let Some(c) = &p.new_csrf_cookie {
                resp.headers_mut().append(header::SET_COOKIE, set_cookie(CSRF_COOKIE, c, 3600));
            }
            resp
        }
        Err(e) => {
            tracing::error!("page template: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be shown.").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "web/error.html")]
pub struct ErrorPage {
    pub nav: Nav,
    pub title: String,
    pub detail: String,
}

pub fn error_page(p: &Portal, status: StatusCode, title: &str, detail: &str) -> Response {
    render_status(
        p,
        status,
        &ErrorPage { nav: Nav::of(p, ""), title: title.to_owned(), detail: detail.to_owned() },
    )
}

/// `application/x-www-form-urlencoded` pairs (repeated names kept, in order).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded_parse(body)
}

fn form_urlencoded_parse(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (urldecode(k), urldecode(v))
        })
        .collect()
}

pub fn urldecode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A posted form: its fields, with the CSRF token checked.
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), Some("on" | "true" | "1" | "yes"))
    }
}

/// Reads a form body (at most the configured body size) and checks its CSRF token.
pub async fn read_form(p: &Portal, req: Request) -> Result<Form, Response> {
    let limit = p.state.config.limits.max_body_bytes;
    let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        error_page(p, StatusCode::PAYLOAD_TOO_LARGE, "That form is too large", "Send less at once.")
    })?;
    let form = Form(form_pairs(&bytes));
    p.check_csrf(form.get("csrf").unwrap_or_default())?;
    Ok(form)
}

/// Only pages on this server are followed after sign-in (no open redirect).
pub fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(t) if t.starts_with('/') && !t.starts_with("//") && !t.contains('\\') => t.to_owned(),
        _ => "/".to_owned(),
    }
}

/// `2026-12-04T10:00:00Z` as `4 Dec 2026, 10:00 UTC` for people.
pub fn when(text: &str) -> String {
    match gatehouse_core::time::parse(text) {
        Some(ms) => {
            let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
                return text.to_owned();
            };
            let month = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ]
            .get(usize::from(u8::from(t.month())).saturating_sub(1))
            .copied()
            .unwrap_or("");
            format!("{} {month} {}, {:02}:{:02} UTC", t.day(), t.year(), t.hour(), t.minute())
        }
        None => text.to_owned(),
    }
}

pub fn s(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Sets `key` of a JSON object (no-op on anything else).
pub fn put(v: &mut Value, key: &str, x: impl Into<Value>) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), x.into());
    }
}
