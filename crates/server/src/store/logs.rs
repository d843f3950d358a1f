//! Reading the audit log (`directoryAudits`) and the sign-in log (`signIns`): newest first,
//! keyset pages on (created_at, id), `$filter` translated to SQL over the row's columns.
//!
//! The translation is a *superset* of the filter: every clause that maps onto a column becomes
//! a bound comparison, and anything else (`not`, lambdas, properties only in the JSON body)
//! becomes `1=1`. Each fetched row is then checked against the filter itself, so the answer
//! is exact while the database does the narrowing. SQL text is built only from the fixed
//! fragments below; every value travels as a bind parameter.

use gatehouse_core::odata::{CompareOp, Filter, Literal, StringFunction};
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{Result, Store, StoreError, int, text};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// `audit_logs`, served as `auditLogs/directoryAudits`.
    Audit,
    /// `signin_logs`, served as `auditLogs/signIns`.
    SignIn,
}

/// How a column compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Unix milliseconds; compared with `DateTimeOffset` literals.
    Time(&'static str),
    /// A number (`error_code`).
    Int(&'static str),
    /// Text compared case-insensitively (ids, names, categories).
    Text(&'static str),
}

impl LogKind {
    fn table(self) -> &'static str {
        match self {
            LogKind::Audit => "audit_logs",
            LogKind::SignIn => "signin_logs",
        }
    }

    /// The Graph property that orders the log.
    pub fn time_property(self) -> &'static str {
        match self {
            LogKind::Audit => "activityDateTime",
            LogKind::SignIn => "createdDateTime",
        }
    }

    fn column(self, path: &str) -> Option<Column> {
        let path = path.to_ascii_lowercase();
        Some(match (self, path.as_str()) {
            (_, "id") => Column::Text("id"),
            (LogKind::Audit, "activitydatetime") => Column::Time("created_at"),
            (LogKind::Audit, "category") => Column::Text("category"),
            (LogKind::Audit, "activitydisplayname") => Column::Text("activity"),
            (LogKind::Audit, "result") => Column::Text("result"),
            (LogKind::Audit, "initiatedby/user/id") => Column::Text("initiated_by"),
            (LogKind::SignIn, "createddatetime") => Column::Time("created_at"),
            (LogKind::SignIn, "userid") => Column::Text("user_id"),
            (LogKind::SignIn, "userprincipalname") => Column::Text("upn"),
            (LogKind::SignIn, "appid") => Column::Text("app_id"),
            (LogKind::SignIn, "status/errorcode") => Column::Int("error_code"),
            (LogKind::SignIn, "conditionalaccessstatus") => Column::Text("ca_status"),
            _ => return None,
        })
    }
}

/// A bind parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// A WHERE clause (fixed fragments and `$n` placeholders only) with its parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Where {
    pub sql: String,
    pub binds: Vec<Bind>,
    /// False when a clause could not be translated (the rows are a superset).
    pub exact: bool,
}

impl Where {
    fn placeholder(&mut self, b: Bind) -> String {
        self.binds.push(b);
        format!("${}", self.binds.len())
    }
}

const ALL: &str = "1=1";

fn op_sql(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
    }
}

/// A literal as this column's bind value, when the filter's own comparison would treat them
/// alike (text lowercased; SQL `LOWER` is ASCII-only in SQLite, so non-ASCII text is not
/// narrowed).
fn bind_for(column: Column, literal: &Literal) -> Option<Bind> {
    match (column, literal) {
        (Column::Time(_), Literal::DateTime(ms)) => Some(Bind::Int(*ms)),
        (Column::Time(_), Literal::String(s)) => gatehouse_core::time::parse(s).map(Bind::Int),
        (Column::Int(_), Literal::Int(i)) => Some(Bind::Int(*i)),
        (Column::Text(_), Literal::String(s) | Literal::Guid(s)) if s.is_ascii() => {
            Some(Bind::Text(s.to_ascii_lowercase()))
        }
        _ => None,
    }
}

fn column_sql(column: Column) -> String {
    match column {
        Column::Time(c) | Column::Int(c) => c.to_owned(),
        Column::Text(c) => format!("LOWER({c})"),
    }
}

fn column_name(column: Column) -> &'static str {
    match column {
        Column::Time(c) | Column::Int(c) | Column::Text(c) => c,
    }
}

/// `%` and `_` are wildcards in LIKE; `\` escapes them.
fn like_prefix(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Translates `filter` for `kind` into a WHERE clause that keeps at least every matching row.
pub fn translate(kind: LogKind, filter: &Filter) -> Where {
    let mut w = Where { exact: true, ..Where::default() };
    let sql = clause(kind, filter, &mut w);
    w.sql = sql;
    w
}

fn inexact(w: &mut Where) -> String {
    w.exact = false;
    ALL.to_owned()
}

fn clause(kind: LogKind, f: &Filter, w: &mut Where) -> String {
    match f {
        Filter::Compare { path, op, value } => {
            let Some(column) = kind.column(path) else {
                return inexact(w);
            };
            if matches!(value, Literal::Null) {
                // A null column and a null (or absent) body property need not coincide.
                return inexact(w);
            }
            let text_order =
                matches!(column, Column::Text(_)) && !matches!(op, CompareOp::Eq | CompareOp::Ne);
            let Some(bind) = bind_for(column, value).filter(|_| !text_order) else {
                return inexact(w);
            };
            let p = w.placeholder(bind);
            let (c, col) = (column_sql(column), column_name(column));
            match op {
                // The filter's `ne` keeps rows without the value; SQL's `<>` would drop NULLs.
                CompareOp::Ne => format!("({col} IS NULL OR {c} <> {p})"),
                _ => format!("{c} {} {p}", op_sql(*op)),
            }
        }
        Filter::In { path, values } => {
            let Some(column) = kind.column(path) else {
                return inexact(w);
            };
            let binds: Option<Vec<Bind>> = values.iter().map(|v| bind_for(column, v)).collect();
            let Some(binds) = binds.filter(|b| !b.is_empty()) else {
                return inexact(w);
            };
            let ps: Vec<String> = binds.into_iter().map(|b| w.placeholder(b)).collect();
            format!("{} IN ({})", column_sql(column), ps.join(", "))
        }
        Filter::Function { function: StringFunction::StartsWith, path, value } => {
            match kind.column(path) {
                Some(column @ Column::Text(_)) if value.is_ascii() => {
                    let p = w.placeholder(Bind::Text(like_prefix(&value.to_ascii_lowercase())));
                    format!("{} LIKE {p} ESCAPE '\\'", column_sql(column))
                }
                _ => inexact(w),
            }
        }
        // `targetResources/any(t: t/id eq 'x')`: the first target has a column; the others are
        // found in the body (the row check makes it exact).
        Filter::Any { path, var, body }
            if kind == LogKind::Audit && path.eq_ignore_ascii_case("targetResources") =>
        {
            match body.as_ref() {
                Filter::Compare {
                    path: inner,
                    op: CompareOp::Eq,
                    value: Literal::String(id) | Literal::Guid(id),
                } if inner.eq_ignore_ascii_case(&format!("{var}/id")) && id.is_ascii() => {
                    w.exact = false;
                    let id = id.to_ascii_lowercase();
                    let a = w.placeholder(Bind::Text(id.clone()));
                    let b = w.placeholder(Bind::Text(format!("%{}", like_prefix(&id))));
                    format!("(LOWER(target_id) = {a} OR LOWER(body) LIKE {b} ESCAPE '\\')")
                }
                _ => inexact(w),
            }
        }
        Filter::And(items) => {
            let parts: Vec<String> = items.iter().map(|i| clause(kind, i, w)).collect();
            format!("({})", parts.join(" AND "))
        }
        Filter::Or(items) => {
            let parts: Vec<String> = items.iter().map(|i| clause(kind, i, w)).collect();
            format!("({})", parts.join(" OR "))
        }
        // Negating a superset is not a superset: leave `not` to the row check.
        _ => inexact(w),
    }
}

/// Where a page continues: after the row with this (created_at, id), newest first.
pub type LogCursor = (i64, String);

/// One page of a log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub items: Vec<Value>,
    /// The cursor of the last item, when more rows match.
    pub next: Option<LogCursor>,
}

impl Store {
    /// Up to `top` rows matching `filter`, newest first, after `after`.
    pub async fn log_page(
        &self,
        kind: LogKind,
        filter: Option<&Filter>,
        after: Option<&LogCursor>,
        top: usize,
    ) -> Result<LogPage> {
        let w = match filter {
            Some(f) => translate(kind, f),
            None => Where { sql: ALL.to_owned(), binds: Vec::new(), exact: true },
        };
        let want = top.saturating_add(1);
        let mut found: Vec<(LogCursor, Value)> = Vec::new();
        let mut cursor = after.cloned();
        loop {
            let needed = want.saturating_sub(found.len());
            // An inexact filter may drop rows after the fetch: ask for more at a time.
            let batch = if w.exact { needed } else { needed.max(500) };
            let rows = self.fetch(kind, &w, cursor.as_ref(), batch).await?;
            let fetched = rows.len();
            for (key, body) in rows {
                cursor = Some(key.clone());
                if filter.is_none_or(|f| f.matches(&body)) {
                    found.push((key, body));
                    if found.len() == want {
                        break;
                    }
                }
            }
            if found.len() == want || fetched < batch {
                break;
            }
        }
        let more = found.len() > top;
        found.truncate(top);
        let next = if more { found.last().map(|(k, _)| k.clone()) } else { None };
        Ok(LogPage { items: found.into_iter().map(|(_, v)| v).collect(), next })
    }

    async fn fetch(
        &self,
        kind: LogKind,
        w: &Where,
        after: Option<&LogCursor>,
        limit: usize,
    ) -> Result<Vec<(LogCursor, Value)>> {
        let mut binds = w.binds.clone();
        let mut sql = format!("SELECT id, created_at, body FROM {} WHERE {}", kind.table(), w.sql);
        if let Some((at, id)) = after {
            binds.push(Bind::Int(*at));
            let a = binds.len();
            binds.push(Bind::Text(id.clone()));
            let b = binds.len();
            sql.push_str(&format!(" AND (created_at < ${a} OR (created_at = ${a} AND id < ${b}))"));
        }
        binds.push(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT ${}", binds.len()));
        // The text is fixed fragments and placeholders; every value is bound.
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::Int(i) => q.bind(i),
                Bind::Text(t) => q.bind(t),
            };
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let id = text(r, "id")?;
                let at = int(r, "created_at")?;
                let body = parse_body(&text(r, "body")?, &id)?;
                Ok(((at, id), body))
            })
            .collect()
    }

    /// One log entry by id.
    pub async fn log_entry(&self, kind: LogKind, id: &str) -> Result<Option<Value>> {
        let sql = match kind {
            LogKind::Audit => "SELECT id, body FROM audit_logs WHERE id = $1",
            LogKind::SignIn => "SELECT id, body FROM signin_logs WHERE id = $1",
        };
        let row = sqlx::query(sql).bind(id.to_owned()).fetch_optional(self.pool()).await?;
        row.map(|r| parse_body(&text(&r, "body")?, id)).transpose()
    }
}

fn parse_body(body: &str, id: &str) -> Result<Value> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("log entry {id}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(kind: LogKind, f: &str) -> Where {
        translate(kind, &Filter::parse(f).unwrap())
    }

    #[test]
    fn columns_become_bound_comparisons() {
        let w = sql(
            LogKind::SignIn,
            "createdDateTime ge 2026-12-01T00:00:00Z and userPrincipalName eq 'Adele@Contoso.example' and status/errorCode ne 0",
        );
        assert_eq!(
            w.sql,
            "(created_at >= $1 AND LOWER(upn) = $2 AND (error_code IS NULL OR error_code <> $3))"
        );
        assert_eq!(
            w.binds,
            vec![
                Bind::Int(gatehouse_core::time::parse("2026-12-01T00:00:00Z").unwrap()),
                Bind::Text("adele@contoso.example".into()),
                Bind::Int(0)
            ]
        );
        assert!(w.exact);
        let w = sql(
            LogKind::Audit,
            "category in ('GroupManagement', 'UserManagement') or startswith(activityDisplayName, '50%_off')",
        );
        assert_eq!(w.sql, "(LOWER(category) IN ($1, $2) OR LOWER(activity) LIKE $3 ESCAPE '\\')");
        assert_eq!(w.binds.last(), Some(&Bind::Text("50\\%\\_off%".into())));
    }

    #[test]
    fn values_never_reach_the_sql_text() {
        let w = sql(
            LogKind::SignIn,
            "userId eq 'x'' OR 1=1 --' or appId eq 'y;DROP TABLE signin_logs'",
        );
        assert!(!w.sql.contains("DROP") && !w.sql.contains("--"), "{}", w.sql);
        assert_eq!(w.binds.len(), 2);
    }

    #[test]
    fn what_cannot_be_translated_widens_instead_of_narrowing() {
        // `not` of a comparison, a body-only property, a type mismatch, ordering on text.
        for f in [
            "not (userId eq 'a')",
            "ipAddress eq '1.2.3.4'",
            "status/errorCode eq '0'",
            "userPrincipalName gt 'm'",
            "userPrincipalName eq 'ädele@x'",
        ] {
            let w = sql(LogKind::SignIn, f);
            assert_eq!(w.sql, "1=1", "{f}");
            assert!(!w.exact, "{f}");
        }
        let w = sql(
            LogKind::Audit,
            "targetResources/any(t: t/id eq 'B0000000-0000-4000-8000-000000000003')",
        );
        assert!(w.sql.contains("target_id") && !w.exact);
        assert_eq!(
            w.binds.first(),
            Some(&Bind::Text("b0000000-0000-4000-8000-000000000003".into()))
        );
    }
}
