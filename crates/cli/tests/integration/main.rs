//! The one integration-test binary (each extra `tests/*.rs` is another slow link on 2 cores):
//! add modules here rather than files beside it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests should fail loudly at the first surprise"
)]

mod adversarial;
mod authz;
mod cli;
mod corpus;
mod crash;
mod governance;
mod governance_crash;
mod governance_nodes;
mod governance_rules;
mod governance_support;
mod graph_sdk;
mod scenarios;
mod secrets;
mod server_ca;
mod server_directory;
mod server_signin;
mod server_support;
mod server_tap;
mod store_contract;
mod support;
mod walkthrough;
