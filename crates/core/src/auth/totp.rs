//! Time-based one-time passwords (RFC 6238): HMAC-SHA1, 30-second steps, 6 digits, the
//! parameters every authenticator app supports.
//!
//! - A code is accepted for the current step and one step either side (clock drift).
//! - A code whose step is not after the last accepted one is refused, so a code cannot be
//!   replayed, and an earlier code cannot be used after a later one.
//! - Spaces in the code are ignored (apps show `123 456`); anything else but 6 digits is refused.

use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::auth::secret;
use crate::time::Millis;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one.
pub const DRIFT_STEPS: i64 = 1;
/// `last_used_step` for a secret that has never accepted a code.
pub const NEVER_USED: i64 = i64::MIN;
/// The shortest secret accepted from outside (RFC 4226 §4: at least 128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

/// A shared TOTP key. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as users type it into an app: RFC 4648 base32, no padding.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// Reads a base32 key as apps and other systems show it: any case, spaces and `=` padding
    /// ignored. Keys shorter than 128 bits are refused.
    pub fn from_base32(text: &str) -> Result<Secret, TotpError> {
        let cleaned: String = text
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .map_err(|_| TotpError::InvalidSecret)?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TotpError::InvalidSecret);
        }
        Ok(Secret(bytes))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code must be 6 digits")]
    Malformed,
    #[error("the code is not valid")]
    Invalid,
    #[error("the code has already been used")]
    Replayed,
    #[error("the secret is not base32 of at least 128 bits")]
    InvalidSecret,
}

impl TotpError {
    /// A stable code for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            TotpError::Malformed => "GH-TOTP-001",
            TotpError::Invalid => "GH-TOTP-002",
            TotpError::Replayed => "GH-TOTP-003",
            TotpError::InvalidSecret => "GH-TOTP-004",
        }
    }
}

/// A new secret from 20 random bytes (160 bits, RFC 4226's recommendation) the caller draws.
pub fn generate_secret(bytes: [u8; 20]) -> Secret {
    Secret(bytes.to_vec())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `otpauth://` URI an app reads from a QR code (Google Authenticator's key-uri format):
/// label `issuer:account` and `issuer=`, both percent-encoded, and the parameters spelled out.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &Secret) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent_encode(account),
        secret.to_base32(),
    )
}

/// The step `now` falls in.
pub fn step_of(now: Millis) -> i64 {
    now.div_euclid(STEP_SECONDS * 1000)
}

/// The 6-digit code for a step.
pub fn code_at(secret: &Secret, step: i64) -> String {
    code_at_digits(secret, step, DIGITS)
}

/// The code for a step with `digits` digits (clamped to 6..=8, as RFC 4226 allows). A negative
/// step counts as 0.
pub fn code_at_digits(secret: &Secret, step: i64, digits: u32) -> String {
    let digits = digits.clamp(6, 8);
    let counter = u64::try_from(step).unwrap_or(0);
    // HMAC takes keys of any length, so this cannot fail; an empty code never verifies.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&secret.0) else {
        return String::new();
    };
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    // RFC 4226 §5.3 dynamic truncation.
    let offset = usize::from(hash.last().copied().unwrap_or(0) & 0x0f);
    let mut word = [0u8; 4];
    for (i, b) in word.iter_mut().enumerate() {
        *b = hash.get(offset + i).copied().unwrap_or(0);
    }
    let binary = u32::from_be_bytes(word) & 0x7fff_ffff;
    let width = usize::try_from(digits).unwrap_or(6);
    format!("{:0width$}", binary % 10u32.pow(digits))
}

/// Checks a code at `now`. Returns the step it matched, which the caller stores as the new
/// `last_used_step` (pass [`NEVER_USED`] the first time). Comparisons take constant time.
pub fn verify(
    secret: &Secret,
    code: &str,
    now: Millis,
    last_used_step: i64,
) -> Result<i64, TotpError> {
    let code: String = code.chars().filter(|c| *c != ' ').collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::Malformed);
    }
    let current = step_of(now);
    let mut accepted = None;
    let mut replayed = false;
    // Every window step is computed and compared, match or not, so timing does not reveal
    // which one matched.
    for step in current - DRIFT_STEPS..=current + DRIFT_STEPS {
        let hit = secret::equal(code_at(secret, step).as_bytes(), code.as_bytes());
        if hit && step > last_used_step {
            accepted = accepted.or(Some(step));
        } else if hit {
            replayed = true;
        }
    }
    match accepted {
        Some(step) => Ok(step),
        None if replayed => Err(TotpError::Replayed),
        None => Err(TotpError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> Secret {
        generate_secret(*b"12345678901234567890")
    }

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (seconds, expected) in vectors {
            let step = step_of(seconds * 1000);
            assert_eq!(code_at_digits(&rfc_secret(), step, 8), expected, "T={seconds}");
            // The 6-digit code is the last six digits.
            assert_eq!(code_at(&rfc_secret(), step), expected.get(2..).unwrap());
        }
    }

    #[test]
    fn rfc_4226_appendix_d_hotp_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at(&rfc_secret(), counter as i64), *code);
        }
        assert_eq!(code_at(&rfc_secret(), -5), code_at(&rfc_secret(), 0));
        assert_eq!(code_at_digits(&rfc_secret(), 1, 20).len(), 8);
    }

    #[test]
    fn base32_round_trips_and_is_lenient_on_input() {
        let s = rfc_secret();
        assert_eq!(s.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(Secret::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap(), s);
        assert_eq!(Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====").unwrap(), s);
        assert_eq!(Secret::from_base32("GEZDGNBVGY3TQOJQ"), Err(TotpError::InvalidSecret));
        assert_eq!(Secret::from_base32("not base32!"), Err(TotpError::InvalidSecret));
        assert_eq!(format!("{s:?}"), "Secret(…)");
    }

    #[test]
    fn otpauth_uri_encodes_label_and_issuer() {
        let uri = otpauth_uri("Contoso Ltd", "adele.vance+test@contoso.com", &rfc_secret());
        assert_eq!(
            uri,
            "otpauth://totp/Contoso%20Ltd:adele.vance%2Btest%40contoso.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Contoso%20Ltd&algorithm=SHA1&digits=6&period=30"
        );
        assert!(otpauth_uri("A:B", "ü", &rfc_secret()).starts_with("otpauth://totp/A%3AB:%C3%BC?"));
    }

    #[test]
    fn verify_accepts_one_step_of_drift_either_way() {
        let s = rfc_secret();
        let now = 1_700_000_015_000; // mid-step
        let current = step_of(now);
        for delta in [-1, 0, 1] {
            let code = code_at(&s, current + delta);
            assert_eq!(verify(&s, &code, now, NEVER_USED), Ok(current + delta), "delta {delta}");
        }
        for delta in [-2, 2] {
            let code = code_at(&s, current + delta);
            assert_eq!(
                verify(&s, &code, now, NEVER_USED),
                Err(TotpError::Invalid),
                "delta {delta}"
            );
        }
    }

    #[test]
    fn step_boundaries() {
        let s = rfc_secret();
        let start = 30_000 * 1_000; // the first millisecond of step 1000
        assert_eq!((step_of(start - 1), step_of(start)), (999, 1000));
        let code = code_at(&s, 998);
        assert_eq!(verify(&s, &code, start - 1, NEVER_USED), Ok(998));
        assert_eq!(verify(&s, &code, start, NEVER_USED), Err(TotpError::Invalid));
        assert_eq!(step_of(-1), -1);
    }

    #[test]
    fn verify_refuses_replay_and_older_codes() {
        let s = rfc_secret();
        let now = 1_700_000_015_000;
        let current = step_of(now);
        let code = code_at(&s, current);
        let used = verify(&s, &code, now, NEVER_USED).unwrap();
        assert_eq!(verify(&s, &code, now, used), Err(TotpError::Replayed));
        assert_eq!(verify(&s, &code, now + 30_000, used), Err(TotpError::Replayed));
        // The previous step's code after the current one was accepted.
        assert_eq!(verify(&s, &code_at(&s, current - 1), now, used), Err(TotpError::Replayed));
        // The next step's code is still fine.
        assert_eq!(verify(&s, &code_at(&s, current + 1), now, used), Ok(current + 1));
        assert_eq!(TotpError::Replayed.code(), "GH-TOTP-003");
    }

    #[test]
    fn verify_refuses_malformed_codes() {
        let s = rfc_secret();
        let now = 1_700_000_015_000;
        let code = code_at(&s, step_of(now));
        let spaced = format!("{} {}", code.get(..3).unwrap(), code.get(3..).unwrap());
        assert!(verify(&s, &spaced, now, NEVER_USED).is_ok());
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６", "-12345", "12 34 5"] {
            assert_eq!(verify(&s, bad, now, NEVER_USED), Err(TotpError::Malformed), "{bad}");
        }
    }

    #[test]
    fn different_secrets_give_different_codes() {
        let a = generate_secret([1; 20]);
        let b = generate_secret([2; 20]);
        let differ = (0..20).filter(|step| code_at(&a, *step) != code_at(&b, *step)).count();
        assert!(differ >= 19);
    }
}
