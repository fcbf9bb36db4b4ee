//! Throwaway PostgreSQL clusters for tests.
//!
//! [`PgCluster::start`] runs `initdb` into a fresh directory under [`std::env::temp_dir`] and
//! starts a `postgres` server in the foreground as a child process listening on
//! `127.0.0.1:<free port>`. [`PgCluster::create_database`] hands out fresh, uniquely named
//! databases, so tests never share state. [`shared`] starts one cluster per test process, lazily,
//! and reuses it for every test in that process.
//!
//! The server keeps its durability settings (`fsync`, `synchronous_commit`, `full_page_writes`
//! all `on`): the store refuses to run without them. Only `initdb` itself runs with `--no-sync`.
//!
//! Clean-up: dropping a [`PgCluster`] stops the server and removes its directory. The shared
//! cluster lives in a `static` and is never dropped, so the server is started with
//! `PR_SET_PDEATHSIG = SIGKILL` (it dies with the test process), and every start sweeps stale
//! `fengqiao-pg-<pid>-*` directories left by processes that are no longer alive.
//!
//! When the tests run as root (containers, CI), `initdb` and `postgres` run as the `postgres`
//! system user, because PostgreSQL refuses to run as root.
//!
//! Whether a missing PostgreSQL is an error is the caller's choice: see [`required`].

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of every cluster directory created under [`std::env::temp_dir`].
const DIR_PREFIX: &str = "fengqiao-pg-";
/// Name of the superuser created by `initdb`.
const SUPERUSER: &str = "fengqiao";
/// How long to wait for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many ports to try before giving up.
const START_ATTEMPTS: usize = 5;

/// Why a throwaway cluster could not be started or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgError {
    /// The PostgreSQL server binaries (`initdb`, `postgres`, `createdb`) were not found.
    BinariesNotFound(String),
    /// Running as root, but there is no `postgres` system user to run the server as.
    NoPostgresUser,
    /// A file-system or process operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error, as text (kept as text so the error is `Clone`).
        error: String,
    },
    /// `initdb` failed; carries its output.
    InitDb(String),
    /// The server did not start or did not become ready; carries the log tail.
    Start(String),
    /// `createdb` failed; carries its output.
    CreateDb(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::BinariesNotFound(detail) => write!(
                f,
                "PostgreSQL server binaries not found ({detail}); install the `postgresql` \
                 package or put initdb/postgres/createdb on PATH"
            ),
            PgError::NoPostgresUser => write!(
                f,
                "running as root but there is no `postgres` system user; PostgreSQL refuses \
                 to run as root"
            ),
            PgError::Io { context, error } => write!(f, "{context}: {error}"),
            PgError::InitDb(out) => write!(f, "initdb failed:\n{out}"),
            PgError::Start(detail) => write!(f, "PostgreSQL did not start: {detail}"),
            PgError::CreateDb(out) => write!(f, "createdb failed:\n{out}"),
        }
    }
}

impl std::error::Error for PgError {}

fn io_err(context: impl Into<String>, error: io::Error) -> PgError {
    PgError::Io {
        context: context.into(),
        error: error.to_string(),
    }
}

/// True when the environment variable `REQUIRE_POSTGRES` is `1` or `true`.
///
/// Contract for tests: when this is true and a cluster cannot be started, the test must FAIL
/// (panic with the reason). Otherwise a test may skip itself with an `eprintln!` explaining why.
pub fn required() -> bool {
    std::env::var("REQUIRE_POSTGRES")
        .map(|v| {
            let v = v.trim();
            v == "1" || v.eq_ignore_ascii_case("true")
        })
        .unwrap_or(false)
}

/// The cluster shared by every test in this process, started on first use.
///
/// A failure to start is remembered and returned to every caller.
pub fn shared() -> Result<&'static PgCluster, PgError> {
    static SHARED: OnceLock<Result<PgCluster, PgError>> = OnceLock::new();
    match SHARED.get_or_init(PgCluster::start) {
        Ok(cluster) => Ok(cluster),
        Err(e) => Err(e.clone()),
    }
}

/// A running throwaway PostgreSQL cluster. Dropping it stops the server and deletes its files.
pub struct PgCluster {
    port: u16,
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    child: Child,
    superuser: String,
    next_db: AtomicU64,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("socket_dir", &self.socket_dir)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// The system user the server runs as when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl PgCluster {
    /// Initialise and start a new cluster in a fresh temporary directory.
    pub fn start() -> Result<PgCluster, PgError> {
        Self::start_with(&[])
    }

    /// [`PgCluster::start`] with extra server settings, each `name=value` as for `postgres -c`
    /// (e.g. `shared_preload_libraries=pg_stat_statements` for the benchmark). They come after
    /// the durability settings; do not use them to turn those off.
    pub fn start_with(settings: &[&str]) -> Result<PgCluster, PgError> {
        sweep_stale_dirs();
        let bin_dir = find_bin_dir()?;
        let run_as = run_as_user()?;
        let root = fresh_root_dir()?;
        match Self::start_in(&root, bin_dir, run_as, settings) {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                let _ = fs::remove_dir_all(&root);
                Err(e)
            }
        }
    }

    fn start_in(
        root: &Path,
        bin_dir: PathBuf,
        run_as: Option<RunAs>,
        settings: &[&str],
    ) -> Result<PgCluster, PgError> {
        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        fs::create_dir(&socket_dir)
            .map_err(|e| io_err(format!("create {}", socket_dir.display()), e))?;
        if let Some(user) = run_as {
            for dir in [root, socket_dir.as_path()] {
                std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                    .map_err(|e| io_err(format!("chown {}", dir.display()), e))?;
            }
        }

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data_dir)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "-N",
            ])
            .current_dir(root)
            .stdin(Stdio::null());
        as_user(&mut initdb, run_as);
        let out = initdb.output().map_err(|e| io_err("run initdb", e))?;
        if !out.status.success() {
            return Err(PgError::InitDb(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }

        let log_path = root.join("postgres.log");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| io_err(format!("open {}", log_path.display()), e))?;
            let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
            let log_err = log
                .try_clone()
                .map_err(|e| io_err("duplicate log file handle", e))?;
            let mut cmd = Command::new(bin_dir.join("postgres"));
            cmd.arg("-D")
                .arg(&data_dir)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                    "-c",
                    "fsync=on",
                    "-c",
                    "synchronous_commit=on",
                    "-c",
                    "full_page_writes=on",
                ]);
            for s in settings {
                cmd.arg("-c").arg(s);
            }
            cmd.current_dir(root)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err);
            as_user(&mut cmd, run_as);
            die_with_parent(&mut cmd);
            let mut child = spawn_from_long_lived_thread(cmd)?;
            match wait_ready(&mut child, port, &data_dir, &log_path, log_offset) {
                Ok(()) => {
                    return Ok(PgCluster {
                        port,
                        root: root.to_path_buf(),
                        data_dir,
                        socket_dir,
                        bin_dir,
                        child,
                        superuser: SUPERUSER.to_string(),
                        next_db: AtomicU64::new(0),
                    });
                }
                Err(WaitError::PortInUse(detail)) => {
                    stop_child(&mut child);
                    last_error = detail;
                }
                Err(WaitError::Fatal(detail)) => {
                    stop_child(&mut child);
                    return Err(PgError::Start(detail));
                }
            }
        }
        Err(PgError::Start(format!(
            "no free port after {START_ATTEMPTS} attempts; last log:\n{last_error}"
        )))
    }

    /// Create a fresh, uniquely named database and return its URL
    /// (`postgres://fengqiao@127.0.0.1:PORT/NAME`).
    pub fn create_database(&self) -> Result<String, PgError> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("fq_{}_{}", std::process::id(), n);
        let out = Command::new(self.bin_dir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", &self.superuser, "-w", &name])
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io_err("run createdb", e))?;
        if !out.status.success() {
            return Err(PgError::CreateDb(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(&name))
    }

    /// URL of database `name` on this cluster, as the superuser.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            self.superuser, self.port, name
        )
    }

    /// URL of the `postgres` maintenance database (for `CREATE DATABASE` and the like).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory holding the server's Unix-domain socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// Directory holding the PostgreSQL binaries in use (`psql` is there too).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Name of the superuser (trust authentication, no password).
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// Process id of the running `postgres` server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        let _ = fs::remove_dir_all(&self.root);
    }
}

enum WaitError {
    PortInUse(String),
    Fatal(String),
}

/// Wait until the server reports `ready` in `postmaster.pid` and accepts TCP connections.
fn wait_ready(
    child: &mut Child,
    port: u16,
    data_dir: &Path,
    log_path: &Path,
    log_offset: u64,
) -> Result<(), WaitError> {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let pid_file = data_dir.join("postmaster.pid");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let tail = log_tail(log_path, log_offset);
                let detail = format!("server exited with {status}; log tail:\n{tail}");
                return if tail.contains("could not bind") || tail.contains("Address already in use")
                {
                    Err(WaitError::PortInUse(detail))
                } else {
                    Err(WaitError::Fatal(detail))
                };
            }
            Ok(None) => {}
            Err(e) => return Err(WaitError::Fatal(format!("waiting for server: {e}"))),
        }
        let ready = fs::read_to_string(&pid_file)
            .map(|s| s.lines().any(|l| l.trim() == "ready"))
            .unwrap_or(false);
        if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Fatal(format!(
                "server not ready after {}s; log tail:\n{}",
                START_TIMEOUT.as_secs(),
                log_tail(log_path, log_offset)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stop the server: SIGQUIT (immediate shutdown), then SIGKILL if it does not exit in time.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        signal(pid, libc::SIGQUIT);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `kill(pid, sig)`; returns whether the signal was delivered.
#[allow(unsafe_code)]
fn signal(pid: libc::pid_t, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Whether process `pid` exists (EPERM counts as alive: it exists but is not ours).
fn process_alive(pid: libc::pid_t) -> bool {
    if signal(pid, 0) {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The last ~4 KiB of the server log written since `offset`.
fn log_tail(path: &Path, offset: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.max(len.saturating_sub(4096));
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::from("(log unreadable)");
    }
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Find a directory holding `initdb`, `postgres` and `createdb`: first via PATH (following
/// symlinks, so Debian's `pg_wrapper` is skipped), then the highest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, PgError> {
    let complete = |dir: &Path| {
        ["initdb", "postgres", "createdb"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let initdb = dir.join("initdb");
            if !initdb.is_file() {
                continue;
            }
            if let Ok(real) = fs::canonicalize(&initdb)
                && let Some(parent) = real.parent()
                && complete(parent)
            {
                return Ok(parent.to_path_buf());
            }
        }
    }
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u64>)
                .collect::<Result<Vec<u64>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if complete(&bin) && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        PgError::BinariesNotFound("searched PATH and /usr/lib/postgresql/*/bin".to_string())
    })
}

/// When running as root, the `postgres` system user to run the server as.
#[allow(unsafe_code)]
fn run_as_user() -> Result<Option<RunAs>, PgError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").map_err(|_| PgError::NoPostgresUser)?;
    // getpwnam's static buffer is not thread-safe; serialise our own calls.
    static PW_LOCK: Mutex<()> = Mutex::new(());
    let _guard = PW_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: `name` is a valid NUL-terminated string; the returned pointer is either null or
    // points to a static passwd record that we read immediately, under the lock above.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(PgError::NoPostgresUser);
    }
    // SAFETY: `pw` is non-null and points to a valid passwd record (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

fn as_user(cmd: &mut Command, run_as: Option<RunAs>) {
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
        // HOME of root is not readable by the postgres user; nothing should need it anyway.
        cmd.env_remove("HOME");
    }
}

/// Make the server die (SIGKILL) when this process dies, even if it dies without unwinding.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // The parent pid as seen by the child: the whole process, not the spawning thread.
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl(2), getppid(2) and _exit(2); it allocates nothing and
    // takes no locks. The standard library runs it after switching uid/gid, which matters
    // because a credential change clears the parent-death signal.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Test harnesses run each test on its own short-lived thread, so the server is spawned from a
/// dedicated thread that lives until the process exits.
fn spawn_from_long_lived_thread(cmd: Command) -> Result<Child, PgError> {
    static SPAWNER: OnceLock<Result<Mutex<mpsc::Sender<SpawnJob>>, String>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("pgtemp-spawner".to_string())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| Mutex::new(tx))
            .map_err(|e| e.to_string())
    });
    let sender = spawner.as_ref().map_err(|e| PgError::Io {
        context: "start spawner thread".to_string(),
        error: e.clone(),
    })?;
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| PgError::Start("spawner thread is gone".to_string()))?;
    reply_rx
        .recv()
        .map_err(|_| PgError::Start("spawner thread is gone".to_string()))?
        .map_err(|e| io_err("spawn postgres", e))
}

fn free_port() -> Result<u16, PgError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| io_err("bind 127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| io_err("local_addr", e))?
        .port();
    Ok(port)
}

fn fresh_root_dir() -> Result<PathBuf, PgError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = tmp.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Left over by an earlier process with our (reused) pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_dir_all(&dir);
            }
            Err(e) => return Err(io_err(format!("create {}", dir.display()), e)),
        }
    }
}

/// Parse `fengqiao-pg-<pid>-<n>` into the pid.
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let rest = name.strip_prefix(DIR_PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Remove cluster directories whose owning process is gone, killing any server still running
/// from them.
pub fn sweep_stale_dirs() {
    let Ok(me) = libc::pid_t::try_from(std::process::id()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == me || process_alive(pid) {
            continue;
        }
        let dir = entry.path();
        kill_orphan_server(&dir.join("data"));
        let _ = fs::remove_dir_all(&dir);
    }
}

/// If a server from `data_dir` is still running (its parent-death signal failed), kill it.
fn kill_orphan_server(data_dir: &Path) {
    let Ok(contents) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(Ok(pid)) = contents
        .lines()
        .next()
        .map(|l| l.trim().parse::<libc::pid_t>())
    else {
        return;
    };
    // Only kill it if the pid still belongs to a postgres server of this very directory.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if cmdline.contains("postgres") && cmdline.contains(&*data_dir.to_string_lossy()) {
        signal(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_or_skip() -> Option<&'static PgCluster> {
        match shared() {
            Ok(c) => Some(c),
            Err(e) if required() => panic!("REQUIRE_POSTGRES is set but PostgreSQL failed: {e}"),
            Err(e) => {
                eprintln!("skipping: PostgreSQL unavailable: {e}");
                None
            }
        }
    }

    fn psql(cluster: &PgCluster, url: &str, sql: &str) -> String {
        let out = Command::new(cluster.bin_dir().join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn owner_pid_parses_only_our_dirs() {
        assert_eq!(owner_pid("fengqiao-pg-123-0"), Some(123));
        assert_eq!(owner_pid("fengqiao-pg-123-x"), None);
        assert_eq!(owner_pid("fengqiao-pg-abc-1"), None);
        assert_eq!(owner_pid("other-123-1"), None);
    }

    #[test]
    fn shared_cluster_hands_out_fresh_databases() {
        let Some(cluster) = cluster_or_skip() else {
            return;
        };
        let a = cluster.create_database().expect("create a");
        let b = cluster.create_database().expect("create b");
        assert_ne!(a, b);
        assert_eq!(psql(cluster, &a, "SELECT 1"), "1");
        psql(cluster, &a, "CREATE TABLE t (x int)");
        // b is a different database: no table t there.
        assert_eq!(
            psql(
                cluster,
                &b,
                "SELECT count(*) FROM pg_tables WHERE tablename = 't'"
            ),
            "0"
        );
        assert!(std::ptr::eq(cluster, shared().expect("shared again")));
    }

    #[test]
    fn server_keeps_durability_settings() {
        let Some(cluster) = cluster_or_skip() else {
            return;
        };
        let url = cluster.admin_url();
        assert_eq!(psql(cluster, &url, "SHOW fsync"), "on");
        assert_eq!(psql(cluster, &url, "SHOW synchronous_commit"), "on");
        assert_eq!(psql(cluster, &url, "SHOW full_page_writes"), "on");
    }

    #[test]
    fn extra_settings_reach_the_server_and_durability_stays() {
        if cluster_or_skip().is_none() {
            return;
        }
        let cluster = PgCluster::start_with(&["work_mem=7MB", "application_name=pgtemp-extra"])
            .expect("start private cluster");
        let url = cluster.admin_url();
        assert_eq!(psql(&cluster, &url, "SHOW work_mem"), "7MB");
        assert_eq!(psql(&cluster, &url, "SHOW fsync"), "on");
    }

    #[test]
    fn drop_stops_server_and_removes_directory() {
        if cluster_or_skip().is_none() {
            return;
        }
        let cluster = PgCluster::start().expect("start private cluster");
        let pid = libc::pid_t::try_from(cluster.pid()).expect("pid");
        let root = cluster.root.clone();
        assert!(root.is_dir());
        drop(cluster);
        assert!(!root.exists(), "directory removed");
        // The child was reaped by Drop, so the pid no longer names our server.
        let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains(&*root.to_string_lossy()));
    }

    #[test]
    fn sweep_removes_dirs_of_dead_processes() {
        // Find a pid that is not alive.
        let dead = (400_000..4_000_000)
            .step_by(7919)
            .find(|&p| !process_alive(p))
            .expect("some dead pid");
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{dead}-0"));
        fs::create_dir_all(dir.join("data")).expect("mkdir");
        fs::write(dir.join("data/postmaster.pid"), "1\n").expect("write pid file");
        let mine = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-999999", std::process::id()));
        fs::create_dir_all(&mine).expect("mkdir mine");
        sweep_stale_dirs();
        assert!(!dir.exists(), "stale dir removed");
        assert!(mine.exists(), "our own dir kept");
        fs::remove_dir_all(&mine).expect("cleanup");
    }

    #[test]
    fn required_reads_env() {
        // Only checks the parsing helper's behaviour on the current environment value.
        let expected = matches!(
            std::env::var("REQUIRE_POSTGRES").as_deref().map(str::trim),
            Ok("1") | Ok("true") | Ok("TRUE") | Ok("True")
        );
        assert_eq!(required(), expected);
    }
}
