//! Entity tags (AIP-154) in one format for every resource of every service: the row version in
//! double quotes, e.g. `"3"`. A client may send the tag with or without the quotes (some HTTP
//! stacks strip them); the server always answers with them.

/// The etag of a row at `version`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Whether a client's `given` etag names `version`. An empty etag means "no check" and is
/// handled by the caller.
pub fn matches(given: &str, version: i64) -> bool {
    let bare = given
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(given);
    bare.parse::<i64>().is_ok_and(|v| v == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_format_out_both_spellings_in() {
        assert_eq!(etag(2), "\"2\"");
        assert!(matches("\"2\"", 2));
        assert!(matches("2", 2));
        assert!(!matches("\"3\"", 2));
        assert!(!matches("\"2", 2));
        assert!(!matches("W/\"2\"", 2));
        assert!(!matches("two", 2));
    }
}
