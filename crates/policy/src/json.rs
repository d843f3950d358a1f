//! Tolerant reading of Graph JSON with a path for every error.
//!
//! Real exports mix `null`, `[]` and missing keys for "not configured", use any case for enum
//! values, and come in UTF-8 or UTF-16 with or without a BOM. This module absorbs those
//! differences once, so the model code reads like the Graph documentation.

use serde_json::{Map, Value};

/// Where in a document a value sits, e.g. `conditions.users.includeUsers[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPath(String);

impl JsonPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn key(&self, key: &str) -> Self {
        if self.0.is_empty() { Self(key.to_owned()) } else { Self(format!("{}.{key}", self.0)) }
    }

    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        if self.0.is_empty() { "(document)" } else { &self.0 }
    }
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that is not what the Graph shape says it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: JsonPath,
    pub message: String,
}

impl FieldError {
    pub fn new(path: &JsonPath, message: impl Into<String>) -> Self {
        Self { path: path.clone(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.as_str().is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

pub type FieldResult<T> = Result<T, FieldError>;

/// Turns file bytes into text: UTF-8 (BOM optional) or UTF-16 LE/BE (BOM, or detected from the
/// zero bytes that ASCII JSON has in UTF-16).
pub fn decode_text(bytes: &[u8]) -> Result<String, String> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return utf8(rest);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(rest, u16::from_le_bytes);
    }
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(rest, u16::from_be_bytes);
    }
    match bytes {
        [a, 0, ..] if *a != 0 => utf16(bytes, u16::from_le_bytes),
        [0, b, ..] if *b != 0 => utf16(bytes, u16::from_be_bytes),
        _ => utf8(bytes),
    }
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.utf8_error().valid_up_to()))
}

fn utf16(bytes: &[u8], decode: fn([u8; 2]) -> u16) -> Result<String, String> {
    if !bytes.len().is_multiple_of(2) {
        return Err("UTF-16 text with an odd number of bytes".into());
    }
    let units = bytes
        .chunks_exact(2)
        .map(|c| decode([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| "not valid UTF-16".to_owned())
}

/// Parses JSON text; serde_json's recursion limit (128) turns absurd nesting into an error.
pub fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of JSON",
            _ => "invalid JSON",
        };
        // serde_json's message already ends with the position.
        let detail = e.to_string();
        format!("{what}: {detail}")
    })
}

/// Graph type names are compared without the `#microsoft.graph.` prefix and case-insensitively.
pub fn odata_type(obj: &Map<String, Value>) -> Option<String> {
    let t = obj.get("@odata.type")?.as_str()?;
    let t = t.trim_start_matches('#');
    let t = t.strip_prefix("microsoft.graph.").unwrap_or(t);
    Some(t.to_ascii_lowercase())
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A borrowed JSON object together with its path, with the readers every model type needs.
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    pub map: &'a Map<String, Value>,
    pub path: &'a JsonPath,
}

/// `null`, a missing key and `[]` all mean "not configured" in exports.
fn absent(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

impl<'a> Obj<'a> {
    pub fn new(value: &'a Value, path: &'a JsonPath) -> FieldResult<Self> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(FieldError::new(
                path,
                format!("expected an object, found {}", type_name(other)),
            )),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn is_absent(&self, key: &str) -> bool {
        absent(self.map.get(key))
    }

    /// A nested object; `None` when not configured (`null`, `[]`, missing).
    pub fn object(&self, key: &str) -> FieldResult<Option<(&'a Map<String, Value>, JsonPath)>> {
        let path = self.path.key(key);
        match self.map.get(key) {
            v if absent(v) => Ok(None),
            Some(Value::Object(m)) => Ok(Some((m, path))),
            Some(other) => Err(FieldError::new(
                &path,
                format!("expected an object, found {}", type_name(other)),
            )),
            None => Ok(None),
        }
    }

    pub fn string(&self, key: &str) -> FieldResult<Option<&'a str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(FieldError::new(
                &self.path.key(key),
                format!("expected a string, found {}", type_name(other)),
            )),
        }
    }

    pub fn required_string(&self, key: &str) -> FieldResult<&'a str> {
        self.string(key)?.ok_or_else(|| FieldError::new(&self.path.key(key), "is required"))
    }

    pub fn bool(&self, key: &str) -> FieldResult<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Some tools write booleans as strings; accept the two obvious spellings.
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(FieldError::new(
                &self.path.key(key),
                format!("expected a boolean, found {}", type_name(other)),
            )),
        }
    }

    pub fn integer(&self, key: &str) -> FieldResult<Option<i64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| FieldError::new(&self.path.key(key), "expected a whole number")),
            Some(other) => Err(FieldError::new(
                &self.path.key(key),
                format!("expected a number, found {}", type_name(other)),
            )),
        }
    }

    /// An array of strings; `null`/missing is empty. A bare string is an error (a classic
    /// hand-editing slip that would otherwise change a policy's scope).
    pub fn strings(&self, key: &str) -> FieldResult<Vec<&'a str>> {
        let path = self.path.key(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(FieldError::new(
                        &path.index(i),
                        format!("expected a string, found {}", type_name(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                &path,
                format!("expected an array, found {}", type_name(other)),
            )),
        }
    }

    /// Graph flag enums are serialized as one comma-separated string
    /// (`"internalGuest,b2bCollaborationGuest"`); some tools write an array instead. Accept both.
    pub fn flags(&self, key: &str) -> FieldResult<Vec<&'a str>> {
        match self.map.get(key) {
            Some(Value::String(s)) => {
                Ok(s.split(',').map(str::trim).filter(|p| !p.is_empty()).collect())
            }
            _ => self.strings(key),
        }
    }

    /// An array of objects (each with its own path); `null`/missing is empty.
    pub fn objects(&self, key: &str) -> FieldResult<Vec<(&'a Map<String, Value>, JsonPath)>> {
        let path = self.path.key(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok((m, path.index(i))),
                    other => Err(FieldError::new(
                        &path.index(i),
                        format!("expected an object, found {}", type_name(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(FieldError::new(
                &path,
                format!("expected an array, found {}", type_name(other)),
            )),
        }
    }
}

/// Matches `raw` against enum spellings case-insensitively, returning the canonical variant.
pub fn enum_value<T: Copy>(
    raw: &str,
    table: &[(&str, T)],
    path: &JsonPath,
    what: &str,
) -> FieldResult<T> {
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let allowed: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            FieldError::new(
                path,
                format!("`{raw}` is not a valid {what} (expected one of: {})", allowed.join(", ")),
            )
        })
}

/// Ids are GUIDs in practice; Graph compares them case-insensitively, so we keep them lowercase.
pub fn normalize_id(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_encoding_real_exports_use() {
        let text = r#"{"a":"é"}"#;
        let mut bom8 = vec![0xEF, 0xBB, 0xBF];
        bom8.extend_from_slice(text.as_bytes());
        assert_eq!(decode_text(&bom8).unwrap(), text);

        let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(decode_text(&le).unwrap(), text);
        assert_eq!(decode_text(&be).unwrap(), text);
        let mut bom16 = vec![0xFF, 0xFE];
        bom16.extend_from_slice(&le);
        assert_eq!(decode_text(&bom16).unwrap(), text);
        assert!(decode_text(&[0xFF, 0xFE, 0x00]).is_err());
        assert!(decode_text(&[0xC3]).is_err());
    }

    #[test]
    fn absurd_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn null_empty_and_missing_are_the_same() {
        let v: Value = serde_json::json!({"a": null, "b": [], "d": {"x": 1}});
        let p = JsonPath::root();
        let o = Obj::new(&v, &p).unwrap();
        assert!(o.object("a").unwrap().is_none());
        assert!(o.object("b").unwrap().is_none());
        assert!(o.object("c").unwrap().is_none());
        assert!(o.object("d").unwrap().is_some());
        assert!(o.strings("a").unwrap().is_empty());
        assert!(o.strings("c").unwrap().is_empty());
    }

    #[test]
    fn a_string_where_an_array_belongs_names_the_path() {
        let v: Value = serde_json::json!({"includeUsers": "All"});
        let p = JsonPath::root().key("conditions").key("users");
        let err = Obj::new(&v, &p).unwrap().strings("includeUsers").unwrap_err();
        assert_eq!(err.path.as_str(), "conditions.users.includeUsers");
        assert_eq!(err.message, "expected an array, found a string");
    }
}
