//! The rules of administrative dispute coordination as data and plain functions, each citing
//! its source. No store, no network.

use chrono::{Datelike, NaiveDate, TimeZone};
use fengqiao_kit::{Error, FieldViolation, Reason};
use fengqiao_proto::admindispute::{ClaimKind, ScopeDecision};
use fengqiao_proto::common::{
    ClockExpiryAction, ClockExtensionRule, ClockRule, ClockUnit, EvidenceRef, ReasonCode,
};

/// The centre's coordinator (行政争议化解中心协调员).
pub const COORDINATOR_ROLE: &str = "coordinator";
/// The organ's liaison (行政机关联络人): signs for the organ, records its correction.
pub const ORGAN_LIAISON_ROLE: &str = "organ_liaison";
/// The reviewing organ's officer (行政复议机构工作人员): seals the 复议调解书, records decisions.
pub const REVIEW_OFFICER_ROLE: &str = "review_officer";
/// The head of the review body (行政复议机构负责人): approves the extension (ARL Art 62).
pub const REVIEW_HEAD_ROLE: &str = "review_head";

/// The article that limits mediation in administrative cases.
pub const SCOPE_ARTICLE: &str = "行政诉讼法第六十条";

/// The review clock's name on the dispute.
pub const REVIEW_CLOCK: &str = "review";
/// The procuratorate's review clock's name on the dispute.
pub const PROCURATORATE_CLOCK: &str = "procuratorate_review";
/// The pause reason of the review clock while mediation suspends it (ARL Art 39(6)).
pub const PAUSE_MEDIATION: &str = "mediation";

/// 行政复议法 Art 62 ¶1: decision within 60 days of acceptance.
pub const REVIEW_DAYS: u32 = 60;
/// 行政复议法 Art 62 ¶1: extension of at most 30 days with the approval of the head of the
/// review body.
pub const REVIEW_EXTENSION_DAYS: u32 = 30;

/// 人民检察院行政诉讼监督规则 (2016) Art 12: the procuratorate examines within 3 months. The
/// 2021 revision's article numbering is not verified, so the length is configuration.
pub const PROCURATORATE_REVIEW_MONTHS: u32 = 3;

/// Whether a claim of this kind may be mediated: administrative compensation (行政赔偿),
/// compensation (补偿) and matters of discretionary power (行政诉讼法 Art 60 ¶1; 行诉解释
/// Art 84). The act's legality is not mediable.
pub fn mediable(kind: ClaimKind) -> bool {
    matches!(
        kind,
        ClaimKind::Compensation | ClaimKind::Indemnification | ClaimKind::Discretion
    )
}

/// The scope decision over every claim (行政诉讼法 Art 60 ¶1: administrative cases are not
/// mediated, except compensation, 补偿 and discretionary power; 行诉解释 Art 84). Mediation
/// is allowed only when every claim is mediable; otherwise the dispute can still be
/// coordinated without an agreement (explanation, correction by the organ, withdrawal).
pub fn scope(claims: &[ClaimKind]) -> ScopeDecision {
    let outside: Vec<usize> = claims
        .iter()
        .enumerate()
        .filter(|(_, k)| !mediable(**k))
        .map(|(i, _)| i)
        .collect();
    if claims.is_empty() || !outside.is_empty() {
        let which: Vec<String> = outside.iter().map(|i| format!("claims[{i}]")).collect();
        ScopeDecision {
            mediation_allowed: false,
            article: SCOPE_ARTICLE.into(),
            explanation: format!(
                "{SCOPE_ARTICLE}: only administrative compensation, compensation and matters of \
                 discretionary power may be mediated ({} not); the dispute may be coordinated \
                 without an agreement (explanation, correction by the organ, withdrawal)",
                which.join(", ")
            ),
        }
    } else {
        ScopeDecision {
            mediation_allowed: true,
            article: SCOPE_ARTICLE.into(),
            explanation: format!(
                "{SCOPE_ARTICLE}: every claim concerns compensation or discretionary power"
            ),
        }
    }
}

/// Refuses mediation outside the scope, naming the article (行政诉讼法 Art 60).
pub fn check_mediable(scope: &ScopeDecision) -> Result<(), Error> {
    if scope.mediation_allowed {
        Ok(())
    } else {
        Err(Error::Refused(
            Reason::OutsideMediationScope,
            scope.explanation.clone(),
        ))
    }
}

/// The 行政复议 review clock: 60 calendar days from acceptance, +30 with the approval of the
/// head of the review body, never beyond 90 (行政复议法 Art 62); paused while mediation
/// suspends the review (Art 39(6); the suspension's time is not counted, Art 39 ¶2); notify
/// only (overdue).
pub fn review_rule() -> ClockRule {
    ClockRule {
        unit: ClockUnit::CalendarDay as i32,
        length: REVIEW_DAYS,
        pausable_reasons: vec![ReasonCode {
            code: PAUSE_MEDIATION.into(),
            description: "调解、和解期间中止审理（行政复议法第三十九条第一款第六项）".into(),
        }],
        extension_rule: ClockExtensionRule::Approver as i32,
        extension_approver_role: REVIEW_HEAD_ROLE.into(),
        max_extension: REVIEW_EXTENSION_DAYS,
        hard_cap: REVIEW_DAYS + REVIEW_EXTENSION_DAYS,
        expiry_action: ClockExpiryAction::NotifyOnly as i32,
        ..ClockRule::default()
    }
}

fn china_date(micros: i64) -> NaiveDate {
    let tz = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    tz.timestamp_micros(micros)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

/// The length in calendar days of `months` calendar months from the day of `start` (China
/// time): 3 months from 15 January are the 90 days to 15 April (2016 rules Art 12, counted
/// as months; 民法典 Art 201: a period in months ends on the corresponding day).
pub fn months_as_days(start: i64, months: u32) -> u32 {
    let from = china_date(start);
    let to = from
        .checked_add_months(chrono::Months::new(months))
        .unwrap_or(from);
    u32::try_from((to - from).num_days()).unwrap_or(0)
}

/// The procuratorate's review clock (人民检察院行政诉讼监督规则 2016 Art 12: 3 months,
/// `months` from configuration), from `start`: calendar days, not extendable here, notify
/// only (the procuratorate's own procedure governs it; the centre sees it run).
pub fn procuratorate_rule(start: i64, months: u32) -> ClockRule {
    ClockRule {
        unit: ClockUnit::CalendarDay as i32,
        length: months_as_days(start, months).max(1),
        extension_rule: ClockExtensionRule::NotExtendable as i32,
        expiry_action: ClockExpiryAction::NotifyOnly as i32,
        ..ClockRule::default()
    }
}

/// The outcome code of `procuratorate-to-coordination` (deploy/routes, v1 `feedback_outcomes`)
/// for a dispute's result: an agreement or a settlement is `agreement_reached` (行政诉讼法
/// Art 60; 行政复议法 Art 73, 74), the organ's correction `administrative_action_corrected`,
/// anything else `not_resolved` (back to the procuratorate's review).
pub fn referral_outcome(result: fengqiao_proto::admindispute::DisputeResult) -> &'static str {
    use fengqiao_proto::admindispute::DisputeResult as D;
    match result {
        D::MediationAgreement | D::SettledWithdrawn => "agreement_reached",
        D::OrganCorrection => "administrative_action_corrected",
        D::Decided | D::NotResolved | D::Unspecified => "not_resolved",
    }
}

/// Collapses whitespace so that the same facts typed twice compare equal.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What the facts digest covers, canonical: the organ, the act's number, the applicants'
/// identities (in any order) and the facts, whitespace collapsed, each part ended by 0x1e.
pub fn facts_material(
    organ: &str,
    act_number: &str,
    applicant_ids: &[&str],
    facts: &str,
) -> Vec<u8> {
    let mut ids: Vec<String> = applicant_ids.iter().map(|s| normalize(s)).collect();
    ids.sort();
    let mut out = Vec::new();
    for part in [
        organ.trim().to_owned(),
        normalize(act_number),
        ids.join("\u{1f}"),
        normalize(facts),
    ] {
        out.extend_from_slice(part.as_bytes());
        out.push(0x1e);
    }
    out
}

/// Seal context of the facts digest.
pub const FACTS_DIGEST: &str = "ad_disputes.facts_digest";

/// The keyed digest (HMAC-SHA256, hex) of an application's facts and reasons, for the rule
/// of 行政复议法 Art 74 (after a settlement and withdrawal the same facts and reasons cannot
/// be brought again) over [`facts_material`]; only the digest is a look-up key, never the
/// facts in plain text. The key is the key file's lookup key
/// ([`fengqiao_store::seal::keyed_hash`]), never stored in the database beside the digests.
pub fn facts_digest(
    organ: &str,
    act_number: &str,
    applicant_ids: &[&str],
    facts: &str,
) -> Result<String, Error> {
    Ok(fengqiao_store::seal::keyed_hash(
        FACTS_DIGEST,
        &facts_material(organ, act_number, applicant_ids, facts),
    )?)
}

/// A document reference must carry a 64-hex SHA-256 content digest.
pub fn check_document(field: &str, doc: Option<&EvidenceRef>) -> Result<(), Error> {
    let ok = doc
        .is_some_and(|d| d.sha256.len() == 64 && d.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(FieldViolation::new(field, "a document with its SHA-256 digest is required").into())
    }
}

/// Calendar days between two times (unix µs).
pub fn days_between(from: i64, to: i64) -> f64 {
    (to - from) as f64 / 86_400_000_000.0
}

/// The year of a time, China time (for messages and tests).
pub fn year_of(micros: i64) -> i32 {
    china_date(micros).year()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32) -> i64 {
        chrono::FixedOffset::east_opt(8 * 3600)
            .expect("tz")
            .with_ymd_and_hms(y, m, d, 9, 0, 0)
            .single()
            .expect("time")
            .timestamp_micros()
    }

    #[test]
    fn only_compensation_indemnification_and_discretion_are_mediable() {
        use ClaimKind as K;
        assert!(mediable(K::Compensation));
        assert!(mediable(K::Indemnification));
        assert!(mediable(K::Discretion));
        assert!(!mediable(K::Legality));
        assert!(!mediable(K::Unspecified));
        let ok = scope(&[K::Compensation, K::Discretion]);
        assert!(ok.mediation_allowed);
        assert_eq!(ok.article, SCOPE_ARTICLE);
        assert!(check_mediable(&ok).is_ok());
        let mixed = scope(&[K::Indemnification, K::Legality]);
        assert!(!mixed.mediation_allowed);
        assert!(
            mixed.explanation.contains("claims[1]"),
            "{}",
            mixed.explanation
        );
        let e = check_mediable(&mixed).expect_err("outside");
        let api = e.api();
        assert_eq!(api.reason, Reason::OutsideMediationScope);
        assert!(
            api.message.contains("行政诉讼法第六十条"),
            "{}",
            api.message
        );
        assert!(!scope(&[]).mediation_allowed);
    }

    #[test]
    fn the_review_rule_is_sixty_days_plus_thirty_by_the_review_head() {
        let r = review_rule();
        assert_eq!((r.length, r.max_extension, r.hard_cap), (60, 30, 90));
        assert_eq!(r.extension_approver_role, REVIEW_HEAD_ROLE);
        assert_eq!(r.pausable_reasons[0].code, PAUSE_MEDIATION);
        fengqiao_clock::validate_rule(&r).expect("valid");
    }

    #[test]
    fn three_months_are_counted_to_the_corresponding_day() {
        assert_eq!(months_as_days(at(2026, 1, 15), 3), 90);
        assert_eq!(months_as_days(at(2026, 3, 1), 3), 92);
        // 30 November + 3 months ends on the last day of February.
        assert_eq!(months_as_days(at(2026, 11, 30), 3), 90);
        let r = procuratorate_rule(at(2026, 3, 1), 3);
        assert_eq!(r.length, 92);
        fengqiao_clock::validate_rule(&r).expect("valid");
        assert_eq!(year_of(at(2026, 3, 1)), 2026);
    }

    #[test]
    fn the_facts_digest_is_keyed_and_ignores_spacing_and_order() {
        fengqiao_store::seal::install_for_tests();
        let m = |ids: &[&str], facts: &str| {
            facts_material("agencies/o", "西住建罚〔2026〕1号", ids, facts)
        };
        let d = |ids: &[&str], facts: &str| {
            facts_digest("agencies/o", "西住建罚〔2026〕1号", ids, facts).expect("a key ring")
        };
        assert_eq!(
            m(&["p1", "p2"], "征收补偿  标准过低"),
            m(&["p2", "p1"], " 征收补偿 标准过低 ")
        );
        let a = d(&["p1", "p2"], "征收补偿  标准过低");
        assert_eq!(a.len(), 64);
        assert_eq!(a, d(&["p2", "p1"], " 征收补偿 标准过低 "));
        assert_ne!(a, d(&["p1"], "征收补偿 标准过低"));
        assert_ne!(a, d(&["p1", "p2"], "另一事实"));
        assert!(!a.contains("征收"));
        // Keyed: not the plain SHA-256 of what it covers, and not another context's hash.
        let plain = ring::digest::digest(
            &ring::digest::SHA256,
            &m(&["p1", "p2"], "征收补偿 标准过低"),
        );
        let plain: String = plain.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_ne!(a, plain);
        let other = fengqiao_store::seal::keyed_hash(
            "other.column",
            &m(&["p1", "p2"], "征收补偿 标准过低"),
        )
        .expect("a key ring");
        assert_ne!(a, other);
    }

    #[test]
    fn results_map_to_the_referral_routes_outcomes() {
        use fengqiao_proto::admindispute::DisputeResult as D;
        let route: toml::Value = toml::from_str(include_str!(
            "../../../deploy/routes/procuratorate-to-coordination.v1.toml"
        ))
        .expect("route");
        let codes: Vec<&str> = route["feedback_outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .filter_map(|o| o["code"].as_str())
            .collect();
        for r in [
            D::Unspecified,
            D::MediationAgreement,
            D::OrganCorrection,
            D::SettledWithdrawn,
            D::Decided,
            D::NotResolved,
        ] {
            assert!(codes.contains(&referral_outcome(r)), "{r:?}");
        }
        assert_eq!(
            referral_outcome(D::OrganCorrection),
            "administrative_action_corrected"
        );
    }

    #[test]
    fn documents_need_a_digest() {
        assert!(check_document("document", None).is_err());
        let mut doc = EvidenceRef {
            sha256: "ab".repeat(32),
            ..EvidenceRef::default()
        };
        assert!(check_document("document", Some(&doc)).is_ok());
        doc.sha256 = "zz".repeat(32);
        assert!(check_document("document", Some(&doc)).is_err());
        assert!((days_between(0, 86_400_000_000) - 1.0).abs() < 1e-9);
    }
}
