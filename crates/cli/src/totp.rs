//! `gatehouse totp code`: the current Authenticator-app code for a secret, so the README's
//! walk-through works without a phone.

use clap::Args;
use gatehouse_core::auth::totp;
use gatehouse_server::clock::{Clock, SystemClock};

use crate::Failure;

#[derive(Args)]
pub struct CodeArgs {
    /// The base32 secret shown when the method was registered.
    #[arg(long, value_name = "BASE32")]
    secret: String,
}

pub fn code(args: &CodeArgs) -> Result<u8, Failure> {
    let secret = totp::Secret::from_base32(&args.secret)
        .map_err(|e| Failure::input(format!("not a usable TOTP secret: {e}")))?;
    let now = SystemClock.now();
    crate::emit(&format!("{}\n", totp::code_at(&secret, totp::step_of(now))))?;
    Ok(0)
}
