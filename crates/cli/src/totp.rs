//! `gatehouse totp code`: the current Authenticator-app code for a secret, so the README's
//! walk-through works without a phone.

use clap::Args;
use gatehouse_core::auth::totp;
use gatehouse_server::clock::{Clock, SystemClock};

use crate::Failure;

/// A code's window, in milliseconds.
const STEP_MS: i64 = 30_000;

#[derive(Args)]
pub struct CodeArgs {
    /// The base32 secret shown when the method was registered.
    #[arg(long, value_name = "BASE32")]
    secret: String,
    /// Wait for the next 30-second window and print its code: a code is accepted only once, so
    /// use this when the current one was just used.
    #[arg(long)]
    next: bool,
}

pub fn code(args: &CodeArgs) -> Result<u8, Failure> {
    let secret = totp::Secret::from_base32(&args.secret)
        .map_err(|e| Failure::input(format!("not a usable TOTP secret: {e}")))?;
    let mut now = SystemClock.now();
    if args.next {
        let wait = STEP_MS - now.rem_euclid(STEP_MS);
        eprintln!("waiting {:.0} s for the next code…", (wait as f64 / 1000.0).ceil());
        // The person asked to wait for the next code: the one place a sleep is the point.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(std::time::Duration::from_millis(wait.unsigned_abs() + 50));
        now = SystemClock.now();
    }
    let left = (STEP_MS - now.rem_euclid(STEP_MS)) / 1000;
    eprintln!("(this code is valid for {left} more seconds)");
    crate::emit(&format!("{}\n", totp::code_at(&secret, totp::step_of(now))))?;
    Ok(0)
}
