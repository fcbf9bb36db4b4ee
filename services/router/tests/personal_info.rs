//! Personal information in the router (issue #14 §1), on SQLite and PostgreSQL: transfers and
//! events sealed at rest, every answer masked by default, the full view per route and role
//! with a `pii.read` audit record naming the fields (never the values), refusals audited, the
//! receiver seeing nothing before the offer and only its route's fields, intake validation and
//! redaction.

use std::sync::Arc;

use fengqiao_kit::Identity;
use fengqiao_kit::auth::AuthMethod;
use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_kit::pii::{VIEW_HEADER, validate::resident_id_check_char};
use fengqiao_proto::common::{
    Address, AgencyRef, DisputeCategory, IdType, Party, PartyRole, PersonalInfoField,
};
use fengqiao_proto::router::transfer_service_server::TransferService;
use fengqiao_proto::router::*;
use fengqiao_router::Agencies;
use fengqiao_router::agencies::SeedFile;
use fengqiao_router::clock::HolidayCalendar;
use fengqiao_router::routes::{BUILTIN_FILES, RouteCatalog};
use fengqiao_router::transfers::Transfers;
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Backend, Store, both_backends};
use fengqiao_testkit::answers::{Answer as _, Named, Refusal as _};
use tonic::{Code, Request};

const STATION: &str = "agencies/xigang-bayilu-station";
const COMMAND: &str = "agencies/xigang-110";
const ROOM: &str = "agencies/xigang-bayilu-mediation-room";
const POLICE_ROUTE: &str = "police-to-station-mediation";
/// A copy of the police route that lets only names and phones travel and names its own
/// full-view role.
const NARROW_ROUTE: &str = "test-narrow-police";

const PHONE: &str = "13900005201";
const PHONE_MASKED: &str = "139****5201";
const NAME: &str = "张三丰";

/// A resident ID number with a valid GB 11643 check character.
fn id_number() -> String {
    let first17 = "21020319900101123";
    let check = resident_id_check_char(first17).expect("digits");
    format!("{first17}{check}")
}

fn who(agency: &str, actor: &str, roles: &[&str]) -> Identity {
    Identity {
        agency: agency.into(),
        actor: actor.into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        method: AuthMethod::Token,
        person: None,
    }
}

fn req<T>(as_: &Identity, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(as_.clone());
    r
}

fn full<T>(as_: &Identity, msg: T) -> Request<T> {
    let mut r = req(as_, msg);
    r.metadata_mut()
        .insert(VIEW_HEADER, "full".parse().expect("header"));
    r
}

fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn catalog() -> Arc<RouteCatalog> {
    let (_, police) = BUILTIN_FILES
        .iter()
        .copied()
        .find(|(n, _)| *n == "police-to-station-mediation.v2.toml")
        .expect("police route");
    let before = "allowed_personal_info = [\"party_name\", \"party_id_number\", \"party_phone\", \"party_address\"]";
    assert!(police.contains(before));
    let text = police
        .replace(
            "id = \"police-to-station-mediation\"",
            &format!("id = \"{NARROW_ROUTE}\""),
        )
        .replace("version = 2", "version = 1")
        .replace(
            before,
            "allowed_personal_info = [\"party_name\", \"party_phone\"]\n\
             full_personal_info_roles = [\"mediator\"]",
        );
    let extra = RouteCatalog::from_files([(format!("{NARROW_ROUTE}.v1.toml").as_str(), text)])
        .expect("test route");
    Arc::new(
        RouteCatalog::builtin()
            .expect("builtin")
            .merge(extra)
            .expect("merged"),
    )
}

async fn setup(store: &Store) -> Result<Transfers, Box<dyn std::error::Error + Send + Sync>> {
    fengqiao_router::migrate(store).await?;
    let seed: SeedFile = toml::from_str(include_str!("../../../deploy/dev/agencies.toml"))?;
    Agencies::new(store.clone())
        .seed(&seed, "http://127.0.0.1:9")
        .await?;
    Ok(Transfers::new(
        store.clone(),
        catalog(),
        Arc::new(HolidayCalendar::builtin().clone()),
    ))
}

fn person() -> Party {
    Party {
        party_id: "p1".into(),
        role: PartyRole::Applicant as i32,
        name: NAME.into(),
        id_type: IdType::ResidentIdCard as i32,
        id_number: id_number(),
        phone: PHONE.into(),
        address: Some(Address {
            region_code: "210203".into(),
            detail: "八一路12号".into(),
            location: None,
        }),
    }
}

fn snapshot() -> CaseSnapshot {
    CaseSnapshot {
        category: DisputeCategory::Neighbourhood as i32,
        summary: "邻里之间因漏水损失赔偿发生纠纷".into(),
        region_code: "210203".into(),
        parties: vec![
            person(),
            Party {
                party_id: "p2".into(),
                role: PartyRole::Respondent as i32,
                name: "李四".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn create_req(route: &str, case: CaseSnapshot) -> CreateTransferRequest {
    CreateTransferRequest {
        transfer: Some(Transfer {
            route: format!("routes/{route}"),
            to_agency: Some(AgencyRef {
                name: ROOM.into(),
                ..Default::default()
            }),
            case_snapshot: Some(case),
            ..Default::default()
        }),
        request_id: rid(),
        submit: false,
    }
}

struct Cast {
    officer: Identity,
    reviewer: Identity,
    chief: Identity,
    mediator: Identity,
    dispatcher: Identity,
    service: Identity,
}

fn cast() -> Cast {
    Cast {
        officer: who(STATION, "officer-01", &["officer"]),
        reviewer: who(COMMAND, "reviewer-01", &["command_room_reviewer"]),
        chief: who(STATION, "duty-chief-01", &["duty_chief"]),
        mediator: who(ROOM, "mediator-01", &["mediator"]),
        dispatcher: who(STATION, "dispatcher-01", &["dispatcher"]),
        service: who(ROOM, "mediation-service", &["service"]),
    }
}

async fn create(t: &Transfers, c: &Cast, route: &str) -> Transfer {
    t.create_transfer(req(&c.officer, create_req(route, snapshot())))
        .await
        .answer_of("create", |r| r.transfer)
}

/// Submits and passes both approval steps: the transfer is offered (APPROVED).
async fn offer(t: &Transfers, c: &Cast, name: &str) -> Transfer {
    t.submit_transfer(req(&c.officer, SubmitTransferRequest::named(name)))
        .await
        .expect("submit");
    approve_all(t, c, name).await
}

/// Passes both approval steps of a submitted transfer.
async fn approve_all(t: &Transfers, c: &Cast, name: &str) -> Transfer {
    let mut last = None;
    for (step, approver) in [(0, &c.reviewer), (1, &c.chief)] {
        last = t
            .approve_transfer(req(
                approver,
                ApproveTransferRequest {
                    step_index: step,
                    ..Named::named(name)
                },
            ))
            .await
            .answer("approve")
            .transfer;
    }
    last.expect("transfer")
}

fn party0(t: &Transfer) -> Party {
    t.case_snapshot.as_ref().expect("snapshot").parties[0].clone()
}

fn assert_masked(t: &Transfer) {
    let p = party0(t);
    assert_eq!(p.name, "张**");
    assert_eq!(
        p.id_number,
        format!("210203**********{}", &id_number()[16..])
    );
    assert_eq!(p.phone, PHONE_MASKED);
    assert_eq!(p.address.expect("address").detail, "***");
}

fn assert_whole(t: &Transfer) {
    let p = party0(t);
    assert_eq!(p.name, NAME);
    assert_eq!(p.id_number, id_number());
    assert_eq!(p.phone, PHONE);
    assert_eq!(p.address.expect("address").detail, "八一路12号");
}

/// (action, outcome, detail, personal_info_fields) of the audit records on `resource`.
async fn audit_of(store: &Store, resource: &str) -> Vec<(String, String, String, String)> {
    sqlx::query(
        "SELECT action, outcome, detail, personal_info_fields FROM audit_records \
         WHERE resource = $1 ORDER BY seq",
    )
    .bind(resource)
    .fetch_all(store.pool())
    .await
    .expect("audit")
    .iter()
    .map(|r| {
        (
            r.get::<String, _>("action"),
            r.get::<String, _>("outcome"),
            r.get::<String, _>("detail"),
            r.get::<String, _>("personal_info_fields"),
        )
    })
    .collect()
}

/// Every text column of every audit record, joined (to look for values).
async fn audit_text(store: &Store) -> String {
    sqlx::query(
        "SELECT agency, actor, action, resource, COALESCE(case_id, '') AS case_id, detail, \
         personal_info_fields FROM audit_records",
    )
    .fetch_all(store.pool())
    .await
    .expect("audit")
    .iter()
    .map(|r| {
        [
            "agency",
            "actor",
            "action",
            "resource",
            "case_id",
            "detail",
            "personal_info_fields",
        ]
        .iter()
        .map(|c| r.get::<String, _>(*c))
        .collect::<Vec<_>>()
        .join("|")
    })
    .collect::<Vec<_>>()
    .join("\n")
}

fn pii_fields(fields: &[PersonalInfoField]) -> String {
    let mut n: Vec<i32> = fields.iter().map(|f| *f as i32).collect();
    n.sort_unstable();
    n.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

both_backends!(
    answers_are_masked_unless_an_allowed_role_asks_and_full_reads_are_audited,
    |store: Store| async move {
        let t = setup(&store).await?;
        let c = cast();
        // The mutation answer is masked, also with the header (no full view of mutations).
        let r = full(&c.officer, create_req(POLICE_ROUTE, snapshot()));
        let created = t.create_transfer(r).await.answer_of("t", |r| r.transfer);
        assert_masked(&created);
        let name = created.name.clone();

        // Get and List: masked by default.
        let got = t
            .get_transfer(req(&c.officer, GetTransferRequest { name: name.clone() }))
            .await
            .answer_of("t", |r| r.transfer);
        assert_masked(&got);
        let listed = t
            .list_transfers(req(&c.officer, ListTransfersRequest::default()))
            .await?
            .into_inner();
        assert_eq!(listed.transfers.len(), 1);
        assert_masked(&listed.transfers[0]);
        assert!(
            audit_of(&store, &name)
                .await
                .iter()
                .all(|(a, ..)| a != "pii.read"),
            "masked reads leave no pii.read record"
        );

        // Full for the officer (the router's default full-view roles): one pii.read record
        // naming the fields, in the read's transaction.
        let got = t
            .get_transfer(full(&c.officer, GetTransferRequest { name: name.clone() }))
            .await
            .answer_of("t", |r| r.transfer);
        assert_whole(&got);
        let want_fields = pii_fields(&[
            PersonalInfoField::PartyName,
            PersonalInfoField::PartyIdNumber,
            PersonalInfoField::PartyPhone,
            PersonalInfoField::PartyAddress,
        ]);
        let reads: Vec<_> = audit_of(&store, &name)
            .await
            .into_iter()
            .filter(|(a, ..)| a == "pii.read")
            .collect();
        assert_eq!(
            reads,
            [(
                "pii.read".to_string(),
                "allowed".to_string(),
                "GetTransfer".to_string(),
                want_fields.clone()
            )]
        );
        let listed = t
            .list_transfers(full(&c.officer, ListTransfersRequest::default()))
            .await?
            .into_inner();
        assert_whole(&listed.transfers[0]);
        let reads = audit_of(&store, &name)
            .await
            .into_iter()
            .filter(|(a, o, d, _)| a == "pii.read" && o == "allowed" && d == "ListTransfers")
            .count();
        assert_eq!(reads, 1);

        // A dispatcher of the same station may not: PERSONAL_INFO_VIEW_DENIED, audited.
        for call in ["get", "list"] {
            let status = if call == "get" {
                t.get_transfer(full(
                    &c.dispatcher,
                    GetTransferRequest { name: name.clone() },
                ))
                .await
                .expect_err("dispatcher")
            } else {
                t.list_transfers(full(&c.dispatcher, ListTransfersRequest::default()))
                    .await
                    .expect_err("dispatcher")
            };
            assert_eq!(status.code(), Code::PermissionDenied, "{call}");
            assert_eq!(
                reason_of(&status).as_deref(),
                Some("PERSONAL_INFO_VIEW_DENIED")
            );
            assert!(!status.message().contains(PHONE));
        }
        let denied: Vec<_> = audit_of(&store, &name)
            .await
            .into_iter()
            .filter(|(a, o, d, _)| {
                a == "pii.read" && o == "denied" && d == "PERSONAL_INFO_VIEW_DENIED"
            })
            .collect();
        assert_eq!(denied.len(), 2, "{denied:?}");

        // A header that is neither full nor masked is the client's error.
        let mut bad = req(&c.officer, GetTransferRequest { name: name.clone() });
        bad.metadata_mut()
            .insert(VIEW_HEADER, "everything".parse().expect("header"));
        t.get_transfer(bad)
            .await
            .refusal(Code::InvalidArgument, "bad header");

        // Every mutation answer is masked; an idempotent replay too.
        let submit = SubmitTransferRequest::named(&name);
        for _ in 0..2 {
            let s = t
                .submit_transfer(req(&c.officer, submit.clone()))
                .await
                .answer_of("t", |r| r.transfer);
            assert_masked(&s);
        }
        // The reviewer (approver) sees the transfer, masked only.
        let r = t
            .get_transfer(req(&c.reviewer, GetTransferRequest { name: name.clone() }))
            .await
            .answer_of("t", |r| r.transfer);
        assert_masked(&r);
        let status = t
            .get_transfer(full(&c.reviewer, GetTransferRequest { name: name.clone() }))
            .await
            .expect_err("reviewer");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("PERSONAL_INFO_VIEW_DENIED")
        );
        let approved = approve_all(&t, &c, &name).await;
        assert_masked(&approved);

        // The audit trail names fields, never values.
        let text = audit_text(&store).await;
        for value in [id_number().as_str(), PHONE, NAME, "八一路"] {
            assert!(!text.contains(value), "audit holds a value");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    the_receiver_sees_nothing_before_the_offer_and_only_its_route_fields,
    |store: Store| async move {
        let t = setup(&store).await?;
        let c = cast();
        let created = create(&t, &c, NARROW_ROUTE).await;
        let name = created.name.clone();
        // Minimised at creation: the route lets names and phones travel, nothing else.
        let mut removed = created.redacted_fields.clone();
        removed.sort_unstable();
        assert_eq!(
            removed,
            [
                PersonalInfoField::PartyIdNumber as i32,
                PersonalInfoField::PartyAddress as i32
            ]
        );
        t.submit_transfer(req(&c.officer, SubmitTransferRequest::named(&name)))
            .await?;

        // Before the offer the receiver gets NOT_FOUND, an empty list, no event.
        for r in [
            req(&c.mediator, GetTransferRequest { name: name.clone() }),
            full(&c.mediator, GetTransferRequest { name: name.clone() }),
        ] {
            t.get_transfer(r)
                .await
                .refusal(Code::NotFound, "before the offer");
        }
        for r in [
            req(&c.mediator, ListTransfersRequest::default()),
            full(&c.mediator, ListTransfersRequest::default()),
        ] {
            assert!(t.list_transfers(r).await?.into_inner().transfers.is_empty());
        }
        let (_, events) = t.events_after(ROOM, 0, 100).await?;
        assert!(events.is_empty(), "no event before the offer");

        // Offered: visible, masked by default; in full for the route's own role only.
        approve_all(&t, &c, &name).await;
        let (_, events) = t.events_after(ROOM, 0, 100).await?;
        assert!(!events.is_empty());
        let masked = t
            .get_transfer(req(&c.mediator, GetTransferRequest { name: name.clone() }))
            .await
            .answer_of("t", |r| r.transfer);
        let p = party0(&masked);
        assert_eq!((p.name.as_str(), p.phone.as_str()), ("张**", PHONE_MASKED));
        for reader in [&c.mediator, &c.service] {
            let whole = t
                .get_transfer(full(reader, GetTransferRequest { name: name.clone() }))
                .await
                .answer_of("t", |r| r.transfer);
            let p = party0(&whole);
            assert_eq!((p.name.as_str(), p.phone.as_str()), (NAME, PHONE));
            // Never travelled: not even the full view has them.
            assert!(p.id_number.is_empty());
            assert!(p.address.is_none_or(|a| a.detail.is_empty()));
        }
        let reads: Vec<_> = audit_of(&store, &name)
            .await
            .into_iter()
            .filter(|(a, o, ..)| a == "pii.read" && o == "allowed")
            .collect();
        assert_eq!(reads.len(), 2);
        assert_eq!(
            reads[0].3,
            pii_fields(&[PersonalInfoField::PartyName, PersonalInfoField::PartyPhone])
        );
        // The route names only `mediator`: the officer's default full view does not apply.
        let status = t
            .get_transfer(full(&c.officer, GetTransferRequest { name: name.clone() }))
            .await
            .expect_err("officer on the narrow route");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("PERSONAL_INFO_VIEW_DENIED")
        );
        assert!(status.message().contains("mediator"));
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    intake_validates_parties_refuses_personal_identifiers_and_redacts_free_text,
    |store: Store| async move {
        let t = setup(&store).await?;
        let c = cast();
        let id = id_number();
        let wrong_check = format!("{}{}", &id[..17], if id.ends_with('0') { '1' } else { '0' });
        let cases: Vec<(CaseSnapshot, &str)> = vec![
            (
                {
                    let mut s = snapshot();
                    s.parties[0].id_number = wrong_check;
                    s
                },
                "transfer.case_snapshot.parties[0].id_number",
            ),
            (
                {
                    let mut s = snapshot();
                    s.parties[0].phone = "1390000520".into();
                    s
                },
                "transfer.case_snapshot.parties[0].phone",
            ),
            (
                {
                    let mut s = snapshot();
                    s.external_references
                        .insert("agencies/xigang-110".into(), id.clone());
                    s
                },
                "transfer.case_snapshot.external_references",
            ),
        ];
        for (case, field) in cases {
            let status = t
                .create_transfer(req(&c.officer, create_req(POLICE_ROUTE, case)))
                .await
                .expect_err(field);
            assert_eq!(status.code(), Code::InvalidArgument, "{field}");
            assert_eq!(bad_fields_of(&status), [field]);
            assert!(!status.message().contains(&id) && !status.message().contains(PHONE));
        }
        assert_eq!(
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM transfers")
                .fetch_one(store.pool())
                .await?,
            0
        );

        // Free text: an ID number and a mobile number in the summary and the note are masked
        // before they are stored.
        let mut s = snapshot();
        s.summary = format!("报警人{id}称，电话{PHONE}，邻居噪音");
        let mut cr = create_req(POLICE_ROUTE, s);
        if let Some(tr) = cr.transfer.as_mut() {
            tr.note = format!("联系{PHONE}");
        }
        let created = t
            .create_transfer(req(&c.officer, cr))
            .await
            .answer_of("t", |r| r.transfer);
        let whole = t
            .get_transfer(full(&c.officer, GetTransferRequest::named(&created.name)))
            .await
            .answer_of("t", |r| r.transfer);
        let summary = whole
            .case_snapshot
            .as_ref()
            .expect("snapshot")
            .summary
            .clone();
        assert_eq!(
            summary,
            format!(
                "报警人210203**********{}称，电话{PHONE_MASKED}，邻居噪音",
                &id[16..]
            )
        );
        assert_eq!(whole.note, format!("联系{PHONE_MASKED}"));

        // UpdateTransfer takes parties through the same checks.
        let mut bad = snapshot();
        bad.parties[0].phone = "1390000520".into();
        let status = t
            .update_transfer(req(
                &c.officer,
                UpdateTransferRequest {
                    transfer: Some(Transfer {
                        name: created.name.clone(),
                        case_snapshot: Some(bad),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["case_snapshot".into()],
                    }),
                    request_id: rid(),
                },
            ))
            .await
            .expect_err("bad phone on update");
        assert_eq!(
            bad_fields_of(&status),
            ["transfer.case_snapshot.parties[0].phone"]
        );

        // A reason with a phone number: redacted in the event the timeline shows.
        t.submit_transfer(req(&c.officer, SubmitTransferRequest::named(&created.name)))
            .await?;
        t.reject_transfer(req(
            &c.reviewer,
            RejectTransferRequest {
                step_index: 0,
                reason: format!("请补充，电话{PHONE}"),
                ..Named::named(&created.name)
            },
        ))
        .await?;
        let case_id = whole
            .case_snapshot
            .as_ref()
            .expect("snapshot")
            .case_id
            .clone();
        let timeline = t
            .get_case_timeline(req(
                &c.officer,
                GetCaseTimelineRequest {
                    case_id,
                    ..Default::default()
                },
            ))
            .await?
            .into_inner();
        let rejected = timeline
            .events
            .iter()
            .find(|e| e.event_type == TransferEventType::Rejected as i32)
            .expect("rejected event");
        assert_eq!(rejected.reason, format!("请补充，电话{PHONE_MASKED}"));

        // An identifier that holds an ID number is refused, naming the field.
        let status = t
            .accept_transfer(req(
                &c.mediator,
                AcceptTransferRequest {
                    receiver_reference: format!("调字{id}"),
                    ..Named::named(&created.name)
                },
            ))
            .await
            .refusal(Code::InvalidArgument, "personal reference");
        assert_eq!(bad_fields_of(&status), ["receiver_reference"]);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

both_backends!(
    no_id_number_or_phone_is_stored_in_the_clear,
    |store: Store| async move {
        let t = setup(&store).await?;
        let c = cast();
        let created = create(&t, &c, POLICE_ROUTE).await;
        offer(&t, &c, &created.name).await;
        let id = id_number();
        let sealed_columns = [
            ("SELECT body AS b FROM transfers", "transfers.body"),
            (
                "SELECT body AS b FROM transfer_events",
                "transfer_events.body",
            ),
            ("SELECT payload AS b FROM outbox", "outbox.payload"),
            (
                "SELECT response AS b FROM idempotency_keys",
                "idempotency_keys.response",
            ),
        ];
        for (sql, what) in sealed_columns {
            let rows = sqlx::query(sql).fetch_all(store.pool()).await?;
            assert!(!rows.is_empty(), "{what} has rows");
            for r in rows {
                let b: Vec<u8> = r.get("b");
                assert!(b.starts_with(b"FQS1"), "{what} is sealed");
                assert!(!contains(&b, &id) && !contains(&b, PHONE), "{what}");
            }
        }
        // The sealed body opens to the whole transfer (the seal is not a loss).
        let b: Vec<u8> = sqlx::query_scalar("SELECT body FROM transfers")
            .fetch_one(store.pool())
            .await?;
        let plain = fengqiao_store::seal::open("transfers.body", &b)?;
        assert!(contains(&plain, &id) && contains(&plain, PHONE));

        if store.backend() == Backend::Sqlite {
            let file: String =
                sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                    .fetch_one(store.pool())
                    .await?;
            let mut checked = 0;
            for path in [file.clone(), format!("{file}-wal")] {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                checked += bytes.len();
                assert!(!contains(&bytes, &id), "{path} holds the ID number");
                assert!(!contains(&bytes, PHONE), "{path} holds the phone");
            }
            assert!(checked > 0, "database files were read");
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);

both_backends!(
    a_made_up_name_holding_personal_information_is_refused_and_recorded_masked,
    |store: Store| async move {
        let t = setup(&store).await?;
        let c = cast();
        // A caller asks for transfers "named" by an ID number (lower-case check character, as
        // resource ids are) and by a phone: both are refused NOT_FOUND, and neither the audit
        // trail (kept forever) nor the error message holds the value.
        let id = id_number().to_ascii_lowercase();
        for name in [format!("transfers/{id}"), format!("transfers/p-{PHONE}")] {
            for full_view in [false, true] {
                let msg = GetTransferRequest { name: name.clone() };
                let r = if full_view {
                    full(&c.reviewer, msg)
                } else {
                    req(&c.reviewer, msg)
                };
                let status = t.get_transfer(r).await.refusal(Code::NotFound, "refused");
                assert!(!status.message().contains(&id), "{}", status.message());
                assert!(!status.message().contains(PHONE), "{}", status.message());
            }
        }
        // A non-admin's agency filter naming a phone is refused and recorded masked too.
        let status = t
            .list_transfers(req(
                &c.officer,
                ListTransfersRequest {
                    agency: format!("agencies/p-{PHONE}"),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("admin only");
        assert!(!status.message().contains(PHONE), "{}", status.message());
        let trail = audit_text(&store).await;
        assert!(
            trail.matches("transfer.get").count() >= 4,
            "each refusal is on record: {trail}"
        );
        assert!(trail.contains("transfer.list"), "{trail}");
        assert!(!trail.contains(&id), "the ID number is in the audit trail");
        assert!(!trail.contains(PHONE), "the phone is in the audit trail");
        // What is recorded is the masked name, so the refusal stays traceable.
        assert!(
            trail.contains(&format!("transfers/p-{PHONE_MASKED}")),
            "{trail}"
        );
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }
);
