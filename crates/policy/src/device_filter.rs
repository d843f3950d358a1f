//! The Conditional Access "filter for devices" rule language
//! (`conditions.devices.deviceFilter.rule`).
//!
//! It is the Entra dynamic-membership rule syntax restricted to device
//! properties: `device.<property> <operator> <value>` combined with `-and`,
//! `-or`, `-not` and parentheses. Rules are parsed and validated once
//! ([`DeviceFilterRule::parse`]) and then evaluated many times at sign-in
//! ([`DeviceFilterRule::matches`]), so all the work that can happen up front
//! (validation, lowercasing literals) does.
//!
//! Leniency decisions, all made so that rules exported from a real tenant
//! import cleanly:
//! - Property names are matched case-insensitively, although Microsoft
//!   documents them as case-sensitive; `device.devicePhysicalIds` (used in
//!   Microsoft's own example) is accepted as an alias of `device.physicalIds`.
//! - Operators and `-and`/`-or`/`-not` may omit the leading hyphen.
//! - The documented value sets of `deviceOwnership`, `profileType` and
//!   `trustType` are not enforced: an unknown value simply never compares
//!   equal, so a value Microsoft adds later does not break the import.
//! - Strings may be double- or single-quoted; `\"`, `\'` and `\\` are escapes,
//!   any other backslash is kept literally (so `"a\b"` is `a\b`).
//!
//! Comparisons fold ASCII case only; non-ASCII characters compare exactly.

use std::fmt;

/// Microsoft's limit on the length of a device filter rule, in characters.
pub const MAX_RULE_CHARS: usize = 3072;

/// How deeply parentheses and `-not` may nest. Real rules use two or three
/// levels; the limit keeps the recursive parser (and the recursive `Drop` and
/// evaluation of the tree) far away from the stack limit on hostile input.
const MAX_DEPTH: usize = 64;

/// Attributes of the device at sign-in; `None` = null. An unregistered device is `DeviceAttributes::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceAttributes {
    pub device_id: Option<String>,
    pub display_name: Option<String>,
    pub enrollment_profile_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub operating_system: Option<String>,
    pub operating_system_version: Option<String>,
    pub extension_attributes: [Option<String>; 15], // extensionAttribute1 is index 0
    pub device_ownership: Option<String>,
    pub is_compliant: Option<bool>,
    pub mdm_app_id: Option<String>,
    pub physical_ids: Option<Vec<String>>,
    pub system_labels: Option<Vec<String>>,
    pub profile_type: Option<String>,
    pub trust_type: Option<String>,
}

/// A parsed, validated rule. Cheap to evaluate: no allocation in `matches`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFilterRule {
    source: String,
    expr: Expr,
}

impl DeviceFilterRule {
    /// Parses and validates `rule`. Never panics, whatever the input.
    pub fn parse(rule: &str) -> Result<Self, DeviceFilterError> {
        let chars = rule.chars().count();
        if chars > MAX_RULE_CHARS {
            return Err(error(
                MAX_RULE_CHARS,
                format!("rule is {chars} characters long; the limit is {MAX_RULE_CHARS}"),
            ));
        }
        let tokens = lex(rule)?;
        if tokens.is_empty() {
            return Err(error(0, "rule is empty"));
        }
        let mut parser = Parser { tokens: &tokens, pos: 0, end: chars };
        let expr = parser.or_expr(0)?;
        if let Some(token) = parser.peek() {
            let message = match token.tok {
                Tok::RParen => "unmatched ')'".to_owned(),
                _ => format!("unexpected {} after the end of the rule", token.tok),
            };
            return Err(error(token.at, message));
        }
        Ok(Self { source: rule.to_owned(), expr })
    }

    /// True when the rule holds for this device.
    ///
    /// A null property makes positive operators (`-eq`, `-startsWith`,
    /// `-in`, …) false and negative ones (`-ne`, `-notContains`, …) true;
    /// that is how Entra lets a policy target unregistered devices.
    pub fn matches(&self, device: &DeviceAttributes) -> bool {
        self.expr.eval(device)
    }

    /// The rule text exactly as given to [`DeviceFilterRule::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// 0-based character offset into the rule and a lowercase message; Display: "at character {offset}: {message}".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilterError {
    pub offset: usize,
    pub message: String,
}

impl fmt::Display for DeviceFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at character {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for DeviceFilterError {}

fn error(offset: usize, message: impl Into<String>) -> DeviceFilterError {
    DeviceFilterError { offset, message: message.into() }
}

// ---------------------------------------------------------------------------
// Properties and operators
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Property {
    DeviceId,
    MdmAppId,
    DisplayName,
    EnrollmentProfileName,
    Manufacturer,
    Model,
    OperatingSystem,
    OperatingSystemVersion,
    /// 0-based: `extensionAttribute1` is 0.
    ExtensionAttribute(u8),
    DeviceOwnership,
    IsCompliant,
    ProfileType,
    TrustType,
    PhysicalIds,
    SystemLabels,
}

/// Groups properties by the operators Microsoft documents for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Identifiers: `-eq`, `-ne`, `-in`, `-notIn`.
    Id,
    /// Free text: all ten string operators.
    Text,
    /// Small documented value sets: `-eq`, `-ne`.
    Enum,
    /// `isCompliant`: `-eq`, `-ne` against true/false.
    Bool,
    /// Multi-valued: `-contains`, `-notContains`, whole-element.
    Collection,
}

const NAMED_PROPERTIES: [(&str, Property); 15] = [
    ("deviceId", Property::DeviceId),
    ("mdmAppId", Property::MdmAppId),
    ("displayName", Property::DisplayName),
    ("enrollmentProfileName", Property::EnrollmentProfileName),
    ("manufacturer", Property::Manufacturer),
    ("model", Property::Model),
    ("operatingSystem", Property::OperatingSystem),
    ("operatingSystemVersion", Property::OperatingSystemVersion),
    ("deviceOwnership", Property::DeviceOwnership),
    ("isCompliant", Property::IsCompliant),
    ("profileType", Property::ProfileType),
    ("trustType", Property::TrustType),
    ("physicalIds", Property::PhysicalIds),
    ("devicePhysicalIds", Property::PhysicalIds),
    ("systemLabels", Property::SystemLabels),
];

const EXTENSION_ATTRIBUTE: &str = "extensionAttribute";

impl Property {
    /// Looks up the part after `device.`, ignoring ASCII case.
    fn lookup(name: &str) -> Option<Self> {
        if let Some(&(_, property)) =
            NAMED_PROPERTIES.iter().find(|(known, _)| known.eq_ignore_ascii_case(name))
        {
            return Some(property);
        }
        let prefix = name.get(..EXTENSION_ATTRIBUTE.len())?;
        let digits = name.get(EXTENSION_ATTRIBUTE.len()..)?;
        if !prefix.eq_ignore_ascii_case(EXTENSION_ATTRIBUTE)
            || digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        match digits.parse::<u8>() {
            Ok(n @ 1..=15) => Some(Self::ExtensionAttribute(n - 1)),
            _ => None,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Self::DeviceId | Self::MdmAppId => Kind::Id,
            Self::DisplayName
            | Self::EnrollmentProfileName
            | Self::Manufacturer
            | Self::Model
            | Self::OperatingSystem
            | Self::OperatingSystemVersion
            | Self::ExtensionAttribute(_) => Kind::Text,
            Self::DeviceOwnership | Self::ProfileType | Self::TrustType => Kind::Enum,
            Self::IsCompliant => Kind::Bool,
            Self::PhysicalIds | Self::SystemLabels => Kind::Collection,
        }
    }

    /// The value of a single-valued string property.
    fn text(self, device: &DeviceAttributes) -> Option<&str> {
        let value = match self {
            Self::DeviceId => &device.device_id,
            Self::MdmAppId => &device.mdm_app_id,
            Self::DisplayName => &device.display_name,
            Self::EnrollmentProfileName => &device.enrollment_profile_name,
            Self::Manufacturer => &device.manufacturer,
            Self::Model => &device.model,
            Self::OperatingSystem => &device.operating_system,
            Self::OperatingSystemVersion => &device.operating_system_version,
            Self::ExtensionAttribute(i) => device.extension_attributes.get(usize::from(i))?,
            Self::DeviceOwnership => &device.device_ownership,
            Self::ProfileType => &device.profile_type,
            Self::TrustType => &device.trust_type,
            Self::IsCompliant | Self::PhysicalIds | Self::SystemLabels => return None,
        };
        value.as_deref()
    }

    /// The value of a multi-valued property.
    fn collection(self, device: &DeviceAttributes) -> Option<&[String]> {
        match self {
            Self::PhysicalIds => device.physical_ids.as_deref(),
            Self::SystemLabels => device.system_labels.as_deref(),
            _ => None,
        }
    }

    fn is_null(self, device: &DeviceAttributes) -> bool {
        match self.kind() {
            Kind::Bool => device.is_compliant.is_none(),
            Kind::Collection => self.collection(device).is_none(),
            Kind::Id | Kind::Text | Kind::Enum => self.text(device).is_none(),
        }
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::ExtensionAttribute(i) => {
                return write!(f, "device.{EXTENSION_ATTRIBUTE}{}", u16::from(*i) + 1);
            }
            Self::DeviceId => "deviceId",
            Self::MdmAppId => "mdmAppId",
            Self::DisplayName => "displayName",
            Self::EnrollmentProfileName => "enrollmentProfileName",
            Self::Manufacturer => "manufacturer",
            Self::Model => "model",
            Self::OperatingSystem => "operatingSystem",
            Self::OperatingSystemVersion => "operatingSystemVersion",
            Self::DeviceOwnership => "deviceOwnership",
            Self::IsCompliant => "isCompliant",
            Self::ProfileType => "profileType",
            Self::TrustType => "trustType",
            Self::PhysicalIds => "physicalIds",
            Self::SystemLabels => "systemLabels",
        };
        write!(f, "device.{name}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    StartsWith,
    NotStartsWith,
    EndsWith,
    NotEndsWith,
    Contains,
    NotContains,
    In,
    NotIn,
}

const OPERATORS: [(&str, Op); 10] = [
    ("-eq", Op::Eq),
    ("-ne", Op::Ne),
    ("-startsWith", Op::StartsWith),
    ("-notStartsWith", Op::NotStartsWith),
    ("-endsWith", Op::EndsWith),
    ("-notEndsWith", Op::NotEndsWith),
    ("-contains", Op::Contains),
    ("-notContains", Op::NotContains),
    ("-in", Op::In),
    ("-notIn", Op::NotIn),
];

/// Operators of the dynamic-group language that device filters lack; named
/// in the error so the author knows the rule is valid elsewhere.
const UNSUPPORTED_OPERATORS: [&str; 8] =
    ["-match", "-notMatch", "-le", "-ge", "-lt", "-gt", "-any", "-all"];

impl Op {
    fn name(self) -> &'static str {
        OPERATORS.iter().find(|(_, op)| *op == self).map_or("?", |(name, _)| name)
    }

    /// Negative operators are true on null and otherwise invert their
    /// positive counterpart.
    fn negated(self) -> bool {
        matches!(
            self,
            Self::Ne | Self::NotStartsWith | Self::NotEndsWith | Self::NotContains | Self::NotIn
        )
    }

    fn allowed(self, kind: Kind) -> bool {
        match kind {
            Kind::Id => matches!(self, Self::Eq | Self::Ne | Self::In | Self::NotIn),
            Kind::Text => true,
            Kind::Enum | Kind::Bool => matches!(self, Self::Eq | Self::Ne),
            Kind::Collection => matches!(self, Self::Contains | Self::NotContains),
        }
    }

    /// The positive form of the test on a present value; `lit` is lowercase.
    fn test_text(self, value: &str, lit: &str) -> bool {
        match self {
            Self::Eq | Self::Ne | Self::In | Self::NotIn => value.eq_ignore_ascii_case(lit),
            Self::StartsWith | Self::NotStartsWith => starts_with_ci(value, lit),
            Self::EndsWith | Self::NotEndsWith => ends_with_ci(value, lit),
            Self::Contains | Self::NotContains => contains_ci(value, lit),
        }
    }
}

/// `word` without its optional leading hyphen.
fn bare(word: &str) -> &str {
    word.strip_prefix('-').unwrap_or(word)
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    bare(word).eq_ignore_ascii_case(keyword)
}

fn allowed_list(kind: Kind) -> String {
    OPERATORS
        .iter()
        .filter(|(_, op)| op.allowed(kind))
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Case-insensitive matching without allocation
// ---------------------------------------------------------------------------

// Byte-wise matching is safe on UTF-8: ASCII folding never touches bytes of
// multi-byte characters, and a valid UTF-8 needle can only match a valid
// UTF-8 haystack at character boundaries.

fn starts_with_ci(value: &str, lit: &str) -> bool {
    value.as_bytes().get(..lit.len()).is_some_and(|head| head.eq_ignore_ascii_case(lit.as_bytes()))
}

fn ends_with_ci(value: &str, lit: &str) -> bool {
    value
        .len()
        .checked_sub(lit.len())
        .and_then(|start| value.as_bytes().get(start..))
        .is_some_and(|tail| tail.eq_ignore_ascii_case(lit.as_bytes()))
}

fn contains_ci(value: &str, lit: &str) -> bool {
    // `windows(0)` would panic; the empty string is in every string.
    lit.is_empty()
        || value
            .as_bytes()
            .windows(lit.len())
            .any(|window| window.eq_ignore_ascii_case(lit.as_bytes()))
}

// ---------------------------------------------------------------------------
// Syntax tree and evaluation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare(Comparison),
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    property: Property,
    op: Op,
    operand: Operand,
}

/// String literals are ASCII-lowercased at parse time.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `-eq null` / `-ne null`.
    Null,
    Bool(bool),
    Text(String),
    List(Vec<String>),
}

impl Expr {
    fn eval(&self, device: &DeviceAttributes) -> bool {
        match self {
            Self::Or(items) => items.iter().any(|e| e.eval(device)),
            Self::And(items) => items.iter().all(|e| e.eval(device)),
            Self::Not(inner) => !inner.eval(device),
            Self::Compare(cmp) => cmp.eval(device),
        }
    }
}

impl Comparison {
    fn eval(&self, device: &DeviceAttributes) -> bool {
        let negated = self.op.negated();
        // `None` = the property is null, which decides by polarity alone.
        let positive = match &self.operand {
            Operand::Null => return self.property.is_null(device) != negated,
            Operand::Bool(want) => device.is_compliant.map(|have| have == *want),
            Operand::Text(lit) => match self.property.kind() {
                Kind::Collection => self
                    .property
                    .collection(device)
                    .map(|items| items.iter().any(|item| item.eq_ignore_ascii_case(lit))),
                _ => self.property.text(device).map(|value| self.op.test_text(value, lit)),
            },
            Operand::List(lits) => self
                .property
                .text(device)
                .map(|value| lits.iter().any(|lit| value.eq_ignore_ascii_case(lit))),
        };
        match positive {
            Some(result) => result != negated,
            None => negated,
        }
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// A quoted string, escapes resolved.
    Str(String),
    /// Property, operator, keyword or bare literal (`true`, `null`).
    Word(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LParen => f.write_str("'('"),
            Self::RParen => f.write_str("')'"),
            Self::LBracket => f.write_str("'['"),
            Self::RBracket => f.write_str("']'"),
            Self::Comma => f.write_str("','"),
            Self::Str(s) => write!(f, "string \"{}\"", s.escape_debug()),
            Self::Word(w) => write!(f, "'{w}'"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    /// Character offset of the token's first character.
    at: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(src: &str) -> Result<Vec<Token>, DeviceFilterError> {
    let mut tokens = Vec::new();
    let mut chars = src.chars().enumerate().peekable();
    while let Some((at, c)) = chars.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '"' | '\'' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(error(at, "unterminated string")),
                        Some((_, ch)) if ch == c => break,
                        Some((_, '\\')) => match chars.next() {
                            None => return Err(error(at, "unterminated string")),
                            Some((_, e @ ('"' | '\'' | '\\'))) => text.push(e),
                            Some((_, e)) => {
                                text.push('\\');
                                text.push(e);
                            }
                        },
                        Some((_, ch)) => text.push(ch),
                    }
                }
                Tok::Str(text)
            }
            c if c == '-' || is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(&(_, next)) = chars.peek()
                    && is_word_char(next)
                {
                    word.push(next);
                    chars.next();
                }
                if word == "-" {
                    return Err(error(at, "expected an operator name after '-'"));
                }
                Tok::Word(word)
            }
            other => {
                return Err(error(at, format!("unexpected character '{}'", other.escape_debug())));
            }
        };
        tokens.push(Token { tok, at });
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Parser: recursive descent, depth-limited
// ---------------------------------------------------------------------------

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    /// Character count of the rule: the offset reported at end of input.
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Token> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<&'a Token> {
        let token = self.tokens.get(self.pos);
        if token.is_some() {
            self.pos += 1;
        }
        token
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if is_keyword(w, keyword))
    }

    fn too_deep(at: usize) -> DeviceFilterError {
        error(at, format!("rule is nested too deeply (more than {MAX_DEPTH} levels)"))
    }

    /// `and_expr (-or and_expr)*`
    fn or_expr(&mut self, depth: usize) -> Result<Expr, DeviceFilterError> {
        let first = self.and_expr(depth)?;
        if !self.at_keyword("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword("or") {
            self.bump();
            items.push(self.and_expr(depth)?);
        }
        Ok(Expr::Or(items))
    }

    /// `not_expr (-and not_expr)*`
    fn and_expr(&mut self, depth: usize) -> Result<Expr, DeviceFilterError> {
        let first = self.not_expr(depth)?;
        if !self.at_keyword("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.at_keyword("and") {
            self.bump();
            items.push(self.not_expr(depth)?);
        }
        Ok(Expr::And(items))
    }

    /// `-not not_expr | '(' or_expr ')' | comparison`
    fn not_expr(&mut self, depth: usize) -> Result<Expr, DeviceFilterError> {
        let Some(token) = self.peek() else {
            return Err(error(self.end, "unexpected end of rule, expected a condition"));
        };
        if self.at_keyword("not") {
            if depth >= MAX_DEPTH {
                return Err(Self::too_deep(token.at));
            }
            self.bump();
            let inner = self.not_expr(depth + 1)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if token.tok == Tok::LParen {
            if depth >= MAX_DEPTH {
                return Err(Self::too_deep(token.at));
            }
            self.bump();
            let inner = self.or_expr(depth + 1)?;
            return match self.bump() {
                Some(Token { tok: Tok::RParen, .. }) => Ok(inner),
                Some(other) => {
                    Err(error(other.at, format!("expected ')' or -and/-or, found {}", other.tok)))
                }
                None => Err(error(token.at, "unbalanced parentheses: this '(' is never closed")),
            };
        }
        self.comparison().map(Expr::Compare)
    }

    /// `device.<property> <operator> <value>`
    fn comparison(&mut self) -> Result<Comparison, DeviceFilterError> {
        let property = self.property()?;
        let (op, op_at) = self.operator(property)?;
        let kind = property.kind();
        if !op.allowed(kind) {
            return Err(error(
                op_at,
                format!(
                    "operator {} is not allowed for {property} (allowed: {})",
                    op.name(),
                    allowed_list(kind)
                ),
            ));
        }
        let operand = self.operand(property, op)?;
        Ok(Comparison { property, op, operand })
    }

    fn property(&mut self) -> Result<Property, DeviceFilterError> {
        const EXPECTED: &str = "expected a device property like device.trustType";
        let Some(token) = self.bump() else {
            return Err(error(self.end, format!("unexpected end of rule, {EXPECTED}")));
        };
        let Tok::Word(word) = &token.tok else {
            return Err(error(token.at, format!("{EXPECTED}, found {}", token.tok)));
        };
        let name = word
            .get(.."device.".len())
            .filter(|prefix| prefix.eq_ignore_ascii_case("device."))
            .and_then(|_| word.get("device.".len()..));
        let Some(name) = name else {
            return Err(error(token.at, format!("{EXPECTED}, found '{word}'")));
        };
        match Property::lookup(name) {
            Some(property) => Ok(property),
            None => Err(error(token.at, format!("unknown device property '{word}'"))),
        }
    }

    fn operator(&mut self, property: Property) -> Result<(Op, usize), DeviceFilterError> {
        let Some(token) = self.bump() else {
            return Err(error(
                self.end,
                format!("unexpected end of rule, expected an operator after {property}"),
            ));
        };
        let word = match &token.tok {
            Tok::Word(word) => bare(word),
            other => {
                return Err(error(
                    token.at,
                    format!("expected an operator like -eq after {property}, found {other}"),
                ));
            }
        };
        if let Some(&(_, op)) =
            OPERATORS.iter().find(|(name, _)| bare(name).eq_ignore_ascii_case(word))
        {
            return Ok((op, token.at));
        }
        if let Some(name) =
            UNSUPPORTED_OPERATORS.iter().find(|name| bare(name).eq_ignore_ascii_case(word))
        {
            return Err(error(
                token.at,
                format!("operator {name} is not supported in device filters"),
            ));
        }
        Err(error(token.at, format!("unknown operator '{word}' after {property}")))
    }

    fn operand(&mut self, property: Property, op: Op) -> Result<Operand, DeviceFilterError> {
        let Some(token) = self.bump() else {
            return Err(error(
                self.end,
                format!("unexpected end of rule, expected a value after {}", op.name()),
            ));
        };
        let is_list_op = matches!(op, Op::In | Op::NotIn);
        if is_list_op {
            if token.tok != Tok::LBracket {
                return Err(error(
                    token.at,
                    format!(
                        "operator {} expects a list like [\"a\", \"b\"], found {}",
                        op.name(),
                        token.tok
                    ),
                ));
            }
            return self.list(token.at).map(Operand::List);
        }
        let is_bool = property.kind() == Kind::Bool;
        match &token.tok {
            Tok::Word(word) if word.eq_ignore_ascii_case("null") => {
                if matches!(op, Op::Eq | Op::Ne) {
                    Ok(Operand::Null)
                } else {
                    Err(error(token.at, "null can only be used with -eq or -ne"))
                }
            }
            Tok::Word(word) | Tok::Str(word) if is_bool => {
                parse_bool(word).map(Operand::Bool).ok_or_else(|| {
                    error(token.at, format!("{property} must be compared with true or false"))
                })
            }
            Tok::Str(text) => Ok(Operand::Text(text.to_ascii_lowercase())),
            Tok::LBracket => Err(error(token.at, "a list is only allowed with -in or -notIn")),
            other => Err(error(
                token.at,
                format!("expected a quoted string after {}, found {other}", op.name()),
            )),
        }
    }

    /// After `[`: `"a", "b", …]`. An empty list is accepted; it matches nothing.
    fn list(&mut self, open_at: usize) -> Result<Vec<String>, DeviceFilterError> {
        let mut items = Vec::new();
        if let Some(Token { tok: Tok::RBracket, .. }) = self.peek() {
            self.bump();
            return Ok(items);
        }
        loop {
            match self.bump() {
                Some(Token { tok: Tok::Str(text), .. }) => items.push(text.to_ascii_lowercase()),
                Some(other) => {
                    return Err(error(
                        other.at,
                        format!("expected a quoted string in the list, found {}", other.tok),
                    ));
                }
                None => return Err(error(open_at, "unterminated list: missing ']'")),
            }
            match self.bump() {
                Some(Token { tok: Tok::Comma, .. }) => {}
                Some(Token { tok: Tok::RBracket, .. }) => return Ok(items),
                Some(other) => {
                    return Err(error(
                        other.at,
                        format!("expected ',' or ']' in the list, found {}", other.tok),
                    ));
                }
                None => return Err(error(open_at, "unterminated list: missing ']'")),
            }
        }
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered, hybrid-joined, compliant corporate Windows device.
    fn windows() -> DeviceAttributes {
        let mut extension_attributes: [Option<String>; 15] = Default::default();
        extension_attributes[0] = Some("SAW".to_owned());
        extension_attributes[14] = Some("Tier0".to_owned());
        DeviceAttributes {
            device_id: Some("AAAAAAAA-0000-1111-2222-BBBBBBBBBBBB".to_owned()),
            display_name: Some("CONTOSO-Laptop-042".to_owned()),
            enrollment_profile_name: Some("Autopilot Corp".to_owned()),
            manufacturer: Some("Microsoft Corporation".to_owned()),
            model: Some("Surface Laptop 5".to_owned()),
            operating_system: Some("Windows".to_owned()),
            operating_system_version: Some("10.0.22631".to_owned()),
            extension_attributes,
            device_ownership: Some("Company".to_owned()),
            is_compliant: Some(true),
            mdm_app_id: Some("0000000a-0000-0000-c000-000000000000".to_owned()),
            physical_ids: Some(vec!["[ZTDId]:abc".to_owned(), "[OrderId]:Order-7".to_owned()]),
            system_labels: Some(vec!["AzureResource".to_owned()]),
            profile_type: Some("RegisteredDevice".to_owned()),
            trust_type: Some("ServerAD".to_owned()),
        }
    }

    fn unregistered() -> DeviceAttributes {
        DeviceAttributes::default()
    }

    fn rule(text: &str) -> DeviceFilterRule {
        match DeviceFilterRule::parse(text) {
            Ok(rule) => rule,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn check(text: &str, device: &DeviceAttributes) -> bool {
        rule(text).matches(device)
    }

    fn parse_err(text: &str) -> DeviceFilterError {
        match DeviceFilterRule::parse(text) {
            Ok(_) => panic!("{text:?} should be rejected"),
            Err(e) => e,
        }
    }

    // --- operators on present values -------------------------------------

    #[test]
    fn eq_and_ne() {
        let d = windows();
        assert!(check(r#"device.operatingSystem -eq "Windows""#, &d));
        assert!(!check(r#"device.operatingSystem -eq "Win""#, &d));
        assert!(!check(r#"device.operatingSystem -ne "Windows""#, &d));
        assert!(check(r#"device.operatingSystem -ne "iOS""#, &d));
    }

    #[test]
    fn starts_with_and_not_starts_with() {
        let d = windows();
        assert!(check(r#"device.displayName -startsWith "contoso-""#, &d));
        assert!(!check(r#"device.displayName -startsWith "Fabrikam""#, &d));
        assert!(!check(r#"device.displayName -notStartsWith "CONTOSO""#, &d));
        assert!(check(r#"device.displayName -notStartsWith "Fabrikam""#, &d));
        // Longer than the value: no match, no panic.
        assert!(!check(r#"device.model -startsWith "Surface Laptop 5 and more""#, &d));
    }

    #[test]
    fn ends_with_and_not_ends_with() {
        let d = windows();
        assert!(check(r#"device.displayName -endsWith "-042""#, &d));
        assert!(!check(r#"device.displayName -endsWith "043""#, &d));
        assert!(!check(r#"device.displayName -notEndsWith "LAPTOP-042""#, &d));
        assert!(check(r#"device.displayName -notEndsWith "043""#, &d));
        assert!(!check(r#"device.model -endsWith "A Surface Laptop 5""#, &d));
    }

    #[test]
    fn contains_and_not_contains_on_strings_is_substring() {
        let d = windows();
        assert!(check(r#"device.model -contains "laptop""#, &d));
        assert!(!check(r#"device.model -contains "Studio""#, &d));
        assert!(!check(r#"device.model -notContains "Surface""#, &d));
        assert!(check(r#"device.model -notContains "Studio""#, &d));
        assert!(check(r#"device.model -contains """#, &d));
    }

    #[test]
    fn in_and_not_in() {
        let d = windows();
        let versions = r#"["10.0.19045", "10.0.22631"]"#;
        assert!(check(&format!("device.operatingSystemVersion -in {versions}"), &d));
        assert!(!check(&format!("device.operatingSystemVersion -notIn {versions}"), &d));
        assert!(!check(r#"device.mdmAppId -in ["x", "y"]"#, &d));
        assert!(check(r#"device.mdmAppId -notIn ["x"]"#, &d));
        assert!(check(r#"device.deviceId -in ["aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb"]"#, &d));
        assert!(!check("device.deviceId -in []", &d));
        assert!(check("device.deviceId -notIn []", &d));
    }

    #[test]
    fn every_property_is_readable() {
        let d = windows();
        for (text, expected) in [
            (r#"device.deviceId -eq "aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb""#, true),
            (r#"device.displayName -eq "contoso-laptop-042""#, true),
            (r#"device.enrollmentProfileName -eq "Autopilot Corp""#, true),
            (r#"device.manufacturer -startsWith "Microsoft""#, true),
            (r#"device.model -eq "Surface Laptop 5""#, true),
            (r#"device.operatingSystem -eq "windows""#, true),
            (r#"device.operatingSystemVersion -startsWith "10.0""#, true),
            (r#"device.extensionAttribute1 -eq "saw""#, true),
            (r#"device.extensionAttribute2 -eq null"#, true),
            (r#"device.extensionAttribute15 -eq "Tier0""#, true),
            (r#"device.deviceOwnership -eq "Company""#, true),
            (r#"device.isCompliant -eq true"#, true),
            (r#"device.mdmAppId -eq "0000000A-0000-0000-C000-000000000000""#, true),
            (r#"device.physicalIds -contains "[OrderId]:Order-7""#, true),
            (r#"device.systemLabels -contains "AzureResource""#, true),
            (r#"device.profileType -eq "RegisteredDevice""#, true),
            (r#"device.trustType -eq "ServerAD""#, true),
        ] {
            assert_eq!(check(text, &d), expected, "{text}");
        }
    }

    // --- null semantics -----------------------------------------------------

    #[test]
    fn null_property_positive_false_negative_true() {
        let d = unregistered();
        for (op, expected) in [
            ("-eq", false),
            ("-startsWith", false),
            ("-endsWith", false),
            ("-contains", false),
            ("-ne", true),
            ("-notStartsWith", true),
            ("-notEndsWith", true),
            ("-notContains", true),
        ] {
            let text = format!(r#"device.displayName {op} "x""#);
            assert_eq!(check(&text, &d), expected, "{text}");
        }
        assert!(!check(r#"device.deviceId -in ["x"]"#, &d));
        assert!(check(r#"device.deviceId -notIn ["x"]"#, &d));
        assert!(!check(r#"device.physicalIds -contains "[ZTDId]:abc""#, &d));
        assert!(check(r#"device.physicalIds -notContains "[ZTDId]:abc""#, &d));
        assert!(!check("device.isCompliant -eq true", &d));
        assert!(!check("device.isCompliant -eq false", &d));
        assert!(check("device.isCompliant -ne true", &d));
        assert!(check("device.isCompliant -ne false", &d));
        assert!(!check(r#"device.trustType -eq "AzureAD""#, &d));
        assert!(check(r#"device.trustType -ne "AzureAD""#, &d));
    }

    #[test]
    fn single_null_property_on_registered_device() {
        let mut d = windows();
        d.model = None;
        assert!(!check(r#"device.model -contains "Surface""#, &d));
        assert!(check(r#"device.model -notContains "Surface""#, &d));
        assert!(check(r#"device.manufacturer -contains "Microsoft""#, &d));
    }

    #[test]
    fn explicit_null() {
        let registered = windows();
        let unknown = unregistered();
        for (text, on_registered, on_unregistered) in [
            ("device.trustType -eq null", false, true),
            ("device.trustType -ne null", true, false),
            ("device.isCompliant -eq null", false, true),
            ("device.isCompliant -ne NULL", true, false),
            ("device.deviceId -eq Null", false, true),
            ("device.extensionAttribute3 -ne null", false, false),
        ] {
            assert_eq!(check(text, &registered), on_registered, "{text}");
            assert_eq!(check(text, &unknown), on_unregistered, "{text}");
        }
        // Quoted "null" is an ordinary string.
        let mut d = windows();
        d.model = Some("NULL".to_owned());
        assert!(check(r#"device.model -eq "null""#, &d));
        assert!(!check(r#"device.model -eq "null""#, &unknown));
    }

    #[test]
    fn not_negates_the_boolean_including_nulls() {
        let d = unregistered();
        assert!(check(r#"-not device.trustType -eq "AzureAD""#, &d));
        assert!(!check(r#"-not device.trustType -ne "AzureAD""#, &d));
        assert!(check(r#"-not -not device.trustType -ne "AzureAD""#, &d));
    }

    // --- combinators --------------------------------------------------------

    #[test]
    fn and_binds_tighter_than_or() {
        let d = windows();
        // true -or (false -and false) = true; (true -or false) -and false would be false.
        let text =
            r#"device.trustType -eq "ServerAD" -or device.model -eq "x" -and device.model -eq "y""#;
        assert!(check(text, &d));
        // (false -and true) -or false = false.
        let text =
            r#"device.model -eq "x" -and device.trustType -eq "ServerAD" -or device.model -eq "y""#;
        assert!(!check(text, &d));
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let d = windows();
        // (-not true) -and false = false; -not (true -and false) would be true.
        let text = r#"-not device.trustType -eq "ServerAD" -and device.model -eq "x""#;
        assert!(!check(text, &d));
        let text = r#"-not (device.trustType -eq "ServerAD" -and device.model -eq "x")"#;
        assert!(check(text, &d));
    }

    #[test]
    fn parentheses_override_precedence() {
        let d = windows();
        let text = r#"(device.trustType -eq "ServerAD" -or device.model -eq "x") -and device.model -eq "y""#;
        assert!(!check(text, &d));
        assert!(check(r#"((((device.model -contains "surface"))))"#, &d));
    }

    #[test]
    fn hyphen_is_optional_and_keywords_ignore_case() {
        let d = windows();
        assert!(check(r#"device.trustType eq "ServerAD" and not device.model EQ "x""#, &d));
        assert!(check(r#"device.model -EQ "x" -OR device.trustType -Eq "serverad""#, &d));
        assert!(check(r#"device.displayName STARTSWITH "contoso""#, &d));
        assert!(check(r#"device.deviceId NOTIN ["x"]"#, &d));
        assert!(check(r#"device.displayName-startsWith"CONTOSO""#, &d));
    }

    #[test]
    fn values_and_property_names_ignore_case() {
        let d = windows();
        assert!(check(r#"device.TRUSTTYPE -eq "serverad""#, &d));
        assert!(check(r#"Device.trusttype -eq "SERVERAD""#, &d));
        assert!(check(r#"device.ExtensionAttribute1 -eq "saw""#, &d));
        assert!(check(r#"device.devicePhysicalIDs -contains "[ztdid]:ABC""#, &d));
    }

    #[test]
    fn non_ascii_compares_exactly_without_panicking() {
        let mut d = windows();
        d.display_name = Some("Büro-PC-ÄÖ".to_owned());
        assert!(check(r#"device.displayName -startsWith "bü""#, &d));
        assert!(check(r#"device.displayName -contains "-pc-""#, &d));
        assert!(check(r#"device.displayName -endsWith "ÄÖ""#, &d));
        assert!(!check(r#"device.displayName -endsWith "äö""#, &d));
        assert!(!check(r#"device.displayName -contains "ü-""#, &d));
    }

    // --- collections and booleans ---------------------------------------------

    #[test]
    fn collections_match_whole_elements() {
        let d = windows();
        assert!(check(r#"device.physicalIds -contains "[ZTDId]:abc""#, &d));
        assert!(check(r#"device.physicalIds -contains "[ztdid]:ABC""#, &d));
        assert!(!check(r#"device.physicalIds -contains "[ZTDId]""#, &d));
        assert!(!check(r#"device.physicalIds -contains "abc""#, &d));
        assert!(check(r#"device.physicalIds -notContains "[ZTDId]""#, &d));
        assert!(!check(r#"device.physicalIds -notContains "[ZTDId]:abc""#, &d));
        let mut empty = windows();
        empty.system_labels = Some(Vec::new());
        assert!(!check(r#"device.systemLabels -contains "x""#, &empty));
        assert!(check(r#"device.systemLabels -notContains "x""#, &empty));
    }

    #[test]
    fn is_compliant_literals() {
        let compliant = windows();
        let mut noncompliant = windows();
        noncompliant.is_compliant = Some(false);
        for literal in ["true", "True", "TRUE", r#""True""#, r#""true""#, "'True'"] {
            let text = format!("device.isCompliant -eq {literal}");
            assert!(check(&text, &compliant), "{text}");
            assert!(!check(&text, &noncompliant), "{text}");
        }
        for literal in ["false", "False", r#""False""#] {
            let text = format!("device.isCompliant -ne {literal}");
            assert!(check(&text, &compliant), "{text}");
            assert!(!check(&text, &noncompliant), "{text}");
        }
    }

    // --- strings ----------------------------------------------------------------

    #[test]
    fn string_quoting_and_escapes() {
        let mut d = windows();
        d.display_name = Some(r#"He said "hi" \o/"#.to_owned());
        assert!(check(r#"device.displayName -eq "He said \"hi\" \\o/""#, &d));
        assert!(check(r#"device.displayName -eq 'he said "hi" \o/'"#, &d));
        d.model = Some("O'Brien".to_owned());
        assert!(check(r"device.model -eq 'O\'Brien'", &d));
        assert!(check(r#"device.model -eq "O'Brien""#, &d));
    }

    // --- real rules from exports -----------------------------------------------

    #[test]
    fn real_export_rules() {
        let hybrid = windows();
        let mut entra_joined = windows();
        entra_joined.trust_type = Some("AzureAD".to_owned());
        let mut personal_mac = windows();
        personal_mac.device_ownership = Some("Personal".to_owned());
        personal_mac.trust_type = Some("Workplace".to_owned());
        personal_mac.operating_system = Some("MacMDM".to_owned());
        let none = unregistered();

        let r = rule(r#"device.trustType -eq "ServerAD""#);
        assert!(r.matches(&hybrid) && !r.matches(&entra_joined) && !r.matches(&none));

        let r = rule(r#"device.extensionAttribute1 -eq "SAW""#);
        assert!(r.matches(&hybrid) && !r.matches(&none));

        let r = rule(r#"device.isCompliant -eq True -and device.trustType -eq "AzureAD""#);
        assert!(r.matches(&entra_joined) && !r.matches(&hybrid) && !r.matches(&none));

        let r = rule(
            r#"(device.deviceOwnership -eq "Company" -or device.trustType -eq "ServerAD") -and device.operatingSystem -startsWith "Windows""#,
        );
        assert!(r.matches(&hybrid) && r.matches(&entra_joined));
        assert!(!r.matches(&personal_mac) && !r.matches(&none));
    }

    #[test]
    fn source_is_kept_verbatim() {
        let text = "  device.trustType -eq \"ServerAD\"  ";
        assert_eq!(rule(text).source(), text);
    }

    // --- errors -------------------------------------------------------------------

    #[test]
    fn unknown_property() {
        let e = parse_err(r#"device.colour -eq "red""#);
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("unknown device property"), "{e}");
        for text in [
            r#"device.extensionAttribute0 -eq "x""#,
            r#"device.extensionAttribute16 -eq "x""#,
            r#"device.extensionAttribute01 -eq "x""#,
            r#"device.extensionAttribute -eq "x""#,
            r#"device. -eq "x""#,
        ] {
            assert!(parse_err(text).message.contains("unknown"), "{text}");
        }
        let e = parse_err(r#"user.department -eq "x""#);
        assert!(e.message.contains("expected a device property"), "{e}");
    }

    #[test]
    fn operator_not_allowed_for_property() {
        let e = parse_err(r#"x -or device.deviceId -startsWith "a""#);
        assert!(e.message.contains("expected a device property"), "{e}");
        let e = parse_err(r#"device.deviceId -startsWith "a""#);
        assert_eq!(e.offset, 16);
        assert_eq!(
            e.message,
            "operator -startsWith is not allowed for device.deviceId (allowed: -eq, -ne, -in, -notIn)"
        );
        for text in [
            r#"device.trustType -in ["AzureAD"]"#,
            r#"device.profileType -contains "IoT""#,
            r#"device.isCompliant -startsWith "T""#,
            r#"device.physicalIds -eq "[ZTDId]:abc""#,
            r#"device.systemLabels -in ["x"]"#,
        ] {
            let e = parse_err(text);
            assert!(e.message.contains("is not allowed for device."), "{text}: {e}");
        }
        let e = parse_err(
            r#"device.extensionAttribute7 -contains "a" -and device.deviceOwnership -endsWith "y""#,
        );
        assert!(e.message.contains("device.deviceOwnership"), "{e}");
    }

    #[test]
    fn unsupported_and_unknown_operators() {
        let e = parse_err(r#"device.displayName -match "^abc""#);
        assert_eq!(e.message, "operator -match is not supported in device filters");
        assert_eq!(e.offset, 19);
        let e = parse_err(r#"device.displayName notmatch "abc""#);
        assert_eq!(e.message, "operator -notMatch is not supported in device filters");
        let e = parse_err(r#"device.displayName -like "abc""#);
        assert!(e.message.contains("unknown operator"), "{e}");
    }

    #[test]
    fn bad_values() {
        for (text, fragment) in [
            (r#"device.isCompliant -eq "yes""#, "true or false"),
            ("device.isCompliant -eq 1", "true or false"),
            ("device.model -eq true", "expected a quoted string"),
            ("device.model -eq Surface", "expected a quoted string"),
            (r#"device.model -startsWith null"#, "null can only be used"),
            (r#"device.physicalIds -contains null"#, "null can only be used"),
            (r#"device.model -in "x""#, "expects a list"),
            (r#"device.model -eq ["x"]"#, "only allowed with -in"),
            (r#"device.model -in ["x",]"#, "expected a quoted string in the list"),
            (r#"device.model -in ["x" "y"]"#, "expected ',' or ']'"),
            (r#"device.model -in [null]"#, "expected a quoted string in the list"),
            (r#"device.model -in ["x""#, "unterminated list"),
            ("device.model -eq", "expected a value"),
            ("device.model", "expected an operator"),
            ("device.model (", "expected an operator"),
        ] {
            let e = parse_err(text);
            assert!(e.message.contains(fragment), "{text}: {e}");
        }
    }

    #[test]
    fn unterminated_string() {
        let e = parse_err(r#"device.model -eq "Surface"#);
        assert_eq!((e.offset, e.message.as_str()), (17, "unterminated string"));
        let e = parse_err(r#"device.model -eq "Surface\""#);
        assert_eq!(e.message, "unterminated string");
        let e = parse_err(r"device.model -eq 'x\");
        assert_eq!(e.message, "unterminated string");
    }

    #[test]
    fn unbalanced_parentheses() {
        let e = parse_err(r#"(device.model -eq "x""#);
        assert_eq!(e.offset, 0);
        assert!(e.message.contains("never closed"), "{e}");
        let e = parse_err(r#"device.model -eq "x")"#);
        assert_eq!((e.offset, e.message.as_str()), (20, "unmatched ')'"));
        let e = parse_err("()");
        assert!(e.message.contains("expected a device property"), "{e}");
        let e = parse_err(r#"(device.model -eq "x" device.model -eq "y")"#);
        assert!(e.message.contains("expected ')'"), "{e}");
    }

    #[test]
    fn trailing_garbage() {
        let e = parse_err(r#"device.model -eq "x" garbage"#);
        assert_eq!(e.offset, 21);
        assert!(e.message.contains("after the end of the rule"), "{e}");
        let e = parse_err(r#"device.model -eq "x" -and"#);
        assert!(e.message.contains("unexpected end of rule"), "{e}");
        let e = parse_err(r#"device.model -eq "x" ; drop"#);
        assert!(e.message.contains("unexpected character ';'"), "{e}");
    }

    #[test]
    fn length_limit_counts_characters() {
        let head = r#"device.displayName -eq ""#;
        let pad = |n: usize| format!("{head}{}\"", "é".repeat(n - head.chars().count() - 1));
        let at_limit = pad(MAX_RULE_CHARS);
        assert_eq!(at_limit.chars().count(), MAX_RULE_CHARS);
        assert!(at_limit.len() > MAX_RULE_CHARS, "bytes exceed the limit");
        assert!(DeviceFilterRule::parse(&at_limit).is_ok());
        let e = parse_err(&pad(MAX_RULE_CHARS + 1));
        assert_eq!(e.offset, MAX_RULE_CHARS);
        assert!(e.message.contains("3073 characters"), "{e}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let leaf = r#"device.model -eq "x""#;
        let nested = |n: usize| format!("{}{leaf}{}", "(".repeat(n), ")".repeat(n));
        assert!(DeviceFilterRule::parse(&nested(MAX_DEPTH)).is_ok());
        let e = parse_err(&nested(MAX_DEPTH + 1));
        assert!(e.message.contains("nested too deeply"), "{e}");
        assert_eq!(e.offset, MAX_DEPTH);
        let nots = format!("{}{leaf}", "-not ".repeat(MAX_DEPTH + 1));
        assert!(parse_err(&nots).message.contains("nested too deeply"));
        // Beyond the length limit: rejected before parsing.
        assert!(DeviceFilterRule::parse(&nested(10_000)).is_err());
        assert!(DeviceFilterRule::parse(&"(".repeat(10_000)).is_err());
        // Within the length limit but far too deep.
        assert!(DeviceFilterRule::parse(&"(".repeat(3000)).is_err());
        assert!(DeviceFilterRule::parse(&"not ".repeat(700)).is_err());
    }

    #[test]
    fn empty_rule() {
        for text in ["", "   ", "\n\t "] {
            let e = parse_err(text);
            assert_eq!((e.offset, e.message.as_str()), (0, "rule is empty"));
        }
    }

    #[test]
    fn error_display() {
        let e = parse_err("device.model -eq");
        assert_eq!(
            e.to_string(),
            "at character 16: unexpected end of rule, expected a value after -eq"
        );
    }

    // --- robustness -------------------------------------------------------------

    /// xorshift64*: deterministic, dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn assert_total(text: &str) {
        let devices = [windows(), unregistered()];
        match DeviceFilterRule::parse(text) {
            Ok(r) => {
                for d in &devices {
                    let _ = r.matches(d);
                }
            }
            Err(e) => assert!(e.offset <= text.chars().count(), "{text:?}: {e}"),
        }
    }

    #[test]
    fn never_panics_on_mangled_rules() {
        let seeds = [
            r#"device.trustType -eq "ServerAD""#,
            r#"device.isCompliant -eq True -and device.trustType -eq "AzureAD""#,
            r#"(device.deviceOwnership -eq "Company" -or device.trustType -eq "ServerAD") -and device.operatingSystem -startsWith "Windows""#,
            r#"-not (device.operatingSystemVersion -in ["10.0.19045", '10.0.22631']) or device.physicalIds notContains "[ZTDId]:a\"b""#,
            "device.extensionAttribute15 -ne null -and device.displayName -endsWith 'Ü\\\\'",
        ];
        let fragments: [&str; 20] = [
            "(",
            ")",
            "[",
            "]",
            ",",
            "\"",
            "'",
            "\\",
            "-",
            "-not ",
            " -and ",
            " or ",
            "null",
            "true",
            "device.",
            "-eq",
            "é",
            "\u{0}",
            "\u{10FFFF}",
            "  ",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut cases = 0usize;
        for seed in seeds {
            // Every prefix and every suffix, cut at each character boundary.
            for (i, _) in seed.char_indices() {
                assert_total(&seed[..i]);
                assert_total(&seed[i..]);
                cases += 2;
            }
            for _ in 0..400 {
                let mut text = seed.to_owned();
                for _ in 0..1 + rng.below(4) {
                    let boundaries: Vec<usize> = text
                        .char_indices()
                        .map(|(i, _)| i)
                        .chain(std::iter::once(text.len()))
                        .collect();
                    let at = boundaries[rng.below(boundaries.len())];
                    match rng.below(3) {
                        0 => text.insert_str(at, fragments[rng.below(fragments.len())]),
                        1 => {
                            // A random byte, made valid UTF-8 lossily.
                            let byte = [rng.next() as u8];
                            text.insert_str(at, &String::from_utf8_lossy(&byte));
                        }
                        _ => {
                            let end = boundaries[rng.below(boundaries.len())].max(at);
                            text.replace_range(at..end, "");
                        }
                    }
                }
                assert_total(&text);
                cases += 1;
            }
        }
        assert!(cases > 2000);
    }
}
