//! The process's own memory: the live-heap count behind the daemon's `backup_daemon_heap_bytes`
//! and its memory log line, its resident size, and giving freed memory back between runs.
//!
//! The live heap is counted by [`Counting`], a global allocator over the system's that keeps one
//! atomic sum of the bytes allocated and not freed; the binary installs it. glibc's own figures
//! cannot judge a leak: `mallinfo2` counts the chunks each thread's cache holds as in use, and
//! those grow for dozens of runs while the live heap stays flat to the byte.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting the bytes it has handed out and not had back.
pub struct Counting;

// SAFETY: every call goes to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            count(new_size);
        }
        p
    }
}

fn count(size: usize) {
    LIVE.fetch_add(size, Ordering::Relaxed);
    if !COUNTING.load(Ordering::Relaxed) {
        COUNTING.store(true, Ordering::Relaxed);
    }
}

/// Counts the unit tests' allocations too, so the counter itself is tested.
#[cfg(test)]
#[global_allocator]
static TESTS: Counting = Counting;

/// Memory the process uses now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Bytes allocated and not yet freed; absent unless the program installed [`Counting`].
    pub heap_in_use: Option<u64>,
    /// Resident set size, from `/proc/self/statm`; absent where there is none.
    pub resident: Option<u64>,
}

/// Reads [`Usage`] of this process.
pub fn usage() -> Usage {
    Usage {
        heap_in_use: COUNTING
            .load(Ordering::Relaxed)
            .then(|| LIVE.load(Ordering::Relaxed) as u64),
        resident: resident(),
    }
}

fn resident() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

#[cfg(target_os = "linux")]
fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointer and reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(not(target_os = "linux"))]
fn page_size() -> u64 {
    4096
}

/// Returns the heap freed since the last call to the system. glibc keeps freed memory in the
/// arenas of the threads that used it (a run's compression and hashing threads each leave theirs
/// at a different size), so a daemon would otherwise idle for hours on its largest run's memory.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_heap_follows_an_allocation_and_its_free() {
        let before = usage().heap_in_use.expect("the tests count");
        // Far more than the tests running beside this one allocate or free meanwhile.
        let mut block = vec![1u8; 256 << 20];
        let during = usage().heap_in_use.unwrap();
        assert!(during >= before + (192 << 20), "{before} -> {during}");
        block.truncate(1);
        block.shrink_to_fit();
        let shrunk = usage().heap_in_use.unwrap();
        assert!(shrunk <= during - (192 << 20), "{during} -> {shrunk}");
        drop(std::hint::black_box(block));
        give_back();
        assert!(usage().resident.unwrap() > 0);
    }
}
