//! Issue #14 §3, "memory returns to near idle after the attack ends": heap memory the suite
//! freed after a burst goes back to the system (`limits.memory_release_ms`, glibc
//! `malloc_trim`; see `fengqiao_kit::memory`). Its own test binary: it reads the process's
//! anonymous resident memory, which other tests running beside it would move.

use std::time::Duration;

use fengqiao_testkit::{Db, ServiceName, TestSuite};

fn trims(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("fengqiao_memory_trims_total "))
        .map(|v| v.trim().parse().expect("a count"))
}

fn rss_anon_kib() -> u64 {
    fengqiao_kit::memory::resident_anonymous_kib().expect("RssAnon")
}

/// With the setting at 0 nothing runs and the metric is absent; otherwise, after a burst, the
/// release counts in `fengqiao_memory_trims_total` and the anonymous resident memory falls.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn freed_memory_is_given_back_after_a_burst() {
    fengqiao_testkit::block_on(async {
        let off = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.memory_release_ms = 0;
        })
        .await
        .expect("suite");
        assert_eq!(
            trims(&off.scrape_metrics().await),
            None,
            "release ran while off"
        );
        off.stop().await;

        let suite = TestSuite::start_with(Db::Sqlite, &[ServiceName::Router], |c| {
            c.limits.memory_release_ms = 100;
        })
        .await
        .expect("suite");
        // The burst: 64 MiB in small blocks (from the arenas, not mmap), all but the last freed,
        // so glibc keeps the pages unless they are released.
        let mut blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![7u8; 4096]).collect();
        let keep = blocks.pop().expect("a block");
        drop(blocks);
        let held = rss_anon_kib();
        // A trim already under way may have walked the arenas before the free: wait for two more.
        let before = trims(&suite.scrape_metrics().await).unwrap_or(0);
        let mut after = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if trims(&suite.scrape_metrics().await).is_some_and(|n| n >= before + 2) {
                after = Some(rss_anon_kib());
                break;
            }
        }
        let after = after.expect("no memory release within 5 s");
        assert!(
            after + 32 * 1024 < held,
            "RssAnon {held} KiB after the burst, {after} KiB after the release"
        );
        drop(keep);
        suite.stop().await;
    });
}
