//! Mutual TLS between services: a client certificate chaining to the configured CA and mapped
//! to an agency identifies that agency without a token; an unmapped certificate does not; no
//! certificate cannot connect at all.

use std::path::PathBuf;

use fengqiao_kit::error::reason_of;
use fengqiao_proto::router::ListAgenciesRequest;
use fengqiao_proto::router::agency_service_client::AgencyServiceClient;
use fengqiao_testkit::{Db, ServiceName, TestSuite};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tls")).join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn client(
    suite: &TestSuite,
    identity: Option<&str>,
) -> Result<AgencyServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{id}.pem")),
            read(&format!("{id}.key")),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", suite.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(AgencyServiceClient::new(channel))
}

#[test]
fn mutual_tls_maps_peer_certificates_to_agencies() {
    fengqiao_testkit::block_on(async {
        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.tls.cert_file = Some(fixture("server.pem"));
            c.tls.key_file = Some(fixture("server.key"));
            c.tls.client_ca_file = Some(fixture("ca.pem"));
            c.tls.peer_agencies.insert(
                read("client-station.sha256").trim().to_string(),
                "agencies/xigang-bayilu-station".into(),
            );
        })
        .await
        .expect("suite");

        // A mapped certificate: the peer is the station, no token needed.
        let mut station = client(&suite, Some("client-station"))
            .await
            .expect("connect");
        let r = station
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect("mapped peer is authenticated");
        assert!(!r.into_inner().agencies.is_empty());

        // A valid but unmapped certificate, and no token: UNAUTHENTICATED.
        let mut unmapped = client(&suite, Some("client-unmapped"))
            .await
            .expect("connect");
        let e = unmapped
            .list_agencies(ListAgenciesRequest::default())
            .await
            .expect_err("unmapped");
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(reason_of(&e).as_deref(), Some("TOKEN_MISSING"));

        // No client certificate: the handshake (or the first call) fails.
        let refused = match client(&suite, None).await {
            Err(_) => true,
            Ok(mut c) => c
                .list_agencies(ListAgenciesRequest::default())
                .await
                .is_err(),
        };
        assert!(
            refused,
            "a client without a certificate must not get through"
        );

        // Plain text against a TLS server fails too.
        let mut plain = AgencyServiceClient::new(suite.channel());
        assert!(
            plain
                .list_agencies(ListAgenciesRequest::default())
                .await
                .is_err()
        );
        suite.stop().await;
    });
}
