//! Authentication-method rules: pure functions of the stored state and `now`.

pub mod lockout;
pub mod secret;
pub mod tap;
pub mod totp;
