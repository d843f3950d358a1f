//! The `$filter` language as Graph clients write it, parsed once into a [`Filter`] and then
//! evaluated against Graph JSON objects.
//!
//! Grammar (keywords and function names are case-insensitive):
//!
//! ```text
//! or      := and ('or' and)*
//! and     := unary ('and' unary)*
//! unary   := 'not' unary | primary
//! primary := '(' or ')'
//!          | ('startswith' | 'endswith' | 'contains') '(' path ',' string ')' [('eq' | 'ne') bool]
//!          | path '/any(' var ':' or ')'
//!          | path 'in' '(' literal (',' literal)* ')'
//!          | path ('eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le') literal
//! ```
//!
//! `not` takes a whole comparison (`not displayName eq 'x'` is `not (displayName eq 'x')`),
//! which is what people mean; OData's stricter reading would make that a type error.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

use super::QueryError;

/// Longest `$filter` accepted, in bytes: far above real queries, and it bounds parsing work.
pub const MAX_FILTER_BYTES: usize = 4096;

/// Deepest nesting of parentheses, `not` and lambdas. The parser recurses per level, so this
/// keeps hostile input like `((((…` far from the stack limit.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    fn from_keyword(word: &str) -> Option<CompareOp> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "gt" => CompareOp::Gt,
            "ge" => CompareOp::Ge,
            "lt" => CompareOp::Lt,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringFunction {
    StartsWith,
    EndsWith,
    Contains,
}

impl StringFunction {
    fn from_name(word: &str) -> Option<StringFunction> {
        Some(match word.to_ascii_lowercase().as_str() {
            "startswith" => StringFunction::StartsWith,
            "endswith" => StringFunction::EndsWith,
            "contains" => StringFunction::Contains,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StringFunction::StartsWith => "startswith",
            StringFunction::EndsWith => "endswith",
            StringFunction::Contains => "contains",
        }
    }
}

/// A literal on the right of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    String(String),
    Int(i64),
    Decimal(f64),
    Bool(bool),
    Null,
    /// An unquoted GUID, kept as written; it compares with string properties case-insensitively.
    Guid(String),
    /// An unquoted `DateTimeOffset` (or date), as Unix milliseconds.
    DateTime(i64),
}

/// A parsed `$filter`. `And` and `Or` hold two or more operands, flattened, so long chains
/// do not make deep trees.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: String,
        op: CompareOp,
        value: Literal,
    },
    In {
        path: String,
        values: Vec<Literal>,
    },
    Function {
        function: StringFunction,
        path: String,
        value: String,
    },
    /// `path/any(var: body)`: inside `body`, `var` is an element of the collection and
    /// `var/prop` a property of an element.
    Any {
        path: String,
        var: String,
        body: Box<Filter>,
    },
    Not(Box<Filter>),
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// Parses `$filter` text (already percent-decoded).
    pub fn parse(text: &str) -> Result<Filter, QueryError> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(QueryError::FilterTooLong { bytes: text.len(), max: MAX_FILTER_BYTES });
        }
        let tokens = lex(text)?;
        let end = text.chars().count();
        let mut parser = Parser { tokens, pos: 0, end, depth: 0 };
        if parser.tokens.is_empty() {
            return Err(QueryError::syntax("expected a condition, found nothing", 0));
        }
        let filter = parser.parse_or()?;
        match parser.peek() {
            None => Ok(filter),
            Some(t) => Err(QueryError::syntax(format!("unexpected {}", t.kind), t.at)),
        }
    }

    /// Does `entity` (a Graph JSON object) satisfy the filter?
    pub fn matches(&self, entity: &Value) -> bool {
        self.eval(entity, &mut Vec::new())
    }

    /// The property paths the filter reads, in order of first use, without repeats. A path
    /// inside a lambda is reported from the entity: `groupTypes/any(c:c eq 'x')` uses
    /// `groupTypes`, `roles/any(r:r/id eq 'x')` uses `roles` and `roles/id`.
    pub fn fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_fields(&mut Vec::new(), &mut out);
        out
    }

    fn collect_fields(&self, vars: &mut Vec<(String, String)>, out: &mut Vec<String>) {
        let mut push = |path: &str, vars: &[(String, String)]| {
            let full = absolute(path, vars);
            if !out.contains(&full) {
                out.push(full);
            }
        };
        match self {
            Filter::Compare { path, .. }
            | Filter::In { path, .. }
            | Filter::Function { path, .. } => push(path, vars),
            Filter::Any { path, var, body } => {
                push(path, vars);
                let full = absolute(path, vars);
                vars.push((var.clone(), full));
                body.collect_fields(vars, out);
                vars.pop();
            }
            Filter::Not(inner) => inner.collect_fields(vars, out),
            Filter::And(items) | Filter::Or(items) => {
                for item in items {
                    item.collect_fields(vars, out);
                }
            }
        }
    }

    /// `scope` holds the lambda variables in force, innermost last.
    fn eval<'a>(&'a self, root: &'a Value, scope: &mut Vec<(&'a str, &'a Value)>) -> bool {
        match self {
            Filter::Compare { path, op, value } => compare(resolve(root, scope, path), *op, value),
            Filter::In { path, values } => {
                let found = resolve(root, scope, path);
                values.iter().any(|v| compare(found, CompareOp::Eq, v))
            }
            Filter::Function { function, path, value } => {
                let Some(Value::String(text)) = resolve(root, scope, path) else {
                    return false;
                };
                let (text, value) = (text.to_lowercase(), value.to_lowercase());
                match function {
                    StringFunction::StartsWith => text.starts_with(&value),
                    StringFunction::EndsWith => text.ends_with(&value),
                    StringFunction::Contains => text.contains(&value),
                }
            }
            Filter::Any { path, var, body } => {
                let Some(Value::Array(items)) = resolve(root, scope, path) else {
                    return false;
                };
                items.iter().any(|item| {
                    scope.push((var.as_str(), item));
                    let hit = body.eval(root, scope);
                    scope.pop();
                    hit
                })
            }
            Filter::Not(inner) => !inner.eval(root, scope),
            Filter::And(items) => items.iter().all(|f| f.eval(root, scope)),
            Filter::Or(items) => items.iter().any(|f| f.eval(root, scope)),
        }
    }
}

/// Rewrites a lambda-relative path (`r/id`) as a path from the entity (`roles/id`).
fn absolute(path: &str, vars: &[(String, String)]) -> String {
    let (head, rest) = match path.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    match vars.iter().rev().find(|(v, _)| v == head) {
        Some((_, base)) => match rest {
            Some(rest) => format!("{base}/{rest}"),
            None => base.clone(),
        },
        None => path.to_string(),
    }
}

/// Follows `a/b/c` from the entity, or from a lambda element when `a` is a variable.
/// Property names match exactly first, then case-insensitively (Graph is lenient there).
fn resolve<'a>(root: &'a Value, scope: &[(&'a str, &'a Value)], path: &str) -> Option<&'a Value> {
    let mut segments = path.split('/');
    let first = segments.next()?;
    let mut current = match scope.iter().rev().find(|(v, _)| *v == first) {
        Some((_, element)) => element,
        None => property(root, first)?,
    };
    for segment in segments {
        current = property(current, segment)?;
    }
    Some(current)
}

fn property<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object
        .get(name)
        .or_else(|| object.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// Missing and null equal only `null`; values of different kinds are unequal and unordered.
fn compare(found: Option<&Value>, op: CompareOp, literal: &Literal) -> bool {
    let found = found.filter(|v| !v.is_null());
    let ordering = match (found, literal) {
        (None, Literal::Null) => Some(Ordering::Equal),
        (_, Literal::Null) | (None, _) => None,
        (Some(value), literal) => order(value, literal),
    };
    match op {
        CompareOp::Eq => ordering == Some(Ordering::Equal),
        CompareOp::Ne => ordering != Some(Ordering::Equal),
        // Null is never ordered, even against itself.
        _ if matches!(literal, Literal::Null) => false,
        CompareOp::Gt => ordering == Some(Ordering::Greater),
        CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Lt => ordering == Some(Ordering::Less),
        CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
    }
}

/// How a (non-null) property value orders against a literal, if they are comparable.
fn order(value: &Value, literal: &Literal) -> Option<Ordering> {
    match (value, literal) {
        // Directory strings compare case-insensitively (Graph's collation).
        (Value::String(s), Literal::String(l) | Literal::Guid(l)) => {
            Some(s.to_lowercase().cmp(&l.to_lowercase()))
        }
        (Value::String(s), Literal::DateTime(ms)) => crate::time::parse(s).map(|v| v.cmp(ms)),
        (Value::Number(n), Literal::Int(i)) => match n.as_i64() {
            Some(v) => Some(v.cmp(i)),
            #[expect(clippy::cast_precision_loss, reason = "a float property compares as a float")]
            None => n.as_f64()?.partial_cmp(&(*i as f64)),
        },
        (Value::Number(n), Literal::Decimal(d)) => n.as_f64()?.partial_cmp(d),
        (Value::Bool(b), Literal::Bool(l)) => Some(b.cmp(l)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Display: a canonical form that parses back to the same filter.

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Decimal(d) => {
                let text = d.to_string();
                // `1.0` prints as `1`, which would read back as an integer.
                if text.contains(['.', 'e', 'E', 'N', 'n']) {
                    write!(f, "{text}")
                } else {
                    write!(f, "{text}.0")
                }
            }
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => write!(f, "null"),
            Literal::Guid(g) => write!(f, "{g}"),
            Literal::DateTime(ms) => write!(f, "{}", crate::time::format(*ms)),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::In { path, values } => {
                write!(f, "{path} in (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, ")")
            }
            Filter::Function { function, path, value } => {
                write!(f, "{}({path},{})", function.as_str(), Literal::String(value.clone()))
            }
            Filter::Any { path, var, body } => write!(f, "{path}/any({var}:{body})"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            // Or binds looser than and; a nested list of the same kind keeps its parentheses
            // so that hand-built trees print as they are.
            Filter::And(items) => {
                join(f, items, " and ", |c| matches!(c, Filter::Or(_) | Filter::And(_)))
            }
            Filter::Or(items) => join(f, items, " or ", |c| matches!(c, Filter::Or(_))),
        }
    }
}

fn join(
    f: &mut fmt::Formatter<'_>,
    items: &[Filter],
    separator: &str,
    needs_parens: impl Fn(&Filter) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            write!(f, "{separator}")?;
        }
        if needs_parens(item) {
            write!(f, "({item})")?;
        } else {
            write!(f, "{item}")?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    LParen,
    RParen,
    Comma,
    Colon,
    Slash,
    Ident(String),
    Literal(Literal),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::LParen => write!(f, "token `(`"),
            Kind::RParen => write!(f, "token `)`"),
            Kind::Comma => write!(f, "token `,`"),
            Kind::Colon => write!(f, "token `:`"),
            Kind::Slash => write!(f, "token `/`"),
            Kind::Ident(w) => write!(f, "word `{w}`"),
            Kind::Literal(l) => write!(f, "literal `{l}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Character offset (0-based) in the filter text, for error messages.
    at: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let simple = match c {
            '(' => Some(Kind::LParen),
            ')' => Some(Kind::RParen),
            ',' => Some(Kind::Comma),
            ':' => Some(Kind::Colon),
            '/' => Some(Kind::Slash),
            _ => None,
        };
        if let Some(kind) = simple {
            tokens.push(Token { kind, at: start });
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' {
            let mut value = String::new();
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(QueryError::syntax("unterminated string literal", start));
                    }
                    Some('\'') if at(i + 1) == Some('\'') => {
                        value.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        value.push(ch);
                        i += 1;
                    }
                }
            }
            tokens.push(Token { kind: Kind::Literal(Literal::String(value)), at: start });
            continue;
        }
        if c == '"' {
            return Err(QueryError::syntax(
                "string literals take single quotes ('text'), not double quotes",
                start,
            ));
        }
        // GUIDs come before identifiers and numbers: `a0c4e6f8-…` and `12345678-…` are neither.
        if let Some(len) = guid_len(&chars, i) {
            let guid: String = chars.iter().skip(i).take(len).collect();
            tokens.push(Token { kind: Kind::Literal(Literal::Guid(guid)), at: start });
            i += len;
            continue;
        }
        if is_date_start(&chars, i) {
            let len = chars
                .iter()
                .skip(i)
                .take_while(|c| {
                    c.is_ascii_digit() || matches!(c, '-' | ':' | '.' | '+' | 'T' | 't' | 'Z' | 'z')
                })
                .count();
            let word: String = chars.iter().skip(i).take(len).collect();
            let ms = crate::time::parse(&word).ok_or_else(|| {
                QueryError::syntax(format!("invalid DateTimeOffset `{word}`"), start)
            })?;
            tokens.push(Token { kind: Kind::Literal(Literal::DateTime(ms)), at: start });
            i += len;
            continue;
        }
        if c.is_ascii_digit() || (c == '-' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let (literal, len) = number(&chars, i)?;
            tokens.push(Token { kind: Kind::Literal(literal), at: start });
            i += len;
            continue;
        }
        if is_ident_start(c) {
            let word: String = chars.iter().skip(i).take_while(|c| is_ident_char(**c)).collect();
            i += word.chars().count();
            let kind = match word.to_ascii_lowercase().as_str() {
                "true" => Kind::Literal(Literal::Bool(true)),
                "false" => Kind::Literal(Literal::Bool(false)),
                "null" => Kind::Literal(Literal::Null),
                _ => Kind::Ident(word),
            };
            tokens.push(Token { kind, at: start });
            continue;
        }
        return Err(QueryError::syntax(format!("unexpected character `{c}`"), start));
    }
    Ok(tokens)
}

/// `8-4-4-4-12` hex digits not followed by an identifier character.
fn guid_len(chars: &[char], start: usize) -> Option<usize> {
    const LEN: usize = 36;
    for offset in 0..LEN {
        let c = *chars.get(start + offset)?;
        let ok = if matches!(offset, 8 | 13 | 18 | 23) { c == '-' } else { c.is_ascii_hexdigit() };
        if !ok {
            return None;
        }
    }
    match chars.get(start + LEN) {
        Some(c) if is_ident_char(*c) || *c == '-' => None,
        _ => Some(LEN),
    }
}

/// `dddd-dd-dd`: the start of a date or DateTimeOffset.
fn is_date_start(chars: &[char], start: usize) -> bool {
    (0..10).all(|offset| {
        chars
            .get(start + offset)
            .is_some_and(|c| if matches!(offset, 4 | 7) { *c == '-' } else { c.is_ascii_digit() })
    })
}

/// `-?digits(.digits)?([eE][+-]?digits)?`; returns the literal and its length in characters.
fn number(chars: &[char], start: usize) -> Result<(Literal, usize), QueryError> {
    let digits = |from: usize| chars.iter().skip(from).take_while(|c| c.is_ascii_digit()).count();
    let mut i = start;
    if chars.get(i) == Some(&'-') {
        i += 1;
    }
    i += digits(i);
    let mut decimal = false;
    if chars.get(i) == Some(&'.') {
        let frac = digits(i + 1);
        if frac == 0 {
            return Err(QueryError::syntax("a decimal point must be followed by digits", i));
        }
        decimal = true;
        i += 1 + frac;
    }
    if matches!(chars.get(i), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(i + 1), Some('+' | '-')));
        let exp = digits(i + 1 + sign);
        if exp > 0 {
            decimal = true;
            i += 1 + sign + exp;
        }
    }
    if chars.get(i).is_some_and(|c| is_ident_char(*c)) {
        let c = chars.get(i).copied().unwrap_or(' ');
        return Err(QueryError::syntax(format!("unexpected character `{c}` in a number"), i));
    }
    let text: String = chars.iter().skip(start).take(i - start).collect();
    let literal = if decimal {
        text.parse().ok().filter(|d: &f64| d.is_finite()).map(Literal::Decimal)
    } else {
        text.parse().ok().map(Literal::Int)
    };
    let literal = literal
        .ok_or_else(|| QueryError::syntax(format!("number `{text}` is out of range"), start))?;
    Ok((literal, i - start))
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Character length of the text: the position reported for "unexpected end".
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Ident(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn unexpected(&self, expected: &str) -> QueryError {
        match self.peek() {
            Some(t) => QueryError::syntax(format!("expected {expected}, found {}", t.kind), t.at),
            None => QueryError::syntax(format!("expected {expected}, found the end"), self.end),
        }
    }

    fn expect(&mut self, kind: &Kind, what: &str) -> Result<(), QueryError> {
        match self.peek() {
            Some(t) if t.kind == *kind => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// Enters one more level of nesting, opened by the token at `at`.
    fn enter(&mut self, at: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(QueryError::TooDeep { max: MAX_DEPTH, position: at });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Filter, QueryError> {
        let mut items = vec![self.parse_and()?];
        while self.peek_keyword("or") {
            self.pos += 1;
            items.push(self.parse_and()?);
        }
        Ok(flatten(items, true))
    }

    fn parse_and(&mut self) -> Result<Filter, QueryError> {
        let mut items = vec![self.parse_unary()?];
        while self.peek_keyword("and") {
            self.pos += 1;
            items.push(self.parse_unary()?);
        }
        Ok(flatten(items, false))
    }

    fn parse_unary(&mut self) -> Result<Filter, QueryError> {
        if let Some(at) = self.peek().filter(|_| self.peek_keyword("not")).map(|t| t.at) {
            self.pos += 1;
            self.enter(at)?;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Filter, QueryError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected("a condition"));
        };
        match token.kind {
            Kind::LParen => {
                self.pos += 1;
                self.enter(token.at)?;
                let inner = self.parse_or()?;
                self.expect(&Kind::RParen, "`)`")?;
                self.depth -= 1;
                Ok(inner)
            }
            Kind::Ident(word) => {
                let is_call =
                    matches!(self.tokens.get(self.pos + 1), Some(Token { kind: Kind::LParen, .. }));
                if is_call { self.parse_function(&word, token.at) } else { self.parse_comparison() }
            }
            _ => Err(self.unexpected("a property name")),
        }
    }

    fn parse_function(&mut self, name: &str, at: usize) -> Result<Filter, QueryError> {
        let function = StringFunction::from_name(name).ok_or_else(|| {
            QueryError::syntax(
                format!("unknown function `{name}` (supported: startswith, endswith, contains)"),
                at,
            )
        })?;
        self.pos += 2; // the name and `(`
        let path = self.parse_path()?.0;
        self.expect(&Kind::Comma, "`,`")?;
        let value = match self.next() {
            Some(Token { kind: Kind::Literal(Literal::String(s)), .. }) => s,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.unexpected("a quoted string"));
            }
        };
        self.expect(&Kind::RParen, "`)`")?;
        let call = Filter::Function { function, path, value };
        // `startswith(x,'a') eq true` is valid OData and appears in PowerShell examples.
        let op = match self.peek() {
            Some(Token { kind: Kind::Ident(w), .. }) => CompareOp::from_keyword(w),
            _ => None,
        };
        let Some(op) = op else { return Ok(call) };
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return Err(self.unexpected("`eq` or `ne` after a function"));
        }
        self.pos += 1;
        let truth = match self.next() {
            Some(Token { kind: Kind::Literal(Literal::Bool(b)), .. }) => b,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.unexpected("`true` or `false`"));
            }
        };
        Ok(if truth == (op == CompareOp::Eq) { call } else { Filter::Not(Box::new(call)) })
    }

    /// `a/b/c`, stopping before `/any(`. Returns the path and whether a lambda follows.
    fn parse_path(&mut self) -> Result<(String, bool), QueryError> {
        let mut path = match self.next() {
            Some(Token { kind: Kind::Ident(w), .. }) => w,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.unexpected("a property name"));
            }
        };
        while matches!(self.peek(), Some(Token { kind: Kind::Slash, .. })) {
            let segment = self.tokens.get(self.pos + 1).cloned();
            let call =
                matches!(self.tokens.get(self.pos + 2), Some(Token { kind: Kind::LParen, .. }));
            match segment {
                Some(Token { kind: Kind::Ident(w), at }) if call => {
                    if w.eq_ignore_ascii_case("any") {
                        self.pos += 3; // `/`, `any`, `(`
                        return Ok((path, true));
                    }
                    let message = if w.eq_ignore_ascii_case("all") {
                        "the lambda `all` is not supported; use `not` with `any`".to_string()
                    } else {
                        format!("unknown lambda `{w}` (supported: any)")
                    };
                    return Err(QueryError::syntax(message, at));
                }
                Some(Token { kind: Kind::Ident(w), .. }) => {
                    path.push('/');
                    path.push_str(&w);
                    self.pos += 2;
                }
                _ => {
                    self.pos += 1;
                    return Err(self.unexpected("a property name after `/`"));
                }
            }
        }
        Ok((path, false))
    }

    fn parse_comparison(&mut self) -> Result<Filter, QueryError> {
        let (path, lambda) = self.parse_path()?;
        if lambda {
            return self.parse_lambda(path);
        }
        let Some(Token { kind: Kind::Ident(word), at }) = self.peek().cloned() else {
            return Err(self.unexpected("an operator (eq, ne, gt, ge, lt, le, in)"));
        };
        if word.eq_ignore_ascii_case("in") {
            self.pos += 1;
            self.expect(&Kind::LParen, "`(` after `in`")?;
            let mut values = vec![self.parse_literal()?];
            while matches!(self.peek(), Some(Token { kind: Kind::Comma, .. })) {
                self.pos += 1;
                values.push(self.parse_literal()?);
            }
            self.expect(&Kind::RParen, "`,` or `)`")?;
            return Ok(Filter::In { path, values });
        }
        let op = CompareOp::from_keyword(&word).ok_or_else(|| {
            QueryError::syntax(
                format!("unknown operator `{word}` (supported: eq, ne, gt, ge, lt, le, in)"),
                at,
            )
        })?;
        self.pos += 1;
        let value = self.parse_literal()?;
        Ok(Filter::Compare { path, op, value })
    }

    fn parse_lambda(&mut self, path: String) -> Result<Filter, QueryError> {
        let at = self.peek().map_or(self.end, |t| t.at);
        let var = match self.next() {
            Some(Token { kind: Kind::Ident(w), .. }) => w,
            _ => {
                self.pos = self.pos.saturating_sub(1);
                return Err(self.unexpected("a lambda variable"));
            }
        };
        self.expect(&Kind::Colon, "`:` after the lambda variable")?;
        self.enter(at)?;
        let body = self.parse_or()?;
        self.expect(&Kind::RParen, "`)`")?;
        self.depth -= 1;
        Ok(Filter::Any { path, var, body: Box::new(body) })
    }

    fn parse_literal(&mut self) -> Result<Literal, QueryError> {
        match self.peek() {
            Some(Token { kind: Kind::Literal(l), .. }) => {
                let literal = l.clone();
                self.pos += 1;
                Ok(literal)
            }
            _ => Err(self.unexpected("a literal")),
        }
    }
}

/// One operand stays itself; nested operands of the same kind merge into one list.
fn flatten(mut items: Vec<Filter>, or: bool) -> Filter {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Filter::Or(inner) if or => flat.extend(inner),
            Filter::And(inner) if !or => flat.extend(inner),
            other => flat.push(other),
        }
    }
    if or { Filter::Or(flat) } else { Filter::And(flat) }
}
