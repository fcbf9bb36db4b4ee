//! Transfer statistics (统计分析) as supervisors read them, on SQLite and PostgreSQL: three
//! 警调对接 transfers driven to closure, open feedback and decline, counted by the agencies
//! that took part and invisible to one that did not.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_kit::error::bad_fields_of;
use fengqiao_proto::common::{DisputeCategory, Party, PartyRole};
use fengqiao_proto::router::statistics_service_client::StatisticsServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_proto::router::*;
use fengqiao_scenarios::rid;
use fengqiao_testkit::{TestSuite, suite_test};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Client = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
type Stats = StatisticsServiceClient<InterceptedService<Channel, CallInterceptor>>;

const STATION: &str = "xigang-bayilu-station";
const COMMAND: &str = "xigang-110";
const ROOM: &str = "xigang-bayilu-mediation-room";
const COURT: &str = "xigang-court";
const ROUTE: &str = "routes/police-to-station-mediation";

fn client(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Client {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

fn stats(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Stats {
    StatisticsServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

struct Cast {
    officer: Client,
    reviewer: Client,
    chief: Client,
    room: Client,
}

fn cast(suite: &TestSuite) -> Cast {
    Cast {
        officer: client(suite, STATION, "officer-01", &["officer"]),
        reviewer: client(suite, COMMAND, "reviewer-01", &["command_room_reviewer"]),
        chief: client(suite, STATION, "duty-chief-01", &["duty_chief"]),
        room: client(suite, ROOM, "mediator-01", &["mediator"]),
    }
}

fn noise_dispute() -> Transfer {
    Transfer {
        route: ROUTE.into(),
        to_agency: Some(fengqiao_proto::common::AgencyRef {
            name: format!("agencies/{ROOM}"),
            ..Default::default()
        }),
        case_snapshot: Some(CaseSnapshot {
            category: DisputeCategory::Neighbourhood as i32,
            summary: "楼上住户夜间噪音扰民，双方发生口角，民警到场劝解后移送调解".into(),
            region_code: "210203".into(),
            parties: vec![
                Party {
                    party_id: "p1".into(),
                    role: PartyRole::Applicant as i32,
                    name: "张某".into(),
                    ..Default::default()
                },
                Party {
                    party_id: "p2".into(),
                    role: PartyRole::Respondent as i32,
                    name: "李某".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        note: "110警情，民间纠纷，建议调解".into(),
        ..Default::default()
    }
}

/// The transfer in the answer of a transfer call, or a panic naming the call.
macro_rules! transfer_of {
    ($call:expr, $what:expr) => {
        $call
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", $what))
            .into_inner()
            .transfer
            .unwrap_or_else(|| panic!("{}: no transfer", $what))
    };
}

/// Drives a new transfer to APPROVED: officer creates and submits, the command room
/// reviews step 0, the duty chief approves step 1.
async fn approved(c: &mut Cast) -> Transfer {
    let t = transfer_of!(
        c.officer.create_transfer(CreateTransferRequest {
            transfer: Some(noise_dispute()),
            request_id: rid(),
            submit: false,
        }),
        "create"
    );
    let t = transfer_of!(
        c.officer.submit_transfer(SubmitTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            request_id: rid(),
        }),
        "submit"
    );
    let t = transfer_of!(
        c.reviewer.approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 0,
            comment: "指挥室审核通过".into(),
            request_id: rid(),
        }),
        "review"
    );
    transfer_of!(
        c.chief.approve_transfer(ApproveTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            step_index: 1,
            comment: "同意移送".into(),
            request_id: rid(),
        }),
        "approve"
    )
}

async fn accepted(c: &mut Cast) -> Transfer {
    let t = approved(c).await;
    transfer_of!(
        c.room.accept_transfer(AcceptTransferRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            receiver_reference: "西岗调字〔2026〕001号".into(),
            request_id: rid(),
            ..Default::default()
        }),
        "accept"
    )
}

async fn feedback(c: &mut Cast, t: &Transfer, outcome: &str) -> Transfer {
    transfer_of!(
        c.room.submit_feedback(SubmitFeedbackRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            outcome_code: outcome.into(),
            summary: "调解情况见附件".into(),
            request_id: rid(),
            ..Default::default()
        }),
        "feedback"
    )
}

/// One agreement (closed), one failed mediation (feedback open), one decline.
async fn three_transfers(c: &mut Cast) {
    let t = accepted(c).await;
    let t = feedback(c, &t, "agreement_reached").await;
    let t = transfer_of!(
        c.officer.acknowledge_feedback(AcknowledgeFeedbackRequest {
            name: t.name.clone(),
            etag: t.etag.clone(),
            comment: "已反馈指挥室".into(),
            request_id: rid(),
        }),
        "ack"
    );
    assert_eq!(t.state, TransferState::Closed as i32);

    let t = accepted(c).await;
    let t = feedback(c, &t, "mediation_failed").await;
    assert_eq!(t.state, TransferState::FeedbackSubmitted as i32);

    let t = approved(c).await;
    let t = transfer_of!(
        c.room.decline_transfer(DeclineTransferRequest {
            name: t.name.clone(),
            reason_code: "outside_jurisdiction".into(),
            reason: "不属本调解室辖区".into(),
            request_id: rid(),
            ..Default::default()
        }),
        "decline"
    );
    assert_eq!(t.state, TransferState::Declined as i32);
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// A window of one day either side of now.
fn window() -> GetTransferStatisticsRequest {
    let now = now_secs();
    GetTransferStatisticsRequest {
        start_time: Some(prost_types::Timestamp {
            seconds: now - 86_400,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: now + 86_400,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn rows(s: &mut Stats, req: GetTransferStatisticsRequest) -> Vec<TransferStatisticsRow> {
    let r = s
        .get_transfer_statistics(req)
        .await
        .expect("statistics")
        .into_inner();
    assert!(r.compute_time.is_some());
    r.rows
}

fn outcome(row: &TransferStatisticsRow, code: &str) -> u64 {
    row.outcome_counts
        .iter()
        .find(|o| o.outcome_code == code)
        .map_or(0, |o| o.count)
}

fn micros(d: &Option<prost_types::Duration>) -> i64 {
    let d = d.as_ref().expect("duration");
    d.seconds * 1_000_000 + i64::from(d.nanos) / 1000
}

suite_test!(
    statistics_count_the_loop_for_those_who_took_part,
    |suite| async move {
        let mut c = cast(&suite);
        three_transfers(&mut c).await;

        // The sending station and the receiving room see the same totals.
        for mut s in [
            stats(&suite, STATION, "duty-chief-01", &["duty_chief"]),
            stats(&suite, ROOM, "mediator-01", &["mediator"]),
            stats(&suite, COURT, "analyst-01", &["statistician"]),
        ] {
            let r = rows(&mut s, window()).await;
            assert_eq!(r.len(), 1, "no group-by gives one total row");
            let total = &r[0];
            assert_eq!(total.transfer_count, 3);
            assert_eq!(total.accepted_count, 2);
            assert_eq!(total.declined_count, 1);
            assert_eq!(total.feedback_count, 2);
            assert_eq!(total.closed_count, 1);
            assert_eq!(total.overdue_acceptance_count, 0);
            assert_eq!(total.overdue_feedback_count, 0);
            // Outcome distribution: half the feedback reached agreement (调解成功率).
            assert_eq!(outcome(total, "agreement_reached"), 1);
            assert_eq!(outcome(total, "mediation_failed"), 1);
            let rate = outcome(total, "agreement_reached") as f64 / total.feedback_count as f64;
            assert!((rate - 0.5).abs() < f64::EPSILON);
            // Timings over the two accepted transfers.
            let mean = micros(&total.mean_time_to_acceptance);
            let p50 = micros(&total.p50_time_to_acceptance);
            let p90 = micros(&total.p90_time_to_acceptance);
            assert!(mean >= 0 && p50 <= p90);
            assert!(micros(&total.p50_time_to_feedback) <= micros(&total.p90_time_to_feedback));
            assert!(total.route.is_empty() && total.state == 0 && total.period_start.is_none());
        }

        let mut s = stats(&suite, STATION, "officer-01", &["officer"]);
        // By state.
        let mut by_state = rows(
            &mut s,
            GetTransferStatisticsRequest {
                group_by: vec![StatisticsDimension::State as i32],
                ..window()
            },
        )
        .await;
        by_state.sort_by_key(|r| r.state);
        let got: Vec<(i32, u64)> = by_state
            .iter()
            .map(|r| (r.state, r.transfer_count))
            .collect();
        assert_eq!(
            got,
            vec![
                (TransferState::Declined as i32, 1),
                (TransferState::FeedbackSubmitted as i32, 1),
                (TransferState::Closed as i32, 1),
            ]
        );

        // By route, prefecture and day, together.
        let r = rows(
            &mut s,
            GetTransferStatisticsRequest {
                group_by: vec![
                    StatisticsDimension::Route as i32,
                    StatisticsDimension::Region as i32,
                    StatisticsDimension::Period as i32,
                    StatisticsDimension::ToAgency as i32,
                    StatisticsDimension::Category as i32,
                ],
                region_level: RegionLevel::Prefecture as i32,
                period: StatisticsPeriod::Day as i32,
                ..window()
            },
        )
        .await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].route, ROUTE);
        assert_eq!(r[0].region_code, "2102");
        assert_eq!(r[0].to_agency, format!("agencies/{ROOM}"));
        assert_eq!(r[0].category, DisputeCategory::Neighbourhood as i32);
        assert_eq!(r[0].transfer_count, 3);
        let start = r[0].period_start.as_ref().expect("period start").seconds;
        assert!(start <= now_secs() && now_secs() - start <= 2 * 86_400);

        // Filters that match nothing give an empty total.
        for req in [
            GetTransferStatisticsRequest {
                region_code_prefix: "33".into(),
                ..window()
            },
            GetTransferStatisticsRequest {
                route: "routes/court-to-invited-mediation".into(),
                ..window()
            },
            GetTransferStatisticsRequest {
                from_agency: format!("agencies/{ROOM}"),
                ..window()
            },
        ] {
            let r = rows(&mut s, req).await;
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].transfer_count, 0);
        }
        let r = rows(
            &mut s,
            GetTransferStatisticsRequest {
                region_code_prefix: "2102".into(),
                to_agency: format!("agencies/{ROOM}"),
                ..window()
            },
        )
        .await;
        assert_eq!(r[0].transfer_count, 3);

        // An agency that took no part sees zeros, however it asks.
        let mut court = stats(&suite, COURT, "judge-01", &["judge"]);
        let r = rows(&mut court, window()).await;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].transfer_count, 0);
        assert!(r[0].outcome_counts.is_empty());
        assert!(r[0].mean_time_to_acceptance.is_none());
        let r = rows(
            &mut court,
            GetTransferStatisticsRequest {
                from_agency: format!("agencies/{STATION}"),
                group_by: vec![StatisticsDimension::State as i32],
                ..window()
            },
        )
        .await;
        assert!(r.is_empty());
    }
);

suite_test!(statistics_refuse_malformed_requests, |suite| async move {
    let mut s = stats(&suite, STATION, "officer-01", &["officer"]);
    let e = s
        .get_transfer_statistics(GetTransferStatisticsRequest::default())
        .await
        .expect_err("no window");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_fields_of(&e), vec!["start_time", "end_time"]);

    let w = window();
    let e = s
        .get_transfer_statistics(GetTransferStatisticsRequest {
            end_time: Some(prost_types::Timestamp {
                seconds: now_secs() + 400 * 86_400,
                nanos: 0,
            }),
            ..w.clone()
        })
        .await
        .expect_err("window too long");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(bad_fields_of(&e), vec!["end_time"]);

    let e = s
        .get_transfer_statistics(GetTransferStatisticsRequest {
            end_time: w.start_time,
            ..w.clone()
        })
        .await
        .expect_err("empty window");
    assert_eq!(bad_fields_of(&e), vec!["end_time"]);

    let e = s
        .get_transfer_statistics(GetTransferStatisticsRequest {
            group_by: vec![0],
            time_zone: "Mars/Olympus".into(),
            route: "police-to-station-mediation".into(),
            from_agency: "xigang-court".into(),
            ..w.clone()
        })
        .await
        .expect_err("bad fields");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        bad_fields_of(&e),
        vec!["group_by[0]", "time_zone", "route", "from_agency"]
    );

    // Without a token: UNAUTHENTICATED.
    let mut anon = StatisticsServiceClient::new(suite.channel());
    let e = anon
        .get_transfer_statistics(window())
        .await
        .expect_err("anonymous");
    assert_eq!(e.code(), Code::Unauthenticated);
});
