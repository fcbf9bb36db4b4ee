//! One set of validators for party data, used by every service that takes parties: GB 11643
//! resident ID numbers (check digit, birth date), mainland phone numbers, GB/T 2260 region
//! codes (through [`crate::validate::region_code`]) and addresses. Each returns or pushes the
//! violations naming the field; values are never echoed (they are personal information).

use crate::error::FieldViolation;
use fengqiao_proto::common::{Address, IdType, Party};

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
        crate::validate::region_code(&format!("{field}.region_code"), &a.region_code)
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
