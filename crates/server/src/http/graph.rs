//! Graph conventions shared by every route: JSON bodies with Graph errors, query pairs decoded
//! the way OData expects, and the entity and collection envelopes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use gatehouse_core::roles::Access;
use serde_json::{Map, Value, json};

use super::Api;
use super::error::ApiError;
use crate::state::AppState;

/// A JSON object body. Malformed JSON, a non-object, or a body over the size limit is a Graph
/// `badRequest`, never a 500. So are two values for one key (which one counts would depend on
/// who parses: a proxy that checked the first lets the second through) and the NUL character
/// (PostgreSQL cannot store it in text, and no Graph value holds one).
pub struct Body(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "requestTooLarge",
                    "The request body is too large.",
                )
            } else {
                ApiError::bad_request(format!("Cannot read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return Ok(Body(Map::new()));
        }
        match strict_json(&bytes) {
            Ok(Value::Object(m)) => Ok(Body(m)),
            Ok(_) => Err(ApiError::bad_request("The request body must be a JSON object.")),
            Err(e) => Err(ApiError::bad_request(format!("Invalid JSON in the request body: {e}"))),
        }
    }
}

/// `bytes` as one JSON value under the same rules as [`Body`], for handlers that need the raw
/// bytes too (a signed callback).
pub fn strict_value(bytes: &[u8]) -> Result<Value, ApiError> {
    strict_json(bytes)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON in the request body: {e}")))
}

/// `bytes` as one JSON value, refusing duplicate keys and the NUL character at any depth.
fn strict_json(bytes: &[u8]) -> serde_json::Result<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a `Value` as `serde_json` does (its nesting limit included), with the two refusals.
struct Strict;

fn no_nul<E: serde::de::Error>(s: &str) -> Result<(), E> {
    if s.contains('\0') {
        Err(E::custom("the NUL character (\\u0000) is not accepted"))
    } else {
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        no_nul(v)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        no_nul(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        use serde::de::Error;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            no_nul(&key)?;
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!("the key `{key}` is given twice")));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The query string as decoded pairs. A raw `+` is a space, as form encoding (curl's
/// `--data-urlencode`, PowerShell) sends it, except in a time offset (`T10:00:00+01:00`, left
/// unencoded by hand), which stays `+`; a literal `+` elsewhere is sent as `%2B`.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or("");
        let mut pairs = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((percent_decode(k)?, percent_decode(v)?));
        }
        Ok(QueryPairs(pairs))
    }
}

/// Is the `+` at `i` the sign of a time offset: a digit before, `hh:mm` after?
fn is_offset_sign(bytes: &[u8], i: usize) -> bool {
    let digit = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_digit);
    i > 0 && digit(i - 1) && digit(i + 1) && digit(i + 2) && bytes.get(i + 3) == Some(&b':')
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Malformed percent-encoding in the query string near '{}'.",
                    &s[i..]
                ))
            })?;
            out.push(v);
            i += 3;
        } else if b == b'+' && !is_offset_sign(bytes, i) {
            out.push(b' ');
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let text = String::from_utf8(out)
        .map_err(|_| ApiError::bad_request("The query string is not UTF-8."))?;
    if text.contains('\0') {
        // PostgreSQL cannot hold it in text: a filter value with one would fail the query.
        return Err(ApiError::bad_request(
            "The query string contains the NUL character (%00), which is not accepted.",
        ));
    }
    Ok(text)
}

/// `{base}/v1.0` as clients reach it.
pub fn base(state: &AppState) -> String {
    format!("{}/v1.0", state.config.public_url())
}

/// `@odata.context` for a path such as `users` or `users/{id}/memberOf`.
pub fn context(state: &AppState, path: &str) -> String {
    format!("{}/$metadata#{path}", base(state))
}

/// A single entity with its `@odata.context`.
pub fn entity(state: &AppState, path: &str, value: Value) -> Value {
    let mut out = Map::new();
    out.insert("@odata.context".into(), context(state, &format!("{path}/$entity")).into());
    if let Value::Object(m) = value {
        out.extend(m);
    }
    Value::Object(out)
}

/// A collection page.
pub fn collection(
    state: &AppState,
    path: &str,
    items: Vec<Value>,
    next_link: Option<String>,
    count: Option<usize>,
) -> Value {
    let mut out = Map::new();
    out.insert("@odata.context".into(), context(state, path).into());
    if let Some(c) = count {
        out.insert("@odata.count".into(), c.into());
    }
    if let Some(n) = next_link {
        out.insert("@odata.nextLink".into(), n.into());
    }
    out.insert("value".into(), Value::Array(items));
    Value::Object(out)
}

pub fn ok(value: Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}

pub fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn health(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    ok(json!({"status": "ok", "version": state.applied_version()}))
}

pub fn health_routes(api: Api) -> Api {
    let api = api.route(
        Method::GET,
        "/healthz",
        Access::Anonymous,
        "Liveness and the applied store version",
        health,
    );
    if api.test_clock() {
        api.route(
            Method::POST,
            "/test/clock",
            Access::Anonymous,
            "TESTS ONLY (serve --test-clock): move the server's clock",
            move_clock,
        )
    } else {
        api
    }
}

/// `POST /test/clock {"advanceMilliseconds": n}` or `{"dateTime": "…"}` (forward only), served
/// only under `serve --test-clock`. Answers the new time; wakes the workers.
async fn move_clock(
    axum::extract::State(state): axum::extract::State<AppState>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(clock) = state.clock.as_manual() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            "There is no test clock.",
        ));
    };
    let now = crate::clock::Clock::now(clock);
    let target = match (
        body.get("advanceMilliseconds").and_then(Value::as_i64),
        body.get("dateTime").and_then(Value::as_str),
    ) {
        (Some(ms), None) if ms >= 0 => now.saturating_add(ms),
        (None, Some(t)) => gatehouse_core::time::parse(t)
            .ok_or_else(|| ApiError::bad_request(format!("`{t}` is not a date-time")))?,
        _ => {
            return Err(ApiError::bad_request(
                "send {\"advanceMilliseconds\": n ≥ 0} or {\"dateTime\": \"…\"}",
            ));
        }
    };
    if target < now {
        return Err(ApiError::bad_request("the test clock only moves forward"));
    }
    clock.set(target);
    state.work.notify_one();
    Ok(ok(json!({"now": gatehouse_core::time::format(target)})))
}
