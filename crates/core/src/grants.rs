//! Time-bound grants: access given by access package assignments, with its provenance.
//!
//! A grant says "principal P holds role R of a resource from `from` until `until`, because of
//! assignment A". Several assignments may grant the same role, and a user may also be a direct
//! member of a group an assignment grants: each edge (role, principal) keeps its grants and
//! whether a direct membership exists, so the role is held while any of them is, and is left only
//! when the last one ends.
//!
//! Whether a grant is in force depends on the time. The directory is always evaluated *as of* an
//! instant; [`Grants::advance`] moves that instant forward and reports the edges that changed, and
//! [`Grants::next_boundary`] says when the next change is due, so a node recompiles its
//! Conditional Access snapshot exactly when a grant starts or ends, whether or not the worker
//! that records the expiry has run yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::governance::model::GrantedRole;
use crate::time::Millis;

/// One grant as stored and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRow {
    pub role: GrantedRole,
    pub principal: String,
    pub assignment: String,
    pub from: Millis,
    pub until: Option<Millis>,
}

#[derive(Debug, Clone, Default)]
struct Edge {
    /// A direct group membership exists beside the grants (group members only).
    direct: bool,
    /// assignment id -> [from, until)
    spans: BTreeMap<String, (Millis, Option<Millis>)>,
    /// Whether the role is held as of the last evaluation.
    active: bool,
}

impl Edge {
    fn held_at(&self, t: Millis) -> bool {
        self.direct
            || self.spans.values().any(|(from, until)| *from <= t && until.is_none_or(|u| t < u))
    }
}

type Key = (GrantedRole, String);

/// An edge whose holding changed, for the directory to mirror into group members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    pub role: GrantedRole,
    pub principal: String,
    pub held: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Grants {
    edges: HashMap<Key, Edge>,
    /// Instants after `as_of` at which some edge may change, with the edges concerned.
    boundaries: BTreeMap<Millis, BTreeSet<Key>>,
    as_of: Millis,
}

impl Grants {
    pub fn as_of(&self) -> Millis {
        self.as_of
    }

    /// When the next grant starts or ends (`None`: nothing is scheduled).
    pub fn next_boundary(&self) -> Option<Millis> {
        self.boundaries.keys().next().copied()
    }

    fn schedule(&mut self, key: &Key, from: Millis, until: Option<Millis>) {
        for t in [Some(from), until].into_iter().flatten() {
            if t > self.as_of {
                self.boundaries.entry(t).or_default().insert(key.clone());
            }
        }
    }

    fn reevaluate(&mut self, key: &Key) -> Option<Flip> {
        let as_of = self.as_of;
        let edge = self.edges.get_mut(key)?;
        let held = edge.held_at(as_of);
        let flip = (held != edge.active).then(|| Flip {
            role: key.0.clone(),
            principal: key.1.clone(),
            held,
        });
        edge.active = held;
        // With no grant left, a direct membership is plain membership again: not tracked here.
        if edge.spans.is_empty() {
            self.edges.remove(key);
        }
        flip
    }

    /// Adds or replaces assignment `assignment`'s grant of `role` to `principal`. `direct`
    /// says whether a direct membership exists now (asked only when the edge is new).
    pub fn put(&mut self, row: &GrantRow, direct: impl FnOnce() -> bool) -> Option<Flip> {
        let key = (row.role.clone(), row.principal.clone());
        let edge = self.edges.entry(key.clone()).or_insert_with(|| {
            let d = direct();
            Edge { direct: d, spans: BTreeMap::new(), active: d }
        });
        edge.spans.insert(row.assignment.clone(), (row.from, row.until));
        self.schedule(&key, row.from, row.until);
        self.reevaluate(&key)
    }

    /// Removes assignment `assignment`'s grant of `role` to `principal`.
    pub fn remove(
        &mut self,
        role: &GrantedRole,
        principal: &str,
        assignment: &str,
    ) -> Option<Flip> {
        let key = (role.clone(), principal.to_owned());
        let edge = self.edges.get_mut(&key)?;
        edge.spans.remove(assignment);
        self.reevaluate(&key)
    }

    /// A direct membership was added or removed. Returns whether the edge is tracked here (a
    /// tracked edge decides membership itself; an untracked one is plain direct membership)
    /// and whether the member is held now.
    pub fn set_direct(
        &mut self,
        role: &GrantedRole,
        principal: &str,
        direct: bool,
    ) -> Option<bool> {
        let key = (role.clone(), principal.to_owned());
        let edge = self.edges.get_mut(&key)?;
        edge.direct = direct;
        let held = edge.held_at(self.as_of);
        edge.active = held;
        Some(held)
    }

    /// Does `principal` hold `role` through a grant (not counting direct membership)?
    pub fn granted(&self, role: &GrantedRole, principal: &str) -> bool {
        self.edges.get(&(role.clone(), principal.to_owned())).is_some_and(|e| {
            e.spans.values().any(|(f, u)| *f <= self.as_of && u.is_none_or(|u| self.as_of < u))
        })
    }

    /// The assignments whose grants give `principal` the role now.
    pub fn granting_assignments(&self, role: &GrantedRole, principal: &str) -> Vec<String> {
        match self.edges.get(&(role.clone(), principal.to_owned())) {
            Some(e) => e
                .spans
                .iter()
                .filter(|(_, (f, u))| *f <= self.as_of && u.is_none_or(|u| self.as_of < u))
                .map(|(a, _)| a.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    /// Is the edge tracked with a direct membership beside grants?
    pub fn is_direct(&self, role: &GrantedRole, principal: &str) -> Option<bool> {
        self.edges.get(&(role.clone(), principal.to_owned())).map(|e| e.direct)
    }

    /// Every principal holding a role now, with the role (for owners and app roles, which have
    /// no other home in the directory).
    pub fn held(&self) -> impl Iterator<Item = (&GrantedRole, &str)> {
        self.edges.iter().filter(|(_, e)| e.active).map(|((r, p), _)| (r, p.as_str()))
    }

    /// Forgets every edge of a deleted principal or resource.
    pub fn forget(&mut self, id: &str) {
        self.edges.retain(|(role, principal), _| principal != id && !role.names(id));
    }

    /// Moves the evaluation instant to `now` (never backwards) and returns the edges that
    /// started or stopped being held.
    pub fn advance(&mut self, now: Millis) -> Vec<Flip> {
        if now <= self.as_of {
            return Vec::new();
        }
        self.as_of = now;
        let mut due = BTreeSet::new();
        while let Some(entry) = self.boundaries.first_entry() {
            if *entry.key() > now {
                break;
            }
            due.extend(entry.remove());
        }
        due.iter().filter_map(|k| self.reevaluate(k)).collect()
    }

    /// Sets the instant without re-evaluating (a fresh load evaluates everything itself).
    pub fn load(rows: Vec<GrantRow>, direct: impl Fn(&GrantRow) -> bool, now: Millis) -> Grants {
        let mut g = Grants { as_of: now, ..Grants::default() };
        for row in &rows {
            let key = (row.role.clone(), row.principal.clone());
            let d = direct(row);
            let edge = g.edges.entry(key.clone()).or_insert_with(|| Edge {
                direct: d,
                spans: BTreeMap::new(),
                active: false,
            });
            edge.spans.insert(row.assignment.clone(), (row.from, row.until));
            g.schedule(&key, row.from, row.until);
        }
        for e in g.edges.values_mut() {
            e.active = e.held_at(now);
        }
        g
    }
}

impl GrantedRole {
    /// Does this role belong to the resource `id`?
    pub fn names(&self, id: &str) -> bool {
        match self {
            GrantedRole::GroupMember { group_id } | GrantedRole::GroupOwner { group_id } => {
                group_id == id
            }
            GrantedRole::AppRole { service_principal_id, .. } => service_principal_id == id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(g: &str) -> GrantedRole {
        GrantedRole::GroupMember { group_id: g.into() }
    }

    fn row(a: &str, from: Millis, until: Option<Millis>) -> GrantRow {
        GrantRow { role: member("g"), principal: "u".into(), assignment: a.into(), from, until }
    }

    #[test]
    fn a_grant_holds_from_start_to_end_exactly() {
        let mut g = Grants::default();
        g.advance(100);
        assert_eq!(g.put(&row("a", 200, Some(300)), || false), None);
        assert_eq!(g.next_boundary(), Some(200));
        assert!(g.advance(199).is_empty());
        assert_eq!(
            g.advance(200),
            vec![Flip { role: member("g"), principal: "u".into(), held: true }]
        );
        assert!(g.granted(&member("g"), "u"));
        assert!(g.advance(299).is_empty());
        assert_eq!(g.advance(300).len(), 1);
        assert!(!g.granted(&member("g"), "u"));
        assert_eq!(g.next_boundary(), None);
    }

    #[test]
    fn two_assignments_are_counted_and_direct_membership_outlives_them() {
        let mut g = Grants::default();
        g.advance(100);
        assert!(g.put(&row("a", 100, Some(300)), || false).is_some_and(|f| f.held));
        assert_eq!(g.put(&row("b", 100, Some(500)), || false), None);
        assert!(g.advance(300).is_empty(), "b still grants");
        assert!(g.advance(500).iter().any(|f| !f.held));

        // A direct member before the package keeps the membership after it.
        let mut g = Grants::default();
        g.advance(100);
        assert_eq!(g.put(&row("a", 100, Some(300)), || true), None);
        assert!(g.advance(300).is_empty());
        assert_eq!(g.remove(&member("g"), "u", "a"), None);
    }

    #[test]
    fn removing_a_grant_early_ends_it_and_time_never_runs_backwards() {
        let mut g = Grants::default();
        g.advance(100);
        g.put(&row("a", 100, None), || false);
        assert!(g.remove(&member("g"), "u", "a").is_some_and(|f| !f.held));
        g.put(&row("b", 150, Some(400)), || false);
        assert!(g.advance(50).is_empty());
        assert_eq!(g.as_of(), 100);
    }
}
