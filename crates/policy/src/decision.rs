//! Combining the applying policies into one decision for the sign-in.
//!
//! Phase 1 (enabled and report-only) says which policies apply; phase 2 (enabled only)
//! enforces: any block wins; otherwise every applying policy's grant must be satisfied. A
//! report-only policy is logged and never changes the outcome.

use crate::evaluate::{Evaluation, Tri};
use crate::model::enums::*;
use crate::model::policy::*;
use crate::snapshot::{CompiledPolicy, Snapshot};

/// What has been proven so far in the sign-in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Authentication methods used in this session (password, TOTP, TAP, passkey…).
    pub methods: MethodSet,
    pub approved_client_app: bool,
    pub app_protection_policy: bool,
    pub password_changed: bool,
    pub accepted_terms_of_use: Vec<String>,
}

/// One control a policy asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Control {
    Mfa,
    AuthenticationStrength { id: String, display_name: String },
    CompliantDevice,
    DomainJoinedDevice,
    ApprovedApplication,
    CompliantApplication,
    PasswordChange,
    RiskRemediation,
    CompliantNetwork,
    TermsOfUse(String),
    CustomFactor(String),
    Unknown(String),
}

impl Control {
    /// Entra prompts in this order: MFA → compliant device → hybrid join → approved app →
    /// app protection → password change → terms of use → custom controls.
    fn rank(&self) -> u8 {
        match self {
            Control::Mfa | Control::AuthenticationStrength { .. } => 0,
            Control::CompliantDevice => 1,
            Control::DomainJoinedDevice => 2,
            Control::ApprovedApplication => 3,
            Control::CompliantApplication => 4,
            Control::PasswordChange | Control::RiskRemediation => 5,
            Control::TermsOfUse(_) => 6,
            Control::CompliantNetwork | Control::CustomFactor(_) | Control::Unknown(_) => 7,
        }
    }

    /// Controls the user satisfies by doing something (so report-only logs "interrupted").
    fn needs_user_action(&self) -> bool {
        matches!(
            self,
            Control::Mfa
                | Control::AuthenticationStrength { .. }
                | Control::PasswordChange
                | Control::RiskRemediation
                | Control::TermsOfUse(_)
                | Control::CustomFactor(_)
        )
    }

    /// The control in words, for people.
    pub fn describe(&self) -> String {
        match self {
            Control::Mfa => "multifactor authentication".into(),
            Control::AuthenticationStrength { display_name, .. } => {
                format!("the authentication strength \"{display_name}\"")
            }
            Control::CompliantDevice => "a compliant device".into(),
            Control::DomainJoinedDevice => "a hybrid-joined device".into(),
            Control::ApprovedApplication => "an approved client app".into(),
            Control::CompliantApplication => "an app protection policy".into(),
            Control::PasswordChange => "a password change".into(),
            Control::RiskRemediation => "risk remediation".into(),
            Control::CompliantNetwork => "a compliant network".into(),
            Control::TermsOfUse(id) => format!("accepting terms of use `{id}`"),
            Control::CustomFactor(id) => format!("the custom control `{id}`"),
            Control::Unknown(name) => format!("the unknown control `{name}`"),
        }
    }

    /// The sign-in log's words for the control (`enforcedGrantControls`).
    pub fn label(&self) -> String {
        match self {
            Control::Mfa => "Mfa".into(),
            Control::AuthenticationStrength { display_name, .. } => {
                format!("RequireAuthenticationStrength: {display_name}")
            }
            Control::CompliantDevice => "RequireCompliantDevice".into(),
            Control::DomainJoinedDevice => "RequireDomainJoinedDevice".into(),
            Control::ApprovedApplication => "RequireApprovedApp".into(),
            Control::CompliantApplication => "RequireCompliantApp".into(),
            Control::PasswordChange => "RequirePasswordChange".into(),
            Control::RiskRemediation => "RequireRiskRemediation".into(),
            Control::CompliantNetwork => "RequireCompliantNetwork".into(),
            Control::TermsOfUse(id) => format!("TermsOfUse: {id}"),
            Control::CustomFactor(id) => format!("CustomControl: {id}"),
            Control::Unknown(name) => name.clone(),
        }
    }
}

/// What a policy still needs: any one of `unmet` under OR, every one under AND. Borrowed from
/// the snapshot: deciding a sign-in copies no names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement<'s> {
    pub policy_id: &'s str,
    pub operator: GrantOperator,
    pub unmet: Vec<&'s Control>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'s> {
    /// An enabled applying policy blocks (error 53003 at sign-in).
    Blocked { policies: Vec<&'s str> },
    /// Every applying enabled policy's grant is satisfied.
    Granted,
    /// Satisfy all of these (each a policy's unmet controls) to be let in.
    ActionRequired { requirements: Vec<Requirement<'s>> },
}

/// Graph `appliedConditionalAccessPolicy.result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInResult {
    Success,
    Failure,
    NotApplied,
    NotEnabled,
    ReportOnlySuccess,
    ReportOnlyFailure,
    ReportOnlyNotApplied,
    ReportOnlyInterrupted,
}

impl SignInResult {
    pub fn graph_name(self) -> &'static str {
        match self {
            SignInResult::Success => "success",
            SignInResult::Failure => "failure",
            SignInResult::NotApplied => "notApplied",
            SignInResult::NotEnabled => "notEnabled",
            SignInResult::ReportOnlySuccess => "reportOnlySuccess",
            SignInResult::ReportOnlyFailure => "reportOnlyFailure",
            SignInResult::ReportOnlyNotApplied => "reportOnlyNotApplied",
            SignInResult::ReportOnlyInterrupted => "reportOnlyInterrupted",
        }
    }
}

/// One policy's line in the sign-in log: a view over the snapshot, built on demand so that a
/// decision does not copy every policy's name (most policies do not apply).
#[derive(Debug, Clone, Copy)]
pub struct AppliedPolicy<'s> {
    pub id: &'s str,
    pub display_name: &'s str,
    pub result: SignInResult,
    policy: &'s CompiledPolicy,
}

impl AppliedPolicy<'_> {
    fn applied(&self) -> bool {
        !matches!(
            self.result,
            SignInResult::NotApplied
                | SignInResult::ReportOnlyNotApplied
                | SignInResult::NotEnabled
        )
    }

    /// Graph `enforcedGrantControls`: what the policy asked for, when it applied.
    pub fn enforced_grant_controls(&self) -> Vec<String> {
        if !self.applied() {
            return Vec::new();
        }
        let block = self.policy.policy.grant.as_ref().is_some_and(GrantControls::blocks);
        block
            .then(|| "Block".to_owned())
            .into_iter()
            .chain(self.policy.controls.iter().map(Control::label))
            .collect()
    }

    /// Graph `enforcedSessionControls`.
    pub fn enforced_session_controls(&self) -> Vec<String> {
        if !self.applied() {
            return Vec::new();
        }
        session_labels(self.policy.policy.session.as_ref())
    }
}

/// Session controls merged across enabled applying policies: the strictest of each wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MergedSession {
    pub sign_in_frequency: Option<SignInFrequency>,
    pub persistent_browser: Option<PersistentBrowser>,
    pub application_enforced_restrictions: bool,
    pub cloud_app_security: Option<String>,
    pub disable_resilience_defaults: bool,
    pub continuous_access_evaluation: Option<String>,
    pub secure_sign_in_session: bool,
}

impl MergedSession {
    fn absorb(&mut self, s: &SessionControls) {
        self.sign_in_frequency = match (self.sign_in_frequency, s.sign_in_frequency) {
            (Some(SignInFrequency::EveryTime), _) | (_, Some(SignInFrequency::EveryTime)) => {
                Some(SignInFrequency::EveryTime)
            }
            (Some(SignInFrequency::Hours(a)), Some(SignInFrequency::Hours(b))) => {
                Some(SignInFrequency::Hours(a.min(b)))
            }
            (a, b) => a.or(b),
        };
        self.persistent_browser = match (self.persistent_browser, s.persistent_browser) {
            (Some(PersistentBrowser::Never), _) | (_, Some(PersistentBrowser::Never)) => {
                Some(PersistentBrowser::Never)
            }
            (a, b) => a.or(b),
        };
        self.application_enforced_restrictions |= s.application_enforced_restrictions;
        self.cloud_app_security =
            strictest_mcas(self.cloud_app_security.take(), s.cloud_app_security.clone());
        self.disable_resilience_defaults |= s.disable_resilience_defaults;
        self.continuous_access_evaluation =
            match (self.continuous_access_evaluation.take(), &s.continuous_access_evaluation) {
                // `strictEnforcement`/`strictLocation` beat `disabled`.
                (Some(a), Some(b)) if a.eq_ignore_ascii_case("disabled") => Some(b.clone()),
                (a, b) => a.or_else(|| b.clone()),
            };
        self.secure_sign_in_session |= s.secure_sign_in_session;
    }
}

fn strictest_mcas(a: Option<String>, b: Option<String>) -> Option<String> {
    let rank = |s: &str| match s {
        "blockDownloads" => 3,
        "mcasConfigured" => 2,
        "monitorOnly" => 1,
        _ => 0,
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if rank(&b) > rank(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The outcome of a sign-in: what to do, and what to log.
#[derive(Debug, Clone)]
pub struct Decision<'s> {
    pub outcome: Outcome<'s>,
    pub session: MergedSession,
    /// Every policy's sign-in-log result, in tenant order (see [`Decision::policies`]).
    pub results: Vec<SignInResult>,
    /// Policies whose applicability could not be decided (enforced as applying by `decide`,
    /// skipped by What-If).
    pub undetermined: Vec<&'s str>,
    snapshot: &'s Snapshot,
}

/// Two decisions are equal when they decide and log the same, whatever snapshot they came from.
impl PartialEq for Decision<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.outcome == other.outcome
            && self.session == other.session
            && self.results == other.results
            && self.undetermined == other.undetermined
    }
}

impl<'s> Decision<'s> {
    pub fn is_blocked(&self) -> bool {
        matches!(self.outcome, Outcome::Blocked { .. })
    }

    /// Every policy's sign-in-log entry, in tenant order.
    pub fn policies(&self) -> impl Iterator<Item = AppliedPolicy<'s>> + '_ {
        let snapshot = self.snapshot;
        snapshot.policies.iter().zip(&self.results).map(|(cp, r)| AppliedPolicy {
            id: &cp.policy.id,
            display_name: &cp.policy.display_name,
            result: *r,
            policy: cp,
        })
    }

    /// Graph `signIn.conditionalAccessStatus`.
    pub fn conditional_access_status(&self) -> &'static str {
        let any_enforced =
            self.results.iter().any(|r| matches!(r, SignInResult::Success | SignInResult::Failure));
        match &self.outcome {
            Outcome::Blocked { .. } | Outcome::ActionRequired { .. } => "failure",
            Outcome::Granted if any_enforced => "success",
            Outcome::Granted => "notApplied",
        }
    }
}

/// What to do with a policy whose applicability could not be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknowns {
    /// Live sign-ins: enforce it as if it applied (fail closed).
    Enforce,
    /// What-If: it does not apply (`policyApplies: false`); it is listed as undetermined.
    Skip,
}

impl<'s> Evaluation<'s> {
    /// Combines the applying policies with what the sign-in has proven so far, failing closed
    /// on policies that cannot be decided (the live sign-in rule).
    pub fn decide(&self, auth: &AuthState) -> Decision<'s> {
        self.decide_with(auth, Unknowns::Enforce)
    }

    pub fn decide_with(&self, auth: &AuthState, unknowns: Unknowns) -> Decision<'s> {
        let snapshot = self.snapshot;
        let satisfied = |cp: &CompiledPolicy, c: &Control| -> bool {
            match c {
                Control::Mfa => snapshot.mfa_strength.is_satisfied_by(auth.methods),
                // Resolved when the snapshot was compiled; an unknown strength is never met.
                Control::AuthenticationStrength { .. } => {
                    cp.strength.iter().any(|combo| auth.methods.contains_all(*combo))
                }
                Control::CompliantDevice => self.device_compliant,
                Control::DomainJoinedDevice => self.device_domain_joined,
                Control::ApprovedApplication => auth.approved_client_app,
                Control::CompliantApplication => auth.app_protection_policy,
                Control::PasswordChange | Control::RiskRemediation => auth.password_changed,
                Control::TermsOfUse(id) => {
                    auth.accepted_terms_of_use.iter().any(|t| t.eq_ignore_ascii_case(id))
                }
                Control::CompliantNetwork | Control::CustomFactor(_) | Control::Unknown(_) => false,
            }
        };

        let mut blocked_by = Vec::new();
        let mut requirements = Vec::new();
        let mut session = MergedSession::default();
        let mut undetermined = Vec::new();
        let mut results = Vec::with_capacity(self.results.len());

        for (cp, a) in self.compiled() {
            let p = &cp.policy;
            let enforced = p.state == PolicyState::Enabled;
            if p.state == PolicyState::Disabled {
                results.push(SignInResult::NotEnabled);
                continue;
            }
            if a.applies == Tri::Unknown {
                undetermined.push(p.id.as_str());
            }
            if a.applies == Tri::No || (a.applies == Tri::Unknown && unknowns == Unknowns::Skip) {
                results.push(if enforced {
                    SignInResult::NotApplied
                } else {
                    SignInResult::ReportOnlyNotApplied
                });
                continue;
            }
            let controls = &cp.controls;
            let blocks = p.grant.as_ref().is_some_and(GrantControls::blocks);
            let operator = p.grant.as_ref().map_or(GrantOperator::Or, |g| g.operator);
            let unmet = || controls.iter().filter(|c| !satisfied(cp, c));
            let unmet_count = unmet().count();
            let grant_met = match operator {
                _ if controls.is_empty() => true,
                GrantOperator::And => unmet_count == 0,
                GrantOperator::Or => unmet_count < controls.len(),
            };
            let result = match (enforced, blocks, grant_met) {
                (true, true, _) => SignInResult::Failure,
                (true, false, true) => SignInResult::Success,
                (true, false, false) => SignInResult::Failure,
                (false, true, _) => SignInResult::ReportOnlyFailure,
                (false, false, true) => SignInResult::ReportOnlySuccess,
                (false, false, false) if unmet().any(Control::needs_user_action) => {
                    SignInResult::ReportOnlyInterrupted
                }
                (false, false, false) => SignInResult::ReportOnlyFailure,
            };
            results.push(result);
            if !enforced {
                continue;
            }
            if blocks {
                blocked_by.push(p.id.as_str());
            } else if !grant_met {
                let unmet = match operator {
                    // Under OR any one control will do, so offer them all.
                    GrantOperator::Or => controls.iter().collect(),
                    GrantOperator::And => unmet().collect(),
                };
                requirements.push(Requirement { policy_id: &p.id, operator, unmet });
            }
            if let Some(s) = &p.session {
                session.absorb(s);
            }
        }

        let outcome = if !blocked_by.is_empty() {
            Outcome::Blocked { policies: blocked_by }
        } else if !requirements.is_empty() {
            requirements.sort_by_key(|r| r.unmet.iter().map(|c| c.rank()).min().unwrap_or(u8::MAX));
            Outcome::ActionRequired { requirements }
        } else {
            Outcome::Granted
        };
        Decision { outcome, session, results, undetermined, snapshot }
    }
}

/// A policy's grant as a list of controls (block is handled separately: it is not a control
/// anyone can satisfy). Computed once, when the snapshot is compiled.
pub(crate) fn controls_of(
    policy: &Policy,
    strength: Option<&crate::model::strength::AuthenticationStrength>,
) -> Vec<Control> {
    let Some(g) = &policy.grant else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in &g.built_in {
        out.push(match c {
            BuiltInControl::Block => continue,
            BuiltInControl::Mfa => Control::Mfa,
            BuiltInControl::CompliantDevice => Control::CompliantDevice,
            BuiltInControl::DomainJoinedDevice => Control::DomainJoinedDevice,
            BuiltInControl::ApprovedApplication => Control::ApprovedApplication,
            BuiltInControl::CompliantApplication => Control::CompliantApplication,
            BuiltInControl::PasswordChange => Control::PasswordChange,
            BuiltInControl::RiskRemediation => Control::RiskRemediation,
            BuiltInControl::CompliantNetwork => Control::CompliantNetwork,
            BuiltInControl::Other(name) => Control::Unknown(name.clone()),
        });
    }
    if let Some(r) = &g.authentication_strength {
        let display_name = strength.map(|s| s.display_name.clone()).unwrap_or_else(|| r.id.clone());
        out.push(Control::AuthenticationStrength { id: r.id.clone(), display_name });
    }
    out.extend(g.terms_of_use.iter().cloned().map(Control::TermsOfUse));
    out.extend(g.custom_factors.iter().cloned().map(Control::CustomFactor));
    out
}

fn session_labels(s: Option<&SessionControls>) -> Vec<String> {
    let Some(s) = s else { return Vec::new() };
    let mut out = Vec::new();
    if s.application_enforced_restrictions {
        out.push("AppEnforcedRestrictions".to_owned());
    }
    if s.cloud_app_security.is_some() {
        out.push("CloudAppSecurity".to_owned());
    }
    if s.sign_in_frequency.is_some() {
        out.push("SignInFrequency".to_owned());
    }
    if s.persistent_browser.is_some() {
        out.push("PersistentBrowserSessionMode".to_owned());
    }
    if s.continuous_access_evaluation.is_some() {
        out.push("ContinuousAccessEvaluation".to_owned());
    }
    if s.secure_sign_in_session {
        out.push("SecureSignInSession".to_owned());
    }
    out
}
