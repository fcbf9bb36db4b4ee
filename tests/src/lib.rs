//! Cross-service scenario tests live in `tests/*.rs` of this package; this library holds the
//! small helpers they share.

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_testkit::TestSuite;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub mod jingdiao;

/// An agency-service client for `agency`/`actor` with `roles`.
pub fn agencies(
    suite: &TestSuite,
    agency: &str,
    actor: &str,
    roles: &[&str],
) -> AgencyServiceClient<InterceptedService<Channel, CallInterceptor>> {
    AgencyServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The platform administrator of the sample district.
pub fn admin(
    suite: &TestSuite,
) -> AgencyServiceClient<InterceptedService<Channel, CallInterceptor>> {
    agencies(suite, "xigang-justice-bureau", "admin", &["platform_admin"])
}

/// A fresh request id.
pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}
