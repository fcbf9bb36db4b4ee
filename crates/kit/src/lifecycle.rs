//! What every lifecycle transition table shares (the router's transfers, the agencies' cases):
//! the refusal of an action the table does not allow, and the table-driven check that the
//! table allows exactly the listed transitions.

use std::fmt::Debug;

use crate::error::Error;

/// `to` (the state the table gives for `action` in `state`), or WRONG_STATE naming
/// `resource`, its state (the enum value's name) and the action's verb.
pub fn require<S>(
    resource: &str,
    to: Option<S>,
    state: &str,
    action: &'static str,
) -> Result<S, Error> {
    to.ok_or_else(|| Error::WrongState {
        resource: resource.to_owned(),
        state: state.to_owned(),
        action,
    })
}

/// Test support: panics unless `next` allows exactly the transitions of `allowed` (each to its
/// state) over every pair of `states` × `actions`, and refuses every other pair; a row listed
/// twice panics too.
pub fn assert_table<S, A>(
    states: &[S],
    actions: &[A],
    allowed: &[(S, A, S)],
    next: impl Fn(S, A) -> Option<S>,
) where
    S: Copy + PartialEq + Debug,
    A: Copy + PartialEq + Debug,
{
    let mut found = 0;
    for &s in states {
        for &a in actions {
            let expected = allowed
                .iter()
                .find(|(fs, fa, _)| *fs == s && *fa == a)
                .map(|(_, _, to)| *to);
            assert_eq!(next(s, a), expected, "{s:?} + {a:?}");
            if expected.is_some() {
                found += 1;
            }
        }
    }
    assert_eq!(found, allowed.len(), "a row of ALLOWED is listed twice");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum S {
        Open,
        Closed,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum A {
        Close,
        Touch,
    }

    fn next(s: S, a: A) -> Option<S> {
        match (s, a) {
            (S::Open, A::Close) => Some(S::Closed),
            (S::Open, A::Touch) => Some(S::Open),
            _ => None,
        }
    }

    const TABLE: &[(S, A, S)] = &[(S::Open, A::Close, S::Closed), (S::Open, A::Touch, S::Open)];

    #[test]
    fn a_matching_table_passes() {
        assert_table(&[S::Open, S::Closed], &[A::Close, A::Touch], TABLE, next);
    }

    #[test]
    #[should_panic(expected = "Closed + Touch")]
    fn a_transition_the_table_does_not_list_fails() {
        let lax = |s, a| if a == A::Touch { Some(s) } else { next(s, a) };
        assert_table(&[S::Open, S::Closed], &[A::Close, A::Touch], TABLE, lax);
    }

    #[test]
    #[should_panic(expected = "listed twice")]
    fn a_row_listed_twice_fails() {
        let twice = [TABLE[0], TABLE[0], TABLE[1]];
        assert_table(&[S::Open, S::Closed], &[A::Close, A::Touch], &twice, next);
    }

    #[test]
    fn a_refused_action_is_wrong_state_naming_resource_state_and_action() {
        assert_eq!(require("cases/1", Some(3), "OPEN", "close").ok(), Some(3));
        match require::<i32>("cases/1", None, "CLOSED", "close") {
            Err(Error::WrongState {
                resource,
                state,
                action,
            }) => assert_eq!(
                (&*resource, &*state, action),
                ("cases/1", "CLOSED", "close")
            ),
            other => panic!("{other:?}"),
        }
    }
}
