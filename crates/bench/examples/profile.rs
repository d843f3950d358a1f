//! A profiling driver: builds the benchmark fixture, then runs only Gatehouse's
//! evaluate + decide over the requests, so a profiler sees nothing else in the hot loop.
//!
//! ```sh
//! cargo build --release -p gatehouse-bench --example profile
//! valgrind --tool=callgrind --toggle-collect='profile::run' target/release/examples/profile 20
//! perf record -g target/release/examples/profile 20000
//! ```
//! The argument is the number of rounds over the requests (default 1000); set
//! `GATEHOUSE_BENCH_SMALL=1` for the small tenant and `PROFILE_EVALUATE_ONLY=1` to leave out
//! `decide`.

use std::hint::black_box;

use gatehouse_bench::{Config, Fixture};

#[inline(never)]
fn run(f: &Fixture, rounds: usize, decide: bool) -> usize {
    let mut applied = 0;
    for _ in 0..rounds {
        for (request, auth) in f.requests.iter().zip(&f.auth) {
            let evaluation = f.snapshot.evaluate(black_box(request));
            if decide {
                applied += black_box(evaluation.decide(auth)).results.len();
            } else {
                applied += black_box(&evaluation).results.len();
            }
        }
    }
    applied
}

fn main() {
    let rounds = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let config = if std::env::var_os("GATEHOUSE_BENCH_SMALL").is_some() {
        Config::small()
    } else {
        Config::full()
    };
    let fixture = match Fixture::build(&config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("building the fixture failed: {e}");
            std::process::exit(1);
        }
    };
    let decide = std::env::var_os("PROFILE_EVALUATE_ONLY").is_none();
    println!("{}", run(&fixture, rounds, decide));
}
