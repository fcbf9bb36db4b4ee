//! 警调对接 end to end, as the 西岗区 practice runs it, on SQLite and PostgreSQL: the 110 system
//! pushes a dispute call, screening finds a civil dispute, the station's officer fills the
//! 移送单, the command room reviews it (指挥室审核), the duty chief approves it (值班所长审批), the
//! case and its evidence go to the mediation room in the station (驻所调解室), insufficient
//! evidence is investigated further by the police (补充调查取证), the mediation ends in a signed
//! agreement, the result is fed back to the command room (反馈指挥室), and each side keeps one
//! complete file (一案一卷).

use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_proto::common::{Address, DisputeCategory, EvidenceRef, IdType, Party, PartyRole};
use fengqiao_proto::mediation::*;
use fengqiao_proto::policereferral::*;
use fengqiao_proto::router::{
    ApproveTransferRequest, GetTransferRequest, InvestigationState, Transfer, TransferEventType,
    TransferState,
};
use fengqiao_scenarios::jingdiao::*;
use fengqiao_scenarios::rid;
use fengqiao_testkit::{Db, TestSuite, suite_test};
use tonic::Code;

/// The mediation room's organisation in the mediation service.
const ORG: &str = "organizations/bayilu-room";

/// `msg` asking for the full personal information (`x-fengqiao-personal-info: full`).
fn full_view<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        fengqiao_kit::pii::VIEW_HEADER,
        tonic::metadata::MetadataValue::from_static("full"),
    );
    r
}
/// The mediator on duty, on the room's roster under her own actor id.
const MEDIATOR: &str = "organizations/bayilu-room/mediators/mediator-01";

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A 110 call about a neighbour's noise at night, as the dispatch system pushes it (接警录入).
fn noise_call(incident: &str) -> Referral {
    Referral {
        incident_number: incident.into(),
        call_time: Some(ts(now() - 3_600)),
        dispatch_time: Some(ts(now() - 3_300)),
        caller: Some(Party {
            name: "王某".into(),
            phone: "13912345678".into(),
            ..Default::default()
        }),
        location: Some(Address {
            region_code: "210203".into(),
            detail: "西岗区八一路某小区3号楼".into(),
            location: None,
        }),
        category: DisputeCategory::Neighbourhood as i32,
        summary: "楼上住户夜间噪音扰民，楼下住户上门理论，双方发生口角".into(),
        parties: vec![
            Party {
                role: PartyRole::Applicant as i32,
                name: "张某".into(),
                id_type: IdType::ResidentIdCard as i32,
                id_number: resident_id("210203", "19750312", "031"),
                phone: "13812345678".into(),
                ..Default::default()
            },
            Party {
                role: PartyRole::Respondent as i32,
                name: "李某".into(),
                id_type: IdType::ResidentIdCard as i32,
                id_number: resident_id("210204", "19880920", "042"),
                phone: "13698765432".into(),
                ..Default::default()
            },
        ],
        on_scene_handling: "民警到场劝解，双方情绪平稳，均表示愿意到驻所调解室调解".into(),
        evidence: vec![EvidenceRef {
            display_name: "执法记录仪视频".into(),
            media_type: "video/mp4".into(),
            uri: "evidence://xigang-110/zfjly/0001".into(),
            ..Default::default()
        }],
        police_station: format!("agencies/{STATION}"),
        ..Default::default()
    }
}

/// The 110 dispatch system pushes the call; it is screened at once.
async fn the_110_system_pushes(cast: &mut Cast, call: Referral) -> Referral {
    cast.dispatch
        .create_referral(CreateReferralRequest {
            referral: Some(call),
            request_id: rid(),
        })
        .await
        .expect("110 push")
        .into_inner()
        .referral
        .expect("referral")
}

async fn referral(c: &Police, name: &str) -> Referral {
    c.clone()
        .get_referral(GetReferralRequest { name: name.into() })
        .await
        .expect("get referral")
        .into_inner()
        .referral
        .expect("referral")
}

/// Waits until `c` sees the referral in `state` with the transfer in `transfer_state`.
async fn referral_reaches(
    c: &Police,
    name: &str,
    state: ReferralState,
    transfer_state: TransferState,
) -> Referral {
    eventually(
        &format!("referral {state:?} / transfer {transfer_state:?}"),
        || async move {
            let r = referral(c, name).await;
            (r.state == state as i32 && r.transfer_state == transfer_state as i32).then_some(r)
        },
    )
    .await
}

/// The officer fills the 移送单 and submits it; the command room reviews it (指挥室审核, at the
/// command centre, the station's parent agency) and the duty chief approves it (值班所长审批).
async fn the_transfer_form_is_approved(cast: &mut Cast, r: &Referral) -> Transfer {
    let drafted = cast
        .officer
        .draft_transfer(DraftTransferRequest {
            name: r.name.clone(),
            etag: r.etag.clone(),
            to_agency: format!("agencies/{ROOM}"),
            note: "经研判属邻里纠纷，双方同意调解，移送驻所调解室".into(),
            submit: true,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("移送单")
        .into_inner();
    let pending = drafted.referral.expect("referral");
    assert_eq!(pending.state, ReferralState::TransferPending as i32);
    let t = drafted.transfer.expect("transfer");
    assert_eq!(t.state, TransferState::AwaitingApproval as i32);
    assert_eq!(pending.transfer, t.name);

    let t = cast
        .reviewer
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "指挥室审核：属民间纠纷，已排除治安、刑事情形，材料齐全".into(),
            request_id: rid(),
        })
        .await
        .expect("指挥室审核")
        .into_inner()
        .transfer
        .expect("transfer");
    let t = cast
        .chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "值班所长审批：同意移送驻所调解室".into(),
            request_id: rid(),
        })
        .await
        .expect("值班所长审批")
        .into_inner()
        .transfer
        .expect("transfer");
    assert_eq!(t.state, TransferState::Approved as i32);
    assert_eq!(t.approvals.len(), 2);
    t
}

/// The room head registers the 驻所调解室 and its mediators: mediator-01 for neighbourhood
/// disputes, and a family-dispute mediator who must not be picked for a noise dispute.
async fn the_mediation_room_is_set_up(cast: &mut Cast) {
    cast.room_head
        .create_organization(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "八一路派出所驻所人民调解室".into(),
                kind: OrganizationKind::StationMediationRoom as i32,
                region_code: "210203".into(),
                agency: format!("agencies/{ROOM}"),
                ..Default::default()
            }),
            organization_id: "bayilu-room".into(),
            request_id: rid(),
        })
        .await
        .expect("登记调解组织");
    for (id, name, specialty) in [
        ("mediator-01", "刘调解员", MediatorSpecialty::Neighbourhood),
        ("mediator-02", "赵调解员", MediatorSpecialty::Family),
    ] {
        cast.room_head
            .create_mediator(CreateMediatorRequest {
                parent: ORG.into(),
                mediator: Some(Mediator {
                    display_name: name.into(),
                    actor_id: id.into(),
                    specialties: vec![specialty as i32],
                    region_code: "210203".into(),
                    max_load: 10,
                    ..Default::default()
                }),
                mediator_id: id.into(),
                request_id: rid(),
            })
            .await
            .expect("登记调解员");
    }
}

/// The room sees the offered case (待受理).
async fn the_room_sees_the_offer(cast: &Cast, case_id: &str) -> MediationCase {
    let room = &cast.mediator;
    let c = eventually("the case offered to the mediation room", || async move {
        // The mediator reads the parties in full (audited): they must reach them.
        room.clone()
            .list_cases(full_view(ListCasesRequest {
                case_id: case_id.into(),
                ..Default::default()
            }))
            .await
            .expect("list cases")
            .into_inner()
            .mediation_cases
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(c.state, MediationCaseState::Offered as i32);
    assert_eq!(c.organization, ORG);
    // The router marks the offer DELIVERED once the room's system has taken it; the room
    // decides on a delivered offer.
    let room_router = &cast.room_router;
    let transfer = c.transfer.as_str();
    eventually("the offer marked delivered", || async move {
        let t = room_router
            .clone()
            .get_transfer(GetTransferRequest {
                name: transfer.into(),
            })
            .await
            .expect("transfer")
            .into_inner()
            .transfer
            .expect("transfer");
        (t.state == TransferState::Delivered as i32).then_some(())
    })
    .await;
    c
}

async fn case(cast: &Cast, name: &str) -> MediationCase {
    cast.mediator
        .clone()
        .get_case(GetCaseRequest { name: name.into() })
        .await
        .expect("get case")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// From the 110 call to a case offered to the room: referral, transfer, offered case.
async fn a_noise_call_reaches_the_room(
    cast: &mut Cast,
    incident: &str,
) -> (Referral, Transfer, MediationCase) {
    let r = the_110_system_pushes(cast, noise_call(incident)).await;
    assert_eq!(r.state, ReferralState::ReadyToTransfer as i32);
    let t = the_transfer_form_is_approved(cast, &r).await;
    let c = the_room_sees_the_offer(cast, &r.case_id).await;
    assert_eq!(c.transfer, t.name);
    (r, t, c)
}

/// 受理.
async fn the_room_accepts(cast: &mut Cast, c: &MediationCase) -> MediationCase {
    let c = cast
        .mediator
        .accept_case(AcceptCaseRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            comment: "属邻里纠纷，予以受理".into(),
            request_id: rid(),
        })
        .await
        .expect("受理")
        .into_inner()
        .mediation_case
        .expect("case");
    assert_eq!(c.state, MediationCaseState::Accepted as i32);
    assert!(!c.case_number.is_empty(), "调解案号 assigned");
    c
}

/// The `Party.party_id` (a UUID assigned on intake) of the case's first (`p1`) or second
/// (`p2`) party.
fn pid(c: &MediationCase, which: &str) -> String {
    let i = if which == "p2" { 1 } else { 0 };
    c.parties
        .get(i)
        .map(|p| p.party_id.clone())
        .unwrap_or_default()
}

/// One party's decision on mediation (人民调解法 Art 17).
async fn the_party_says(
    cast: &mut Cast,
    c: &MediationCase,
    party_id: &str,
    decision: ConsentDecision,
    note: &str,
) -> MediationCase {
    cast.mediator
        .record_consent(RecordConsentRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            party_id: pid(c, party_id),
            decision: decision as i32,
            method: ConsentMethod::Written as i32,
            note: note.into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("当事人意愿")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// Both parties consent and a neighbourhood mediator is matched automatically (调解中).
async fn both_consent_and_a_mediator_is_assigned(
    cast: &mut Cast,
    c: &MediationCase,
) -> MediationCase {
    let ids: Vec<String> = c.parties.iter().map(|p| p.party_id.clone()).collect();
    assert_eq!(ids.len(), 2);
    assert!(
        ids.iter().all(|i| uuid::Uuid::parse_str(i).is_ok()),
        "party ids are UUIDs: {ids:?}"
    );
    let c = the_party_says(cast, c, "p1", ConsentDecision::Consented, "同意调解").await;
    let c = the_party_says(cast, &c, "p2", ConsentDecision::Consented, "同意调解").await;
    assert_eq!(
        c.state,
        MediationCaseState::Accepted as i32,
        "no mediator yet"
    );
    let c = cast
        .mediator
        .assign_mediator(AssignMediatorRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            assignee: Some(assign_mediator_request::Assignee::Automatic(
                AutomaticAssignment::default(),
            )),
            comment: "按邻里纠纷专长指派".into(),
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("指派调解员")
        .into_inner()
        .mediation_case
        .expect("case");
    assert_eq!(c.state, MediationCaseState::InMediation as i32);
    let a = c.assignment.clone().expect("assignment");
    assert_eq!(a.mediator, MEDIATOR, "the neighbourhood mediator");
    assert_eq!(a.method, AssignmentMethod::Automatic as i32);
    c
}

/// A mediation session in the room (调解记录, 人民调解法 Art 27).
async fn a_session_is_held(cast: &mut Cast, c: &MediationCase, summary: &str) -> MediationCase {
    let start = now() - 1_800;
    cast.mediator
        .record_session(RecordSessionRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            session: Some(MediationSession {
                start_time: Some(ts(start)),
                end_time: Some(ts(start + 1_500)),
                mode: SessionMode::InPerson as i32,
                place: "八一路派出所驻所调解室".into(),
                attendee_party_ids: vec![pid(c, "p1"), pid(c, "p2")],
                other_attendees: vec!["社区民警 officer-01".into()],
                mediator: MEDIATOR.into(),
                summary: summary.into(),
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await
        .expect("调解记录")
        .into_inner()
        .mediation_case
        .expect("case")
}

/// The Art 29 agreement is drafted and signed by both parties, the mediator and the committee
/// seal (协议生效), and the mediation ends with it: feedback `agreement_reached`.
async fn an_agreement_is_signed_and_the_mediation_ends(
    cast: &mut Cast,
    c: &MediationCase,
) -> MediationCase {
    // The agreement records the parties' basic information (人民调解法 Art 29): the mediator
    // reads them in full (answers are masked).
    let parties = cast
        .mediator
        .get_case(full_view(GetCaseRequest {
            name: c.name.clone(),
        }))
        .await
        .expect("案件（完整信息）")
        .into_inner()
        .mediation_case
        .expect("case")
        .parties;
    let c = cast
        .mediator
        .draft_agreement(DraftAgreementRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            agreement: Some(Agreement {
                parties,
                facts_and_responsibilities: "李某夜间在家中播放音乐、拖动家具，影响楼下张某休息；\
                                             李某负主要责任"
                    .into(),
                terms: vec![AgreementTerm {
                    description: "李某每日22时至次日7时不再进行产生噪音的活动，并向张某赔礼道歉"
                        .into(),
                    obligor_party_ids: vec![pid(c, "p2")],
                    obligee_party_ids: vec![pid(c, "p1")],
                    ..Default::default()
                }],
                performance_manner: "自协议生效之日起即时履行".into(),
                performance_deadline: Some(ts(now() + 30 * 86_400)),
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await
        .expect("制作调解协议书")
        .into_inner()
        .mediation_case
        .expect("case");
    assert_eq!(
        c.state,
        MediationCaseState::AgreementPendingSignature as i32
    );
    let signatures = [
        (
            SignerKind::Party,
            "p1",
            "",
            "张某",
            SignatureMethod::Handwritten,
        ),
        (
            SignerKind::Party,
            "p2",
            "",
            "李某",
            SignatureMethod::Fingerprint,
        ),
        (
            SignerKind::Mediator,
            "",
            MEDIATOR,
            "刘调解员",
            SignatureMethod::Handwritten,
        ),
        (
            SignerKind::CommitteeSeal,
            "",
            "",
            "八一路派出所驻所人民调解室",
            SignatureMethod::Seal,
        ),
    ];
    let mut c = c;
    for (kind, party, mediator, signer, method) in signatures {
        assert!(!c.agreement.as_ref().expect("agreement").effective);
        c = cast
            .mediator
            .sign_agreement(SignAgreementRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                signature: Some(Signature {
                    signer_kind: kind as i32,
                    party_id: if party.is_empty() {
                        String::new()
                    } else {
                        pid(&c, party)
                    },
                    mediator: mediator.into(),
                    signer_name: signer.into(),
                    method: method as i32,
                    sign_time: Some(ts(now())),
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await
            .expect("签名盖章")
            .into_inner()
            .mediation_case
            .expect("case");
    }
    let a = c.agreement.clone().expect("agreement");
    assert!(
        a.effective,
        "every party, the mediator and the seal: 协议生效"
    );
    assert_eq!(a.signatures.len(), 4);
    let c = cast
        .mediator
        .end_mediation(EndMediationRequest {
            name: c.name.clone(),
            etag: c.etag.clone(),
            reason: EndReason::Agreement as i32,
            request_id: rid(),
            ..Default::default()
        })
        .await
        .expect("调解终结")
        .into_inner()
        .mediation_case
        .expect("case");
    assert_eq!(c.state, MediationCaseState::Ended as i32);
    assert_eq!(
        c.termination.as_ref().expect("termination").outcome_code,
        "agreement_reached"
    );
    c
}

/// Calls `act` with the case's current etag; when the case changed in between (ABORTED), reads
/// it again and retries, as the error asks.
async fn with_current_etag<T, F, Fut>(cast: &Cast, name: &str, mut act: F) -> T
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    for _ in 0..5 {
        let etag = case(cast, name).await.etag;
        match act(etag).await {
            Err(e) if e.code() == Code::Aborted => continue,
            r => return r.expect("room action").into_inner(),
        }
    }
    panic!("the case kept changing under the room");
}

async fn referral_file(c: &Police, name: &str) -> ReferralFile {
    c.clone()
        .get_referral_file(GetReferralFileRequest { name: name.into() })
        .await
        .expect("referral file")
        .into_inner()
        .referral_file
        .expect("file")
}

fn event_types(file: &ReferralFile) -> Vec<TransferEventType> {
    file.events
        .iter()
        .filter_map(|e| TransferEventType::try_from(e.event_type).ok())
        .collect()
}

suite_test!(
    a_neighbourhood_noise_dispute_from_110_is_mediated_and_fed_back,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;

        // 110 接警: the dispatch system pushes the call; screening finds a civil dispute.
        let r = the_110_system_pushes(&mut cast, noise_call("J2102032026112200001")).await;
        let screening = r.screening.clone().expect("研判");
        assert_eq!(screening.result, ScreeningResult::CivilDispute as i32);
        assert!(!screening.overridden);
        assert_eq!(r.state, ReferralState::ReadyToTransfer as i32);
        // The station handles it; the command centre (creator) sees it too.
        assert_eq!(referral(&cast.officer, &r.name).await.case_id, r.case_id);

        // 移送单 → 指挥室审核 → 值班所长审批: the case goes to the 驻所调解室.
        let t = the_transfer_form_is_approved(&mut cast, &r).await;
        assert_eq!(
            t.case_snapshot.as_ref().expect("snapshot").case_id,
            r.case_id
        );
        let offered = the_room_sees_the_offer(&cast, &r.case_id).await;
        assert_eq!(offered.transfer, t.name);
        assert_eq!(offered.parties.len(), 2);
        assert_eq!(
            offered.parties[0].id_number,
            resident_id("210203", "19750312", "031"),
            "the mediator must be able to identify the parties (人民调解法 Art 29)"
        );
        assert!(
            offered
                .evidence
                .iter()
                .any(|e| e.display_name == "执法记录仪视频"),
            "the evidence travels with the case"
        );

        // 受理: the referral shows the case as transferred and being mediated.
        let c = the_room_accepts(&mut cast, &offered).await;
        let seen = referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::Transferred,
            TransferState::InProgress,
        )
        .await;
        assert!(
            seen.feedback
                .as_ref()
                .and_then(|f| f.due_time.as_ref())
                .is_some(),
            "反馈期限 runs"
        );

        // Both parties consent, a neighbourhood mediator is matched, a session is held.
        let c = both_consent_and_a_mediator_is_assigned(&mut cast, &c).await;
        let c = a_session_is_held(
            &mut cast,
            &c,
            "双方陈述事实，经释法说理，李某承认夜间噪音影响邻居，双方同意协商解决",
        )
        .await;
        assert_eq!(c.sessions.len(), 1);

        // 调解协议书 signed and sealed → EndMediation AGREEMENT → feedback agreement_reached.
        let c = an_agreement_is_signed_and_the_mediation_ends(&mut cast, &c).await;

        // The station and the command centre both see the feedback (反馈结果).
        for who in [&cast.officer, &cast.dispatch] {
            let fb = referral_reaches(
                who,
                &r.name,
                ReferralState::FeedbackReceived,
                TransferState::FeedbackSubmitted,
            )
            .await
            .feedback
            .expect("feedback");
            assert_eq!(fb.outcome_code, "agreement_reached");
            assert!(fb.received_time.is_some());
            assert!(fb.reported_time.is_none(), "not yet reported to 指挥室");
        }

        // 反馈指挥室: the station reports the result and the referral is closed.
        let now_seen = referral(&cast.officer, &r.name).await;
        let closed = cast
            .officer
            .acknowledge_feedback(AcknowledgeFeedbackRequest {
                name: r.name.clone(),
                etag: now_seen.etag.clone(),
                comment: "调解成功，已反馈指挥室".into(),
                request_id: rid(),
            })
            .await
            .expect("反馈指挥室")
            .into_inner()
            .referral
            .expect("referral");
        assert_eq!(closed.state, ReferralState::Closed as i32);
        assert!(
            closed
                .feedback
                .as_ref()
                .and_then(|f| f.reported_time.as_ref())
                .is_some()
        );
        let transfer = cast
            .chief
            .clone()
            .get_transfer(GetTransferRequest {
                name: t.name.clone(),
            })
            .await
            .expect("transfer")
            .into_inner()
            .transfer
            .expect("transfer");
        assert_eq!(transfer.state, TransferState::Closed as i32);

        // 回访: the agreement was performed fully and both parties are satisfied (满意). The
        // router's messages (the feedback echoed back, the station's acknowledgement) update
        // the case too, so the room works on the case as it currently is.
        let f = with_current_etag(&cast, &c.name, |etag| {
            let mut room = cast.mediator.clone();
            let name = c.name.clone();
            async move {
                room.schedule_follow_up(ScheduleFollowUpRequest {
                    name,
                    etag,
                    scheduled_time: Some(ts(now() + 7 * 86_400)),
                    plan_note: "一周后上门回访履行情况".into(),
                    request_id: rid(),
                    ..Default::default()
                })
                .await
            }
        })
        .await
        .follow_up
        .expect("安排回访");
        assert_eq!(f.assignee, MEDIATOR);
        let f = with_current_etag(&cast, &c.name, |etag| {
            let mut room = cast.mediator.clone();
            let name = c.name.clone();
            let follow_up_id = f.follow_up_id.clone();
            async move {
                room.record_follow_up(RecordFollowUpRequest {
                    name,
                    etag,
                    follow_up_id,
                    method: FollowUpMethod::Visit as i32,
                    performance: PerformanceStatus::Full as i32,
                    satisfaction: Satisfaction::Satisfied as i32,
                    result_notes: "夜间再无噪音，双方关系缓和，均表示满意".into(),
                    visit_time: Some(ts(now())),
                    request_id: rid(),
                })
                .await
            }
        })
        .await
        .follow_up
        .expect("回访记录");
        assert_eq!(f.state, FollowUpState::Done as i32);

        // 一案一卷, police side: the 移送单 and the router's events through the feedback.
        let officer = &cast.officer;
        let name = r.name.as_str();
        let file = eventually(
            "the referral file shows the acknowledgement",
            || async move {
                let f = referral_file(officer, name).await;
                event_types(&f)
                    .contains(&TransferEventType::FeedbackAcknowledged)
                    .then_some(f)
            },
        )
        .await;
        assert!(
            file.documents.iter().any(|d| d.display_name == "移送单"),
            "documents: {:?}",
            file.documents
                .iter()
                .map(|d| &d.display_name)
                .collect::<Vec<_>>()
        );
        let types = event_types(&file);
        for expected in [
            TransferEventType::Created,
            TransferEventType::Submitted,
            TransferEventType::StepApproved,
            TransferEventType::Approved,
            TransferEventType::Accepted,
            TransferEventType::FeedbackSubmitted,
            TransferEventType::FeedbackAcknowledged,
        ] {
            assert!(
                types.contains(&expected),
                "file lacks {expected:?}: {types:?}"
            );
        }
        let seqs: Vec<u64> = file.events.iter().map(|e| e.sequence).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
        let fb = file
            .events
            .iter()
            .find(|e| e.event_type == TransferEventType::FeedbackSubmitted as i32)
            .expect("feedback event");
        assert_eq!(fb.reason_code, "agreement_reached");
        assert_eq!(
            file.referral.expect("referral").state,
            ReferralState::Closed as i32
        );

        // 一案一卷, mediation side: registration, consents, session, agreement, follow-up.
        let case_file = cast
            .mediator
            .get_case_file(GetCaseFileRequest {
                name: c.name.clone(),
            })
            .await
            .expect("卷宗")
            .into_inner()
            .case_file
            .expect("file");
        let kinds: Vec<i32> = case_file.entries.iter().map(|e| e.kind).collect();
        for k in [
            CaseFileEntryKind::TransferDocument,
            CaseFileEntryKind::Registration,
            CaseFileEntryKind::Consent,
            CaseFileEntryKind::Assignment,
            CaseFileEntryKind::SessionRecord,
            CaseFileEntryKind::Agreement,
            CaseFileEntryKind::Termination,
            CaseFileEntryKind::FollowUp,
        ] {
            assert!(kinds.contains(&(k as i32)), "case file lacks {k:?}");
        }
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == CaseFileEntryKind::Consent as i32)
                .count(),
            2,
            "one consent record per party"
        );
        assert!(
            case_file
                .transfer_events
                .iter()
                .any(|e| e.event_type == TransferEventType::FeedbackSubmitted as i32)
        );
    }
);

/// The route of the 西岗区 practice with both approval steps at the station itself, so that one
/// officer holding both roles at one agency could try to approve both (test-only route).
fn two_step_station_route() -> (String, String) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/routes/police-to-station-mediation.v1.toml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("route file: {e}"));
    let renamed = text
        .replace(
            "id = \"police-to-station-mediation\"",
            "id = \"two-step-station\"",
        )
        .replace(
            "approver_scope = \"parent_agency\"",
            "approver_scope = \"sending_agency\"",
        );
    assert!(renamed.contains("id = \"two-step-station\""));
    assert!(
        !renamed.contains("parent_agency\""),
        "both steps at the station"
    );
    ("two-step-station.v1.toml".into(), renamed)
}

/// 指挥室审核 and 值班所长审批 are two checks by two people; one officer who holds both roles
/// may not give both.
///
/// On the real route the first step is approved at the command centre (the station's parent
/// agency) and the second at the station. The router's `SAME_APPROVER` check compares the
/// approver's agency AND actor id, so "officer-02 at xigang-110" and "officer-02 at the
/// station" count as two people: the refusal cannot be shown on that route. This scenario
/// therefore uses a test-only copy of the route with both steps at the sending station, where
/// one identity (agency + actor) holds both roles.
async fn the_same_officer_cannot_both_review_and_approve(suite: std::sync::Arc<TestSuite>) {
    let mut cast = Cast::of(&suite);
    let r = the_110_system_pushes(&mut cast, noise_call("J2102032026112200002")).await;
    let drafted = cast
        .officer
        .draft_transfer(DraftTransferRequest {
            name: r.name.clone(),
            etag: r.etag.clone(),
            to_agency: format!("agencies/{ROOM}"),
            route: "routes/two-step-station".into(),
            note: "移送驻所调解室".into(),
            submit: true,
            request_id: rid(),
        })
        .await
        .expect("移送单 on the two-step route")
        .into_inner();
    let t = drafted.transfer.expect("transfer");
    assert_eq!(t.state, TransferState::AwaitingApproval as i32);

    let mut both = router(
        &suite,
        STATION,
        "officer-02",
        &["command_room_reviewer", "duty_chief"],
    );
    let t = both
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "审核通过".into(),
            request_id: rid(),
        })
        .await
        .expect("the first step")
        .into_inner()
        .transfer
        .expect("transfer");
    let e = both
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: rid(),
        })
        .await
        .expect_err("the same officer approves again");
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason_of(&e).as_deref(), Some("SAME_APPROVER"));

    // The duty chief, another person, can give the second approval.
    let t = cast
        .chief
        .approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "值班所长审批：同意移送".into(),
            request_id: rid(),
        })
        .await
        .expect("值班所长审批")
        .into_inner()
        .transfer
        .expect("transfer");
    assert_eq!(t.state, TransferState::Approved as i32);
    let approvers: Vec<String> = t
        .approvals
        .iter()
        .filter_map(|a| a.approver.as_ref().map(|p| p.actor_id.clone()))
        .collect();
    assert_eq!(approvers, ["officer-02", "duty-chief-01"]);
}

mod the_same_officer_cannot_both_review_and_approve {
    use super::*;

    #[test]
    fn sqlite() {
        run_with_routes(Db::Sqlite, vec![two_step_station_route()], |s| {
            super::the_same_officer_cannot_both_review_and_approve(s)
        });
    }

    #[test]
    fn postgres() {
        run_with_routes(Db::Postgres, vec![two_step_station_route()], |s| {
            super::the_same_officer_cannot_both_review_and_approve(s)
        });
    }
}

suite_test!(
    the_mediation_room_declines_and_the_referral_shows_it,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;
        let (r, _, c) = a_noise_call_reaches_the_room(&mut cast, "J2102032026112200003").await;
        let c = cast
            .room_head
            .decline_case(DeclineCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                reason_code: "outside_jurisdiction".into(),
                reason: "纠纷发生地不属于本调解室受理范围".into(),
                request_id: rid(),
            })
            .await
            .expect("不予受理")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(c.state, MediationCaseState::Declined as i32);

        // The case is back with the police to decide (已退回).
        referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::Returned,
            TransferState::Declined,
        )
        .await;
        let file = referral_file(&cast.officer, &r.name).await;
        let declined = file
            .events
            .iter()
            .find(|e| e.event_type == TransferEventType::Declined as i32)
            .expect("the decline is in the file");
        assert_eq!(declined.reason_code, "outside_jurisdiction");
        assert_eq!(declined.to_state, TransferState::Declined as i32);
    }
);

suite_test!(
    insufficient_evidence_is_investigated_and_mediation_resumes,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;
        let (r, _, c) = a_noise_call_reaches_the_room(&mut cast, "J2102032026112200004").await;
        let c = the_room_accepts(&mut cast, &c).await;

        // 证据不足: the room asks the station for supplementary investigation; the mediation
        // clock stops meanwhile.
        let c = cast
            .mediator
            .request_investigation(RequestInvestigationRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                questions: "李某否认夜间噪音，请调取楼道监控并询问同楼层住户".into(),
                requested_due_time: Some(ts(now() + 3 * 86_400)),
                pause_clock: true,
                request_id: rid(),
            })
            .await
            .expect("补充调查取证")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(c.investigations.len(), 1);
        assert_eq!(c.investigations[0].state, InvestigationState::Open as i32);
        assert!(c.mediation_clock.as_ref().is_some_and(|k| k.paused));

        // The station sees the task …
        let officer = &cast.officer;
        let parent = r.name.as_str();
        let task = eventually("an open investigation task at the station", || async move {
            officer
                .clone()
                .list_investigation_tasks(ListInvestigationTasksRequest {
                    parent: parent.into(),
                    ..Default::default()
                })
                .await
                .expect("tasks")
                .into_inner()
                .investigation_tasks
                .into_iter()
                .next()
        })
        .await;
        assert_eq!(task.state, InvestigationState::Open as i32);
        assert_eq!(task.investigation, c.investigations[0].investigation);
        assert!(task.questions.contains("楼道监控"));

        // … and answers it with evidence.
        let answered = cast
            .officer
            .answer_investigation(AnswerInvestigationRequest {
                name: task.name.clone(),
                etag: task.etag.clone(),
                answer: "已调取楼道监控并询问同楼层住户，证实李某家中连续多日23时后有噪音".into(),
                evidence: vec![EvidenceRef {
                    display_name: "楼道监控截图及询问笔录".into(),
                    media_type: "application/pdf".into(),
                    uri: "evidence://xigang-bayilu-station/bczc/0001".into(),
                    ..Default::default()
                }],
                request_id: rid(),
            })
            .await
            .expect("答复补充调查")
            .into_inner()
            .investigation_task
            .expect("task");
        assert_eq!(answered.state, InvestigationState::Answered as i32);

        // The room's case shows the answer and the clock runs again.
        let room = &cast;
        let case_name = c.name.as_str();
        let c = eventually("the answer reaches the mediation room", || async move {
            let c = case(room, case_name).await;
            (c.investigations[0].state == InvestigationState::Answered as i32).then_some(c)
        })
        .await;
        assert!(c.investigations[0].answer.contains("楼道监控"));
        assert!(
            c.evidence
                .iter()
                .any(|e| e.display_name == "楼道监控截图及询问笔录")
        );
        assert!(c.mediation_clock.as_ref().is_some_and(|k| !k.paused));

        // Mediation continues to an agreement.
        let c = both_consent_and_a_mediator_is_assigned(&mut cast, &c).await;
        let c = a_session_is_held(&mut cast, &c, "出示监控截图后李某承认噪音，双方达成一致").await;
        an_agreement_is_signed_and_the_mediation_ends(&mut cast, &c).await;
        let fb = referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::FeedbackReceived,
            TransferState::FeedbackSubmitted,
        )
        .await
        .feedback
        .expect("feedback");
        assert_eq!(fb.outcome_code, "agreement_reached");
        let file = referral_file(&cast.officer, &r.name).await;
        assert_eq!(file.investigation_tasks.len(), 1);
        assert_eq!(
            file.investigation_tasks[0].state,
            InvestigationState::Answered as i32
        );
    }
);

suite_test!(
    a_dispute_turning_threatening_is_escalated_to_the_police,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;
        let (r, _, c) = a_noise_call_reaches_the_room(&mut cast, "J2102032026112200005").await;
        let c = the_room_accepts(&mut cast, &c).await;
        let c = both_consent_and_a_mediator_is_assigned(&mut cast, &c).await;
        let c = a_session_is_held(&mut cast, &c, "调解中李某情绪激动，扬言报复张某").await;

        // 人民调解法 Art 25: a dispute that may lead to a public-security or criminal case is
        // reported to the police at once.
        let c = cast
            .mediator
            .escalate_case(EscalateCaseRequest {
                name: c.name.clone(),
                etag: c.etag.clone(),
                reason_code: "risk_of_escalation".into(),
                reason: "李某扬言报复，有激化可能，已稳定双方情绪并报告派出所".into(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect("上报")
            .into_inner()
            .mediation_case
            .expect("case");
        assert_eq!(c.state, MediationCaseState::Escalated as i32);
        assert_eq!(
            c.escalation.expect("escalation").to_agency,
            format!("agencies/{STATION}")
        );
        referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::Returned,
            TransferState::Escalated,
        )
        .await;
        let file = referral_file(&cast.officer, &r.name).await;
        let escalated = file
            .events
            .iter()
            .find(|e| e.event_type == TransferEventType::Escalated as i32)
            .expect("the escalation is in the file");
        assert_eq!(escalated.reason_code, "risk_of_escalation");
    }
);

suite_test!(
    one_party_refuses_mediation_and_the_police_are_told,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;
        let (r, _, c) = a_noise_call_reaches_the_room(&mut cast, "J2102032026112200006").await;
        let c = the_room_accepts(&mut cast, &c).await;
        let c = the_party_says(&mut cast, &c, "p1", ConsentDecision::Consented, "同意调解").await;
        // 人民调解法 Art 17: one party expressly refuses; the mediation may not go on.
        let c = the_party_says(
            &mut cast,
            &c,
            "p2",
            ConsentDecision::Refused,
            "李某明确表示不同意调解，要求公安机关处理",
        )
        .await;
        assert_eq!(c.state, MediationCaseState::ConsentRefused as i32);

        let fb = referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::FeedbackReceived,
            TransferState::FeedbackSubmitted,
        )
        .await
        .feedback
        .expect("feedback");
        assert_eq!(fb.outcome_code, "party_refused");
        let fb = referral(&cast.dispatch, &r.name)
            .await
            .feedback
            .expect("the command centre sees it too");
        assert_eq!(fb.outcome_code, "party_refused");
    }
);

suite_test!(
    the_same_110_incident_pushed_twice_gives_one_referral,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        let incident = "J2102032026112200007";
        let call = noise_call(incident);
        let first = the_110_system_pushes(&mut cast, call.clone()).await;
        // The 110 system retries the same push (e.g. after a timeout): the same referral comes
        // back.
        let again = the_110_system_pushes(&mut cast, call).await;
        assert_eq!(again.name, first.name);
        assert_eq!(again.case_id, first.case_id);
        let listed = cast
            .dispatch
            .list_referrals(ListReferralsRequest {
                incident_number: incident.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .referrals;
        assert_eq!(listed.len(), 1);

        // A different call under the same 警情编号 is refused.
        let mut other = noise_call(incident);
        other.summary = "两户因楼道堆放杂物发生争执".into();
        let e = cast
            .dispatch
            .create_referral(CreateReferralRequest {
                referral: Some(other),
                request_id: rid(),
            })
            .await
            .expect_err("警情编号 reused");
        assert_eq!(e.code(), Code::AlreadyExists);
        assert_eq!(reason_of(&e).as_deref(), Some("INCIDENT_NUMBER_REUSED"));
        assert_eq!(
            referral(&cast.officer, &first.name).await.summary,
            first.summary
        );
    }
);

suite_test!(
    a_second_station_cannot_see_or_act_on_the_first_stations_referral,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        let r = the_110_system_pushes(&mut cast, noise_call("J2102032026112200008")).await;
        let mut stranger = police(
            &suite,
            OTHER_STATION,
            "officer-09",
            &["officer", "duty_chief", "command_room_reviewer"],
        );
        let e = stranger
            .get_referral(GetReferralRequest {
                name: r.name.clone(),
            })
            .await
            .expect_err("get");
        assert_eq!(e.code(), Code::NotFound, "get");
        let e = stranger
            .override_screening(OverrideScreeningRequest {
                name: r.name.clone(),
                etag: r.etag.clone(),
                result: ScreeningResult::PublicSecurity as i32,
                reason: "改为治安案件".into(),
                request_id: rid(),
            })
            .await
            .expect_err("override");
        assert_eq!(e.code(), Code::NotFound, "override");
        let e = stranger
            .draft_transfer(DraftTransferRequest {
                name: r.name.clone(),
                etag: r.etag.clone(),
                to_agency: format!("agencies/{ROOM}"),
                submit: true,
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("draft");
        assert_eq!(e.code(), Code::NotFound, "draft");
        let e = stranger
            .get_referral_file(GetReferralFileRequest {
                name: r.name.clone(),
            })
            .await
            .expect_err("file");
        assert_eq!(e.code(), Code::NotFound, "file");
        let e = stranger
            .acknowledge_feedback(AcknowledgeFeedbackRequest {
                name: r.name.clone(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .expect_err("acknowledge");
        assert_eq!(e.code(), Code::NotFound, "acknowledge");
        let listed = stranger
            .list_referrals(ListReferralsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .referrals;
        assert!(listed.is_empty(), "another station's list is empty");

        // Nothing changed for the 八一路 station.
        let still = referral(&cast.officer, &r.name).await;
        assert_eq!(still.etag, r.etag);
        assert_eq!(still.state, ReferralState::ReadyToTransfer as i32);
    }
);

suite_test!(
    invalid_input_is_refused_naming_the_field_and_nothing_is_stored,
    |suite| async move {
        let mut cast = Cast::of(&suite);
        type Spoil = fn(&mut Referral);
        let spoils: [(&str, Spoil, &str); 3] = [
            (
                "J2102032026112200091",
                |r| r.parties[1].id_number = with_wrong_check(&r.parties[1].id_number),
                "referral.parties[1].id_number",
            ),
            (
                "J2102032026112200092",
                |r| r.parties.clear(),
                "referral.parties",
            ),
            (
                "J2102032026112200093",
                |r| {
                    if let Some(l) = r.location.as_mut() {
                        l.region_code = "990000".into();
                    }
                },
                "referral.location.region_code",
            ),
        ];
        for (incident, spoil, field) in spoils {
            let mut call = noise_call(incident);
            spoil(&mut call);
            let e = cast
                .dispatch
                .create_referral(CreateReferralRequest {
                    referral: Some(call),
                    request_id: rid(),
                })
                .await
                .expect_err(field);
            assert_eq!(e.code(), Code::InvalidArgument, "{field}");
            assert_eq!(bad_fields_of(&e), vec![field.to_string()], "{field}");
            assert!(
                !e.message().contains("李某") && !e.message().contains("210204"),
                "no personal information in the error: {field}"
            );
        }
        // All three at once: every field is named.
        let mut call = noise_call("J2102032026112200094");
        call.parties[0].id_number = with_wrong_check(&call.parties[0].id_number);
        if let Some(l) = call.location.as_mut() {
            l.region_code = "990000".into();
        }
        let e = cast
            .dispatch
            .create_referral(CreateReferralRequest {
                referral: Some(call),
                request_id: rid(),
            })
            .await
            .expect_err("two bad fields");
        let mut fields = bad_fields_of(&e);
        fields.sort();
        assert_eq!(
            fields,
            [
                "referral.location.region_code",
                "referral.parties[0].id_number"
            ]
        );

        // Nothing was stored, for the command centre or the station.
        for who in [&mut cast.dispatch, &mut cast.officer] {
            let listed = who
                .list_referrals(ListReferralsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .referrals;
            assert!(listed.is_empty(), "nothing stored");
        }
    }
);

/// The router's outbox: every delivered envelope of the case.
async fn delivered_envelopes(
    suite: &TestSuite,
    case_id: &str,
) -> Vec<fengqiao_proto::inbox::Envelope> {
    use fengqiao_store::sqlx::{self, Row as _};
    use prost::Message as _;
    let store = fengqiao_store::Store::connect(fengqiao_store::StoreConfig::new(
        suite.stores[&fengqiao_testkit::ServiceName::Router].clone(),
    ))
    .await
    .expect("router store");
    let rows = sqlx::query("SELECT payload FROM outbox WHERE status = 'delivered' ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("outbox");
    store.close().await;
    rows.iter()
        .map(|row| {
            let payload: Vec<u8> = row.get("payload");
            let payload =
                fengqiao_store::seal::open("outbox.payload", &payload).expect("sealed payload");
            fengqiao_proto::inbox::Envelope::decode(payload.as_slice()).expect("envelope")
        })
        .filter(|e| e.case_id == case_id)
        .collect()
}

/// The transfer message an envelope carries.
fn message_of(e: &fengqiao_proto::inbox::Envelope) -> fengqiao_proto::router::TransferMessage {
    prost::Message::decode(e.payload.as_slice()).expect("transfer message")
}

/// Waits until the router delivered the copy of `event` to `to` as `side`.
async fn delivered_copy(
    suite: &TestSuite,
    case_id: &str,
    to: &str,
    side: fengqiao_proto::inbox::RecipientSide,
    event: TransferEventType,
) -> fengqiao_proto::inbox::Envelope {
    eventually(&format!("{event:?} delivered to {to}"), || async move {
        delivered_envelopes(suite, case_id)
            .await
            .into_iter()
            .find(|e| {
                e.to_agency == format!("agencies/{to}")
                    && e.recipient_side == side as i32
                    && message_of(e)
                        .event
                        .is_some_and(|ev| ev.event_type == event as i32)
            })
    })
    .await
}

/// How many inbox rows the service keeps for `message_id` (every write transaction applying a
/// message records it there first).
async fn inbox_rows(
    suite: &TestSuite,
    service: fengqiao_testkit::ServiceName,
    message_id: &str,
) -> i64 {
    use fengqiao_store::sqlx::{self, Row as _};
    let store = fengqiao_store::Store::connect(fengqiao_store::StoreConfig::new(
        suite.stores[&service].clone(),
    ))
    .await
    .expect("store");
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM inbox WHERE message_id = $1")
        .bind(message_id)
        .fetch_one(store.pool())
        .await
        .expect("inbox")
        .get("n");
    store.close().await;
    n
}

/// Delivers `e` to the suite's inbox as the router would, under a fresh message id, and
/// answers that id.
async fn redeliver(suite: &TestSuite, mut e: fengqiao_proto::inbox::Envelope) -> String {
    use fengqiao_proto::inbox::agency_inbox_service_client::AgencyInboxServiceClient;
    e.message_id = uuid::Uuid::now_v7().to_string();
    let id = e.message_id.clone();
    AgencyInboxServiceClient::with_interceptor(
        suite.channel(),
        suite.caller("xigang-justice-bureau", "router", &["router"]),
    )
    .deliver(fengqiao_proto::inbox::DeliverRequest { envelope: Some(e) })
    .await
    .expect("delivered");
    id
}

// A copy of a change an agency's own service made (it recorded the router's answer, and its
// event, in its own transaction) carries nothing new: the receiver answers it from a read and
// opens no write transaction (no inbox row). Checked on the station's copy of SUBMITTED (its
// own DraftTransfer) and the room's copy of ACCEPTED (its own AcceptCase), each delivered once
// more under a fresh message id once everything settled (the router's own first push may race
// the service's commit, and then rightly applies). The same envelope with something new in it
// (an event the history lacks, a newer sequence) is applied in a write transaction as before.
suite_test!(
    copies_of_an_agencys_own_changes_open_no_write_transaction,
    |suite| async move {
        use fengqiao_proto::inbox::RecipientSide;
        use fengqiao_testkit::ServiceName;
        let mut cast = Cast::of(&suite);
        the_mediation_room_is_set_up(&mut cast).await;
        let (r, _, c) = a_noise_call_reaches_the_room(&mut cast, "J2102032026112200091").await;
        let c = the_room_accepts(&mut cast, &c).await;
        referral_reaches(
            &cast.officer,
            &r.name,
            ReferralState::Transferred,
            TransferState::InProgress,
        )
        .await;

        let submitted = delivered_copy(
            &suite,
            &r.case_id,
            STATION,
            RecipientSide::Sender,
            TransferEventType::Submitted,
        )
        .await;
        let id = redeliver(&suite, submitted.clone()).await;
        assert_eq!(
            inbox_rows(&suite, ServiceName::PoliceReferral, &id).await,
            0,
            "the station's copy of its own SUBMITTED opened a write transaction"
        );
        // The history has every event once, its own ones included.
        let file = referral_file(&cast.officer, &r.name).await;
        for t in [
            TransferEventType::Created,
            TransferEventType::Submitted,
            TransferEventType::Accepted,
        ] {
            let n = file
                .events
                .iter()
                .filter(|e| e.event_type == t as i32)
                .count();
            assert_eq!(n, 1, "{t:?} in the referral's history");
        }
        // An event the history lacks is new: applied.
        let mut unknown = submitted.clone();
        let mut msg = message_of(&unknown);
        if let Some(ev) = msg.event.as_mut() {
            ev.event_id = uuid::Uuid::now_v7().to_string();
        }
        unknown.payload = prost::Message::encode_to_vec(&msg);
        let id = redeliver(&suite, unknown).await;
        assert_eq!(
            inbox_rows(&suite, ServiceName::PoliceReferral, &id).await,
            1
        );

        let accepted = delivered_copy(
            &suite,
            &r.case_id,
            ROOM,
            RecipientSide::Receiver,
            TransferEventType::Accepted,
        )
        .await;
        let id = redeliver(&suite, accepted.clone()).await;
        assert_eq!(
            inbox_rows(&suite, ServiceName::Mediation, &id).await,
            0,
            "the room's copy of its own ACCEPTED opened a write transaction"
        );
        assert_eq!(case(&cast, &c.name).await.etag, c.etag, "nothing changed");
        // A newer sequence is new: applied.
        let mut newer = accepted;
        let mut msg = message_of(&newer);
        if let Some(ev) = msg.event.as_mut() {
            ev.sequence += 1_000_000;
        }
        newer.payload = prost::Message::encode_to_vec(&msg);
        let id = redeliver(&suite, newer).await;
        assert_eq!(inbox_rows(&suite, ServiceName::Mediation, &id).await, 1);
    }
);
