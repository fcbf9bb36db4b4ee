//! Free text redacted at intake (issue #14): an ID number or a mobile number typed into a
//! comment, reason, note, session summary, agreement text or investigation question is masked
//! before the request is handled, so it is never stored, sent to the router or echoed. The
//! parties' own fields carry those values, masked by role and sealed. Redaction happens before
//! the idempotency hash, so a retry of the same request still matches.

use fengqiao_kit::pii::redact_in_place as r;
use fengqiao_proto::mediation::*;

/// A request whose free-text fields are redacted in place.
pub trait Redact {
    /// Redacts every free-text field of the request.
    fn redact(&mut self);
}

macro_rules! redact_fields {
    ($($t:ty => $($f:ident),+;)*) => {
        $(impl Redact for $t {
            fn redact(&mut self) {
                $(r(&mut self.$f);)+
            }
        })*
    };
}

redact_fields! {
    AcceptCaseRequest => comment;
    DeclineCaseRequest => reason;
    RecordConsentRequest => note;
    AssignMediatorRequest => comment;
    RecuseMediatorRequest => reason;
    EndMediationRequest => detail;
    EscalateCaseRequest => reason;
    RequestInvestigationRequest => questions;
    ScheduleFollowUpRequest => plan_note;
    RecordFollowUpRequest => result_notes;
}

impl Redact for RecordSessionRequest {
    fn redact(&mut self) {
        if let Some(s) = self.session.as_mut() {
            r(&mut s.place);
            r(&mut s.summary);
            s.other_attendees.iter_mut().for_each(r);
        }
    }
}

impl Redact for DraftAgreementRequest {
    fn redact(&mut self) {
        if let Some(a) = self.agreement.as_mut() {
            r(&mut a.facts_and_responsibilities);
            r(&mut a.performance_manner);
            for t in &mut a.terms {
                r(&mut t.description);
            }
        }
    }
}

/// Redacts the free text of `req` in place.
pub fn redact<T: Redact>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    req.get_mut().redact();
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_of_requests_is_redacted() {
        let id = "11010519491231002X";
        let mut d = DeclineCaseRequest {
            reason: format!("当事人{id}已起诉，电话13812345678"),
            reason_code: "other".into(),
            ..Default::default()
        };
        d.redact();
        assert_eq!(d.reason, "当事人110105**********2X已起诉，电话138****5678");
        assert_eq!(d.reason_code, "other");
        let mut a = DraftAgreementRequest {
            agreement: Some(Agreement {
                facts_and_responsibilities: format!("张某（{id}）与李某噪音纠纷"),
                performance_manner: "联系13812345678当面交付".into(),
                terms: vec![AgreementTerm {
                    description: "张某赔偿李某500元".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        a.redact();
        let a = a.agreement.unwrap_or_default();
        assert_eq!(
            a.facts_and_responsibilities,
            "张某（110105**********2X）与李某噪音纠纷"
        );
        assert_eq!(a.performance_manner, "联系138****5678当面交付");
        assert_eq!(a.terms[0].description, "张某赔偿李某500元");
        let mut s = RecordSessionRequest {
            session: Some(MediationSession {
                summary: "13812345678到场".into(),
                other_attendees: vec!["王某 13812345678".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        s.redact();
        let s = s.session.unwrap_or_default();
        assert_eq!(s.summary, "138****5678到场");
        assert_eq!(s.other_attendees, vec!["王某 138****5678".to_string()]);
    }
}
