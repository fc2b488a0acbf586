//! Progress of a running backup, for a front end to display. The library only counts; the CLI
//! draws a bar from these counters on a terminal (and nothing anywhere else).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of the current step of a run, updated by the sources as bytes flow.
#[derive(Debug, Default)]
pub struct Progress {
    step: Mutex<String>,
    bytes: AtomicU64,
    /// Expected plain bytes of the step (an estimate), 0 when unknown.
    total: AtomicU64,
    objects: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub step: String,
    pub bytes: u64,
    pub total: Option<u64>,
    pub objects: u64,
}

impl Progress {
    /// Starts counting a new step.
    pub fn start_step(&self, step: &str, total: Option<u64>) {
        *self.step.lock().expect("not poisoned") = step.to_string();
        self.bytes.store(0, Ordering::Relaxed);
        self.objects.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_object(&self) {
        self.objects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let total = self.total.load(Ordering::Relaxed);
        Snapshot {
            step: self.step.lock().expect("not poisoned").clone(),
            bytes: self.bytes.load(Ordering::Relaxed),
            total: (total > 0).then_some(total),
            objects: self.objects.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_reset_the_counters() {
        let p = Progress::default();
        p.start_step("database", Some(100));
        p.add_bytes(40);
        assert_eq!(
            p.snapshot(),
            Snapshot {
                step: "database".into(),
                bytes: 40,
                total: Some(100),
                objects: 0
            }
        );
        p.start_step("objects:b", None);
        p.add_object();
        p.add_bytes(5);
        assert_eq!(
            p.snapshot(),
            Snapshot {
                step: "objects:b".into(),
                bytes: 5,
                total: None,
                objects: 1
            }
        );
    }
}
