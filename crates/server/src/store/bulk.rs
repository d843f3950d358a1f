//! Bulk writes for imports: the same rows `tables::persist` writes, many per statement.
//! A 100,000-user export is a million rows; one statement each would be a million round trips.

use std::collections::BTreeMap;

use gatehouse_core::Change;
use gatehouse_policy::json::normalize_id;
use serde_json::Value;
use sqlx::AssertSqlSafe;

use super::{AuditRecord, Result, Write};

/// Rows per statement: well under SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
const ROWS: usize = 1000;

struct Table {
    head: &'static str,
    tail: &'static str,
    columns: usize,
    rows: BTreeMap<(String, String), Vec<Option<String>>>,
}

impl Table {
    fn new(head: &'static str, columns: usize, tail: &'static str) -> Self {
        Table { head, tail, columns, rows: BTreeMap::new() }
    }
}

impl Write {
    /// Writes the rows of `changes` (puts and memberships) in multi-row statements, logs `log`,
    /// records `audits`, and commits: one transaction, as `commit` would.
    pub async fn commit_bulk(
        mut self,
        now: i64,
        changes: &[Change],
        log: &[Change],
        audits: &[AuditRecord],
    ) -> Result<i64> {
        let mut users = Table::new(
            "INSERT INTO users (id, upn, manager_id, body) VALUES ",
            4,
            " ON CONFLICT (id) DO UPDATE SET upn = excluded.upn, manager_id = excluded.manager_id, body = excluded.body",
        );
        let mut groups = Table::new(
            "INSERT INTO dir_groups (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut members = Table::new(
            "INSERT INTO members (group_id, member_id) VALUES ",
            2,
            " ON CONFLICT DO NOTHING",
        );
        let mut roles = Table::new(
            "INSERT INTO role_assignments (id, principal_id, body) VALUES ",
            3,
            " ON CONFLICT (id) DO UPDATE SET principal_id = excluded.principal_id, body = excluded.body",
        );
        let mut sps = Table::new(
            "INSERT INTO service_principals (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut devices = Table::new(
            "INSERT INTO devices (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut policies = Table::new(
            "INSERT INTO ca_policies (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut locations = Table::new(
            "INSERT INTO named_locations (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut strengths = Table::new(
            "INSERT INTO auth_strengths (id, body) VALUES ",
            2,
            " ON CONFLICT (id) DO UPDATE SET body = excluded.body",
        );
        let mut others = Vec::new();
        let id_of = |m: &serde_json::Map<String, Value>| {
            m.get("id").and_then(Value::as_str).map(normalize_id).unwrap_or_default()
        };
        for c in changes {
            match c {
                Change::PutUser { user, manager } => {
                    let id = id_of(user);
                    let upn = user
                        .get("userPrincipalName")
                        .and_then(Value::as_str)
                        .map(str::to_lowercase)
                        .unwrap_or_default();
                    let body = Value::Object(user.clone()).to_string();
                    users.rows.insert(
                        (id.clone(), String::new()),
                        vec![Some(id), Some(upn), manager.clone(), Some(body)],
                    );
                }
                Change::PutGroup { group } => {
                    let mut g = group.clone();
                    g.remove("members");
                    let id = id_of(&g);
                    groups.rows.insert(
                        (id.clone(), String::new()),
                        vec![Some(id), Some(Value::Object(g).to_string())],
                    );
                }
                Change::AddMember { group, member } => {
                    members.rows.insert(
                        (group.clone(), member.clone()),
                        vec![Some(group.clone()), Some(member.clone())],
                    );
                }
                Change::PutRoleAssignment { assignment } => {
                    let id = id_of(assignment);
                    let principal =
                        assignment.get("principalId").and_then(Value::as_str).map(normalize_id);
                    roles.rows.insert(
                        (id.clone(), String::new()),
                        vec![
                            Some(id),
                            principal,
                            Some(Value::Object(assignment.clone()).to_string()),
                        ],
                    );
                }
                Change::PutServicePrincipal { service_principal: m }
                | Change::PutDevice { device: m }
                | Change::PutPolicy { policy: m }
                | Change::PutNamedLocation { location: m }
                | Change::PutStrength { strength: m } => {
                    let table = match c {
                        Change::PutServicePrincipal { .. } => &mut sps,
                        Change::PutDevice { .. } => &mut devices,
                        Change::PutPolicy { .. } => &mut policies,
                        Change::PutNamedLocation { .. } => &mut locations,
                        _ => &mut strengths,
                    };
                    let id = id_of(m);
                    table.rows.insert(
                        (id.clone(), String::new()),
                        vec![Some(id), Some(Value::Object(m.clone()).to_string())],
                    );
                }
                other => others.push(other.clone()),
            }
        }
        for table in [users, groups, members, roles, sps, devices, policies, locations, strengths] {
            let rows: Vec<Vec<Option<String>>> = table.rows.into_values().collect();
            for chunk in rows.chunks(ROWS) {
                let mut sql = String::from(table.head);
                let mut n = 0;
                for (i, _) in chunk.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    sql.push('(');
                    for c in 0..table.columns {
                        if c > 0 {
                            sql.push(',');
                        }
                        n += 1;
                        sql.push_str(&format!("${n}"));
                    }
                    sql.push(')');
                }
                sql.push_str(table.tail);
                // The text holds only fixed fragments and placeholders; values are bound.
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for row in chunk {
                    for v in row {
                        q = q.bind(v.clone());
                    }
                }
                q.execute(&mut *self.tx).await?;
            }
        }
        self.commit_logged(now, &others, log, audits).await
    }
}
