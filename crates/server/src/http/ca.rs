//! Conditional Access over the Graph API: policies, named locations and authentication strengths
//! under `/identity/conditionalAccess`, and What-If (`evaluate`) against the live snapshot.
//!
//! Every object is validated by the engine's own loader (`check_one`, what an import runs), so
//! the API stores nothing a node could not load back. Writes add what Entra adds: a display
//! name, references to objects that exist, no control the engine does not know, no combination
//! Entra refuses. The decisions are in docs/conditional-access.md, "The server".

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use gatehouse_core::directory::check_one;
use gatehouse_core::roles::{Access, area};
use gatehouse_core::{Change, Directory};
use gatehouse_policy::json::{normalize_id, odata_type};
use gatehouse_policy::model::enums::BuiltInControl;
use gatehouse_policy::model::location::{LocationKind, NamedLocation};
use gatehouse_policy::model::policy::{LocationRef, Policy, UserRef};
use gatehouse_policy::model::strength::{AuthenticationStrength, built_in_strengths};
use gatehouse_policy::{Code, Notice, SignInRequest, suites};
use serde_json::{Map, Value, json};

use super::graph::{self, Body};
use super::odata::{OData, Spec};
use super::{Api, ApiError, ApiResult, Caller};
use crate::state::AppState;
use crate::store::{AuditRecord, AuditTarget, Write};

const POLICIES: &str = "identity/conditionalAccess/policies";
const LOCATIONS: &str = "identity/conditionalAccess/namedLocations";
const STRENGTHS: &str = "identity/conditionalAccess/authenticationStrength/policies";
const STRENGTHS_ALIAS: &str = "policies/authenticationStrengthPolicies";

/// Entra's limit on custom authentication strengths per tenant.
const MAX_CUSTOM_STRENGTHS: usize = 15;

/// Properties the server owns: ignored in request bodies.
const READ_ONLY: &[&str] = &["id", "createdDateTime", "modifiedDateTime"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Policy,
    Location,
    Strength,
}

impl Kind {
    /// The name the engine's loader is given (its messages never reach clients).
    fn file(self) -> &'static str {
        match self {
            Kind::Policy => "conditionalAccessPolicy.json",
            Kind::Location => "namedLocation.json",
            Kind::Strength => "authenticationStrength.json",
        }
    }

    /// In messages and audit activities (`Add named location`).
    fn noun(self) -> &'static str {
        match self {
            Kind::Policy => "conditional access policy",
            Kind::Location => "named location",
            Kind::Strength => "authentication strength policy",
        }
    }

    fn put(self, object: Map<String, Value>) -> Change {
        match self {
            Kind::Policy => Change::PutPolicy { policy: object },
            Kind::Location => Change::PutNamedLocation { location: object },
            Kind::Strength => Change::PutStrength { strength: object },
        }
    }

    fn delete(self, id: String) -> Change {
        match self {
            Kind::Policy => Change::DeletePolicy { id },
            Kind::Location => Change::DeleteNamedLocation { id },
            Kind::Strength => Change::DeleteStrength { id },
        }
    }
}

pub fn routes(api: Api) -> Api {
    let read = Access::Roles(area::CA_READ);
    let write = Access::Roles(area::CA_WRITE);
    let p = "/v1.0/identity/conditionalAccess/policies";
    let p_id = "/v1.0/identity/conditionalAccess/policies/{id}";
    let l = "/v1.0/identity/conditionalAccess/namedLocations";
    let l_id = "/v1.0/identity/conditionalAccess/namedLocations/{id}";
    let api = api
        .route(
            Method::GET,
            p,
            read,
            "List Conditional Access policies",
            |s: State<AppState>, q: OData| list(s, q, Kind::Policy, POLICIES),
        )
        .route(
            Method::POST,
            p,
            write,
            "Create a Conditional Access policy",
            |s: State<AppState>, c: Caller, b: Body| create(s, c, b, Kind::Policy, POLICIES),
        )
        .route(
            Method::GET,
            p_id,
            read,
            "Get a Conditional Access policy",
            |s: State<AppState>, q: OData, id: Path<String>| get(s, q, id, Kind::Policy, POLICIES),
        )
        .route(
            Method::PATCH,
            p_id,
            write,
            "Update a Conditional Access policy (conditions and session controls merge per member)",
            |s: State<AppState>, c: Caller, id: Path<String>, b: Body| {
                update(s, c, id, b, Kind::Policy)
            },
        )
        .route(
            Method::DELETE,
            p_id,
            write,
            "Delete a Conditional Access policy",
            |s: State<AppState>, c: Caller, id: Path<String>, q: OData| {
                delete(s, c, id, q, Kind::Policy)
            },
        )
        .route(Method::GET, l, read, "List named locations", |s: State<AppState>, q: OData| {
            list(s, q, Kind::Location, LOCATIONS)
        })
        .route(
            Method::POST,
            l,
            write,
            "Create an IP or country named location (`@odata.type` required)",
            |s: State<AppState>, c: Caller, b: Body| create(s, c, b, Kind::Location, LOCATIONS),
        )
        .route(
            Method::GET,
            l_id,
            read,
            "Get a named location",
            |s: State<AppState>, q: OData, id: Path<String>| {
                get(s, q, id, Kind::Location, LOCATIONS)
            },
        )
        .route(
            Method::PATCH,
            l_id,
            write,
            "Update a named location (`@odata.type` required)",
            |s: State<AppState>, c: Caller, id: Path<String>, b: Body| {
                update(s, c, id, b, Kind::Location)
            },
        )
        .route(
            Method::DELETE,
            l_id,
            write,
            "Delete a named location (409 while a policy uses it, unless `?force=true`)",
            |s: State<AppState>, c: Caller, id: Path<String>, q: OData| {
                delete(s, c, id, q, Kind::Location)
            },
        )
        .route(
            Method::POST,
            "/v1.0/identity/conditionalAccess/evaluate",
            read,
            "What If: evaluate a sign-in against the live policies",
            evaluate,
        );
    let api = strength_routes(
        api,
        "/v1.0/identity/conditionalAccess/authenticationStrength/policies",
        "/v1.0/identity/conditionalAccess/authenticationStrength/policies/{id}",
        STRENGTHS,
    );
    strength_routes(
        api,
        "/v1.0/policies/authenticationStrengthPolicies",
        "/v1.0/policies/authenticationStrengthPolicies/{id}",
        STRENGTHS_ALIAS,
    )
}

/// Strengths are served at two paths (Graph has both); `context` is the one answered with.
fn strength_routes(
    api: Api,
    base: &'static str,
    with_id: &'static str,
    context: &'static str,
) -> Api {
    let read = Access::Roles(area::CA_READ);
    let write = Access::Roles(area::CA_WRITE);
    api.route(
        Method::GET,
        base,
        read,
        "List authentication strengths (built-in and custom)",
        move |s: State<AppState>, q: OData| list(s, q, Kind::Strength, context),
    )
    .route(
        Method::POST,
        base,
        write,
        "Create a custom authentication strength",
        move |s: State<AppState>, c: Caller, b: Body| create(s, c, b, Kind::Strength, context),
    )
    .route(
        Method::GET,
        with_id,
        read,
        "Get an authentication strength",
        move |s: State<AppState>, q: OData, id: Path<String>| get(s, q, id, Kind::Strength, context),
    )
    .route(
        Method::PATCH,
        with_id,
        write,
        "Update a custom authentication strength (built-ins are read-only)",
        |s: State<AppState>, c: Caller, id: Path<String>, b: Body| update(s, c, id, b, Kind::Strength),
    )
    .route(
        Method::DELETE,
        with_id,
        write,
        "Delete a custom authentication strength (409 while a policy uses it, unless `?force=true`)",
        |s: State<AppState>, c: Caller, id: Path<String>, q: OData| delete(s, c, id, q, Kind::Strength),
    )
}

// ----- reading -----

/// Every object of a kind as clients see it, in id order (the paging order).
fn all(dir: &Directory, kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Policy => dir.policies().map(|p| Value::Object(p.raw.clone())).collect(),
        Kind::Location => dir.named_locations().map(location_json).collect(),
        Kind::Strength => {
            let mut out: Vec<(String, Value)> =
                built_in_strengths().iter().map(|s| (s.id.clone(), built_in_json(s))).collect();
            out.extend(dir.strengths().map(|s| (s.id.clone(), strength_json(s))));
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out.into_iter().map(|(_, v)| v).collect()
        }
    }
}

/// One object as clients see it.
fn one(dir: &Directory, kind: Kind, id: &str) -> Option<Value> {
    match kind {
        Kind::Policy => dir.policy(id).map(|p| Value::Object(p.raw.clone())),
        Kind::Location => dir.named_location(id).map(location_json),
        Kind::Strength => match built_in(id) {
            Some(s) => Some(built_in_json(&s)),
            None => dir.strength(id).map(strength_json),
        },
    }
}

/// The stored object of a kind (custom strengths only: built-ins are not stored).
fn stored(dir: &Directory, kind: Kind, id: &str) -> Option<Map<String, Value>> {
    match kind {
        Kind::Policy => dir.policy(id).map(|p| p.raw.clone()),
        Kind::Location => dir.named_location(id).map(|l| l.raw.clone()),
        Kind::Strength => dir.strength(id).map(|s| s.raw.clone()),
    }
}

fn location_type(kind: &LocationKind) -> &'static str {
    match kind {
        LocationKind::Ip { .. } => "#microsoft.graph.ipNamedLocation",
        LocationKind::Country { .. } => "#microsoft.graph.countryNamedLocation",
        LocationKind::CompliantNetwork => "#microsoft.graph.compliantNetworkNamedLocation",
    }
}

/// A named location with its `@odata.type` (kiota needs it to pick the subtype).
fn location_json(l: &NamedLocation) -> Value {
    let mut raw = l.raw.clone();
    raw.insert("@odata.type".into(), location_type(&l.kind).into());
    Value::Object(raw)
}

fn strength_json(s: &AuthenticationStrength) -> Value {
    let mut raw = s.raw.clone();
    raw.insert("@odata.type".into(), "#microsoft.graph.authenticationStrengthPolicy".into());
    Value::Object(raw)
}

fn built_in(id: &str) -> Option<AuthenticationStrength> {
    built_in_strengths().into_iter().find(|s| s.id == id)
}

/// A built-in strength in Graph's shape (descriptions and dates as Graph lists them).
fn built_in_json(s: &AuthenticationStrength) -> Value {
    let description = match s.id.as_str() {
        "00000000-0000-0000-0000-000000000002" => {
            "Combinations of methods that satisfy strong authentication, such as a password + SMS"
        }
        "00000000-0000-0000-0000-000000000003" => {
            "Passwordless methods that satisfy strong authentication, such as Passwordless sign-in with the Microsoft Authenticator"
        }
        _ => {
            "Phishing-resistant, Passwordless methods for the strongest authentication, such as a FIDO2 security key"
        }
    };
    json!({
        "@odata.type": "#microsoft.graph.authenticationStrengthPolicy",
        "id": s.id,
        "createdDateTime": "2021-12-01T08:00:00Z",
        "modifiedDateTime": "2021-12-01T08:00:00Z",
        "displayName": s.display_name,
        "description": description,
        "policyType": "builtIn",
        "requirementsSatisfied": "mfa",
        "allowedCombinations": s.combination_names,
        "combinationConfigurations": [],
    })
}

fn not_found(kind: Kind, id: &str) -> ApiError {
    ApiError::item_not_found(format!("The {} `{id}` does not exist.", kind.noun()))
}

fn spec(kind: Kind) -> Spec {
    match kind {
        Kind::Policy => Spec {
            resource: "conditionalAccessPolicy",
            filterable: &["id", "displayName", "state", "createdDateTime", "modifiedDateTime"],
            searchable: &[],
            orderable: &["displayName"],
            expandable: &[],
        },
        Kind::Location => Spec {
            resource: "namedLocation",
            filterable: &["id", "displayName", "createdDateTime", "modifiedDateTime"],
            searchable: &[],
            orderable: &["displayName"],
            expandable: &[],
        },
        Kind::Strength => Spec {
            resource: "authenticationStrengthPolicy",
            filterable: &["id", "displayName", "policyType", "requirementsSatisfied"],
            searchable: &[],
            orderable: &["displayName"],
            expandable: &[],
        },
    }
}

fn id_of(v: &Value) -> &str {
    v.get("id").and_then(Value::as_str).unwrap_or_default()
}

async fn list(
    State(state): State<AppState>,
    query: OData,
    kind: Kind,
    path: &'static str,
) -> ApiResult<Response> {
    let items = all(&state.dir(), kind);
    let page =
        query.respond(&state, &spec(kind), path, items, id_of, Value::clone, |_, _| Ok(()))?;
    Ok(graph::ok(page))
}

async fn get(
    State(state): State<AppState>,
    query: OData,
    Path(id): Path<String>,
    kind: Kind,
    path: &'static str,
) -> ApiResult<Response> {
    let id = normalize_id(&id);
    let found = one(&state.dir(), kind, &id);
    let value = found.ok_or_else(|| not_found(kind, &id))?;
    Ok(graph::ok(query.entity(&state, &spec(kind), path, value, |_, _| Ok(()))?))
}

// ----- writing -----

/// A body with annotations and server-owned properties removed. `@odata.type`, when sent, must
/// name `kind`; a named location must send it (Graph requires it to pick the subtype).
fn clean_body(
    kind: Kind,
    body: Map<String, Value>,
    stored_type: Option<&str>,
) -> ApiResult<Map<String, Value>> {
    let declared = odata_type(&body);
    let canonical = match (kind, declared.as_deref()) {
        (Kind::Policy, None | Some("conditionalaccesspolicy")) => None,
        (Kind::Strength, None | Some("authenticationstrengthpolicy")) => None,
        (Kind::Location, Some("ipnamedlocation")) => Some("#microsoft.graph.ipNamedLocation"),
        (Kind::Location, Some("countrynamedlocation")) => {
            Some("#microsoft.graph.countryNamedLocation")
        }
        (Kind::Location, None) => {
            return Err(bad_field(
                "@odata.type",
                "is required: #microsoft.graph.ipNamedLocation or #microsoft.graph.countryNamedLocation",
            ));
        }
        (_, Some(other)) => {
            let expected = match kind {
                Kind::Policy => "#microsoft.graph.conditionalAccessPolicy",
                Kind::Strength => "#microsoft.graph.authenticationStrengthPolicy",
                Kind::Location => {
                    "#microsoft.graph.ipNamedLocation or #microsoft.graph.countryNamedLocation"
                }
            };
            return Err(bad_field(
                "@odata.type",
                &format!("`{other}` is not a {} (expected {expected})", kind.noun()),
            ));
        }
    };
    if let (Some(new), Some(old)) = (canonical, stored_type)
        && new != old
    {
        return Err(bad_field(
            "@odata.type",
            &format!(
                "a named location cannot change its type (it is `{old}`); delete it and create a new one"
            ),
        ));
    }
    let mut out: Map<String, Value> = body
        .into_iter()
        .filter(|(k, _)| !k.contains("@odata.") && !READ_ONLY.contains(&k.as_str()))
        .collect();
    if let Some(t) = canonical {
        out.insert("@odata.type".into(), t.into());
    }
    Ok(out)
}

fn bad_field(path: &str, message: &str) -> ApiError {
    ApiError::bad_request(format!("{path}: {message}")).with_target(path)
}

/// Each IP range carries its `@odata.type` (kiota needs it); clients may leave it out.
fn type_ip_ranges(object: &mut Map<String, Value>) {
    if let Some(Value::Array(ranges)) = object.get_mut("ipRanges") {
        for r in ranges.iter_mut().filter_map(Value::as_object_mut) {
            if r.contains_key("@odata.type") {
                continue;
            }
            let v6 = r.get("cidrAddress").and_then(Value::as_str).is_some_and(|c| c.contains(':'));
            let t = if v6 {
                "#microsoft.graph.iPv6CidrRange"
            } else {
                "#microsoft.graph.iPv4CidrRange"
            };
            r.insert("@odata.type".into(), t.into());
        }
    }
}

/// Validates `object` as the engine loads it, plus the rules of a write. `old` is the stored
/// version on update: references it already held are not re-checked, so a reference left
/// dangling by a forced delete does not block unrelated edits. Returns the display name.
fn validate(
    dir: &Directory,
    kind: Kind,
    object: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
) -> ApiResult<String> {
    let loaded = check_one(kind.file(), object).map_err(|e| {
        let Some(first) = e.errors.first() else {
            return ApiError::bad_request(format!("The {} is not valid.", kind.noun()));
        };
        let path = first.path.clone().unwrap_or_else(|| "(document)".into());
        let more = match e.errors.len() {
            0 | 1 => String::new(),
            n => format!(" (and {} more errors)", n - 1),
        };
        ApiError::bad_request(format!("{path}: {}{more}", first.message)).with_target(path)
    })?;
    if let Some(w) = loaded.warnings.iter().find(|w| w.code == Code::ServiceLimit) {
        let path = w.path.clone().unwrap_or_else(|| "(document)".into());
        return Err(bad_field(&path, &w.message));
    }
    let t = &loaded.tenant;
    let name = match kind {
        Kind::Policy => {
            let [p] = t.policies.as_slice() else {
                return Err(ApiError::bad_request("The body is not a conditional access policy."));
            };
            check_controls(p)?;
            let before = old
                .and_then(|o| check_one(kind.file(), o).ok())
                .and_then(|l| l.tenant.policies.into_iter().next());
            check_references(dir, p, before.as_ref())?;
            p.display_name.clone()
        }
        Kind::Location => {
            let [l] = t.named_locations.as_slice() else {
                return Err(ApiError::bad_request("The body is not a named location."));
            };
            l.display_name.clone()
        }
        Kind::Strength => {
            let [s] = t.strengths.as_slice() else {
                return Err(ApiError::bad_request(
                    "The body is not an authentication strength policy.",
                ));
            };
            if s.combinations.is_empty() {
                return Err(bad_field("allowedCombinations", "needs at least one combination"));
            }
            let configured = object
                .get("combinationConfigurations")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if configured {
                // Gatehouse would ignore them, allowing more than the strength says: refuse.
                return Err(bad_field(
                    "combinationConfigurations",
                    "are not supported (Gatehouse cannot enforce them)",
                ));
            }
            s.display_name.clone()
        }
    };
    if name.trim().is_empty() {
        return Err(bad_field("displayName", "is required"));
    }
    Ok(name)
}

/// A control the engine does not know can never be satisfied; an import keeps it (fail closed),
/// but a write refuses it, as Graph refuses an unknown enum value.
fn check_controls(p: &Policy) -> ApiResult<()> {
    let Some(g) = &p.grant else { return Ok(()) };
    for (i, c) in g.built_in.iter().enumerate() {
        if let BuiltInControl::Other(name) = c {
            return Err(bad_field(
                &format!("grantControls.builtInControls[{i}]"),
                &format!(
                    "`{name}` is not a valid built-in control (expected one of: block, mfa, compliantDevice, domainJoinedDevice, approvedApplication, compliantApplication, passwordChange, riskRemediation, compliantNetwork)"
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ref {
    User(String),
    Group(String),
    Role(String),
    Location(String),
    Strength(String),
}

/// Every directory object a policy names, with the path it is named at.
fn references(p: &Policy) -> Vec<(String, Ref)> {
    let mut out = Vec::new();
    if let Some(u) = &p.conditions.users {
        for (key, refs) in [("includeUsers", &u.include_users), ("excludeUsers", &u.exclude_users)]
        {
            for r in refs {
                if let UserRef::Id(id) = r {
                    out.push((format!("conditions.users.{key}"), Ref::User(id.clone())));
                }
            }
        }
        for (key, ids) in
            [("includeGroups", &u.include_groups), ("excludeGroups", &u.exclude_groups)]
        {
            out.extend(
                ids.iter().map(|id| (format!("conditions.users.{key}"), Ref::Group(id.clone()))),
            );
        }
        for (key, ids) in [("includeRoles", &u.include_roles), ("excludeRoles", &u.exclude_roles)] {
            out.extend(
                ids.iter().map(|id| (format!("conditions.users.{key}"), Ref::Role(id.clone()))),
            );
        }
    }
    if let Some(l) = &p.conditions.locations {
        for (key, refs) in [("includeLocations", &l.include), ("excludeLocations", &l.exclude)] {
            for r in refs {
                if let LocationRef::Id(id) = r {
                    out.push((format!("conditions.locations.{key}"), Ref::Location(id.clone())));
                }
            }
        }
    }
    if let Some(s) = p.grant.as_ref().and_then(|g| g.authentication_strength.as_ref()) {
        out.push(("grantControls.authenticationStrength.id".into(), Ref::Strength(s.id.clone())));
    }
    out
}

/// Entra refuses a policy that names a user, group, role, named location or strength that does
/// not exist (400); so does Gatehouse, for every reference the write adds.
fn check_references(dir: &Directory, p: &Policy, before: Option<&Policy>) -> ApiResult<()> {
    let held: HashSet<Ref> =
        before.map(|b| references(b).into_iter().map(|(_, r)| r).collect()).unwrap_or_default();
    for (path, r) in references(p) {
        if held.contains(&r) {
            continue;
        }
        let missing = match &r {
            Ref::User(id) => dir.user(id).is_none().then(|| format!("user `{id}` does not exist")),
            Ref::Group(id) => {
                dir.group(id).is_none().then(|| format!("group `{id}` does not exist"))
            }
            Ref::Role(id) => suites::built_in_role(id)
                .is_none()
                .then(|| format!("`{id}` is not a built-in directory role template id")),
            Ref::Location(id) => dir
                .named_location(id)
                .is_none()
                .then(|| format!("named location `{id}` does not exist")),
            Ref::Strength(id) => (built_in(id).is_none() && dir.strength(id).is_none())
                .then(|| format!("authentication strength `{id}` does not exist")),
        };
        if let Some(message) = missing {
            return Err(bad_field(&path, &message));
        }
    }
    Ok(())
}

fn audit(
    caller: &Caller,
    kind: Kind,
    verb: &str,
    id: &str,
    name: &str,
    reason: String,
) -> AuditRecord {
    AuditRecord {
        id: crate::random::guid(),
        category: "Policy",
        activity: format!("{verb} {}", kind.noun()),
        result: "success",
        result_reason: reason,
        initiated_by: caller.audit_actor(),
        targets: vec![AuditTarget {
            kind: "Policy",
            id: id.to_owned(),
            display_name: Some(name.to_owned()),
        }],
        correlation_id: crate::random::guid(),
        modified: Vec::new(),
    }
}

/// Commits, then brings this node's memory and snapshot up to date before the caller hears
/// back: the next request here sees the change. `w` is from `AppState::begin_write`, opened
/// before the object was validated (and, for an update, read): two PATCHes of one policy each
/// merge into what the other wrote, and none brings back a policy deleted meanwhile.
async fn commit(state: &AppState, w: Write, change: Change, audit: AuditRecord) -> ApiResult<()> {
    w.commit(state.now(), &[change], &[audit]).await?;
    state.sync().await?;
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body,
    kind: Kind,
    path: &'static str,
) -> ApiResult<Response> {
    let mut object = clean_body(kind, body, None)?;
    let id = crate::random::guid();
    let now = gatehouse_core::time::format(state.now());
    object.insert("id".into(), id.clone().into());
    object.insert("createdDateTime".into(), now.clone().into());
    object.insert("modifiedDateTime".into(), now.into());
    match kind {
        Kind::Policy => {
            object.insert("@odata.type".into(), "#microsoft.graph.conditionalAccessPolicy".into());
        }
        Kind::Location => type_ip_ranges(&mut object),
        Kind::Strength => {
            object.insert(
                "@odata.type".into(),
                "#microsoft.graph.authenticationStrengthPolicy".into(),
            );
            // Read-only in Graph: every custom strength is `custom` and yields the MFA claim.
            object.insert("policyType".into(), "custom".into());
            object.insert("requirementsSatisfied".into(), "mfa".into());
            object.entry("combinationConfigurations").or_insert_with(|| json!([]));
        }
    }
    let w = state.begin_write().await?;
    let name = {
        let dir = state.dir();
        if kind == Kind::Strength && dir.strengths().count() >= MAX_CUSTOM_STRENGTHS {
            return Err(ApiError::bad_request(format!(
                "A tenant holds at most {MAX_CUSTOM_STRENGTHS} custom authentication strengths."
            )));
        }
        validate(&dir, kind, &object, None)?
    };
    let record = audit(&caller, kind, "Add", &id, &name, String::new());
    commit(&state, w, kind.put(object.clone()), record).await?;
    let out = one(&state.dir(), kind, &id).unwrap_or(Value::Object(object));
    Ok(graph::created(graph::entity(&state, path, out)))
}

/// Graph PATCH: each property sent replaces the stored one, except `conditions` and
/// `sessionControls` of a policy, which merge per member (a condition or session control sent
/// replaces that one; those not sent are kept; `null` clears one). `grantControls` is replaced
/// whole: its operator and controls only make sense together.
fn merge(kind: Kind, stored: &Map<String, Value>, patch: Map<String, Value>) -> Map<String, Value> {
    let mut out = stored.clone();
    for (key, value) in patch {
        let per_member =
            kind == Kind::Policy && matches!(key.as_str(), "conditions" | "sessionControls");
        match (per_member, value, out.get_mut(&key)) {
            (true, Value::Object(members), Some(Value::Object(current))) => current.extend(members),
            (_, value, _) => {
                out.insert(key, value);
            }
        }
    }
    out
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
    kind: Kind,
) -> ApiResult<Response> {
    let id = normalize_id(&id);
    let w = state.begin_write().await?;
    let (object, name) = {
        let dir = state.dir();
        if kind == Kind::Strength && built_in(&id).is_some() {
            return Err(ApiError::bad_request(format!(
                "The built-in authentication strength `{id}` cannot be modified."
            )));
        }
        let current = stored(&dir, kind, &id).ok_or_else(|| not_found(kind, &id))?;
        let stored_type = match kind {
            Kind::Location => dir.named_location(&id).map(|l| location_type(&l.kind)),
            _ => None,
        };
        let patch = clean_body(kind, body, stored_type)?;
        let mut object = merge(kind, &current, patch);
        object.insert("modifiedDateTime".into(), gatehouse_core::time::format(state.now()).into());
        if kind == Kind::Location {
            type_ip_ranges(&mut object);
        }
        let name = validate(&dir, kind, &object, Some(&current))?;
        (object, name)
    };
    let record = audit(&caller, kind, "Update", &id, &name, String::new());
    commit(&state, w, kind.put(object), record).await?;
    Ok(graph::no_content())
}

/// The policies that would change meaning if `id` went away.
fn users_of(dir: &Directory, kind: Kind, id: &str) -> Vec<(String, String)> {
    let policies: Vec<&Policy> = match kind {
        Kind::Policy => Vec::new(),
        Kind::Location => dir.policies_referencing(id),
        Kind::Strength => dir
            .policies()
            .filter(|p| {
                p.grant
                    .as_ref()
                    .and_then(|g| g.authentication_strength.as_ref())
                    .is_some_and(|s| s.id == id)
            })
            .collect(),
    };
    policies.into_iter().map(|p| (p.id.clone(), p.display_name.clone())).collect()
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: OData,
    kind: Kind,
) -> ApiResult<Response> {
    let id = normalize_id(&id);
    // `?force=true` deletes an object policies still use.
    let force = query.flag("force")?;
    let w = state.begin_write().await?;
    let (name, users) = {
        let dir = state.dir();
        if kind == Kind::Strength && built_in(&id).is_some() {
            return Err(ApiError::bad_request(format!(
                "The built-in authentication strength `{id}` cannot be modified or deleted."
            )));
        }
        let current = stored(&dir, kind, &id).ok_or_else(|| not_found(kind, &id))?;
        let name =
            current.get("displayName").and_then(Value::as_str).unwrap_or_default().to_owned();
        (name, users_of(&dir, kind, &id))
    };
    if !users.is_empty() && !force {
        let list: Vec<String> =
            users.iter().map(|(pid, pname)| format!("\"{pname}\" ({pid})")).collect();
        return Err(ApiError::conflict(format!(
            "The {} `{id}` is used by {} conditional access {}: {}. Remove it from them first, or delete with `?force=true`.",
            kind.noun(),
            users.len(),
            if users.len() == 1 { "policy" } else { "policies" },
            list.join(", ")
        )));
    }
    let reason = if users.is_empty() {
        String::new()
    } else {
        format!("forced while used by {} policies", users.len())
    };
    let record = audit(&caller, kind, "Delete", &id, &name, reason);
    commit(&state, w, kind.delete(id), record).await?;
    Ok(graph::no_content())
}

// ----- What If -----

async fn evaluate(State(state): State<AppState>, Body(body): Body) -> ApiResult<Response> {
    let request = SignInRequest::from_json(&Value::Object(body))
        .map_err(|e| bad_field(e.path.as_str(), &e.message))?;
    let snapshot = state.snapshot_at(state.now()).await?;
    let evaluation = snapshot.evaluate(&request);
    // The live directory is authoritative: a subject it does not hold is a mistake, not a
    // "plain member" as offline What-If assumes for an incomplete export.
    for notice in &evaluation.notices {
        match notice {
            Notice::UnknownUser(id) => {
                return Err(bad_field(
                    "signInIdentity.userId",
                    &format!("user `{id}` does not exist"),
                ));
            }
            Notice::UnknownServicePrincipal(id) => {
                return Err(bad_field(
                    "signInIdentity.servicePrincipalId",
                    &format!("service principal `{id}` does not exist"),
                ));
            }
            Notice::UnknownApplication(_) => {}
        }
    }
    // Written as text from each policy's pre-rendered properties: no copy of a policy's object
    // per request (`docs/benchmarks.md`).
    let context = graph::context(&state, "Collection(microsoft.graph.whatIfAnalysisResult)");
    let text = evaluation.to_graph_text(&context);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], text).into_response())
}
