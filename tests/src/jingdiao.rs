//! Helpers for the 警调对接 scenarios (`tests/jingdiao.rs`): the people of the 西岗区 practice as
//! clients, valid resident ID numbers, waiting for asynchronous delivery, and a suite with
//! extra route files.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fengqiao_kit::client::CallInterceptor;
use fengqiao_proto::mediation::mediation_service_client::MediationServiceClient;
use fengqiao_proto::policereferral::police_referral_service_client::PoliceReferralServiceClient;
use fengqiao_proto::router::transfer_service_client::TransferServiceClient;
use fengqiao_testkit::{Db, ServiceName, TempDir, TestSuite, block_on};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A police-referral client (the 110 system or a station officer).
pub type Police = PoliceReferralServiceClient<InterceptedService<Channel, CallInterceptor>>;
/// A router transfer client (approvals: 指挥室审核, 值班所长审批).
pub type Router = TransferServiceClient<InterceptedService<Channel, CallInterceptor>>;
/// A mediation client (the 驻所调解室).
pub type Med = MediationServiceClient<InterceptedService<Channel, CallInterceptor>>;

/// The 110 command centre (指挥中心 / 指挥室).
pub const COMMAND: &str = "xigang-110";
/// The 八一路派出所.
pub const STATION: &str = "xigang-bayilu-station";
/// The mediation room stationed in the 八一路派出所 (驻所调解室).
pub const ROOM: &str = "xigang-bayilu-mediation-room";
/// A neighbouring station that has nothing to do with the 八一路 referrals (made up).
pub const OTHER_STATION: &str = "xigang-xianglujiao-station";

/// A police-referral client for `agency`/`actor` with `roles`.
pub fn police(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Police {
    PoliceReferralServiceClient::with_interceptor(
        suite.channel(),
        suite.caller(agency, actor, roles),
    )
}

/// A router client for `agency`/`actor` with `roles`.
pub fn router(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Router {
    TransferServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// A mediation client for `agency`/`actor` with `roles`.
pub fn mediation(suite: &TestSuite, agency: &str, actor: &str, roles: &[&str]) -> Med {
    MediationServiceClient::with_interceptor(suite.channel(), suite.caller(agency, actor, roles))
}

/// The people of one 警调对接 case (deploy/dev/agencies.toml).
#[derive(Clone)]
pub struct Cast {
    /// The 110 dispatch system pushing referrals (接警系统).
    pub dispatch: Police,
    /// The station officer who handles the referral and fills the 移送单 (处警民警).
    pub officer: Police,
    /// The command room reviewer (指挥室审核).
    pub reviewer: Router,
    /// The station's duty chief (值班所长审批).
    pub chief: Router,
    /// The head of the mediation room: registers the room and its mediators.
    pub room_head: Med,
    /// The mediator on duty in the room.
    pub mediator: Med,
    /// The mediator on duty, looking at the router's view of the transfer.
    pub room_router: Router,
}

impl Cast {
    /// Everyone, with the roles of the sample district.
    pub fn of(suite: &TestSuite) -> Cast {
        Cast {
            dispatch: police(suite, COMMAND, "dispatch-system", &["dispatcher"]),
            officer: police(suite, STATION, "officer-01", &["officer"]),
            reviewer: router(suite, COMMAND, "reviewer-01", &["command_room_reviewer"]),
            chief: router(suite, STATION, "duty-chief-01", &["duty_chief"]),
            room_head: mediation(suite, ROOM, "room-head", &["mediation_admin", "mediator"]),
            mediator: mediation(suite, ROOM, "mediator-01", &["mediator"]),
            room_router: router(suite, ROOM, "mediator-01", &["mediator"]),
        }
    }
}

/// GB 11643-1999 check character for the first 17 digits of a resident ID number
/// (ISO 7064 MOD 11-2).
pub fn gb11643_check(first17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    CHECK[(sum % 11) as usize]
}

/// A resident ID number (居民身份证号码) with a correct check character:
/// `region` (6 digits), `birth` (YYYYMMDD), `sequence` (3 digits).
pub fn resident_id(region: &str, birth: &str, sequence: &str) -> String {
    let first17 = format!("{region}{birth}{sequence}");
    let check = gb11643_check(&first17);
    format!("{first17}{check}")
}

/// The same ID number with a wrong check character.
pub fn with_wrong_check(id: &str) -> String {
    let (first17, check) = id.split_at(17);
    let wrong = if check == "0" { '1' } else { '0' };
    format!("{first17}{wrong}")
}

/// Polls `probe` every 50 ms until it yields a value, for up to 10 s; panics naming `what`
/// otherwise. Delivery between the router and the agencies is asynchronous.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("waited 10 s in vain for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `body` on a suite of all services on `db` whose router also loads the route files
/// `routes` (`(file name, TOML text)`) from a temporary `routes_dir`. Like
/// `fengqiao_testkit::run`, the PostgreSQL variant is skipped when PostgreSQL is unavailable
/// and not required.
pub fn run_with_routes<F, Fut>(db: Db, routes: Vec<(String, String)>, body: F)
where
    F: FnOnce(Arc<TestSuite>) -> Fut,
    Fut: Future<Output = ()>,
{
    block_on(async move {
        let dir = TempDir::new();
        let routes_dir: PathBuf = dir.path().join("routes");
        std::fs::create_dir_all(&routes_dir).unwrap_or_else(|e| panic!("routes dir: {e}"));
        for (file, text) in &routes {
            std::fs::write(routes_dir.join(file), text)
                .unwrap_or_else(|e| panic!("route {file}: {e}"));
        }
        let Some(suite) = TestSuite::start_with(db, &ServiceName::all(), |c| {
            c.routes_dir = Some(routes_dir.clone());
        })
        .await
        else {
            return;
        };
        let suite = Arc::new(suite);
        body(suite.clone()).await;
        if let Ok(s) = Arc::try_unwrap(suite) {
            s.stop().await;
        }
        drop(dir);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_characters_match_known_numbers() {
        // The example of GB 11643-1999 and the number used in the service's own tests.
        assert_eq!(gb11643_check("11010519491231002"), 'X');
        assert_eq!(
            resident_id("110105", "19491231", "002"),
            "11010519491231002X"
        );
        assert_ne!(with_wrong_check("11010519491231002X"), "11010519491231002X");
    }
}
