//! Entitlement management: access packages that put people into groups (and app roles) for
//! exactly as long as approved.
//!
//! Pure, like the rest of the core: the server loads the records, calls these functions with the
//! directory and `now`, and writes what they return (the new records, the directory changes,
//! due jobs, messages and audit entries) in one transaction.
//!
//! - `duration`: ISO 8601 durations and time-zone arithmetic (dates are local to the policy).
//! - `subjects`: who may request and who approves (`subjectSet`).
//! - `policy`: assignment policies: scope, approval stages, questions, expiration, ranking.
//! - `questions`: requestor questions and the checking of answers.
//! - `model`: requests, stages, assignments, grants, and their Graph shapes.
//! - `engine`: the request and assignment state machines.

pub mod duration;
pub mod engine;
pub mod model;
pub mod policy;
pub mod questions;
pub mod subjects;

use sha2::{Digest, Sha256};

/// What went wrong, with a stable code and the HTTP meaning the edge gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GovError {
    pub kind: ErrorKind,
    /// `GH-EM-…`, listed in `docs/governance.md`.
    pub code: &'static str,
    pub message: String,
    /// The JSON path of the offending field, when there is one.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the body is wrong.
    Invalid,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: an object named does not exist.
    NotFound,
    /// 409: the state of things forbids it now (a decision already made, a request pending).
    Conflict,
}

impl GovError {
    pub fn invalid(path: &str, message: impl Into<String>) -> GovError {
        let message = message.into();
        let (message, target) = if path.is_empty() || path == "(document)" {
            (message, None)
        } else {
            (format!("{path}: {message}"), Some(path.to_owned()))
        };
        GovError { kind: ErrorKind::Invalid, code: "GH-EM-001", message, target }
    }

    pub fn forbidden(message: impl Into<String>) -> GovError {
        GovError {
            kind: ErrorKind::Forbidden,
            code: "GH-EM-003",
            message: message.into(),
            target: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> GovError {
        GovError {
            kind: ErrorKind::NotFound,
            code: "GH-EM-004",
            message: message.into(),
            target: None,
        }
    }

    pub fn conflict(message: impl Into<String>) -> GovError {
        GovError {
            kind: ErrorKind::Conflict,
            code: "GH-EM-009",
            message: message.into(),
            target: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> GovError {
        self.code = code;
        self
    }
}

/// A GUID-shaped id derived from `seed` (SHA-256): stable ids for things the core names itself,
/// such as a question posted without an id, with no randomness in the core.
pub fn derived_id(seed: &str) -> String {
    let h = Sha256::digest(seed.as_bytes());
    let hex: String = h.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default();
    format!("{}-{}-8{}-{}-{}", part(0..8), part(8..12), part(13..16), part(16..20), part(20..32))
}
