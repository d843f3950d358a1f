//! Authentication strengths: which combinations of methods satisfy a grant.

use super::enums::{METHOD_MODES, MethodSet};
use crate::json::{FieldError, FieldResult, Obj, enum_value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationStrength {
    pub id: String,
    pub display_name: String,
    pub built_in: bool,
    /// Each combination is a set of methods that must all have been used.
    pub combinations: Vec<MethodSet>,
    /// The original comma-joined spellings, for output.
    pub combination_names: Vec<String>,
    /// The object as read (empty for built-ins), so export and the API return it unchanged.
    pub raw: serde_json::Map<String, serde_json::Value>,
}

impl AuthenticationStrength {
    /// A strength is met when the methods used include every method of one combination.
    pub fn is_satisfied_by(&self, used: MethodSet) -> bool {
        self.combinations.iter().any(|c| used.contains_all(*c))
    }
}

pub const MFA_STRENGTH_ID: &str = "00000000-0000-0000-0000-000000000002";
pub const PASSWORDLESS_STRENGTH_ID: &str = "00000000-0000-0000-0000-000000000003";
pub const PHISHING_RESISTANT_STRENGTH_ID: &str = "00000000-0000-0000-0000-000000000004";

/// The built-in strengths, pinned to the lists Graph published in 2025 (they drift over time;
/// see docs/conditional-access.md). TAP is in the MFA strength only.
const BUILT_IN: &[(&str, &str, &[&str])] = &[
    (
        MFA_STRENGTH_ID,
        "Multifactor authentication",
        &[
            "windowsHelloForBusiness",
            "fido2",
            "x509CertificateMultiFactor",
            "deviceBasedPush",
            "temporaryAccessPassOneTime",
            "temporaryAccessPassMultiUse",
            "password,microsoftAuthenticatorPush",
            "password,softwareOath",
            "password,hardwareOath",
            "password,x509CertificateSingleFactor",
            "password,x509CertificateMultiFactor",
            "password,sms",
            "password,voice",
            "federatedMultiFactor",
            "microsoftAuthenticatorPush,federatedSingleFactor",
            "softwareOath,federatedSingleFactor",
            "hardwareOath,federatedSingleFactor",
            "sms,federatedSingleFactor",
            "voice,federatedSingleFactor",
        ],
    ),
    (
        PASSWORDLESS_STRENGTH_ID,
        "Passwordless MFA",
        &["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor", "deviceBasedPush"],
    ),
    (
        PHISHING_RESISTANT_STRENGTH_ID,
        "Phishing-resistant MFA",
        &["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"],
    ),
];

pub fn built_in_strengths() -> Vec<AuthenticationStrength> {
    BUILT_IN
        .iter()
        .map(|(id, name, combos)| {
            let combinations =
                combos.iter().map(|c| parse_combination(c).unwrap_or_default()).collect();
            AuthenticationStrength {
                id: (*id).to_owned(),
                display_name: (*name).to_owned(),
                built_in: true,
                combinations,
                combination_names: combos.iter().map(|c| (*c).to_owned()).collect(),
                raw: serde_json::Map::new(),
            }
        })
        .collect()
}

fn parse_combination(raw: &str) -> Option<MethodSet> {
    let mut set = MethodSet::default();
    for part in raw.split(',').map(str::trim) {
        let (_, m) = METHOD_MODES.iter().find(|(n, _)| n.eq_ignore_ascii_case(part))?;
        set = set.with(*m);
    }
    (!set.is_empty()).then_some(set)
}

/// Reads an `authenticationStrengthPolicy` object.
pub fn parse_strength(o: Obj<'_>, id: String) -> FieldResult<AuthenticationStrength> {
    let path = o.path.key("allowedCombinations");
    let names = o.strings("allowedCombinations")?;
    let mut combinations = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        for part in name.split(',') {
            enum_value(part, METHOD_MODES, &path.index(i), "authentication method mode")?;
        }
        combinations.push(
            parse_combination(name)
                .ok_or_else(|| FieldError::new(&path.index(i), "empty method combination"))?,
        );
    }
    let built_in = o.string("policyType")?.is_some_and(|t| t.eq_ignore_ascii_case("builtIn"));
    Ok(AuthenticationStrength {
        id,
        display_name: o.string("displayName")?.unwrap_or_default().to_owned(),
        built_in,
        combinations,
        combination_names: names.iter().map(|s| (*s).to_owned()).collect(),
        raw: o.map.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::enums::MethodMode::*;

    fn strength(id: &str) -> AuthenticationStrength {
        built_in_strengths().into_iter().find(|s| s.id == id).unwrap()
    }

    #[test]
    fn tap_satisfies_the_mfa_strength_only() {
        for tap in [TemporaryAccessPassOneTime, TemporaryAccessPassMultiUse] {
            let used = MethodSet::of(&[tap]);
            assert!(strength(MFA_STRENGTH_ID).is_satisfied_by(used));
            assert!(!strength(PASSWORDLESS_STRENGTH_ID).is_satisfied_by(used));
            assert!(!strength(PHISHING_RESISTANT_STRENGTH_ID).is_satisfied_by(used));
        }
    }

    #[test]
    fn a_password_alone_is_never_mfa_and_password_plus_totp_is() {
        assert!(!strength(MFA_STRENGTH_ID).is_satisfied_by(MethodSet::of(&[Password])));
        assert!(
            strength(MFA_STRENGTH_ID).is_satisfied_by(MethodSet::of(&[Password, SoftwareOath]))
        );
        assert!(
            !strength(PHISHING_RESISTANT_STRENGTH_ID)
                .is_satisfied_by(MethodSet::of(&[Password, SoftwareOath]))
        );
        assert!(strength(PHISHING_RESISTANT_STRENGTH_ID).is_satisfied_by(MethodSet::of(&[Fido2])));
    }
}
