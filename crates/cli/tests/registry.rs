//! The binary's services come from one registry: `fengqiao services` prints it (name and gRPC
//! prefix), `serve --service` takes exactly its names and refuses any other listing them.

use std::process::{Command, Output};

fn fengqiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fengqiao"))
        .args(args)
        .env_remove("FENGQIAO_SERVICE")
        .output()
        .expect("run fengqiao")
}

#[test]
fn services_prints_the_registry() {
    let o = fengqiao(&["services"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once('\t').expect("name<TAB>prefix"))
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let expected: Vec<String> = fengqiao::ServiceName::all()
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(names, expected);
    for (name, prefix) in &rows {
        let m = name
            .parse::<fengqiao::ServiceName>()
            .expect("registry name");
        assert_eq!(m.grpc_prefix(), Some(*prefix));
    }
}

#[test]
fn serve_refuses_a_name_outside_the_registry_listing_the_valid_ones() {
    let o = fengqiao(&["serve", "--service", "router,notary", "--dump-config"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("notary"), "{err}");
    for s in fengqiao::ServiceName::all() {
        assert!(err.contains(s.as_str()), "{err} does not list {s}");
    }
    // Registry names are taken.
    let o = fengqiao(&[
        "serve",
        "--service",
        "court-diversion,judicial-confirmation",
        "--dump-config",
    ]);
    assert!(o.status.success(), "{o:?}");
}
