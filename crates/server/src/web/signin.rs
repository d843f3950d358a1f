//! `/signin`: the sign-in pages, a browser's face of the sign-in API (`docs/signin-api.md`).
//!
//! Username first; then the methods the API offers (password, Temporary Access Pass,
//! Authenticator code, passkey); then whatever Conditional Access asks. The flow's id and token
//! live in an HttpOnly cookie between steps. A successful sign-in sets the session cookie with
//! the session's own expiry, so a cookie from a Temporary Access Pass dies with the pass.
//! Signing in "for security info" signs in to the user action `registerSecurityInformation`
//! instead of Microsoft Graph, under that action's policies, into a cookie of its own.

use askama::Template;
use axum::extract::{Path, Query, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    FLOW_COOKIE, GRAPH_APP, Nav, Portal, REGISTER_COOKIE, SESSION_COOKIE, cookie, read_form,
    render, render_status, safe_return, set_cookie,
};
use crate::state::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/signin", get(page).post(start))
        .route("/signin/step/{method}", post(step))
        .route("/signout", post(sign_out))
}

/// What a sign-in is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Purpose {
    /// The portals (Microsoft Graph).
    Portal,
    /// Registering security info (the user action).
    Register,
}

impl Purpose {
    fn parse(s: Option<&str>) -> Purpose {
        if s == Some("register") { Purpose::Register } else { Purpose::Portal }
    }

    fn name(self) -> &'static str {
        match self {
            Purpose::Portal => "portal",
            Purpose::Register => "register",
        }
    }

    fn default_return(self) -> &'static str {
        match self {
            Purpose::Portal => "/",
            Purpose::Register => "/mysecurityinfo",
        }
    }
}

/// The sign-in in progress, kept in an HttpOnly cookie between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlowCookie {
    id: String,
    token: String,
    user: String,
    ret: String,
    purpose: Purpose,
    methods: Vec<String>,
    /// Why more is asked (a policy's challenge), shown above the methods.
    #[serde(default)]
    reason: String,
}

impl FlowCookie {
    fn read(p: &Portal) -> Option<FlowCookie> {
        let raw = cookie(&p.headers, FLOW_COOKIE)?;
        let bytes = data_encoding::BASE64URL_NOPAD.decode(raw.as_bytes()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn header(&self) -> axum::http::HeaderValue {
        let text = serde_json::to_vec(self).unwrap_or_default();
        // A flow lives ten minutes on the server; the cookie a little longer does no harm.
        set_cookie(FLOW_COOKIE, &data_encoding::BASE64URL_NOPAD.encode(&text), 15 * 60)
    }
}

#[derive(Template)]
#[template(path = "web/signin.html")]
struct SigninPage {
    nav: Nav,
    heading: String,
    step: &'static str,
    csrf: String,
    return_to: String,
    purpose: &'static str,
    purpose_text: &'static str,
    username: String,
    methods: Vec<String>,
    passkey_options: String,
    message: Option<String>,
    message_kind: &'static str,
    error_code: String,
    correlation: String,
    policies: Vec<String>,
    /// The refusal ends the sign-in: offer to start again rather than the methods.
    finished: bool,
    register_link: bool,
}

impl SigninPage {
    fn new(p: &Portal, purpose: Purpose, return_to: &str) -> SigninPage {
        SigninPage {
            nav: Nav::of(p, "signin"),
            heading: match purpose {
                Purpose::Portal => "Sign in".into(),
                Purpose::Register => "Sign in to set up your security info".into(),
            },
            step: "username",
            csrf: p.csrf.clone(),
            return_to: return_to.to_owned(),
            purpose: purpose.name(),
            purpose_text: match purpose {
                Purpose::Portal => "",
                Purpose::Register => "to set up security info",
            },
            username: String::new(),
            methods: Vec::new(),
            passkey_options: String::new(),
            message: None,
            message_kind: "",
            error_code: String::new(),
            correlation: String::new(),
            policies: Vec::new(),
            finished: false,
            register_link: false,
        }
    }

    fn with_flow(mut self, flow: &FlowCookie) -> SigninPage {
        self.step = "methods";
        self.username = flow.user.clone();
        self.methods = flow.methods.clone();
        if !flow.reason.is_empty() {
            self.message = Some(flow.reason.clone());
            self.message_kind = "warn";
        }
        self
    }

    fn refusal(mut self, reply: &super::ApiReply) -> SigninPage {
        self.message = Some(reply.message());
        self.message_kind = "bad";
        self.error_code = reply.code();
        self.correlation = super::s(&reply.body, "/error/correlationId");
        self.policies = policy_names(reply.body.pointer("/error/policies"));
        self
    }
}

fn policy_names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("displayName").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct PageQuery {
    #[serde(rename = "return")]
    return_to: Option<String>,
    #[serde(rename = "for")]
    purpose: Option<String>,
    restart: Option<String>,
    signedout: Option<String>,
}

/// The browser's platform, from its User-Agent (what Entra does too; a policy on platforms
/// is only as strong as this header, which is why device compliance comes from the directory).
fn platform_of(p: &Portal) -> Option<&'static str> {
    let ua = p.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ua.contains("Android") {
        Some("android")
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        Some("iOS")
    } else if ua.contains("Windows Phone") {
        Some("windowsPhone")
    } else if ua.contains("Windows") {
        Some("windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("Linux") || ua.contains("X11") {
        Some("linux")
    } else {
        None
    }
}

async fn page(p: Portal, Query(q): Query<PageQuery>) -> Response {
    let purpose = Purpose::parse(q.purpose.as_deref());
    let ret = safe_return(q.return_to.as_deref().or(Some(purpose.default_return())));
    let flow = FlowCookie::read(&p).filter(|f| f.purpose == purpose && q.restart.is_none());
    let mut resp = match flow {
        Some(flow) => {
            methods_page(&p, &flow, SigninPage::new(&p, purpose, &flow.ret).with_flow(&flow)).await
        }
        None => {
            let mut page = SigninPage::new(&p, purpose, &ret);
            if q.signedout.is_some() {
                page.message = Some("You are signed out.".into());
                page.message_kind = "ok";
            }
            render(&p, &page)
        }
    };
    if q.restart.is_some() {
        resp.headers_mut().append(header::SET_COOKIE, set_cookie(FLOW_COOKIE, "", 0));
    }
    resp
}

/// Shows the methods step, fetching the passkey options when a passkey is among them.
async fn methods_page(p: &Portal, flow: &FlowCookie, mut page: SigninPage) -> Response {
    if flow.methods.iter().any(|m| m == "passkey") {
        let reply = p
            .api_as(
                None,
                Method::POST,
                &format!("/signin/{}/passkey/options", flow.id),
                Some(&json!({"flowToken": flow.token})),
            )
            .await;
        if reply.ok() {
            page.passkey_options =
                reply.body.get("options").map(Value::to_string).unwrap_or_default();
        } else {
            // Without options the passkey cannot be offered; the other methods still can.
            page.methods.retain(|m| m != "passkey");
        }
    }
    let status = if page.message_kind == "bad" { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    render_status(p, status, &page)
}

async fn start(p: Portal, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let purpose = Purpose::parse(form.get("for"));
    let ret = safe_return(
        form.get("return").filter(|r| !r.is_empty()).or(Some(purpose.default_return())),
    );
    let username = form.text("username");
    let mut page = SigninPage::new(&p, purpose, &ret);
    if username.is_empty() {
        page.message = Some("Enter your email or user name.".into());
        page.message_kind = "bad";
        return render_status(&p, StatusCode::BAD_REQUEST, &page);
    }
    let target = match purpose {
        Purpose::Portal => json!({"appId": GRAPH_APP}),
        Purpose::Register => json!({"userAction": "registerSecurityInformation"}),
    };
    let mut client = json!({"clientAppType": "browser"});
    if let Some(platform) = platform_of(&p) {
        super::put(&mut client, "platform", platform);
    }
    let body = json!({"username": username, "target": target, "client": client});
    let reply = p.api_as(None, Method::POST, "/signin/begin", Some(&body)).await;
    if !reply.ok() {
        page.username = username;
        return render_status(&p, reply.status, &page.refusal(&reply));
    }
    let flow = FlowCookie {
        id: super::s(&reply.body, "/flowId"),
        token: super::s(&reply.body, "/flowToken"),
        user: username,
        ret,
        purpose,
        methods: strings(reply.body.get("methods")),
        reason: String::new(),
    };
    let mut resp = Redirect::to(&format!("/signin?for={}", purpose.name())).into_response();
    resp.headers_mut().append(header::SET_COOKIE, flow.header());
    resp
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Refusals after which the same flow cannot go on: blocked by a policy, a disabled or locked
/// account, an expired flow.
fn ends_the_flow(code: &str) -> bool {
    matches!(code, "53000" | "53001" | "53002" | "53003" | "50053" | "50057" | "50089" | "700016")
}

async fn step(p: Portal, Path(method): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let Some(flow) = FlowCookie::read(&p) else {
        let mut page = SigninPage::new(&p, Purpose::parse(form.get("for")), "/");
        page.message = Some("Your sign-in expired. Start again.".into());
        page.message_kind = "warn";
        return render_status(&p, StatusCode::BAD_REQUEST, &page);
    };
    let (path, body) = match method.as_str() {
        "password" => (
            "password",
            json!({"flowToken": flow.token, "password": form.get("password").unwrap_or_default()}),
        ),
        "temporaryAccessPass" => {
            ("temporaryAccessPass", json!({"flowToken": flow.token, "code": form.text("code")}))
        }
        "totp" => ("totp", json!({"flowToken": flow.token, "code": form.text("code")})),
        "passkey" => (
            "passkey",
            json!({"flowToken": flow.token, "credential": form.get("credential").unwrap_or_default()}),
        ),
        _ => {
            return super::error_page(
                &p,
                StatusCode::NOT_FOUND,
                "No such sign-in method",
                "Go back and pick one of the methods offered.",
            );
        }
    };
    let reply =
        p.api_as(None, Method::POST, &format!("/signin/{}/{path}", flow.id), Some(&body)).await;
    let page = SigninPage::new(&p, flow.purpose, &flow.ret);
    if !reply.ok() {
        let code = reply.code();
        if ends_the_flow(&code) {
            let mut page = page.refusal(&reply);
            page.username = flow.user.clone();
            page.finished = true;
            let mut resp = render_status(&p, reply.status, &page);
            resp.headers_mut().append(header::SET_COOKIE, set_cookie(FLOW_COOKIE, "", 0));
            return resp;
        }
        let page =
            page.with_flow(&FlowCookie { reason: String::new(), ..flow.clone() }).refusal(&reply);
        return methods_page(&p, &flow, page).await;
    }
    match reply.body.get("status").and_then(Value::as_str) {
        Some("success") => signed_in(&p, &flow, &reply.body),
        Some("challenge") => {
            let next = FlowCookie {
                methods: strings(reply.body.get("methods")),
                reason: super::s(&reply.body, "/reason"),
                ..flow
            };
            let mut resp =
                Redirect::to(&format!("/signin?for={}", next.purpose.name())).into_response();
            resp.headers_mut().append(header::SET_COOKIE, next.header());
            resp
        }
        _ => {
            // Registration required: no method of the user's satisfies the policy.
            let mut page = page;
            page.username = flow.user.clone();
            page.finished = true;
            page.register_link = true;
            page.message = Some(super::s(&reply.body, "/message"));
            page.message_kind = "bad";
            page.error_code = super::s(&reply.body, "/errorCode");
            page.correlation = super::s(&reply.body, "/correlationId");
            page.policies = policy_names(reply.body.get("policies"));
            let mut resp = render_status(&p, StatusCode::FORBIDDEN, &page);
            resp.headers_mut().append(header::SET_COOKIE, set_cookie(FLOW_COOKIE, "", 0));
            resp
        }
    }
}

/// Sets the session cookie (for as long as the session lives) and goes where the user was going.
fn signed_in(p: &Portal, flow: &FlowCookie, body: &Value) -> Response {
    let token = super::s(body, "/session/token");
    let expires =
        gatehouse_core::time::parse(&super::s(body, "/session/expiresDateTime")).unwrap_or(0);
    let seconds = (expires - p.state.now()).div_euclid(1000);
    let name = match flow.purpose {
        Purpose::Portal => SESSION_COOKIE,
        Purpose::Register => REGISTER_COOKIE,
    };
    let mut resp = Redirect::to(&flow.ret).into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(name, &token, seconds));
    h.append(header::SET_COOKIE, set_cookie(FLOW_COOKIE, "", 0));
    resp
}

/// Ends both sessions (the portal's and the security-info one) on the server, then forgets them.
async fn sign_out(p: Portal, req: Request) -> Response {
    if let Err(resp) = read_form(&p, req).await {
        return resp;
    }
    for name in [SESSION_COOKIE, REGISTER_COOKIE] {
        if let Some(token) = cookie(&p.headers, name) {
            let _ = p.api_as(Some(token), Method::POST, "/signin/signout", None).await;
        }
    }
    let mut resp = Redirect::to("/signin?signedout=1").into_response();
    let h = resp.headers_mut();
    for name in [SESSION_COOKIE, REGISTER_COOKIE, FLOW_COOKIE] {
        h.append(header::SET_COOKIE, set_cookie(name, "", 0));
    }
    resp
}
