//! `gatehouse serve --demo`: the travel story, ready to walk through (README "Quick start").
//!
//! Seeds the example tenant (`examples/contoso`), a password for every member, an
//! Authenticator-app secret for Adele, the Temporary Access Pass policy, and an API token for
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
pub const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
pub const ISAIAH: &str = "a0000000-0000-4000-8000-000000000004";
pub const NESTOR: &str = "a0000000-0000-4000-8000-000000000007";
pub const TRAVEL_GROUP: &str = "b0000000-0000-4000-8000-000000000003";

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
    w.insert_totp(&TotpRow {
        id: crate::random::guid(),
        user_id: ADELE.into(),
        display_name: "Authenticator app".into(),
        secret: ADELE_TOTP_SECRET.into(),
        verified: true,
        created_at: now,
        last_step: 0,
    })
    .await?;
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
