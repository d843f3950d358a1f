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
    if access == Access::Anonymous {
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
    if let Access::Roles(allowed) = access {
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
        if !caller.roles.iter().any(|r| allowed.contains(r)) {
            return ApiError::forbidden("Insufficient privileges to complete the operation.")
                .into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}
