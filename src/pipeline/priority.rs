//! Idle CPU priority for the threads of a backup that only crunch bytes it already has: the
//! compression workers and the read-back check (with the decompressors it starts).
//!
//! The database server, pg_dump and the thread that reads its pipe keep the normal priority, and
//! so does everything a restore runs: there the server waits on our decompressors. The backup's
//! workers run under `SCHED_IDLE`: on a machine with few cores the source gets its core first and
//! compression fills the time around it (measured in docs/PERFORMANCE.md). The same keeps a
//! backup from taking CPU from the app's database on a small host. Inside a container or a
//! systemd service (a cgroup of their own) the workers yield only to the rest of stackback and
//! its pg_dump; on a host whose CPU is saturated by everything else, a run can stretch, and
//! `BACKUP_TIMEOUT` then aborts and alerts it.
//!
//! Only threads stackback creates for that work are lowered: Linux keeps the policy per thread,
//! and an unprivileged process cannot always take it back, so a pooled thread (tokio's) is never
//! touched.

/// Puts the calling thread under `SCHED_IDLE`. Call it first thing on a thread stackback created
/// for background work; threads it creates inherit the policy. A refusal by the kernel (a
/// seccomp profile, another OS) leaves the thread as it was: this is about speed, never about
/// correctness.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call; pid 0 is the calling thread (sched_setscheduler(2)).
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
}

/// Whether the thread `tid` of this process runs under `SCHED_IDLE` (`None`: it has exited).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn is_idle(tid: i32) -> Option<bool> {
    // SAFETY: a plain query; an unknown tid is an error return, not undefined behaviour.
    let policy = unsafe { libc::sched_getscheduler(tid) };
    (policy >= 0).then_some(policy == libc::SCHED_IDLE)
}

/// Runs `f` on a new thread named `name` at idle priority and hands its result to the returned
/// receiver; a panic on that thread drops the sender, which the receiver reports as an error.
pub fn spawn<T, F>(name: &str, f: F) -> std::io::Result<tokio::sync::oneshot::Receiver<T>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_this_thread();
            // The receiver may be gone (the run failed elsewhere): nothing to tell.
            let _ = tx.send(f());
        })?;
    Ok(rx)
}

/// The ids of this process's threads named `name` (as `/proc` shows it: at most 15 bytes).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn threads_named(name: &str) -> Vec<i32> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            if let Ok(tid) = entry.file_name().to_string_lossy().parse() {
                tids.push(tid);
            }
        }
    }
    tids
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn spawned_work_runs_idle_and_returns_its_result() {
        let rx = spawn("prio-test", || {
            // SAFETY: a plain query of the calling thread.
            let policy = unsafe { libc::sched_getscheduler(0) };
            (policy, 6 * 7)
        })
        .unwrap();
        let (policy, answer) = rx.blocking_recv().unwrap();
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(answer, 42);
        // SAFETY: as above; the caller's own thread is untouched.
        assert_ne!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
    }

    #[test]
    fn a_panic_on_the_thread_reaches_the_receiver() {
        let rx = spawn("prio-panic", || -> u32 { panic!("deliberate") }).unwrap();
        assert!(rx.blocking_recv().is_err());
    }
}
