//! Giving freed heap memory back to the operating system (issue #14 §3: "memory returns to near
//! idle after the attack ends").
//!
//! glibc's `malloc` keeps memory that the program has freed inside its arenas: it gives pages
//! back on its own only from the top of an arena, so a burst (thousands of connections, large
//! requests) leaves the process holding most of its peak long after the burst. Measured with the
//! bench's attack phase (SQLite, debug build): 61 MiB ten seconds after the attack against a peak
//! of 62 MiB; one `malloc_trim(0)` (from a debugger) brought it to 49 MiB, the rest being pages
//! of the program file touched for the first time. Switching the allocator to mimalloc made it
//! worse (idle 79 MiB, 124 MiB after), so the suite keeps glibc and trims.
//!
//! [`spawn_release`] starts one background task: every `interval` it reads how many bytes the
//! arenas hold free (`mallinfo2`, summed over all arenas) and, when that is at least
//! [`MIN_FREE_BYTES`], calls `malloc_trim(0)` on a blocking thread, which returns every whole
//! free page anywhere in the heap (`madvise(MADV_DONTNEED)`). Memory in use is never touched;
//! a trim costs about a millisecond for a heap of tens of MiB. On other platforms and C
//! libraries it does nothing ([`supported`] says so).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use crate::metrics::Metrics;
use crate::server::Shutdown;

/// Free bytes in the arenas below which a trim is not worth its cost.
pub const MIN_FREE_BYTES: u64 = 2 * 1024 * 1024;

/// Whether this build can give freed memory back (glibc on Linux).
pub const fn supported() -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
}

/// Bytes the allocator holds free in its arenas (allocated from the system, not in use); `None`
/// where [`supported`] is false.
pub fn free_heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments, only reads the allocator's statistics under its
        // own locks and returns a plain struct by value.
        #[allow(unsafe_code)]
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Gives every whole free page of the heap back to the system now. Returns whether memory was
/// released (false where [`supported`] is false or nothing could be released). Blocking: it
/// holds each arena's lock while it walks that arena, so call it from a blocking thread.
pub fn release_now() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's free lists under its own locks and
        // advises the kernel about pages no allocation uses; it invalidates no pointer.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        released == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// This process's anonymous resident memory (`RssAnon` of `/proc/self/status`: heap and stacks,
/// no file pages) in KiB; `None` where it cannot be read.
pub fn resident_anonymous_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether the periodic task should trim, given the arenas' free bytes.
pub fn worth_trimming(free_bytes: Option<u64>) -> bool {
    free_bytes.is_some_and(|f| f >= MIN_FREE_BYTES)
}

/// Starts the periodic release (see the module documentation) until `shutdown`. A zero
/// `interval` or an unsupported platform starts nothing. Each trim counts in
/// `fengqiao_memory_trims_total` on the admin port (whether or not it found whole pages to give
/// back).
pub fn spawn_release(interval: Duration, metrics: &Metrics, shutdown: Shutdown) {
    if interval.is_zero() || !supported() {
        return;
    }
    let trims = Counter::<u64>::default();
    metrics.register(
        "memory_trims",
        "Times the allocator was asked to give freed heap memory back to the system (malloc_trim)",
        trims.clone(),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            if !worth_trimming(free_heap_bytes()) {
                continue;
            }
            match tokio::task::spawn_blocking(release_now).await {
                Ok(_) => {
                    trims.inc();
                }
                Err(e) => tracing::warn!(error = %e, "memory release task failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_free_list_is_not_trimmed() {
        assert!(!worth_trimming(None));
        assert!(!worth_trimming(Some(0)));
        assert!(!worth_trimming(Some(MIN_FREE_BYTES - 1)));
        assert!(worth_trimming(Some(MIN_FREE_BYTES)));
    }

    /// Freed memory inside the heap (kept by glibc: the blocks are below a live one and under
    /// the mmap threshold) is given back by `release_now`: the process's anonymous resident
    /// memory falls.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_goes_back_to_the_system() {
        let rss_anon_kib = || resident_anonymous_kib().expect("RssAnon");
        // 64 MiB in 4 KiB blocks (each below the mmap threshold, so from the arena), every page
        // written, then all but the last freed: the last keeps the arena's top in use, so glibc
        // does not shrink the heap by itself.
        let mut blocks: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![1u8; 4096]).collect();
        let keep = blocks.pop().expect("a block");
        let before_free = rss_anon_kib();
        drop(blocks);
        let free = free_heap_bytes().expect("supported");
        assert!(
            worth_trimming(Some(free)),
            "64 MiB freed, the arenas hold {free} bytes free"
        );
        let held = rss_anon_kib();
        assert!(release_now(), "malloc_trim released nothing");
        let after = rss_anon_kib();
        assert!(
            after + 32 * 1024 < held,
            "RssAnon {before_free} KiB with the blocks, {held} KiB after free, {after} KiB after the release"
        );
        drop(keep);
    }
}
