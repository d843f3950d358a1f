//! `serve`, `import` and `admin bootstrap`: the commands that run or change a Gatehouse store.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use gatehouse_server::clock::{Clock, ManualClock, SystemClock};
use gatehouse_server::geo::Geo;
use gatehouse_server::{Config, demo, serve as srv};

use crate::Failure;

#[derive(Args)]
pub struct StoreArgs {
    /// Configuration file (default: ./gatehouse.toml when present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// `sqlite:PATH` or `postgres://…` (default: SQLite in the data folder).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Where the embedded SQLite database lives (default: ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<std::net::SocketAddr>,
    /// Seed the travel story on an empty store (users, groups, policies, demo credentials),
    /// trust X-Forwarded-For from localhost, and use the demo GeoIP database unless one is
    /// configured. On a store that is not empty, nothing is seeded.
    #[arg(long)]
    demo: bool,
    /// FOR TESTS ONLY: run on a clock that starts at this instant (RFC 3339) and moves only
    /// when `POST /test/clock` says so. Never use it in production: anyone who can reach the
    /// server can move its time.
    #[arg(long, value_name = "INSTANT", hide = true)]
    test_clock: Option<String>,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A tenant export: a folder of Graph JSON files, or one file.
    #[arg(long, value_name = "PATH")]
    tenant: PathBuf,
}

#[derive(Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The administrator's user principal name.
    #[arg(long, value_name = "UPN")]
    upn: String,
}

fn config(args: &StoreArgs) -> Result<Config, Failure> {
    let mut c = Config::load(args.config.as_deref()).map_err(|e| Failure::input(e.to_string()))?;
    if let Some(u) = &args.database_url {
        c.database_url = Some(u.clone());
    }
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    Ok(c)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::input(format!("cannot start the runtime: {e}")))
}

fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure { code: 2, lines: vec![e.to_string()] }
}

pub fn serve(args: &ServeArgs) -> Result<u8, Failure> {
    logging();
    let mut config = config(&args.store)?;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.demo && config.trusted_proxies.is_empty() {
        // The walk-through pretends to be abroad with X-Forwarded-For from localhost.
        config.trusted_proxies =
            vec!["127.0.0.0/8".parse().map_err(fail)?, "::1/128".parse().map_err(fail)?];
    }
    let geo = match &config.geoip_database {
        Some(path) => Some(Geo::open(path).map_err(fail)?),
        None if args.demo => Some(Geo::from_bytes(demo::GEOIP.to_vec()).map_err(fail)?),
        None => None,
    };
    let clock: Arc<dyn Clock> = match &args.test_clock {
        Some(at) => {
            let ms = gatehouse_core::time::parse(at).ok_or_else(|| {
                Failure::input(format!("--test-clock: `{at}` is not an RFC 3339 instant"))
            })?;
            config.test_clock = true;
            Arc::new(ManualClock::at(ms))
        }
        None => Arc::new(SystemClock),
    };
    runtime()?.block_on(async move {
        if config.test_clock {
            tracing::warn!(
                "running on a TEST CLOCK that POST /test/clock moves: never in production"
            );
        }
        let store = srv::open_store(&config).await.map_err(fail)?;
        if args.demo {
            match demo::seed(&store, clock.now()).await.map_err(fail)? {
                Some(seeded) => {
                    println!("Seeded the travel story (examples/contoso). Demo credentials:");
                    println!("  every user's password: {}", demo::PASSWORD);
                    println!("  Adele's Authenticator-app secret: {}", demo::ADELE_TOTP_SECRET);
                    println!("  Megan's Authenticator-app secret: {}", demo::MEGAN_TOTP_SECRET);
                    println!(
                        "  Nestor's (Global Administrator) Authenticator-app secret: {}",
                        demo::NESTOR_TOTP_SECRET
                    );
                    println!("  mail goes to {}", config.mail_dir().display());
                    println!(
                        "  API token for nestor@contoso.example (Global Administrator), shown once:"
                    );
                    println!("    {}", seeded.admin_token);
                }
                None => {
                    println!(
                        "The store already holds a directory, so the demo was not seeded again \
                         (delete {} to start over).",
                        config.data_dir.display()
                    );
                    // Name the binary as it was started (`target/release/gatehouse`, not on PATH).
                    let me = std::env::args().next().unwrap_or_else(|| "gatehouse".into());
                    println!(
                        "Lost the API token? `{me} admin bootstrap --upn nestor@contoso.example` \
                         prints a new one."
                    );
                }
            }
        }
        let url = gatehouse_server::store::redact(&config.database_url());
        let running = srv::start(store, config, clock, geo).await.map_err(fail)?;
        println!("Gatehouse is listening on http://{} (store: {url})", running.addr);
        running.wait(shutdown_signal()).await.map_err(fail)?;
        println!("Gatehouse stopped.");
        Ok(0)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

pub fn import(args: &ImportArgs) -> Result<u8, Failure> {
    logging();
    let config = config(&args.store)?;
    let files = crate::files::read_tenant(&args.tenant)?;
    runtime()?.block_on(async move {
        let store = srv::open_store(&config).await.map_err(fail)?;
        let s = gatehouse_server::import::import(&store, &files, SystemClock.now(), None)
            .await
            .map_err(fail)?;
        println!(
            "Imported {} users, {} groups, {} memberships, {} role assignments, {} service principals, \
             {} named locations, {} authentication strengths and {} policies.",
            s.users, s.groups, s.memberships, s.role_assignments, s.service_principals,
            s.named_locations, s.strengths, s.policies
        );
        Ok(0)
    })
}

pub fn bootstrap(args: &BootstrapArgs) -> Result<u8, Failure> {
    let config = config(&args.store)?;
    runtime()?.block_on(async move {
        let store = srv::open_store(&config).await.map_err(fail)?;
        let b = gatehouse_server::admin::bootstrap(&store, &args.upn, SystemClock.now())
            .await
            .map_err(fail)?;
        let what = if b.created_user { "Created" } else { "Found" };
        eprintln!("{what} {} ({}); it holds Global Administrator.", args.upn, b.user_id);
        eprintln!("API token (shown once; use it as `Authorization: Bearer …`):");
        println!("{}", b.token);
        Ok(0)
    })
}
