//! The process harness the multi-process tests share: each service a `fengqiao serve` child
//! on a free port, killed when the test ends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use fengqiao_proto::common::{Address, DisputeCategory, IdType, Party, PartyRole};
use fengqiao_proto::policereferral::Referral;

/// The token issuer the multi-process tests configure.
pub const ISSUER: &str = "fengqiao-multiprocess-test";

/// Kills the child processes when the test ends, however it ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// The personal-information key file of the `fengqiao serve` children of one test
/// (`--pii-key-file`; `serve` refuses to start without one): `dir/pii-keys.json`, created on
/// first use and then reused, so a restarted process opens the rows it sealed before. Every
/// service of the test shares it, as the shipped deployments may.
pub fn pii_key_file(dir: &Path) -> PathBuf {
    // Services of one test start from several threads; only one may create the file.
    static CREATE: Mutex<()> = Mutex::new(());
    let _one = CREATE.lock().unwrap_or_else(|e| e.into_inner());
    let path = dir.join("pii-keys.json");
    if !path.exists() {
        process_pii_keys()
            .save(&path, false)
            .unwrap_or_else(|e| panic!("personal-information key file: {e}"));
    }
    path
}

/// One key file for the whole test process, installed in it too: a test that opens a child's
/// store itself (to inspect or repair rows) reads with the key the children sealed with.
fn process_pii_keys() -> &'static fengqiao_store::seal::KeyFile {
    static KEYS: std::sync::OnceLock<fengqiao_store::seal::KeyFile> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let f = fengqiao_store::seal::KeyFile::generate("multiprocess-test-1")
            .unwrap_or_else(|e| panic!("personal-information key file: {e}"));
        let ring = fengqiao_store::seal::Keyring::new(&f)
            .unwrap_or_else(|e| panic!("personal-information key ring: {e}"));
        fengqiao_store::seal::install(ring);
        f
    })
}

/// Adds the test's personal-information key ([`pii_key_file`]) to a `fengqiao serve` command,
/// and drops a `FENGQIAO_PII_KEYS` of the caller's environment (it would win over the file).
pub fn with_pii_key<'a>(cmd: &'a mut Command, dir: &Path) -> &'a mut Command {
    cmd.arg("--pii-key-file")
        .arg(pii_key_file(dir))
        .env_remove("FENGQIAO_PII_KEYS")
}

pub fn serve(service: &str, port: u16, url: &str, dir: &std::path::Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
    cmd.args(["serve", "--service", service]);
    with_pii_key(&mut cmd, dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--database-url", url])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--auth-issuer", ISSUER])
        .args(["--config", &dir.join("config.toml").display().to_string()])
        .args(["--log-format", "json"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {service}: {e}"))
}

pub async fn wait_serving(port: u16) {
    for _ in 0..300 {
        let ok = Command::new(env!("CARGO_BIN_EXE_fengqiao"))
            .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never reported SERVING");
}

/// The sample 110 referral of the multi-process tests (a neighbourhood noise dispute at the
/// 八一路 station), with `incident` as its incident number.
pub fn sample_referral(incident: &str) -> Referral {
    Referral {
        incident_number: incident.into(),
        call_time: Some(prost_types::Timestamp {
            seconds: 1_790_000_000,
            nanos: 0,
        }),
        location: Some(Address {
            region_code: "210203".into(),
            detail: "八一路某小区".into(),
            location: None,
        }),
        category: DisputeCategory::Neighbourhood as i32,
        summary: "楼上住户夜间噪音扰民，双方发生口角".into(),
        parties: vec![
            Party {
                role: PartyRole::Applicant as i32,
                name: "张某".into(),
                ..Default::default()
            },
            Party {
                role: PartyRole::Respondent as i32,
                name: "李某".into(),
                ..Default::default()
            },
        ],
        on_scene_handling: "民警到场劝解，双方同意调解".into(),
        police_station: "agencies/xigang-bayilu-station".into(),
        ..Default::default()
    }
}

/// [`sample_referral`] whose applicant carries a valid GB 11643 resident ID number.
pub fn sample_referral_with_id(incident: &str) -> Referral {
    let mut r = sample_referral(incident);
    r.parties[0].id_type = IdType::ResidentIdCard as i32;
    r.parties[0].id_number = "11010519491231002X".into();
    r
}

/// `fengqiao dev` on `port` with its data under `dir` (and `dir/config.toml` if the test wrote
/// one), logging warnings to the test's stderr.
pub fn start_dev(port: u16, dir: &std::path::Path) -> Child {
    let config = dir.join("config.toml");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fengqiao"));
    cmd.arg("dev")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--data-dir", &dir.display().to_string()]);
    if config.exists() {
        cmd.args(["--config", &config.display().to_string()]);
    }
    cmd.args(["--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn fengqiao dev: {e}"))
}
