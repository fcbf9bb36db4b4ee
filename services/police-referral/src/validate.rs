//! Validators of a referral's fields, as plain functions. Each returns the violations naming
//! the field; values are never echoed (they are personal information). The party, address,
//! resident ID and phone validators are the kit's ([`fengqiao_kit::pii::validate`]), the one
//! set every service that takes parties uses (issue #14); what is here is the referral's own.

use fengqiao_kit::FieldViolation;
use fengqiao_kit::pii::validate::{address, party};
use fengqiao_kit::pii::{looks_personal, redact_in_place};
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::policereferral::Referral;

use fengqiao_kit::agency::text;
use fengqiao_kit::handler::check;

/// Checks one evidence reference (name, URI, media type, digest shape).
pub fn evidence(out: &mut Vec<FieldViolation>, field: &str, e: &EvidenceRef) {
    text(
        out,
        &format!("{field}.display_name"),
        &e.display_name,
        true,
        200,
    );
    if !e.sha256.is_empty()
        && (e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        out.push(FieldViolation::new(
            format!("{field}.sha256"),
            "must be 64 hexadecimal characters",
        ));
    }
    if e.size_bytes < 0 {
        out.push(FieldViolation::new(
            format!("{field}.size_bytes"),
            "must not be negative",
        ));
    }
}

fn timestamp_ok(t: &prost_types::Timestamp) -> bool {
    (0..1_000_000_000).contains(&t.nanos) && t.seconds > 0 && t.seconds < 4_102_444_800
}

/// Checks a referral taken in by `CreateReferral`; every violation is named.
pub fn referral(r: Option<&Referral>) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    let Some(r) = r else {
        out.push(FieldViolation::new("referral", "is required"));
        return out;
    };
    let n = &r.incident_number;
    if n.trim().is_empty() {
        out.push(FieldViolation::new(
            "referral.incident_number",
            "is required",
        ));
    } else if n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic()) {
        out.push(FieldViolation::new(
            "referral.incident_number",
            "must be at most 64 printable ASCII characters",
        ));
    } else if looks_personal(n) {
        // An incident number is a plain, indexed column: an ID number or a mobile number sent
        // as one would be stored and shown unmasked (PIPL Art 51), so it is refused.
        out.push(FieldViolation::new(
            "referral.incident_number",
            "must not be a resident ID number or a mobile number",
        ));
    }
    match &r.call_time {
        None => out.push(FieldViolation::new("referral.call_time", "is required")),
        Some(t) if !timestamp_ok(t) => out.push(FieldViolation::new(
            "referral.call_time",
            "is not a valid time",
        )),
        Some(_) => {}
    }
    if let Some(d) = &r.dispatch_time {
        let before_call = r
            .call_time
            .as_ref()
            .is_some_and(|c| (d.seconds, d.nanos) < (c.seconds, c.nanos));
        if !timestamp_ok(d) || before_call {
            out.push(FieldViolation::new(
                "referral.dispatch_time",
                "must be a valid time not before call_time",
            ));
        }
    }
    if let Some(c) = &r.caller {
        party(&mut out, "referral.caller", c, false);
    }
    address(&mut out, "referral.location", r.location.as_ref(), true);
    if fengqiao_proto::common::DisputeCategory::try_from(r.category).is_err() {
        out.push(FieldViolation::new("referral.category", "unknown category"));
    }
    text(&mut out, "referral.summary", &r.summary, true, 4000);
    text(
        &mut out,
        "referral.on_scene_handling",
        &r.on_scene_handling,
        false,
        4000,
    );
    let parties = r.parties.len();
    check(
        &mut out,
        parties > 0,
        "referral.parties",
        "at least one party is required",
    );
    check(
        &mut out,
        parties <= 50,
        "referral.parties",
        "at most 50 parties",
    );
    for (i, p) in r.parties.iter().enumerate() {
        party(&mut out, &format!("referral.parties[{i}]"), p, true);
    }
    for (i, e) in r.evidence.iter().enumerate() {
        evidence(&mut out, &format!("referral.evidence[{i}]"), e);
    }
    if r.police_station.is_empty() {
        out.push(FieldViolation::new(
            "referral.police_station",
            "is required",
        ));
    } else if let Err(v) =
        fengqiao_kit::validate::parse_name("referral.police_station", "agencies", &r.police_station)
    {
        out.push(v);
    }
    out
}

/// Redacts the referral's free text (summary, on-scene handling, evidence names): an ID number
/// or a mobile number typed there is masked before it is stored (issue #14; the parties' own
/// fields carry them, masked by role and sealed).
pub fn redact_free_text(r: &mut Referral) {
    redact_in_place(&mut r.summary);
    redact_in_place(&mut r.on_scene_handling);
    for e in &mut r.evidence {
        redact_in_place(&mut e.display_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fengqiao_proto::common::{Address, IdType, Party};

    type Mutation = Box<dyn Fn(&mut Referral)>;

    fn base() -> Referral {
        Referral {
            incident_number: "J2102030000001".into(),
            call_time: Some(prost_types::Timestamp {
                seconds: 1_760_000_000,
                nanos: 0,
            }),
            location: Some(Address {
                region_code: "210203".into(),
                ..Default::default()
            }),
            summary: "噪音纠纷".into(),
            parties: vec![Party {
                name: "张某".into(),
                id_type: IdType::ResidentIdCard as i32,
                id_number: "11010519491231002X".into(),
                phone: "13812345678".into(),
                ..Default::default()
            }],
            police_station: "agencies/xigang-bayilu-station".into(),
            ..Default::default()
        }
    }

    #[test]
    fn referral_violations_are_named() {
        assert!(referral(Some(&base())).is_empty());
        let fields = |r: Referral| -> Vec<String> {
            referral(Some(&r)).into_iter().map(|v| v.field).collect()
        };
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|r| r.incident_number.clear()),
                "referral.incident_number",
            ),
            (Box::new(|r| r.call_time = None), "referral.call_time"),
            (Box::new(|r| r.summary = "  ".into()), "referral.summary"),
            (Box::new(|r| r.parties.clear()), "referral.parties"),
            (
                Box::new(|r| r.police_station = "xigang".into()),
                "referral.police_station",
            ),
            (
                Box::new(|r| r.location = None),
                "referral.location.region_code",
            ),
            (
                Box::new(|r| {
                    if let Some(l) = r.location.as_mut() {
                        l.region_code = "990000".into();
                    }
                }),
                "referral.location.region_code",
            ),
            (
                Box::new(|r| r.parties[0].id_number = "110105194912310021".into()),
                "referral.parties[0].id_number",
            ),
            (
                Box::new(|r| r.parties[0].phone = "12345".into()),
                "referral.parties[0].phone",
            ),
            (
                Box::new(|r| r.parties[0].name.clear()),
                "referral.parties[0].name",
            ),
            (
                Box::new(|r| r.parties[0].id_type = 0),
                "referral.parties[0].id_type",
            ),
            (Box::new(|r| r.category = 999), "referral.category"),
            // An ID number (valid check digit) or a mobile number as the incident number.
            (
                Box::new(|r| r.incident_number = "11010519491231002X".into()),
                "referral.incident_number",
            ),
            (
                Box::new(|r| r.incident_number = "13812345678".into()),
                "referral.incident_number",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = base();
            mutate(&mut r);
            assert_eq!(fields(r), vec![field.to_string()], "{field}");
        }
        assert_eq!(referral(None)[0].field, "referral");
    }

    #[test]
    fn free_text_is_redacted_and_the_rest_kept() {
        let mut r = base();
        r.summary = "报警人身份证11010519491231002X，电话13812345678，称楼上噪音".into();
        r.on_scene_handling = "已联系13812345678".into();
        r.evidence = vec![EvidenceRef {
            display_name: "11010519491231002X 询问笔录".into(),
            ..Default::default()
        }];
        redact_free_text(&mut r);
        assert_eq!(
            r.summary,
            "报警人身份证110105**********2X，电话138****5678，称楼上噪音"
        );
        assert_eq!(r.on_scene_handling, "已联系138****5678");
        assert_eq!(r.evidence[0].display_name, "110105**********2X 询问笔录");
        // A real incident number is left alone.
        assert_eq!(r.incident_number, "J2102030000001");
    }
}
