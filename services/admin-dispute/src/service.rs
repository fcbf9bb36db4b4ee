//! placeholder
#[derive(Clone)]
pub struct AdminDispute;
