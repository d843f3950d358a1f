//! OData on collections: the glue between `gatehouse_core::odata` (parsing, matching, tokens)
//! and the Graph envelopes. A handler copies what it needs out of the directory into an
//! iterator and hands it to [`OData::respond`], which applies `$search`, `$filter`, `$count`,
//! `$orderby`, keyset paging (`$top`, `$skiptoken`), `$expand` and `$select`, in that order,
//! and builds `@odata.nextLink` as an absolute URL carrying the request's other options.
//!
//! Paging is keyset paging on (sort key, id): a page boundary never skips or repeats an item
//! when others are added or removed between pages.

use std::cmp::Ordering;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gatehouse_core::odata::{self, Query, QueryError};
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult};
use super::graph::{QueryPairs, base, context};
use crate::state::AppState;

/// Graph's default page size for directory collections.
pub const DEFAULT_TOP: usize = 100;

/// What a collection allows. Names are matched case-insensitively.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The Graph type name for messages (`User`, `Group`…).
    pub resource: &'static str,
    /// Property paths `$filter` may use. A lambda over a collection lists the collection
    /// (`groupTypes`) and, for objects, its properties (`targetResources/id`).
    pub filterable: &'static [&'static str],
    /// Properties `$search="name:term"` may use; empty: `$search` is refused.
    pub searchable: &'static [&'static str],
    /// Properties `$orderby` may use (besides the default id order).
    pub orderable: &'static [&'static str],
    /// Navigation properties `$expand` may name.
    pub expandable: &'static [&'static str],
}

impl Spec {
    pub const fn plain(resource: &'static str, filterable: &'static [&'static str]) -> Spec {
        Spec { resource, filterable, searchable: &[], orderable: &[], expandable: &[] }
    }
}

/// One `$expand` item: `manager` or `manager($select=id,displayName)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expand {
    /// As the spec spells it.
    pub name: &'static str,
    pub select: Option<Vec<String>>,
}

impl Expand {
    /// Applies the nested `$select` to an expanded object.
    pub fn shape(&self, value: Value) -> Value {
        match &self.select {
            Some(fields) => odata::select_fields(&value, fields),
            None => value,
        }
    }
}

/// The query options of a request, parsed, with what is needed to build the next link.
#[derive(Debug, Clone)]
pub struct OData {
    pub query: Query,
    /// The raw pairs, for the next link and for non-OData parameters (`force`).
    pairs: Vec<(String, String)>,
    /// The request path (`/v1.0/users`), for the next link.
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for OData {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let QueryPairs(pairs) = QueryPairs::from_request_parts(parts, state).await?;
        let query = Query::parse(&pairs).map_err(query_error)?;
        Ok(OData { query, pairs, path: parts.uri.path().to_owned() })
    }
}

/// A query error as Graph reports it: 400 `invalidRequest`.
pub fn query_error(e: QueryError) -> ApiError {
    ApiError::invalid_request(format!("{e} ({})", e.code()))
}

/// An ordered search clause: `"displayName:wa"`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    property: &'static str,
    text: String,
}

/// `$search` as OR of ANDs of terms.
type Search = Vec<Vec<Term>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Id,
    /// By a property (case-insensitive), then id; descending reverses both.
    By(&'static str, bool),
}

impl OData {
    /// A parameter that is not an OData option (`force`), as sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `?force=true` (absent: false). Anything but `true`/`false` is a 400.
    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.param(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::invalid_request(format!(
                "query parameter `{name}` must be `true` or `false`, not `{other}`"
            ))),
        }
    }

    /// Refuses options a single-entity read cannot use (everything but `$select`/`$expand`).
    pub fn for_entity(&self, spec: &Spec) -> ApiResult<Vec<Expand>> {
        let q = &self.query;
        let refused = [
            (q.filter.is_some(), "$filter"),
            (q.top.is_some(), "$top"),
            (q.skip_token.is_some(), "$skiptoken"),
            (q.count, "$count"),
            (q.orderby.is_some(), "$orderby"),
            (q.search.is_some(), "$search"),
        ];
        if let Some((_, name)) = refused.iter().find(|(on, _)| *on) {
            return Err(ApiError::invalid_request(format!(
                "query option `{name}` applies to collections, not to a single {}",
                spec.resource
            )));
        }
        self.expands(spec)
    }

    /// For `/$count` segments: `$filter` (and `$search`) only.
    pub fn for_count(&self, spec: &Spec) -> ApiResult<()> {
        let q = &self.query;
        let refused = [
            (q.select.is_some(), "$select"),
            (q.top.is_some(), "$top"),
            (q.skip_token.is_some(), "$skiptoken"),
            (q.count, "$count"),
            (q.orderby.is_some(), "$orderby"),
            (!q.expand.is_empty(), "$expand"),
        ];
        if let Some((_, name)) = refused.iter().find(|(on, _)| *on) {
            return Err(ApiError::invalid_request(format!(
                "query option `{name}` does not apply to `/$count`"
            )));
        }
        self.check_filter(spec)?;
        self.search(spec).map(|_| ())
    }

    /// How many of `items` pass `$filter` and `$search` (checked by [`OData::for_count`]).
    pub fn count(&self, spec: &Spec, items: impl IntoIterator<Item = Value>) -> ApiResult<usize> {
        let search = self.search(spec)?;
        Ok(items
            .into_iter()
            .filter(|v| self.query.matches(v))
            .filter(|v| search.as_ref().is_none_or(|s| search_matches(s, v)))
            .count())
    }

    /// Refuses every option (for endpoints without OData support, such as writes).
    pub fn refuse_all(&self) -> ApiResult<()> {
        if self.query != Query::default() {
            return Err(ApiError::invalid_request("this request takes no OData query options"));
        }
        Ok(())
    }

    /// The `$expand` items, checked against the spec.
    pub fn expands(&self, spec: &Spec) -> ApiResult<Vec<Expand>> {
        let mut out: Vec<Expand> = Vec::new();
        for raw in &self.query.expand {
            if raw.trim() == "*" {
                for name in spec.expandable {
                    if !out.iter().any(|e| e.name == *name) {
                        out.push(Expand { name, select: None });
                    }
                }
                continue;
            }
            let (name, options) = match raw.split_once('(') {
                Some((n, rest)) => (n.trim(), Some(rest.strip_suffix(')').unwrap_or(rest))),
                None => (raw.trim(), None),
            };
            let Some(canonical) = spec.expandable.iter().find(|e| e.eq_ignore_ascii_case(name))
            else {
                return Err(ApiError::invalid_request(format!(
                    "`$expand={name}` is not supported on {}; supported: {}",
                    spec.resource,
                    list_or_none(spec.expandable)
                )));
            };
            let select = match options {
                None => None,
                Some(options) => Some(nested_select(name, options)?),
            };
            out.push(Expand { name: canonical, select });
        }
        Ok(out)
    }

    /// Answers a single entity: `$select` and `$expand` applied, `@odata.context` set.
    pub fn entity(
        &self,
        state: &AppState,
        spec: &Spec,
        path: &str,
        value: Value,
        mut expand: impl FnMut(&Expand, &mut Map<String, Value>) -> ApiResult<()>,
    ) -> ApiResult<Value> {
        let expands = self.for_entity(spec)?;
        let mut value = value;
        if let Value::Object(m) = &mut value {
            for e in &expands {
                expand(e, m)?;
            }
        }
        let select = self.select_with(&expands);
        let value = match &select {
            Some(s) => odata::select_fields(&value, s),
            None => value,
        };
        let mut out = Map::new();
        out.insert(
            "@odata.context".into(),
            context(state, &format!("{}/$entity", self.context_path(path))).into(),
        );
        if let Value::Object(m) = value {
            out.extend(m);
        }
        Ok(Value::Object(out))
    }

    /// `$select` plus the expanded names (an expansion is always returned).
    fn select_with(&self, expands: &[Expand]) -> Option<Vec<String>> {
        self.query.select.as_ref().map(|s| {
            let mut s = s.clone();
            s.extend(expands.iter().map(|e| e.name.to_owned()));
            s
        })
    }

    /// `users` or, after `$select`, `users(displayName,id)`.
    fn context_path(&self, path: &str) -> String {
        match &self.query.select {
            Some(s) => format!("{path}({})", s.join(",")),
            None => path.to_owned(),
        }
    }

    /// Checks `$filter`, `$orderby` and `$search` against the spec without answering, for
    /// collections served elsewhere (the logs).
    pub fn check_filter(&self, spec: &Spec) -> ApiResult<()> {
        if let Some(f) = &self.query.filter {
            for field in f.fields() {
                if !spec.filterable.iter().any(|a| a.eq_ignore_ascii_case(&field)) {
                    return Err(ApiError::invalid_request(format!(
                        "Unsupported or invalid query filter clause specified for property \
                         '{field}' of resource '{}'. Filterable: {}",
                        spec.resource,
                        list_or_none(spec.filterable)
                    ))
                    .with_target(field));
                }
            }
        }
        Ok(())
    }

    fn order(&self, spec: &Spec) -> ApiResult<Order> {
        let Some((path, desc)) = &self.query.orderby else {
            return Ok(Order::Id);
        };
        if path.eq_ignore_ascii_case("id") && !desc {
            return Ok(Order::Id);
        }
        match spec.orderable.iter().find(|o| o.eq_ignore_ascii_case(path)) {
            Some(o) => Ok(Order::By(o, *desc)),
            None => Err(ApiError::invalid_request(format!(
                "`$orderby={path}` is not supported on {}; supported: {}",
                spec.resource,
                list_or_none(spec.orderable)
            ))),
        }
    }

    fn search(&self, spec: &Spec) -> ApiResult<Option<Search>> {
        let Some(raw) = &self.query.search else {
            return Ok(None);
        };
        if spec.searchable.is_empty() {
            return Err(ApiError::invalid_request(format!(
                "$search is not supported on {}",
                spec.resource
            )));
        }
        parse_search(raw, spec.searchable).map(Some)
    }

    /// The page size: `$top`, else the default.
    pub fn top(&self) -> usize {
        self.query.top.unwrap_or(DEFAULT_TOP)
    }

    /// `@odata.nextLink`: this request's URL with the other options kept and `$skiptoken`
    /// replaced.
    pub fn next_link(&self, state: &AppState, token: &str) -> String {
        let mut query = String::new();
        for (k, v) in &self.pairs {
            let bare = k.strip_prefix('$').unwrap_or(k);
            if bare.eq_ignore_ascii_case("skiptoken") {
                continue;
            }
            query.push_str(&encode(k));
            query.push('=');
            query.push_str(&encode(v));
            query.push('&');
        }
        query.push_str("$skiptoken=");
        query.push_str(token);
        let rest = self.path.strip_prefix("/v1.0").unwrap_or(&self.path);
        format!("{}{rest}?{query}", base(state))
    }

    /// Wraps a page computed elsewhere (the logs): `$select` applied, the next link built from
    /// `next_token`.
    pub fn page(
        &self,
        state: &AppState,
        path: &str,
        items: Vec<Value>,
        next_token: Option<String>,
    ) -> Value {
        let items = match &self.query.select {
            Some(s) => items.iter().map(|v| odata::select_fields(v, s)).collect(),
            None => items,
        };
        let next = next_token.map(|t| self.next_link(state, &t));
        super::graph::collection(state, &self.context_path(path), items, next, None)
    }

    /// Answers a collection. `items` may come in any order; `id_of` gives each item's id (the
    /// paging key) and `to_json` its Graph object, built only for items that need it.
    /// `expand` fills in an expanded navigation property on an item of the page.
    #[expect(clippy::too_many_arguments, reason = "each closure is one concern of the page")]
    pub fn respond<T>(
        &self,
        state: &AppState,
        spec: &Spec,
        path: &str,
        items: impl IntoIterator<Item = T>,
        id_of: impl Fn(&T) -> &str,
        to_json: impl Fn(&T) -> Value,
        mut expand: impl FnMut(&Expand, &mut Map<String, Value>) -> ApiResult<()>,
    ) -> ApiResult<Value> {
        self.check_filter(spec)?;
        let expands = self.expands(spec)?;
        let order = self.order(spec)?;
        let search = self.search(spec)?;
        let after = match &self.query.skip_token {
            Some(t) => Some(decode_key(t)?),
            None => None,
        };
        let top = self.top();
        let q = &self.query;

        let mut rows: Vec<T> = items.into_iter().collect();
        let (page, more, count): (Vec<Value>, bool, Option<usize>) =
            if q.filter.is_none() && search.is_none() && !q.count && order == Order::Id {
                // The cheap path: only the page's objects are built.
                rows.sort_by(|a, b| id_of(a).cmp(id_of(b)));
                let after_id = after.as_ref().map(|(_, id)| id.as_str());
                let mut rest = rows.iter().skip_while(|r| after_id.is_some_and(|a| id_of(r) <= a));
                let page: Vec<Value> = rest.by_ref().take(top).map(&to_json).collect();
                (page, rest.next().is_some(), None)
            } else {
                let mut all: Vec<Value> = rows
                    .iter()
                    .map(&to_json)
                    .filter(|v| q.matches(v))
                    .filter(|v| search.as_ref().is_none_or(|s| search_matches(s, v)))
                    .collect();
                let count = q.count.then_some(all.len());
                all.sort_by(|a, b| compare(order, a, b));
                let start = match &after {
                    Some(key) => all
                        .iter()
                        .position(|v| {
                            compare_key(order, &key_of(order, v), key) == Ordering::Greater
                        })
                        .unwrap_or(all.len()),
                    None => 0,
                };
                let mut rest = all.into_iter().skip(start);
                let page: Vec<Value> = rest.by_ref().take(top).collect();
                (page, rest.next().is_some(), count)
            };

        let next_link = match (more, page.last()) {
            (true, Some(last)) => Some(self.next_link(state, &encode_key(&key_of(order, last)))),
            _ => None,
        };
        let select = self.select_with(&expands);
        let mut out = Vec::with_capacity(page.len());
        for mut item in page {
            if let Value::Object(m) = &mut item {
                for e in &expands {
                    expand(e, m)?;
                }
            }
            out.push(match &select {
                Some(s) => odata::select_fields(&item, s),
                None => item,
            });
        }
        Ok(super::graph::collection(state, &self.context_path(path), out, next_link, count))
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".to_owned() } else { items.join(", ") }
}

/// `$select=a,b` inside `$expand=x(...)`; other nested options are refused.
fn nested_select(name: &str, options: &str) -> ApiResult<Vec<String>> {
    let mut select = None;
    for option in options.split(';').map(str::trim).filter(|o| !o.is_empty()) {
        let (k, v) = option.split_once('=').unwrap_or((option, ""));
        if k.trim().trim_start_matches('$').eq_ignore_ascii_case("select") {
            let pairs = vec![("$select".to_owned(), v.trim().to_owned())];
            select = Query::parse(&pairs).map_err(query_error)?.select;
        } else {
            return Err(ApiError::invalid_request(format!(
                "`{}` inside `$expand={name}(…)` is not supported; only $select is",
                k.trim()
            )));
        }
    }
    select.ok_or_else(|| {
        ApiError::invalid_request(format!("`$expand={name}(…)` needs a nested $select"))
    })
}

/// The paging key of an item: the sort property (lowercased; empty for id order) and the id.
fn key_of(order: Order, v: &Value) -> (String, String) {
    let id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let k = match order {
        Order::Id => String::new(),
        Order::By(p, _) => v.get(p).and_then(Value::as_str).unwrap_or_default().to_lowercase(),
    };
    (k, id)
}

fn compare_key(order: Order, a: &(String, String), b: &(String, String)) -> Ordering {
    let o = a.cmp(b);
    match order {
        Order::By(_, true) => o.reverse(),
        _ => o,
    }
}

fn compare(order: Order, a: &Value, b: &Value) -> Ordering {
    compare_key(order, &key_of(order, a), &key_of(order, b))
}

/// A `$skiptoken` for (key, id): opaque to clients, base64url of a JSON pair.
fn encode_key(key: &(String, String)) -> String {
    let json = Value::Array(vec![key.0.clone().into(), key.1.clone().into()]).to_string();
    odata::encode_skip_token(&json)
}

fn decode_key(token: &str) -> ApiResult<(String, String)> {
    let text = odata::decode_skip_token(token).map_err(query_error)?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => match a.as_slice() {
            [Value::String(k), Value::String(id)] => Ok((k.clone(), id.clone())),
            _ => Err(query_error(QueryError::SkipToken)),
        },
        _ => Err(query_error(QueryError::SkipToken)),
    }
}

/// Percent-encodes a query key or value: everything but RFC 3986 unreserved characters and
/// `$` (Graph's own links keep `$skiptoken` readable).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'$') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `"displayName:wa" OR "mail:wa"` (OR of ANDs; AND binds tighter, as in Graph).
fn parse_search(raw: &str, searchable: &'static [&'static str]) -> ApiResult<Search> {
    let bad = |why: &str| {
        ApiError::invalid_request(format!(
            "invalid $search `{raw}`: {why}; write \"property:term\" clauses joined by AND or OR \
             (properties: {})",
            searchable.join(", ")
        ))
    };
    let mut groups: Search = vec![Vec::new()];
    let mut rest = raw.trim();
    let mut expect_term = true;
    while !rest.is_empty() {
        if expect_term {
            let Some(inner) = rest.strip_prefix('"') else {
                return Err(bad("each clause is a double-quoted \"property:term\""));
            };
            let Some(end) = inner.find('"') else {
                return Err(bad("a clause is missing its closing quote"));
            };
            let clause = inner.get(..end).unwrap_or_default();
            let Some((prop, text)) = clause.split_once(':') else {
                return Err(bad("a clause has no `property:`"));
            };
            let Some(property) = searchable.iter().find(|s| s.eq_ignore_ascii_case(prop.trim()))
            else {
                return Err(bad(&format!("`{}` cannot be searched", prop.trim())));
            };
            if text.trim().is_empty() {
                return Err(bad("a clause has an empty term"));
            }
            if let Some(last) = groups.last_mut() {
                last.push(Term { property, text: text.trim().to_lowercase() });
            }
            rest = inner.get(end + 1..).unwrap_or_default().trim_start();
            expect_term = false;
        } else {
            let (word, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match word {
                "AND" => {}
                "OR" => groups.push(Vec::new()),
                _ => return Err(bad(&format!("expected AND or OR, found `{word}`"))),
            }
            rest = after.trim_start();
            expect_term = true;
        }
    }
    if expect_term {
        return Err(bad("it ends without a clause"));
    }
    Ok(groups)
}

/// Graph's `$search` is token-prefix matching: the term must start the value or follow a
/// non-alphanumeric character in it.
fn term_matches(value: &str, term: &str) -> bool {
    let value = value.to_lowercase();
    value.match_indices(term).any(|(i, _)| {
        i == 0
            || value.get(..i).and_then(|s| s.chars().last()).is_some_and(|c| !c.is_alphanumeric())
    })
}

fn search_matches(search: &Search, v: &Value) -> bool {
    search.iter().any(|all| {
        all.iter().all(|t| {
            v.get(t.property).and_then(Value::as_str).is_some_and(|s| term_matches(s, &t.text))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn search_is_or_of_ands_of_token_prefixes() {
        let s = parse_search(
            "\"displayName:va\" AND \"mail:adele\" OR \"displayName:gu\"",
            &["displayName", "mail"],
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        let adele = json!({"displayName": "Adele Vance", "mail": "adele@x"});
        let lee = json!({"displayName": "Lee Gu", "mail": "lee@x"});
        let other = json!({"displayName": "Evander", "mail": "adele@x"});
        assert!(search_matches(&s, &adele));
        assert!(search_matches(&s, &lee));
        // "va" inside "Evander" is not at a word start.
        assert!(!search_matches(&s, &other));
        for bad in [
            "displayName:x",
            "\"jobTitle:x\"",
            "\"displayName:x\" NOT \"mail:y\"",
            "\"displayName:\"",
            "\"displayName:x\" OR",
        ] {
            assert!(parse_search(bad, &["displayName", "mail"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn skip_tokens_round_trip_and_garbage_is_a_400() {
        let key = ("adele vance".to_owned(), "a1".to_owned());
        assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        assert_eq!(decode_key("bm90IGpzb24").unwrap_err().status, 400);
        assert_eq!(
            decode_key(&odata::encode_skip_token("[1,2]")).unwrap_err().code,
            "invalidRequest"
        );
    }

    #[test]
    fn ordering_by_a_property_breaks_ties_by_id_and_descends_fully() {
        let a = json!({"id": "2", "displayName": "Bea"});
        let b = json!({"id": "1", "displayName": "bea"});
        let c = json!({"id": "3", "displayName": "Al"});
        let mut v = vec![a.clone(), b.clone(), c.clone()];
        v.sort_by(|x, y| compare(Order::By("displayName", false), x, y));
        assert_eq!(v, vec![c.clone(), b.clone(), a.clone()]);
        v.sort_by(|x, y| compare(Order::By("displayName", true), x, y));
        assert_eq!(v, vec![a, b, c]);
    }

    #[test]
    fn encoding_keeps_dollar_and_unreserved_only() {
        assert_eq!(encode("$filter"), "$filter");
        assert_eq!(
            encode("startswith(displayName,'A') and x+1"),
            "startswith%28displayName%2C%27A%27%29%20and%20x%2B1"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }
}
