//! A sign-in to evaluate: the body of Graph `POST /identity/conditionalAccess/evaluate`, and the
//! same facts as the live sign-in path gathers them.
//!
//! Every condition is optional. A missing fact is "not supplied", which makes a policy that
//! depends on it `notEnoughInformation` instead of a silent match or miss.

use std::net::IpAddr;

use serde_json::Value;

use crate::device_filter::DeviceAttributes;
use crate::json::{FieldError, FieldResult, JsonPath, Obj, enum_value, normalize_id, odata_type};
use crate::model::enums::*;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SignInRequest {
    pub identity: Identity,
    pub target: Target,
    pub conditions: SignInConditions,
    pub applied_policies_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    User {
        user_id: String,
        /// The user's home tenant, for `externalTenants` (What-If `externalTenantId`).
        external_tenant_id: Option<String>,
        /// Overrides the type derived from the directory (What-If `externalUserType`).
        external_user_type: Option<GuestType>,
    },
    /// A workload identity, by its app id.
    ServicePrincipal { app_id: String },
}

impl Default for Identity {
    fn default() -> Self {
        Identity::User {
            user_id: String::new(),
            external_tenant_id: None,
            external_user_type: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Resource app ids (lowercase).
    Apps(Vec<String>),
    UserAction(UserAction),
    /// An authentication context class reference (`c1`…), lowercase.
    AuthContext(String),
}

impl Default for Target {
    fn default() -> Self {
        Target::Apps(Vec::new())
    }
}

/// What the sign-in looks like. `None` = not supplied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SignInConditions {
    pub client_app_type: Option<ClientAppType>,
    pub device_platform: Option<Platform>,
    pub ip_address: Option<IpAddr>,
    /// `Some(None)`: looked up, and the address maps to no country.
    pub country: Option<Option<String>>,
    /// `Some(default)` is an unregistered device (every property null).
    pub device: Option<DeviceAttributes>,
    pub sign_in_risk: Option<RiskLevel>,
    pub user_risk: Option<RiskLevel>,
    pub service_principal_risk: Option<RiskLevel>,
    pub insider_risk: Option<InsiderRiskLevel>,
    /// `Some(None)`: known not to be a transfer flow.
    pub authentication_flow: Option<Option<TransferMethod>>,
}

/// The largest request body the CLI and API accept, in bytes.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

impl SignInRequest {
    pub fn from_json(value: &Value) -> FieldResult<Self> {
        let root = JsonPath::root();
        let o = Obj::new(value, &root)?;
        reject_unknown(
            o,
            &["signInIdentity", "signInContext", "signInConditions", "appliedPoliciesOnly"],
        )?;
        let (id_map, id_path) = o
            .object("signInIdentity")?
            .ok_or_else(|| FieldError::new(&root.key("signInIdentity"), "is required"))?;
        let identity = parse_identity(Obj { map: id_map, path: &id_path })?;
        let (ctx_map, ctx_path) = o
            .object("signInContext")?
            .ok_or_else(|| FieldError::new(&root.key("signInContext"), "is required"))?;
        let target = parse_target(Obj { map: ctx_map, path: &ctx_path })?;
        let conditions = match o.get("signInConditions") {
            None => {
                return Err(FieldError::new(&root.key("signInConditions"), "is required"));
            }
            Some(Value::Null) => SignInConditions::default(),
            Some(_) => match o.object("signInConditions")? {
                Some((m, p)) => parse_conditions(Obj { map: m, path: &p })?,
                None => SignInConditions::default(),
            },
        };
        Ok(SignInRequest {
            identity,
            target,
            conditions,
            applied_policies_only: o.bool("appliedPoliciesOnly")?.unwrap_or(false),
        })
    }
}

/// A typo in a request key would silently drop a condition, so requests are strict.
pub(crate) fn reject_unknown(o: Obj<'_>, allowed: &[&str]) -> FieldResult<()> {
    for key in o.map.keys() {
        if !key.starts_with('@') && !key.contains("@odata") && !allowed.contains(&key.as_str()) {
            return Err(FieldError::new(
                &o.path.key(key),
                format!("unknown property (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn parse_identity(o: Obj<'_>) -> FieldResult<Identity> {
    let t = odata_type(o.map);
    let is_sp = match t.as_deref() {
        Some("usersignin") => false,
        Some("serviceprincipalsignin") => true,
        Some(other) => {
            return Err(FieldError::new(
                &o.path.key("@odata.type"),
                format!(
                    "`{other}` is not a sign-in identity (expected #microsoft.graph.userSignIn or #microsoft.graph.servicePrincipalSignIn)"
                ),
            ));
        }
        None => o.map.contains_key("servicePrincipalId"),
    };
    if is_sp {
        reject_unknown(o, &["servicePrincipalId"])?;
        return Ok(Identity::ServicePrincipal {
            app_id: normalize_id(o.required_string("servicePrincipalId")?),
        });
    }
    reject_unknown(o, &["userId", "externalTenantId", "externalUserType"])?;
    let user_id = normalize_id(o.required_string("userId")?);
    if user_id.is_empty() {
        return Err(FieldError::new(&o.path.key("userId"), "must not be empty"));
    }
    let external_user_type = match o.string("externalUserType")? {
        Some(t) => {
            enum_value(t, GUEST_TYPES, &o.path.key("externalUserType"), "external user type")?
        }
        None => None,
    };
    Ok(Identity::User {
        user_id,
        external_tenant_id: o.string("externalTenantId")?.map(normalize_id),
        external_user_type,
    })
}

fn parse_target(o: Obj<'_>) -> FieldResult<Target> {
    let t = odata_type(o.map);
    let kind = match t.as_deref() {
        Some(k) => k.to_owned(),
        None if o.map.contains_key("includeApplications") => "applicationcontext".into(),
        None if o.map.contains_key("userAction") => "useractioncontext".into(),
        None if o.map.contains_key("authenticationContextValue") => "authcontext".into(),
        None => {
            return Err(FieldError::new(
                o.path,
                "needs `includeApplications`, `userAction` or `authenticationContextValue`",
            ));
        }
    };
    match kind.as_str() {
        "applicationcontext" => {
            reject_unknown(o, &["includeApplications"])?;
            let apps: Vec<String> =
                o.strings("includeApplications")?.into_iter().map(normalize_id).collect();
            if apps.is_empty() {
                return Err(FieldError::new(
                    &o.path.key("includeApplications"),
                    "must name at least one application id",
                ));
            }
            Ok(Target::Apps(apps))
        }
        "useractioncontext" => {
            reject_unknown(o, &["userAction"])?;
            let action = o.required_string("userAction")?;
            Ok(Target::UserAction(enum_value(
                action,
                USER_ACTIONS,
                &o.path.key("userAction"),
                "user action",
            )?))
        }
        "authcontext" => {
            reject_unknown(o, &["authenticationContextValue"])?;
            let value =
                o.required_string("authenticationContextValue")?.trim().to_ascii_lowercase();
            Ok(Target::AuthContext(value))
        }
        other => Err(FieldError::new(
            &o.path.key("@odata.type"),
            format!(
                "`{other}` is not a sign-in context (expected applicationContext, userActionContext or authContext)"
            ),
        )),
    }
}

fn parse_conditions(o: Obj<'_>) -> FieldResult<SignInConditions> {
    reject_unknown(
        o,
        &[
            "authenticationFlow",
            "clientAppType",
            "country",
            "deviceInfo",
            "devicePlatform",
            "insiderRiskLevel",
            "ipAddress",
            "servicePrincipalRiskLevel",
            "signInRiskLevel",
            "userRiskLevel",
        ],
    )?;
    let risk = |key: &str| -> FieldResult<Option<RiskLevel>> {
        o.string(key)?
            .map(|r| enum_value(r, RISK_LEVELS, &o.path.key(key), "risk level"))
            .transpose()
    };
    // `all` as an input client type or platform says nothing about the sign-in.
    let client_app_type = o
        .string("clientAppType")?
        .map(|c| enum_value(c, CLIENT_APP_TYPES, &o.path.key("clientAppType"), "client app type"))
        .transpose()?
        .filter(|c| *c != ClientAppType::All);
    let device_platform = o
        .string("devicePlatform")?
        .map(|p| enum_value(p, PLATFORMS, &o.path.key("devicePlatform"), "device platform"))
        .transpose()?
        .filter(|p| *p != Platform::All);
    let ip_address = o
        .string("ipAddress")?
        .map(|ip| {
            // An IPv4-mapped IPv6 address is the IPv4 host it maps.
            ip.trim().parse::<IpAddr>().map(|a| a.to_canonical()).map_err(|_| {
                FieldError::new(&o.path.key("ipAddress"), format!("`{ip}` is not an IP address"))
            })
        })
        .transpose()?;
    let country = o
        .string("country")?
        .map(|c| {
            let c = c.trim();
            if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
                Ok(Some(c.to_ascii_uppercase()))
            } else {
                Err(FieldError::new(
                    &o.path.key("country"),
                    format!("`{c}` is not a two-letter ISO 3166 country code"),
                ))
            }
        })
        .transpose()?;
    let device = match o.get("deviceInfo") {
        None | Some(Value::Null) => None,
        Some(_) => match o.object("deviceInfo")? {
            Some((m, p)) => Some(parse_device(Obj { map: m, path: &p })?),
            None => Some(DeviceAttributes::default()),
        },
    };
    let insider_risk = o
        .string("insiderRiskLevel")?
        .map(|r| {
            enum_value(
                r,
                INSIDER_RISK_LEVELS,
                &o.path.key("insiderRiskLevel"),
                "insider risk level",
            )
        })
        .transpose()?;
    let authentication_flow = match o.object("authenticationFlow")? {
        Some((m, p)) => {
            let f = Obj { map: m, path: &p };
            let t = f
                .string("transferMethod")?
                .map(|t| {
                    enum_value(t, TRANSFER_METHODS, &p.key("transferMethod"), "transfer method")
                })
                .transpose()?;
            Some(t.filter(|t| *t != TransferMethod::None))
        }
        None => None,
    };
    Ok(SignInConditions {
        client_app_type,
        device_platform,
        ip_address,
        country,
        device,
        sign_in_risk: risk("signInRiskLevel")?,
        user_risk: risk("userRiskLevel")?,
        service_principal_risk: risk("servicePrincipalRiskLevel")?,
        insider_risk,
        authentication_flow,
    })
}

fn parse_device(o: Obj<'_>) -> FieldResult<DeviceAttributes> {
    // A misspelt device attribute would silently make the device look unregistered.
    let mut allowed: Vec<String> = [
        "deviceId",
        "displayName",
        "enrollmentProfileName",
        "manufacturer",
        "model",
        "operatingSystem",
        "operatingSystemVersion",
        "ownership",
        "deviceOwnership",
        "isCompliant",
        "mdmAppId",
        "physicalIds",
        "systemLabels",
        "profileType",
        "trustType",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    allowed.extend((1..=15).map(|i| format!("extensionAttribute{i}")));
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    reject_unknown(o, &allowed)?;
    let s = |key: &str| -> FieldResult<Option<String>> { Ok(o.string(key)?.map(str::to_owned)) };
    let mut extension_attributes: [Option<String>; 15] = Default::default();
    for (i, slot) in extension_attributes.iter_mut().enumerate() {
        *slot = s(&format!("extensionAttribute{}", i + 1))?;
    }
    let list = |key: &str| -> FieldResult<Option<Vec<String>>> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            _ => Ok(Some(o.strings(key)?.into_iter().map(str::to_owned).collect())),
        }
    };
    Ok(DeviceAttributes {
        device_id: s("deviceId")?,
        display_name: s("displayName")?,
        enrollment_profile_name: s("enrollmentProfileName")?,
        manufacturer: s("manufacturer")?,
        model: s("model")?,
        operating_system: s("operatingSystem")?,
        operating_system_version: s("operatingSystemVersion")?,
        extension_attributes,
        device_ownership: s("ownership")?.or(s("deviceOwnership")?),
        is_compliant: o.bool("isCompliant")?,
        mdm_app_id: s("mdmAppId")?,
        physical_ids: list("physicalIds")?,
        system_labels: list("systemLabels")?,
        profile_type: s("profileType")?,
        trust_type: s("trustType")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_graph_example_body() {
        let body = json!({
            "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": "15DC174B-F34E-4359-AB06-4B8AA3DD6D43"},
            "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": ["00000003-0000-0ff1-ce00-000000000000"]},
            "signInConditions": {"devicePlatform": "windows", "country": "us", "ipAddress": "40.77.182.32", "insiderRiskLevel": "minor", "userRiskLevel": "low", "signInRiskLevel": "low"},
            "appliedPoliciesOnly": true
        });
        let r = SignInRequest::from_json(&body).unwrap();
        assert!(
            matches!(r.identity, Identity::User { ref user_id, .. } if user_id == "15dc174b-f34e-4359-ab06-4b8aa3dd6d43")
        );
        assert_eq!(r.conditions.country, Some(Some("US".into())));
        assert_eq!(r.conditions.device_platform, Some(Platform::Windows));
        assert!(r.conditions.client_app_type.is_none());
        assert!(r.applied_policies_only);
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let err = SignInRequest::from_json(&json!({"signInContext": {}})).unwrap_err();
        assert_eq!(err.path.as_str(), "signInIdentity");
        let err = SignInRequest::from_json(&json!({
            "signInIdentity": {"userId": "u"}, "signInContext": {"includeApplications": ["a"]},
            "signInConditions": {"ipAddress": "300.1.1.1"}
        }))
        .unwrap_err();
        assert_eq!(err.path.as_str(), "signInConditions.ipAddress");
        let err = SignInRequest::from_json(&json!({
            "signInIdentity": {"userId": "u"}, "signInContext": {"includeApplications": ["a"]},
            "signInConditions": {"contry": "FR"}
        }))
        .unwrap_err();
        assert_eq!(err.path.as_str(), "signInConditions.contry");
    }
}
