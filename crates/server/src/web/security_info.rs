//! `/mysecurityinfo`: the user's own sign-in methods. Adding one is the user action
//! `registerSecurityInformation`, so these pages run on the session signed in for it (a
//! Temporary Access Pass is enough where the policies say so): the new hire's first day works in
//! the browser exactly as through the API.

use askama::Template;
use axum::extract::{Path, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use qrcode::QrCode;
use qrcode::render::svg;
use serde_json::{Value, json};

use super::{Nav, Portal, Viewer, error_page, read_form, render_status, s, when};
use crate::state::AppState;

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router
        .route("/mysecurityinfo", get(page))
        .route("/mysecurityinfo/totp", post(start_totp))
        .route("/mysecurityinfo/totp/{id}/verify", post(verify_totp))
        .route("/mysecurityinfo/passkey", post(start_passkey))
        .route("/mysecurityinfo/passkey/{id}/finish", post(finish_passkey))
        .route("/mysecurityinfo/methods/{id}/delete", post(delete_method))
}

pub struct MethodRow {
    pub id: String,
    pub kind: String,
    pub label: &'static str,
    pub name: String,
    pub added: String,
    pub detail: String,
    pub deletable: bool,
}

#[derive(Template)]
#[template(path = "web/security_info.html")]
struct SecurityInfoPage {
    nav: Nav,
    csrf: String,
    upn: String,
    methods: Vec<MethodRow>,
    notice: Option<(String, &'static str)>,
    /// The Authenticator-app registration in progress: (id, QR code data URI, manual key).
    totp: Option<(String, String, String)>,
    /// The passkey registration in progress: (ceremony id, options JSON, name).
    passkey: Option<(String, String, String)>,
    passkeys_available: bool,
    passkeys_why_not: String,
}

/// The session signed in for security info, or a trip to the sign-in page for it.
fn registrant(p: &Portal) -> Result<&Viewer, Response> {
    p.register
        .as_ref()
        .ok_or_else(|| Redirect::to("/signin?for=register&return=/mysecurityinfo").into_response())
}

async fn methods_of(p: &Portal, v: &Viewer) -> Result<Vec<MethodRow>, Response> {
    let reply = p.api_as(Some(&v.token), Method::GET, "/signin/security-info/methods", None).await;
    if !reply.ok() {
        return Err(error_page(
            p,
            reply.status,
            "Your methods could not be read",
            &reply.message(),
        ));
    }
    let rows = reply.body.get("value").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(rows
        .iter()
        .map(|m| {
            let kind = s(m, "/kind");
            let (label, detail) = match kind.as_str() {
                "password" => ("Password", String::new()),
                "temporaryAccessPass" => {
                    let usable = m.get("isUsable").and_then(Value::as_bool).unwrap_or(false);
                    let detail = if usable {
                        format!(
                            "Usable until {} minutes after {}",
                            s(m, "/lifetimeInMinutes"),
                            when(&s(m, "/startDateTime"))
                        )
                    } else {
                        format!("Not usable: {}", s(m, "/methodUsabilityReason"))
                    };
                    ("Temporary Access Pass", detail)
                }
                "softwareOath" => ("Authenticator app", String::new()),
                "fido2" => ("Passkey", String::new()),
                _ => ("Method", String::new()),
            };
            MethodRow {
                id: s(m, "/id"),
                deletable: kind != "password",
                kind,
                label,
                name: s(m, "/displayName"),
                added: when(&s(m, "/createdDateTime")),
                detail,
            }
        })
        .collect())
}

async fn show(
    p: &Portal,
    notice: Option<(String, &'static str)>,
    totp: Option<(String, String, String)>,
    passkey: Option<(String, String, String)>,
    status: StatusCode,
) -> Response {
    let v = match registrant(p) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let methods = match methods_of(p, v).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let page = SecurityInfoPage {
        nav: Nav::of(p, "securityinfo"),
        csrf: p.csrf.clone(),
        upn: v.upn.clone(),
        methods,
        notice,
        totp,
        passkey,
        passkeys_available: p.state.passkeys.available(),
        passkeys_why_not: p.state.passkeys.why_not.clone(),
    };
    render_status(p, status, &page)
}

async fn page(p: Portal) -> Response {
    show(&p, None, None, None, StatusCode::OK).await
}

/// An otpauth URI as a QR code image (SVG, as a data URI the CSP allows).
fn qr_data_uri(uri: &str) -> String {
    match QrCode::new(uri.as_bytes()) {
        Ok(code) => {
            let image = code
                .render::<svg::Color<'_>>()
                .min_dimensions(200, 200)
                .dark_color(svg::Color("#000000"))
                .light_color(svg::Color("#ffffff"))
                .build();
            format!("data:image/svg+xml;base64,{}", data_encoding::BASE64.encode(image.as_bytes()))
        }
        Err(_) => String::new(),
    }
}

/// The key in groups of four, easier to type into an app by hand.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

async fn start_totp(p: Portal, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v = match registrant(&p) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let name = form.text("displayName");
    let body = if name.is_empty() { json!({}) } else { json!({"displayName": name}) };
    let reply =
        p.api_as(Some(&v.token), Method::POST, "/signin/security-info/totp", Some(&body)).await;
    if !reply.ok() {
        return show(&p, Some((reply.message(), "bad")), None, None, reply.status).await;
    }
    let totp = (
        s(&reply.body, "/id"),
        qr_data_uri(&s(&reply.body, "/otpauthUri")),
        grouped(&s(&reply.body, "/secret")),
    );
    show(&p, None, Some(totp), None, StatusCode::OK).await
}

async fn verify_totp(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v = match registrant(&p) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let path = format!("/signin/security-info/totp/{}/verify", super::urlencode(&id));
    let reply = p
        .api_as(Some(&v.token), Method::POST, &path, Some(&json!({"code": form.text("code")})))
        .await;
    if reply.ok() {
        return show(
            &p,
            Some(("The Authenticator app is set up: you can sign in with its codes.".into(), "ok")),
            None,
            None,
            StatusCode::OK,
        )
        .await;
    }
    // The secret was shown once; keep asking for a code from the app it went into.
    let again = (id, String::new(), String::new());
    show(&p, Some((reply.message(), "bad")), Some(again), None, reply.status).await
}

async fn start_passkey(p: Portal, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v = match registrant(&p) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let reply = p
        .api_as(Some(&v.token), Method::POST, "/signin/security-info/passkey", Some(&json!({})))
        .await;
    if !reply.ok() {
        return show(&p, Some((reply.message(), "bad")), None, None, reply.status).await;
    }
    let options = reply.body.get("options").map(Value::to_string).unwrap_or_default();
    let name = match form.text("displayName") {
        n if n.is_empty() => "Passkey".to_owned(),
        n => n,
    };
    show(&p, None, None, Some((s(&reply.body, "/id"), options, name)), StatusCode::OK).await
}

async fn finish_passkey(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    let form = match read_form(&p, req).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let v = match registrant(&p) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let credential = form.get("credential").unwrap_or_default();
    if credential.is_empty() {
        return show(
            &p,
            Some(("Your browser did not create a passkey. Try again.".into(), "bad")),
            None,
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    let body = json!({"credential": credential, "displayName": form.text("displayName")});
    let path = format!("/signin/security-info/passkey/{}/finish", super::urlencode(&id));
    let reply = p.api_as(Some(&v.token), Method::POST, &path, Some(&body)).await;
    if reply.ok() {
        return show(
            &p,
            Some(("Your passkey is added: you can sign in with it.".into(), "ok")),
            None,
            None,
            StatusCode::OK,
        )
        .await;
    }
    show(&p, Some((reply.message(), "bad")), None, None, reply.status).await
}

async fn delete_method(p: Portal, Path(id): Path<String>, req: Request) -> Response {
    if let Err(r) = read_form(&p, req).await {
        return r;
    }
    let v = match registrant(&p) {
        Ok(v) => v.clone(),
        Err(r) => return r,
    };
    let path = format!("/signin/security-info/methods/{}", super::urlencode(&id));
    let reply = p.api_as(Some(&v.token), Method::DELETE, &path, None).await;
    if reply.ok() {
        // Deleting the pass this session came from ends the session: sign in again to go on.
        if super::still_live(&p, &v.token).await {
            return show(
                &p,
                Some(("The method is deleted.".into(), "ok")),
                None,
                None,
                StatusCode::OK,
            )
            .await;
        }
        return Redirect::to("/signin?for=register&return=/mysecurityinfo").into_response();
    }
    show(&p, Some((reply.message(), "bad")), None, None, reply.status).await
}
