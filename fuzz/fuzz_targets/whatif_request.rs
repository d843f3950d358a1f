//! Fuzzes the What-If request path against a small fixed tenant: bytes -> `json::decode_text`
//! -> `json::parse` -> `SignInRequest::from_json` -> `evaluate` -> `decide` -> `to_graph_json`.
//!
//! The tenant is built once, from inline JSON, so that every condition the evaluator knows has
//! a policy that uses it: users, nested groups, roles, guests, workload identities, apps and
//! suites, user actions, auth contexts, platforms, client app types, IP and country locations,
//! device filters, every risk kind, transfer flows, strengths and session controls.
#![no_main]

use std::sync::OnceLock;

use gatehouse_policy::json;
use gatehouse_policy::{AuthState, SignInRequest, Snapshot, SourceFile, load};
use libfuzzer_sys::fuzz_target;

const USERS: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-000000000001", "displayName": "Adele Vance", "userPrincipalName": "adele@contoso.test", "userType": "Member"},
  {"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-000000000002", "displayName": "Megan Bowen", "userPrincipalName": "megan@contoso.test", "userType": "Member"},
  {"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-000000000003", "displayName": "Lee Gu", "userPrincipalName": "lee@contoso.test", "userType": "Member"},
  {"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-000000000005", "displayName": "Break Glass", "userPrincipalName": "bg01@contoso.test", "userType": "Member"},
  {"@odata.type": "#microsoft.graph.user", "id": "a0000000-0000-4000-8000-000000000006", "displayName": "Gary Guest", "userPrincipalName": "gary_fabrikam.test#EXT#@contoso.test", "userType": "Guest", "creationType": "Invitation", "externalUserState": "Accepted"}
]}"##;

const GROUPS: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.group", "id": "b0000000-0000-4000-8000-000000000001", "displayName": "CA-Internals", "securityEnabled": true,
   "members": [{"id": "a0000000-0000-4000-8000-000000000001"}, {"id": "a0000000-0000-4000-8000-000000000002"}, {"id": "b0000000-0000-4000-8000-000000000002"}]},
  {"@odata.type": "#microsoft.graph.group", "id": "b0000000-0000-4000-8000-000000000002", "displayName": "CA-Internals-Travel", "securityEnabled": true,
   "members": [{"id": "a0000000-0000-4000-8000-000000000003"}, {"id": "b0000000-0000-4000-8000-000000000001"}]},
  {"@odata.type": "#microsoft.graph.group", "id": "b0000000-0000-4000-8000-000000000003", "displayName": "CA-BreakGlass", "securityEnabled": true,
   "members": [{"id": "a0000000-0000-4000-8000-000000000005"}]}
]}"##;

const ROLES: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "id": "r1", "principalId": "a0000000-0000-4000-8000-000000000002", "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10", "directoryScopeId": "/"},
  {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "id": "r2", "principalId": "b0000000-0000-4000-8000-000000000002", "roleDefinitionId": "194ae4cb-b126-40b2-bd5b-6091b380977d", "directoryScopeId": "/"},
  {"@odata.type": "#microsoft.graph.unifiedRoleAssignment", "id": "r3", "principalId": "a0000000-0000-4000-8000-000000000001", "roleDefinitionId": "62e90394-69f5-4237-9190-012177145e10", "directoryScopeId": "/administrativeUnits/x"}
]}"##;

const APPS: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "e0000000-0000-4000-8000-000000000001", "appId": "f0000000-0000-4000-8000-000000000001", "displayName": "Payroll Sync"}
]}"##;

const LOCATIONS: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.countryNamedLocation", "id": "c0000000-0000-4000-8000-000000000001", "displayName": "Home", "countriesAndRegions": ["GB", "IE"], "includeUnknownCountriesAndRegions": false, "countryLookupMethod": "clientIpAddress"},
  {"@odata.type": "#microsoft.graph.countryNamedLocation", "id": "c0000000-0000-4000-8000-000000000002", "displayName": "Travel", "countriesAndRegions": ["FR"], "includeUnknownCountriesAndRegions": true, "countryLookupMethod": "clientIpAddress"},
  {"@odata.type": "#microsoft.graph.ipNamedLocation", "id": "c0000000-0000-4000-8000-000000000003", "displayName": "HQ", "isTrusted": true,
   "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "203.0.113.0/24"}, {"@odata.type": "#microsoft.graph.iPv6CidrRange", "cidrAddress": "2001:db8::/32"}]},
  {"@odata.type": "#microsoft.graph.ipNamedLocation", "id": "c0000000-0000-4000-8000-000000000004", "displayName": "Lab", "isTrusted": false,
   "ipRanges": [{"@odata.type": "#microsoft.graph.iPv4CidrRange", "cidrAddress": "10.0.0.0/16"}]}
]}"##;

const STRENGTHS: &str = r##"{"value": [
  {"@odata.type": "#microsoft.graph.authenticationStrengthPolicy", "id": "aaaa0000-0000-4000-8000-000000000001", "displayName": "Passkey or TAP", "policyType": "custom",
   "allowedCombinations": ["fido2", "temporaryAccessPassOneTime", "windowsHelloForBusiness"]}
]}"##;

const POLICIES: &str = r##"{"value": [
  {"id": "d0000000-0000-4000-8000-000000000001", "displayName": "All users MFA", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"], "excludeGroups": ["b0000000-0000-4000-8000-000000000003"]},
                  "applications": {"includeApplications": ["All"], "excludeApplications": ["f0000000-0000-4000-8000-000000000001"]}, "clientAppTypes": ["all"]},
   "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
  {"id": "d0000000-0000-4000-8000-000000000002", "displayName": "Internals outside home blocked", "state": "enabled",
   "conditions": {"users": {"includeGroups": ["b0000000-0000-4000-8000-000000000001"], "excludeGroups": ["b0000000-0000-4000-8000-000000000003"], "excludeUsers": ["a0000000-0000-4000-8000-000000000002"]},
                  "applications": {"includeApplications": ["All"], "excludeApplications": ["Office365"]},
                  "locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted", "c0000000-0000-4000-8000-000000000001"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000003", "displayName": "Guests compliant or joined", "state": "enabledForReportingButNotEnforced",
   "conditions": {"users": {"includeGuestsOrExternalUsers": {"guestOrExternalUserTypes": "internalGuest,b2bCollaborationGuest,b2bCollaborationMember,otherExternalUser", "externalTenants": {"@odata.type": "#microsoft.graph.conditionalAccessEnumeratedExternalTenants", "membershipKind": "enumerated", "members": ["11111111-0000-4000-8000-000000000001"]}}},
                  "applications": {"includeApplications": ["Office365"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["compliantDevice", "domainJoinedDevice"]}},
  {"id": "d0000000-0000-4000-8000-000000000004", "displayName": "Admins phishing resistant", "state": "enabled",
   "conditions": {"users": {"includeRoles": ["62e90394-69f5-4237-9190-012177145e10", "194ae4cb-b126-40b2-bd5b-6091b380977d"], "excludeUsers": ["GuestsOrExternalUsers"]},
                  "applications": {"includeApplications": ["MicrosoftAdminPortals", "797f4846-ba00-4fd7-ba43-dac1f8f63013"]}},
   "grantControls": {"operator": "AND", "builtInControls": [], "authenticationStrength": {"id": "00000000-0000-0000-0000-000000000004"}},
   "sessionControls": {"signInFrequency": {"isEnabled": true, "frequencyInterval": "everyTime"}, "persistentBrowser": {"isEnabled": true, "mode": "never"}}},
  {"id": "d0000000-0000-4000-8000-000000000005", "displayName": "Register security info from home", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeUserActions": ["urn:user:registersecurityinfo", "urn:user:registerdevice"]},
                  "locations": {"includeLocations": ["c0000000-0000-4000-8000-000000000002", "c0000000-0000-4000-8000-000000000004"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["mfa"], "termsOfUse": ["71111111-0000-4000-8000-000000000001"]}},
  {"id": "d0000000-0000-4000-8000-000000000006", "displayName": "Auth context c1 custom strength", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["a0000000-0000-4000-8000-000000000001", "a0000000-0000-4000-8000-000000000003"]}, "applications": {"includeAuthenticationContextClassReferences": ["c1", "C2"]}},
   "grantControls": {"operator": "OR", "authenticationStrength": {"id": "aaaa0000-0000-4000-8000-000000000001"}},
   "sessionControls": {"signInFrequency": {"isEnabled": true, "type": "hours", "value": 4, "frequencyInterval": "timeBased"}, "cloudAppSecurity": {"isEnabled": true, "cloudAppSecurityType": "blockDownloads"}}},
  {"id": "d0000000-0000-4000-8000-000000000007", "displayName": "Legacy auth and mobile platforms", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]},
                  "clientAppTypes": ["exchangeActiveSync", "other", "mobileAppsAndDesktopClients"],
                  "platforms": {"includePlatforms": ["android", "iOS", "linux"], "excludePlatforms": ["windowsPhone"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["approvedApplication", "compliantApplication"]},
   "sessionControls": {"applicationEnforcedRestrictions": {"isEnabled": true}, "disableResilienceDefaults": true}},
  {"id": "d0000000-0000-4000-8000-000000000008", "displayName": "Risky sign-ins", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]},
                  "signInRiskLevels": ["high", "medium"], "userRiskLevels": ["high"]},
   "grantControls": {"operator": "AND", "builtInControls": ["mfa", "passwordChange"]}},
  {"id": "d0000000-0000-4000-8000-000000000009", "displayName": "Unmanaged devices", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["00000003-0000-0ff1-ce00-000000000000"]},
                  "devices": {"deviceFilter": {"mode": "exclude", "rule": "device.isCompliant -eq True -or (device.trustType -eq \"ServerAD\" -and device.extensionAttribute1 -in [\"SAW\", \"PAW\"]) -or device.displayName -startsWith \"CONTOSO-\""}}},
   "grantControls": {"operator": "OR", "builtInControls": ["compliantDevice"]}},
  {"id": "d0000000-0000-4000-8000-000000000010", "displayName": "Filter include personal", "state": "enabledForReportingButNotEnforced",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]},
                  "devices": {"deviceFilter": {"mode": "include", "rule": "device.deviceOwnership -eq \"Personal\" -or device.physicalIds -contains \"[ZTDId]:abc\" -or -not (device.model -notContains \"surface\")"}}},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000011", "displayName": "Workload identities risky", "state": "enabled",
   "conditions": {"clientApplications": {"includeServicePrincipals": ["ServicePrincipalsInMyTenant"], "excludeServicePrincipals": ["f0000000-0000-4000-8000-000000000009"]},
                  "applications": {"includeApplications": ["All"]}, "servicePrincipalRiskLevels": ["high", "medium"],
                  "locations": {"includeLocations": ["All"], "excludeLocations": ["AllTrusted"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000012", "displayName": "Device code flow blocked", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"], "excludeRoles": ["62e90394-69f5-4237-9190-012177145e10"]}, "applications": {"includeApplications": ["All"]},
                  "authenticationFlows": {"transferMethods": "deviceCodeFlow,authenticationTransfer"}},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000013", "displayName": "Insider risk", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}, "insiderRiskLevels": "elevated,moderate"},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000014", "displayName": "Disabled", "state": "disabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["All"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["block"]}},
  {"id": "d0000000-0000-4000-8000-000000000015", "displayName": "Legacy times condition", "state": "enabledForReportingButNotEnforced",
   "conditions": {"users": {"includeUsers": ["None"]}, "applications": {"includeApplications": ["None"]}, "times": {"included": ["all"]}},
   "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}},
  {"id": "d0000000-0000-4000-8000-000000000016", "displayName": "Session only", "state": "enabled",
   "conditions": {"users": {"includeUsers": ["All"]}, "applications": {"includeApplications": ["Office365"]}},
   "sessionControls": {"signInFrequency": {"isEnabled": true, "type": "days", "value": 7}, "continuousAccessEvaluation": {"mode": "strictEnforcement"}}}
]}"##;

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let files: Vec<SourceFile> = [
            ("users.json", USERS),
            ("groups.json", GROUPS),
            ("roleAssignments.json", ROLES),
            ("applications.json", APPS),
            ("namedLocations.json", LOCATIONS),
            ("authenticationStrengths.json", STRENGTHS),
            ("policies.json", POLICIES),
        ]
        .into_iter()
        .map(|(name, text)| SourceFile { name: name.into(), bytes: text.as_bytes().to_vec() })
        .collect();
        match load(&files) {
            Ok(loaded) => Snapshot::compile(&loaded.tenant),
            Err(e) => panic!("the fixed fuzz tenant does not load:\n{e}"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let snapshot = snapshot();
    let Ok(text) = json::decode_text(data) else {
        return;
    };
    let Ok(value) = json::parse(&text) else {
        return;
    };
    let Ok(request) = SignInRequest::from_json(&value) else {
        return;
    };
    let evaluation = snapshot.evaluate(&request);
    let decision = evaluation.decide(&AuthState::default());
    let _ = decision.conditional_access_status();
    let _ = evaluation.to_graph_json();
    let _ = evaluation.to_text();
});
