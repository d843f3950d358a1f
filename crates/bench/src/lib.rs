//! Conditional Access evaluation benchmark (issue 2): Gatehouse against Cedar on one large,
//! generated tenant.
//!
//! - [`generate`] builds a tenant export (10,000 nested groups, 195 corpus-shaped policies…) and
//!   What-If request bodies, deterministically from a seed, as Graph JSON documents;
//! - [`Fixture::build`] loads them with the real loader, compiles the Gatehouse snapshot, and
//!   translates the same tenant to Cedar ([`cedar`]);
//! - [`Fixture::check_agreement`] is the differential check: for every request, the policies
//!   Gatehouse says apply are exactly the Cedar permits that are satisfied.
//!
//! `benches/evaluate.rs` times both engines on the fixture; `docs/benchmarks.md` has the figures.

pub mod cedar;
mod device_rule;
pub mod generate;
pub mod rng;

use std::collections::BTreeSet;

use cedar_policy::Authorizer;
use gatehouse_policy::model::enums::{MethodMode, PolicyState};
use gatehouse_policy::{AuthState, MethodSet, SignInRequest, Snapshot, Tenant, Tri};

pub use cedar::{CedarTenant, to_cedar};
pub use generate::{Config, Generated, Summary, generate};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Everything both engines need, built outside any timed loop.
pub struct Fixture {
    pub config: Config,
    pub summary: Summary,
    pub tenant: Tenant,
    pub snapshot: Snapshot,
    /// The generated Graph evaluate bodies.
    pub bodies: Vec<serde_json::Value>,
    /// Parsed with `SignInRequest::from_json` from `bodies`.
    pub requests: Vec<SignInRequest>,
    /// What the sign-in has proven so far, for `Evaluation::decide` (one per request).
    pub auth: Vec<AuthState>,
    pub cedar: CedarTenant,
    /// The same requests for Cedar, contexts included.
    pub cedar_requests: Vec<cedar_policy::Request>,
}

/// A request on which the engines disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub request: usize,
    pub only_gatehouse: Vec<String>,
    pub only_cedar: Vec<String>,
}

/// The outcome of the differential check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agreement {
    pub requests: usize,
    /// How many policies apply, per request.
    pub per_request: Vec<usize>,
    pub mismatches: Vec<Mismatch>,
}

impl Fixture {
    /// Generates, loads, compiles and translates.
    pub fn build(config: &Config) -> Result<Fixture> {
        let generated = generate(config);
        let loaded = gatehouse_policy::load(&generated.files).map_err(|e| e.to_string())?;
        let tenant = loaded.tenant;
        let snapshot = Snapshot::compile(&tenant);
        let requests = generated
            .requests
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SignInRequest::from_json(body).map_err(|e| format!("request {i}: {e:?}").into())
            })
            .collect::<Result<Vec<_>>>()?;
        let cedar = to_cedar(&tenant)?;
        let cedar_requests = requests
            .iter()
            .enumerate()
            .map(|(i, r)| cedar::request(r).map_err(|e| format!("request {i}: {e}").into()))
            .collect::<Result<Vec<_>>>()?;
        let auth = (0..requests.len()).map(auth_state).collect();
        Ok(Fixture {
            config: *config,
            summary: generated.summary,
            tenant,
            snapshot,
            bodies: generated.requests,
            requests,
            auth,
            cedar,
            cedar_requests,
        })
    }

    /// Ids of the enabled and report-only policies Gatehouse applies to request `i`. An
    /// undecided policy (`notEnoughInformation`) is an error: the bench requests supply every
    /// condition.
    pub fn gatehouse_applying(&self, i: usize) -> Result<BTreeSet<String>> {
        let request = self.requests.get(i).ok_or("no such request")?;
        let evaluation = self.snapshot.evaluate(request);
        let undecided: Vec<&str> = evaluation
            .policies()
            .filter(|(_, a)| a.applies == Tri::Unknown)
            .map(|(p, _)| p.id.as_str())
            .collect();
        if !undecided.is_empty() {
            return Err(format!("request {i}: notEnoughInformation for {undecided:?}").into());
        }
        let disabled: BTreeSet<&str> = self
            .tenant
            .policies
            .iter()
            .filter(|p| p.state == PolicyState::Disabled)
            .map(|p| p.id.as_str())
            .collect();
        Ok(evaluation
            .applying_ids()
            .into_iter()
            .filter(|id| !disabled.contains(id))
            .map(str::to_owned)
            .collect())
    }

    /// Ids of the Cedar permits satisfied by request `i`. A policy that errors is a bug in the
    /// translation, so it is reported as an error.
    pub fn cedar_applying(&self, i: usize) -> Result<BTreeSet<String>> {
        let request = self.cedar_requests.get(i).ok_or("no such request")?;
        let response =
            Authorizer::new().is_authorized(request, &self.cedar.policies, &self.cedar.entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            return Err(format!("request {i}: Cedar evaluation errors: {errors:?}").into());
        }
        Ok(response.diagnostics().reason().map(ToString::to_string).collect())
    }

    /// Compares the two engines on every request.
    pub fn check_agreement(&self) -> Result<Agreement> {
        let mut out = Agreement { requests: self.requests.len(), ..Agreement::default() };
        for i in 0..self.requests.len() {
            let g = self.gatehouse_applying(i)?;
            let c = self.cedar_applying(i)?;
            out.per_request.push(g.len());
            if g != c {
                out.mismatches.push(Mismatch {
                    request: i,
                    only_gatehouse: g.difference(&c).cloned().collect(),
                    only_cedar: c.difference(&g).cloned().collect(),
                });
            }
        }
        Ok(out)
    }

    /// How many groups `user_id` belongs to, directly or through nesting (from Cedar's
    /// transitive closure).
    pub fn transitive_groups(&self, user_id: &str) -> usize {
        let Ok(uid) = format!("User::{}", cedar::lit(user_id)).parse::<cedar_policy::EntityUid>()
        else {
            return 0;
        };
        self.cedar
            .entities
            .ancestors(&uid)
            .map_or(0, |a| a.filter(|p| p.type_name().basename() == "Group").count())
    }

    /// A readable account of a mismatch: the request and the policies concerned.
    pub fn explain(&self, m: &Mismatch) -> String {
        let name = |id: &String| {
            let p = self.tenant.policies.iter().find(|p| &p.id == id);
            format!(
                "{id} {:?}\n      {}",
                p.map(|p| p.display_name.as_str()).unwrap_or("?"),
                p.map(|p| serde_json::Value::Object(p.raw.clone()).to_string()).unwrap_or_default()
            )
        };
        let mut s = format!("request {}: {:?}\n", m.request, self.requests.get(m.request));
        for id in &m.only_gatehouse {
            s.push_str(&format!("  only Gatehouse applies {}\n", name(id)));
        }
        for id in &m.only_cedar {
            s.push_str(&format!("  only Cedar applies {}\n", name(id)));
        }
        s
    }
}

/// The methods used so far, cycling over four common states (password only, password +
/// Authenticator push, FIDO2 passkey, password + SMS).
pub fn auth_state(i: usize) -> AuthState {
    let methods = match i % 4 {
        0 => MethodSet::of(&[MethodMode::Password]),
        1 => MethodSet::of(&[MethodMode::Password, MethodMode::MicrosoftAuthenticatorPush]),
        2 => MethodSet::of(&[MethodMode::Fido2]),
        _ => MethodSet::of(&[MethodMode::Password, MethodMode::Sms]),
    };
    AuthState { methods, ..AuthState::default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use generate::{GROUP_LEVELS, POLICY_COUNT};

    #[test]
    fn the_generator_is_deterministic() {
        let a = generate(&Config::small());
        let b = generate(&Config::small());
        assert_eq!(a.requests, b.requests);
        assert_eq!(
            a.files.iter().map(|f| &f.bytes).collect::<Vec<_>>(),
            b.files.iter().map(|f| &f.bytes).collect::<Vec<_>>()
        );
    }

    /// The differential test: on every request, Gatehouse's applying set equals the set of
    /// satisfied Cedar permits.
    #[test]
    fn gatehouse_and_cedar_agree_on_every_request() {
        let config = Config::small();
        let f = Fixture::build(&config).unwrap();

        // The tenant has the advertised shape.
        assert_eq!(f.summary.groups, config.groups);
        assert!(f.summary.group_levels.iter().all(|n| *n > 0));
        assert_eq!(f.summary.group_levels.len(), GROUP_LEVELS);
        assert_eq!(f.summary.bench_user_direct_groups, config.bench_user_groups);
        assert_eq!(f.tenant.policies.len(), POLICY_COUNT);
        assert_eq!(f.snapshot.policy_count(), POLICY_COUNT);
        assert!(f.summary.policies_disabled > 0 && f.summary.policies_report_only > 0);
        assert_eq!(f.cedar.translated.len(), POLICY_COUNT - f.summary.policies_disabled);
        assert_eq!(f.requests.len(), config.requests);

        let agreement = f.check_agreement().unwrap();
        let report: Vec<String> = agreement.mismatches.iter().map(|m| f.explain(m)).collect();
        assert!(
            agreement.mismatches.is_empty(),
            "{} of {} requests disagree:\n{}",
            agreement.mismatches.len(),
            agreement.requests,
            report.join("\n")
        );
        // A meaningful mix: some sign-ins hit many policies, some none.
        let most = agreement.per_request.iter().max().copied().unwrap_or(0);
        let none = agreement.per_request.iter().filter(|n| **n == 0).count();
        assert!(most >= 10, "busiest request applies only {most} policies");
        assert!(none >= 1 && none < config.requests / 2, "{none} requests apply nothing");
    }
}
