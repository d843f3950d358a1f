//! The Gatehouse server: the edges around the pure core.
//!
//! ```text
//! HTTP (axum) ──► http::*  ──► core rules (gatehouse-core, gatehouse-policy)
//!                   │                 ▲
//!                   ▼                 │ apply change log
//!               store (sqlx: SQLite | PostgreSQL) ──► state (directory + snapshot)
//! ```

pub mod admin;
pub mod clock;
pub mod config;
pub mod demo;
pub mod geo;
pub mod governance;
pub mod http;
pub mod import;
pub mod passkey;
pub mod password;
pub mod random;
pub mod serve;
pub mod session;
pub mod signin;
pub mod state;
pub mod store;
pub mod web;

pub use config::Config;
pub use state::AppState;
