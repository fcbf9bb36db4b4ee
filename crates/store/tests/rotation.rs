//! Key rotation through the store (its own binary: the key ring is process-wide). Rows sealed
//! under the old key stay readable after rotation; new rows are sealed under the new key; a
//! ring without the old key cannot read the old rows (and says which key is missing). The
//! two-step rotation across replicas: a ring with a staged key and one with it activated read
//! each other's rows on one database.

use fengqiao_store::outbox::{self, NewMessage};
use fengqiao_store::seal::{self, KeyFile, Keyring};
use fengqiao_store::{Error, SHARED_MIGRATIONS, SHARED_SERVICE, Store, both_backends};
use sqlx::Row as _;

async fn raw_payload(store: &Store, id: &str) -> Vec<u8> {
    sqlx::query("SELECT payload FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .expect("row")
        .get::<Vec<u8>, _>(0)
}

async fn put(store: &Store, payload: &[u8]) -> Result<String, Error> {
    let m = NewMessage::new("dest", "case-1", "kind", payload.to_vec());
    let mut tx = store.write().await?;
    outbox::enqueue(&mut tx, &m).await?;
    tx.commit().await?;
    Ok(m.id)
}

/// The two backends' tests run at once and each installs rings for the whole process: one at a
/// time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

both_backends!(rotation_keeps_old_rows_readable, |store| async move {
    let _one = ONE_AT_A_TIME.lock().await;
    store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
    let mut file = KeyFile::generate("k-old").expect("key file");
    seal::install(Keyring::new(&file).expect("ring"));
    let old = put(&store, b"sealed under the old key").await?;
    assert_eq!(
        seal::kid_of(&raw_payload(&store, &old).await),
        Some("k-old")
    );

    file.rotate("k-new").expect("rotate");
    seal::install(Keyring::new(&file).expect("ring"));
    let got = outbox::get(&store, &old).await?.expect("old row");
    assert_eq!(got.payload, b"sealed under the old key");
    let new = put(&store, b"sealed under the new key").await?;
    assert_eq!(
        seal::kid_of(&raw_payload(&store, &new).await),
        Some("k-new")
    );
    assert_eq!(
        outbox::get(&store, &new).await?.expect("new row").payload,
        b"sealed under the new key"
    );

    // Dropping the old key too early: the old row names the key it needs.
    let mut only_new = file.clone();
    only_new.keys.retain(|k| k.kid == "k-new");
    seal::install(Keyring::new(&only_new).expect("ring"));
    match outbox::get(&store, &old).await {
        Err(Error::UnknownKey(kid)) => assert_eq!(kid, "k-old"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    // Put the full ring back for whatever runs next in this process.
    seal::install(Keyring::new(&file).expect("ring"));
    Ok::<_, Error>(())
});

// Rotation across replicas that restart one by one (`pii-keys add`, then `activate`): a
// process with the staged file (new key present, not active) and one with the activated file
// share one database; each opens what the other sealed. A process with the file from before
// the key was staged cannot open the new rows, which is why the key is staged first.
both_backends!(
    staged_and_activated_rings_read_each_other,
    |store| async move {
        let _one = ONE_AT_A_TIME.lock().await;
        store.migrate(SHARED_SERVICE, SHARED_MIGRATIONS).await?;
        let before = KeyFile::generate("k-2026").expect("key file");
        let mut staged = before.clone();
        staged.add("k-2027").expect("add");
        let mut activated = staged.clone();
        activated.activate("k-2027").expect("activate");
        assert_eq!(staged.active, "k-2026");
        assert_eq!(activated.active, "k-2027");

        // A replica already restarted with the staged file still writes under the old key.
        seal::install(Keyring::new(&staged).expect("ring"));
        let from_staged = put(&store, b"sealed by the staged replica").await?;
        assert_eq!(
            seal::kid_of(&raw_payload(&store, &from_staged).await),
            Some("k-2026")
        );

        // A replica restarted with the activated file writes under the new key and reads the
        // staged replica's row.
        seal::install(Keyring::new(&activated).expect("ring"));
        let from_active = put(&store, b"sealed by the activated replica").await?;
        assert_eq!(
            seal::kid_of(&raw_payload(&store, &from_active).await),
            Some("k-2027")
        );
        assert_eq!(
            outbox::get(&store, &from_staged)
                .await?
                .expect("row")
                .payload,
            b"sealed by the staged replica"
        );

        // And the other way round: the staged replica reads the activated replica's row.
        seal::install(Keyring::new(&staged).expect("ring"));
        assert_eq!(
            outbox::get(&store, &from_active)
                .await?
                .expect("row")
                .payload,
            b"sealed by the activated replica"
        );

        // A replica still on the file from before `add` cannot: it names the key it lacks.
        seal::install(Keyring::new(&before).expect("ring"));
        match outbox::get(&store, &from_active).await {
            Err(Error::UnknownKey(kid)) => assert_eq!(kid, "k-2027"),
            other => panic!("expected UnknownKey, got {other:?}"),
        }
        assert_eq!(
            outbox::get(&store, &from_staged)
                .await?
                .expect("row")
                .payload,
            b"sealed by the staged replica"
        );
        seal::install(Keyring::new(&activated).expect("ring"));
        Ok::<_, Error>(())
    }
);
