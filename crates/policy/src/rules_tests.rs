//! One test per documented rule (docs/conditional-access.md cites the same rules).

use serde_json::{Value, json};

use crate::decision::{AuthState, Control, Outcome, SignInResult};
use crate::evaluate::{Reason, Tri};
use crate::model::enums::{MethodMode, MethodSet};
use crate::request::SignInRequest;
use crate::snapshot::Snapshot;
use crate::tenant::{SourceFile, load};

const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const GUEST: &str = "a0000000-0000-4000-8000-000000000002";
const MEMBER_B2B: &str = "a0000000-0000-4000-8000-000000000003";
const INVITED_GUEST: &str = "a0000000-0000-4000-8000-000000000004";
const ADMIN: &str = "a0000000-0000-4000-8000-000000000005";
const SCOPED_ADMIN: &str = "a0000000-0000-4000-8000-000000000006";
const OUTER: &str = "b0000000-0000-4000-8000-000000000001";
const MIDDLE: &str = "b0000000-0000-4000-8000-000000000002";
const INNER: &str = "b0000000-0000-4000-8000-000000000003";
const ADMINS_GROUP: &str = "b0000000-0000-4000-8000-000000000004";
const GLOBAL_ADMIN: &str = "62e90394-69f5-4237-9190-012177145e10";
const SHAREPOINT: &str = "00000003-0000-0ff1-ce00-000000000000";
const OTHER_APP: &str = "11111111-1111-4111-8111-111111111111";
const HQ: &str = "c0000000-0000-4000-8000-000000000001";
const FR: &str = "c0000000-0000-4000-8000-000000000002";
const UNKNOWN_OK: &str = "c0000000-0000-4000-8000-000000000003";

fn directory() -> Vec<Value> {
    vec![
        json!({"@odata.type": "#microsoft.graph.user", "id": ADELE, "userType": "Member"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": GUEST, "userType": "Guest"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": MEMBER_B2B, "userType": "Member", "externalUserState": "Accepted"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": INVITED_GUEST, "userType": "Guest", "creationType": "Invitation"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": ADMIN, "userType": "Member"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": SCOPED_ADMIN, "userType": "Member"}),
        // OUTER ⊃ MIDDLE ⊃ INNER ⊃ Adele, and INNER ⊃ OUTER (a cycle, which must be harmless).
        json!({"@odata.type": "#microsoft.graph.group", "id": OUTER, "members": [{"id": MIDDLE}]}),
        json!({"@odata.type": "#microsoft.graph.group", "id": MIDDLE, "members": [{"id": INNER}]}),
        json!({"@odata.type": "#microsoft.graph.group", "id": INNER, "members": [{"id": ADELE}, {"id": OUTER}]}),
        json!({"@odata.type": "#microsoft.graph.group", "id": ADMINS_GROUP, "members": [{"id": ADMIN}]}),
        json!({"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": ADMINS_GROUP, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/"}),
        json!({"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "principalId": SCOPED_ADMIN, "roleDefinitionId": GLOBAL_ADMIN, "directoryScopeId": "/administrativeUnits/x"}),
        json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "id": HQ, "displayName": "HQ", "isTrusted": true,
               "ipRanges": [{"cidrAddress": "203.0.113.0/24"}, {"@odata.type": "#microsoft.graph.iPv6CidrRange", "cidrAddress": "2001:db8:1000::/48"}]}),
        json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "id": FR, "displayName": "FR", "countriesAndRegions": ["FR"]}),
        json!({"@odata.type": "#microsoft.graph.countryNamedLocation", "id": UNKNOWN_OK, "displayName": "Unknown", "countriesAndRegions": ["GB"], "includeUnknownCountriesAndRegions": true}),
    ]
}

/// A policy over all users and apps with `grant`; `conditions` overrides parts of the default.
fn policy(id: &str, state: &str, conditions: Value, grant: Value) -> Value {
    let mut c = json!({
        "users": {"includeUsers": ["All"]},
        "applications": {"includeApplications": ["All"]},
        "clientAppTypes": ["all"],
    });
    if let (Some(base), Value::Object(extra)) = (c.as_object_mut(), conditions) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
    json!({"@odata.type": "#microsoft.graph.conditionalAccessPolicy", "id": id, "displayName": id,
           "state": state, "conditions": c, "grantControls": grant})
}

fn mfa() -> Value {
    json!({"operator": "OR", "builtInControls": ["mfa"]})
}

fn block() -> Value {
    json!({"operator": "OR", "builtInControls": ["block"]})
}

fn snapshot(policies: Vec<Value>) -> Snapshot {
    let mut objects = directory();
    objects.extend(policies);
    let doc = json!({"value": objects});
    let loaded = load(&[SourceFile { name: "t.json".into(), bytes: doc.to_string().into_bytes() }])
        .unwrap_or_else(|e| panic!("tenant should load: {e}"));
    Snapshot::compile(&loaded.tenant)
}

/// A fully specified sign-in to `app` by `user`; `conditions` overrides fields.
fn request(user: &str, app: &str, conditions: Value) -> SignInRequest {
    let mut c = json!({"devicePlatform": "windows", "clientAppType": "browser", "country": "GB",
        "ipAddress": "81.2.69.160", "signInRiskLevel": "none", "userRiskLevel": "none",
        "insiderRiskLevel": "none", "servicePrincipalRiskLevel": "none", "deviceInfo": {}});
    if let (Some(base), Value::Object(extra)) = (c.as_object_mut(), conditions) {
        for (k, v) in extra {
            if v.is_null() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
    }
    SignInRequest::from_json(&json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [app]},
        "signInConditions": c,
    }))
    .unwrap_or_else(|e| panic!("request should parse: {}: {}", e.path, e.message))
}

fn applies(s: &Snapshot, r: &SignInRequest) -> (Tri, Reason) {
    let e = s.evaluate(r);
    let a = e.results[0];
    (a.applies, a.reason)
}

fn one(conditions: Value) -> Snapshot {
    snapshot(vec![policy("p", "enabled", conditions, mfa())])
}

#[test]
fn all_users_includes_guests_and_exclusion_beats_inclusion() {
    let s = one(json!({"users": {"includeUsers": ["All"], "excludeUsers": [ADELE]}}));
    assert_eq!(applies(&s, &request(GUEST, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))), (Tri::No, Reason::Users));
    let s = one(json!({"users": {"includeUsers": [ADELE], "excludeGroups": [OUTER]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
}

#[test]
fn nested_groups_count_and_cycles_are_harmless() {
    let s = one(json!({"users": {"includeGroups": [OUTER]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADMIN, SHAREPOINT, json!({}))), (Tri::No, Reason::Users));
}

#[test]
fn guest_types_are_classified_from_user_type_and_external_marks() {
    let with = |types: &str| {
        one(
            json!({"users": {"includeGuestsOrExternalUsers": {"guestOrExternalUserTypes": types, "externalTenants": {"membershipKind": "all"}}}}),
        )
    };
    let s = with("internalGuest");
    assert_eq!(applies(&s, &request(GUEST, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(INVITED_GUEST, SHAREPOINT, json!({}))).0, Tri::No);
    let s = with("b2bCollaborationGuest");
    assert_eq!(applies(&s, &request(INVITED_GUEST, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(MEMBER_B2B, SHAREPOINT, json!({}))).0, Tri::No);
    // PascalCase, as some tools write it.
    let s = with("B2bCollaborationMember");
    assert_eq!(applies(&s, &request(MEMBER_B2B, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
    // The legacy special value covers every external type.
    let s = one(json!({"users": {"includeUsers": ["GuestsOrExternalUsers"]}}));
    for u in [GUEST, INVITED_GUEST, MEMBER_B2B] {
        assert_eq!(applies(&s, &request(u, SHAREPOINT, json!({}))).0, Tri::Yes);
    }
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
}

#[test]
fn enumerated_external_tenants_need_the_home_tenant() {
    let s = one(
        json!({"users": {"includeGuestsOrExternalUsers": {"guestOrExternalUserTypes": "b2bCollaborationGuest",
        "externalTenants": {"@odata.type": "#microsoft.graph.conditionalAccessEnumeratedExternalTenants", "membershipKind": "enumerated", "members": ["T1"]}}}}),
    );
    assert_eq!(
        applies(&s, &request(INVITED_GUEST, SHAREPOINT, json!({}))),
        (Tri::Unknown, Reason::NotEnoughInformation)
    );
    let mut r = request(INVITED_GUEST, SHAREPOINT, json!({}));
    r.identity = crate::request::Identity::User {
        user_id: INVITED_GUEST.into(),
        external_tenant_id: Some("t1".into()),
        external_user_type: None,
    };
    assert_eq!(applies(&s, &r).0, Tri::Yes);
}

#[test]
fn only_tenant_wide_role_assignments_count_including_through_groups() {
    let s = one(json!({"users": {"includeRoles": [GLOBAL_ADMIN]}}));
    assert_eq!(applies(&s, &request(ADMIN, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(SCOPED_ADMIN, SHAREPOINT, json!({}))).0, Tri::No);
}

#[test]
fn none_matches_nobody_and_unknown_users_are_plain_members() {
    let s = one(json!({"users": {"includeUsers": ["None"]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
    let s =
        one(json!({"users": {"includeUsers": ["All"], "excludeUsers": ["GuestsOrExternalUsers"]}}));
    let r = request("99999999-0000-4000-8000-000000000000", SHAREPOINT, json!({}));
    let e = s.evaluate(&r);
    assert_eq!(e.results[0].applies, Tri::Yes);
    assert_eq!(e.notices.len(), 1);
}

#[test]
fn office365_suite_matches_its_members_and_all_excludes_user_actions() {
    let s = one(json!({"applications": {"includeApplications": ["Office365"]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, OTHER_APP, json!({}))), (Tri::No, Reason::Application));
    // A suite name given as the request's app matches nothing (it is not an app id).
    assert_eq!(applies(&s, &request(ADELE, "Office365", json!({}))).0, Tri::No);
    let s = one(
        json!({"applications": {"includeApplications": ["All"], "excludeApplications": ["Office365"]}}),
    );
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
    assert_eq!(applies(&s, &request(ADELE, OTHER_APP, json!({}))).0, Tri::Yes);

    let action = SignInRequest::from_json(&json!({
        "signInIdentity": {"userId": ADELE},
        "signInContext": {"@odata.type": "#microsoft.graph.userActionContext", "userAction": "registerSecurityInformation"},
        "signInConditions": {}
    }))
    .unwrap();
    assert_eq!(applies(&s, &action), (Tri::No, Reason::UserActions));
    let s = one(
        json!({"applications": {"includeApplications": [], "includeUserActions": ["urn:user:registersecurityinfo"]}}),
    );
    assert_eq!(applies(&s, &action).0, Tri::Yes);
}

#[test]
fn authentication_contexts_are_their_own_target() {
    let s = one(json!({"applications": {"includeAuthenticationContextClassReferences": ["c1"]}}));
    let r = |ctx: &str| {
        SignInRequest::from_json(&json!({
        "signInIdentity": {"userId": ADELE},
        "signInContext": {"@odata.type": "#microsoft.graph.authContext", "authenticationContextValue": ctx},
        "signInConditions": {}
    })).unwrap()
    };
    assert_eq!(applies(&s, &r("C1")).0, Tri::Yes);
    assert_eq!(applies(&s, &r("c2")), (Tri::No, Reason::AuthenticationContext));
}

#[test]
fn locations_ipv4_ipv6_trusted_country_and_unknown_country() {
    let s = one(
        json!({"locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}}),
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": "203.0.113.9"}))),
        (Tri::No, Reason::Location)
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": "2001:db8:1000::5"}))).0,
        Tri::No
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": "2001:db8:2000::5"}))).0,
        Tri::Yes
    );
    // Without an IP address, whether the sign-in is at a trusted location is unknown.
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": null}))).0,
        Tri::Unknown
    );
    // `All` needs no information at all.
    let s = one(json!({"locations": {"includeLocations": ["All"]}}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": null, "country": null}))).0,
        Tri::Yes
    );

    let s = one(json!({"locations": {"includeLocations": [FR]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({"country": "fr"}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({"country": "GB"}))).0, Tri::No);
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"country": null}))),
        (Tri::Unknown, Reason::NotEnoughInformation)
    );

    // A sign-in whose address maps to no country is inside a location that includes unknowns.
    let s = one(json!({"locations": {"includeLocations": [UNKNOWN_OK]}}));
    let mut r = request(ADELE, SHAREPOINT, json!({}));
    r.conditions.country = Some(None);
    assert_eq!(applies(&s, &r).0, Tri::Yes);
    let s = one(json!({"locations": {"includeLocations": [FR]}}));
    assert_eq!(applies(&s, &r).0, Tri::No);
}

#[test]
fn a_deleted_location_in_an_exclusion_excludes_nothing() {
    let s = one(
        json!({"locations": {"includeLocations": ["All"], "excludeLocations": ["deadbeef-0000-4000-8000-000000000000"]}}),
    );
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::Yes);
}

#[test]
fn platforms_including_the_unknown_platform_pattern() {
    let s = one(
        json!({"platforms": {"includePlatforms": ["all"], "excludePlatforms": ["android", "iOS", "windows", "macOS", "linux"]}}),
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": "windows"}))),
        (Tri::No, Reason::DevicePlatform)
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": "windowsPhone"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": "unknownFutureValue"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": null}))).0,
        Tri::Unknown
    );
}

#[test]
fn client_app_types_accept_any_case_and_legacy_spellings() {
    let s = one(json!({"clientAppTypes": ["exchangeActiveSync", "other"]}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"clientAppType": "browser"}))),
        (Tri::No, Reason::ClientApps)
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"clientAppType": "exchangeActiveSync"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"clientAppType": "easSupported"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"clientAppType": null}))).0,
        Tri::Unknown
    );
    let s = one(json!({"clientAppTypes": ["All"]}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"clientAppType": null}))).0,
        Tri::Yes
    );
}

#[test]
fn device_filters_follow_the_null_rules_in_both_modes() {
    let filter = |mode: &str, rule: &str| {
        one(json!({"devices": {"deviceFilter": {"mode": mode, "rule": rule}}}))
    };
    let unregistered = json!({"deviceInfo": {}});
    let compliant = json!({"deviceInfo": {"isCompliant": true, "trustType": "AzureAD"}});
    // Positive operator, unregistered device: never matches, so include mode does not apply
    // and exclude mode does.
    let s = filter("include", "device.isCompliant -eq True");
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, unregistered.clone())),
        (Tri::No, Reason::Devices)
    );
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, compliant.clone())).0, Tri::Yes);
    let s = filter("exclude", "device.isCompliant -eq True -or device.trustType -eq \"ServerAD\"");
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, unregistered.clone())).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, compliant.clone())).0, Tri::No);
    // Negative operator on an unregistered device matches, so in exclude mode it excludes it.
    let s = filter("exclude", "device.trustType -ne \"ServerAD\"");
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, unregistered)).0, Tri::No);
    // No device information at all is not the same as an unregistered device.
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"deviceInfo": null}))).0,
        Tri::Unknown
    );
}

#[test]
fn risk_levels_insider_risk_and_transfer_flows() {
    let s = one(json!({"signInRiskLevels": ["high"], "userRiskLevels": []}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"signInRiskLevel": "low"}))),
        (Tri::No, Reason::SignInRisk)
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"signInRiskLevel": "high"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"signInRiskLevel": null}))).0,
        Tri::Unknown
    );
    let s = one(json!({"userRiskLevels": ["medium", "high"]}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"userRiskLevel": "low"}))),
        (Tri::No, Reason::UserRisk)
    );
    let s = one(json!({"insiderRiskLevels": "moderate,elevated"}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"insiderRiskLevel": "elevated"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"insiderRiskLevel": "minor"}))),
        (Tri::No, Reason::InsiderRisk)
    );
    let s = one(
        json!({"authenticationFlows": {"transferMethods": "deviceCodeFlow,authenticationTransfer"}}),
    );
    assert_eq!(
        applies(
            &s,
            &request(
                ADELE,
                SHAREPOINT,
                json!({"authenticationFlow": {"transferMethod": "deviceCodeFlow"}})
            )
        )
        .0,
        Tri::Yes
    );
    assert_eq!(
        applies(
            &s,
            &request(ADELE, SHAREPOINT, json!({"authenticationFlow": {"transferMethod": "none"}}))
        ),
        (Tri::No, Reason::AuthenticationFlow)
    );
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::Unknown);
}

#[test]
fn the_first_definite_failure_wins_over_missing_information() {
    // Country unknown, but the platform definitely does not match: the reason is the platform.
    let s = one(
        json!({"locations": {"includeLocations": [FR]}, "platforms": {"includePlatforms": ["iOS"]}}),
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"country": null}))),
        (Tri::No, Reason::DevicePlatform)
    );
}

#[test]
fn disabled_never_applies() {
    let s = snapshot(vec![policy("p", "disabled", json!({}), block())]);
    let r = request(ADELE, SHAREPOINT, json!({}));
    assert_eq!(applies(&s, &r), (Tri::No, Reason::PolicyNotEnabled));
    let d = s.evaluate(&r).decide(&AuthState::default());
    assert_eq!(d.outcome, Outcome::Granted);
    assert_eq!(d.results[0], SignInResult::NotEnabled);
}

fn with_methods(modes: &[MethodMode]) -> AuthState {
    AuthState { methods: MethodSet::of(modes), ..AuthState::default() }
}

#[test]
fn block_wins_and_every_applying_policy_must_be_satisfied() {
    let s = snapshot(vec![
        policy("mfa", "enabled", json!({}), mfa()),
        policy(
            "device",
            "enabled",
            json!({}),
            json!({"operator": "OR", "builtInControls": ["compliantDevice"]}),
        ),
        policy("block", "enabled", json!({"users": {"includeUsers": [ADELE]}}), block()),
    ]);
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Password, MethodMode::SoftwareOath]));
    assert_eq!(d.outcome, Outcome::Blocked { policies: vec!["block"] });
    let d = s
        .evaluate(&request(GUEST, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Password]));
    let Outcome::ActionRequired { requirements } = d.outcome else {
        panic!("expected requirements")
    };
    // MFA is asked for before the device, as Entra orders them.
    assert_eq!(requirements.iter().map(|r| r.policy_id).collect::<Vec<_>>(), ["mfa", "device"]);
    let d = s
        .evaluate(&request(GUEST, SHAREPOINT, json!({"deviceInfo": {"isCompliant": true}})))
        .decide(&with_methods(&[MethodMode::Password, MethodMode::SoftwareOath]));
    assert_eq!(d.outcome, Outcome::Granted);
    assert_eq!(d.conditional_access_status(), "success");
}

#[test]
fn grant_operators_and_and_or() {
    let both = json!({"operator": "AND", "builtInControls": ["mfa", "compliantDevice"]});
    let either = json!({"operator": "or", "builtInControls": ["mfa", "compliantDevice"]});
    let s = snapshot(vec![
        policy("and", "enabled", json!({}), both),
        policy("or", "enabled", json!({}), either),
    ]);
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Fido2]));
    let Outcome::ActionRequired { requirements } = d.outcome else { panic!("AND is unmet") };
    assert_eq!(requirements.len(), 1);
    assert_eq!(requirements[0].policy_id, "and");
    assert_eq!(requirements[0].unmet, vec![&Control::CompliantDevice]);
}

#[test]
fn tap_satisfies_mfa_and_the_mfa_strength_but_not_phishing_resistance() {
    let strength = |id: &str| json!({"operator": "OR", "authenticationStrength": {"id": id}});
    let s = snapshot(vec![
        policy("mfa", "enabled", json!({}), mfa()),
        policy(
            "strength-mfa",
            "enabled",
            json!({}),
            strength("00000000-0000-0000-0000-000000000002"),
        ),
    ]);
    let tap = with_methods(&[MethodMode::TemporaryAccessPassOneTime]);
    assert_eq!(
        s.evaluate(&request(ADELE, SHAREPOINT, json!({}))).decide(&tap).outcome,
        Outcome::Granted
    );
    let s = snapshot(vec![policy(
        "pr",
        "enabled",
        json!({}),
        strength("00000000-0000-0000-0000-000000000004"),
    )]);
    let d = s.evaluate(&request(ADELE, SHAREPOINT, json!({}))).decide(&tap);
    assert!(matches!(d.outcome, Outcome::ActionRequired { .. }));
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Fido2]));
    assert_eq!(d.outcome, Outcome::Granted);
}

#[test]
fn report_only_is_logged_and_never_enforced() {
    let s = snapshot(vec![
        policy("ro-block", "enabledForReportingButNotEnforced", json!({}), block()),
        policy("ro-mfa", "enabledForReportingButNotEnforced", json!({}), mfa()),
        policy(
            "ro-device",
            "enabledForReportingButNotEnforced",
            json!({}),
            json!({"builtInControls": ["compliantDevice"]}),
        ),
        policy(
            "ro-miss",
            "enabledForReportingButNotEnforced",
            json!({"users": {"includeUsers": ["None"]}}),
            mfa(),
        ),
    ]);
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Password]));
    assert_eq!(d.outcome, Outcome::Granted);
    let results = d.results.clone();
    assert_eq!(
        results,
        [
            SignInResult::ReportOnlyFailure,
            SignInResult::ReportOnlyInterrupted,
            SignInResult::ReportOnlyFailure,
            SignInResult::ReportOnlyNotApplied
        ]
    );
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Password, MethodMode::Sms]));
    assert_eq!(d.results[1], SignInResult::ReportOnlySuccess);
    // The sign-in log names what each applying policy enforced, and nothing for the others.
    let log: Vec<_> = d.policies().collect();
    assert_eq!(log[0].id, "ro-block");
    assert_eq!(log[0].enforced_grant_controls(), ["Block"]);
    assert_eq!(log[1].enforced_grant_controls(), ["Mfa"]);
    assert!(log[3].enforced_grant_controls().is_empty());
    assert_eq!(d.conditional_access_status(), "notApplied");
}

#[test]
fn session_controls_merge_to_the_strictest() {
    let sif = |hours: i64, browser: &str| {
        let mut p = policy(&format!("sif{hours}"), "enabled", json!({}), mfa());
        p["sessionControls"] = json!({
            "signInFrequency": {"isEnabled": true, "type": "hours", "value": hours, "frequencyInterval": "timeBased"},
            "persistentBrowser": {"isEnabled": true, "mode": browser}
        });
        p
    };
    let mut every = policy("every", "enabled", json!({"users": {"includeUsers": [GUEST]}}), mfa());
    every["sessionControls"] =
        json!({"signInFrequency": {"isEnabled": true, "frequencyInterval": "everyTime"}});
    let s = snapshot(vec![sif(8, "always"), sif(4, "never"), every]);
    let d = s.evaluate(&request(ADELE, SHAREPOINT, json!({}))).decide(&AuthState::default());
    use crate::model::policy::{PersistentBrowser, SignInFrequency};
    assert_eq!(d.session.sign_in_frequency, Some(SignInFrequency::Hours(4)));
    assert_eq!(d.session.persistent_browser, Some(PersistentBrowser::Never));
    let d = s.evaluate(&request(GUEST, SHAREPOINT, json!({}))).decide(&AuthState::default());
    assert_eq!(d.session.sign_in_frequency, Some(SignInFrequency::EveryTime));
}

#[test]
fn undecidable_conditions_fail_closed_in_live_decisions() {
    let mut p = policy("times", "enabled", json!({}), block());
    p["conditions"]["times"] = json!({"includedRanges": ["business"]});
    let s = snapshot(vec![p]);
    let r = request(ADELE, SHAREPOINT, json!({}));
    let e = s.evaluate(&r);
    assert_eq!(e.results[0].applies, Tri::Unknown);
    let d = e.decide(&AuthState::default());
    assert!(d.is_blocked());
    assert_eq!(d.undetermined, vec!["times".to_owned()]);
}

#[test]
fn what_if_json_is_the_graph_shape() {
    let s = snapshot(vec![
        policy("p1", "enabled", json!({}), mfa()),
        policy("p2", "disabled", json!({}), mfa()),
    ]);
    let r = request(ADELE, SHAREPOINT, json!({}));
    let out = s.evaluate(&r).to_graph_json();
    let value = out["value"].as_array().unwrap();
    assert_eq!(value.len(), 2);
    assert_eq!(value[0]["policyApplies"], true);
    assert_eq!(value[0]["analysisReasons"], "notSet");
    assert_eq!(value[0]["conditions"]["users"]["includeUsers"][0], "All");
    assert_eq!(value[1]["analysisReasons"], "policyNotEnabled");
    let mut r = r;
    r.applied_policies_only = true;
    assert_eq!(s.evaluate(&r).to_graph_json()["value"].as_array().unwrap().len(), 1);
}

#[test]
fn malformed_policies_are_refused_with_their_path() {
    let bad = |conditions: Value| {
        let mut objects = directory();
        objects.push(policy("bad", "enabled", conditions, mfa()));
        let doc = json!({"value": objects}).to_string();
        load(&[SourceFile { name: "p.json".into(), bytes: doc.into_bytes() }]).unwrap_err().errors
            [0]
        .to_string()
    };
    assert!(bad(json!({"platforms": {"includePlatforms": ["windoze"]}})).contains(
        "conditions.platforms.includePlatforms[0]: `windoze` is not a valid device platform"
    ));
    assert!(bad(json!({"devices": {"deviceFilter": {"mode": "include", "rule": "device.colour -eq \"red\""}}})).contains("conditions.devices.deviceFilter.rule: invalid device filter"));
    assert!(
        bad(json!({"signInRiskLevels": "high"}))
            .contains("conditions.signInRiskLevels: expected an array, found a string")
    );
    let mut objects = directory();
    objects.push(json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "id": "x", "ipRanges": [{"cidrAddress": "10.0.0.0/8"}]}));
    let doc = json!({"value": objects}).to_string();
    let err = load(&[SourceFile { name: "l.json".into(), bytes: doc.into_bytes() }]).unwrap_err();
    assert!(
        err.errors[0].to_string().contains("prefix must be longer than /8"),
        "{}",
        err.errors[0]
    );
}

#[test]
fn workload_identity_policies_honour_their_service_principal_lists() {
    let sp = |include: Value, exclude: Value| {
        json!({"id": "sp", "displayName": "sp", "state": "enabled",
               "conditions": {"clientApplications": {"includeServicePrincipals": include, "excludeServicePrincipals": exclude},
                              "applications": {"includeApplications": ["All"]}, "servicePrincipalRiskLevels": ["high"]},
               "grantControls": {"builtInControls": ["block"]}})
    };
    let app = json!({"@odata.type": "#microsoft.graph.servicePrincipal", "id": "5f000000-0000-4000-8000-000000000001", "appId": "ab000000-0000-4000-8000-000000000001"});
    let r = |risk: &str| {
        SignInRequest::from_json(&json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.servicePrincipalSignIn", "servicePrincipalId": "AB000000-0000-4000-8000-000000000001"},
        "signInContext": {"includeApplications": [SHAREPOINT]},
        "signInConditions": {"servicePrincipalRiskLevel": risk}
    })).unwrap()
    };
    let s = snapshot(vec![app.clone(), sp(json!(["ServicePrincipalsInMyTenant"]), json!([]))]);
    assert_eq!(applies(&s, &r("high")).0, Tri::Yes);
    assert_eq!(applies(&s, &r("low")), (Tri::No, Reason::WorkloadIdentities));
    // Excluded by object id, requested by app id: still the same service principal.
    let s = snapshot(vec![
        app.clone(),
        sp(json!(["All"]), json!(["5f000000-0000-4000-8000-000000000001"])),
    ]);
    assert_eq!(applies(&s, &r("high")), (Tri::No, Reason::WorkloadIdentities));
    let s = snapshot(vec![app, sp(json!(["cd000000-0000-4000-8000-000000000009"]), json!([]))]);
    assert_eq!(applies(&s, &r("high")).0, Tri::No);
    // A user sign-in never matches a workload-identity policy.
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))), (Tri::No, Reason::Users));
}

// Regressions from adversarial testing: each of these once failed open or misled.

#[test]
fn an_ipv4_mapped_ipv6_address_is_the_ipv4_host() {
    let s = one(json!({"locations": {"includeLocations": [HQ]}}));
    for ip in ["203.0.113.5", "::ffff:203.0.113.5", "::ffff:cb00:7105"] {
        assert_eq!(
            applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": ip}))).0,
            Tri::Yes,
            "{ip}"
        );
    }
}

#[test]
fn exclusion_only_conditions_include_everything_else() {
    let s = one(json!({"locations": {"includeLocations": [], "excludeLocations": ["AllTrusted"]}}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": "198.51.100.1"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"ipAddress": "203.0.113.1"}))).0,
        Tri::No
    );
    let s = one(json!({"platforms": {"excludePlatforms": ["iOS"]}}));
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": "windows"}))).0,
        Tri::Yes
    );
    assert_eq!(
        applies(&s, &request(ADELE, SHAREPOINT, json!({"devicePlatform": "iOS"}))).0,
        Tri::No
    );
}

#[test]
fn excluding_all_users_excludes_everyone() {
    let s = one(json!({"users": {"includeUsers": ["All"], "excludeUsers": ["All"]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))), (Tri::No, Reason::Users));
}

#[test]
fn an_ext_upn_marks_an_external_account() {
    let mut objects = directory();
    objects.push(
        json!({"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-0000000000e1",
        "userType": "Guest", "userPrincipalName": "pat_fabrikam.test#EXT#@contoso.test"}),
    );
    objects.push(policy("p", "enabled", json!({"users": {"includeGuestsOrExternalUsers": {
        "guestOrExternalUserTypes": "b2bCollaborationGuest", "externalTenants": {"membershipKind": "all"}}}}), block()));
    let doc = json!({"value": objects}).to_string();
    let s = Snapshot::compile(
        &load(&[SourceFile { name: "t.json".into(), bytes: doc.into_bytes() }]).unwrap().tenant,
    );
    assert_eq!(
        applies(&s, &request("a0000000-0000-4000-8000-0000000000e1", SHAREPOINT, json!({}))).0,
        Tri::Yes
    );
}

#[test]
fn a_service_principal_filter_is_undecidable_not_a_match() {
    let p = json!({"id": "sp", "displayName": "sp", "state": "enabled",
        "conditions": {"clientApplications": {"includeServicePrincipals": ["All"], "servicePrincipalFilter": {"mode": "include", "rule": "x"}},
                       "applications": {"includeApplications": ["All"]}},
        "grantControls": {"builtInControls": ["block"]}});
    let s = snapshot(vec![p]);
    let r = SignInRequest::from_json(&json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.servicePrincipalSignIn", "servicePrincipalId": "ab000000-0000-4000-8000-000000000001"},
        "signInContext": {"includeApplications": [SHAREPOINT]}, "signInConditions": {}
    })).unwrap();
    assert_eq!(applies(&s, &r), (Tri::Unknown, Reason::NotEnoughInformation));
}

#[test]
fn dangerous_documents_are_refused_not_skipped() {
    let refused = |objects: Vec<Value>| {
        let doc = json!({"value": objects}).to_string();
        load(&[SourceFile { name: "x.json".into(), bytes: doc.into_bytes() }]).unwrap_err().errors
            [0]
        .to_string()
    };
    // A custom strength cannot redefine a built-in one (it would weaken `mfa`).
    let e = refused(vec![json!({"@odata.type": "#microsoft.graph.authenticationStrengthPolicy",
        "id": "00000000-0000-0000-0000-000000000002", "allowedCombinations": ["password"]})]);
    assert!(e.contains("is a built-in authentication strength id"), "{e}");
    // An unrecognised wrapper could be hiding policies.
    let e = refused(vec![json!({"policies": [policy("p", "enabled", json!({}), block())]})]);
    assert!(e.contains("is not an object Gatehouse recognises"), "{e}");
    let doc = json!({"value": [{"policies": []}]}).to_string();
    let err = load(&[SourceFile { name: "x.json".into(), bytes: doc.into_bytes() }]).unwrap_err();
    assert_eq!(err.errors[0].code, crate::diagnostic::Code::UnknownObject);
    // Two different users with one id would make membership depend on file order.
    let e = refused(vec![
        json!({"@odata.type": "#microsoft.graph.user", "id": "u1", "userType": "Member"}),
        json!({"@odata.type": "#microsoft.graph.user", "id": "U1", "userType": "Guest"}),
    ]);
    assert!(e.contains("two different users share the id `u1`"), "{e}");
    // A time-based sign-in frequency of zero hours means nothing.
    let mut p = policy("p", "enabled", json!({}), mfa());
    p["sessionControls"] =
        json!({"signInFrequency": {"isEnabled": true, "type": "hours", "value": 0}});
    let e = refused(vec![p]);
    assert!(e.contains("needs a positive value"), "{e}");
}

#[test]
fn many_unsatisfiable_controls_under_or_stay_unmet() {
    // Sixty-five custom controls nobody can satisfy: counting them must not wrap around.
    let factors: Vec<String> = (0..65).map(|i| format!("custom{i}")).collect();
    let s = snapshot(vec![policy(
        "p",
        "enabled",
        json!({}),
        json!({"operator": "OR", "customAuthenticationFactors": factors}),
    )]);
    let d = s.evaluate(&request(ADELE, SHAREPOINT, json!({}))).decide(&AuthState::default());
    assert!(matches!(d.outcome, Outcome::ActionRequired { .. }), "{:?}", d.outcome);
}

#[test]
fn agent_identity_policies_do_not_hit_ordinary_service_principals() {
    let p = json!({"id": "agents", "displayName": "agents", "state": "enabled",
        "conditions": {"users": {"includeUsers": ["None"]},
                       "clientApplications": {"includeAgentIdServicePrincipals": ["All"]},
                       "applications": {"includeApplications": ["All"]}},
        "grantControls": {"builtInControls": ["block"]}});
    let s = snapshot(vec![p]);
    let r = SignInRequest::from_json(&json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.servicePrincipalSignIn", "servicePrincipalId": "ab000000-0000-4000-8000-000000000001"},
        "signInContext": {"includeApplications": [SHAREPOINT]}, "signInConditions": {}
    }))
    .unwrap();
    assert_eq!(applies(&s, &r), (Tri::No, Reason::WorkloadIdentities));
}

// Regressions from the second round of adversarial testing.

#[test]
fn an_ipv4_mapped_range_is_checked_for_width_as_ipv4() {
    let mut objects = directory();
    objects.push(
        json!({"@odata.type": "#microsoft.graph.ipNamedLocation", "id": "wide", "isTrusted": true,
        "ipRanges": [{"cidrAddress": "::ffff:0:0/96"}]}),
    );
    let doc = json!({"value": objects}).to_string();
    let err = load(&[SourceFile { name: "l.json".into(), bytes: doc.into_bytes() }]).unwrap_err();
    assert!(err.errors[0].to_string().contains("too wide"), "{}", err.errors[0]);
}

#[test]
fn a_policy_on_a_user_id_the_export_lacks_still_matches_that_user() {
    let stranger = "5e000000-0000-4000-8000-00000000abcd";
    let s = one(json!({"users": {"includeUsers": [stranger]}}));
    assert_eq!(applies(&s, &request(stranger, SHAREPOINT, json!({}))).0, Tri::Yes);
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
    let s = one(json!({"users": {"includeUsers": ["All"], "excludeUsers": [stranger]}}));
    assert_eq!(applies(&s, &request(stranger, SHAREPOINT, json!({}))).0, Tri::No);
}

#[test]
fn a_grant_without_operator_requires_all_its_controls() {
    let s = snapshot(vec![policy(
        "p",
        "enabled",
        json!({}),
        json!({"builtInControls": ["mfa", "compliantDevice"]}),
    )]);
    let d = s
        .evaluate(&request(ADELE, SHAREPOINT, json!({})))
        .decide(&with_methods(&[MethodMode::Fido2]));
    let Outcome::ActionRequired { requirements } = d.outcome else { panic!("{:?}", d.outcome) };
    assert_eq!(requirements[0].unmet, vec![&Control::CompliantDevice]);
}

#[test]
fn an_external_tenant_list_is_recognised_without_membership_kind() {
    let s = one(json!({"users": {"includeUsers": ["All"], "excludeGuestsOrExternalUsers": {
        "guestOrExternalUserTypes": "b2bCollaborationGuest",
        "externalTenants": {"@odata.type": "#microsoft.graph.conditionalAccessEnumeratedExternalTenants", "members": ["T1"]}}}}));
    // The guest's home tenant is not known, so whether the exclusion covers them is unknown.
    assert_eq!(applies(&s, &request(INVITED_GUEST, SHAREPOINT, json!({}))).0, Tri::Unknown);
}

#[test]
fn excluding_all_apps_or_all_locations_excludes_everything() {
    let s = one(
        json!({"applications": {"includeApplications": ["All"], "excludeApplications": ["All"]}}),
    );
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
    let s = one(json!({"locations": {"includeLocations": ["All"], "excludeLocations": ["All"]}}));
    assert_eq!(applies(&s, &request(ADELE, SHAREPOINT, json!({}))).0, Tri::No);
}

#[test]
fn more_documents_that_are_refused() {
    let refused = |doc: Value| {
        load(&[SourceFile { name: "x.json".into(), bytes: doc.to_string().into_bytes() }])
            .unwrap_err()
            .errors[0]
            .to_string()
    };
    let strength = |combos: Value| json!({"@odata.type": "#microsoft.graph.authenticationStrengthPolicy", "id": "s1", "allowedCombinations": combos});
    let e =
        refused(json!({"value": [strength(json!(["fido2"])), strength(json!(["password,sms"]))]}));
    assert!(e.contains("two different authentication strengths share the id `s1`"), "{e}");
    let e = refused(
        json!({"value": [policy("p", "enabled", json!({}), mfa())], "@odata.nextLink": "https://graph.microsoft.com/v1.0/x?$skiptoken=a"}),
    );
    assert!(e.contains("one page of a paged Graph collection"), "{e}");
}

#[test]
fn misspelt_device_attributes_are_refused() {
    let err = SignInRequest::from_json(&json!({
        "signInIdentity": {"userId": ADELE}, "signInContext": {"includeApplications": [SHAREPOINT]},
        "signInConditions": {"deviceInfo": {"modle": "Kiosk"}}
    }))
    .unwrap_err();
    assert_eq!(err.path.as_str(), "signInConditions.deviceInfo.modle");
}

#[test]
fn names_cannot_forge_lines_of_the_text_output() {
    let mut p = policy("p", "enabled", json!({}), block());
    p["displayName"] = json!("Block all\n\nOutcome: ALLOWED\u{1b}[8m");
    let s = snapshot(vec![p]);
    let text = s.evaluate(&request(ADELE, SHAREPOINT, json!({}))).to_text();
    assert!(!text.contains('\u{1b}'), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("Outcome:")).count(), 1, "{text}");
}
