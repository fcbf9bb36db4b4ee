//! The router as one and as three processes on one PostgreSQL (the shape of a k8s Deployment
//! with three replicas): each router a suite child running only the router (what `fengqiao
//! serve --service router` runs: the same `Suite::start`), police-referral and mediation each
//! in a process of their own, police-referral calling the first router and mediation the
//! second, the bench's router calls (approvals) round-robin over all of them; every router
//! pushes to the agency processes. Intake and full cycles are measured for one router and
//! for three, on fresh databases of the same cluster. Correctness across replicas (no double
//! delivery, each expiry once, audit chain intact) is tested in
//! `crates/cli/tests/router_replicas.rs`, not here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fengqiao::{SAMPLE_AGENCIES, ServiceName};
use fengqiao_kit::auth::SigningKey;

use crate::cost::{CostRow, Meter, PgMeter};
use crate::load::{Figure, Sampler, run_load};
use crate::scenario::{Ctx, Endpoints, full_cycle, intake, roster};
use crate::{ChildOpts, SuiteProc};

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sample agencies with every `endpoint = "self"` pointing at the police process for
/// police agencies and at the mediation process for every other.
fn agencies_for(police: u16, mediation: u16) -> String {
    let mut out = String::new();
    let mut kind = "";
    for line in SAMPLE_AGENCIES.lines() {
        if let Some(k) = line.strip_prefix("kind = ") {
            kind = k.trim_matches('"');
        }
        if line.trim() == "endpoint = \"self\"" {
            let port = if kind.starts_with("police") {
                police
            } else {
                mediation
            };
            out.push_str(&format!("endpoint = \"http://127.0.0.1:{port}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Measures intake and cycles with `routers` router processes; figures and cost rows.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    pg: &fengqiao_pgtemp::PgCluster,
    pgm: Option<&PgMeter>,
    dir: &Path,
    key: &SigningKey,
    routers: usize,
    dur: Duration,
    clients: usize,
    figs: &mut Vec<Figure>,
    costs: &mut Vec<CostRow>,
) -> anyhow::Result<()> {
    let dir = dir.join(format!("routers-{routers}"));
    std::fs::create_dir_all(&dir)?;
    for f in ["public-keys.json", "service-key.json"] {
        std::fs::copy(dir.parent().context("parent")?.join(f), dir.join(f))?;
    }
    let (pp, mp) = (free_port()?, free_port()?);
    let agencies = dir.join("agencies.toml");
    std::fs::write(&agencies, agencies_for(pp, mp))?;
    let router_url = pg.create_database()?;
    let mut procs: Vec<SuiteProc> = Vec::new();
    let result = async {
        for _ in 0..routers {
            let stores = BTreeMap::from([(ServiceName::Router, router_url.clone())]);
            procs.push(
                SuiteProc::start(
                    &dir,
                    &stores,
                    &ChildOpts {
                        agencies_file: Some(agencies.clone()),
                        ..Default::default()
                    },
                )
                .await
                .context("start a router process")?,
            );
        }
        let router_eps: Vec<String> = procs.iter().map(|p| p.endpoint.clone()).collect();
        for (svc, port, router) in [
            (ServiceName::PoliceReferral, pp, &router_eps[0]),
            (
                ServiceName::Mediation,
                mp,
                &router_eps[1 % router_eps.len()],
            ),
        ] {
            let stores = BTreeMap::from([(svc, pg.create_database()?)]);
            procs.push(
                SuiteProc::start(
                    &dir,
                    &stores,
                    &ChildOpts {
                        router: Some(router.clone()),
                        agencies_file: Some(agencies.clone()),
                        listen: Some(format!("127.0.0.1:{port}")),
                    },
                )
                .await
                .with_context(|| format!("start the {} process", svc.as_str()))?,
            );
        }
        let endpoints = Endpoints {
            police: vec![format!("http://127.0.0.1:{pp}")],
            router: router_eps.clone(),
            mediation: vec![format!("http://127.0.0.1:{mp}")],
            other: router_eps.clone(),
        };
        let ctx = Arc::new(Ctx::new(key, endpoints, 4)?);
        roster(&ctx).await?;
        let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        let meter = Meter {
            pids: pids.clone(),
            admins: procs.iter().map(|p| p.admin.clone()).collect(),
            pg: pgm,
        };
        let label = if routers == 1 {
            "1 router process".to_string()
        } else {
            format!("{routers} router processes")
        };
        eprintln!("[postgres] {label}: intake");
        let s = Sampler::start_many(pids.clone());
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, dur, u64::MAX, move |_, i| {
            let c2 = c2.clone();
            async move { intake(&c2, 20_000_000 + i).await.map(|_| ()) }
        })
        .await;
        costs.push(
            meter
                .row(&format!("intake, {label}"), "postgres", m0, l.ops)
                .await,
        );
        figs.push(
            Figure::from_load(
                &format!("intake, {label} + police + mediation processes"),
                "postgres",
                "intakes/s",
                &l,
                s.finish().await,
            )
            .note("one PostgreSQL; each service its own process; CPU and RSS summed over them"),
        );
        eprintln!("[postgres] {label}: full cycle");
        let s = Sampler::start_many(pids.clone());
        let m0 = meter.snap().await;
        let c2 = ctx.clone();
        let l = run_load(clients, dur, u64::MAX, move |_, i| {
            let c2 = c2.clone();
            async move { full_cycle(&c2, 30_000_000 + i).await }
        })
        .await;
        costs.push(
            meter
                .row(&format!("full cycle, {label}"), "postgres", m0, l.ops)
                .await,
        );
        figs.push(
            Figure::from_load(
                &format!("full 警调对接 cycle, {label} + police + mediation processes"),
                "postgres",
                "cycles/s",
                &l,
                s.finish().await,
            )
            .note("one PostgreSQL; on 2 cores more router processes cannot be faster: they share the same cores with PostgreSQL and the agency processes"),
        );
        anyhow::Ok(())
    }
    .await;
    for p in procs {
        p.stop();
    }
    result
}
