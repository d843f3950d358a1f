//! Requestor questions and their answers (`accessPackageQuestion`, `accessPackageAnswerString`).

use gatehouse_policy::json::{FieldError, JsonPath, Obj, normalize_id};
use regex::Regex;
use serde_json::{Map, Value, json};

use super::GovError;

/// Limits that keep a question, its pattern and its answers small.
pub const MAX_TEXT: usize = 2_000;
pub const MAX_PATTERN: usize = 512;
pub const MAX_CHOICES: usize = 50;
pub const MAX_ANSWER: usize = 4_000;

#[derive(Debug, Clone)]
pub struct Question {
    pub id: String,
    pub sequence: i64,
    pub required: bool,
    pub editable: bool,
    pub text: String,
    pub localizations: Vec<(String, String)>,
    pub kind: QuestionKind,
}

impl PartialEq for Question {
    fn eq(&self, other: &Question) -> bool {
        self.to_graph() == other.to_graph()
    }
}

#[derive(Debug, Clone)]
pub enum QuestionKind {
    /// `regexPattern`, when set, must match the answer (anywhere in it, as .NET's `IsMatch`
    /// does; anchor it with `^…$` to match the whole answer). Rust's `regex` runs in linear
    /// time, so a pattern cannot be made to hang the server.
    Text {
        single_line: bool,
        pattern: Option<(String, Regex)>,
    },
    Choice {
        multiple: bool,
        choices: Vec<Choice>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: String,
    pub text: String,
    pub localizations: Vec<(String, String)>,
}

fn localizations(obj: &Obj<'_>) -> Result<Vec<(String, String)>, FieldError> {
    obj.objects("localizations")?
        .into_iter()
        .map(|(m, p)| {
            let v = Value::Object(m.clone());
            let o = Obj::new(&v, &p)?;
            Ok((
                o.required_string("languageCode")?.to_owned(),
                o.required_string("text")?.to_owned(),
            ))
        })
        .collect()
}

fn bounded(obj: &Obj<'_>, key: &str) -> Result<String, FieldError> {
    let t = obj.required_string(key)?;
    if t.trim().is_empty() || t.chars().count() > MAX_TEXT {
        return Err(FieldError::new(
            &obj.path.key(key),
            format!("must be 1 to {MAX_TEXT} characters"),
        ));
    }
    Ok(t.to_owned())
}

impl Question {
    /// `seed` names the question when the body gives no id (the policy id and the position), so
    /// the id is stable and unique without randomness in the core.
    pub fn parse(
        map: &Map<String, Value>,
        path: &JsonPath,
        seed: &str,
    ) -> Result<Question, FieldError> {
        let v = Value::Object(map.clone());
        let o = Obj::new(&v, path)?;
        let ty = o.string("@odata.type")?.unwrap_or_default();
        let ty = ty.trim_start_matches('#').trim_start_matches("microsoft.graph.");
        let kind = match ty.to_ascii_lowercase().as_str() {
            "accesspackagetextinputquestion" => {
                let pattern = match o.string("regexPattern")?.filter(|p| !p.is_empty()) {
                    None => None,
                    Some(p) if p.len() > MAX_PATTERN => {
                        return Err(FieldError::new(
                            &path.key("regexPattern"),
                            format!("is longer than {MAX_PATTERN} characters"),
                        ));
                    }
                    Some(p) => {
                        let re = regex::RegexBuilder::new(p).size_limit(1 << 20).build().map_err(
                            |e| {
                                FieldError::new(
                                    &path.key("regexPattern"),
                                    format!("is not a valid regular expression: {e}"),
                                )
                            },
                        )?;
                        Some((p.to_owned(), re))
                    }
                };
                QuestionKind::Text {
                    single_line: o.bool("isSingleLineQuestion")?.unwrap_or(true),
                    pattern,
                }
            }
            "accesspackagemultiplechoicequestion" => {
                let mut choices = Vec::new();
                for (m, p) in o.objects("choices")? {
                    let cv = Value::Object(m.clone());
                    let c = Obj::new(&cv, &p)?;
                    let value = bounded(&c, "actualValue")?;
                    if choices.iter().any(|x: &Choice| x.value == value) {
                        return Err(FieldError::new(
                            &p.key("actualValue"),
                            format!("`{value}` is the value of an earlier choice too"),
                        ));
                    }
                    let text =
                        c.string("text")?.map(str::to_owned).unwrap_or_else(|| value.clone());
                    choices.push(Choice { value, text, localizations: localizations(&c)? });
                }
                if choices.is_empty() || choices.len() > MAX_CHOICES {
                    return Err(FieldError::new(
                        &path.key("choices"),
                        format!("must hold 1 to {MAX_CHOICES} choices"),
                    ));
                }
                QuestionKind::Choice {
                    multiple: o.bool("isMultipleSelectionAllowed")?.unwrap_or(false),
                    choices,
                }
            }
            _ => {
                return Err(FieldError::new(
                    &path.key("@odata.type"),
                    "must be #microsoft.graph.accessPackageTextInputQuestion or \
                     #microsoft.graph.accessPackageMultipleChoiceQuestion",
                ));
            }
        };
        let id = match o.string("id")? {
            Some(id) if !id.trim().is_empty() => normalize_id(id),
            _ => crate::governance::derived_id(seed),
        };
        Ok(Question {
            id,
            sequence: o.integer("sequence")?.unwrap_or(0),
            required: o.bool("isRequired")?.unwrap_or(false),
            editable: o.bool("isAnswerEditable")?.unwrap_or(false),
            text: bounded(&o, "text")?,
            localizations: localizations(&o)?,
            kind,
        })
    }

    pub fn to_graph(&self) -> Value {
        let locs = |l: &[(String, String)]| -> Vec<Value> {
            l.iter().map(|(c, t)| json!({"languageCode": c, "text": t})).collect()
        };
        let mut q = json!({
            "id": self.id,
            "sequence": self.sequence,
            "isRequired": self.required,
            "isAnswerEditable": self.editable,
            "text": self.text,
            "localizations": locs(&self.localizations),
        });
        if let Some(o) = q.as_object_mut() {
            match &self.kind {
                QuestionKind::Text { single_line, pattern } => {
                    o.insert(
                        "@odata.type".into(),
                        "#microsoft.graph.accessPackageTextInputQuestion".into(),
                    );
                    o.insert("isSingleLineQuestion".into(), (*single_line).into());
                    o.insert(
                        "regexPattern".into(),
                        pattern
                            .as_ref()
                            .map(|(p, _)| Value::from(p.clone()))
                            .unwrap_or(Value::Null),
                    );
                }
                QuestionKind::Choice { multiple, choices } => {
                    o.insert(
                        "@odata.type".into(),
                        "#microsoft.graph.accessPackageMultipleChoiceQuestion".into(),
                    );
                    o.insert("isMultipleSelectionAllowed".into(), (*multiple).into());
                    o.insert(
                        "choices".into(),
                        choices
                            .iter()
                            .map(|c| {
                                json!({"actualValue": c.value, "text": c.text,
                                       "localizations": locs(&c.localizations)})
                            })
                            .collect::<Vec<_>>()
                            .into(),
                    );
                }
            }
        }
        q
    }

    /// The text in `language` (`fr-FR`, or `fr` for any French), else the default text.
    pub fn text_in(&self, language: &str) -> &str {
        localized(&self.text, &self.localizations, language)
    }
}

pub fn localized<'a>(default: &'a str, locs: &'a [(String, String)], language: &str) -> &'a str {
    let lang = language.trim();
    if lang.is_empty() {
        return default;
    }
    locs.iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(lang))
        .or_else(|| {
            let primary = lang.split('-').next().unwrap_or(lang);
            locs.iter()
                .find(|(c, _)| c.split('-').next().is_some_and(|p| p.eq_ignore_ascii_case(primary)))
        })
        .map(|(_, t)| t.as_str())
        .unwrap_or(default)
}

/// An answer as stored and served (`accessPackageAnswerString`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub question_id: String,
    pub question_type: &'static str,
    /// The question as asked (its default text), kept so the answer reads on its own later.
    pub question_text: String,
    pub value: String,
    pub display_value: String,
}

impl Answer {
    pub fn to_graph(&self) -> Value {
        json!({
            "@odata.type": "#microsoft.graph.accessPackageAnswerString",
            "value": self.value,
            "displayValue": self.display_value,
            "answeredQuestion": {"@odata.type": self.question_type, "id": self.question_id,
                                 "text": self.question_text},
        })
    }
}

/// Checks `answers` (the request body's `answers`) against `questions`: every required question
/// answered, text answers matching their pattern, choices among the offered values, no answer to
/// a question the policy does not ask. Several answers to one multiple-selection question are
/// several choices.
pub fn check_answers(questions: &[Question], answers: &[Value]) -> Result<Vec<Answer>, GovError> {
    let mut out: Vec<Answer> = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let path = format!("answers[{i}]");
        let Some(obj) = a.as_object() else {
            return Err(GovError::invalid(&path, "expected an object"));
        };
        let qid = obj
            .get("answeredQuestion")
            .and_then(|q| q.get("id"))
            .and_then(Value::as_str)
            .map(normalize_id)
            .ok_or_else(|| {
                GovError::invalid(&format!("{path}.answeredQuestion.id"), "is required")
            })?;
        let q = questions.iter().find(|q| q.id == qid).ok_or_else(|| {
            GovError::invalid(
                &format!("{path}.answeredQuestion.id"),
                format!("`{qid}` is not a question of this policy"),
            )
        })?;
        let value = match obj.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(GovError::invalid(&format!("{path}.value"), "expected a string"));
            }
        };
        if value.chars().count() > MAX_ANSWER {
            return Err(GovError::invalid(
                &format!("{path}.value"),
                format!("is longer than {MAX_ANSWER} characters"),
            ));
        }
        let (question_type, display) = match &q.kind {
            QuestionKind::Text { single_line, pattern } => {
                if *single_line && value.contains(['\n', '\r']) {
                    return Err(GovError::invalid(
                        &format!("{path}.value"),
                        format!("question `{}` takes a single line", q.text),
                    ));
                }
                if let Some((p, re)) = pattern
                    && !value.is_empty()
                    && !re.is_match(&value)
                {
                    return Err(GovError::invalid(
                        &format!("{path}.value"),
                        format!("the answer to `{}` does not match the pattern `{p}`", q.text),
                    )
                    .with_code("GH-EM-021"));
                }
                ("#microsoft.graph.accessPackageTextInputQuestion", value.clone())
            }
            QuestionKind::Choice { multiple, choices } => {
                let Some(c) = choices.iter().find(|c| c.value == value) else {
                    return Err(GovError::invalid(
                        &format!("{path}.value"),
                        format!(
                            "`{value}` is not a choice of `{}` (expected one of: {})",
                            q.text,
                            choices.iter().map(|c| c.value.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                    .with_code("GH-EM-021"));
                };
                if !*multiple && out.iter().any(|x| x.question_id == q.id) {
                    return Err(GovError::invalid(
                        &path,
                        format!("question `{}` takes one choice", q.text),
                    ));
                }
                ("#microsoft.graph.accessPackageMultipleChoiceQuestion", c.text.clone())
            }
        };
        if matches!(q.kind, QuestionKind::Text { .. }) && out.iter().any(|x| x.question_id == q.id)
        {
            return Err(GovError::invalid(
                &path,
                format!("question `{}` is answered twice", q.text),
            ));
        }
        out.push(Answer {
            question_id: q.id.clone(),
            question_type,
            question_text: q.text.clone(),
            value,
            display_value: display,
        });
    }
    for q in questions.iter().filter(|q| q.required) {
        let answered = out.iter().any(|a| a.question_id == q.id && !a.value.trim().is_empty());
        if !answered {
            return Err(GovError::invalid(
                "answers",
                format!("question `{}` is required and has no answer", q.text),
            )
            .with_code("GH-EM-020"));
        }
    }
    Ok(out)
}
