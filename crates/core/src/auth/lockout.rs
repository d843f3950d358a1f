//! Smart lockout and per-IP throttling, as pure state transitions over an explicit `now`.
//!
//! Lockout state is kept per (user, [`Scope`]). A sign-in comes from the familiar scope when its
//! network ([`network_of`]) is one the user has signed in from successfully before. Failures from
//! unfamiliar networks count only against the unfamiliar scope, whose threshold is lower, so an
//! attacker elsewhere locks themselves out without locking the real user out of their usual
//! network.
//!
//! As in Entra, after a first lockout every further failure (once the lock has passed) locks
//! again, and each lockout lasts twice as long as the last, up to a maximum. A success resets
//! the scope. Failures while locked are not counted: the caller refuses them before checking
//! the password, and an attacker cannot prolong a lock by hammering it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};

use crate::time::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures from a familiar network before the first lockout.
    pub threshold: u32,
    /// Failures from an unfamiliar network before the first lockout.
    pub unfamiliar_threshold: u32,
    /// The first lockout's length.
    pub duration_ms: i64,
    /// The longest a doubled lockout may last.
    pub max_duration_ms: i64,
}

/// Entra's defaults (10 failures, 60 seconds); 5 from unfamiliar networks, and at most an hour.
impl Default for LockoutPolicy {
    fn default() -> LockoutPolicy {
        LockoutPolicy {
            threshold: 10,
            unfamiliar_threshold: 5,
            duration_ms: 60_000,
            max_duration_ms: 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Familiar,
    Unfamiliar,
}

/// The lockout state of one (user, scope). `Default` is a clean slate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    /// Failures since the last success or lockout.
    pub failures: u32,
    /// Lockouts since the last success; each doubles the next one's length.
    pub lockouts: u32,
    /// Locked while `now < locked_until`.
    pub locked_until: Millis,
}

/// The caller must refuse the sign-in until this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedUntil(pub Millis);

/// Is the scope locked at `now`?
pub fn check(state: &State, now: Millis) -> Result<(), LockedUntil> {
    if now < state.locked_until { Err(LockedUntil(state.locked_until)) } else { Ok(()) }
}

/// The `n`th lockout's length (0-based): `duration * 2^n`, capped.
fn lockout_length(policy: &LockoutPolicy, n: u32) -> i64 {
    let factor = 1i64.checked_shl(n.min(62)).unwrap_or(i64::MAX);
    policy.duration_ms.saturating_mul(factor).min(policy.max_duration_ms).max(0)
}

/// The state after a failed sign-in in `scope`. A failure while locked changes nothing.
pub fn record_failure(state: &State, policy: &LockoutPolicy, scope: Scope, now: Millis) -> State {
    if check(state, now).is_err() {
        return *state;
    }
    let threshold = match scope {
        Scope::Familiar => policy.threshold,
        Scope::Unfamiliar => policy.unfamiliar_threshold,
    };
    // After the first lockout one more failure locks again.
    let threshold = if state.lockouts > 0 { 1 } else { threshold.max(1) };
    let failures = state.failures.saturating_add(1);
    if failures < threshold {
        return State { failures, ..*state };
    }
    State {
        failures: 0,
        lockouts: state.lockouts.saturating_add(1),
        locked_until: now.saturating_add(lockout_length(policy, state.lockouts)),
    }
}

/// The state after a successful sign-in: a clean slate.
pub fn record_success() -> State {
    State::default()
}

/// The network a sign-in comes from, for deciding familiarity: the /24 of an IPv4 address, the
/// /64 of an IPv6 one (one host or home usually owns a whole /64). IPv4-mapped IPv6 addresses
/// (`::ffff:192.0.2.1`, from dual-stack sockets) count as IPv4.
pub fn network_of(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            Ipv4Net::new(v4, 24).map_or_else(|_| v4.to_string(), |n| n.trunc().to_string())
        }
        IpAddr::V6(v6) => {
            Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |n| n.trunc().to_string())
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Familiar when the sign-in's network is among the networks of the user's past successes.
pub fn scope_of(ip: IpAddr, familiar_networks: &[String]) -> Scope {
    let network = network_of(ip);
    if familiar_networks.contains(&network) { Scope::Familiar } else { Scope::Unfamiliar }
}

/// A token bucket. Tokens are counted in thousandths, so refilling is exact integer math:
/// `refill_per_sec` tokens per second is `refill_per_sec` thousandths per millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub capacity: u32,
    pub refill_per_sec: u32,
    milli_tokens: u64,
    updated: Millis,
}

impl Throttle {
    /// A full bucket.
    pub fn new(capacity: u32, refill_per_sec: u32, now: Millis) -> Throttle {
        Throttle {
            capacity,
            refill_per_sec,
            milli_tokens: u64::from(capacity) * 1000,
            updated: now,
        }
    }

    /// Takes a token if one is there. A clock that steps back refills nothing.
    pub fn try_take(&mut self, now: Millis) -> bool {
        let elapsed = u64::try_from(now.saturating_sub(self.updated)).unwrap_or(0);
        let refill = elapsed.saturating_mul(u64::from(self.refill_per_sec));
        let full = u64::from(self.capacity) * 1000;
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(full);
        self.updated = self.updated.max(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// When the bucket was last touched.
    pub fn updated(&self) -> Millis {
        self.updated
    }
}

/// One [`Throttle`] per client address, holding at most `max_entries` of them: beyond that the
/// stalest are dropped (a dropped client starts again with a full bucket, the same state it
/// would have refilled to by now, most likely). IPv6 clients are throttled per /64, since one
/// host owns a whole /64 and could otherwise rotate addresses.
#[derive(Debug, Clone)]
pub struct IpThrottle {
    capacity: u32,
    refill_per_sec: u32,
    max_entries: usize,
    buckets: HashMap<IpAddr, Throttle>,
    /// (last touched, key): the stalest entry is the first.
    by_age: BTreeSet<(Millis, IpAddr)>,
}

impl IpThrottle {
    pub fn new(capacity: u32, refill_per_sec: u32, max_entries: usize) -> IpThrottle {
        IpThrottle {
            capacity,
            refill_per_sec,
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                Ipv6Net::new(v6, 64).map_or(IpAddr::V6(v6), |n| IpAddr::V6(n.network()))
            }
            v4 => v4,
        }
    }

    /// Takes a token for `ip`; `false` means the caller should answer 429.
    pub fn try_take(&mut self, ip: IpAddr, now: Millis) -> bool {
        let key = IpThrottle::key(ip);
        let mut bucket = match self.buckets.remove(&key) {
            Some(bucket) => {
                self.by_age.remove(&(bucket.updated(), key));
                bucket
            }
            None => {
                while self.buckets.len() >= self.max_entries {
                    let Some((_, stalest)) = self.by_age.pop_first() else { break };
                    self.buckets.remove(&stalest);
                }
                Throttle::new(self.capacity, self.refill_per_sec, now)
            }
        };
        let allowed = bucket.try_take(now);
        self.by_age.insert((bucket.updated(), key));
        self.buckets.insert(key, bucket);
        allowed
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_740_762_723_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn fail_n(
        mut state: State,
        policy: &LockoutPolicy,
        scope: Scope,
        n: u32,
        now: Millis,
    ) -> State {
        for _ in 0..n {
            state = record_failure(&state, policy, scope, now);
        }
        state
    }

    #[test]
    fn familiar_scope_locks_after_threshold() {
        let policy = LockoutPolicy::default();
        let state = fail_n(State::default(), &policy, Scope::Familiar, 9, T0);
        assert_eq!(check(&state, T0), Ok(()));
        assert_eq!(state.failures, 9);
        let state = record_failure(&state, &policy, Scope::Familiar, T0);
        assert_eq!(check(&state, T0), Err(LockedUntil(T0 + 60_000)));
        assert_eq!(check(&state, T0 + 59_999), Err(LockedUntil(T0 + 60_000)));
        assert_eq!(check(&state, T0 + 60_000), Ok(()));
    }

    #[test]
    fn unfamiliar_scope_locks_sooner() {
        let policy = LockoutPolicy::default();
        let state = fail_n(State::default(), &policy, Scope::Unfamiliar, 4, T0);
        assert_eq!(check(&state, T0), Ok(()));
        let state = record_failure(&state, &policy, Scope::Unfamiliar, T0);
        assert_eq!(check(&state, T0), Err(LockedUntil(T0 + 60_000)));
    }

    #[test]
    fn an_attacker_elsewhere_does_not_lock_the_familiar_scope() {
        let policy = LockoutPolicy::default();
        let familiar_networks = vec![network_of(ip("203.0.113.7"))];
        let (mut familiar, mut unfamiliar) = (State::default(), State::default());
        for i in 0..100 {
            let now = T0 + i * 1_000;
            let attacker = ip("198.51.100.9");
            let state = match scope_of(attacker, &familiar_networks) {
                Scope::Familiar => &mut familiar,
                Scope::Unfamiliar => &mut unfamiliar,
            };
            if check(state, now).is_ok() {
                *state = record_failure(state, &policy, Scope::Unfamiliar, now);
            }
        }
        assert!(check(&unfamiliar, T0 + 100_000).is_err());
        assert_eq!(check(&familiar, T0 + 100_000), Ok(()));
        assert_eq!(scope_of(ip("203.0.113.200"), &familiar_networks), Scope::Familiar);
    }

    #[test]
    fn repeated_lockouts_double_up_to_the_maximum() {
        let policy = LockoutPolicy { max_duration_ms: 300_000, ..LockoutPolicy::default() };
        let mut state = fail_n(State::default(), &policy, Scope::Familiar, 10, T0);
        let mut now = T0;
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let LockedUntil(until) = check(&state, now).unwrap_err();
            lengths.push(until - now);
            now = until;
            // One failure after a lockout locks again.
            state = record_failure(&state, &policy, Scope::Familiar, now);
        }
        assert_eq!(lengths, vec![60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
        assert_eq!(lockout_length(&policy, 500), 300_000);
    }

    #[test]
    fn failures_while_locked_are_not_counted() {
        let policy = LockoutPolicy::default();
        let locked = fail_n(State::default(), &policy, Scope::Familiar, 10, T0);
        let after = fail_n(locked, &policy, Scope::Familiar, 50, T0 + 30_000);
        assert_eq!(after, locked);
    }

    #[test]
    fn success_resets() {
        let policy = LockoutPolicy::default();
        let state = fail_n(State::default(), &policy, Scope::Familiar, 10, T0);
        assert!(check(&state, T0).is_err());
        let state = record_success();
        assert_eq!(state, State::default());
        let state = fail_n(state, &policy, Scope::Familiar, 9, T0 + 70_000);
        assert_eq!(check(&state, T0 + 70_000), Ok(()));
    }

    #[test]
    fn a_zero_threshold_means_one() {
        let policy = LockoutPolicy { threshold: 0, ..LockoutPolicy::default() };
        let state = record_failure(&State::default(), &policy, Scope::Familiar, T0);
        assert!(check(&state, T0).is_err());
    }

    #[test]
    fn networks() {
        assert_eq!(network_of(ip("203.0.113.77")), "203.0.113.0/24");
        assert_eq!(network_of(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
        assert_eq!(network_of(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(network_of(ip("2001:db8:1:2::ffff")), network_of(ip("2001:db8:1:2:1::")));
        assert_ne!(network_of(ip("2001:db8:1:3::1")), network_of(ip("2001:db8:1:2::1")));
        assert_eq!(scope_of(ip("10.0.0.1"), &[]), Scope::Unfamiliar);
    }

    #[test]
    fn token_bucket_refills_over_time() {
        let mut t = Throttle::new(3, 1, T0);
        assert!(t.try_take(T0) && t.try_take(T0) && t.try_take(T0));
        assert!(!t.try_take(T0));
        assert!(!t.try_take(T0 + 999));
        assert!(t.try_take(T0 + 1_000));
        assert!(!t.try_take(T0 + 1_000));
        // Never more than the capacity, however long the wait.
        let later = T0 + 3_600_000;
        assert!(t.try_take(later) && t.try_take(later) && t.try_take(later));
        assert!(!t.try_take(later));
    }

    #[test]
    fn token_bucket_partial_refills_accumulate() {
        let mut t = Throttle::new(1, 2, T0);
        assert!(t.try_take(T0));
        assert!(!t.try_take(T0 + 250)); // half a token
        assert!(t.try_take(T0 + 500)); // the second quarter completes it
        assert!(!t.try_take(T0 + 500));
    }

    #[test]
    fn token_bucket_ignores_a_clock_stepping_back() {
        let mut t = Throttle::new(1, 1, T0);
        assert!(t.try_take(T0));
        assert!(!t.try_take(T0 - 10_000));
        assert!(!t.try_take(T0 + 999));
        assert!(t.try_take(T0 + 1_000));
    }

    #[test]
    fn ip_throttle_tracks_each_client() {
        let mut throttle = IpThrottle::new(2, 1, 100);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert!(throttle.try_take(a, T0) && throttle.try_take(a, T0));
        assert!(!throttle.try_take(a, T0));
        assert!(throttle.try_take(b, T0));
        // IPv4-mapped is the same client; IPv6 counts per /64.
        assert!(!throttle.try_take(ip("::ffff:192.0.2.1"), T0));
        let mut v6 = IpThrottle::new(1, 1, 100);
        assert!(v6.try_take(ip("2001:db8::1"), T0));
        assert!(!v6.try_take(ip("2001:db8::2:3"), T0));
        assert!(v6.try_take(ip("2001:db8:0:1::1"), T0));
    }

    #[test]
    fn ip_throttle_evicts_the_stalest() {
        let mut throttle = IpThrottle::new(1, 1, 3);
        let (a, b, c, d) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"), ip("192.0.2.4"));
        assert!(throttle.try_take(a, T0));
        assert!(throttle.try_take(b, T0 + 1));
        assert!(throttle.try_take(c, T0 + 2));
        // Touching `a` makes `b` the stalest.
        assert!(!throttle.try_take(a, T0 + 3));
        assert!(throttle.try_take(d, T0 + 4));
        assert_eq!(throttle.len(), 3);
        // `b` was dropped, so it starts afresh (and `c`, now the stalest, goes).
        assert!(throttle.try_take(b, T0 + 5));
        // `a` is still remembered with an empty bucket.
        assert!(!throttle.try_take(a, T0 + 6));
        // `c` was dropped and starts afresh.
        assert!(throttle.try_take(c, T0 + 7));
        for i in 0..1_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            throttle.try_take(addr, T0 + 10 + i64::from(i));
        }
        assert_eq!(throttle.len(), 3);
        assert!(!throttle.is_empty());
    }
}
