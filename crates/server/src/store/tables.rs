//! Directory rows: how each `Change` is written, and how the whole directory is read back.

use std::collections::HashMap;

use gatehouse_core::Change;
use gatehouse_core::directory::load_one;
use gatehouse_core::governance::model::GrantedRole;
use gatehouse_core::grants::GrantRow;
use gatehouse_policy::Tenant;
use gatehouse_policy::json::{JsonPath, Obj, normalize_id};
use gatehouse_policy::model::directory::{
    parse_application, parse_group, parse_role_assignment, parse_user,
};
use serde_json::{Map, Value};
use sqlx::{Any, Row, Transaction};

use super::{Result, StoreError, opt_text, text};

type Tx = Transaction<'static, Any>;

fn id_of(map: &Map<String, Value>) -> Result<String> {
    map.get("id")
        .and_then(Value::as_str)
        .map(normalize_id)
        .ok_or_else(|| StoreError::Corrupt("an object without an id reached the store".into()))
}

fn json(map: &Map<String, Value>) -> String {
    Value::Object(map.clone()).to_string()
}

async fn upsert(tx: &mut Tx, sql: &'static str, id: String, body: String) -> Result<()> {
    sqlx::query(sql).bind(id).bind(body).execute(&mut **tx).await?;
    Ok(())
}

async fn delete(tx: &mut Tx, sql: &'static str, id: &str) -> Result<()> {
    sqlx::query(sql).bind(id.to_owned()).execute(&mut **tx).await?;
    Ok(())
}

pub(super) async fn persist(tx: &mut Tx, change: &Change) -> Result<()> {
    match change {
        Change::PutUser { user, manager } => {
            let upn = user
                .get("userPrincipalName")
                .and_then(Value::as_str)
                .map(str::to_lowercase)
                .unwrap_or_default();
            sqlx::query(
                "INSERT INTO users (id, upn, manager_id, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET upn = excluded.upn, manager_id = excluded.manager_id, body = excluded.body",
            )
            .bind(id_of(user)?)
            .bind(upn)
            .bind(manager.clone())
            .bind(json(user))
            .execute(&mut **tx)
            .await?;
        }
        Change::DeleteUser { id } => {
            for sql in [
                "DELETE FROM users WHERE id = $1",
                "DELETE FROM members WHERE member_id = $1",
                "DELETE FROM role_assignments WHERE principal_id = $1",
                "UPDATE users SET manager_id = NULL WHERE manager_id = $1",
                "DELETE FROM passwords WHERE user_id = $1",
                "DELETE FROM tap_methods WHERE user_id = $1",
                "DELETE FROM totp_methods WHERE user_id = $1",
                "DELETE FROM passkeys WHERE user_id = $1",
                "DELETE FROM webauthn_ceremonies WHERE user_id = $1",
                "DELETE FROM sessions WHERE user_id = $1",
                "DELETE FROM lockouts WHERE user_id = $1",
                "DELETE FROM familiar_networks WHERE user_id = $1",
                "DELETE FROM member_grants WHERE principal_id = $1",
                "DELETE FROM user_sponsors WHERE user_id = $1 OR sponsor_id = $1",
            ] {
                delete(tx, sql, id).await?;
            }
        }
        Change::PutGroup { group } => {
            let mut body = group.clone();
            body.remove("members");
            upsert(
                tx,
                "INSERT INTO dir_groups (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(group)?,
                json(&body),
            )
            .await?;
        }
        Change::DeleteGroup { id } => {
            for sql in [
                "DELETE FROM dir_groups WHERE id = $1",
                "DELETE FROM members WHERE group_id = $1 OR member_id = $1",
                "DELETE FROM role_assignments WHERE principal_id = $1",
                "DELETE FROM member_grants WHERE principal_id = $1",
                "DELETE FROM member_grants WHERE role_key = 'member:' || $1 OR role_key = 'owner:' || $1",
            ] {
                delete(tx, sql, id).await?;
            }
        }
        Change::AddMember { group, member } => {
            sqlx::query(
                "INSERT INTO members (group_id, member_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(group.clone())
            .bind(member.clone())
            .execute(&mut **tx)
            .await?;
        }
        Change::RemoveMember { group, member } => {
            sqlx::query("DELETE FROM members WHERE group_id = $1 AND member_id = $2")
                .bind(group.clone())
                .bind(member.clone())
                .execute(&mut **tx)
                .await?;
        }
        Change::PutRoleAssignment { assignment } => {
            let principal = assignment
                .get("principalId")
                .and_then(Value::as_str)
                .map(normalize_id)
                .unwrap_or_default();
            sqlx::query(
                "INSERT INTO role_assignments (id, principal_id, body) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET principal_id = excluded.principal_id, body = excluded.body",
            )
            .bind(id_of(assignment)?)
            .bind(principal)
            .bind(json(assignment))
            .execute(&mut **tx)
            .await?;
        }
        Change::DeleteRoleAssignment { id } => {
            delete(tx, "DELETE FROM role_assignments WHERE id = $1", id).await?;
        }
        Change::PutServicePrincipal { service_principal } => {
            upsert(
                tx,
                "INSERT INTO service_principals (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(service_principal)?,
                json(service_principal),
            )
            .await?;
        }
        Change::DeleteServicePrincipal { id } => {
            delete(tx, "DELETE FROM service_principals WHERE id = $1", id).await?;
            delete(tx, "DELETE FROM members WHERE member_id = $1", id).await?;
        }
        Change::PutDevice { device } => {
            upsert(
                tx,
                "INSERT INTO devices (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(device)?,
                json(device),
            )
            .await?;
        }
        Change::DeleteDevice { id } => {
            delete(tx, "DELETE FROM devices WHERE id = $1", id).await?;
            delete(tx, "DELETE FROM members WHERE member_id = $1", id).await?;
        }
        Change::PutPolicy { policy } => {
            upsert(
                tx,
                "INSERT INTO ca_policies (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(policy)?,
                json(policy),
            )
            .await?;
        }
        Change::DeletePolicy { id } => {
            delete(tx, "DELETE FROM ca_policies WHERE id = $1", id).await?
        }
        Change::PutNamedLocation { location } => {
            upsert(
                tx,
                "INSERT INTO named_locations (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(location)?,
                json(location),
            )
            .await?;
        }
        Change::DeleteNamedLocation { id } => {
            delete(tx, "DELETE FROM named_locations WHERE id = $1", id).await?;
        }
        Change::PutStrength { strength } => {
            upsert(
                tx,
                "INSERT INTO auth_strengths (id, body) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                id_of(strength)?,
                json(strength),
            )
            .await?;
        }
        Change::DeleteStrength { id } => {
            delete(tx, "DELETE FROM auth_strengths WHERE id = $1", id).await?
        }
        Change::PutAuthMethodsPolicy { policy } => {
            upsert(
                tx,
                "INSERT INTO settings (name, body) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                "authenticationMethodsPolicy".into(),
                policy.to_string(),
            )
            .await?;
        }
        Change::RevokeSessions { user_id } => {
            // Revoked sessions are removed: a token that is not stored cannot be used.
            delete(tx, "DELETE FROM sessions WHERE user_id = $1", user_id).await?;
        }
        Change::EndSession { session_id, .. } => {
            delete(tx, "DELETE FROM sessions WHERE id = $1", session_id).await?;
        }
        Change::EndTapSessions { tap_id, .. } => {
            delete(tx, "DELETE FROM sessions WHERE tap_id = $1", tap_id).await?;
        }
        Change::Grant { grant } => {
            let body = serde_json::to_string(grant)
                .map_err(|e| StoreError::Corrupt(format!("grant: {e}")))?;
            sqlx::query(
                "INSERT INTO member_grants (role_key, principal_id, assignment_id, valid_from, valid_until, body) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (role_key, principal_id, assignment_id) DO UPDATE \
                 SET valid_from = excluded.valid_from, valid_until = excluded.valid_until, body = excluded.body",
            )
            .bind(role_key(&grant.role))
            .bind(grant.principal.clone())
            .bind(grant.assignment.clone())
            .bind(grant.from)
            .bind(grant.until)
            .bind(body)
            .execute(&mut **tx)
            .await?;
        }
        Change::Revoke { role, principal, assignment } => {
            sqlx::query(
                "DELETE FROM member_grants WHERE role_key = $1 AND principal_id = $2 AND assignment_id = $3",
            )
            .bind(role_key(role))
            .bind(principal.clone())
            .bind(assignment.clone())
            .execute(&mut **tx)
            .await?;
        }
        Change::SetSponsors { user, sponsors } => {
            delete(tx, "DELETE FROM user_sponsors WHERE user_id = $1", user).await?;
            for s in sponsors {
                sqlx::query(
                    "INSERT INTO user_sponsors (user_id, sponsor_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(user.clone())
                .bind(s.clone())
                .execute(&mut **tx)
                .await?;
            }
        }
        Change::Reload => {}
    }
    Ok(())
}

/// The key a granted role is stored under: `member:{group}`, `owner:{group}`, `app:{sp}:{role}`.
pub(super) fn role_key(role: &GrantedRole) -> String {
    match role {
        GrantedRole::GroupMember { group_id } => format!("member:{group_id}"),
        GrantedRole::GroupOwner { group_id } => format!("owner:{group_id}"),
        GrantedRole::AppRole { service_principal_id, app_role_id } => {
            format!("app:{service_principal_id}:{app_role_id}")
        }
    }
}

/// Everything the in-memory directory is built from, read in one transaction.
pub struct DirectoryRows {
    pub version: i64,
    pub tenant: Tenant,
    pub devices: Vec<Map<String, Value>>,
    pub auth_methods_policy: Option<Value>,
    /// Roles held through access package assignments.
    pub grants: Vec<GrantRow>,
    /// (user, sponsor) pairs.
    pub sponsors: Vec<(String, String)>,
}

fn object(body: &str, what: &str) -> Result<Value> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
    if v.is_object() { Ok(v) } else { Err(StoreError::Corrupt(format!("{what}: not an object"))) }
}

fn map_of(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl super::Store {
    pub async fn load_directory(&self) -> Result<DirectoryRows> {
        let mut tx = self.pool.begin().await?;
        if self.backend == super::Backend::Postgres {
            // One consistent view of every table and the version it corresponds to.
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let version: i64 = sqlx::query("SELECT version FROM store_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("version")?;
        let root = JsonPath::root();
        let corrupt =
            |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
        let mut tenant = Tenant::default();

        for row in sqlx::query("SELECT id, manager_id, body FROM users").fetch_all(&mut *tx).await?
        {
            let id = text(&row, "id")?;
            let v = object(&text(&row, "body")?, &format!("user {id}"))?;
            let o = Obj::new(&v, &root).map_err(|e| corrupt(&id, &e))?;
            let mut u = parse_user(o).map_err(|e| corrupt(&id, &e))?;
            u.manager = opt_text(&row, "manager_id")?;
            tenant.users.push(u);
        }
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for row in
            sqlx::query("SELECT group_id, member_id FROM members ORDER BY group_id, member_id")
                .fetch_all(&mut *tx)
                .await?
        {
            members.entry(text(&row, "group_id")?).or_default().push(text(&row, "member_id")?);
        }
        for row in sqlx::query("SELECT id, body FROM dir_groups").fetch_all(&mut *tx).await? {
            let id = text(&row, "id")?;
            let v = object(&text(&row, "body")?, &format!("group {id}"))?;
            let o = Obj::new(&v, &root).map_err(|e| corrupt(&id, &e))?;
            let mut g = parse_group(o).map_err(|e| corrupt(&id, &e))?;
            g.members = members.remove(&id).unwrap_or_default();
            tenant.groups.push(g);
        }
        for row in sqlx::query("SELECT id, body FROM role_assignments").fetch_all(&mut *tx).await? {
            let id = text(&row, "id")?;
            let v = object(&text(&row, "body")?, &format!("role assignment {id}"))?;
            let o = Obj::new(&v, &root).map_err(|e| corrupt(&id, &e))?;
            tenant.role_assignments.push(parse_role_assignment(o).map_err(|e| corrupt(&id, &e))?);
        }
        for row in
            sqlx::query("SELECT id, body FROM service_principals").fetch_all(&mut *tx).await?
        {
            let id = text(&row, "id")?;
            let v = object(&text(&row, "body")?, &format!("service principal {id}"))?;
            let o = Obj::new(&v, &root).map_err(|e| corrupt(&id, &e))?;
            tenant.applications.push(parse_application(o).map_err(|e| corrupt(&id, &e))?);
        }
        for (sql, file) in [
            ("SELECT id, body FROM ca_policies", "conditionalAccessPolicy.json"),
            ("SELECT id, body FROM named_locations", "namedLocation.json"),
            ("SELECT id, body FROM auth_strengths", "authenticationStrength.json"),
        ] {
            for row in sqlx::query(sql).fetch_all(&mut *tx).await? {
                let id = text(&row, "id")?;
                let v = map_of(object(&text(&row, "body")?, &id)?);
                let t = load_one(file, &v).map_err(|e| corrupt(&id, &e))?;
                tenant.policies.extend(t.policies);
                tenant.named_locations.extend(t.named_locations);
                tenant.strengths.extend(t.strengths);
            }
        }
        let mut devices = Vec::new();
        for row in sqlx::query("SELECT id, body FROM devices").fetch_all(&mut *tx).await? {
            let id = text(&row, "id")?;
            devices.push(map_of(object(&text(&row, "body")?, &id)?));
        }
        let auth_methods_policy = match sqlx::query("SELECT body FROM settings WHERE name = $1")
            .bind("authenticationMethodsPolicy")
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(row) => Some(object(&text(&row, "body")?, "authenticationMethodsPolicy")?),
            None => None,
        };
        let mut grants = Vec::new();
        for row in sqlx::query("SELECT body FROM member_grants").fetch_all(&mut *tx).await? {
            let g: GrantRow = serde_json::from_str(&text(&row, "body")?)
                .map_err(|e| StoreError::Corrupt(format!("grant: {e}")))?;
            grants.push(g);
        }
        let mut sponsors = Vec::new();
        for row in sqlx::query(
            "SELECT user_id, sponsor_id FROM user_sponsors ORDER BY user_id, sponsor_id",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            sponsors.push((text(&row, "user_id")?, text(&row, "sponsor_id")?));
        }
        tx.commit().await?;
        Ok(DirectoryRows { version, tenant, devices, auth_methods_policy, grants, sponsors })
    }
}
