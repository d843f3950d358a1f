//! Errors and warnings about a tenant export, each naming the file, the object and the JSON path.

use std::fmt;

/// Stable, machine-readable codes: scripts and docs refer to these, so never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The file is not text in a supported encoding.
    Encoding,
    /// The file is not JSON.
    Json,
    /// A value does not have the Graph shape (wrong type, bad enum, bad CIDR, bad filter…).
    InvalidField,
    /// Two different objects share an id.
    DuplicateId,
    /// An object Gatehouse does not recognise: refused, since it could be hiding policies.
    UnknownObject,
    /// A policy had no id; a stable one was derived from its file and position.
    DerivedId,
    /// A policy refers to a user, group, role, location or strength the export does not hold.
    DanglingReference,
    /// A policy can never apply to any sign-in.
    NeverApplies,
    /// A policy blocks every user and excludes nobody (no break-glass account).
    LockoutRisk,
    /// A setting Gatehouse reads but cannot enforce or decide.
    Unsupported,
    /// Entra would refuse this combination or exceed a service limit.
    ServiceLimit,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Encoding => "GH-LOAD-001",
            Code::Json => "GH-LOAD-002",
            Code::InvalidField => "GH-LOAD-003",
            Code::DuplicateId => "GH-LOAD-004",
            Code::UnknownObject => "GH-LOAD-005",
            Code::DerivedId => "GH-LOAD-006",
            Code::DanglingReference => "GH-LINT-001",
            Code::NeverApplies => "GH-LINT-002",
            Code::LockoutRisk => "GH-LINT-003",
            Code::Unsupported => "GH-LINT-004",
            Code::ServiceLimit => "GH-LINT-005",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub file: String,
    /// The object, for people: `policy "011-Global-…"`, `named location "HQ"`.
    pub object: Option<String>,
    /// The JSON path inside the object, when the problem is at one field.
    pub path: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        if let Some(p) = &self.path {
            write!(f, ": {p}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Diagnostic {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code.as_str(),
            "file": self.file,
            "object": self.object,
            "path": self.path,
            "message": self.message,
            "text": self.to_string(),
        })
    }
}

/// A tenant that could not be loaded: every error found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.first() {
            Some(first) if self.errors.len() == 1 => write!(f, "{first}"),
            Some(first) => write!(f, "{first} (and {} more errors)", self.errors.len() - 1),
            None => write!(f, "the tenant could not be loaded"),
        }
    }
}

impl std::error::Error for LoadError {}
