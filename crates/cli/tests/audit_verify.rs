//! `fengqiao audit-verify`: intact chain → exit 0; one tampered row → non-zero with the
//! broken sequence named. On SQLite and PostgreSQL.

use std::process::Command;

use fengqiao_router::audit::{self, AuditEntry, Outcome};
use fengqiao_store::{Backend, Store, both_backends, sqlx};

fn verify(url: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(["audit-verify", "--database-url", url])
        .output()
        .expect("run fengqiao");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

both_backends!(
    audit_verify_reports_the_first_broken_link,
    |store: Store| async move {
        fengqiao_router::migrate(&store).await.expect("migrate");
        for i in 0..20 {
            let mut tx = store.write().await.expect("tx");
            let detail = format!("DRAFT→AWAITING_APPROVAL {i}");
            audit::append(
                &mut tx,
                &AuditEntry {
                    agency: "agencies/xigang-bayilu-station",
                    actor: "officer-01",
                    action: "transfer.submitted",
                    resource: "transfers/x",
                    case_id: None,
                    outcome: Outcome::Allowed,
                    detail: &detail,
                },
            )
            .await
            .expect("append");
            tx.commit().await.expect("commit");
        }
        let url = store.config().url.clone();
        let (ok, out) = verify(&url);
        assert!(ok, "{out}");
        assert!(out.contains("intact"), "{out}");

        // Someone with database access removes the guards and edits record 7.
        let drop_guards = match store.backend() {
            Backend::Sqlite => {
                "DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;"
            }
            Backend::Postgres => {
                "DROP TRIGGER audit_records_no_change ON audit_records; \
             DROP TRIGGER audit_records_no_truncate ON audit_records;"
            }
        };
        sqlx::raw_sql(drop_guards)
            .execute(store.pool())
            .await
            .expect("drop guards");
        sqlx::query("UPDATE audit_records SET detail = 'APPROVED' WHERE seq = 7")
            .execute(store.pool())
            .await
            .expect("tamper");
        let (ok, out) = verify(&url);
        assert!(!ok, "{out}");
        assert!(out.contains("BROKEN at sequence 7"), "{out}");
    }
);
