//! Custom extensions: the HTTP calls entitlement management makes at the stages of a request
//! and before an assignment expires (Graph's `customExtensionCalloutRequest`), and the check of
//! the callbacks (`resume`) that launch-and-wait extensions make.
//!
//! Graph assumes Logic Apps and Entra tokens; Gatehouse signs instead. Every call carries
//! `X-Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` with the
//! extension's signing secret (shown once, when the extension is created), and
//! `X-Gatehouse-Event-Id`, the outbox row's id, which stays the same on every retry. A callback
//! is accepted with the same signature scheme, within five minutes of its timestamp.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const SIGNATURE_HEADER: &str = "x-gatehouse-signature";
pub const EVENT_ID_HEADER: &str = "x-gatehouse-event-id";
/// How far a callback's timestamp may be from now.
pub const SIGNATURE_TOLERANCE_MS: i64 = 5 * 60_000;

fn mac(secret: &str, t: i64, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let Ok(mut m) = HmacSha256::new_from_slice(secret.as_bytes()) else { return Vec::new() };
    m.update(t.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// The signature header value for `body` sent at `now_ms`.
pub fn sign(secret: &str, now_ms: i64, body: &[u8]) -> String {
    let t = now_ms.div_euclid(1000);
    let hex: String = mac(secret, t, body).iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Checks a signature header against `body`: the MAC compared in constant time, the timestamp
/// within [`SIGNATURE_TOLERANCE_MS`] of `now_ms`.
pub fn verify(secret: &str, header: &str, body: &[u8], now_ms: i64) -> Result<(), &'static str> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err("the signature header must read t=<unix seconds>,v1=<hex HMAC-SHA256>");
    };
    if (now_ms - t.saturating_mul(1000)).abs() > SIGNATURE_TOLERANCE_MS {
        return Err("the signature's timestamp is more than five minutes from now");
    }
    let expected: String = mac(secret, t, body).iter().map(|b| format!("{b:02x}")).collect();
    if expected.as_bytes().ct_eq(v1.to_ascii_lowercase().as_bytes()).into() {
        Ok(())
    } else {
        Err("the signature does not match the body")
    }
}

/// Is `url` an endpoint Gatehouse may call? `https://`, or `http://` to a host the operator
/// allowed (`governance.insecure_webhook_hosts`).
pub fn check_endpoint(url: &str, insecure_hosts: &[String]) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            if insecure_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                Ok(())
            } else {
                Err(format!(
                    "`{url}` is not https; plain http is allowed only to the hosts in \
                     governance.insecure_webhook_hosts"
                ))
            }
        }
        other => Err(format!("`{url}` uses `{other}`; custom extensions call https endpoints")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let now = 1_764_579_600_000;
        let h = sign("s3cret", now, b"{\"a\":1}");
        assert!(verify("s3cret", &h, b"{\"a\":1}", now + 1000).is_ok());
        assert!(verify("s3cret", &h, b"{\"a\":2}", now).is_err());
        assert!(verify("other", &h, b"{\"a\":1}", now).is_err());
        assert!(verify("s3cret", &h, b"{\"a\":1}", now + 6 * 60_000).is_err());
        assert!(verify("s3cret", "v1=00", b"", now).is_err());
    }

    #[test]
    fn only_https_or_allowed_hosts() {
        assert!(check_endpoint("https://hooks.example.com/x", &[]).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9/x", &[]).is_err());
        assert!(check_endpoint("http://127.0.0.1:9/x", &["127.0.0.1".into()]).is_ok());
        assert!(check_endpoint("ftp://x", &[]).is_err());
    }
}
