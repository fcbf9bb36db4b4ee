//! `fengqiao`: run the whole suite (`dev`), one service (`serve`), mint dev tokens (`token`),
//! or probe health (`healthcheck`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use fengqiao::{SAMPLE_AGENCIES, ServiceName, Suite, SuiteSpec, dev_key_paths, ensure_dev_key};
use fengqiao_kit::config::{Config, ConfigArgs, LogFormat};

#[derive(Parser)]
#[command(
    name = "fengqiao",
    version,
    about = "Fengqiao (枫桥): disputes handed over, approved, mediated, confirmed and reported back between agencies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every service in one process on one port, SQLite under the data directory, a generated
    /// dev signing key and the sample agencies of one district.
    Dev {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// One service per process (production).
    Serve {
        /// The service to run.
        #[arg(long, env = "FENGQIAO_SERVICE", value_enum)]
        service: ServiceName,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Mint a dev token signed with the dev key under the data directory.
    Token {
        /// A sample actor, as `<agency-id>/<actor-id>` (see `fengqiao dev`'s output).
        #[arg(long = "as", conflicts_with_all = ["agency", "actor"])]
        as_actor: Option<String>,
        /// Agency id (without `agencies/`).
        #[arg(long, requires = "actor")]
        agency: Option<String>,
        /// Actor id.
        #[arg(long, requires = "agency")]
        actor: Option<String>,
        /// Roles (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 8 * 3600)]
        ttl_secs: i64,
        /// Issuer; must match the server's `auth.issuer`.
        #[arg(long, env = "FENGQIAO_AUTH_ISSUER", default_value = "fengqiao")]
        issuer: String,
        /// Data directory holding the dev key.
        #[arg(long, env = "FENGQIAO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// List the sample actors instead.
        #[arg(long)]
        list: bool,
    },
    /// Verify the router's hash-chained audit log; exits non-zero at the first broken link.
    AuditVerify {
        /// The router's store URL (`sqlite://…` or `postgres://…`).
        #[arg(long, env = "FENGQIAO_DATABASE_URL")]
        database_url: String,
    },
    /// Exit 0 when the server's gRPC health reports SERVING (for container probes).
    Healthcheck {
        /// Server address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Service to check; empty means the whole server.
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fengqiao: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fengqiao: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev { config } => dev(config).await,
        Command::Serve { service, config } => serve(service, config).await,
        Command::Token {
            as_actor,
            agency,
            actor,
            roles,
            ttl_secs,
            issuer,
            data_dir,
            list,
        } => token(
            as_actor, agency, actor, roles, ttl_secs, &issuer, &data_dir, list,
        ),
        Command::Healthcheck {
            addr,
            service,
            timeout_ms,
        } => healthcheck(&addr, &service, timeout_ms).await,
        Command::AuditVerify { database_url } => audit_verify(&database_url).await,
    }
}

fn seed() -> anyhow::Result<fengqiao_router::agencies::SeedFile> {
    toml::from_str(SAMPLE_AGENCIES).context("sample agencies")
}

/// Store URLs: `database_url` with `{service}` replaced, or SQLite files under `data_dir`.
fn store_urls(
    config: &Config,
    services: &[ServiceName],
) -> anyhow::Result<BTreeMap<ServiceName, String>> {
    let mut out = BTreeMap::new();
    for &s in services {
        let url = match &config.database_url {
            Some(u) if services.len() > 1 && !u.contains("{service}") => bail!(
                "database_url is shared by several services: put {{service}} in it (e.g. postgres://host/fengqiao_{{service}}) so that each service has its own database"
            ),
            Some(u) => u.replace("{service}", &s.as_str().replace('-', "_")),
            None => format!(
                "sqlite://{}",
                config.data_dir.join(format!("{}.db", s.as_str())).display()
            ),
        };
        out.insert(s, url);
    }
    Ok(out)
}

async fn run_suite(
    config: Config,
    services: Vec<ServiceName>,
    agency_seed: Option<String>,
    banner: bool,
) -> anyhow::Result<ExitCode> {
    // One service per process: the resource's service.name is that service. Several services
    // in one process (`dev`) share one resource, service.name `fengqiao`; their server spans
    // tell them apart by `rpc.service`.
    let resource_name = match services.as_slice() {
        [one] => one.as_str(),
        _ => "fengqiao",
    };
    let telemetry = fengqiao_kit::telemetry::init(
        resource_name,
        banner.then_some("dev"),
        config.log_format,
        &config.log_level,
        config.otlp_endpoint.as_deref(),
    )?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
    let stores = store_urls(&config, &services)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(&config.admin_listen)
        .await
        .with_context(|| format!("admin listen on {}", config.admin_listen))?;
    let grace = Duration::from_millis(config.limits.shutdown_grace_ms);
    let spec = SuiteSpec {
        config: config.clone(),
        services: services.clone(),
        stores,
        agency_seed,
    };
    let suite = Suite::start(spec, listener, admin).await?;
    if banner {
        print_banner(&config, &suite)?;
    }
    fengqiao_kit::server::os_signal().await;
    suite.shutdown(grace).await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

async fn dev(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args)?;
    if args.dump_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let from_file = args.config.is_some();
    if !from_file && args.listen.is_none() {
        config.listen = "127.0.0.1:50051".into();
    }
    if !from_file && args.admin_listen.is_none() {
        config.admin_listen = "127.0.0.1:9090".into();
    }
    if !from_file && args.log_format.is_none() {
        config.log_format = LogFormat::Text;
    }
    ensure_dev_key(&config.data_dir)?;
    if config.auth.public_keys_file.is_none() {
        config.auth.public_keys_file = Some(dev_key_paths(&config.data_dir).1);
    }
    if config.auth.service_key_file.is_none() {
        config.auth.service_key_file = Some(dev_key_paths(&config.data_dir).0);
    }
    run_suite(
        config,
        ServiceName::ALL.to_vec(),
        Some(SAMPLE_AGENCIES.to_string()),
        true,
    )
    .await
}

async fn serve(service: ServiceName, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args)?;
    if args.dump_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    run_suite(config, vec![service], None, false).await
}

fn print_banner(config: &Config, suite: &Suite) -> anyhow::Result<()> {
    let seed = seed()?;
    println!();
    println!("Fengqiao dev suite is up.");
    println!(
        "  gRPC      {}   (reflection v1 + v1alpha; health per service)",
        suite.server.addr
    );
    println!(
        "  admin     http://{}/metrics  /healthz  /readyz",
        suite.admin_addr
    );
    println!("  data      {}", config.data_dir.display());
    println!();
    println!("Get a token for a sample actor, then call with `authorization: Bearer <token>`:");
    println!(
        "  fengqiao token --as xigang-110/reviewer-01 --data-dir {}",
        config.data_dir.display()
    );
    println!();
    println!("Sample actors (agency/actor  roles):");
    for a in &seed.agency {
        for actor in &a.actor {
            println!(
                "  {:<44} {:<36} {}",
                format!("{}/{}", a.id, actor.id),
                actor.roles.join(","),
                actor.title
            );
        }
    }
    println!();
    println!("Stop with Ctrl-C (or SIGTERM): in-flight calls finish, stores close.");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn token(
    as_actor: Option<String>,
    agency: Option<String>,
    actor: Option<String>,
    mut roles: Vec<String>,
    ttl_secs: i64,
    issuer: &str,
    data_dir: &std::path::Path,
    list: bool,
) -> anyhow::Result<ExitCode> {
    let seed = seed()?;
    if list {
        for a in &seed.agency {
            for actor in &a.actor {
                println!("{}/{}\t{}", a.id, actor.id, actor.roles.join(","));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (agency, actor) = match (as_actor, agency, actor) {
        (Some(spec), _, _) => {
            let (ag, ac) = spec
                .split_once('/')
                .context("--as takes <agency-id>/<actor-id>")?;
            let a =
                seed.agency.iter().find(|a| a.id == ag).with_context(|| {
                    format!("no sample agency {ag} (see `fengqiao token --list`)")
                })?;
            let sample = a.actor.iter().find(|x| x.id == ac).with_context(|| {
                format!("no sample actor {ac} in {ag} (see `fengqiao token --list`)")
            })?;
            if roles.is_empty() {
                roles.clone_from(&sample.roles);
            }
            (ag.to_string(), ac.to_string())
        }
        (None, Some(ag), Some(ac)) => (ag, ac),
        _ => bail!("say who the token is for: --as <agency>/<actor>, or --agency and --actor"),
    };
    if ttl_secs <= 0 {
        bail!("--ttl-secs must be positive");
    }
    let key = ensure_dev_key(data_dir)?;
    let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
    let claims = fengqiao_kit::auth::claims(
        issuer,
        &format!("agencies/{agency}"),
        &actor,
        &role_refs,
        ttl_secs,
    );
    println!("{}", key.sign(&claims));
    Ok(ExitCode::SUCCESS)
}

async fn healthcheck(addr: &str, service: &str, timeout_ms: u64) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let check = async {
        let channel = fengqiao_kit::client::channel(addr, None)?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let resp = client
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            })
            .await?;
        anyhow::Ok(resp.into_inner().status)
    };
    match tokio::time::timeout(Duration::from_millis(timeout_ms), check).await {
        Ok(Ok(s)) if s == ServingStatus::Serving as i32 => {
            println!("SERVING");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(s)) => {
            println!(
                "{}",
                ServingStatus::try_from(s)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN")
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            println!("unreachable: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            println!("timed out");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn audit_verify(url: &str) -> anyhow::Result<ExitCode> {
    let store = fengqiao_store::Store::connect(fengqiao_store::StoreConfig::new(url))
        .await
        .context("open the router's store")?;
    let report = fengqiao_router::audit::verify_cli(&store)
        .await
        .map_err(|e| anyhow::anyhow!("verify: {e}"))?;
    store.close().await;
    println!("records checked: {}", report.records_checked);
    println!("last sequence:   {}", report.last_seq);
    println!("last hash:       {}", report.last_hash);
    if report.ok {
        println!("audit chain intact");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "audit chain BROKEN at sequence {}: {}",
            report.first_broken_seq.unwrap_or(0),
            report.detail
        );
        Ok(ExitCode::FAILURE)
    }
}
