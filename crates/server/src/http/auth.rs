//! Who is calling: the bearer token becomes a [`Caller`] with the roles the directory gives
//! them now (a role removed takes effect on the next request).

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_core::auth::secret;
use gatehouse_core::roles::{Access, Role};

use super::error::ApiError;
use crate::session::{Session, SessionKind};
use crate::state::AppState;
use crate::store::Backend;

/// The app id of Microsoft Graph: the audience a sign-in session needs for the `/v1.0` API.
pub const MICROSOFT_GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub user_principal_name: String,
    pub roles: Vec<Role>,
    pub session: Session,
}

impl Caller {
    /// The acting user, for audit records.
    pub fn audit_actor(&self) -> Option<(String, String)> {
        Some((self.user_id.clone(), self.user_principal_name.clone()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthenticated("Access token is empty."))
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// Resolves a token to its live session: memory first, then the store.
pub async fn session_for(state: &AppState, token: &str) -> Result<Option<Session>, ApiError> {
    let hash = secret::hash(token);
    let cached = state.sessions.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
    let session = match cached {
        Some(s) => Some(s),
        None => {
            let seen = state.session_revocations();
            let found = state.store.find_session(&hash).await?;
            state.remember_session(seen, &hash, found.clone());
            found
        }
    };
    Ok(session.filter(|s| s.is_live(state.now())))
}

/// With several nodes, a write first applies whatever other nodes committed, so it validates
/// against every write acknowledged before it (a user created through node A can be added to a
/// group through node B at once). Reads and What-If may lag by the notification delay.
async fn catch_up_before_write(
    state: &AppState,
    method: &Method,
    path: &str,
) -> Result<(), ApiError> {
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if write && !path.ends_with("/evaluate") && state.store.backend() == Backend::Postgres {
        state.sync().await?;
    }
    Ok(())
}

pub async fn authorize(state: AppState, access: Access, mut req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if let Err(e) = catch_up_before_write(&state, &method, &path).await {
        return e.into_response();
    }
    // Access-package grants that started or ended by now take effect before anything is read
    // (a comparison with the next boundary, unless one was crossed).
    if let Err(e) = state.advance_to(state.now()).await {
        return ApiError::from(e).into_response();
    }
    if access == Access::Anonymous {
        return next.run(req).await;
    }
    // A custom extension's callback is signed instead; the handler checks the signature.
    if let Access::SignedOr(_) = access
        && bearer(&req).is_none()
        && req.headers().contains_key(crate::governance::webhook::SIGNATURE_HEADER)
    {
        return next.run(req).await;
    }
    let Some(token) = bearer(&req) else {
        return ApiError::unauthenticated("Access token is empty.").into_response();
    };
    let session = match session_for(&state, token).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError::unauthenticated("Access token has expired or is not valid.")
                .into_response();
        }
        Err(e) => return e.into_response(),
    };
    let caller = {
        let dir = state.dir();
        let Some(user) = dir.user(&session.user_id).filter(|u| u.account_enabled) else {
            return ApiError::unauthenticated("The user of this token is disabled or deleted.")
                .into_response();
        };
        Caller {
            user_id: user.id.clone(),
            user_principal_name: user.user_principal_name.clone().unwrap_or_default(),
            roles: dir.roles_of(&user.id),
            session,
        }
    };
    let needs_roles = match access {
        Access::Roles(r) | Access::SignedOr(r) | Access::Catalog(r, _) => Some(r),
        Access::Anonymous | Access::SignedIn => None,
    };
    if let Some(allowed) = needs_roles {
        // A session is a token for what it was signed in to: the Graph API is the app Microsoft
        // Graph, so Conditional Access on Graph decides who administers, and a session for
        // another app (or for registering security info) is not an admin session.
        let for_graph = match caller.session.kind {
            SessionKind::ApiToken => true,
            SessionKind::SignIn => caller
                .session
                .target
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(MICROSOFT_GRAPH_APP_ID)),
        };
        if !for_graph {
            return ApiError::forbidden(
                "This session was signed in to another app; sign in to Microsoft Graph \
                 (00000003-0000-0000-c000-000000000000) to use the Graph API.",
            )
            .into_response();
        }
        let by_role = caller.roles.iter().any(|r| allowed.contains(r));
        if let Access::Catalog(_, right) = access {
            let grants = match catalog_access(&state, &caller, by_role, right).await {
                Ok(g) => g,
                Err(e) => return e.into_response(),
            };
            if !grants.all && grants.catalogs.is_empty() {
                return ApiError::forbidden("Insufficient privileges to complete the operation.")
                    .into_response();
            }
            req.extensions_mut().insert(grants);
        } else if !by_role {
            return ApiError::forbidden("Insufficient privileges to complete the operation.")
                .into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// What a caller may do in entitlement management: everything (a directory role), or what
/// their catalog roles give them, catalog by catalog.
#[derive(Debug, Clone, Default)]
pub struct CatalogAccess {
    pub all: bool,
    /// catalog id -> the caller's roles there (the tenant-wide Catalog creator under `/`).
    pub catalogs: std::collections::HashMap<String, Vec<gatehouse_core::roles::CatalogRole>>,
    /// The right the route asked for.
    pub right: Option<gatehouse_core::roles::CatalogRight>,
}

impl CatalogAccess {
    /// May the caller exercise `right` in `catalog`?
    pub fn may(&self, catalog: &str, right: gatehouse_core::roles::CatalogRight) -> bool {
        self.all
            || self.catalogs.get(catalog).is_some_and(|roles| roles.iter().any(|r| r.grants(right)))
    }

    /// The route's own right in `catalog`, or 403.
    pub fn require(&self, catalog: &str) -> Result<(), ApiError> {
        let right = self.right.unwrap_or(gatehouse_core::roles::CatalogRight::Read);
        if self.may(catalog, right) {
            Ok(())
        } else {
            Err(ApiError::forbidden("Insufficient privileges to complete the operation."))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CatalogAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<CatalogAccess>().cloned().ok_or_else(|| {
            ApiError::forbidden("Insufficient privileges to complete the operation.")
        })
    }
}

/// The caller's catalog roles (held directly or through a group), or all rights for a holder of
/// the route's directory roles.
pub async fn catalog_access(
    state: &AppState,
    caller: &Caller,
    by_role: bool,
    right: gatehouse_core::roles::CatalogRight,
) -> Result<CatalogAccess, ApiError> {
    let mut out = CatalogAccess { all: by_role, right: Some(right), ..CatalogAccess::default() };
    if by_role {
        return Ok(out);
    }
    let docs = state.store.docs(crate::store::governance::Kind::CatalogRole, None).await?;
    let groups: std::collections::HashSet<String> =
        state.dir().transitive_member_of(&caller.user_id).into_iter().collect();
    for d in docs {
        let principal = d.body.get("principalId").and_then(|v| v.as_str()).unwrap_or_default();
        if principal != caller.user_id && !groups.contains(principal) {
            continue;
        }
        let role = d
            .body
            .get("roleDefinitionId")
            .and_then(|v| v.as_str())
            .and_then(gatehouse_core::roles::CatalogRole::from_id);
        if let Some(role) = role
            && role.grants(right)
        {
            out.catalogs.entry(d.parent.clone()).or_default().push(role);
        }
    }
    Ok(out)
}
