//! Gatehouse's pure core: everything the server decides, with no I/O, no clock and no async.
//!
//! - `directory`: the in-memory directory (users, groups, roles, apps, devices, policies) that
//!   the Graph API reads and the Conditional Access snapshot is compiled from. It changes only
//!   by applying `Change`s, the same records the store keeps, so every node converges.
//! - `auth`: the rules of the authentication methods (TAP, TOTP, lockout), with `now` passed in.
//! - `roles`: Entra directory roles and what each may do.
//! - `odata`: `$filter`, `$select`, `$top` and paging as Graph clients send them.
//! - `governance`: entitlement management: policies, requests, approvals, assignments.
//! - `grants`: roles held for a time through access package assignments.
//! - `time`: instants as Unix milliseconds and their Graph text forms.

pub mod auth;
pub mod change;
pub mod directory;
pub mod governance;
pub mod grants;
pub mod odata;
pub mod roles;
pub mod time;

pub use change::Change;
pub use directory::Directory;
