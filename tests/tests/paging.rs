//! Page tokens are opaque and bound to the query they were issued for (issue #10): the next
//! page with the same filters works; the same token with other filters, a token the server
//! never issued is INVALID_ARGUMENT on `page_token`, with nothing
//! listed.

use fengqiao_kit::error::{bad_fields_of, reason_of};
use fengqiao_kit::validate::page_token;
use fengqiao_proto::common::AgencyKind;
use fengqiao_proto::router::route_service_client::RouteServiceClient;
use fengqiao_proto::router::{ListAgenciesRequest, ListRoutesRequest};
use fengqiao_scenarios::admin;
use fengqiao_testkit::suite_test;
use tonic::{Code, Status};

fn refused(e: &Status) {
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(reason_of(e).as_deref(), Some("INVALID_ARGUMENT"));
    assert_eq!(bad_fields_of(e), vec!["page_token"]);
}

suite_test!(page_tokens_bind_their_query, |suite| async move {
    let mut agencies = admin(&suite);
    let first = agencies
        .list_agencies(ListAgenciesRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.agencies.len(), 2);
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());

    // The next page, with the same filters (a different page size is not a different query).
    let second = agencies
        .list_agencies(ListAgenciesRequest {
            page_size: 3,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .expect("second page")
        .into_inner();
    assert!(!second.agencies.is_empty());
    assert!(
        second
            .agencies
            .iter()
            .all(|a| first.agencies.iter().all(|b| a.name != b.name))
    );

    // The same token for another filter.
    let e = agencies
        .list_agencies(ListAgenciesRequest {
            page_size: 2,
            page_token: token.clone(),
            kind: AgencyKind::Court as i32,
            ..Default::default()
        })
        .await
        .expect_err("other filter");
    refused(&e);

    // Tokens the server never issued: the bare key a client might guess, garbage, a token of
    // another query.
    let guessed = base64_url(first.agencies[1].name.trim_start_matches("agencies/"));
    for forged in [
        guessed,
        "AAAA".to_string(),
        "!!".to_string(),
        page_token("x", "y"),
    ] {
        let e = agencies
            .list_agencies(ListAgenciesRequest {
                page_token: forged,
                ..Default::default()
            })
            .await
            .expect_err("forged");
        refused(&e);
    }

    // Routes: a token from the list of all versions is not good for the current ones.
    let mut routes = RouteServiceClient::with_interceptor(
        suite.channel(),
        suite.caller("xigang-court", "clerk", &["court_clerk"]),
    );
    let page = routes
        .list_routes(ListRoutesRequest {
            page_size: 1,
            include_all_versions: true,
            ..Default::default()
        })
        .await
        .expect("routes")
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let e = routes
        .list_routes(ListRoutesRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("other filter");
    refused(&e);
});

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
