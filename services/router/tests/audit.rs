//! The router's audit trail: chaining, verification, tampering, concurrency, rollback, and the
//! `AuditService` authorisation — on SQLite and PostgreSQL.

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_proto::common::PersonalInfoField;
use fengqiao_proto::router::audit_service_server::AuditService;
use fengqiao_proto::router::{ListAuditRecordsRequest, VerifyAuditChainRequest};
use fengqiao_router::audit::{self, Audit, AuditEntry, GENESIS_HASH, Outcome};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Backend, Store, both_backends};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const CASE: &str = "6f1c3a52-8d0e-4b7a-9c55-2f7b9e0d1a34";

fn entry(detail: &str) -> AuditEntry<'_> {
    AuditEntry {
        agency: "agencies/xigang-police",
        actor: "officer-0042",
        action: "TransferService.ApproveTransfer",
        resource: "transfers/t-1",
        case_id: Some(CASE),
        outcome: Outcome::Allowed,
        detail,
    }
}

async fn setup(store: &Store) -> TestResult {
    fengqiao_router::migrate(store).await?;
    Ok(())
}

/// Appends `n` records, each in its own write transaction.
async fn append_n(store: &Store, n: usize) -> TestResult {
    for i in 0..n {
        let mut tx = store.write().await?;
        let detail = format!("state S{i}");
        audit::append(&mut tx, &entry(&detail)).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Drops the append-only triggers, as someone with direct database access could.
async fn drop_guards(store: &Store) -> TestResult {
    let sql = match store.backend() {
        Backend::Sqlite => {
            "DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;"
        }
        Backend::Postgres => {
            "DROP TRIGGER audit_records_no_change ON audit_records; \
             DROP TRIGGER audit_records_no_truncate ON audit_records;"
        }
    };
    sqlx::raw_sql(sql).execute(store.pool()).await?;
    Ok(())
}

async fn raw(store: &Store, sql: &str) -> TestResult {
    sqlx::query(sql).execute(store.pool()).await?;
    Ok(())
}

async fn seqs(store: &Store) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM audit_records ORDER BY seq")
        .fetch_all(store.pool())
        .await
}

fn who(roles: &[&str]) -> Identity {
    Identity {
        agency: "agencies/xigang-justice-bureau".into(),
        actor: "staff-7".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        method: AuthMethod::Token,
        person: None,
    }
}

fn request<T>(msg: T, id: Identity) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.extensions_mut().insert(id);
    r
}

both_backends!(appends_chain_correctly, |store| async move {
    setup(&store).await?;
    let empty = audit::verify(&store).await?;
    assert!(empty.ok);
    assert_eq!(empty.records_checked, 0);

    let mut tx = store.write().await?;
    let s1 = audit::append(&mut tx, &entry("state DRAFT→AWAITING_APPROVAL")).await?;
    let s2 = audit::append(&mut tx, &entry("state AWAITING_APPROVAL→APPROVED")).await?;
    tx.commit().await?;
    assert_eq!((s1, s2), (1, 2));

    let rows = sqlx::query(
        "SELECT seq, prev_hash, hash, outcome, case_id FROM audit_records ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await?;
    assert_eq!(rows.len(), 2);
    let h1: String = rows[0].try_get("hash")?;
    assert_eq!(rows[0].try_get::<String, _>("prev_hash")?, GENESIS_HASH);
    assert_eq!(rows[1].try_get::<String, _>("prev_hash")?, h1);
    assert_eq!(h1.len(), 64);
    assert!(
        h1.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(rows[0].try_get::<String, _>("outcome")?, "allowed");
    assert_eq!(
        rows[0].try_get::<Option<String>, _>("case_id")?.as_deref(),
        Some(CASE)
    );

    let report = audit::verify(&store).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, 2);
    assert_eq!(report.last_seq, 2);
    assert_eq!(report.first_broken_seq, None);
    assert_eq!(audit::verify_cli(&store).await?, report);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(verifies_an_intact_chain_of_500, |store| async move {
    setup(&store).await?;
    let mut tx = store.write().await?;
    for i in 0..500 {
        let detail = format!("state S{i}");
        let seq = audit::append(&mut tx, &entry(&detail)).await?;
        assert_eq!(seq, i + 1);
    }
    tx.commit().await?;
    let report = audit::verify(&store).await?;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records_checked, 500);
    assert_eq!(report.last_seq, 500);
    let last: String = sqlx::query_scalar("SELECT hash FROM audit_records WHERE seq = 500")
        .fetch_one(store.pool())
        .await?;
    assert_eq!(report.last_hash, last);

    // A sub-range links to its predecessor.
    let part = audit::verify_range(&store, 200, Some(300)).await?;
    assert!(part.ok, "{part:?}");
    assert_eq!(part.records_checked, 101);
    assert_eq!(part.last_seq, 300);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(table_refuses_update_and_delete, |store| async move {
    setup(&store).await?;
    append_n(&store, 3).await?;
    assert!(
        raw(
            &store,
            "UPDATE audit_records SET detail = 'x' WHERE seq = 2"
        )
        .await
        .is_err()
    );
    assert!(
        raw(&store, "DELETE FROM audit_records WHERE seq = 2")
            .await
            .is_err()
    );
    assert_eq!(seqs(&store).await?, vec![1, 2, 3]);
    assert!(audit::verify(&store).await?.ok);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(tampered_detail_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 600).await?;
    drop_guards(&store).await?;
    raw(
        &store,
        "UPDATE audit_records SET detail = 'state CLOSED' WHERE seq = 517",
    )
    .await?;
    let report = audit::verify(&store).await?;
    assert!(!report.ok);
    assert_eq!(report.first_broken_seq, Some(517));
    assert_eq!(report.records_checked, 516);
    assert_eq!(report.last_seq, 516);
    assert!(report.detail.contains("517"), "{}", report.detail);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(tampered_time_or_outcome_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 10).await?;
    drop_guards(&store).await?;
    raw(
        &store,
        "UPDATE audit_records SET outcome = 'denied' WHERE seq = 4",
    )
    .await?;
    raw(
        &store,
        "UPDATE audit_records SET recorded_at = recorded_at + 1 WHERE seq = 7",
    )
    .await?;
    let report = audit::verify(&store).await?;
    assert_eq!(report.first_broken_seq, Some(4));
    let later = audit::verify_range(&store, 5, None).await?;
    assert_eq!(later.first_broken_seq, Some(7));
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(deleted_middle_row_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 20).await?;
    drop_guards(&store).await?;
    raw(&store, "DELETE FROM audit_records WHERE seq = 9").await?;
    let report = audit::verify(&store).await?;
    assert!(!report.ok);
    assert_eq!(report.first_broken_seq, Some(9));
    assert_eq!(report.records_checked, 8);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(deleted_first_row_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 5).await?;
    drop_guards(&store).await?;
    raw(&store, "DELETE FROM audit_records WHERE seq = 1").await?;
    let report = audit::verify(&store).await?;
    assert_eq!(report.first_broken_seq, Some(1));
    assert_eq!(report.records_checked, 0);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(changed_hash_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 20).await?;
    drop_guards(&store).await?;
    let fake = "f".repeat(64);
    sqlx::query("UPDATE audit_records SET hash = $1 WHERE seq = 13")
        .bind(&fake)
        .execute(store.pool())
        .await?;
    let report = audit::verify(&store).await?;
    assert_eq!(report.first_broken_seq, Some(13));

    // Re-linking the successor to the forged hash does not help: 13 still fails.
    sqlx::query("UPDATE audit_records SET prev_hash = $1 WHERE seq = 14")
        .bind(&fake)
        .execute(store.pool())
        .await?;
    assert_eq!(audit::verify(&store).await?.first_broken_seq, Some(13));
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(broken_link_is_reported, |store| async move {
    setup(&store).await?;
    append_n(&store, 6).await?;
    drop_guards(&store).await?;
    raw(
        &store,
        "UPDATE audit_records SET prev_hash = hash WHERE seq = 5",
    )
    .await?;
    let report = audit::verify(&store).await?;
    assert_eq!(report.first_broken_seq, Some(5));
    assert!(report.detail.contains("link"), "{}", report.detail);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(
    concurrent_appenders_keep_a_gap_free_chain,
    |store| async move {
        setup(&store).await?;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let detail = format!("task {t} step {i}");
                    let mut tx = store.write().await?;
                    audit::append(&mut tx, &entry(&detail)).await?;
                    tx.commit().await?;
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        assert_eq!(seqs(&store).await?, (1..=200).collect::<Vec<i64>>());
        let report = audit::verify(&store).await?;
        assert!(report.ok, "{report:?}");
        assert_eq!(report.records_checked, 200);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(rolled_back_append_leaves_no_record, |store| async move {
    setup(&store).await?;
    append_n(&store, 2).await?;
    let mut tx = store.write().await?;
    let seq = audit::append(&mut tx, &entry("state X")).await?;
    assert_eq!(seq, 3);
    tx.rollback().await?;
    // Dropped without commit: also rolled back.
    {
        let mut tx = store.write().await?;
        audit::append(&mut tx, &entry("state Y")).await?;
    }
    assert_eq!(seqs(&store).await?, vec![1, 2]);
    let mut tx = store.write().await?;
    assert_eq!(audit::append(&mut tx, &entry("state Z")).await?, 3);
    tx.commit().await?;
    assert!(audit::verify(&store).await?.ok);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(
    denial_is_recorded_in_its_own_transaction,
    |store| async move {
        setup(&store).await?;
        let denial = AuditEntry {
            outcome: Outcome::Denied,
            detail: "ROLE_REQUIRED",
            case_id: None,
            ..entry("")
        };
        audit::record_denial(&store, &denial).await?;
        let (outcome, case_id): (String, Option<String>) =
            sqlx::query_as("SELECT outcome, case_id FROM audit_records WHERE seq = 1")
                .fetch_one(store.pool())
                .await?;
        assert_eq!(outcome, "denied");
        assert_eq!(case_id, None);
        assert!(audit::verify(&store).await?.ok);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    personal_info_reads_are_recorded_by_field,
    |store| async move {
        setup(&store).await?;
        let mut tx = store.write().await?;
        let read = AuditEntry {
            action: "pii.read",
            detail: "GetTransfer",
            ..entry("")
        };
        audit::append_with_personal_info(
            &mut tx,
            &read,
            &[PersonalInfoField::PartyPhone, PersonalInfoField::PartyName],
        )
        .await?;
        tx.commit().await?;
        let audit = Audit::new(store.clone());
        let page = audit.list(&ListAuditRecordsRequest::default()).await?;
        assert_eq!(page.audit_records.len(), 1);
        assert_eq!(
            page.audit_records[0].personal_info_fields,
            vec![
                PersonalInfoField::PartyName as i32,
                PersonalInfoField::PartyPhone as i32
            ]
        );
        assert!(audit::verify(&store).await?.ok);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(lists_in_pages_with_filters, |store| async move {
    setup(&store).await?;
    append_n(&store, 7).await?;
    let other = AuditEntry {
        agency: "agencies/xigang-court",
        actor: "judge-3",
        resource: "transfers/t-2",
        case_id: None,
        ..entry("state ACCEPTED")
    };
    let mut tx = store.write().await?;
    audit::append(&mut tx, &other).await?;
    tx.commit().await?;

    let audit = Audit::new(store.clone());
    let mut req = ListAuditRecordsRequest {
        page_size: 3,
        case_id: CASE.to_uppercase(),
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = audit.list(&req).await?;
        seen.extend(page.audit_records.iter().map(|r| r.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    assert_eq!(seen, (1..=7).collect::<Vec<u64>>());

    let court = audit
        .list(&ListAuditRecordsRequest {
            agency: "agencies/xigang-court".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(court.audit_records.len(), 1);
    let r = &court.audit_records[0];
    assert_eq!(r.name, "auditRecords/8");
    assert_eq!(r.resource, "transfers/t-2");
    assert_eq!(
        r.actor.as_ref().map(|a| a.actor_id.as_str()),
        Some("judge-3")
    );
    assert_eq!(r.case_id, "");
    assert_eq!(r.detail, "state ACCEPTED");

    let by_actor = audit
        .list(&ListAuditRecordsRequest {
            actor_id: "officer-0042".into(),
            resource: "transfers/t-1".into(),
            action: "TransferService.ApproveTransfer".into(),
            ..Default::default()
        })
        .await?;
    assert_eq!(by_actor.audit_records.len(), 7);

    let future = audit
        .list(&ListAuditRecordsRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await?;
    assert!(future.audit_records.is_empty());

    // A page token is tied to its filters; bad filters are named.
    let first = audit
        .list(&ListAuditRecordsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?;
    let err = audit
        .list(&ListAuditRecordsRequest {
            page_size: 2,
            page_token: first.next_page_token,
            action: "pii.read".into(),
            ..Default::default()
        })
        .await
        .err()
        .ok_or("token with other filters accepted")?;
    assert!(matches!(err, fengqiao_router::Error::Invalid(_)), "{err:?}");
    let err = audit
        .list(&ListAuditRecordsRequest {
            case_id: "not-a-uuid".into(),
            agency: "xigang".into(),
            page_size: -1,
            ..Default::default()
        })
        .await
        .err()
        .ok_or("bad filters accepted")?;
    assert!(matches!(err, fengqiao_router::Error::Invalid(_)), "{err:?}");
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});

both_backends!(audit_service_is_for_auditors_only, |store| async move {
    setup(&store).await?;
    append_n(&store, 3).await?;
    let svc = Audit::new(store.clone());

    for roles in [&["auditor"][..], &["platform_admin"][..]] {
        let resp = svc
            .verify_audit_chain(request(VerifyAuditChainRequest::default(), who(roles)))
            .await?
            .into_inner();
        assert!(resp.ok);
        assert_eq!(resp.records_checked, 3);
        assert_eq!(resp.last_sequence, 3);
        assert_eq!(resp.first_broken_sequence, None);
        let list = svc
            .list_audit_records(request(ListAuditRecordsRequest::default(), who(roles)))
            .await?
            .into_inner();
        assert_eq!(list.audit_records.len(), 3);
    }

    // Anyone else is refused, and each refusal is itself on record.
    let status = svc
        .verify_audit_chain(request(
            VerifyAuditChainRequest::default(),
            who(&["mediator"]),
        ))
        .await
        .err()
        .ok_or("verify allowed without role")?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = svc
        .list_audit_records(request(ListAuditRecordsRequest::default(), who(&[])))
        .await
        .err()
        .ok_or("list allowed without role")?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT seq, agency, action, outcome, detail FROM audit_records WHERE seq > 3 ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await?;
    assert_eq!(
        rows,
        vec![
            (
                4,
                "agencies/xigang-justice-bureau".to_string(),
                "AuditService.VerifyAuditChain".to_string(),
                "denied".to_string(),
                "ROLE_REQUIRED".to_string()
            ),
            (
                5,
                "agencies/xigang-justice-bureau".to_string(),
                "AuditService.ListAuditRecords".to_string(),
                "denied".to_string(),
                "ROLE_REQUIRED".to_string()
            ),
        ]
    );

    // Without a verified identity: UNAUTHENTICATED, nothing recorded.
    let status = svc
        .verify_audit_chain(tonic::Request::new(VerifyAuditChainRequest::default()))
        .await
        .err()
        .ok_or("verify allowed without identity")?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Ranges: a sub-range, and an inverted range refused with the field named.
    let resp = svc
        .verify_audit_chain(request(
            VerifyAuditChainRequest {
                start_sequence: 2,
                end_sequence: 4,
            },
            who(&["auditor"]),
        ))
        .await?
        .into_inner();
    assert!(resp.ok);
    assert_eq!(resp.records_checked, 3);
    let status = svc
        .verify_audit_chain(request(
            VerifyAuditChainRequest {
                start_sequence: 4,
                end_sequence: 2,
            },
            who(&["auditor"]),
        ))
        .await
        .err()
        .ok_or("inverted range accepted")?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        fengqiao_kit::error::bad_fields_of(&status),
        vec!["end_sequence"]
    );

    // A break is reported through the RPC too.
    drop_guards(&store).await?;
    raw(
        &store,
        "UPDATE audit_records SET detail = 'x' WHERE seq = 2",
    )
    .await?;
    let resp = svc
        .verify_audit_chain(request(
            VerifyAuditChainRequest::default(),
            who(&["auditor"]),
        ))
        .await?
        .into_inner();
    assert!(!resp.ok);
    assert_eq!(resp.first_broken_sequence, Some(2));
    assert_eq!(resp.last_sequence, 1);
    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
});
