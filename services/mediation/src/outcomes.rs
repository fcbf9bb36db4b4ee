//! Feedback outcome and escalation codes from the route of the case's transfer.
//!
//! A mediation ends for one of the reasons of 在线调解规则 Art 25 ([`EndReason`]); the router
//! accepts as feedback only the outcome codes of the route the transfer pinned, and each route
//! names its own (警调对接 `withdrawn`, 委派调解 `settled_and_withdrawn`, …). The router puts
//! the pinned route in the offer (`TransferMessage.route`), the case keeps it
//! (`store::Loaded::route`), and this module maps an end reason to the first of its candidate
//! codes that the route lists. A route listing none of them cannot record that ending: the
//! caller gets FAILED_PRECONDITION and nothing changes.

use fengqiao_kit::FieldViolation;
use fengqiao_kit::Reason;
use fengqiao_proto::common::ReasonCode;
use fengqiao_proto::mediation::EndReason;
use fengqiao_proto::router::Route;

use crate::error::{Error, Result};

/// Candidate outcome codes for each end reason (在线调解规则 Art 25), most specific first.
/// The generic `mediation_failed` (调解不成, 人民调解法 Art 26) closes the list of every failed
/// ending, so a route with fewer codes still records it.
pub fn candidates(reason: EndReason) -> &'static [&'static str] {
    match reason {
        // 人民调解法 Art 28, 29: an agreement signed by the parties and the mediator.
        EndReason::Agreement => &["agreement_reached"],
        EndReason::SettledAndWithdrawn => &["settled_and_withdrawn", "withdrawn"],
        EndReason::Unreachable => &["party_unreachable", "mediation_failed"],
        // 人民调解法 Art 17: one party expressly refuses (also a refused consent).
        EndReason::PartyRefusesToContinue => &["party_refused", "mediation_failed"],
        EndReason::GapTooLarge => &["mediation_failed"],
        EndReason::PeriodExpired => &["period_expired", "mediation_failed"],
        EndReason::PartyRefusesToSign => &["party_refused_to_sign", "mediation_failed"],
        EndReason::Other => &["other_termination", "mediation_failed"],
        EndReason::Unspecified => &[],
    }
}

fn route_label(route: &Route) -> String {
    format!("{} version {}", route.name, route.version)
}

/// The route's outcome for `reason`: the first candidate the route lists. None listed:
/// FAILED_PRECONDITION `NO_ROUTE_OUTCOME`.
pub fn outcome_for(route: &Route, reason: EndReason) -> Result<&ReasonCode> {
    candidates(reason)
        .iter()
        .find_map(|c| route.feedback_outcomes.iter().find(|o| o.code == *c))
        .ok_or_else(|| {
            Error::Refused(
                Reason::NoRouteOutcome,
                format!(
                    "{} has no feedback outcome for ending {} (looked for: {})",
                    route_label(route),
                    reason.as_str_name(),
                    candidates(reason).join(", ")
                ),
            )
        })
}

/// Checks an escalation reason code against the route (人民调解法 Art 25; 特邀调解规定
/// Art 18): a route without escalation reasons refuses escalation (FAILED_PRECONDITION
/// `ESCALATION_NOT_ALLOWED`), a code it does not list is INVALID_ARGUMENT on `reason_code`.
pub fn check_escalation<'a>(route: &'a Route, code: &str) -> Result<&'a ReasonCode> {
    if route.escalation_reasons.is_empty() {
        return Err(Error::Refused(
            Reason::EscalationNotAllowed,
            format!("{} lists no escalation reasons", route_label(route)),
        ));
    }
    route
        .escalation_reasons
        .iter()
        .find(|r| r.code == code)
        .ok_or_else(|| {
            let codes: Vec<&str> = route
                .escalation_reasons
                .iter()
                .map(|r| r.code.as_str())
                .collect();
            Error::Invalid(vec![FieldViolation::new(
                "reason_code",
                format!("must be one of the route's codes: {}", codes.join(", ")),
            )])
        })
}

/// The route a case was offered on; a case stored before routes came with offers has none
/// and cannot report (FAILED_PRECONDITION `ROUTE_UNKNOWN`).
pub fn route_of(route: Option<&Route>) -> Result<&Route> {
    route.ok_or_else(|| {
        Error::Refused(
            Reason::RouteUnknown,
            "the case's offer did not carry its route; its outcome codes are unknown".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[&str]) -> Vec<ReasonCode> {
        codes
            .iter()
            .map(|c| ReasonCode {
                code: (*c).to_string(),
                description: format!("{c} description"),
            })
            .collect()
    }

    /// The codes of every `[[table]]` entry of a shipped route file, in file order.
    fn codes_in(text: &str, table: &str) -> Vec<String> {
        let header = format!("[[{table}]]");
        let mut out = Vec::new();
        let mut inside = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                inside = line == header;
            } else if inside && let Some(v) = line.strip_prefix("code = ") {
                out.push(v.trim_matches('"').to_string());
                inside = false;
            }
        }
        out
    }

    fn shipped(name: &str, version: u32, text: &str) -> Route {
        let outcomes = codes_in(text, "feedback_outcomes");
        let escalations = codes_in(text, "escalation_reasons");
        let as_refs = |v: &[String]| reasons(&v.iter().map(String::as_str).collect::<Vec<_>>());
        Route {
            name: format!("routes/{name}"),
            version,
            feedback_outcomes: as_refs(&outcomes),
            escalation_reasons: as_refs(&escalations),
            ..Default::default()
        }
    }

    /// deploy/routes/police-to-station-mediation.v2.toml, as shipped.
    fn police_route() -> Route {
        let r = shipped(
            "police-to-station-mediation",
            2,
            include_str!("../../../deploy/routes/police-to-station-mediation.v2.toml"),
        );
        assert_eq!(r.feedback_outcomes.len(), 4, "read from the file");
        r
    }

    /// deploy/routes/court-to-invited-mediation.v2.toml, as shipped.
    fn court_route() -> Route {
        let r = shipped(
            "court-to-invited-mediation",
            2,
            include_str!("../../../deploy/routes/court-to-invited-mediation.v2.toml"),
        );
        assert_eq!(r.feedback_outcomes.len(), 8, "read from the file");
        r
    }

    /// Every ending reason but UNSPECIFIED, in the order of the contract (a new one is
    /// included without a change here).
    fn all() -> Vec<EndReason> {
        (1..).map_while(|i| EndReason::try_from(i).ok()).collect()
    }

    fn code(route: &Route, reason: EndReason) -> String {
        outcome_for(route, reason)
            .map(|c| c.code.clone())
            .unwrap_or_else(|e| panic!("{reason:?}: {e}"))
    }

    #[test]
    fn police_route_outcomes() {
        let r = police_route();
        let got: Vec<String> = all().into_iter().map(|x| code(&r, x)).collect();
        assert_eq!(
            got,
            [
                "agreement_reached",
                "withdrawn",
                "mediation_failed",
                "party_refused",
                "mediation_failed",
                "mediation_failed",
                "mediation_failed",
                "mediation_failed",
            ]
        );
        // The description travels with the code.
        let d = outcome_for(&r, EndReason::Agreement).expect("agreement");
        assert_eq!(d.description, "agreement_reached description");
    }

    #[test]
    fn court_route_outcomes() {
        let r = court_route();
        let got: Vec<String> = all().into_iter().map(|x| code(&r, x)).collect();
        assert_eq!(
            got,
            [
                "agreement_reached",
                "settled_and_withdrawn",
                "party_unreachable",
                "party_refused",
                "mediation_failed",
                "period_expired",
                "party_refused_to_sign",
                "other_termination",
            ]
        );
    }

    #[test]
    fn every_code_picked_is_one_the_route_lists() {
        for r in [police_route(), court_route()] {
            for reason in all() {
                let c = code(&r, reason);
                assert!(r.feedback_outcomes.iter().any(|o| o.code == c), "{c}");
            }
        }
    }

    #[test]
    fn a_route_without_a_candidate_refuses() {
        let mut r = court_route();
        r.feedback_outcomes = reasons(&["agreement_reached"]);
        let err = outcome_for(&r, EndReason::Unreachable).expect_err("no candidate");
        assert!(
            matches!(err, Error::Refused(Reason::NoRouteOutcome, ref m) if m.contains("party_unreachable")),
            "{err:?}"
        );
        assert!(outcome_for(&r, EndReason::Unspecified).is_err());
        assert!(matches!(
            route_of(None),
            Err(Error::Refused(Reason::RouteUnknown, _))
        ));
    }

    #[test]
    fn escalation_reasons_come_from_the_route() {
        let court = court_route();
        assert_eq!(
            check_escalation(&court, "suspected_false_mediation")
                .map(|c| c.code.as_str())
                .ok(),
            Some("suspected_false_mediation")
        );
        // The police route's code is not the court route's.
        assert!(matches!(
            check_escalation(&court, "risk_of_escalation"),
            Err(Error::Invalid(ref v)) if v[0].field == "reason_code"
        ));
        assert!(check_escalation(&police_route(), "risk_of_escalation").is_ok());
        let mut none = police_route();
        none.escalation_reasons.clear();
        assert!(matches!(
            check_escalation(&none, "risk_of_escalation"),
            Err(Error::Refused(Reason::EscalationNotAllowed, _))
        ));
    }
}
