//! The process harness the multi-process tests share: each service a `fengqiao serve` child
//! on a free port, killed when the test ends.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

pub fn serve(service: &str, port: u16, url: &str, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(["serve", "--service", service])
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
