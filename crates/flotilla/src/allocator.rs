//! The process's allocator (mimalloc, every role) and how long it keeps freed memory.
//!
//! mimalloc keeps memory a process freed for reuse and returns it to the operating system
//! after its purge delay (1 s by default in mimalloc v3). Memory taken back from the kernel
//! is zeroed page by page when touched again, 2 MB at a time where transparent huge pages
//! are on (mimalloc advises them): in TPC-H sf1 runs on a two-core VM that zeroing
//! (`clear_page_erms`) was up to a fifth of a coordinator's CPU, paid again by every query
//! after a pause of a second. A longer delay (`memory.allocator-purge-delay`, a minute by
//! default) keeps that memory for the next queries (A/B on the cluster, the 22 queries best
//! of 3: 3757 → 3388 ms; BENCHMARKS.md).
//!
//! A coordinator looping one large query (TPC-H q09 at sf1) grew by ~90 MB a run with either
//! delay, with mimalloc and with jemalloc alike: not the allocator, but ended queries that
//! kept their executed plans, and with them their joins' hash tables, for
//! `query.min-expire-age` (they keep only figures and text now: `Query::release_plan`).

use std::os::raw::c_long;
use std::time::Duration;

/// mimalloc for every role: DataFusion allocates and frees a batch's buffers by the
/// thousand per query; with glibc's allocator, malloc/free were ~7% of the CPU samples of a
/// cluster looping TPC-H q02 (DataFusion's Python bindings, our benchmarks' reference, are
/// built with mimalloc too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same in mimalloc v2
/// and v3; `libmimalloc-sys` names no constant for it): milliseconds freed memory stays
/// with the allocator before it is returned to the operating system.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets mimalloc's purge delay (`memory.allocator-purge-delay`).
pub fn set_purge_delay(delay: Duration) {
    let millis = c_long::try_from(delay.as_millis()).unwrap_or(c_long::MAX);
    // SAFETY: sets one of mimalloc's integer options; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, millis) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option is the process's: tests that set it take turns (under `cargo test` they
    /// share one process).
    static OPTION: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn exclusive() -> std::sync::MutexGuard<'static, ()> {
        OPTION.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The option index is mimalloc's purge delay: its default (1 s in mimalloc v3, this
    /// build's) before it is set, the value set after.
    #[test]
    fn the_purge_delay_is_mimallocs_option() {
        let _turn = exclusive();
        // SAFETY: reads one of mimalloc's integer options.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(default, 1000, "mimalloc's purge_delay default; set MIMALLOC_PURGE_DELAY in the environment?");
        set_purge_delay(Duration::from_secs(60));
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 60_000);
        set_purge_delay(Duration::from_millis(1000));
    }

    /// The process's resident size.
    fn resident() -> u64 {
        use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};
        let pid = sysinfo::get_current_pid().unwrap();
        let mut system = System::new();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_memory(),
        );
        system.process(pid).unwrap().memory()
    }

    /// Touches and frees 256 MB; the resident size before, with them, and after.
    fn touch_and_free() -> (u64, u64, u64) {
        let before = resident();
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 | 1; 4 << 20]).collect();
        let touched = resident();
        drop(std::hint::black_box(blocks));
        (before, touched, resident())
    }

    /// With a delay the freed memory stays resident (for reuse); with none it is returned
    /// as it is freed.
    #[test]
    fn the_delay_decides_whether_freed_memory_stays() {
        let _turn = exclusive();
        const MB: u64 = 1 << 20;
        set_purge_delay(Duration::from_secs(3600));
        let (before, touched, after) = touch_and_free();
        assert!(touched >= before + 200 * MB, "{before} -> {touched}");
        assert!(after >= before + 200 * MB, "kept for reuse: {before} -> {touched} -> {after}");
        set_purge_delay(Duration::ZERO);
        // Reused first (it was kept), then returned as freed.
        let (before, touched, after) = touch_and_free();
        assert!(touched >= 200 * MB, "{before} -> {touched}");
        assert!(after + 200 * MB <= touched, "returned at once: {before} -> {touched} -> {after}");
        set_purge_delay(Duration::from_millis(1000));
    }
}
