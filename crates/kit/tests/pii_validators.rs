//! The kit's party validators (moved from police-referral, issue #14): GB 11643-1999 resident
//! ID numbers, calendar dates, phone numbers, table-driven and property-tested.

use fengqiao_kit::pii::validate::*;
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
