//! A gate that lets at most one CPU-heavy step per core run at a time.
//!
//! The inbound workers are more than the cores so that a worker waiting on an fsync or a
//! destination does not leave a core idle. Without the gate, all of them also open messages at
//! once: more runnable threads than cores, time-sliced against each other, each evicting the
//! others' working set from the caches. Behind the gate the extra workers wait (off the CPU)
//! only for the CPU-heavy step; their I/O still overlaps.

use std::sync::{Condvar, Mutex};

/// At most `permits` holders at a time.
#[derive(Debug)]
pub struct CpuGate {
    free: Mutex<usize>,
    freed: Condvar,
}

/// Held while a CPU-heavy step runs; the permit returns when dropped (also on a panic).
pub struct Permit<'a>(&'a CpuGate);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
        *free += 1;
        drop(free);
        self.0.freed.notify_one();
    }
}

impl CpuGate {
    pub fn new(permits: usize) -> CpuGate {
        CpuGate {
            free: Mutex::new(permits.max(1)),
            freed: Condvar::new(),
        }
    }

    /// One permit per core of this machine.
    pub fn per_core() -> CpuGate {
        CpuGate::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// The process's gate for opening received messages (one permit per core).
    pub fn inbound() -> &'static CpuGate {
        static GATE: std::sync::OnceLock<CpuGate> = std::sync::OnceLock::new();
        GATE.get_or_init(CpuGate::per_core)
    }

    /// Wait for a permit.
    pub fn enter(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_holders_than_permits_and_permits_come_back() {
        let gate = Arc::new(CpuGate::new(2));
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let _permit = gate.enter();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Both permits are free again: two holders at once without waiting.
        let (_a, _b) = (gate.enter(), gate.enter());
        // A permit is returned when its holder panics.
        let g = gate.clone();
        drop((_a, _b));
        let _ = std::thread::spawn(move || {
            let _p = g.enter();
            panic!("a step failed");
        })
        .join();
        let (_c, _d) = (gate.enter(), gate.enter());
    }
}
