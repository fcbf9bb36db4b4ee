//! The store never runs without a personal-information key (its own binary: the key ring is
//! process-wide, and no other test here installs one).

use fengqiao_store::{Error, Store, StoreConfig};

#[tokio::test]
async fn connect_refuses_without_a_key_ring() {
    assert!(!fengqiao_store::seal::installed());
    let dir = std::env::temp_dir().join(format!("fengqiao-nokey-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("x.db").display());
    let err = Store::connect(StoreConfig::new(url)).await.err();
    assert!(matches!(err, Some(Error::NoSealKey)), "{err:?}");
    let msg = err.expect("an error").to_string();
    assert!(msg.contains("[pii] key_file"), "{msg}");
    // Nothing sealed either.
    assert!(matches!(
        fengqiao_store::seal::seal("t.c", b"x"),
        Err(Error::NoSealKey)
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
