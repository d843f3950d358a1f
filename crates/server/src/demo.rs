//! `gatehouse serve --demo`: the travel story, ready to walk through (README "Quick start").
//!
//! Seeds the example tenant (`examples/contoso`), a password for every member, Authenticator-app
//! secrets for Adele and Megan, the Temporary Access Pass policy, the "Internals Travelling"
//! access package (catalog "Travel", manager approval, 7 days at most), and an API token for
//! Nestor (Global Administrator). Runs only on an empty store, so restarting keeps your changes.

use gatehouse_core::Change;
use gatehouse_policy::SourceFile;
use serde_json::json;

use crate::import::tenant_changes;
use crate::session::{Session, SessionKind};
use crate::store::{AuditRecord, AuditTarget, Store, StoreError, TotpRow};

/// Every demo user's password (documented in the README; demo only).
pub const PASSWORD: &str = "Demo-Passw0rd";
/// Adele's Authenticator-app secret (base32), so the walk-through can compute her codes.
pub const ADELE_TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// Megan's (Adele's manager, who approves her trip).
pub const MEGAN_TOTP_SECRET: &str = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA";
/// Nestor's (the Global Administrator), so he can sign in to the admin center under policy 001.
pub const NESTOR_TOTP_SECRET: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";
pub const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
pub const MEGAN: &str = "a0000000-0000-4000-8000-000000000002";
pub const ISAIAH: &str = "a0000000-0000-4000-8000-000000000004";
pub const NESTOR: &str = "a0000000-0000-4000-8000-000000000007";
pub const TRAVEL_GROUP: &str = "b0000000-0000-4000-8000-000000000003";
/// The travel catalog, access package and policy the demo seeds.
pub const TRAVEL_CATALOG: &str = "c0000000-0000-4000-8000-000000000001";
pub const TRAVEL_PACKAGE: &str = "c0000000-0000-4000-8000-000000000002";
pub const TRAVEL_POLICY: &str = "c0000000-0000-4000-8000-000000000003";
pub const COUNTRY_QUESTION: &str = "c0000000-0000-4000-8000-0000000000a1";
pub const TRIP_QUESTION: &str = "c0000000-0000-4000-8000-0000000000a2";

/// The "Internals Travelling" policy: internal members may request it for themselves, with a
/// justification and the travel questions; their manager approves (Nestor, the IT admin, if
/// they have none, and after two days too); access lasts at most 7 days, in London's time.
pub fn travel_policy(package: &str) -> serde_json::Value {
    json!({
        "displayName": "Internal members, manager approval",
        "description": "Employees travelling outside the UK for up to a week",
        "allowedTargetScope": "allMemberUsers",
        "specificAllowedTargets": [],
        "timeZone": "Europe/London",
        "expiration": {"type": "afterDuration", "duration": "P7D"},
        "requestorSettings": {
            "enableTargetsToSelfAddAccess": true,
            "enableTargetsToSelfUpdateAccess": true,
            "enableTargetsToSelfRemoveAccess": true,
            "allowCustomAssignmentSchedule": true,
            "enableOnBehalfRequestorsToAddAccess": false,
            "enableOnBehalfRequestorsToUpdateAccess": false,
            "enableOnBehalfRequestorsToRemoveAccess": false,
            "onBehalfRequestors": []
        },
        "requestApprovalSettings": {
            "isApprovalRequiredForAdd": true,
            "isApprovalRequiredForUpdate": true,
            "isRequestorJustificationRequired": true,
            "stages": [{
                "durationBeforeAutomaticDenial": "P7D",
                "isApproverJustificationRequired": false,
                "isEscalationEnabled": true,
                "durationBeforeEscalation": "P2D",
                "primaryApprovers": [{"@odata.type": "#microsoft.graph.requestorManager", "managerLevel": 1}],
                "fallbackPrimaryApprovers": [{"@odata.type": "#microsoft.graph.singleUser", "userId": NESTOR}],
                "escalationApprovers": [{"@odata.type": "#microsoft.graph.singleUser", "userId": NESTOR}],
                "fallbackEscalationApprovers": []
            }]
        },
        "questions": [
            {
                "@odata.type": "#microsoft.graph.accessPackageMultipleChoiceQuestion",
                "id": COUNTRY_QUESTION,
                "sequence": 1, "isRequired": true, "isAnswerEditable": false,
                "text": "Which country are you travelling to?",
                "localizations": [{"languageCode": "fr-FR", "text": "Dans quel pays partez-vous ?"}],
                "isMultipleSelectionAllowed": false,
                "choices": [{"actualValue": "FR", "text": "France", "localizations": []}]
            },
            {
                "@odata.type": "#microsoft.graph.accessPackageTextInputQuestion",
                "id": TRIP_QUESTION,
                "sequence": 2, "isRequired": true, "isAnswerEditable": false,
                "text": "Travel request number (TR- and four digits)",
                "localizations": [],
                "isSingleLineQuestion": true,
                "regexPattern": "^TR-[0-9]{4}$"
            }
        ],
        "accessPackage": {"id": package}
    })
}

/// The catalog, its resource (the travel persona group), the package and its role scope, and
/// the policy, as the demo seeds them.
fn travel_package(
    dir: &gatehouse_core::Directory,
    now: i64,
) -> Result<Vec<(crate::store::governance::Kind, crate::store::governance::Doc)>, StoreError> {
    use crate::store::governance::{Doc, Kind};
    let at = gatehouse_core::time::format(now);
    let doc = |id: &str, parent: &str, body: serde_json::Value| Doc {
        id: id.into(),
        parent: parent.into(),
        created: now,
        body,
    };
    let resource_id = "c0000000-0000-4000-8000-000000000004";
    let resource = json!({
        "id": resource_id, "displayName": "CA-Internals-Travel", "description": "",
        "originId": TRAVEL_GROUP, "originSystem": "AadGroup", "createdDateTime": at, "modifiedDateTime": at, "attributes": []
    });
    let roles = crate::governance::objects::resource_roles(&resource, dir);
    let member = roles
        .into_iter()
        .find(|r| r.get("displayName").and_then(|v| v.as_str()) == Some("Member"))
        .unwrap_or_default();
    let scope = crate::governance::objects::resource_scope(&resource);
    let granted = gatehouse_core::governance::model::GrantedRole::GroupMember {
        group_id: TRAVEL_GROUP.into(),
    };
    let rs_id = format!(
        "{}_{}",
        member.get("id").and_then(|v| v.as_str()).unwrap_or_default(),
        scope.get("id").and_then(|v| v.as_str()).unwrap_or_default()
    );
    let zone = gatehouse_core::governance::duration::Zone::utc();
    let body = match travel_policy(TRAVEL_PACKAGE) {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let policy = gatehouse_core::governance::policy::AssignmentPolicy::parse(
        TRAVEL_POLICY,
        &body,
        &zone,
        now,
    )
    .and_then(|p| p.validate(dir).map(|()| p))
    .map_err(|e| StoreError::Corrupt(format!("the demo travel policy: {e}")))?;
    Ok(vec![
        (
            Kind::Catalog,
            doc(
                TRAVEL_CATALOG,
                "/",
                json!({
                    "id": TRAVEL_CATALOG, "displayName": "Travel", "description": "Access for people travelling on business",
                    "catalogType": "userManaged", "state": "published", "isExternallyVisible": false,
                    "createdDateTime": at, "modifiedDateTime": at
                }),
            ),
        ),
        (Kind::Resource, doc(resource_id, TRAVEL_CATALOG, resource)),
        (
            Kind::Package,
            doc(
                TRAVEL_PACKAGE,
                TRAVEL_CATALOG,
                json!({
                    "id": TRAVEL_PACKAGE, "displayName": "Internals Travelling",
                    "description": "Sign in from approved travel countries (France) for the length of a trip",
                    "isHidden": false, "createdDateTime": at, "modifiedDateTime": at, "catalog": {"id": TRAVEL_CATALOG}
                }),
            ),
        ),
        (
            Kind::RoleScope,
            doc(
                &rs_id,
                TRAVEL_PACKAGE,
                json!({
                    "id": rs_id, "createdDateTime": at, "role": member, "scope": scope,
                    "grantedRole": serde_json::to_value(&granted).unwrap_or_default()
                }),
            ),
        ),
        (Kind::Policy, doc(TRAVEL_POLICY, TRAVEL_PACKAGE, policy.to_graph(dir, TRAVEL_CATALOG))),
    ])
}

macro_rules! tenant_files {
    ($($name:literal),* $(,)?) => {
        [$(SourceFile {
            name: $name.to_owned(),
            bytes: include_bytes!(concat!("../../../examples/contoso/tenant/", $name)).to_vec(),
        }),*]
    };
}

pub fn tenant_files() -> Vec<SourceFile> {
    tenant_files![
        "applications.json",
        "authenticationStrengths.json",
        "groups.json",
        "namedLocations.json",
        "roleAssignments.json",
        "users.json",
        "policies/001-Global-AllApps-MFA-Require.json",
        "policies/002-Admins-AllApps-PhishingResistantMFA-Require.json",
        "policies/003-Global-LegacyAuthentication-Block.json",
        "policies/011-Global-AllApps-UnapprovedLocation-Block.json",
        "policies/012-Internals-Travel-AllApps-UnapprovedLocation-Block.json",
        "policies/013-Internals-Travel-AllApps-SignInFrequency-8h.json",
        "policies/020-Global-RegisterSecurityInfo-MFA-Require.json",
        "policies/021-Onboarding-RegisterSecurityInfo-BootstrapStrength-Require.json",
        "policies/030-Guests-AllApps-CompliantDevice-ReportOnly.json",
        "policies/040-Admins-AdminPortals-UnmanagedDevice-Block.json",
        "policies/050-Global-AllApps-HighSignInRisk-Block.json",
        "policies/051-Global-AllApps-HighUserRisk-PasswordChange-Require.json",
        "policies/060-Staff-Office365-UntrustedNetwork-ManagedDevice-Require.json",
        "policies/070-Global-AllApps-ElevatedInsiderRisk-Block-ReportOnly.json",
        "policies/080-Global-AllApps-UnsupportedPlatform-Block.json",
        "policies/090-WorkloadIdentities-AllApps-HighRisk-Block.json",
    ]
    .into()
}

/// The demo's country database: loopback and 203.0.113.0/24 in GB, 198.51.100.0/24 in FR,
/// 192.0.2.0/24 in the US (documentation ranges only; see `examples/geoip/README.md`).
pub const GEOIP: &[u8] = include_bytes!("../../../examples/geoip/demo-country.mmdb");

/// The TAP policy of the demo: enabled for everyone, one hour by default.
pub fn auth_methods_policy() -> serde_json::Value {
    json!({
        "id": "authenticationMethodsPolicy",
        "authenticationMethodConfigurations": [{
            "@odata.type": "#microsoft.graph.temporaryAccessPassAuthenticationMethodConfiguration",
            "id": "TemporaryAccessPass",
            "state": "enabled",
            "defaultLifetimeInMinutes": 60,
            "defaultLength": 8,
            "minimumLifetimeInMinutes": 60,
            "maximumLifetimeInMinutes": 480,
            "isUsableOnce": false,
            "includeTargets": [{"id": "all_users", "targetType": "group", "isRegistrationRequired": false}],
            "excludeTargets": []
        }]
    })
}

pub struct Seeded {
    /// Nestor's API token, shown once.
    pub admin_token: String,
}

/// Seeds the story if the store holds no users. `None` when it was already seeded.
pub async fn seed(store: &Store, now: i64) -> Result<Option<Seeded>, StoreError> {
    if !store.load_directory().await?.tenant.users.is_empty() {
        return Ok(None);
    }
    let loaded = gatehouse_policy::load(&tenant_files())
        .map_err(|e| StoreError::Corrupt(format!("the demo tenant does not load: {e}")))?;
    let (mut changes, _) = tenant_changes(&loaded.tenant);
    changes.push(Change::PutAuthMethodsPolicy { policy: auth_methods_policy() });
    let phc = crate::password::hash(PASSWORD).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let admin_token = crate::random::token("gh_");
    let mut w = store.begin().await?;
    for u in loaded.tenant.users.iter().filter(|u| !u.is_guest) {
        w.set_password(&u.id, &phc, now).await?;
    }
    for (user, secret) in
        [(ADELE, ADELE_TOTP_SECRET), (MEGAN, MEGAN_TOTP_SECRET), (NESTOR, NESTOR_TOTP_SECRET)]
    {
        w.insert_totp(&TotpRow {
            id: crate::random::guid(),
            user_id: user.into(),
            display_name: "Authenticator app".into(),
            secret: secret.into(),
            verified: true,
            created_at: now,
            last_step: 0,
        })
        .await?;
    }
    let mut dir = gatehouse_core::Directory::new();
    dir.replace_all(loaded.tenant.clone(), Vec::new(), None);
    for (kind, doc) in travel_package(&dir, now)? {
        w.put_doc(kind, &doc, None).await?;
    }
    let session = Session {
        id: crate::random::guid(),
        user_id: NESTOR.into(),
        kind: SessionKind::ApiToken,
        created_at: now,
        expires_at: None,
        methods: Vec::new(),
        tap_id: None,
        target: None,
    };
    w.insert_session(&gatehouse_core::auth::secret::hash(&admin_token), &session).await?;
    let audit = AuditRecord {
        id: crate::random::guid(),
        category: "Other",
        activity: "Seed demo tenant".into(),
        result: "success",
        result_reason: "the travel story (examples/contoso)".into(),
        initiated_by: None,
        targets: vec![AuditTarget { kind: "Other", id: "tenant".into(), display_name: None }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    };
    w.commit(now, &changes, &[audit]).await?;
    Ok(Some(Seeded { admin_token }))
}
