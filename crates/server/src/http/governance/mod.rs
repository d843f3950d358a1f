//! Entitlement management under `/v1.0/identityGovernance/entitlementManagement`, and its
//! role assignments under `/v1.0/roleManagement/entitlementManagement` (`graph-shapes.md` §2).
//!
//! - `catalogs`: catalogs, resources (added by resource requests), their roles and scopes,
//!   custom extensions, catalog role assignments.
//! - `packages`: access packages, resource role scopes, assignment policies.
//! - `requests`: assignment requests, approvals, assignments.
//!
//! Who may do what: Global and Identity Governance Administrators everything, Global Readers and
//! Security Readers read; catalog roles give the same rights within their catalog
//! ([`crate::http::auth::CatalogAccess`]); requestors and approvers act on their own requests
//! and approvals.

/// A route path under `/v1.0/identityGovernance/entitlementManagement`.
macro_rules! em {
    ($p:literal) => {
        concat!("/v1.0/identityGovernance/entitlementManagement", $p)
    };
}

pub mod catalogs;
pub mod packages;
pub mod requests;

use axum::http::StatusCode;
use gatehouse_core::governance::{ErrorKind, GovError};
use serde_json::{Map, Value};

use super::Api;
use super::error::ApiError;
use crate::state::AppState;
use crate::store::governance::{Doc, Kind};

pub const EM: &str = "identityGovernance/entitlementManagement";

pub fn routes(api: Api) -> Api {
    api.merge(catalogs::routes).merge(packages::routes).merge(requests::routes)
}

/// A governance refusal as a Graph error: the status from its kind, its stable `GH-EM-…` code.
pub fn gov(e: GovError) -> ApiError {
    let status = match e.kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
    };
    let mut out = ApiError::new(status, e.code, e.message);
    out.target = e.target;
    out
}

pub fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "GH-EM-004", format!("{what} `{id}` does not exist."))
}

pub fn bad(path: &str, message: impl Into<String>) -> ApiError {
    gov(GovError::invalid(path, message))
}

/// `{"catalog": {"id": …}}` or `catalogId`.
pub fn nested_id(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key)
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .or_else(|| body.get(&format!("{key}Id")).and_then(Value::as_str))
        .map(gatehouse_policy::json::normalize_id)
}

/// A string property of a body: `None` when absent or null, 400 when not a string.
pub fn text<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(bad(key, "expected a string")),
    }
}

pub fn flag(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(bad(key, "expected a boolean")),
    }
}

/// A display name: required on create, 1 to 256 characters, no control characters.
pub fn display_name(body: &Map<String, Value>, required: bool) -> Result<Option<String>, ApiError> {
    match text(body, "displayName")? {
        None if required => Err(bad("displayName", "is required")),
        None => Ok(None),
        Some(n) => {
            let n = n.trim();
            if n.is_empty() || n.chars().count() > 256 || n.chars().any(char::is_control) {
                return Err(bad(
                    "displayName",
                    "must be 1 to 256 characters, without control characters",
                ));
            }
            Ok(Some(n.to_owned()))
        }
    }
}

/// Refuses keys a body must not set (read-only or unknown), naming them.
pub fn allow_keys(body: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    for k in body.keys() {
        let ok = allowed.iter().any(|a| a.eq_ignore_ascii_case(k)) || k.starts_with('@');
        if !ok {
            return Err(bad(k, format!("is not a property a client may set on {what}")));
        }
    }
    Ok(())
}

pub async fn doc_or_404(
    state: &AppState,
    kind: Kind,
    id: &str,
    what: &str,
) -> Result<Doc, ApiError> {
    let id = gatehouse_policy::json::normalize_id(id);
    state.store.doc(kind, &id).await?.ok_or_else(|| not_found(what, &id))
}

/// The catalog a package belongs to.
pub async fn catalog_of_package(state: &AppState, package: &str) -> Result<String, ApiError> {
    Ok(doc_or_404(state, Kind::Package, package, "Access package").await?.parent)
}

/// The package and catalog of a policy.
pub async fn catalog_of_policy(state: &AppState, policy: &str) -> Result<(Doc, String), ApiError> {
    let p = doc_or_404(state, Kind::Policy, policy, "Assignment policy").await?;
    let catalog = catalog_of_package(state, &p.parent).await?;
    Ok((p, catalog))
}

pub fn now_text(state: &AppState) -> String {
    gatehouse_core::time::format(state.now())
}
