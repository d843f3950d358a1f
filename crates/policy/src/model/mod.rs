//! The Graph-shaped model: what a tenant export holds, validated and typed.

pub mod directory;
pub mod enums;
pub mod location;
pub mod policy;
pub mod strength;
