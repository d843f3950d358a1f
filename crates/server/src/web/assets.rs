//! The portals' static files, compiled into the binary: nothing is fetched from elsewhere.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "htmx.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/htmx.min.js"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

pub fn routes(router: axum::Router<AppState>) -> axum::Router<AppState> {
    router.route("/assets/{name}", get(asset)).route(
        "/favicon.ico",
        get(|h: HeaderMap| async move { asset(Path("favicon.svg".to_owned()), h).await }),
    )
}

/// The asset's ETag: its length and a hash of its bytes (they only change with the binary).
fn etag(a: &Asset) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(a.body);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("\"{}-{hex}\"", a.body.len())
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "No such file.").into_response();
    };
    let tag = etag(a);
    let matches =
        headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(tag.as_str());
    let mut resp =
        if matches { StatusCode::NOT_MODIFIED.into_response() } else { a.body.into_response() };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600, must-revalidate"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}
