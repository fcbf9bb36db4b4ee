//! Values for the placeholders of a query built at run time (list filters, cursors), bound in
//! order on either backend.

use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// A value bound to the next `$n` placeholder of a query built at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// An integer (times in microseconds, states, counts).
    Int(i64),
    /// Text.
    Text(String),
}

/// `q` with every value of `binds` bound, in order.
pub fn bind_all<'q>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    binds: &[Bind],
) -> Query<'q, Any, AnyArguments<'q>> {
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(s) => q.bind(s.clone()),
        };
    }
    q
}
