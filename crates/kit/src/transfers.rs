//! What the agency services share about the router's transfers they make and follow: every
//! transfer state (for their exhaustive tables and the tests of those), the case as a transfer
//! carries it and the request that creates one.

use fengqiao_proto::common::{AgencyRef, EvidenceRef, Party};
use fengqiao_proto::router::{CaseSnapshot, CreateTransferRequest, Transfer, TransferState};
use fengqiao_store::sqlx::{self, Row as _, any::AnyRow};

/// Every transfer state, `UNSPECIFIED` first, in the contract's order.
pub const TRANSFER_STATES: [TransferState; 13] = [
    TransferState::Unspecified,
    TransferState::Draft,
    TransferState::AwaitingApproval,
    TransferState::Approved,
    TransferState::Delivered,
    TransferState::Declined,
    TransferState::InProgress,
    TransferState::FeedbackSubmitted,
    TransferState::Closed,
    TransferState::Withdrawn,
    TransferState::Expired,
    TransferState::Returned,
    TransferState::Escalated,
];

/// The router event sequence a record last reflected, from its `event_seq` column (0 for a
/// value that is not one).
pub fn event_seq_of(row: &AnyRow) -> Result<u64, sqlx::Error> {
    Ok(u64::try_from(row.try_get::<i64, _>("event_seq")?).unwrap_or(0))
}

/// A router event sequence as the integer column that stores it.
pub fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The case as a transfer carries it to the receiving agency, `reference` being the sending
/// agency and its own number for the case; without an amount in dispute, a place or a time
/// (a sender that has them sets them) and without a confirmation package (only the
/// committee's 司法确认 applications carry one).
pub fn case_snapshot(
    case_id: &str,
    reference: (&str, &str),
    category: i32,
    summary: &str,
    parties: Vec<Party>,
    evidence: Vec<EvidenceRef>,
    region_code: &str,
) -> CaseSnapshot {
    CaseSnapshot {
        case_id: case_id.to_owned(),
        external_references: [(reference.0.to_owned(), reference.1.to_owned())]
            .into_iter()
            .collect(),
        category,
        summary: summary.to_owned(),
        parties,
        evidence,
        region_code: region_code.to_owned(),
        occurred_at: None,
        location: None,
        amount_in_dispute: None,
        confirmation: None,
    }
}

/// The router request creating a transfer of `snapshot` to `to_agency` on `route`, submitted
/// in the same router change when `submit` (a cut-off call then cannot leave a created but
/// unsubmitted transfer behind); `request_id` as [`crate::agency::router_rid`] derives it.
pub fn create_transfer(
    route: &str,
    to_agency: &str,
    snapshot: CaseSnapshot,
    note: String,
    request_id: String,
    submit: bool,
) -> CreateTransferRequest {
    CreateTransferRequest {
        transfer: Some(Transfer {
            route: route.to_owned(),
            to_agency: Some(AgencyRef {
                name: to_agency.to_owned(),
                ..Default::default()
            }),
            case_snapshot: Some(snapshot),
            note,
            ..Default::default()
        }),
        request_id,
        submit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_state_is_listed_once_in_the_contracts_order() {
        let known: Vec<TransferState> = (0..64)
            .filter_map(|v| TransferState::try_from(v).ok())
            .collect();
        assert_eq!(known, TRANSFER_STATES);
    }

    #[test]
    fn sequences_fit_their_column() {
        assert_eq!(seq_column(7), 7);
        assert_eq!(seq_column(u64::MAX), i64::MAX);
    }

    #[test]
    fn transfers_carry_the_senders_reference_and_are_created_for_the_receiver() {
        let snapshot = case_snapshot(
            "c1",
            ("agencies/police", "110-1"),
            3,
            "邻里纠纷",
            vec![Party::default()],
            Vec::new(),
            "110101",
        );
        assert_eq!(
            snapshot.external_references.get("agencies/police"),
            Some(&"110-1".to_string())
        );
        assert_eq!((snapshot.category, snapshot.parties.len()), (3, 1));
        assert!(snapshot.confirmation.is_none() && snapshot.occurred_at.is_none());
        let create = create_transfer(
            "routes/r",
            "agencies/m",
            snapshot.clone(),
            "note".into(),
            "rid".into(),
            true,
        );
        let t = create.transfer.expect("transfer");
        assert_eq!(t.route, "routes/r");
        assert_eq!(t.to_agency.map(|a| a.name).as_deref(), Some("agencies/m"));
        assert_eq!(t.case_snapshot, Some(snapshot));
        assert_eq!(
            (t.note.as_str(), create.request_id.as_str()),
            ("note", "rid")
        );
        assert!(create.submit);
    }
}
