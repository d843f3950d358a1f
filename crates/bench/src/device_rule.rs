//! Device-filter rules (`device.isCompliant -eq True -or …`) as Cedar expressions over
//! `context.device`.
//!
//! Gatehouse keeps its parsed rule private, so this reads the rule text again. It covers the
//! whole device-filter language (ten operators, `-and`/`-or`/`-not`, parentheses, lists, `null`)
//! with the precedence Entra documents (comparison, then `-not`, `-and`, `-or`), and refuses
//! anything else. Case folding and null handling are described in `cedar.rs`
//! (approximations 2 and 3).

use crate::Result;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Str(String),
    Word(String),
}

fn lex(src: &str) -> Result<Vec<Tok>> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    _ => Tok::Comma,
                });
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("unterminated string in `{src}`").into()),
                        Some('\\') => match chars.peek() {
                            Some(&e @ ('"' | '\'' | '\\')) => {
                                chars.next();
                                s.push(e);
                            }
                            _ => s.push('\\'),
                        },
                        Some(q) if q == c => break,
                        Some(other) => s.push(other),
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "()[],\"'".contains(c) {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Collection,
}

/// The context key and kind of `device.<name>` (names are case-insensitive).
fn property(name: &str) -> Option<(String, Kind)> {
    const NAMED: [(&str, &str, Kind); 15] = [
        ("deviceid", "deviceId", Kind::Text),
        ("mdmappid", "mdmAppId", Kind::Text),
        ("displayname", "displayName", Kind::Text),
        ("enrollmentprofilename", "enrollmentProfileName", Kind::Text),
        ("manufacturer", "manufacturer", Kind::Text),
        ("model", "model", Kind::Text),
        ("operatingsystem", "operatingSystem", Kind::Text),
        ("operatingsystemversion", "operatingSystemVersion", Kind::Text),
        ("deviceownership", "deviceOwnership", Kind::Text),
        ("iscompliant", "isCompliant", Kind::Bool),
        ("profiletype", "profileType", Kind::Text),
        ("trusttype", "trustType", Kind::Text),
        ("physicalids", "physicalIds", Kind::Collection),
        ("devicephysicalids", "physicalIds", Kind::Collection),
        ("systemlabels", "systemLabels", Kind::Collection),
    ];
    let lower = name.to_ascii_lowercase();
    if let Some((_, key, kind)) = NAMED.iter().find(|(n, _, _)| *n == lower) {
        return Some(((*key).to_owned(), *kind));
    }
    let n: u8 = lower.strip_prefix("extensionattribute")?.parse().ok()?;
    (1..=15).contains(&n).then(|| (format!("extensionAttribute{n}"), Kind::Text))
}

/// A Cedar `like` pattern matching `lit` literally, with `*` wildcards where asked.
fn pattern(lit: &str, leading: bool, trailing: bool) -> String {
    let mut out = String::from("\"");
    if leading {
        out.push('*');
    }
    for c in lit.chars() {
        match c {
            '*' => out.push_str("\\*"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    if trailing {
        out.push('*');
    }
    out.push('"');
    out
}

fn quote(s: &str) -> String {
    crate::cedar::lit(s)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w))
            if w.strip_prefix('-').unwrap_or(w).eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> Result<String> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            format!("({})", parts.join(" || "))
        })
    }

    fn and(&mut self) -> Result<String> {
        let mut parts = vec![self.not()?];
        while self.keyword("and") {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            format!("({})", parts.join(" && "))
        })
    }

    fn not(&mut self) -> Result<String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(format!("!{}", self.not()?));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Tok::Close) {
                return Err("expected `)`".into());
            }
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<String> {
        let Some(Tok::Word(prop)) = self.next() else {
            return Err("expected `device.<property>`".into());
        };
        let name = prop
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("device."))
            .and_then(|_| prop.get(7..))
            .ok_or_else(|| format!("`{prop}` is not a device property"))?;
        let (key, kind) =
            property(name).ok_or_else(|| format!("unknown device property `{prop}`"))?;
        let Some(Tok::Word(op)) = self.next() else {
            return Err(format!("expected an operator after `{prop}`").into());
        };
        let op = op.strip_prefix('-').unwrap_or(&op).to_ascii_lowercase();
        let negated =
            matches!(op.as_str(), "ne" | "notstartswith" | "notendswith" | "notcontains" | "notin");
        let has = format!("context.device has {key}");
        let value = format!("context.device.{key}");
        let positive = match self.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => {
                return match op.as_str() {
                    "eq" => Ok(format!("!({has})")),
                    "ne" => Ok(format!("({has})")),
                    _ => Err(format!("`-{op}` cannot compare with null").into()),
                };
            }
            Some(Tok::Word(w)) if kind == Kind::Bool && matches!(op.as_str(), "eq" | "ne") => {
                let b = match w.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("`{w}` is not a boolean").into()),
                };
                format!("{value} == {b}")
            }
            Some(Tok::Str(s)) => {
                let s = s.to_ascii_lowercase();
                match (op.as_str(), kind) {
                    ("eq" | "ne", Kind::Text) => format!("{value} == {}", quote(&s)),
                    ("startswith" | "notstartswith", Kind::Text) => {
                        format!("{value} like {}", pattern(&s, false, true))
                    }
                    ("endswith" | "notendswith", Kind::Text) => {
                        format!("{value} like {}", pattern(&s, true, false))
                    }
                    ("contains" | "notcontains", Kind::Text) => {
                        format!("{value} like {}", pattern(&s, true, true))
                    }
                    ("contains" | "notcontains", Kind::Collection) => {
                        format!("{value}.contains({})", quote(&s))
                    }
                    _ => return Err(format!("`-{op}` does not apply to `{prop}`").into()),
                }
            }
            Some(Tok::LBracket) if matches!(op.as_str(), "in" | "notin") => {
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        Some(Tok::Str(s)) => items.push(quote(&s.to_ascii_lowercase())),
                        Some(Tok::RBracket) if items.is_empty() => break,
                        _ => return Err("expected a string in the list".into()),
                    }
                    match self.next() {
                        Some(Tok::Comma) => {}
                        Some(Tok::RBracket) => break,
                        _ => return Err("expected `,` or `]`".into()),
                    }
                }
                format!("[{}].contains({value})", items.join(", "))
            }
            other => return Err(format!("unexpected value {other:?} after `{prop} -{op}`").into()),
        };
        Ok(if negated {
            format!("(!({has}) || !({positive}))")
        } else {
            format!("({has} && {positive})")
        })
    }
}

/// The Cedar expression that holds exactly when the rule matches the device.
pub fn translate(rule: &str) -> Result<String> {
    let mut p = Parser { toks: lex(rule)?, pos: 0 };
    let expr = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected text after the end of `{rule}`").into());
    }
    Ok(expr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_the_common_shapes() {
        assert_eq!(
            translate(r#"device.isCompliant -eq True -or device.trustType -eq "ServerAD""#)
                .unwrap(),
            r#"((context.device has isCompliant && context.device.isCompliant == true) || (context.device has trustType && context.device.trustType == "serverad"))"#
        );
        assert_eq!(
            translate(r#"-not (device.model -in ["A*", 'b'])"#).unwrap(),
            r#"!(context.device has model && ["a*", "b"].contains(context.device.model))"#
        );
        assert_eq!(
            translate(r#"device.displayName -notStartsWith "x*""#).unwrap(),
            r#"(!(context.device has displayName) || !(context.device.displayName like "x\**"))"#
        );
        assert_eq!(
            translate("device.mdmAppId -eq null").unwrap(),
            "!(context.device has mdmAppId)"
        );
        assert!(translate("device.nope -eq 1").is_err());
        assert!(translate("device.model -eq \"a\" extra").is_err());
    }
}
