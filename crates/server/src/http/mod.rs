//! The HTTP edge: the Graph-compatible API under `/v1.0`, the sign-in API under `/signin`.
//!
//! Every route is registered through [`Api::route`] with the roles that may call it, so the
//! router, the authorization check, `docs/api.md` and the authorization-matrix test all come
//! from one table.

pub mod auth;
pub mod ca;
pub mod directory;
pub mod error;
pub mod governance;
pub mod graph;
pub mod logs;
pub mod methods;
pub mod odata;
pub mod signin;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use gatehouse_core::roles::Access;

pub use auth::Caller;
pub use error::{ApiError, ApiResult};

use crate::state::AppState;

/// One route, as documented and as enforced.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
}

pub struct Api {
    state: AppState,
    router: Router<AppState>,
    pub specs: Vec<RouteSpec>,
}

impl Api {
    pub fn new(state: AppState) -> Self {
        Api { state, router: Router::new(), specs: Vec::new() }
    }

    /// Registers `handler` for `method path`, callable only with `access`.
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match MethodFilter::try_from(method.clone()) {
            Ok(f) => f,
            Err(_) => return self,
        };
        let guard = axum::middleware::from_fn_with_state(
            self.state.clone(),
            move |State(state): State<AppState>, req: Request, next: Next| {
                auth::authorize(state, access, req, next)
            },
        );
        self.router = self.router.route(path, on(filter, handler).route_layer(guard));
        self.specs.push(RouteSpec { method, path, access, summary });
        self
    }

    /// Whether the test clock is on (`serve --test-clock`).
    pub fn test_clock(&self) -> bool {
        self.state.config.test_clock
    }

    pub fn merge(self, f: impl FnOnce(Api) -> Api) -> Api {
        f(self)
    }

    pub fn into_router(self) -> (Router, Vec<RouteSpec>) {
        let max_body = self.state.config.limits.max_body_bytes;
        let router = self
            .router
            .fallback(not_found)
            .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
            .with_state(self.state);
        (router, self.specs)
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "BadRequest",
        format!("Resource not found for the segment in '{method} {}'.", uri.path()),
    )
}

/// Every route the server serves.
pub fn api(state: AppState) -> Api {
    Api::new(state)
        .merge(graph::health_routes)
        .merge(directory::routes)
        .merge(ca::routes)
        .merge(methods::routes)
        .merge(signin::routes)
        .merge(logs::routes)
        .merge(governance::routes)
}

/// The whole application: routes plus what must run around routing: the request-path
/// normalisation (the Python SDK, given a base URL with a trailing slash, sends `//`), the
/// refusal of paths the store could not hold, and Graph error bodies for the refusals the
/// framework answers itself.
pub fn app(state: AppState) -> (axum::Router, Vec<RouteSpec>) {
    let (router, specs) = api(state.clone()).into_router();
    let api_app = Router::new()
        .fallback_service(router)
        .layer(axum::middleware::map_request(refuse_nul))
        .layer(axum::middleware::map_request(collapse_slashes))
        .layer(axum::middleware::from_fn(graph_error_bodies));
    let pages_fallback = {
        let api_app = api_app.clone();
        let state = state.clone();
        move |req: Request| {
            let api_app = api_app.clone();
            let state = state.clone();
            async move {
                use tower::ServiceExt;
                if crate::web::is_api_path(req.uri().path()) {
                    match api_app.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                } else {
                    let (mut parts, _) = req.into_parts();
                    match <crate::web::Portal as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state).await {
                        Ok(p) => crate::web::not_found_page(p).await,
                        Err(resp) => resp,
                    }
                }
            }
        }
    };
    let app = crate::web::routes(Router::new())
        .with_state(state)
        .fallback(pages_fallback)
        // The portals call the API in-process, through the same router and checks as anyone
        // (an extension, not a field of the state: the router holds the state already).
        .layer(axum::Extension(crate::web::ApiApp(api_app)))
        .layer(axum::middleware::from_fn(crate::web::security_headers));
    (app, specs)
}

/// No Graph id or name holds the NUL character, and PostgreSQL cannot hold it in text: a path
/// that decodes to one is refused before it can reach a query.
async fn refuse_nul(req: Request) -> Result<Request, ApiError> {
    if req.uri().path().contains("%00") {
        return Err(ApiError::bad_request(
            "The path contains the NUL character (%00), which is not accepted.",
        ));
    }
    Ok(req)
}

/// The refusals axum and tower-http answer themselves, in plain text or with no body (a method
/// the route does not serve, a body over the limit, a path segment that is not UTF-8), get
/// Graph's error body like every other error: clients read one shape. Headers that still apply
/// (`Allow`) are kept.
async fn graph_error_bodies(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // The framework's own messages are short; anything longer is not one of them.
    let text = axum::body::to_bytes(body, 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request uri.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(status, "requestTooLarge", "The request body is too large.")
        }
        s if s.is_server_error() => ApiError::internal("The request could not be completed."),
        _ => {
            let message = if text.is_empty() {
                status.canonical_reason().unwrap_or("Bad request").to_owned()
            } else {
                text
            };
            ApiError::new(status, "badRequest", message)
        }
    };
    let mut out = error.into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

async fn collapse_slashes(mut req: Request) -> Request {
    let uri = req.uri();
    if uri.path().contains("//") {
        let mut path = String::with_capacity(uri.path().len());
        for c in uri.path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        if let Ok(p) = pq.parse::<axum::http::uri::PathAndQuery>() {
            let mut parts = uri.clone().into_parts();
            parts.path_and_query = Some(p);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}

fn catalog_right_text(right: gatehouse_core::roles::CatalogRight) -> &'static str {
    use gatehouse_core::roles::CatalogRight::*;
    match right {
        Read => "read rights in the catalog (any catalog role)",
        ManageCatalog => "the right to manage the catalog (Catalog owner)",
        ManagePackages => {
            "the right to manage access packages (Catalog owner, Access package manager)"
        }
        ManageAssignments => {
            "the right to manage assignments (Catalog owner, Access package manager, Access package assignment manager)"
        }
        CreateCatalog => "the right to create catalogs (Catalog creator)",
    }
}

/// `docs/api.md`: every route with who may call it, generated from the route table (a test
/// keeps the committed file current).
pub fn render_api_doc(specs: &[RouteSpec]) -> String {
    let mut out = String::from(
        "# API routes and who may call them\n\n\
         Generated from the server's route table by the test `authz::api_doc_is_current`\n\
         (`GATEHOUSE_BLESS=1 cargo test -p gatehouse --test integration authz::api_doc_is_current`\n\
         rewrites it). The same table drives the role check on every request, and\n\
         `authz::every_route_with_every_role` calls each route with each role and with no token.\n\n\
         - **anyone**: no token needed.\n\
         - **signed in**: any valid session or API token; the route acts on the caller's own data.\n\
         - Otherwise, a session of a user holding at least one of the listed Entra roles (directly\n\
           or through a group). Sessions granted only for registering security info hold no role.\n\n\
         | Method | Path | Who | What |\n|---|---|---|---|\n",
    );
    let mut specs: Vec<&RouteSpec> = specs.iter().collect();
    specs.sort_by(|a, b| (a.path, a.method.as_str()).cmp(&(b.path, b.method.as_str())));
    for s in specs {
        let who = match s.access {
            Access::Anonymous => "anyone".to_owned(),
            Access::SignedIn => "signed in".to_owned(),
            Access::Roles(roles) => {
                roles.iter().map(|r| r.display_name()).collect::<Vec<_>>().join(", ")
            }
            Access::Catalog(roles, right) => format!(
                "{}, or a catalog role with {}",
                roles.iter().map(|r| r.display_name()).collect::<Vec<_>>().join(", "),
                catalog_right_text(right)
            ),
            Access::SignedOr(roles) => format!(
                "{}, or a callback signed with the custom extension's secret",
                roles.iter().map(|r| r.display_name()).collect::<Vec<_>>().join(", ")
            ),
        };
        out.push_str(&format!("| {} | `{}` | {} | {} |\n", s.method, s.path, who, s.summary));
    }
    out
}
