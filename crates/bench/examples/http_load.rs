//! A small HTTP/1.1 load generator for the server benchmarks (`docs/benchmarks.md`, "The
//! server"). Keep-alive connections over plain tokio sockets (no HTTP client library, so the
//! generator spends as little of the shared two cores as it can), closed loop: each connection
//! sends its next request when the previous answer has arrived. Every request is timed on its
//! own; percentiles are exact (nearest rank over all samples), not bucketed.
//!
//! ```sh
//! cargo build --release -p gatehouse-bench --example http_load
//! L=target/release/examples/http_load
//! # POST /v1.0/identity/conditionalAccess/evaluate, 64 connections, 10 s after 2 s of warm-up
//! $L evaluate --url http://127.0.0.1:8080 --token "$TOKEN" --body scripts/bench/evaluate-adele-fr.json
//! # whole Temporary Access Pass sign-ins (begin + temporaryAccessPass step), TAPs issued first
//! $L signin --url http://127.0.0.1:8080 --token "$TOKEN" --users adele@contoso.example,megan@contoso.example
//! # membership change acknowledged -> the next evaluation (on the same or another node) sees it
//! $L visibility --url http://127.0.0.1:8080 --read-url http://127.0.0.1:8081 --token "$TOKEN" \
//!     --body scripts/bench/evaluate-adele-fr.json
//! ```
//! # entitlement management: N users each request an auto-approved package (submit), or a
//! # package their approver then approves (approve); users are made and signed in first
//! $L govern --url http://127.0.0.1:8080 --token "$TOKEN" --mode submit --users 3000
//! $L govern --url http://127.0.0.1:8080 --token "$TOKEN" --mode approve --users 3000
//! # N admin assignments that all end at one instant (setup for the mass-expiry benchmark)
//! $L assign --url http://127.0.0.1:8080 --token "$TOKEN" --users 100000 --end 2030-01-01T10:00:00Z
//! ```
//! Common options: `--connections N` (64), `--duration S` (10), `--warmup S` (2), `--threads N`
//! (tokio workers, 1). `--json` adds one JSON line with the figures.

// Measuring wall-clock latency is this tool's purpose (the workspace keeps clocks at the edges).
#![expect(clippy::disallowed_methods, reason = "a load generator times requests and paces changes")]

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

const EVALUATE: &str = "/v1.0/identity/conditionalAccess/evaluate";
/// The demo's Contoso Expenses app (policy 001 asks for MFA there; a TAP is MFA).
const EXPENSES_APP: &str = "f1000000-0000-4000-8000-000000000001";
const ADELE: &str = "a0000000-0000-4000-8000-000000000001";
const TRAVEL_GROUP: &str = "b0000000-0000-4000-8000-000000000003";
/// 011-Global-AllApps-UnapprovedLocation-Block: applies to Adele abroad unless she is a
/// member of CA-Internals-Travel.
const LOCATION_BLOCK: &str = "d0000000-0000-4000-8000-000000000011";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = Options::parse(&args).and_then(|o| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.number("threads", 1)?)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            match o.command.as_str() {
                "evaluate" => evaluate(&o).await,
                "signin" => signin(&o).await,
                "visibility" => visibility(&o).await,
                "govern" => govern(&o).await,
                "assign" => assign(&o).await,
                other => Err(format!(
                    "unknown command `{other}` (evaluate, signin, visibility, govern, assign)"
                )
                .into()),
            }
        })
    });
    if let Err(e) = result {
        eprintln!("http_load: {e}");
        std::process::exit(2);
    }
}

// ----- options -----

struct Options {
    command: String,
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut it = args.iter();
        let command = it
            .next()
            .cloned()
            .ok_or("usage: http_load evaluate|signin|visibility|govern|assign [--option value]…")?;
        let (mut values, mut flags) = (HashMap::new(), Vec::new());
        let mut it = it.peekable();
        while let Some(a) = it.next() {
            let name = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument `{a}`"))?;
            match it.peek() {
                Some(v) if !v.starts_with("--") => {
                    values.insert(name.to_owned(), v.to_string());
                    it.next();
                }
                _ => flags.push(name.to_owned()),
            }
        }
        Ok(Options { command, values, flags })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_owned()
    }

    fn required(&self, name: &str) -> Result<String> {
        self.get(name).map(str::to_owned).ok_or_else(|| format!("--{name} is required").into())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number: {v}").into()),
            None => Ok(default),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// `--url http://host:port` as `host:port`.
    fn addr(&self, name: &str, default: &str) -> Result<String> {
        let url = self.string(name, default);
        let rest =
            url.strip_prefix("http://").ok_or_else(|| format!("--{name}: only http:// URLs"))?;
        Ok(rest.trim_end_matches('/').to_owned())
    }

    fn load(&self) -> Result<Load> {
        Ok(Load {
            connections: self.number("connections", 64)?,
            duration: Duration::from_secs_f64(self.number("duration", 10.0)?),
            warmup: Duration::from_secs_f64(self.number("warmup", 2.0)?),
        })
    }
}

#[derive(Clone, Copy)]
struct Load {
    connections: usize,
    duration: Duration,
    warmup: Duration,
}

// ----- a minimal HTTP/1.1 client -----

struct Conn {
    io: BufReader<TcpStream>,
    host: String,
    line: String,
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            host: addr.to_owned(),
            line: String::new(),
        })
    }

    /// The bytes of one request, built once and sent many times.
    fn build(&self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> Vec<u8> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        bytes
    }

    async fn send(&mut self, request: &[u8]) -> Result<Reply> {
        self.io.get_mut().write_all(request).await?;
        self.read_reply().await
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let bytes = body.map(serde_json::to_vec).transpose()?;
        let request = self.build(method, path, token, bytes.as_deref());
        self.send(&request).await
    }

    async fn read_line(&mut self) -> Result<&str> {
        self.line.clear();
        if self.io.read_line(&mut self.line).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed").into());
        }
        Ok(self.line.trim_end())
    }

    async fn read_reply(&mut self) -> Result<Reply> {
        let status_line = self.read_line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line `{status_line}`"))?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().map_err(|_| format!("bad content-length `{value}`"))?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.eq_ignore_ascii_case("chunked");
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = self.read_line().await?;
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or_default(), 16)
                        .map_err(|_| format!("bad chunk size `{size_line}`"))?;
                let start = body.len();
                body.resize(start + size, 0);
                if let Some(buf) = body.get_mut(start..) {
                    self.io.read_exact(buf).await?;
                }
                self.read_line().await?; // the CRLF after the chunk
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            self.io.read_exact(&mut body).await?;
        }
        Ok(Reply { status, body })
    }
}

// ----- statistics -----

/// Exact nearest-rank percentiles over every sample.
struct Stats(Vec<Duration>);

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        Stats(samples)
    }

    fn at(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0.get(rank.clamp(1, self.0.len()) - 1).copied().unwrap_or_default()
    }

    fn ms(&self, p: f64) -> f64 {
        self.at(p).as_secs_f64() * 1e3
    }

    fn line(&self) -> String {
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms (n = {})",
            self.ms(50.0),
            self.ms(90.0),
            self.ms(99.0),
            self.ms(99.9),
            self.ms(100.0),
            self.0.len()
        )
    }

    fn json(&self) -> Value {
        json!({"n": self.0.len(), "p50_ms": self.ms(50.0), "p90_ms": self.ms(90.0), "p99_ms": self.ms(99.0),
               "p999_ms": self.ms(99.9), "max_ms": self.ms(100.0)})
    }
}

/// What one connection saw inside the measurement window.
#[derive(Default)]
struct Tally {
    samples: Vec<Duration>,
    /// Extra per-phase samples (sign-in: begin, step).
    phases: Vec<Vec<Duration>>,
    errors: HashMap<u16, usize>,
    first_error: Option<String>,
}

fn merge(tallies: Vec<Tally>) -> Tally {
    let mut all = Tally::default();
    for t in tallies {
        all.samples.extend(t.samples);
        for (i, p) in t.phases.into_iter().enumerate() {
            if all.phases.len() <= i {
                all.phases.resize_with(i + 1, Vec::new);
            }
            if let Some(slot) = all.phases.get_mut(i) {
                slot.extend(p);
            }
        }
        for (code, n) in t.errors {
            *all.errors.entry(code).or_default() += n;
        }
        all.first_error = all.first_error.or(t.first_error);
    }
    all
}

fn report(name: &str, o: &Options, load: Load, all: Tally, phase_names: &[&str]) -> Result<()> {
    let n = all.samples.len();
    let rate = n as f64 / load.duration.as_secs_f64();
    let errors: usize = all.errors.values().sum();
    let stats = Stats::new(all.samples);
    println!(
        "{name}: {rate:.0} per second ({n} in {:.1} s, {} connections, {errors} errors)",
        load.duration.as_secs_f64(),
        load.connections
    );
    println!("  latency {}", stats.line());
    let mut phases = serde_json::Map::new();
    for (p, samples) in phase_names.iter().zip(all.phases) {
        let s = Stats::new(samples);
        println!("  {p}: {}", s.line());
        phases.insert((*p).to_owned(), s.json());
    }
    if errors > 0 {
        println!(
            "  errors by status: {:?}; first: {}",
            all.errors,
            all.first_error.unwrap_or_default()
        );
    }
    if o.flag("json") {
        println!(
            "{}",
            json!({"benchmark": name, "per_second": rate, "count": n, "errors": errors,
                   "connections": load.connections, "seconds": load.duration.as_secs_f64(),
                   "latency": stats.json(), "phases": phases})
        );
    }
    if n == 0 {
        return Err("nothing completed".into());
    }
    Ok(())
}

/// Runs `work` on `connections` connections; `work` returns the phase durations of one
/// iteration (the first is the whole) or an error status with its body.
async fn drive<F, Fut>(addr: &str, load: Load, work: F) -> Result<Vec<Tally>>
where
    F: Fn(Conn, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Worker>> + Send + 'static,
{
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let until = measure_from + load.duration;
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for i in 0..load.connections {
        let conn = Conn::open(addr).await?;
        let work = Arc::clone(&work);
        tasks.push(tokio::spawn(async move {
            let mut worker = work(conn, i).await?;
            worker.measure_from = measure_from;
            worker.until = until;
            worker.run().await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// One connection's loop: send `step` until the window closes.
struct Worker {
    conn: Conn,
    step: Step,
    measure_from: Instant,
    until: Instant,
}

enum Step {
    /// One prebuilt request, expected to answer `status`.
    Fixed { request: Vec<u8>, status: u16 },
    /// A whole TAP sign-in for users in turn.
    SignIn { users: Arc<Vec<(String, String)>>, next: usize, app: String },
}

impl Worker {
    async fn run(mut self) -> Result<Tally> {
        let mut tally = Tally::default();
        loop {
            let began = Instant::now();
            if began >= self.until {
                break;
            }
            let outcome = match &mut self.step {
                Step::Fixed { request, status } => {
                    let reply = self.conn.send(request).await?;
                    if reply.status == *status { Ok(Vec::new()) } else { Err(reply) }
                }
                Step::SignIn { users, next, app } => {
                    let (upn, code) =
                        users.get(*next % users.len().max(1)).cloned().unwrap_or_default();
                    *next += 1;
                    signin_once(&mut self.conn, &upn, &code, app).await?
                }
            };
            let ended = Instant::now();
            if began < self.measure_from || ended > self.until {
                continue;
            }
            match outcome {
                Ok(phases) => {
                    tally.samples.push(ended - began);
                    for (i, p) in phases.into_iter().enumerate() {
                        if tally.phases.len() <= i {
                            tally.phases.resize_with(i + 1, Vec::new);
                        }
                        if let Some(slot) = tally.phases.get_mut(i) {
                            slot.push(p);
                        }
                    }
                }
                Err(reply) => {
                    *tally.errors.entry(reply.status).or_default() += 1;
                    if tally.first_error.is_none() {
                        tally.first_error = Some(format!("{} {}", reply.status, reply.text()));
                    }
                }
            }
        }
        Ok(tally)
    }
}

fn read_body(o: &Options) -> Result<Vec<u8>> {
    let path = o.required("body")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let _: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
    Ok(bytes)
}

// ----- evaluate -----

async fn evaluate(o: &Options) -> Result<()> {
    let addr = o.addr("url", "http://127.0.0.1:8080")?;
    let token = o.required("token")?;
    let body = read_body(o)?;
    let load = o.load()?;
    // One request first: a wrong token or body should say so, not count as load.
    let mut probe = Conn::open(&addr).await?;
    let request = probe.build("POST", EVALUATE, Some(&token), Some(&body));
    let reply = probe.send(&request).await?;
    if reply.status != 200 {
        return Err(format!("evaluate answered {}: {}", reply.status, reply.text()).into());
    }
    println!("response: {} bytes", reply.body.len());
    let tallies = drive(&addr, load, move |conn, _| {
        let request = request.clone();
        async move {
            let far = Instant::now();
            Ok(Worker {
                conn,
                step: Step::Fixed { request, status: 200 },
                measure_from: far,
                until: far,
            })
        }
    })
    .await?;
    report("evaluate", o, load, merge(tallies), &[])
}

// ----- TAP sign-in -----

/// Issues a multi-use pass to each user (replacing any they hold) and returns (upn, code).
async fn issue_taps(
    addr: &str,
    token: &str,
    upns: &[String],
    minutes: u32,
) -> Result<Vec<(String, String)>> {
    let mut conn = Conn::open(addr).await?;
    let mut out = Vec::new();
    for upn in upns {
        let path = format!("/v1.0/users/{upn}/authentication/temporaryAccessPassMethods");
        let body = json!({"isUsableOnce": false, "lifetimeInMinutes": minutes});
        let reply = conn.call("POST", &path, Some(token), Some(&body)).await?;
        if reply.status != 201 {
            return Err(format!("issuing a TAP to {upn}: {} {}", reply.status, reply.text()).into());
        }
        let code = reply
            .json()?
            .get("temporaryAccessPass")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or("the TAP response has no temporaryAccessPass")?;
        out.push((upn.clone(), code));
    }
    Ok(out)
}

/// begin + temporaryAccessPass; Ok(durations of [begin, step]) on success.
async fn signin_once(
    conn: &mut Conn,
    upn: &str,
    code: &str,
    app: &str,
) -> Result<std::result::Result<Vec<Duration>, Reply>> {
    let t0 = Instant::now();
    let begin = json!({"username": upn, "target": {"appId": app},
                       "client": {"platform": "windows", "clientAppType": "browser"}});
    let reply = conn.call("POST", "/signin/begin", None, Some(&begin)).await?;
    if reply.status != 200 {
        return Ok(Err(reply));
    }
    let flow = reply.json()?;
    let (Some(id), Some(flow_token)) =
        (flow.get("flowId").and_then(Value::as_str), flow.get("flowToken").and_then(Value::as_str))
    else {
        return Ok(Err(reply));
    };
    let t1 = Instant::now();
    let step = json!({"flowToken": flow_token, "code": code});
    let reply =
        conn.call("POST", &format!("/signin/{id}/temporaryAccessPass"), None, Some(&step)).await?;
    let t2 = Instant::now();
    let success = reply.status == 200
        && reply
            .json()
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned))
            .as_deref()
            == Some("success");
    if !success {
        return Ok(Err(reply));
    }
    Ok(Ok(vec![t1 - t0, t2 - t1]))
}

async fn signin(o: &Options) -> Result<()> {
    let addr = o.addr("url", "http://127.0.0.1:8080")?;
    let token = o.required("token")?;
    let upns: Vec<String> = o
        .string(
            "users",
            "adele@contoso.example,megan@contoso.example,lee@contoso.example,alex@contoso.example",
        )
        .split(',')
        .map(str::to_owned)
        .collect();
    let users = Arc::new(issue_taps(&addr, &token, &upns, o.number("tap-minutes", 480)?).await?);
    println!("issued multi-use TAPs to {} users", users.len());
    let app = o.string("app", EXPENSES_APP);
    let load = o.load()?;
    let tallies = drive(&addr, load, move |conn, i| {
        let (users, app) = (Arc::clone(&users), app.clone());
        async move {
            let far = Instant::now();
            Ok(Worker {
                conn,
                step: Step::SignIn { users, next: i, app },
                measure_from: far,
                until: far,
            })
        }
    })
    .await?;
    report("tap-signin", o, load, merge(tallies), &["begin", "temporaryAccessPass step"])
}

// ----- change visibility -----

async fn policy_applies(conn: &mut Conn, request: &[u8], policy: &str) -> Result<bool> {
    let reply = conn.send(request).await?;
    if reply.status != 200 {
        return Err(format!("evaluate answered {}: {}", reply.status, reply.text()).into());
    }
    let v = reply.json()?;
    let all =
        v.get("value").and_then(Value::as_array).ok_or("the evaluate answer has no `value`")?;
    // With `appliedPoliciesOnly`, a policy that does not apply is left out.
    Ok(all
        .iter()
        .find(|p| p.get("id").and_then(Value::as_str) == Some(policy))
        .and_then(|p| p.get("policyApplies"))
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

async fn visibility(o: &Options) -> Result<()> {
    let write_addr = o.addr("url", "http://127.0.0.1:8080")?;
    let read_addr = match o.get("read-url") {
        Some(_) => o.addr("read-url", "")?,
        None => write_addr.clone(),
    };
    let token = o.required("token")?;
    let group = o.string("group", TRAVEL_GROUP);
    let member = o.string("member", ADELE);
    let policy = o.string("policy", LOCATION_BLOCK);
    let changes: usize = o.number("changes", 100)?;
    let pause = Duration::from_millis(o.number("pause-ms", 200)?);
    let timeout = Duration::from_secs(o.number("timeout", 30)?);
    let body = read_body(o)?;
    let mut writer = Conn::open(&write_addr).await?;
    let mut reader = Conn::open(&read_addr).await?;
    let request = reader.build("POST", EVALUATE, Some(&token), Some(&body));
    let add_path = format!("/v1.0/groups/{group}/members/$ref");
    let remove_path = format!("/v1.0/groups/{group}/members/{member}/$ref");
    let reference =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{member}")});

    // Start from "not a member", agreed by the reading node.
    let reply = writer.call("DELETE", &remove_path, Some(&token), None).await?;
    if reply.status != 204 && reply.status != 404 {
        return Err(format!("removing the member first: {} {}", reply.status, reply.text()).into());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outside = policy_applies(&mut reader, &request, &policy).await?;
    println!(
        "{member} outside {group}: policy {policy} applies = {outside}; {changes} changes via {write_addr}, read on {read_addr}"
    );
    let (mut writes, mut visible, mut polls) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..changes {
        let add = i % 2 == 0;
        let expected = if add { !outside } else { outside };
        let sent = Instant::now();
        let reply = if add {
            writer.call("POST", &add_path, Some(&token), Some(&reference)).await?
        } else {
            writer.call("DELETE", &remove_path, Some(&token), None).await?
        };
        let acked = Instant::now();
        if reply.status != 204 {
            return Err(format!("change {i} answered {}: {}", reply.status, reply.text()).into());
        }
        let mut n = 0usize;
        loop {
            n += 1;
            let seen = policy_applies(&mut reader, &request, &policy).await?;
            let at = Instant::now();
            if seen == expected {
                visible.push(at - acked);
                break;
            }
            if at - acked > timeout {
                return Err(format!("change {i} not visible after {timeout:?}").into());
            }
        }
        writes.push(acked - sent);
        polls.push(n);
        tokio::time::sleep(pause).await;
    }
    let first_poll = polls.iter().filter(|n| **n == 1).count();
    let max_polls = polls.iter().max().copied().unwrap_or_default();
    let (w, v) = (Stats::new(writes), Stats::new(visible));
    println!("write (request sent -> 204): {}", w.line());
    println!("visible (204 received -> evaluate answer showing it): {}", v.line());
    println!(
        "seen by the first evaluation after the 204: {first_poll} of {changes}; most evaluations needed: {max_polls}"
    );
    if o.flag("json") {
        println!(
            "{}",
            json!({"benchmark": "visibility", "write": w.json(), "visible": v.json(),
                   "first_poll": first_poll, "changes": changes, "max_polls": max_polls})
        );
    }
    Ok(())
}

// ----- entitlement management -----

const EM: &str = "/v1.0/identityGovernance/entitlementManagement";
const GRAPH_APP: &str = "00000003-0000-0000-c000-000000000000";

async fn expect(
    conn: &mut Conn,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
    status: u16,
) -> Result<Value> {
    let reply = conn.call(method, path, Some(token), body).await?;
    if reply.status != status {
        return Err(format!("{method} {path} answered {}: {}", reply.status, reply.text()).into());
    }
    Ok(if reply.body.is_empty() { Value::Null } else { reply.json()? })
}

fn id_of(v: &Value) -> Result<String> {
    Ok(v.get("id").and_then(Value::as_str).ok_or("no id in the answer")?.to_owned())
}

/// A catalog with the travel persona group as its resource and a package granting its
/// membership, with one policy: all members, no approval (or one stage approved by `approver`).
async fn bench_package(
    conn: &mut Conn,
    token: &str,
    tag: &str,
    approver: Option<&str>,
) -> Result<(String, String)> {
    let catalog = id_of(
        &expect(
            conn,
            "POST",
            &format!("{EM}/catalogs"),
            token,
            Some(&json!({"displayName": format!("Bench {tag}")})),
            201,
        )
        .await?,
    )?;
    expect(conn, "POST", &format!("{EM}/resourceRequests"), token, Some(&json!({
        "requestType": "adminAdd", "resource": {"originId": TRAVEL_GROUP, "originSystem": "AadGroup"}, "catalog": {"id": catalog}})), 201).await?;
    let package = id_of(
        &expect(
            conn,
            "POST",
            &format!("{EM}/accessPackages"),
            token,
            Some(&json!({"displayName": format!("Bench {tag}"), "catalog": {"id": catalog}})),
            201,
        )
        .await?,
    )?;
    expect(
        conn,
        "POST",
        &format!("{EM}/accessPackages/{package}/resourceRoleScopes"),
        token,
        Some(&json!({
        "role": {"originId": format!("Member_{TRAVEL_GROUP}"), "originSystem": "AadGroup"},
        "scope": {"originId": TRAVEL_GROUP, "originSystem": "AadGroup", "isRootScope": true}})),
        201,
    )
    .await?;
    let approval = match approver {
        None => json!({"isApprovalRequiredForAdd": false, "stages": []}),
        Some(a) => json!({"isApprovalRequiredForAdd": true, "stages": [{
            "durationBeforeAutomaticDenial": "P7D",
            "primaryApprovers": [{"@odata.type": "#microsoft.graph.singleUser", "userId": a}]}]}),
    };
    let policy = id_of(
        &expect(
            conn,
            "POST",
            &format!("{EM}/assignmentPolicies"),
            token,
            Some(&json!({
        "displayName": format!("Bench {tag}"), "allowedTargetScope": "allMemberUsers",
        "expiration": {"type": "afterDuration", "duration": "P1D"},
        "requestorSettings": {"enableTargetsToSelfAddAccess": true},
        "requestApprovalSettings": approval, "accessPackage": {"id": package}})),
            201,
        )
        .await?,
    )?;
    Ok((package, policy))
}

/// `n` new member users, each with a session for Microsoft Graph (signed in with a Temporary
/// Access Pass, which satisfies the demo's MFA policy): (id, token).
async fn bench_users(
    addr: &str,
    token: &str,
    n: usize,
    tag: &str,
) -> Result<Vec<(String, String)>> {
    let workers = 8.min(n.max(1));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (addr, token, tag) = (addr.to_owned(), token.to_owned(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut out = Vec::new();
            for i in (w..n).step_by(workers) {
                let upn = format!("bench-{tag}-{i}@contoso.example");
                let user = json!({"accountEnabled": true, "displayName": format!("Bench {i}"), "mailNickname": format!("bench{tag}{i}"),
                                  "userPrincipalName": upn, "passwordProfile": {"password": "Bench-Passw0rd-1", "forceChangePasswordNextSignIn": false}});
                let id = id_of(&expect(&mut conn, "POST", "/v1.0/users", &token, Some(&user), 201).await?)?;
                let tap = expect(&mut conn, "POST", &format!("/v1.0/users/{id}/authentication/temporaryAccessPassMethods"), &token, Some(&json!({"lifetimeInMinutes": 480, "isUsableOnce": false})), 201).await?;
                let code = tap.get("temporaryAccessPass").and_then(Value::as_str).ok_or("no pass")?.to_owned();
                let flow = conn.call("POST", "/signin/begin", None, Some(&json!({"username": upn, "target": {"appId": GRAPH_APP}}))).await?.json()?;
                let fid = flow.get("flowId").and_then(Value::as_str).ok_or("no flow")?.to_owned();
                let step = json!({"flowToken": flow.get("flowToken"), "code": code});
                let done = conn.call("POST", &format!("/signin/{fid}/temporaryAccessPass"), None, Some(&step)).await?.json()?;
                let session = done.pointer("/session/token").and_then(Value::as_str).ok_or_else(|| format!("signing in {upn}: {done}"))?.to_owned();
                out.push((id, session));
            }
            Ok::<_, Error>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn evaluate_body(user: &str) -> Value {
    json!({
        "signInIdentity": {"@odata.type": "#microsoft.graph.userSignIn", "userId": user},
        "signInContext": {"@odata.type": "#microsoft.graph.applicationContext", "includeApplications": [EXPENSES_APP]},
        "signInConditions": {"devicePlatform": "windows", "clientAppType": "browser", "country": "FR", "ipAddress": "198.51.100.23",
                             "signInRiskLevel": "none", "userRiskLevel": "none", "insiderRiskLevel": "none",
                             "servicePrincipalRiskLevel": "none", "deviceInfo": {}},
        "appliedPoliciesOnly": true,
    })
}

/// `govern --mode submit`: each user asks for an auto-approved package that puts them in the
/// travel persona; timed from sending the request to the first evaluation that shows the
/// country block (011) no longer applying to them. `--mode approve`: each user asks for a
/// package their approver must approve (timed: submit), then the approver approves them all
/// (timed: approve), each decision putting its requestor in the group.
async fn govern(o: &Options) -> Result<()> {
    let addr = o.addr("url", "http://127.0.0.1:8080")?;
    let token = o.required("token")?;
    let n: usize = o.number("users", 2000)?;
    let connections: usize = o.number("connections", 16)?;
    let mode = o.string("mode", "submit");
    let tag = format!("{}", std::process::id());
    let setup = Instant::now();
    let mut conn = Conn::open(&addr).await?;
    let approver = if mode == "approve" {
        bench_users(&addr, &token, 1, &format!("{tag}a")).await?.pop()
    } else {
        None
    };
    let (package, policy) =
        bench_package(&mut conn, &token, &tag, approver.as_ref().map(|(id, _)| id.as_str()))
            .await?;
    let users = bench_users(&addr, &token, n, &tag).await?;
    println!(
        "setup: {} users signed in, package {package}, in {:.1} s",
        users.len(),
        setup.elapsed().as_secs_f64()
    );
    let queue = Arc::new(std::sync::Mutex::new(users));
    let submit = |visible: bool| {
        let (queue, package, policy, addr) =
            (Arc::clone(&queue), package.clone(), policy.clone(), addr.clone());
        async move {
            let mut tasks = Vec::new();
            let started = Instant::now();
            for _ in 0..connections {
                let (queue, package, policy, addr) =
                    (Arc::clone(&queue), package.clone(), policy.clone(), addr.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::open(&addr).await?;
                    let (mut posts, mut seen, mut ids, mut late) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
                    loop {
                        let next = queue.lock().map_err(|_| "poisoned")?.pop();
                        let Some((user, session)) = next else { break };
                        let body = json!({"requestType": "userAdd", "justification": "bench",
                                          "assignment": {"targetId": user, "assignmentPolicyId": policy, "accessPackageId": package}});
                        let sent = Instant::now();
                        let reply = conn.call("POST", &format!("{EM}/assignmentRequests"), Some(&session), Some(&body)).await?;
                        let acked = Instant::now();
                        if reply.status != 201 {
                            return Err::<_, Error>(format!("submit answered {}: {}", reply.status, reply.text()).into());
                        }
                        posts.push(acked - sent);
                        ids.push(reply.json()?.get("id").and_then(Value::as_str).unwrap_or_default().to_owned());
                        if visible {
                            let request = conn.build("POST", EVALUATE, Some(&session), Some(&serde_json::to_vec(&evaluate_body(&user))?));
                            let mut first = true;
                            while policy_applies(&mut conn, &request, LOCATION_BLOCK).await? {
                                if first {
                                    late += 1;
                                    first = false;
                                }
                            }
                            seen.push(Instant::now() - sent);
                        }
                    }
                    Ok((posts, seen, ids, late))
                }));
            }
            let (mut posts, mut seen, mut ids, mut late) = (Vec::new(), Vec::new(), Vec::new(), 0);
            for t in tasks {
                let (p, s, i, l) = t.await??;
                posts.extend(p);
                seen.extend(s);
                ids.extend(i);
                late += l;
            }
            Ok::<_, Error>((posts, seen, ids, late, started.elapsed()))
        }
    };
    match mode.as_str() {
        "submit" => {
            let (posts, seen, _, late, took) = submit(true).await?;
            let rate = posts.len() as f64 / took.as_secs_f64();
            let (p, v) = (Stats::new(posts), Stats::new(seen));
            println!(
                "submit (auto-approved, delivered in the answer): {rate:.0} per second with {connections} connections, each followed by one evaluation"
            );
            println!("  request sent -> 201: {}", p.line());
            println!(
                "  request sent -> membership in force (evaluate shows 011 not applying): {}",
                v.line()
            );
            println!("  evaluations that still saw the block after the 201: {late}");
            if o.flag("json") {
                println!(
                    "{}",
                    json!({"benchmark": "govern-submit", "per_second": rate, "post": p.json(), "in_force": v.json(), "late": late})
                );
            }
        }
        "approve" => {
            let (posts, _, ids, _, took) = submit(false).await?;
            let submit_rate = posts.len() as f64 / took.as_secs_f64();
            let p = Stats::new(posts);
            println!(
                "submit (needs approval): {submit_rate:.0} per second with {connections} connections"
            );
            println!("  request sent -> 201: {}", p.line());
            let (_, approver_token) = approver.ok_or("no approver")?;
            let approvals = expect(
                &mut conn,
                "GET",
                &format!(
                    "{EM}/accessPackageAssignmentApprovals/filterByCurrentUser(on='approver')"
                ),
                &approver_token,
                None,
                200,
            )
            .await?;
            let mut stages: Vec<String> = approvals
                .get("value")
                .and_then(Value::as_array)
                .ok_or("no approvals")?
                .iter()
                .filter_map(|a| {
                    Some(format!(
                        "{EM}/accessPackageAssignmentApprovals/{}/stages/{}",
                        a.get("id")?.as_str()?,
                        a.pointer("/stages/0/id")?.as_str()?
                    ))
                })
                .collect();
            if stages.len() != ids.len() {
                return Err(format!(
                    "{} requests but {} approvals waiting",
                    ids.len(),
                    stages.len()
                )
                .into());
            }
            stages.reverse();
            let queue = Arc::new(std::sync::Mutex::new(stages));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..connections {
                let (queue, addr, approver_token) =
                    (Arc::clone(&queue), addr.clone(), approver_token.clone());
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::open(&addr).await?;
                    let mut samples = Vec::new();
                    loop {
                        let next = queue.lock().map_err(|_| "poisoned")?.pop();
                        let Some(path) = next else { break };
                        let sent = Instant::now();
                        let reply = conn
                            .call(
                                "PATCH",
                                &path,
                                Some(&approver_token),
                                Some(&json!({"reviewResult": "Approve"})),
                            )
                            .await?;
                        if reply.status != 204 {
                            return Err::<_, Error>(
                                format!("approve answered {}: {}", reply.status, reply.text())
                                    .into(),
                            );
                        }
                        samples.push(Instant::now() - sent);
                    }
                    Ok(samples)
                }));
            }
            let mut samples = Vec::new();
            for t in tasks {
                samples.extend(t.await??);
            }
            let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
            let a = Stats::new(samples);
            println!(
                "approve (each delivers the assignment and the membership): {rate:.0} per second with {connections} connections"
            );
            println!("  PATCH sent -> 204: {}", a.line());
            if o.flag("json") {
                println!(
                    "{}",
                    json!({"benchmark": "govern-approve", "submit_per_second": submit_rate, "submit": p.json(), "approve_per_second": rate, "approve": a.json()})
                );
            }
        }
        other => return Err(format!("--mode `{other}`: submit or approve").into()),
    }
    Ok(())
}

/// `assign`: admin assignments (no approval, delivered at once) of a package granting the
/// travel persona to the users of the store in id order, skipping Nestor and the break-glass
/// accounts, all ending at `--end`; for the mass-expiry benchmark.
async fn assign(o: &Options) -> Result<()> {
    let addr = o.addr("url", "http://127.0.0.1:8080")?;
    let token = o.required("token")?;
    let n: usize = o.number("users", 100_000)?;
    let end = o.required("end")?;
    let connections: usize = o.number("connections", 16)?;
    let tag = format!("{}", std::process::id());
    let mut conn = Conn::open(&addr).await?;
    let (package, policy) = bench_package(&mut conn, &token, &tag, None).await?;
    // The users, paged.
    let mut users = Vec::new();
    let mut next = Some("/v1.0/users?$select=id,userType&$top=999".to_owned());
    while let Some(path) = next.take() {
        let page = expect(&mut conn, "GET", &path, &token, None, 200).await?;
        for u in page.get("value").and_then(Value::as_array).into_iter().flatten() {
            if u.get("userType").and_then(Value::as_str) == Some("Member")
                && let Some(id) = u.get("id").and_then(Value::as_str)
                && !id.starts_with("a0000000-0000-4000-8000-0000000000")
            {
                users.push(id.to_owned());
            }
        }
        next = page
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .and_then(|l| l.find("/v1.0/").map(|i| l[i..].to_owned()));
        if users.len() >= n {
            break;
        }
    }
    users.truncate(n);
    println!("assigning {} users, ending at {end}", users.len());
    let queue = Arc::new(std::sync::Mutex::new(users));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (queue, addr, token, package, policy, end) = (
            Arc::clone(&queue),
            addr.clone(),
            token.clone(),
            package.clone(),
            policy.clone(),
            end.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await?;
            let mut done = 0usize;
            loop {
                let next = queue.lock().map_err(|_| "poisoned")?.pop();
                let Some(user) = next else { break };
                let body = json!({"requestType": "adminAdd",
                                  "assignment": {"targetId": user, "assignmentPolicyId": policy, "accessPackageId": package},
                                  "schedule": {"expiration": {"type": "afterDateTime", "endDateTime": end}}});
                expect(&mut conn, "POST", &format!("{EM}/assignmentRequests"), &token, Some(&body), 201).await?;
                done += 1;
            }
            Ok::<_, Error>(done)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "assigned {done} in {took:.1} s ({:.0} per second); package {package}",
        done as f64 / took
    );
    if o.flag("json") {
        println!(
            "{}",
            json!({"benchmark": "assign", "count": done, "seconds": took, "package": package})
        );
    }
    Ok(())
}
