//! Randomness from the operating system: ids, tokens, passes, TOTP seeds.

/// Fills `buf` from the OS generator. The OS generator failing is not recoverable.
pub fn fill(buf: &mut [u8]) {
    if let Err(e) = getrandom::fill(buf) {
        // Continuing without randomness would issue guessable secrets.
        tracing::error!("the operating system's random generator failed: {e}");
        std::process::abort();
    }
}

/// A random (v4) GUID, the shape Graph ids take.
pub fn guid() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

/// A 256-bit secret, URL-safe: API tokens, session tokens, sign-in flow tokens.
pub fn token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    fill(&mut b);
    format!("{prefix}{}", data_encoding::BASE64URL_NOPAD.encode(&b))
}

/// A uniformly random index below `n` (rejection sampling, no modulo bias).
pub fn below(n: u32) -> u32 {
    if n <= 1 {
        return 0;
    }
    let zone = u32::MAX - (u32::MAX % n);
    loop {
        let mut b = [0u8; 4];
        fill(&mut b);
        let x = u32::from_le_bytes(b);
        if x < zone {
            return x % n;
        }
    }
}
