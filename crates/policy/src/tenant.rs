//! A tenant export: every object Conditional Access needs, loaded from Graph JSON documents.
//!
//! Loading is all-or-nothing. One unreadable policy refuses the whole tenant, because silently
//! dropping a block policy is how tenants get opened up.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::diagnostic::{Code, Diagnostic, LoadError};
use crate::json::{self, JsonPath, Obj, normalize_id, odata_type};
use crate::model::directory::{self, Application, Group, RoleAssignment, User};
use crate::model::location::{self, NamedLocation};
use crate::model::policy::{self, Policy};
use crate::model::strength::{self, AuthenticationStrength};

/// One input document: a name for messages (a path relative to the tenant folder) and its bytes.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Tenant {
    pub policies: Vec<Policy>,
    pub named_locations: Vec<NamedLocation>,
    pub users: Vec<User>,
    pub groups: Vec<Group>,
    pub role_assignments: Vec<RoleAssignment>,
    pub applications: Vec<Application>,
    /// Custom strengths; the built-in ones are always present in a compiled snapshot.
    pub strengths: Vec<AuthenticationStrength>,
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub tenant: Tenant,
    pub warnings: Vec<Diagnostic>,
}

/// Loads every document, validates every object, and refuses the tenant if anything is wrong.
pub fn load(files: &[SourceFile]) -> Result<Loaded, LoadError> {
    let mut loader = Loader::default();
    for file in files {
        loader.file(file);
    }
    loader.check_duplicates();
    if !loader.errors.is_empty() {
        return Err(LoadError { errors: loader.errors, warnings: loader.warnings });
    }
    let mut warnings = loader.warnings;
    warnings.extend(crate::lint::lint(&loader.tenant, &loader.origins));
    Ok(Loaded { tenant: loader.tenant, warnings })
}

/// Where each policy and location came from, for messages after loading.
#[derive(Debug, Default)]
pub struct Origins {
    /// The file each object was read from (the first, for duplicates), by kind and id.
    pub file: HashMap<(String, String), String>,
}

impl Origins {
    pub fn policy_file(&self, id: &str) -> Option<&String> {
        self.file.get(&("policy".to_owned(), id.to_owned()))
    }

    fn record(&mut self, kind: &str, id: &str, file: &str) {
        self.file.entry((kind.to_owned(), id.to_owned())).or_insert_with(|| file.to_owned());
    }
}

#[derive(Default)]
struct Loader {
    tenant: Tenant,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    origins: Origins,
}

impl Loader {
    fn file(&mut self, file: &SourceFile) {
        let diag = |code, message: String| Diagnostic {
            code,
            file: file.name.clone(),
            object: None,
            path: None,
            message,
        };
        let text = match json::decode_text(&file.bytes) {
            Ok(t) => t,
            Err(e) => return self.errors.push(diag(Code::Encoding, e)),
        };
        let doc = match json::parse(&text) {
            Ok(v) => v,
            Err(e) => return self.errors.push(diag(Code::Json, e)),
        };
        // One object, an array of objects, or a Graph collection `{"value": [...]}`.
        // One page of a paged collection is not the collection: the rest would be missing.
        if let Value::Object(m) = &doc
            && m.contains_key("@odata.nextLink")
        {
            return self.errors.push(diag(
                Code::InvalidField,
                "is one page of a paged Graph collection (`@odata.nextLink`): export every page"
                    .into(),
            ));
        }
        let (items, base): (Vec<&Value>, JsonPath) = match &doc {
            Value::Array(a) => (a.iter().collect(), JsonPath::root()),
            Value::Object(m)
                if m.get("value").is_some_and(Value::is_array) && !m.contains_key("conditions") =>
            {
                let a = m.get("value").and_then(Value::as_array).map(|a| a.iter().collect());
                (a.unwrap_or_default(), JsonPath::root().key("value"))
            }
            other => (vec![other], JsonPath::root()),
        };
        let many = !matches!(doc, Value::Object(ref m) if !m.contains_key("value"));
        for (i, item) in items.into_iter().enumerate() {
            let path = if many { base.index(i) } else { base.clone() };
            self.object(file, i, item, &path);
        }
    }

    fn object(&mut self, file: &SourceFile, index: usize, value: &Value, path: &JsonPath) {
        let Value::Object(map) = value else {
            return self.errors.push(Diagnostic {
                code: Code::InvalidField,
                file: file.name.clone(),
                object: None,
                path: Some(path.to_string()),
                message: format!("expected an object, found {}", json::type_name(value)),
            });
        };
        let kind = classify(map);
        let label = label(kind, map, index);
        // Object paths are reported relative to the object; the object label says which one.
        let rel = JsonPath::root();
        let o = Obj { map, path: &rel };
        let result: Result<(), json::FieldError> = match kind {
            Kind::Policy => {
                let (id, derived) = match map.get("id").and_then(Value::as_str) {
                    Some(id) if !id.trim().is_empty() => (normalize_id(id), false),
                    _ => (derived_id(&file.name, index), true),
                };
                let mut notes = Vec::new();
                policy::parse_policy(o, id.clone(), &mut notes).map(|p| {
                    if derived {
                        self.warn(
                            file,
                            &label,
                            None,
                            Code::DerivedId,
                            format!("has no id; using the derived id `{id}`"),
                        );
                    }
                    for (p, note) in notes {
                        self.warn(file, &label, Some(p.to_string()), Code::Unsupported, note);
                    }
                    self.origins.record("policy", &id, &file.name);
                    self.tenant.policies.push(p);
                })
            }
            Kind::Location(k) => {
                let id = map
                    .get("id")
                    .and_then(Value::as_str)
                    .map(normalize_id)
                    .unwrap_or_else(|| derived_id(&file.name, index));
                location::parse_named_location(o, k, id)
                    .map(|l| self.tenant.named_locations.push(l))
            }
            Kind::User => directory::parse_user(o).map(|u| {
                self.origins.record("user", &u.id, &file.name);
                self.tenant.users.push(u);
            }),
            Kind::Group => directory::parse_group(o).map(|g| {
                self.origins.record("group", &g.id, &file.name);
                self.tenant.groups.push(g);
            }),
            Kind::RoleAssignment => {
                directory::parse_role_assignment(o).map(|r| self.tenant.role_assignments.push(r))
            }
            Kind::DirectoryRole => {
                directory::parse_directory_role(o).map(|rs| self.tenant.role_assignments.extend(rs))
            }
            Kind::Application => {
                directory::parse_application(o).map(|a| self.tenant.applications.push(a))
            }
            Kind::Strength => match o.required_string("id") {
                Ok(id) => {
                    let id = normalize_id(id);
                    let reserved = strength::built_in_strengths().iter().any(|b| b.id == id);
                    strength::parse_strength(o, id).and_then(|s| match (reserved, s.built_in) {
                        // Built-ins are pinned in code; an export's copy adds nothing.
                        (true, true) => Ok(()),
                        (true, false) => Err(json::FieldError::new(
                            &rel.key("id"),
                            "is a built-in authentication strength id; a custom strength cannot redefine it",
                        )),
                        (false, _) => {
                            self.tenant.strengths.push(s);
                            Ok(())
                        }
                    })
                }
                Err(e) => Err(e),
            },
            Kind::Ignored => Ok(()),
            // Refused, not skipped: an unrecognised wrapper could be hiding a file of
            // policies, and dropping a block policy silently opens the tenant.
            Kind::Unknown => Err(json::FieldError::new(
                &rel,
                "is not an object Gatehouse recognises (expected a policy, named location, user, group, role assignment, application or authentication strength, with its @odata.type)",
            )),
        };
        if let Err(e) = result {
            self.errors.push(Diagnostic {
                code: if kind == Kind::Unknown { Code::UnknownObject } else { Code::InvalidField },
                file: file.name.clone(),
                object: Some(label),
                path: Some(e.path.to_string()),
                message: e.message,
            });
        }
    }

    fn warn(
        &mut self,
        file: &SourceFile,
        label: &str,
        path: Option<String>,
        code: Code,
        message: String,
    ) {
        self.warnings.push(Diagnostic {
            code,
            file: file.name.clone(),
            object: Some(label.to_owned()),
            path,
            message,
        });
    }

    /// The same id twice is an error unless both copies are identical (exports overlap), in
    /// which case one is kept with a warning.
    fn check_duplicates(&mut self) {
        let t = &mut self.tenant;
        let o = &self.origins;
        let mut found = Vec::new();
        let file = |kind: &str, id: &str| o.file.get(&(kind.to_owned(), id.to_owned())).cloned();
        dedupe(
            &mut t.policies,
            |p| (&p.id, &p.raw),
            |p| (file("policy", &p.id), format!("policy {:?}", p.display_name)),
            "policies",
            &mut found,
        );
        dedupe(
            &mut t.named_locations,
            |l| (&l.id, &l.raw),
            |l| (file("location", &l.id), format!("named location {:?}", l.display_name)),
            "named locations",
            &mut found,
        );
        dedupe(
            &mut t.users,
            |u| (&u.id, &u.raw),
            |u| {
                let name = u.user_principal_name.as_deref().unwrap_or(&u.id);
                (file("user", &u.id), format!("user {name:?}"))
            },
            "users",
            &mut found,
        );
        dedupe(
            &mut t.groups,
            |g| (&g.id, &g.raw),
            |g| (file("group", &g.id), format!("group {:?}", g.display_name)),
            "groups",
            &mut found,
        );
        // Strengths carry no raw copy: compare what they allow.
        let mut strengths: HashMap<&str, &Vec<String>> = HashMap::new();
        for st in &t.strengths {
            if let Some(first) = strengths.insert(&st.id, &st.combination_names)
                && *first != st.combination_names
            {
                found.push((
                    false,
                    Diagnostic {
                        code: Code::DuplicateId,
                        file: String::new(),
                        object: Some(format!("authentication strength {:?}", st.display_name)),
                        path: Some("id".into()),
                        message: format!(
                            "two different authentication strengths share the id `{}`",
                            st.id
                        ),
                    },
                ));
            }
        }
        for (identical, d) in found {
            if identical { self.warnings.push(d) } else { self.errors.push(d) }
        }
        if self.tenant.policies.len() > crate::snapshot::MAX_POLICIES {
            self.errors.push(Diagnostic {
                code: Code::ServiceLimit,
                file: String::new(),
                object: None,
                path: None,
                message: format!(
                    "{} policies: Gatehouse evaluates at most {} (Entra allows 195)",
                    self.tenant.policies.len(),
                    crate::snapshot::MAX_POLICIES
                ),
            });
        }
    }
}

/// Drops identical copies of an object and reports them (`true`: identical, a warning) or
/// reports different objects sharing one id (`false`: an error).
fn dedupe<T>(
    items: &mut Vec<T>,
    key: impl Fn(&T) -> (&String, &Map<String, Value>),
    describe: impl Fn(&T) -> (Option<String>, String),
    kind: &str,
    found: &mut Vec<(bool, Diagnostic)>,
) {
    let mut seen: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut keep = Vec::with_capacity(items.len());
    for item in items.iter() {
        let (id, raw) = key(item);
        let (file, object) = describe(item);
        let diag = |message: String| Diagnostic {
            code: Code::DuplicateId,
            file: file.clone().unwrap_or_default(),
            object: Some(object.clone()),
            path: Some("id".into()),
            message,
        };
        match seen.get(id.as_str()) {
            Some(first) if first == raw => {
                found.push((
                    true,
                    diag(format!("appears twice with id `{id}`; identical copies, one kept")),
                ));
                keep.push(false);
            }
            Some(_) => {
                found.push((false, diag(format!("two different {kind} share the id `{id}`"))));
                keep.push(true);
            }
            None => {
                seen.insert(id.clone(), raw.clone());
                keep.push(true);
            }
        }
    }
    let mut flags = keep.into_iter();
    items.retain(|_| flags.next().unwrap_or(true));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Policy,
    Location(&'static str),
    User,
    Group,
    RoleAssignment,
    DirectoryRole,
    Application,
    Strength,
    /// Objects exports carry that Conditional Access does not need (devices, agreements…).
    Ignored,
    Unknown,
}

fn classify(map: &Map<String, Value>) -> Kind {
    let t = odata_type(map);
    match t.as_deref() {
        Some("conditionalaccesspolicy") => Kind::Policy,
        Some("user") => Kind::User,
        Some("group") => Kind::Group,
        Some("unifiedroleassignment") => Kind::RoleAssignment,
        Some("directoryrole") => Kind::DirectoryRole,
        Some("application" | "serviceprincipal") => Kind::Application,
        Some("authenticationstrengthpolicy") => Kind::Strength,
        Some("device" | "agreement" | "authenticationcontextclassreference") => Kind::Ignored,
        Some(other) => match location::location_kind_of(Some(other), map) {
            Some(k) => Kind::Location(k),
            None => Kind::Unknown,
        },
        None => {
            // Hand-written files often omit @odata.type: recognise them by their fields.
            if map.contains_key("conditions") || map.contains_key("grantControls") {
                Kind::Policy
            } else if let Some(k) = location::location_kind_of(None, map) {
                Kind::Location(k)
            } else if map.contains_key("principalId") && map.contains_key("roleDefinitionId") {
                Kind::RoleAssignment
            } else if map.contains_key("allowedCombinations") {
                Kind::Strength
            } else if map.contains_key("userPrincipalName") || map.contains_key("userType") {
                Kind::User
            } else if map.contains_key("members")
                || map.contains_key("securityEnabled")
                || map.contains_key("groupTypes")
            {
                Kind::Group
            } else if map.contains_key("roleTemplateId") {
                Kind::DirectoryRole
            } else if map.contains_key("appId") {
                Kind::Application
            } else {
                Kind::Unknown
            }
        }
    }
}

fn label(kind: Kind, map: &Map<String, Value>, index: usize) -> String {
    let name = map
        .get("displayName")
        .and_then(Value::as_str)
        .or_else(|| map.get("userPrincipalName").and_then(Value::as_str))
        .or_else(|| map.get("id").and_then(Value::as_str));
    let what = match kind {
        Kind::Policy => "policy",
        Kind::Location(_) => "named location",
        Kind::User => "user",
        Kind::Group => "group",
        Kind::RoleAssignment | Kind::DirectoryRole => "role assignment",
        Kind::Application => "application",
        Kind::Strength => "authentication strength",
        Kind::Ignored | Kind::Unknown => "object",
    };
    match name {
        Some(n) => format!("{what} {n:?}"),
        None => format!("{what} #{}", index + 1),
    }
}

/// A stable, GUID-shaped id for an object that has none: the same file and position always give
/// the same id, so What-If results and cases can refer to it.
pub fn derived_id(file: &str, index: usize) -> String {
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in file.bytes().chain(index.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0), fnv(0x9e37_79b9_7f4a_7c15));
    format!(
        "{:08x}-{:04x}-8{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Writes a tenant back out as one Graph collection per kind, each object as it was read.
pub fn export(tenant: &Tenant) -> Vec<(String, Value)> {
    let coll = |items: Vec<Map<String, Value>>| serde_json::json!({ "value": items });
    vec![
        ("policies.json".into(), coll(tenant.policies.iter().map(|p| p.raw.clone()).collect())),
        (
            "namedLocations.json".into(),
            coll(tenant.named_locations.iter().map(|l| l.raw.clone()).collect()),
        ),
        ("users.json".into(), coll(tenant.users.iter().map(|u| u.raw.clone()).collect())),
        ("groups.json".into(), coll(tenant.groups.iter().map(|g| g.raw.clone()).collect())),
        (
            "roleAssignments.json".into(),
            coll(tenant.role_assignments.iter().map(|r| r.raw.clone()).collect()),
        ),
        (
            "applications.json".into(),
            coll(tenant.applications.iter().map(|a| a.raw.clone()).collect()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> SourceFile {
        SourceFile { name: name.into(), bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_id("a.json", 0), derived_id("a.json", 0));
        assert_ne!(derived_id("a.json", 0), derived_id("a.json", 1));
        assert_ne!(derived_id("a.json", 0), derived_id("b.json", 0));
        assert_eq!(derived_id("a.json", 0).len(), 36);
    }

    #[test]
    fn one_bad_policy_refuses_the_tenant_with_file_policy_and_path() {
        let good = r#"{"displayName":"ok","state":"enabled","conditions":{"users":{"includeUsers":["All"]},"applications":{"includeApplications":["All"]}},"grantControls":{"operator":"OR","builtInControls":["mfa"]}}"#;
        let bad = r#"{"displayName":"011-Block","state":"enabled","conditions":{"users":{"includeUsers":"All"},"applications":{"includeApplications":["All"]}},"grantControls":{"operator":"OR","builtInControls":["block"]}}"#;
        let err =
            load(&[file("policies/001.json", good), file("policies/011.json", bad)]).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(
            err.errors[0].to_string(),
            r#"policies/011.json: policy "011-Block": conditions.users.includeUsers: expected an array, found a string"#
        );
    }

    #[test]
    fn identical_duplicates_are_merged_and_conflicting_ones_refused() {
        let p = |name: &str| {
            format!(
                r#"{{"id":"X1","displayName":"{name}","state":"enabled","conditions":{{"users":{{"includeUsers":["All"]}},"applications":{{"includeApplications":["All"]}}}},"grantControls":{{"builtInControls":["mfa"]}}}}"#
            )
        };
        let ok = load(&[file("a.json", &p("a")), file("b.json", &p("a"))]).unwrap();
        assert_eq!(ok.tenant.policies.len(), 1);
        assert!(load(&[file("a.json", &p("a")), file("b.json", &p("b"))]).is_err());
    }
}
