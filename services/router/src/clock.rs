//! Deadline clocks (期限): the shared [`fengqiao_clock`] crate, re-exported so the router's
//! modules keep using `crate::clock::…`. The rules (民事诉讼法 Art 85, pauses, extensions,
//! hard caps) are documented there.

pub use fengqiao_clock::*;
