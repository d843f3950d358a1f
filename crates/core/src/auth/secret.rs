//! Secrets at rest: only their SHA-256 is stored, and comparisons take constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The hex SHA-256 of a high-entropy secret (an API token, a session token, a TAP). Such
/// secrets need no salt or slow hash: guessing one is as hard as guessing the 256-bit input.
pub fn hash(secret: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(secret.as_bytes()))
}

/// Compares two byte strings in time independent of where they differ.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Does `secret` hash to `stored`? Constant-time in the compared bytes.
pub fn matches(secret: &str, stored: &str) -> bool {
    equal(hash(secret).as_bytes(), stored.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_matches() {
        let h = hash("abc");
        assert_eq!(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(matches("abc", &h));
        assert!(!matches("abd", &h));
        assert!(!equal(b"ab", b"abc"));
    }
}
