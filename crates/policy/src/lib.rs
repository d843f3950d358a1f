//! Gatehouse's Conditional Access engine.
//!
//! Pure and synchronous: no I/O, no clock, no async. Callers hand in documents and sign-ins;
//! the engine hands back decisions with their reasons. The same evaluator serves offline What-If
//! and live sign-ins.
//!
//! ```text
//! SourceFile[] --load--> Tenant --compile--> Snapshot --evaluate(SignInRequest)--> Evaluation
//!                                                         Evaluation --decide(AuthState)--> Decision
//! ```

pub mod decision;
pub mod device_filter;
pub mod diagnostic;
pub mod evaluate;
pub mod json;
pub mod lint;
pub mod model;
pub mod request;
pub mod snapshot;
pub mod suites;
pub mod tenant;
pub mod whatif;

pub use decision::{AuthState, Control, Decision, Outcome, Requirement, SignInResult, Unknowns};
pub use diagnostic::{Code, Diagnostic, LoadError};
pub use evaluate::{Applicability, Evaluation, Notice, Reason, Tri};
pub use model::enums::{MethodMode, MethodSet};
pub use request::SignInRequest;
pub use snapshot::Snapshot;
pub use tenant::{Loaded, SourceFile, Tenant, load};
pub use whatif::{Case, CaseResult, run_case};

#[cfg(test)]
mod rules_tests;

#[cfg(test)]
mod proptests;
