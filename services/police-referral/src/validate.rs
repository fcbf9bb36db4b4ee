//! Validators of a referral's fields, as plain functions. Each returns the violations naming
//! the field; values are never echoed (they are personal information).

use fengqiao_kit::FieldViolation;
use fengqiao_proto::common::EvidenceRef;
use fengqiao_proto::policereferral::Referral;

// The party validators are the kit's, shared by every service (issue #14).
pub use fengqiao_kit::pii::validate::*;

fn text(out: &mut Vec<FieldViolation>, field: &str, s: &str, required: bool, max: usize) {
    if required && s.trim().is_empty() {
        out.push(FieldViolation::new(field, "is required"));
    } else if s.chars().count() > max {
        out.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

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
    if r.parties.is_empty() {
        out.push(FieldViolation::new(
            "referral.parties",
            "at least one party is required",
        ));
    }
    if r.parties.len() > 50 {
        out.push(FieldViolation::new(
            "referral.parties",
            "at most 50 parties",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resident_ids() {
        let cases: &[(&str, bool)] = &[
            ("11010519491231002X", true),
            ("11010519491231002x", true),
            ("110105194912310021", false), // wrong check digit
            ("440524188001010014", false), // born before 1900
            ("440524198001010013", true),
            ("11010519490231002X", false), // 31 Feb... (0231)
            ("11010519491331002X", false), // month 13
            ("1101051949123100", false),   // too short
            ("11010519491231002XX", false),
            ("1101051949123100AX", false),
            ("", false),
        ];
        for (id, ok) in cases {
            assert_eq!(resident_id("f", id).is_ok(), *ok, "{id}");
        }
    }

    #[test]
    fn leap_days() {
        assert!(is_real_date("20000229"));
        assert!(!is_real_date("19000229"));
        assert!(is_real_date("19960229"));
        assert!(!is_real_date("19970229"));
        assert!(!is_real_date("19970400"));
    }

    #[test]
    fn phones() {
        let cases: &[(&str, bool)] = &[
            ("13812345678", true),
            ("19912345678", true),
            ("12812345678", false),
            ("1381234567", false),
            ("138123456789", false),
            ("0411-82345678", true),
            ("041182345678", true),
            ("010-12345678", true),
            ("01012345678", true),
            ("0411-8234567", true),
            ("0411-82345678-123", true),
            ("0411-823456", false),
            ("411-82345678", false),
            ("0411-82345678-", false),
            ("0411-8234567a", false),
            ("110", false),
            ("", false),
        ];
        for (p, ok) in cases {
            assert_eq!(phone("f", p).is_ok(), *ok, "{p}");
        }
    }

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
        ];
        for (mutate, field) in cases {
            let mut r = base();
            mutate(&mut r);
            assert_eq!(fields(r), vec![field.to_string()], "{field}");
        }
        assert_eq!(referral(None)[0].field, "referral");
    }

    fn first17() -> impl Strategy<Value = String> {
        (
            110_000u32..660_000,
            1900u32..2030,
            1u32..=12,
            1u32..=28,
            0u32..1000,
        )
            .prop_map(|(region, y, m, d, seq)| format!("{region:06}{y:04}{m:02}{d:02}{seq:03}"))
    }

    proptest! {
        #[test]
        fn valid_ids_are_accepted(f in first17()) {
            let check = resident_id_check_char(&f).expect("digits");
            let id = format!("{f}{check}");
            prop_assert!(resident_id("f", &id).is_ok());
        }

        #[test]
        fn flipped_check_digit_is_refused(f in first17(), k in 1usize..11) {
            let check = resident_id_check_char(&f).expect("digits");
            let chars = b"10X98765432";
            let i = chars.iter().position(|c| char::from(*c) == check).expect("check char");
            let wrong = char::from(chars[(i + k) % 11]);
            let id = format!("{f}{wrong}");
            prop_assert!(resident_id("f", &id).is_err());
        }
    }
}
