//! What-If output: the Graph response, a table for people, and test cases for CI.

use serde_json::{Map, Value, json};

use crate::decision::{AuthState, Outcome, Unknowns};
use crate::evaluate::{Evaluation, Tri};
use crate::json::{FieldError, FieldResult, JsonPath, Obj};
use crate::model::enums::PolicyState;
use crate::model::policy::GrantControls;
use crate::request::SignInRequest;

impl Evaluation<'_> {
    /// Exactly the Graph response: `{"value": [whatIfAnalysisResult…]}`, each the policy as
    /// stored plus `policyApplies` and `analysisReasons`. Disabled policies are listed with
    /// `policyNotEnabled` unless `appliedPoliciesOnly` is set.
    pub fn to_graph_json(&self) -> Value {
        let only_applied = self.applied_policies_only;
        let value: Vec<Value> = self
            .policies()
            .filter(|(_, a)| !only_applied || a.applies == Tri::Yes)
            .map(|(p, a)| {
                let mut obj: Map<String, Value> = Map::with_capacity(p.raw.len() + 3);
                obj.insert("@odata.type".into(), "#microsoft.graph.whatIfAnalysisResult".into());
                for (k, v) in &p.raw {
                    if k != "@odata.type" && k != "@odata.context" {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                obj.insert("policyApplies".into(), Value::Bool(a.applies == Tri::Yes));
                obj.insert("analysisReasons".into(), a.reason.graph_name().into());
                Value::Object(obj)
            })
            .collect();
        json!({
            "@odata.context": "https://graph.microsoft.com/beta/$metadata#Collection(microsoft.graph.whatIfAnalysisResult)",
            "value": value
        })
    }

    /// The same answer as [`Evaluation::to_graph_json`], written as JSON text from each policy's
    /// pre-rendered properties: the server's hot path (no copy of a policy's object per
    /// request). `context` is the `@odata.context` to put first.
    pub fn to_graph_text(&self, context: &str) -> String {
        let only_applied = self.applied_policies_only;
        let mut out = String::with_capacity(256);
        out.push_str("{\"@odata.context\":");
        out.push_str(&serde_json::to_string(context).unwrap_or_default());
        out.push_str(",\"value\":[");
        let mut first = true;
        for (cp, a) in self.compiled().filter(|(_, a)| !only_applied || a.applies == Tri::Yes) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"@odata.type\":\"#microsoft.graph.whatIfAnalysisResult\"");
            if !cp.graph_fields.is_empty() {
                out.push(',');
                out.push_str(&cp.graph_fields);
            }
            out.push_str(",\"policyApplies\":");
            out.push_str(if a.applies == Tri::Yes { "true" } else { "false" });
            out.push_str(",\"analysisReasons\":\"");
            out.push_str(a.reason.graph_name());
            out.push_str("\"}");
        }
        out.push_str("]}");
        out
    }

    /// A table of policies with why each did or did not apply, then the outcome.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<[String; 4]> = Vec::new();
        for (p, a) in self.policies() {
            let state = match p.state {
                PolicyState::Enabled => "on",
                PolicyState::ReportOnly => "report-only",
                PolicyState::Disabled => "off",
            };
            let applies = match a.applies {
                Tri::Yes => "applies".to_owned(),
                Tri::No => format!("no ({})", a.reason.graph_name()),
                Tri::Unknown => "unknown (notEnoughInformation)".to_owned(),
            };
            let mut controls = p.grant.as_ref().map(|g| self.describe_grant(g)).unwrap_or_default();
            if let Some(session) =
                p.session.as_ref().map(describe_session).filter(|s| !s.is_empty())
            {
                controls =
                    if controls.is_empty() { session } else { format!("{controls}; {session}") };
            }
            rows.push([printable(&p.display_name), state.to_owned(), applies, controls]);
        }
        let headers = ["POLICY", "STATE", "APPLIES", "CONTROLS"];
        let widths: Vec<usize> = (0..4)
            .map(|i| {
                rows.iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([headers.get(i).map_or(0, |h| h.len())])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let line = |cells: [&str; 4], out: &mut String| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                l.push_str(&format!("{c:<w$}  "));
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(headers, &mut out);
        for r in &rows {
            line([&r[0], &r[1], &r[2], &r[3]], &mut out);
        }
        out.push('\n');
        let decision = self.decide_with(&AuthState::default(), Unknowns::Skip);
        let outcome = match &decision.outcome {
            Outcome::Blocked { policies } => {
                let names: Vec<String> = policies.iter().map(|id| self.name_of(id)).collect();
                format!("BLOCKED by {}", names.join(", "))
            }
            Outcome::Granted => "ALLOWED: no enabled policy asks for anything".to_owned(),
            Outcome::ActionRequired { requirements } => {
                let parts: Vec<String> = requirements
                    .iter()
                    .map(|r| {
                        let controls: Vec<String> = r.unmet.iter().map(|c| c.describe()).collect();
                        let joiner = match r.operator {
                            crate::model::enums::GrantOperator::And => " and ",
                            crate::model::enums::GrantOperator::Or => " or ",
                        };
                        format!("{} ({})", controls.join(joiner), self.name_of(r.policy_id))
                    })
                    .collect();
                format!("ALLOWED after: {}", parts.join("; "))
            }
        };
        out.push_str(&format!("Outcome: {outcome}\n"));
        for (p, a) in self.policies().filter(|(_, a)| a.applies == Tri::Unknown) {
            let needs: Vec<&str> = a.missing_inputs().collect();
            let effect = match &p.grant {
                Some(g) if g.blocks() => "would block",
                Some(_) => "would add requirements",
                None => "would add session controls",
            };
            let enforced = if p.state == PolicyState::Enabled { "" } else { " (report-only)" };
            out.push_str(&format!(
                "Undetermined: \"{}\"{enforced} {effect} if it applies; supply {}\n",
                printable(&p.display_name),
                needs.join(", ")
            ));
        }
        out
    }

    fn describe_grant(&self, g: &GrantControls) -> String {
        let mut parts: Vec<String> = g.built_in.iter().map(|c| c.graph_name().to_owned()).collect();
        if let Some(s) = &g.authentication_strength {
            let name = self.snapshot().strength(&s.id).map(|x| x.display_name.clone());
            let name = name.or_else(|| s.embedded.as_ref().map(|e| e.display_name.clone()));
            parts.push(format!("strength \"{}\"", name.unwrap_or_else(|| s.id.clone())));
        }
        parts.extend(g.terms_of_use.iter().map(|t| format!("termsOfUse {t}")));
        parts.extend(g.custom_factors.iter().map(|t| format!("custom {t}")));
        let op = match g.operator {
            crate::model::enums::GrantOperator::And => " AND ",
            crate::model::enums::GrantOperator::Or => " OR ",
        };
        parts.join(op)
    }

    fn name_of(&self, id: &str) -> String {
        self.policies()
            .find(|(p, _)| p.id == id)
            .map(|(p, _)| format!("\"{}\"", printable(&p.display_name)))
            .unwrap_or_else(|| id.to_owned())
    }

    /// Whether an enabled applying policy blocks.
    pub fn blocked(&self) -> bool {
        self.policies().any(|(p, a)| {
            a.applies == Tri::Yes
                && p.state == PolicyState::Enabled
                && p.grant.as_ref().is_some_and(GrantControls::blocks)
        })
    }
}

/// A name from an export, safe to print: control characters (new lines, terminal escapes) are
/// shown escaped, so a policy name cannot forge or hide lines of the output.
fn printable(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let escaped: Vec<char> =
                if c.is_control() { c.escape_default().collect() } else { vec![c] };
            escaped
        })
        .collect()
}

fn describe_session(s: &crate::model::policy::SessionControls) -> String {
    use crate::model::policy::{PersistentBrowser, SignInFrequency};
    let mut parts = Vec::new();
    match s.sign_in_frequency {
        Some(SignInFrequency::EveryTime) => parts.push("sign-in every time".to_owned()),
        Some(SignInFrequency::Hours(h)) => parts.push(format!("sign-in every {h}h")),
        None => {}
    }
    match s.persistent_browser {
        Some(PersistentBrowser::Always) => parts.push("persistent browser".to_owned()),
        Some(PersistentBrowser::Never) => parts.push("no persistent browser".to_owned()),
        None => {}
    }
    if s.application_enforced_restrictions {
        parts.push("app-enforced restrictions".to_owned());
    }
    if let Some(mode) = &s.cloud_app_security {
        parts.push(format!("cloud app security ({mode})"));
    }
    if let Some(mode) = &s.continuous_access_evaluation {
        parts.push(format!("CAE ({mode})"));
    }
    parts.join(", ")
}

/// A What-If test case: one line of a `cases.jsonl` file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub request: SignInRequest,
    pub expect: Option<Expectation>,
}

/// What the case says must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Policies whose `policyApplies` must be true.
    pub applies: Vec<String>,
    /// No other policy may apply.
    pub exact: bool,
    /// Whether an enabled applying policy blocks.
    pub blocked: Option<bool>,
}

impl Case {
    /// A line is either `{"name", "request", "expect"}` or a bare request body.
    pub fn from_json(value: &Value, line: usize) -> FieldResult<Case> {
        let root = JsonPath::root();
        let o = Obj::new(value, &root)?;
        if !o.map.contains_key("request") && !o.map.contains_key("expect") {
            return Ok(Case {
                name: format!("line {line}"),
                request: SignInRequest::from_json(value)?,
                expect: None,
            });
        }
        // A misspelt key would otherwise make a case pass without checking anything.
        crate::request::reject_unknown(o, &["name", "request", "expect"])?;
        let request =
            SignInRequest::from_json(o.get("request").unwrap_or(&Value::Null)).map_err(|e| {
                FieldError { path: JsonPath::root().key("request").key(e.path.as_str()), ..e }
            })?;
        let expect = match o.object("expect")? {
            None => None,
            Some((m, p)) => {
                let e = Obj { map: m, path: &p };
                crate::request::reject_unknown(e, &["applies", "exact", "blocked"])?;
                let exact = e.bool("exact")?.unwrap_or(false);
                if e.strings("applies")?.is_empty() && !exact && e.bool("blocked")?.is_none() {
                    return Err(FieldError::new(
                        &p,
                        "checks nothing: give `applies`, `exact: true` or `blocked`",
                    ));
                }
                Some(Expectation {
                    applies: e
                        .strings("applies")?
                        .into_iter()
                        .map(crate::json::normalize_id)
                        .collect(),
                    exact: e.bool("exact")?.unwrap_or(false),
                    blocked: e.bool("blocked")?,
                })
            }
        };
        Ok(Case {
            name: o.string("name")?.map(str::to_owned).unwrap_or_else(|| format!("line {line}")),
            request,
            expect,
        })
    }
}

/// The result of one case, as a JSON line and a pass/fail.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    /// Whether the case had expectations to check.
    pub checked: bool,
    pub applies: Vec<String>,
    pub blocked: bool,
    pub outcome: String,
    pub failures: Vec<String>,
    /// What the caller should tell the person running the case (unknown users, apps…).
    pub notices: Vec<crate::evaluate::Notice>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `pass` is `null` for a case without expectations: it ran, and nothing was checked.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "pass": if self.checked { Value::Bool(self.passed()) } else { Value::Null },
            "applies": self.applies,
            "blocked": self.blocked,
            "outcome": self.outcome,
            "failures": self.failures,
        })
    }
}

pub fn run_case(snapshot: &crate::snapshot::Snapshot, case: &Case) -> CaseResult {
    let eval = snapshot.evaluate(&case.request);
    let applies: Vec<String> = eval.applying_ids().into_iter().map(str::to_owned).collect();
    let blocked = eval.blocked();
    let outcome = match eval.decide_with(&AuthState::default(), Unknowns::Skip).outcome {
        Outcome::Blocked { .. } => "blocked",
        Outcome::Granted => "granted",
        Outcome::ActionRequired { .. } => "actionRequired",
    }
    .to_owned();
    let mut failures = Vec::new();
    if let Some(e) = &case.expect {
        for id in &e.applies {
            if !applies.contains(id) {
                let reason = eval
                    .policies()
                    .find(|(p, _)| &p.id == id)
                    .map(|(_, a)| a.reason.graph_name())
                    .unwrap_or("no policy has this id");
                failures.push(format!("expected policy {id} to apply, but it did not ({reason})"));
            }
        }
        if e.exact {
            for id in &applies {
                if !e.applies.contains(id) {
                    failures.push(format!("policy {id} applies but the case does not expect it"));
                }
            }
        }
        // A case with expectations must be decidable, or it could pass without testing anything.
        for (p, a) in eval.policies().filter(|(_, a)| a.applies == Tri::Unknown) {
            let needs: Vec<&str> = a.missing_inputs().collect();
            failures.push(format!(
                "policy {} could not be decided: supply {}",
                p.id,
                needs.join(", ")
            ));
        }
        if let Some(b) = e.blocked
            && b != blocked
        {
            failures.push(format!("expected blocked={b}, got blocked={blocked}"));
        }
    }
    let notices = eval.notices;
    CaseResult {
        checked: case.expect.is_some(),
        notices,
        name: case.name.clone(),
        applies,
        blocked,
        outcome,
        failures,
    }
}
