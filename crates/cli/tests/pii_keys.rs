//! The personal-information key from the command line, as the README documents it:
//! `fengqiao pii-keys generate` writes a key file readable by its owner only and never
//! overwrites one; `rotate` adds a key and makes it the active one, keeping the old ones (rows
//! sealed with them stay readable); across replicas `add` stages a key (in the file, not
//! active) and `activate <kid>` makes it the one new writes use, so a process with the staged
//! file and one with the activated file read each other's rows; `fengqiao serve` does not
//! start without a key and says where to put one.

use std::path::Path;
use std::process::{Command, Output};

use fengqiao_store::seal::{KeyFile, Keyring};
use fengqiao_store::testing::TempDir;

fn fengqiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(args)
        .env_remove("FENGQIAO_PII_KEYS")
        .env_remove("FENGQIAO_PII_KEY_FILE")
        .env_remove("FENGQIAO_CONFIG")
        .env_remove("FENGQIAO_DATABASE_URL")
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

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn generate_writes_an_owner_only_file_and_refuses_to_overwrite() {
    let dir = TempDir::new();
    let file = dir.path().join("pii-keys.json");
    let o = fengqiao(&[
        "pii-keys",
        "generate",
        "--kid",
        "2026-12",
        "--out",
        path(&file),
    ]);
    assert!(o.status.success(), "{}", text(&o));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);
    }
    let keys = KeyFile::load(&file).expect("the documented JSON");
    assert_eq!(keys.active, "2026-12");
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].kid, "2026-12");
    // The key material never goes to the terminal.
    assert!(!text(&o).contains(&keys.keys[0].key), "{}", text(&o));
    assert!(!text(&o).contains(&keys.lookup_key), "{}", text(&o));

    // A second generate onto the same path fails and leaves the first file as it was.
    let before = std::fs::read(&file).expect("key file");
    let o = fengqiao(&[
        "pii-keys",
        "generate",
        "--kid",
        "2027-01",
        "--out",
        path(&file),
    ]);
    assert!(!o.status.success(), "overwrote: {}", text(&o));
    assert!(text(&o).contains("pii-keys.json"), "{}", text(&o));
    assert_eq!(std::fs::read(&file).expect("key file"), before);

    // A key id outside the documented alphabet is refused.
    let other = dir.path().join("other.json");
    let o = fengqiao(&[
        "pii-keys",
        "generate",
        "--kid",
        "bad kid",
        "--out",
        path(&other),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!other.exists());
}

#[test]
fn rotate_keeps_old_keys_and_changes_the_active_id() {
    let dir = TempDir::new();
    let file = dir.path().join("pii-keys.json");
    let o = fengqiao(&["pii-keys", "generate", "--kid", "k1", "--out", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    let first = KeyFile::load(&file).expect("key file");
    let sealed = Keyring::new(&first)
        .expect("key ring")
        .seal("referrals.body", b"11010519491231002X");

    let o = fengqiao(&[
        "pii-keys",
        "rotate",
        "--kid",
        "k2",
        "--key-file",
        path(&file),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let second = KeyFile::load(&file).expect("key file");
    assert_eq!(second.active, "k2");
    let kids: Vec<&str> = second.keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k1", "k2"]);
    // The old key is kept byte for byte, the new one is new, the lookup key is unchanged
    // (keyed hashes in indexes must keep matching).
    assert_eq!(second.keys[0].key, first.keys[0].key);
    assert_ne!(second.keys[1].key, first.keys[0].key);
    assert_eq!(second.lookup_key, first.lookup_key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);
    }

    // Old rows still open; new writes go under the new key.
    let ring = Keyring::new(&second).expect("key ring");
    assert_eq!(
        ring.open("referrals.body", &sealed).expect("old row opens"),
        b"11010519491231002X"
    );
    let fresh = ring.seal("referrals.body", b"x");
    assert_eq!(fengqiao_store::seal::kid_of(&fresh), Some("k2"));
    assert_eq!(fengqiao_store::seal::kid_of(&sealed), Some("k1"));

    // Rotating to an id already in the file is refused and changes nothing.
    let before = std::fs::read(&file).expect("key file");
    let o = fengqiao(&[
        "pii-keys",
        "rotate",
        "--kid",
        "k1",
        "--key-file",
        path(&file),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&file).expect("key file"), before);

    // A missing file is not created by rotate.
    let missing = dir.path().join("missing.json");
    let o = fengqiao(&[
        "pii-keys",
        "rotate",
        "--kid",
        "k3",
        "--key-file",
        path(&missing),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!missing.exists());
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).expect("key file").permissions().mode() & 0o777
}

#[test]
fn add_stages_a_key_and_activate_makes_it_the_writing_one() {
    let dir = TempDir::new();
    let file = dir.path().join("pii-keys.json");
    let o = fengqiao(&["pii-keys", "generate", "--kid", "k1", "--out", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    let first = KeyFile::load(&file).expect("key file");

    // Step 1: stage k2. It is in the file, not active; old key and lookup key unchanged.
    let o = fengqiao(&["pii-keys", "add", "--kid", "k2", "--key-file", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("activate k2"), "{}", text(&o));
    let staged = KeyFile::load(&file).expect("key file");
    assert_eq!(staged.active, "k1");
    assert_eq!(staged.kids(), ["k1", "k2"]);
    assert_eq!(staged.keys[0].key, first.keys[0].key);
    assert_eq!(staged.lookup_key, first.lookup_key);
    for k in &staged.keys {
        assert!(!text(&o).contains(&k.key), "key material printed");
    }
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    // A process with the staged file still seals under k1.
    let staged_ring = Keyring::new(&staged).expect("key ring");
    let by_staged = staged_ring.seal("referrals.body", b"13912345678");
    assert_eq!(fengqiao_store::seal::kid_of(&by_staged), Some("k1"));

    // Refusals leave the file byte for byte: an id already there (never replaced), an id
    // outside the alphabet, an unknown id to activate, the already active id.
    let unchanged = std::fs::read(&file).expect("key file");
    for (args, says) in [
        (vec!["add", "--kid", "k1"], "already exists"),
        (vec!["add", "--kid", "k2"], "already exists"),
        (vec!["add", "--kid", "bad kid"], "key id"),
        (vec!["activate", "k9"], "no key k9"),
        (vec!["activate", "k1"], "already the active key"),
    ] {
        let mut a = vec!["pii-keys"];
        a.extend(&args);
        a.extend(["--key-file", path(&file)]);
        let o = fengqiao(&a);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert_eq!(
            std::fs::read(&file).expect("key file"),
            unchanged,
            "{args:?}"
        );
    }

    // Step 2: activate k2. Keys and lookup key as staged; new writes under k2.
    let o = fengqiao(&["pii-keys", "activate", "k2", "--key-file", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("was k1"), "{}", text(&o));
    let activated = KeyFile::load(&file).expect("key file");
    assert_eq!(activated.active, "k2");
    assert_eq!(activated.kids(), ["k1", "k2"]);
    assert_eq!(activated.keys[1].key, staged.keys[1].key);
    assert_eq!(activated.lookup_key, first.lookup_key);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let active_ring = Keyring::new(&activated).expect("key ring");
    let by_active = active_ring.seal("referrals.body", b"11010519491231002X");
    assert_eq!(fengqiao_store::seal::kid_of(&by_active), Some("k2"));

    // Mid-rollout: the staged process opens the activated one's rows and the other way round;
    // a process still on the file from before `add` cannot open the new rows.
    assert_eq!(
        staged_ring
            .open("referrals.body", &by_active)
            .expect("staged opens new"),
        b"11010519491231002X"
    );
    assert_eq!(
        active_ring
            .open("referrals.body", &by_staged)
            .expect("activated opens old"),
        b"13912345678"
    );
    let before_add = Keyring::new(&first).expect("key ring");
    assert!(before_add.open("referrals.body", &by_active).is_err());

    // add / activate never create a missing file; they say how to make one.
    let missing = dir.path().join("missing.json");
    for args in [
        vec![
            "pii-keys",
            "add",
            "--kid",
            "k3",
            "--key-file",
            path(&missing),
        ],
        vec!["pii-keys", "activate", "k3", "--key-file", path(&missing)],
    ] {
        let o = fengqiao(&args);
        assert!(!o.status.success(), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("pii-keys generate"), "{}", text(&o));
        assert!(!missing.exists());
    }
}

#[test]
fn serve_without_a_key_exits_non_zero_naming_the_setting() {
    let dir = TempDir::new();
    let o = fengqiao(&[
        "serve",
        "--service",
        "router",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        &dir.sqlite_url("router.db"),
        "--data-dir",
        path(dir.path()),
    ]);
    assert!(!o.status.success(), "started without a key: {}", text(&o));
    assert!(text(&o).contains("[pii] key_file"), "{}", text(&o));
    // Nothing was opened: no database file and no key made up.
    assert!(!dir.path().join("router.db").exists());
    assert!(!dir.path().join("pii-keys.json").exists());

    // With a key file it gets past that check (and would start): the same command with
    // `--pii-key-file` and `--dump-config` succeeds, and so does FENGQIAO_PII_KEYS.
    let file = dir.path().join("pii-keys.json");
    let o = fengqiao(&["pii-keys", "generate", "--kid", "k1", "--out", path(&file)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = fengqiao(&[
        "serve",
        "--service",
        "router",
        "--pii-key-file",
        path(&file),
        "--dump-config",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: toml::Table = toml::from_str(&String::from_utf8_lossy(&o.stdout)).expect("toml");
    assert_eq!(doc["pii"]["key_file"].as_str(), Some(path(&file)));

    // A key file that is not the documented JSON is refused, naming the setting, never
    // echoing the content.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "not-json-secret-material").expect("write");
    let o = fengqiao(&[
        "serve",
        "--service",
        "router",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--database-url",
        &dir.sqlite_url("router.db"),
        "--pii-key-file",
        path(&bad),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("pii.key_file"), "{}", text(&o));
    assert!(
        !text(&o).contains("not-json-secret-material"),
        "{}",
        text(&o)
    );
}
