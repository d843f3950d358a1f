//! The node's shared state: the store, the in-memory directory, and the compiled Conditional
//! Access snapshot that every sign-in reads.
//!
//! The directory and snapshot are always a committed version of the store. Writers commit, then
//! call [`AppState::sync`], which applies the change log up to the newest version (theirs
//! included) and swaps in a freshly compiled snapshot before the writer answers: the next
//! sign-in on this node sees the change. Other nodes run the same `sync` when PostgreSQL
//! notifies them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use arc_swap::ArcSwap;
use gatehouse_core::Directory;
use gatehouse_core::auth::lockout::IpThrottle;
use gatehouse_policy::Snapshot;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::config::Config;
use crate::geo::Geo;
use crate::session::Session;
use crate::store::{Store, StoreError};

/// Client addresses the sign-in throttle remembers; beyond that the stalest are forgotten.
const THROTTLE_MAX_CLIENTS: usize = 100_000;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Store,
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub geo: Option<Geo>,
    directory: RwLock<Directory>,
    snapshot: ArcSwap<Snapshot>,
    applied: AtomicI64,
    /// When the next access-package grant starts or ends: the snapshot holds until then.
    boundary: AtomicI64,
    sync_lock: Mutex<()>,
    /// Sessions by token hash, filled on first use; dropped when their user's sessions are
    /// revoked (the change log tells every node).
    pub sessions: std::sync::Mutex<HashMap<String, Session>>,
    /// How many times cached sessions were dropped. A session read from the store is cached
    /// only if none were dropped since the read began (`remember_session`).
    revocations: AtomicU64,
    /// Sign-in attempts per client address (this node's memory: a brake on guessing, not an
    /// exact cluster-wide quota).
    pub throttle: std::sync::Mutex<IpThrottle>,
    /// Entitlement management's settings (default time zone, mail templates).
    pub governance: crate::governance::Service,
    /// The passkey relying party (WebAuthn).
    pub passkeys: crate::passkey::Passkeys,
    /// Wakes the workers: a write left due jobs or messages for them.
    pub work: tokio::sync::Notify,
    /// Automatic-assignment policies need comparing with the directory again: a policy
    /// changed here (`true`), or the directory moved past `reconciled`.
    pub reconcile: std::sync::atomic::AtomicBool,
    pub reconciled: AtomicI64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Loads the directory from the store and compiles the first snapshot.
    pub async fn load(
        store: Store,
        config: Config,
        clock: Arc<dyn Clock>,
        geo: Option<Geo>,
    ) -> anyhow::Result<AppState> {
        let governance = crate::governance::Service::from_config(&config)?;
        let passkeys = crate::passkey::Passkeys::new(&config.public_url());
        let rows = store.load_directory().await?;
        let mut dir = Directory::new();
        dir.replace_all(rows.tenant, rows.devices, rows.auth_methods_policy);
        dir.load_grants(rows.grants, clock.now());
        dir.load_sponsors(rows.sponsors);
        let snapshot = Snapshot::compile(dir.tenant());
        let boundary = dir.next_grant_boundary().unwrap_or(i64::MAX);
        let rate = config.signin.attempts_per_second_per_ip;
        let throttle = IpThrottle::new(rate.saturating_mul(10), rate, THROTTLE_MAX_CLIENTS);
        Ok(AppState(Arc::new(Inner {
            store,
            config,
            clock,
            geo,
            directory: RwLock::new(dir),
            snapshot: ArcSwap::from_pointee(snapshot),
            applied: AtomicI64::new(rows.version),
            boundary: AtomicI64::new(boundary),
            sync_lock: Mutex::new(()),
            sessions: std::sync::Mutex::new(HashMap::new()),
            revocations: AtomicU64::new(0),
            throttle: std::sync::Mutex::new(throttle),
            governance,
            passkeys,
            work: tokio::sync::Notify::new(),
            reconcile: std::sync::atomic::AtomicBool::new(true),
            reconciled: AtomicI64::new(-1),
        })))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A read view of the directory. Hold it briefly: writers of memory wait for it.
    pub fn dir(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current compiled snapshot; it stays valid as long as it is held. Sign-ins use
    /// [`AppState::snapshot_at`], which first lets grants that started or ended take effect.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The snapshot as of `now`: if an access-package grant started or ended since it was
    /// compiled, the directory is evaluated at `now` and the snapshot recompiled first, so access
    /// ends at the exact instant whether or not the expiry worker has run.
    pub async fn snapshot_at(&self, now: i64) -> Result<Arc<Snapshot>, StoreError> {
        self.advance_to(now).await?;
        Ok(self.snapshot.load_full())
    }

    /// Lets grants that started or ended by `now` take effect in memory (cheap when none did).
    pub async fn advance_to(&self, now: i64) -> Result<(), StoreError> {
        if now < self.boundary.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one_at_a_time = self.sync_lock.lock().await;
        if now < self.boundary.load(Ordering::SeqCst) {
            return Ok(());
        }
        let recompile = {
            let mut dir = self.directory.write().unwrap_or_else(|p| p.into_inner());
            let effect = dir.advance(now);
            self.boundary.store(dir.next_grant_boundary().unwrap_or(i64::MAX), Ordering::SeqCst);
            effect.recompile
        };
        if recompile {
            self.recompile().await?;
        }
        Ok(())
    }

    async fn recompile(&self) -> Result<(), StoreError> {
        let state = self.clone();
        let snapshot = tokio::task::spawn_blocking(move || Snapshot::compile(state.dir().tenant()))
            .await
            .map_err(|e| StoreError::Corrupt(format!("snapshot compile task: {e}")))?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    /// The store version the memory reflects.
    pub fn applied_version(&self) -> i64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Opens a write that validates against the newest committed directory: other directory
    /// writes are held off (`Store::begin_serialized`), then this node's memory catches up with
    /// every change committed before. Validate with `dir()` after this, then commit and `sync`:
    /// two writes never both pass a check that only one of them may (the same member added
    /// twice, the last Global Administrator removed twice), nor write over a change they did
    /// not see (a PATCH bringing back an object deleted meanwhile).
    pub async fn begin_write(&self) -> Result<crate::store::Write, StoreError> {
        let w = self.store.begin_serialized().await?;
        self.sync().await?;
        Ok(w)
    }

    /// Read before a session is looked up in the store, for `remember_session`.
    pub fn session_revocations(&self) -> u64 {
        self.revocations.load(Ordering::SeqCst)
    }

    /// Caches a session read from the store by its token hash, unless sessions were revoked
    /// since `seen` (the read may predate the revocation: cached, it would outlive it).
    pub fn remember_session(&self, seen: u64, token_hash: &str, session: Option<Session>) {
        let Some(session) = session else { return };
        let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if self.revocations.load(Ordering::SeqCst) != seen {
            return;
        }
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(token_hash.to_owned(), session);
    }

    /// Applies every committed change not yet in memory, then recompiles the snapshot if
    /// Conditional Access could be affected. Returns the version now applied.
    pub async fn sync(&self) -> Result<i64, StoreError> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let from = self.applied_version();
        let batches = self.store.changes_since(from).await?;
        let Some(last) = batches.last().map(|(v, _)| *v) else {
            drop(_one_at_a_time);
            self.advance_to(self.now()).await?;
            return Ok(from);
        };
        let (mut recompile, mut reload, mut revoked) = (false, false, Vec::new());
        {
            let mut dir = self.directory.write().unwrap_or_else(|p| p.into_inner());
            for (version, changes) in &batches {
                let (effect, errors) = dir.apply_all(changes);
                for e in errors {
                    tracing::error!(version, "change log entry not applied: {e}");
                }
                recompile |= effect.recompile;
                reload |= effect.reload;
                revoked.extend(effect.revoke_sessions_of);
            }
        }
        let mut applied = last;
        if reload {
            let rows = self.store.load_directory().await?;
            let mut dir = self.directory.write().unwrap_or_else(|p| p.into_inner());
            dir.replace_all(rows.tenant, rows.devices, rows.auth_methods_policy);
            dir.load_grants(rows.grants, self.now());
            dir.load_sponsors(rows.sponsors);
            applied = applied.max(rows.version);
            revoked.push(String::new()); // everything: drop the whole session cache
        }
        {
            // Grants applied above were evaluated as of the last instant; bring them to now.
            let mut dir = self.directory.write().unwrap_or_else(|p| p.into_inner());
            recompile |= dir.advance(self.now()).recompile;
            self.boundary.store(dir.next_grant_boundary().unwrap_or(i64::MAX), Ordering::SeqCst);
        }
        if recompile {
            self.recompile().await?;
        }
        if !revoked.is_empty() {
            let mut cache = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            self.revocations.fetch_add(1, Ordering::SeqCst);
            if revoked.iter().any(String::is_empty) {
                cache.clear();
            } else {
                cache.retain(|_, s| !revoked.contains(&s.user_id));
            }
        }
        self.applied.store(applied, Ordering::SeqCst);
        Ok(applied)
    }
}
