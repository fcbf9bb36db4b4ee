//! Validators of a referral's fields, as plain functions. Each returns the violations naming
//! the field; values are never echoed (they are personal information).

use fengqiao_kit::FieldViolation;
use fengqiao_proto::common::{Address, EvidenceRef, IdType, Party};
use fengqiao_proto::policereferral::Referral;

/// GB 11643-1999 weights of the first 17 digits of a resident ID number.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// GB 11643-1999 check characters, indexed by the weighted sum modulo 11.
const ID_CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// The GB 11643-1999 check character of the first 17 digits, or `None` if they are not digits.
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(char::from(ID_CHECK_CHARS[(sum % 11) as usize]))
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

/// Whether `yyyymmdd` is a real calendar date between 1900 and 2099.
pub fn is_real_date(yyyymmdd: &str) -> bool {
    if yyyymmdd.len() != 8 || !yyyymmdd.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        yyyymmdd[..4].parse::<u32>(),
        yyyymmdd[4..6].parse::<u32>(),
        yyyymmdd[6..].parse::<u32>(),
    ) else {
        return false;
    };
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => return false,
    };
    (1900..=2099).contains(&y) && (1..=days).contains(&d)
}

/// Checks an 18-character resident ID number (居民身份证号码, GB 11643-1999): 17 digits, a
/// real birth date in positions 7–14, and the check character (digit or `X`).
pub fn resident_id(field: &str, id: &str) -> Result<(), FieldViolation> {
    if id.len() != 18 || !id.is_ascii() {
        return Err(FieldViolation::new(field, "must be 18 characters"));
    }
    let (first17, check) = id.split_at(17);
    let Some(expected) = resident_id_check_char(first17) else {
        return Err(FieldViolation::new(
            field,
            "first 17 characters must be digits",
        ));
    };
    if !is_real_date(&first17[6..14]) {
        return Err(FieldViolation::new(field, "birth date is not a real date"));
    }
    let given = check.chars().next().map(|c| c.to_ascii_uppercase());
    if given != Some(expected) {
        return Err(FieldViolation::new(
            field,
            "check digit does not match (GB 11643-1999)",
        ));
    }
    Ok(())
}

/// Whether `s` is a mainland mobile number: `1[3-9]` followed by nine digits.
pub fn is_mobile(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

/// Whether `s` is a landline with area code: `0` + 2–3 digits, an optional `-`, 7–8 digits,
/// and an optional `-` extension of 1–6 digits (e.g. `0411-82345678`, `01012345678-123`).
pub fn is_landline(s: &str) -> bool {
    let (main, ext) = match s.match_indices('-').count() {
        0 | 1 => (s, None),
        2 => match s.rsplit_once('-') {
            Some((m, e)) => (m, Some(e)),
            None => return false,
        },
        _ => return false,
    };
    if let Some(e) = ext
        && (e.is_empty() || e.len() > 6 || !e.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    if !main.starts_with('0') {
        return false;
    }
    let split = |area_len: usize| -> bool {
        let digits: String = main.chars().filter(|c| *c != '-').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if let Some((area, local)) = main.split_once('-') {
            return area.len() == area_len
                && local.bytes().all(|b| b.is_ascii_digit())
                && (7..=8).contains(&local.len());
        }
        let local = digits.len().saturating_sub(area_len);
        digits.len() > area_len && (7..=8).contains(&local)
    };
    // Area codes: 3 characters (010, 02x) or 4 characters (0xxx).
    split(3) || split(4)
}

/// Checks a phone number: a mainland mobile number or a landline with area code.
pub fn phone(field: &str, s: &str) -> Result<(), FieldViolation> {
    if is_mobile(s) || is_landline(s) {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be a mainland mobile number (1[3-9] and 9 digits) or a landline with area code",
        ))
    }
}

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

/// Checks an address; `region_code` is required when `required`.
pub fn address(out: &mut Vec<FieldViolation>, field: &str, a: Option<&Address>, required: bool) {
    let Some(a) = a else {
        if required {
            out.push(FieldViolation::new(
                format!("{field}.region_code"),
                "is required",
            ));
        }
        return;
    };
    if a.region_code.is_empty() {
        if required {
            out.push(FieldViolation::new(
                format!("{field}.region_code"),
                "is required",
            ));
        }
    } else if let Err(v) =
        fengqiao_kit::validate::region_code(&format!("{field}.region_code"), &a.region_code)
    {
        out.push(v);
    }
    text(out, &format!("{field}.detail"), &a.detail, false, 500);
    if let Some(g) = &a.location {
        let ok = g.latitude.is_finite()
            && g.longitude.is_finite()
            && (-90.0..=90.0).contains(&g.latitude)
            && (-180.0..=180.0).contains(&g.longitude);
        if !ok {
            out.push(FieldViolation::new(
                format!("{field}.location"),
                "latitude must be within ±90 and longitude within ±180",
            ));
        }
    }
}

/// Checks one party (当事人 or 报警人). `name_required` for parties, not for the caller.
pub fn party(out: &mut Vec<FieldViolation>, field: &str, p: &Party, name_required: bool) {
    text(out, &format!("{field}.name"), &p.name, name_required, 100);
    let id_field = format!("{field}.id_number");
    let id_type = IdType::try_from(p.id_type).unwrap_or(IdType::Unspecified);
    if !p.id_number.is_empty() {
        match id_type {
            IdType::ResidentIdCard => {
                if let Err(v) = resident_id(&id_field, &p.id_number) {
                    out.push(v);
                }
            }
            IdType::Unspecified => out.push(FieldViolation::new(
                format!("{field}.id_type"),
                "is required when id_number is given",
            )),
            _ => {
                if p.id_number.len() > 64 || !p.id_number.bytes().all(|b| b.is_ascii_graphic()) {
                    out.push(FieldViolation::new(
                        id_field,
                        "must be at most 64 printable ASCII characters",
                    ));
                }
            }
        }
    }
    if !p.phone.is_empty()
        && let Err(v) = phone(&format!("{field}.phone"), &p.phone)
    {
        out.push(v);
    }
    if p.address.is_some() {
        address(out, &format!("{field}.address"), p.address.as_ref(), false);
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
