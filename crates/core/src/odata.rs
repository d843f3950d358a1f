//! OData query options as Graph clients send them (the Python SDK, PowerShell, curl), and the
//! helpers a collection endpoint needs: `$select` projection and keyset paging.
//!
//! Leniency, chosen to accept what copy-pasted doc examples and PowerShell users send:
//! - option names with or without `$`, in any case (`$filter`, `filter`, `$Filter`);
//! - keys without `$` that are not options (`api-version`) are ignored, while an unknown
//!   `$`-option is an error, since silently ignoring it would return the wrong data;
//! - `$count` in any case.
//!
//! `$skip` is refused, as Graph refuses it on directory objects: pages are keyset pages, and a
//! client follows `@odata.nextLink`.

mod filter;

use serde_json::{Map, Value};

pub use filter::{CompareOp, Filter, Literal, MAX_DEPTH, MAX_FILTER_BYTES, StringFunction};

/// Graph's largest page.
pub const MAX_TOP: usize = 999;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "unknown query option `{0}` (supported: $filter, $select, $top, $skiptoken, $count, \
         $expand, $orderby, $search)"
    )]
    UnknownOption(String),
    #[error("query option `{0}` is not supported: follow `@odata.nextLink` to get the next page")]
    SkipNotSupported(String),
    #[error("query option `{0}` appears more than once")]
    Repeated(String),
    #[error("invalid {option}: {message}")]
    InvalidValue { option: &'static str, message: String },
    #[error("{message} at position {position} in $filter")]
    Syntax { message: String, position: usize },
    #[error("$filter is {bytes} bytes long; the limit is {max}")]
    FilterTooLong { bytes: usize, max: usize },
    #[error("$filter nests deeper than {max} levels at position {position}")]
    TooDeep { max: usize, position: usize },
    #[error("invalid $skiptoken: pass the `@odata.nextLink` URL unchanged")]
    SkipToken,
}

impl QueryError {
    pub(crate) fn syntax(message: impl Into<String>, position: usize) -> QueryError {
        QueryError::Syntax { message: message.into(), position }
    }

    fn invalid(option: &'static str, message: impl Into<String>) -> QueryError {
        QueryError::InvalidValue { option, message: message.into() }
    }

    /// A stable code for logs and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::UnknownOption(_) => "GH-ODATA-001",
            QueryError::SkipNotSupported(_) => "GH-ODATA-002",
            QueryError::Repeated(_) => "GH-ODATA-003",
            QueryError::InvalidValue { .. } => "GH-ODATA-004",
            QueryError::Syntax { .. } => "GH-ODATA-005",
            QueryError::FilterTooLong { .. } => "GH-ODATA-006",
            QueryError::TooDeep { .. } => "GH-ODATA-007",
            QueryError::SkipToken => "GH-ODATA-008",
        }
    }

    /// The Graph error code (HTTP 400) for the error body.
    pub fn graph_code(&self) -> &'static str {
        "invalidRequest"
    }
}

/// The query options of one request. `skip_token` is the raw `$skiptoken`; decode it with
/// [`decode_skip_token`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub filter: Option<Filter>,
    pub select: Option<Vec<String>>,
    pub top: Option<usize>,
    pub skip_token: Option<String>,
    pub count: bool,
    pub expand: Vec<String>,
    /// The property path, and whether the order is descending.
    pub orderby: Option<(String, bool)>,
    /// The raw `$search` text (Graph's form is `"displayName:wa"`, quotes included).
    pub search: Option<String>,
}

impl Query {
    /// Reads already percent-decoded query pairs.
    pub fn parse(pairs: &[(String, String)]) -> Result<Query, QueryError> {
        let mut query = Query::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let dollar = key.starts_with('$');
            let name = key.strip_prefix('$').unwrap_or(key).to_ascii_lowercase();
            let option: &'static str = match name.as_str() {
                "filter" => "$filter",
                "select" => "$select",
                "top" => "$top",
                "skiptoken" => "$skiptoken",
                "count" => "$count",
                "expand" => "$expand",
                "orderby" => "$orderby",
                "search" => "$search",
                "skip" if dollar => return Err(QueryError::SkipNotSupported(key.clone())),
                _ if dollar => return Err(QueryError::UnknownOption(key.clone())),
                _ => continue,
            };
            if seen.contains(&option) {
                return Err(QueryError::Repeated(option.to_string()));
            }
            seen.push(option);
            match option {
                "$filter" => {
                    if value.trim().is_empty() {
                        return Err(QueryError::invalid("$filter", "it is empty"));
                    }
                    query.filter = Some(Filter::parse(value)?);
                }
                "$select" => query.select = Some(parse_select(value)?),
                "$top" => query.top = Some(parse_top(value)?),
                "$skiptoken" => {
                    if value.is_empty() {
                        return Err(QueryError::SkipToken);
                    }
                    query.skip_token = Some(value.clone());
                }
                "$count" => {
                    query.count = match value.trim().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            let message = format!("expected `true` or `false`, got `{value}`");
                            return Err(QueryError::invalid("$count", message));
                        }
                    }
                }
                "$expand" => query.expand = parse_expand(value)?,
                "$orderby" => query.orderby = Some(parse_orderby(value)?),
                _ => {
                    let search = value.trim();
                    if search.is_empty() {
                        return Err(QueryError::invalid("$search", "it is empty"));
                    }
                    query.search = Some(search.to_string());
                }
            }
        }
        Ok(query)
    }

    /// Does `entity` pass `$filter`? Everything passes when there is none.
    pub fn matches(&self, entity: &Value) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(entity))
    }
}

fn parse_top(value: &str) -> Result<usize, QueryError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(QueryError::invalid(
            "$top",
            format!("expected a whole number from 1 to {MAX_TOP}, got `{value}`"),
        )),
    }
}

/// `a/b/c` of identifiers.
fn is_path(text: &str) -> bool {
    text.split('/').all(|segment| {
        let mut chars = segment.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn parse_select(value: &str) -> Result<Vec<String>, QueryError> {
    let mut fields = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(QueryError::invalid("$select", "it has an empty property name"));
        }
        if item != "*" && !is_path(item) {
            return Err(QueryError::invalid("$select", format!("`{item}` is not a property name")));
        }
        fields.push(item.to_string());
    }
    Ok(fields)
}

/// Splits at top-level commas only: `roles($expand=a,b),scopes` is two items.
fn parse_expand(value: &str) -> Result<Vec<String>, QueryError> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| QueryError::invalid("$expand", "it has an unmatched `)`"))?;
            }
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(QueryError::invalid("$expand", "it has an unclosed `(`"));
    }
    items.push(current);
    items
        .into_iter()
        .map(|item| {
            let item = item.trim().to_string();
            if item.is_empty() {
                Err(QueryError::invalid("$expand", "it has an empty item"))
            } else {
                Ok(item)
            }
        })
        .collect()
}

fn parse_orderby(value: &str) -> Result<(String, bool), QueryError> {
    if value.contains(',') {
        return Err(QueryError::invalid(
            "$orderby",
            "ordering by more than one property is not supported",
        ));
    }
    let mut words = value.split_whitespace();
    let path = words.next().unwrap_or_default();
    if !is_path(path) {
        return Err(QueryError::invalid("$orderby", format!("`{path}` is not a property name")));
    }
    let descending = match words.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            let message = format!("expected `asc` or `desc` after `{path}`, got `{other}`");
            return Err(QueryError::invalid("$orderby", message));
        }
    };
    if let Some(extra) = words.next() {
        return Err(QueryError::invalid("$orderby", format!("unexpected `{extra}`")));
    }
    Ok((path.to_string(), descending))
}

/// Keeps `id`, `@odata.type` and the selected properties (names matched case-insensitively,
/// written as the entity spells them). `*` keeps everything; a non-object is returned as is.
pub fn select_fields(entity: &Value, select: &[String]) -> Value {
    let Some(object) = entity.as_object() else {
        return entity.clone();
    };
    if select.iter().any(|s| s == "*") {
        return entity.clone();
    }
    let keep = |key: &str| {
        key == "id" || key == "@odata.type" || select.iter().any(|s| s.eq_ignore_ascii_case(key))
    };
    let out: Map<String, Value> =
        object.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    Value::Object(out)
}

/// Keyset paging over items already sorted by `key` (ascending, byte order): skips items whose
/// key is `<= after`, returns up to `top`, and the key to continue after when more remain.
/// A `top` of 0 returns nothing and no continuation.
pub fn page<'a, T: 'a>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&T) -> &str,
    after: Option<&str>,
    top: usize,
) -> (Vec<&'a T>, Option<String>) {
    if top == 0 {
        return (Vec::new(), None);
    }
    let mut rest = items.into_iter().skip_while(|item| after.is_some_and(|a| key(item) <= a));
    let taken: Vec<&'a T> = rest.by_ref().take(top).collect();
    let more = rest.next().is_some();
    let next = if more { taken.last().map(|last| key(last).to_string()) } else { None };
    (taken, next)
}

/// The `$skiptoken` for continuing after `key`: its base64url form, so it needs no escaping in
/// a URL.
pub fn encode_skip_token(key: &str) -> String {
    data_encoding::BASE64URL_NOPAD.encode(key.as_bytes())
}

/// The key a `$skiptoken` continues after; anything [`encode_skip_token`] did not make is
/// refused.
pub fn decode_skip_token(token: &str) -> Result<String, QueryError> {
    if token.is_empty() {
        return Err(QueryError::SkipToken);
    }
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(token.as_bytes())
        .map_err(|_| QueryError::SkipToken)?;
    let key = String::from_utf8(bytes).map_err(|_| QueryError::SkipToken)?;
    if key.is_empty() { Err(QueryError::SkipToken) } else { Ok(key) }
}

#[cfg(test)]
mod tests;
