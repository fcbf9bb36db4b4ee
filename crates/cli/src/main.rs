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

mod ops;

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
enum PiiKeysCommand {
    /// Write a new key file (mode 0600) with one data key and a lookup key; refuses to
    /// overwrite.
    Generate {
        /// Key id of the data key (e.g. `2026-12`).
        #[arg(long)]
        kid: String,
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Stage a new data key in a key file without making it active: a process started with the
    /// file opens rows sealed with it, new writes keep using the active key. Step 1 of a
    /// rotation across replicas; roll the file out, then `activate`. Refuses a key id already
    /// in the file.
    Add {
        /// Key id of the new data key (e.g. `2027-06`).
        #[arg(long)]
        kid: String,
        /// The key file to change in place (it must exist).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Make a staged data key the one new writes use (every key in the file still decrypts).
    /// Step 2 of a rotation across replicas: only once every replica runs with the file that
    /// holds the staged key.
    Activate {
        /// Key id of the staged key.
        kid: String,
        /// The key file to change in place.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Add a new data key to a key file and make it the active one at once (`add` +
    /// `activate`; new writes use it, every key in the file still decrypts). For a single
    /// process: replicas restarting one by one use `add`, then `activate`. The lookup key is
    /// kept.
    Rotate {
        /// Key id of the new data key.
        #[arg(long)]
        kid: String,
        /// The key file to change in place.
        #[arg(long)]
        key_file: PathBuf,
    },
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
        /// The service to run; several (`--service a,b` or the flag repeated) share one
        /// process and its inbox, e.g. the two services of one court pulling for it, each
        /// with its own database (`{service}` in `database_url`).
        #[arg(
            long,
            env = "FENGQIAO_SERVICE",
            value_parser = service_name_parser(),
            value_delimiter = ',',
            required = true
        )]
        service: Vec<ServiceName>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the services this binary can run (the registry), one per line: name, then its
    /// gRPC package prefix.
    Services,
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
        /// Data directory holding the dev key (written by `fengqiao dev`).
        #[arg(long, env = "FENGQIAO_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Sign with this key file (from `fengqiao keygen`) instead of the dev key.
        #[arg(long, env = "FENGQIAO_SIGNING_KEY_FILE")]
        key_file: Option<PathBuf>,
        /// List the sample actors instead.
        #[arg(long)]
        list: bool,
    },
    /// Make a token signing key for a deployment: the private key file (mode 0600, kept by
    /// whoever issues tokens, or mounted as the router's `auth.service_key_file`) and the
    /// public key set every server verifies with (`auth.public_keys_file`). An existing public
    /// key set is kept and the new key added, so old tokens stay valid during a rotation.
    Keygen {
        /// Key id written into every token's header (e.g. `2026-12`).
        #[arg(long)]
        kid: String,
        /// Where to write the private key; refuses to overwrite.
        #[arg(long)]
        private_key_out: PathBuf,
        /// The public key set to create or add to.
        #[arg(long)]
        public_keys_out: PathBuf,
    },
    /// Keys of encryption at rest of personal information (`[pii] key_file`): `generate` a new
    /// key file; rotate across replicas with `add` (stage a key) then `activate` (new writes
    /// use it), or `rotate` (both at once, one process); old keys stay to decrypt older rows.
    PiiKeys {
        #[command(subcommand)]
        command: PiiKeysCommand,
    },
    /// Verify the router's hash-chained audit log; exits non-zero at the first broken link.
    AuditVerify {
        /// The router's store URL (`sqlite://…` or `postgres://…`).
        #[arg(long, env = "FENGQIAO_DATABASE_URL")]
        database_url: String,
    },
    /// Operator commands against a running suite: list and show transfers, referrals, cases,
    /// pre-filing cases, applications; a case's timeline; overdue transfers; delivery incidents
    /// and retrying one; statistics. With `--token` (or `--as` in dev), tables or `--output
    /// json`.
    #[command(flatten)]
    Ops(ops::Ops),
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
        Command::Services => {
            for m in fengqiao::REGISTRY {
                println!("{}\t{}", m.name(), m.grpc_prefix());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            as_actor,
            agency,
            actor,
            roles,
            ttl_secs,
            issuer,
            data_dir,
            key_file,
            list,
        } => token(
            as_actor,
            agency,
            actor,
            roles,
            ttl_secs,
            &issuer,
            &signing_key_path(&data_dir, key_file),
            list,
        ),
        Command::Keygen {
            kid,
            private_key_out,
            public_keys_out,
        } => keygen(&kid, &private_key_out, &public_keys_out),
        Command::Healthcheck {
            addr,
            service,
            timeout_ms,
        } => healthcheck(&addr, &service, timeout_ms).await,
        Command::PiiKeys { command } => pii_keys(command),
        Command::AuditVerify { database_url } => audit_verify(&database_url).await,
        Command::Ops(cmd) => match ops::run(cmd).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                eprintln!("fengqiao: {e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// `--service` takes the registry's names; any other is refused listing them.
fn service_name_parser() -> impl clap::builder::TypedValueParser<Value = ServiceName> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(ServiceName::all().into_iter().map(|s| s.as_str()))
        .try_map(|s| s.parse::<ServiceName>())
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
        extra_modules: Vec::new(),
    };
    let suite = Suite::start(spec, listener, admin).await?;
    if banner {
        seed_mediation_rosters(&config, &suite).await?;
        print_banner(&config, &suite)?;
    }
    fengqiao_kit::server::os_signal().await;
    suite.shutdown(grace).await;
    telemetry.shutdown();
    Ok(ExitCode::SUCCESS)
}

async fn dev(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&args)?;
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
    if config.auth.public_keys_file.is_none() {
        config.auth.public_keys_file = Some(dev_key_paths(&config.data_dir).1);
    }
    if config.auth.service_key_file.is_none() {
        config.auth.service_key_file = Some(dev_key_paths(&config.data_dir).0);
    }
    // What dev runs with, dev defaults applied (not the production defaults of `serve`).
    if args.dump_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    ensure_dev_key(&config.data_dir)?;
    config.install_pii_keys(Some(&config.data_dir.join("pii-keys.json")))?;
    run_suite(
        config,
        ServiceName::all(),
        Some(SAMPLE_AGENCIES.to_string()),
        true,
    )
    .await
}

async fn serve(services: Vec<ServiceName>, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args)?;
    if args.dump_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    // Outside dev the key is never made up: no key, no start.
    config.install_pii_keys(None)?;
    let mut services = services;
    services.sort();
    services.dedup();
    run_suite(config, services, None, false).await
}

/// `fengqiao dev` only: every sample mediation committee and station mediation room registers
/// itself on the mediation service (CreateOrganization, organisation id = agency id) with its
/// actors holding the role `mediator` as mediators (mediator id = actor id), through the public
/// API as its own admin would, so that `AssignMediator` works on a fresh suite. Fixed request
/// ids make a restart on the same data directory a replay; an organisation or mediator that
/// already exists (registered by hand) is left as it is.
async fn seed_mediation_rosters(config: &Config, suite: &Suite) -> anyhow::Result<()> {
    use fengqiao_proto::mediation::{
        CreateMediatorRequest, CreateOrganizationRequest, Mediator, MediatorSpecialty,
        Organization, OrganizationKind, mediation_service_client::MediationServiceClient,
    };
    let key = fengqiao_kit::auth::SigningKey::load(&dev_key_paths(&config.data_dir).0)?;
    let channel = fengqiao_kit::client::channel(&format!("http://{}", suite.server.addr), None)?;
    let already = |e: &tonic::Status| e.code() == tonic::Code::AlreadyExists;
    let mut seeded = 0;
    for a in &seed()?.agency {
        let kind = match a.kind.as_str() {
            "mediation_committee" => OrganizationKind::Committee,
            "station_mediation_room" => OrganizationKind::StationMediationRoom,
            _ => continue,
        };
        let Some(admin) = a
            .actor
            .iter()
            .find(|x| x.roles.iter().any(|r| r == "mediation_admin"))
        else {
            continue;
        };
        let agency = format!("agencies/{}", a.id);
        let token = key.sign(&fengqiao_kit::auth::claims(
            &config.auth.issuer,
            &agency,
            &admin.id,
            &["mediation_admin"],
            300,
        ));
        let mut client = MediationServiceClient::with_interceptor(
            channel.clone(),
            fengqiao_kit::client::CallInterceptor::new(Some(token)),
        );
        let org = client
            .create_organization(CreateOrganizationRequest {
                organization: Some(Organization {
                    display_name: a.display_name.clone(),
                    kind: kind as i32,
                    region_code: a.region_code.clone(),
                    agency: agency.clone(),
                    ..Default::default()
                }),
                organization_id: a.id.clone(),
                request_id: format!("dev-seed-organization-{}", a.id),
            })
            .await;
        match org {
            Ok(_) => seeded += 1,
            Err(e) if already(&e) => {}
            Err(e) => anyhow::bail!("dev roster seed: organisation {}: {}", a.id, e.message()),
        }
        for m in a
            .actor
            .iter()
            .filter(|x| x.roles.iter().any(|r| r == "mediator"))
        {
            let r = client
                .create_mediator(CreateMediatorRequest {
                    parent: format!("organizations/{}", a.id),
                    mediator: Some(Mediator {
                        display_name: m.title.clone(),
                        actor_id: m.id.clone(),
                        specialties: vec![
                            MediatorSpecialty::Neighbourhood as i32,
                            MediatorSpecialty::Family as i32,
                        ],
                        region_code: a.region_code.clone(),
                        max_load: 50,
                        ..Default::default()
                    }),
                    mediator_id: m.id.clone(),
                    request_id: format!("dev-seed-mediator-{}-{}", a.id, m.id),
                })
                .await;
            match r {
                Ok(_) => seeded += 1,
                Err(e) if already(&e) => {}
                Err(e) => anyhow::bail!(
                    "dev roster seed: mediator {}/{}: {}",
                    a.id,
                    m.id,
                    e.message()
                ),
            }
        }
    }
    tracing::info!(seeded, "dev mediation rosters seeded");
    Ok(())
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
    println!(
        "  console   http://{}/console/   (web console; log in with a token)",
        suite.server.addr
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

/// A sample actor `<agency>/<actor>` of the dev agencies: (agency id, actor id, its roles).
fn sample_actor(spec: &str) -> anyhow::Result<(String, String, Vec<String>)> {
    let seed = seed()?;
    let (ag, ac) = spec
        .split_once('/')
        .context("--as takes <agency-id>/<actor-id>")?;
    let a = seed
        .agency
        .iter()
        .find(|a| a.id == ag)
        .with_context(|| format!("no sample agency {ag} (see `fengqiao token --list`)"))?;
    let sample =
        a.actor.iter().find(|x| x.id == ac).with_context(|| {
            format!("no sample actor {ac} in {ag} (see `fengqiao token --list`)")
        })?;
    Ok((ag.to_string(), ac.to_string(), sample.roles.clone()))
}

/// Signs a token with the key at `key_path`; never makes a key (a token signed by a key no
/// server knows only fails later, as "token signature is invalid", far from the cause).
fn sign_token(
    agency: &str,
    actor: &str,
    roles: &[String],
    ttl_secs: i64,
    issuer: &str,
    key_path: &std::path::Path,
) -> anyhow::Result<String> {
    if ttl_secs <= 0 {
        bail!("--ttl-secs must be positive");
    }
    if !key_path.exists() {
        bail!(
            "no signing key at {}: run `fengqiao dev` first (it writes its dev key under its --data-dir) and pass the same --data-dir here, or pass --key-file from `fengqiao keygen`",
            key_path.display()
        );
    }
    let key = fengqiao_kit::auth::SigningKey::load(key_path)
        .with_context(|| format!("signing key {}", key_path.display()))?;
    let role_refs: Vec<&str> = roles.iter().map(String::as_str).collect();
    let claims = fengqiao_kit::auth::claims(
        issuer,
        &format!("agencies/{agency}"),
        actor,
        &role_refs,
        ttl_secs,
    );
    Ok(key.sign(&claims))
}

/// A short-lived token for a sample actor, signed with the dev key under `data_dir` (the
/// operator commands' `--as`).
pub(crate) fn dev_token(
    spec: &str,
    data_dir: &std::path::Path,
    issuer: &str,
) -> anyhow::Result<String> {
    let (agency, actor, roles) = sample_actor(spec)?;
    sign_token(
        &agency,
        &actor,
        &roles,
        3600,
        issuer,
        &dev_key_paths(data_dir).0,
    )
}

#[allow(clippy::too_many_arguments)]
fn token(
    as_actor: Option<String>,
    agency: Option<String>,
    actor: Option<String>,
    mut roles: Vec<String>,
    ttl_secs: i64,
    issuer: &str,
    key_path: &std::path::Path,
    list: bool,
) -> anyhow::Result<ExitCode> {
    if list {
        for a in &seed()?.agency {
            for actor in &a.actor {
                println!("{}/{}\t{}", a.id, actor.id, actor.roles.join(","));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (agency, actor) = match (as_actor, agency, actor) {
        (Some(spec), _, _) => {
            let (ag, ac, sample_roles) = sample_actor(&spec)?;
            if roles.is_empty() {
                roles = sample_roles;
            }
            (ag, ac)
        }
        (None, Some(ag), Some(ac)) => (ag, ac),
        _ => bail!("say who the token is for: --as <agency>/<actor>, or --agency and --actor"),
    };
    println!(
        "{}",
        sign_token(&agency, &actor, &roles, ttl_secs, issuer, key_path)?
    );
    Ok(ExitCode::SUCCESS)
}

/// The key `fengqiao token` signs with: `--key-file`, or the dev key under the data directory.
fn signing_key_path(data_dir: &std::path::Path, key_file: Option<PathBuf>) -> PathBuf {
    key_file.unwrap_or_else(|| dev_key_paths(data_dir).0)
}

fn keygen(
    kid: &str,
    private_out: &std::path::Path,
    public_out: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    use fengqiao_kit::auth::{PublicKeyFile, SigningKey};
    if kid.is_empty()
        || !kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("--kid takes letters, digits, '-', '_' and '.' (e.g. 2026-12)");
    }
    if private_out.exists() {
        bail!(
            "{} exists: refusing to overwrite a signing key",
            private_out.display()
        );
    }
    let mut set = if public_out.exists() {
        PublicKeyFile::load(public_out)
            .with_context(|| format!("public key set {}", public_out.display()))?
    } else {
        PublicKeyFile::default()
    };
    if set.keys.iter().any(|k| k.kid == kid) {
        bail!(
            "{} already has a key with id {kid}: choose a new --kid",
            public_out.display()
        );
    }
    let key = SigningKey::generate(kid)?;
    key.save(private_out)?;
    set.keys.push(key.public_entry());
    set.save(public_out)?;
    println!(
        "signing key {kid}: private key {} (keep it secret), public key set {} ({} key(s))",
        private_out.display(),
        public_out.display(),
        set.keys.len()
    );
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

fn pii_keys(cmd: PiiKeysCommand) -> anyhow::Result<ExitCode> {
    use fengqiao_store::seal::KeyFile;
    match cmd {
        PiiKeysCommand::Generate { kid, out } => {
            let f = KeyFile::generate(&kid)?;
            f.save(&out, false)
                .with_context(|| format!("write {}", out.display()))?;
            println!(
                "personal-information key file {} (active key {kid}); keep it secret, and keep \
                 a copy: rows sealed with it cannot be read without it",
                out.display()
            );
        }
        PiiKeysCommand::Add { kid, key_file } => {
            let mut f = load_key_file(&key_file)?;
            f.add(&kid)
                .with_context(|| format!("add to {}", key_file.display()))?;
            f.save(&key_file, true)
                .with_context(|| format!("write {}", key_file.display()))?;
            println!(
                "{}: key {kid} staged (not active; new writes still use {}); keys {}. Roll the                  file out to every replica, then `fengqiao pii-keys activate {kid} --key-file {}`",
                key_file.display(),
                f.active,
                f.kids().join(", "),
                key_file.display()
            );
        }
        PiiKeysCommand::Activate { kid, key_file } => {
            let mut f = load_key_file(&key_file)?;
            let before = f.active.clone();
            f.activate(&kid)
                .with_context(|| format!("activate in {}", key_file.display()))?;
            f.save(&key_file, true)
                .with_context(|| format!("write {}", key_file.display()))?;
            println!(
                "{}: active key now {kid} (was {before}); keys {} kept for older rows. Roll the                  file out to every replica",
                key_file.display(),
                f.kids().join(", ")
            );
        }
        PiiKeysCommand::Rotate { kid, key_file } => {
            let mut f = load_key_file(&key_file)?;
            f.rotate(&kid)
                .with_context(|| format!("rotate {}", key_file.display()))?;
            f.save(&key_file, true)
                .with_context(|| format!("write {}", key_file.display()))?;
            println!(
                "{}: active key now {kid}; {} key(s) kept for older rows",
                key_file.display(),
                f.keys.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An existing key file (`add`, `activate` and `rotate` never create one).
fn load_key_file(path: &std::path::Path) -> anyhow::Result<fengqiao_store::seal::KeyFile> {
    if !path.exists() {
        bail!(
            "no key file at {}: make one with `fengqiao pii-keys generate --kid <id> --out {}`",
            path.display(),
            path.display()
        );
    }
    fengqiao_store::seal::KeyFile::load(path).with_context(|| format!("read {}", path.display()))
}

async fn audit_verify(url: &str) -> anyhow::Result<ExitCode> {
    // The audit chain holds no sealed column: verifying it needs no personal-information key,
    // so a throwaway one satisfies the store's refusal to run without one (it never decrypts).
    if !fengqiao_store::seal::installed() {
        let f = fengqiao_store::seal::KeyFile::generate("audit-verify")?;
        fengqiao_store::seal::install(fengqiao_store::seal::Keyring::new(&f)?);
    }
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
