//! Directory objects that Conditional Access reads: users, groups, role assignments, apps.

use serde_json::{Map, Value};

use crate::json::{FieldResult, Obj, normalize_id, odata_type};

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub user_principal_name: Option<String>,
    pub display_name: String,
    pub is_guest: bool,
    /// `creationType == Invitation`, `externalUserState` set or `#EXT#` in the UPN: the account
    /// lives in another tenant.
    pub is_external: bool,
    pub account_enabled: bool,
    pub manager: Option<String>,
    /// Groups and role templates named in an expanded `memberOf`.
    pub member_of_groups: Vec<String>,
    pub member_of_roles: Vec<String>,
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub display_name: String,
    /// Member object ids: users or groups (nested).
    pub members: Vec<String>,
    pub raw: Map<String, Value>,
}

/// A built-in directory role held by a principal (user or group), tenant-wide or scoped.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleAssignment {
    pub principal_id: String,
    pub role_template_id: String,
    /// `/` for tenant-wide; Conditional Access ignores administrative-unit-scoped assignments.
    pub directory_scope_id: String,
    pub raw: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    pub app_id: String,
    /// The service principal's object id, when the export has it.
    pub object_id: Option<String>,
    pub display_name: String,
    pub raw: Map<String, Value>,
}

pub fn parse_user(o: Obj<'_>) -> FieldResult<User> {
    let id = normalize_id(o.required_string("id")?);
    let is_guest = o.string("userType")?.is_some_and(|t| t.eq_ignore_ascii_case("guest"));
    let invited = o.string("creationType")?.is_some_and(|t| t.eq_ignore_ascii_case("invitation"));
    let external_state = o.string("externalUserState")?.is_some_and(|s| !s.trim().is_empty());
    // Invited accounts carry `#EXT#` in their UPN even when an export omits the other marks.
    let ext_upn =
        o.string("userPrincipalName")?.is_some_and(|u| u.to_ascii_uppercase().contains("#EXT#"));
    let manager = match o.get("manager") {
        Some(Value::String(s)) => Some(normalize_id(s)),
        Some(Value::Object(m)) => m.get("id").and_then(Value::as_str).map(normalize_id),
        _ => None,
    };
    let mut member_of_groups = Vec::new();
    let mut member_of_roles = Vec::new();
    for key in ["memberOf", "transitiveMemberOf"] {
        for (m, p) in o.objects(key)? {
            let item = Obj { map: m, path: &p };
            match odata_type(m).as_deref() {
                Some("directoryrole") => {
                    if let Some(t) = item.string("roleTemplateId")? {
                        member_of_roles.push(normalize_id(t));
                    }
                }
                _ => {
                    if let Some(g) = item.string("id")? {
                        member_of_groups.push(normalize_id(g));
                    }
                }
            }
        }
    }
    Ok(User {
        id,
        user_principal_name: o.string("userPrincipalName")?.map(str::to_owned),
        display_name: o.string("displayName")?.unwrap_or_default().to_owned(),
        is_guest,
        is_external: invited || external_state || ext_upn,
        account_enabled: o.bool("accountEnabled")?.unwrap_or(true),
        manager,
        member_of_groups,
        member_of_roles,
        raw: o.map.clone(),
    })
}

pub fn parse_group(o: Obj<'_>) -> FieldResult<Group> {
    let mut members = Vec::new();
    for (m, p) in o.objects("members")? {
        members.push(normalize_id(Obj { map: m, path: &p }.required_string("id")?));
    }
    // `members@odata.bind` as used in create bodies: ".../directoryObjects/{id}".
    for link in o.strings("members@odata.bind")? {
        if let Some(id) = link.rsplit('/').next() {
            members.push(normalize_id(id.trim_matches(|c| c == '\'' || c == '(' || c == ')')));
        }
    }
    Ok(Group {
        id: normalize_id(o.required_string("id")?),
        display_name: o.string("displayName")?.unwrap_or_default().to_owned(),
        members,
        raw: o.map.clone(),
    })
}

pub fn parse_role_assignment(o: Obj<'_>) -> FieldResult<RoleAssignment> {
    Ok(RoleAssignment {
        principal_id: normalize_id(o.required_string("principalId")?),
        role_template_id: normalize_id(o.required_string("roleDefinitionId")?),
        directory_scope_id: o.string("directoryScopeId")?.unwrap_or("/").to_owned(),
        raw: o.map.clone(),
    })
}

/// The legacy `directoryRole` shape with expanded `members` becomes one assignment per member.
pub fn parse_directory_role(o: Obj<'_>) -> FieldResult<Vec<RoleAssignment>> {
    let template = normalize_id(o.required_string("roleTemplateId")?);
    let mut out = Vec::new();
    for (m, p) in o.objects("members")? {
        let member = Obj { map: m, path: &p };
        out.push(RoleAssignment {
            principal_id: normalize_id(member.required_string("id")?),
            role_template_id: template.clone(),
            directory_scope_id: "/".into(),
            raw: m.clone(),
        });
    }
    Ok(out)
}

pub fn parse_application(o: Obj<'_>) -> FieldResult<Application> {
    Ok(Application {
        app_id: normalize_id(o.required_string("appId")?),
        object_id: o.string("id")?.map(normalize_id),
        display_name: o.string("displayName")?.unwrap_or_default().to_owned(),
        raw: o.map.clone(),
    })
}
