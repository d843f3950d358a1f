//! Configuration: `gatehouse.toml` (optional), then `GATEHOUSE_*` environment variables, then
//! command-line flags, each overriding the one before. Validated once, at start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded SQLite database lives when no `database_url` is given.
    pub data_dir: PathBuf,
    /// `sqlite:PATH` or `postgres://…`; default `sqlite:{data_dir}/gatehouse.db`.
    pub database_url: Option<String>,
    /// The URL clients reach this server at, for `@odata.nextLink` and `@odata.context`;
    /// default `http://{listen}`.
    pub public_url: Option<String>,
    /// A MaxMind-format country database (GeoLite2-Country, DB-IP); none: countries unknown.
    pub geoip_database: Option<PathBuf>,
    /// Proxies whose `X-Forwarded-For` is believed. Empty: the connection's address is used.
    pub trusted_proxies: Vec<IpNet>,
    pub signin: SignInConfig,
    pub limits: Limits,
    pub governance: GovernanceConfig,
    pub mail: MailConfig,
    /// Set by `serve --test-clock` only (never from a file): serve `POST /test/clock`.
    #[serde(skip)]
    pub test_clock: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GovernanceConfig {
    /// The time zone assignment policies read dates in when they name none (IANA name).
    pub time_zone: String,
    /// A folder of mail templates overriding the built-in ones (`docs/governance.md`).
    pub mail_templates: Option<PathBuf>,
    /// Custom extensions may call `http://` endpoints on these hosts (tests, a sidecar);
    /// every other endpoint must be `https://`.
    pub insecure_webhook_hosts: Vec<String>,
    /// How often the worker looks for due work written by other nodes (it is woken at once for
    /// work written on this node, and at the exact instant work falls due).
    pub poll_millis: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `smtp://host:port` (plain, or STARTTLS when the server offers it) or
    /// `smtps://host:port` (TLS). Without it, mail is written as `.eml` files to `mail_dir`.
    pub smtp_url: Option<String>,
    pub username: Option<String>,
    /// A file holding the SMTP password (never the password itself in the config).
    pub password_file: Option<PathBuf>,
    /// The sender: `Gatehouse <gatehouse@example.com>`.
    pub from: String,
    /// Where mail goes when no SMTP server is configured; default `{data_dir}/mail`.
    pub mail_dir: Option<PathBuf>,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &self.smtp_url)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("from", &self.from)
            .field("mail_dir", &self.mail_dir)
            .finish()
    }
}

impl Default for GovernanceConfig {
    fn default() -> Self {
        GovernanceConfig {
            time_zone: "UTC".into(),
            mail_templates: None,
            insecure_webhook_hosts: Vec::new(),
            poll_millis: 1_000,
        }
    }
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_url: None,
            username: None,
            password_file: None,
            from: "Gatehouse <gatehouse@localhost>".into(),
            mail_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignInConfig {
    /// How long a sign-in session lasts (a TAP session ends sooner if the pass does).
    pub session_minutes: i64,
    /// How long an unfinished sign-in (between its steps) stays open.
    pub flow_minutes: i64,
    /// Failed attempts before a user is locked out from networks they have used before.
    pub lockout_threshold: u32,
    /// Failed attempts before a user is locked out from networks they have not used.
    pub lockout_unfamiliar_threshold: u32,
    /// The first lockout's length; each repeated lockout doubles it, up to an hour.
    pub lockout_seconds: i64,
    /// Sign-in attempts per second one IP address may make (burst: ten times as many).
    pub attempts_per_second_per_ip: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            public_url: None,
            geoip_database: None,
            trusted_proxies: Vec::new(),
            signin: SignInConfig::default(),
            limits: Limits::default(),
            governance: GovernanceConfig::default(),
            mail: MailConfig::default(),
            test_clock: false,
        }
    }
}

impl Default for SignInConfig {
    fn default() -> Self {
        SignInConfig {
            session_minutes: 8 * 60,
            flow_minutes: 10,
            lockout_threshold: 10,
            lockout_unfamiliar_threshold: 5,
            lockout_seconds: 60,
            attempts_per_second_per_ip: 10,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_body_bytes: gatehouse_policy::request::MAX_REQUEST_BYTES }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// Reads `path` if given (it must exist), else `./gatehouse.toml` if present, then the
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let default_path = Path::new("gatehouse.toml");
        let file = match path {
            Some(p) => Some(p),
            None if default_path.exists() => Some(default_path),
            None => None,
        };
        let mut config = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        config.overlay_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies `GATEHOUSE_*` variables; `get` is the environment (a map in tests).
    pub fn overlay_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("GATEHOUSE_LISTEN") {
            self.listen = v.parse().map_err(|e| ConfigError::Env {
                name: "GATEHOUSE_LISTEN",
                message: format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:8080)"),
            })?;
        }
        if let Some(v) = get("GATEHOUSE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("GATEHOUSE_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = get("GATEHOUSE_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = get("GATEHOUSE_GEOIP_DATABASE") {
            self.geoip_database = Some(PathBuf::from(v));
        }
        if let Some(v) = get("GATEHOUSE_SMTP_URL") {
            self.mail.smtp_url = Some(v);
        }
        if let Some(v) = get("GATEHOUSE_TIME_ZONE") {
            self.governance.time_zone = v;
        }
        if let Some(v) = get("GATEHOUSE_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|e| ConfigError::Env {
                            name: "GATEHOUSE_TRUSTED_PROXIES",
                            message: format!("{s:?}: {e}"),
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite:{}?mode=rwc", self.data_dir.join("gatehouse.db").display()),
        }
    }

    /// The default time zone of assignment policies, checked.
    pub fn time_zone(&self) -> Result<gatehouse_core::governance::duration::Zone, String> {
        gatehouse_core::governance::duration::Zone::named(&self.governance.time_zone)
            .map_err(|e| format!("governance.time_zone: {e}"))
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.mail.mail_dir.clone().unwrap_or_else(|| self.data_dir.join("mail"))
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_and_bad_values_are_named() {
        let mut c = Config::default();
        let env = |n: &str| match n {
            "GATEHOUSE_LISTEN" => Some("127.0.0.1:9999".to_owned()),
            "GATEHOUSE_TRUSTED_PROXIES" => Some("10.0.0.0/8, 127.0.0.1".to_owned()),
            _ => None,
        };
        c.overlay_env(env).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.trusted_proxies.len(), 2);
        let err = c.overlay_env(|n| (n == "GATEHOUSE_LISTEN").then(|| "nope".to_owned()));
        assert!(err.unwrap_err().to_string().contains("GATEHOUSE_LISTEN"));
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let r: Result<Config, _> = toml::from_str("listen = \"127.0.0.1:1\"\nlisten_port = 3\n");
        assert!(r.is_err());
    }
}
