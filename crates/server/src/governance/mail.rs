//! Mail: templates (built in, or an operator's folder overriding them), rendered when the
//! state change that causes a mail commits, and sent later by the outbox worker over SMTP, or
//! written as `.eml` files when no SMTP server is configured.
//!
//! A template is a text file: its first line is `Subject: …`, the rest is the body. Both are
//! minijinja templates over the variables of [`MailVars`]; an unknown variable is an error at
//! start-up (every template is rendered once with sample values), not a blank in a mail.

use std::path::Path;

use gatehouse_core::governance::engine::Template;
use lettre::message::{Mailbox, header};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;

const BUILT_IN: &[(Template, &str)] = &[
    (Template::ApprovalRequested, include_str!("../../templates/mail/approval-requested.txt")),
    (Template::ApprovalEscalated, include_str!("../../templates/mail/approval-escalated.txt")),
    (Template::ApprovalCompleted, include_str!("../../templates/mail/approval-completed.txt")),
    (Template::ApprovalExpired, include_str!("../../templates/mail/approval-expired.txt")),
    (Template::RequestDenied, include_str!("../../templates/mail/request-denied.txt")),
    (Template::RequestExpired, include_str!("../../templates/mail/request-expired.txt")),
    (Template::AccessGranted, include_str!("../../templates/mail/access-granted.txt")),
    (Template::AccessExtended, include_str!("../../templates/mail/access-extended.txt")),
    (Template::AccessExpiring, include_str!("../../templates/mail/access-expiring.txt")),
    (Template::AccessRemoved, include_str!("../../templates/mail/access-removed.txt")),
];

/// What a template may use.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MailVars {
    pub recipient: String,
    pub requestor: String,
    pub target: String,
    pub package: String,
    pub catalog: String,
    pub policy: String,
    pub request_id: String,
    pub assignment_id: String,
    pub justification: String,
    /// Why a request was denied (the decision's justification or the reason Gatehouse gives).
    pub reason: String,
    pub stage: usize,
    /// "Decide by", in the policy's time zone.
    pub deadline: String,
    /// When access ends, in the policy's time zone (empty: never).
    pub end: String,
    pub days: i64,
    pub answers: Vec<AnswerVar>,
    /// The server's public URL, for links.
    pub portal: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AnswerVar {
    pub question: String,
    pub answer: String,
}

pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// The built-in templates, each overridden by `{dir}/{name}.txt` when that file exists.
    pub fn load(dir: Option<&Path>) -> Result<Templates, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (t, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(format!("{}.txt", t.name()))) {
                Some(p) if p.exists() => std::fs::read_to_string(&p)
                    .map_err(|e| format!("mail template {}: {e}", p.display()))?,
                _ => (*built_in).to_owned(),
            };
            if !source.starts_with("Subject:") {
                return Err(format!(
                    "mail template {}: the first line must be `Subject: …`",
                    t.name()
                ));
            }
            env.add_template_owned(t.name().to_owned(), source)
                .map_err(|e| format!("mail template {}: {e}", t.name()))?;
        }
        let templates = Templates { env };
        let sample = MailVars {
            recipient: "Megan".into(),
            requestor: "Adele".into(),
            target: "Adele".into(),
            package: "Internals Travelling".into(),
            catalog: "Travel".into(),
            stage: 1,
            days: 1,
            answers: vec![AnswerVar { question: "Where?".into(), answer: "France".into() }],
            ..MailVars::default()
        };
        for t in Template::ALL {
            templates.render(*t, &sample)?;
        }
        Ok(templates)
    }

    /// (subject, body).
    pub fn render(&self, t: Template, vars: &MailVars) -> Result<(String, String), String> {
        let text = self
            .env
            .get_template(t.name())
            .and_then(|tmpl| tmpl.render(vars))
            .map_err(|e| format!("mail template {}: {e}", t.name()))?;
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let subject = first.trim_start_matches("Subject:").trim().replace(['\r', '\n'], " ");
        Ok((subject, rest.trim_start_matches('\n').to_owned()))
    }
}

/// The outbox body of a mail.
pub fn outbox_body(t: Template, to: &str, to_name: &str, subject: &str, text: &str) -> Value {
    json!({"template": t.name(), "to": to, "toName": to_name, "subject": subject, "text": text})
}

/// Sends mail as the configuration says.
#[derive(Clone)]
pub enum Sender {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Sender {
    pub fn from_config(config: &Config) -> anyhow::Result<Sender> {
        match &config.mail.smtp_url {
            Some(url) => {
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("mail.smtp_url {url}: {e}"))?;
                if let Some(user) = &config.mail.username {
                    let password = match &config.mail.password_file {
                        Some(p) => std::fs::read_to_string(p)
                            .map_err(|e| {
                                anyhow::anyhow!("mail.password_file {}: {e}", p.display())
                            })?
                            .trim()
                            .to_owned(),
                        None => String::new(),
                    };
                    b = b.credentials(lettre::transport::smtp::authentication::Credentials::new(
                        user.clone(),
                        password,
                    ));
                }
                let b = b.timeout(Some(std::time::Duration::from_secs(10)));
                Ok(Sender::Smtp(b.build()))
            }
            None => {
                let dir = config.mail_dir();
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("mail folder {}: {e}", dir.display()))?;
                Ok(Sender::Files(AsyncFileTransport::new(dir)))
            }
        }
    }

    /// Sends one outbox mail; `id` becomes its Message-ID, so a repeat after a crash is
    /// recognisably the same message.
    pub async fn send(&self, from: &str, id: &str, body: &Value) -> Result<(), String> {
        let field = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        let to: Mailbox = match field("toName") {
            "" => field("to").parse(),
            name => format!("{} <{}>", name.replace(['<', '>', '"', '\r', '\n'], ""), field("to"))
                .parse(),
        }
        .map_err(|e| format!("recipient `{}`: {e}", field("to")))?;
        let from: Mailbox = from.parse().map_err(|e| format!("sender `{from}`: {e}"))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(field("subject"))
            .message_id(Some(format!("<{id}@gatehouse>")))
            .header(header::ContentType::TEXT_PLAIN)
            .body(field("text").to_owned())
            .map_err(|e| format!("building the message: {e}"))?;
        match self {
            Sender::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| e.to_string()),
            Sender::Files(t) => t.send(message).await.map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_templates_render_and_typos_are_caught() {
        let t = Templates::load(None).unwrap();
        let vars = MailVars {
            recipient: "Megan Bowen".into(),
            requestor: "Adele Vance".into(),
            target: "Adele Vance".into(),
            package: "Internals Travelling".into(),
            deadline: "2026-12-10 09:00 (Europe/London)".into(),
            stage: 1,
            ..MailVars::default()
        };
        let (subject, body) = t.render(Template::ApprovalRequested, &vars).unwrap();
        assert_eq!(
            subject,
            "Action required: approve or deny Adele Vance's request for Internals Travelling"
        );
        assert!(body.contains("Please decide by 2026-12-10 09:00 (Europe/London)"), "{body}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("access-granted.txt"), "Subject: hi {{ recipent }}\nx")
            .unwrap();
        let err = Templates::load(Some(dir.path())).unwrap_err();
        assert!(err.contains("access-granted"), "{err}");
        std::fs::write(dir.path().join("access-granted.txt"), "no subject line").unwrap();
        assert!(Templates::load(Some(dir.path())).unwrap_err().contains("Subject"));
        std::fs::write(
            dir.path().join("access-granted.txt"),
            "Subject: Welcome to {{ package }}\nEnjoy, {{ recipient }}.",
        )
        .unwrap();
        let t = Templates::load(Some(dir.path())).unwrap();
        let (s, b) = t.render(Template::AccessGranted, &vars).unwrap();
        assert_eq!(
            (s.as_str(), b.as_str()),
            ("Welcome to Internals Travelling", "Enjoy, Megan Bowen.")
        );
    }
}
