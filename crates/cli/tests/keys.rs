//! Keys and tokens from the command line, as the README documents them: `fengqiao keygen` makes
//! a deployment's signing key and adds it to the public key set (rotation keeps the old keys);
//! `fengqiao token` signs with `--key-file` or the dev key and never makes a key of its own;
//! `fengqiao dev --dump-config` prints what dev runs with.

use std::path::Path;
use std::process::{Command, Output};

use fengqiao_kit::auth::{PublicKeyFile, Verifier, unix_now};
use fengqiao_store::testing::TempDir;

fn fengqiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(args)
        .env_remove("FENGQIAO_SIGNING_KEY_FILE")
        .env_remove("FENGQIAO_DATA_DIR")
        .env_remove("FENGQIAO_AUTH_ISSUER")
        .output()
        .expect("run fengqiao")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn keygen(kid: &str, private: &Path, public: &Path) -> Output {
    fengqiao(&[
        "keygen",
        "--kid",
        kid,
        "--private-key-out",
        private.to_str().expect("utf-8 path"),
        "--public-keys-out",
        public.to_str().expect("utf-8 path"),
    ])
}

fn token(key: &Path, issuer: &str) -> String {
    let o = fengqiao(&[
        "token",
        "--key-file",
        key.to_str().expect("utf-8 path"),
        "--issuer",
        issuer,
        "--as",
        "xigang-bayilu-station/officer-01",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout)
        .expect("test value")
        .trim()
        .to_string()
}

#[test]
fn keygen_rotation_keeps_old_tokens_valid_and_refuses_overwrites() {
    let dir = TempDir::new();
    let public = dir.path().join("public_keys.json");
    let (k1, k2) = (dir.path().join("k1.json"), dir.path().join("k2.json"));

    let o = keygen("2026-11", &k1, &public);
    assert!(o.status.success(), "{}", text(&o));
    let old = token(&k1, "fengqiao");

    // Rotation: a new key joins the set; the old one stays until its tokens expire.
    let o = keygen("2026-12", &k2, &public);
    assert!(o.status.success(), "{}", text(&o));
    let new = token(&k2, "fengqiao");
    let set = PublicKeyFile::load(&public).expect("test value");
    let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["2026-11", "2026-12"]);
    let verifier = Verifier::new("fengqiao", &set).expect("test value");
    for t in [&old, &new] {
        let id = verifier.verify(t, unix_now()).expect("token verifies");
        assert_eq!(id.agency, "agencies/xigang-bayilu-station");
    }
    // A token for another issuer is refused by this deployment's verifier.
    assert!(
        verifier
            .verify(&token(&k2, "elsewhere"), unix_now())
            .is_err()
    );

    // Refused, nothing changed: an existing private key, a key id already in the set, a bad id.
    let before = std::fs::read(&public).expect("test value");
    let o = keygen("2027-01", &k1, &public);
    assert!(!o.status.success());
    assert!(text(&o).contains("refusing to overwrite"), "{}", text(&o));
    let o = keygen("2026-12", &dir.path().join("k3.json"), &public);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("already has a key with id 2026-12"),
        "{}",
        text(&o)
    );
    let o = keygen("bad id", &dir.path().join("k4.json"), &public);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&public).expect("test value"), before);
    assert!(!dir.path().join("k3.json").exists());
    assert!(!dir.path().join("k4.json").exists());

    // The private key file is readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k1)
            .expect("test value")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn token_without_a_key_fails_and_makes_none() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let o = fengqiao(&[
        "token",
        "--as",
        "xigang-110/dispatch-system",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("no signing key at"), "{t}");
    assert!(t.contains("fengqiao dev"), "{t}");
    assert!(
        !data.exists(),
        "token must not create a data directory or a key"
    );

    let o = fengqiao(&[
        "token",
        "--as",
        "xigang-110/dispatch-system",
        "--key-file",
        dir.path()
            .join("missing.json")
            .to_str()
            .expect("utf-8 path"),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.json"), "{}", text(&o));
}

#[test]
fn dev_dump_config_shows_what_dev_runs_with() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let o = fengqiao(&[
        "dev",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--dump-config",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: toml::Table = toml::from_str(&String::from_utf8_lossy(&o.stdout)).expect("test value");
    assert_eq!(doc["listen"].as_str(), Some("127.0.0.1:50051"));
    assert_eq!(doc["admin_listen"].as_str(), Some("127.0.0.1:9090"));
    assert_eq!(doc["log_format"].as_str(), Some("text"));
    let auth = doc["auth"].as_table().expect("test value");
    assert_eq!(
        auth["public_keys_file"].as_str().map(Path::new),
        Some(data.join("dev-public-keys.json").as_path())
    );
    // Dumping makes nothing.
    assert!(!data.join("dev-signing-key.json").exists());
}
