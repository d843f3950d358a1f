//! Conditional Access evaluation: Gatehouse against Cedar on the generated benchmark tenant.
//!
//! `cargo bench -p gatehouse-bench` runs, in order:
//! 1. the differential check on the full tenant (the engines must agree on every request, or
//!    nothing is timed);
//! 2. criterion groups: `gatehouse/evaluate` (evaluate + decide, one request per iteration,
//!    cycling through the mixed requests), `cedar/is_authorized` (the same requests, Cedar
//!    requests and contexts built beforehand), `gatehouse/compile` (`Snapshot::compile`), and,
//!    for reference, `gatehouse/evaluate_only` (without `decide`), `gatehouse/parse_request`,
//!    `cedar/build_request` and `cedar/entities`;
//! 3. a latency report: every call timed on its own, then median, p99, p999 per evaluation and
//!    evaluations per second on one core for both engines, and their ratio.
//!
//! Setting `GATEHOUSE_BENCH_SMALL=1` uses the small tenant of the differential test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cedar_policy::Authorizer;
use criterion::{Criterion, Throughput};
use gatehouse_bench::{Config, Fixture, cedar, to_cedar};
use gatehouse_policy::{SignInRequest, Snapshot};

fn main() {
    let test_mode = std::env::args().any(|a| a == "--test");
    let small = test_mode || std::env::var_os("GATEHOUSE_BENCH_SMALL").is_some();
    let config = if small { Config::small() } else { Config::full() };
    let fixture = match Fixture::build(&config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("building the benchmark fixture failed: {e}");
            std::process::exit(1);
        }
    };
    describe(&fixture);
    if !agree(&fixture) {
        std::process::exit(1);
    }

    let mut c = Criterion::default().configure_from_args();
    gatehouse(&mut c, &fixture);
    cedar_group(&mut c, &fixture);
    c.final_summary();

    if !test_mode && wanted("latency") {
        latency_report(&fixture);
    }
}

/// False when a benchmark filter is given on the command line and `name` does not match it.
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

fn describe(f: &Fixture) {
    let s = &f.summary;
    println!(
        "tenant: {} groups (levels {:?}, {} nesting edges), {} users ({} guests), {} role assignments, {} named locations",
        s.groups,
        s.group_levels,
        s.nesting_edges,
        s.users,
        s.guests,
        s.role_assignments,
        s.named_locations
    );
    println!(
        "policies: {} ({} enabled, {} report-only, {} disabled); Cedar permits: {}; requests: {}",
        f.tenant.policies.len(),
        s.policies_enabled,
        s.policies_report_only,
        s.policies_disabled,
        f.cedar.translated.len(),
        f.requests.len()
    );
    let mut groups = std::collections::HashSet::new();
    let mut roles = std::collections::HashSet::new();
    for p in &f.tenant.policies {
        if let Some(u) = &p.conditions.users {
            groups.extend(u.include_groups.iter().chain(&u.exclude_groups));
            roles.extend(u.include_roles.iter().chain(&u.exclude_roles));
        }
    }
    println!(
        "policies reference {} distinct groups and {} distinct roles",
        groups.len(),
        roles.len()
    );
    println!(
        "bench user: direct member of {} groups, {} with nesting",
        s.bench_user_direct_groups,
        f.transitive_groups(&s.bench_user)
    );
}

fn agree(f: &Fixture) -> bool {
    match f.check_agreement() {
        Ok(a) if a.mismatches.is_empty() => {
            let most = a.per_request.iter().max().copied().unwrap_or(0);
            println!(
                "differential check: Gatehouse and Cedar agree on all {} requests ({} applying policies in all, at most {} for one request)",
                a.requests,
                a.per_request.iter().sum::<usize>(),
                most
            );
            true
        }
        Ok(a) => {
            eprintln!(
                "differential check FAILED on {} of {} requests:",
                a.mismatches.len(),
                a.requests
            );
            for m in &a.mismatches {
                eprintln!("{}", f.explain(m));
            }
            false
        }
        Err(e) => {
            eprintln!("differential check could not run: {e}");
            false
        }
    }
}

fn gatehouse(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("gatehouse");
    g.throughput(Throughput::Elements(1));
    let mut cases = f.requests.iter().zip(&f.auth).cycle();
    g.bench_function("evaluate", |b| {
        b.iter(|| {
            if let Some((request, auth)) = cases.next() {
                let evaluation = f.snapshot.evaluate(black_box(request));
                black_box(evaluation.decide(auth));
            }
        });
    });
    // For the breakdown: the applicability pass alone, without `decide`.
    let mut only = f.requests.iter().cycle();
    g.bench_function("evaluate_only", |b| {
        b.iter(|| {
            if let Some(request) = only.next() {
                black_box(f.snapshot.evaluate(black_box(request)));
            }
        });
    });
    let mut bodies_cycle = f.bodies.iter().cycle();
    g.bench_function("parse_request", |b| {
        b.iter(|| {
            if let Some(body) = bodies_cycle.next() {
                black_box(SignInRequest::from_json(black_box(body)).ok());
            }
        });
    });
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("compile", |b| {
        b.iter(|| black_box(Snapshot::compile(black_box(&f.tenant))));
    });
    g.finish();
}

fn cedar_group(c: &mut Criterion, f: &Fixture) {
    let authorizer = Authorizer::new();
    let mut g = c.benchmark_group("cedar");
    g.throughput(Throughput::Elements(1));
    let mut requests = f.cedar_requests.iter().cycle();
    g.bench_function("is_authorized", |b| {
        b.iter(|| {
            if let Some(request) = requests.next() {
                black_box(authorizer.is_authorized(
                    black_box(request),
                    &f.cedar.policies,
                    &f.cedar.entities,
                ));
            }
        });
    });
    let mut parsed = f.requests.iter().cycle();
    g.bench_function("build_request", |b| {
        b.iter(|| {
            if let Some(request) = parsed.next() {
                black_box(cedar::request(black_box(request)).ok());
            }
        });
    });
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("entities", |b| {
        b.iter(|| black_box(cedar::build_entities(black_box(&f.tenant)).ok()));
    });
    g.finish();
}

// ---------------------------------------------------------------------------
// Per-call latency
// ---------------------------------------------------------------------------

struct Latency {
    samples: Vec<Duration>,
    /// Median per request index.
    per_request: Vec<Duration>,
    /// Wall time of untimed back-to-back calls, and how many.
    batch: Duration,
    batch_calls: usize,
}

impl Latency {
    fn percentile(&self, p: f64) -> Duration {
        let n = self.samples.len();
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
        self.samples.get(rank).copied().unwrap_or_default()
    }

    fn per_second(&self) -> f64 {
        self.batch_calls as f64 / self.batch.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// Times `call(i)` for every request index, `rounds` times over, each call on its own; then
/// the same number of calls back to back for the throughput.
#[expect(clippy::disallowed_methods, reason = "benchmark timing")]
fn measure(requests: usize, target: Duration, mut call: impl FnMut(usize)) -> Latency {
    // Warm up, and size the run from the warm-up.
    let start = Instant::now();
    for i in 0..requests {
        call(i);
    }
    let round = start.elapsed().max(Duration::from_nanos(1));
    let rounds = ((target.as_secs_f64() / round.as_secs_f64()) as usize).clamp(160, 20_000);

    let mut by_request: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); requests];
    for _ in 0..rounds {
        for (i, slot) in by_request.iter_mut().enumerate() {
            let t = Instant::now();
            call(i);
            slot.push(t.elapsed());
        }
    }
    let per_request = by_request
        .iter_mut()
        .map(|v| {
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or_default()
        })
        .collect();
    let mut samples: Vec<Duration> = by_request.into_iter().flatten().collect();
    samples.sort_unstable();

    let start = Instant::now();
    for _ in 0..rounds {
        for i in 0..requests {
            call(i);
        }
    }
    Latency { samples, per_request, batch: start.elapsed(), batch_calls: rounds * requests }
}

#[expect(clippy::disallowed_methods, reason = "benchmark timing")]
fn timer_overhead() -> Duration {
    let mut samples: Vec<Duration> = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

#[expect(clippy::disallowed_methods, reason = "benchmark timing")]
fn once<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn latency_report(f: &Fixture) {
    let n = f.requests.len();
    let target = Duration::from_secs(3);
    let gatehouse = measure(n, target, |i| {
        if let (Some(request), Some(auth)) = (f.requests.get(i), f.auth.get(i)) {
            let evaluation = f.snapshot.evaluate(black_box(request));
            black_box(evaluation.decide(auth));
        }
    });
    let evaluate_only = measure(n, target, |i| {
        if let Some(request) = f.requests.get(i) {
            black_box(f.snapshot.evaluate(black_box(request)));
        }
    });
    let authorizer = Authorizer::new();
    let cedar = measure(n, target, |i| {
        if let Some(request) = f.cedar_requests.get(i) {
            black_box(authorizer.is_authorized(
                black_box(request),
                &f.cedar.policies,
                &f.cedar.entities,
            ));
        }
    });
    let compile = once(5, || Snapshot::compile(&f.tenant));
    let entities = once(5, || cedar::build_entities(&f.tenant).ok());
    let translate = once(3, || to_cedar(&f.tenant).ok());

    println!();
    println!(
        "Per-call latency, {} requests, one core ({} timed calls for Gatehouse, {} for Cedar; timer overhead ~{} per call, included)",
        n,
        gatehouse.samples.len(),
        cedar.samples.len(),
        us(timer_overhead())
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "engine", "median", "p99", "p999", "max", "evals/s"
    );
    for (name, l) in [
        ("gatehouse evaluate+decide", &gatehouse),
        ("gatehouse evaluate only", &evaluate_only),
        ("cedar is_authorized", &cedar),
    ] {
        println!(
            "{:<28} {:>12} {:>12} {:>12} {:>12} {:>14.0}",
            name,
            us(l.percentile(0.5)),
            us(l.percentile(0.99)),
            us(l.percentile(0.999)),
            us(l.samples.last().copied().unwrap_or_default()),
            l.per_second()
        );
    }
    let ratio = |g: &Latency, p: f64| {
        cedar.percentile(p).as_secs_f64() / g.percentile(p).as_secs_f64().max(1e-12)
    };
    let throughput = |g: &Latency| g.per_second() / cedar.per_second().max(1e-12);
    for (name, g) in
        [("cedar / (evaluate+decide)", &gatehouse), ("cedar / (evaluate only)", &evaluate_only)]
    {
        println!(
            "{:<28} {:>11.1}× {:>11.1}× {:>11.1}× {:>12} {:>13.1}×",
            name,
            ratio(g, 0.5),
            ratio(g, 0.99),
            ratio(g, 0.999),
            "",
            throughput(g)
        );
    }
    for (name, l) in [
        ("gatehouse evaluate+decide", &gatehouse),
        ("gatehouse evaluate only", &evaluate_only),
        ("cedar is_authorized", &cedar),
    ] {
        let lo = l.per_request.iter().enumerate().min_by_key(|(_, d)| **d);
        let hi = l.per_request.iter().enumerate().max_by_key(|(_, d)| **d);
        if let (Some((i, lo)), Some((j, hi))) = (lo, hi) {
            println!(
                "{name}: per-request medians from {} (request {i}) to {} (request {j})",
                us(*lo),
                us(*hi)
            );
        }
    }
    let p99 = gatehouse.percentile(0.99);
    println!(
        "goal: Gatehouse p99 < 10 µs: {} ({}); at least 20× faster than Cedar: {} ({:.1}× at the median, {:.1}× in throughput)",
        if p99 < Duration::from_micros(10) { "met" } else { "MISSED" },
        us(p99),
        if ratio(&gatehouse, 0.5) >= 20.0 { "met" } else { "MISSED" },
        ratio(&gatehouse, 0.5),
        throughput(&gatehouse)
    );
    println!(
        "per tenant (median of runs): Snapshot::compile {:.1} ms; Cedar entities (transitive closure) {:.1} ms; Cedar translation + entities {:.1} ms",
        compile.as_secs_f64() * 1e3,
        entities.as_secs_f64() * 1e3,
        translate.as_secs_f64() * 1e3
    );
}
