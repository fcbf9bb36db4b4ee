//! The sample roster (特邀调解名册) is seeded idempotently: several processes starting at once
//! on one database, and restarts, neither fail nor duplicate entries. SQLite and PostgreSQL.

use fengqiao_court_diversion::{SeedOrganization, SeedRoster, migrate, seed_rosters};
use fengqiao_store::sqlx::{self, Row as _};
use fengqiao_store::{Store, StoreConfig, both_backends};

fn roster() -> Vec<SeedRoster> {
    let org = |id: &str, mediators: &[&str]| SeedOrganization {
        id: id.into(),
        display_name: "特邀调解组织".into(),
        agency: format!("agencies/{id}"),
        region_code: "210203".into(),
        mediators: mediators
            .iter()
            .map(|m| ((*m).to_string(), "特邀调解员".to_string(), (*m).to_string()))
            .collect(),
    };
    vec![SeedRoster {
        court: "agencies/xigang-court".into(),
        organizations: vec![
            org("xigang-mediation-committee", &["director"]),
            org(
                "xigang-jinyaoshi-mediation-centre",
                &["centre-head", "mediator-02"],
            ),
        ],
    }]
}

async fn count(store: &Store, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(store.pool())
        .await
        .and_then(|r| r.try_get("n"))
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
}

both_backends!(
    concurrent_starts_seed_the_roster_once,
    |store: Store| async move {
        // Four "processes" start at once on the same database: each migrates and seeds.
        let mut others = Vec::new();
        for _ in 0..3 {
            others.push(
                Store::connect(StoreConfig::new(store.config().url.clone()))
                    .await
                    .expect("second connection"),
            );
        }
        let start = |s: Store| async move {
            migrate(&s).await.map_err(|e| e.to_string())?;
            seed_rosters(&s, &roster()).await.map_err(|e| e.to_string())
        };
        let (a, b, c, d) = tokio::join!(
            start(store.clone()),
            start(others[0].clone()),
            start(others[1].clone()),
            start(others[2].clone()),
        );
        let added: usize = [a, b, c, d]
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| panic!("a concurrent start failed: {e}")))
            .sum();
        // 2 organisations + 3 mediators, added once between them.
        assert_eq!(added, 5);
        assert_eq!(count(&store, "court_organizations").await, 2);
        assert_eq!(count(&store, "court_mediators").await, 3);
        // A restart adds nothing.
        assert_eq!(seed_rosters(&store, &roster()).await.expect("restart"), 0);
        for s in others {
            s.close().await;
        }
    }
);
