//! How many inbound workers `serve` runs (`[agent] inbound_workers`, or chosen at start-up).
//!
//! Opening a message is CPU work; storing its outcome and writing it to a directory sink wait
//! on fsync. Where an fsync costs next to nothing (tmpfs, a controller with a battery-backed
//! write cache) one worker per core keeps the cores busy, and more only make the workers
//! compete for the cores and the spool (measured: 1 per core opens about 10 % more messages
//! per second than 4 per core, docs/benchmarks.md). Where an fsync takes a millisecond or more
//! (cloud block storage, a plain disk) a worker waits several times longer than it computes, so
//! four per core keep the cores busy while others wait. So the agent times a few fsyncs in its
//! data directory when it starts and runs one to four workers per core by how long a message
//! waits on them; the configuration key overrides.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// CPU a worker spends on a message, about (open, validation, spool and sink calls): what an
/// fsync wait is weighed against.
const CPU_PER_MESSAGE_US: u128 = 500;
/// fsyncs a worker waits for per message (the sink's two files and folder, the outcome commit).
const FSYNCS_PER_MESSAGE: u128 = 4;
/// An fsync this fast is no wait at all (tmpfs, a write cache).
const FREE_FSYNC_US: u128 = 10;

/// Workers for `cores` cores when an fsync in the data directory takes `fsync`: one per core,
/// plus one per core for each `CPU_PER_MESSAGE_US` a message waits on fsync, at most four.
pub fn for_fsync(cores: usize, fsync: Duration) -> usize {
    let waited = fsync.as_micros().saturating_sub(FREE_FSYNC_US) * FSYNCS_PER_MESSAGE;
    let per_core = 1 + waited.div_ceil(CPU_PER_MESSAGE_US).min(3) as usize;
    cores.max(1) * per_core
}

/// The median of five fsyncs of a 4 KiB file written in `dir` (the file is removed after).
pub fn fsync_latency(dir: &Path) -> std::io::Result<Duration> {
    let path = dir.join(format!(".fsync-probe-{}", std::process::id()));
    let timed = (|| {
        let mut f = std::fs::File::create(&path)?;
        let block = [0u8; 4096];
        let mut times = Vec::with_capacity(5);
        for _ in 0..5 {
            f.write_all(&block)?;
            let started = Instant::now();
            f.sync_all()?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(times[times.len() / 2])
    })();
    let _ = std::fs::remove_file(&path);
    timed
}

/// The workers to run: `configured` if set, else chosen by timing fsyncs in `data_dir` (four
/// per core when that cannot be timed). Returns the count and how it was chosen, for the log.
pub fn choose(configured: Option<usize>, data_dir: &Path) -> (usize, String) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if let Some(n) = configured {
        return (n.max(1), "[agent] inbound_workers".into());
    }
    match fsync_latency(data_dir) {
        Ok(t) => (
            for_fsync(cores, t),
            format!(
                "{cores} cores; an fsync in {} takes {} µs",
                data_dir.display(),
                t.as_micros()
            ),
        ),
        Err(e) => (
            4 * cores,
            format!(
                "{cores} cores; fsync in {} not timed ({e})",
                data_dir.display()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_core_when_fsync_is_free_up_to_four_as_it_slows() {
        assert_eq!(for_fsync(2, Duration::ZERO), 2);
        assert_eq!(for_fsync(2, Duration::from_micros(10)), 2);
        assert_eq!(for_fsync(2, Duration::from_micros(11)), 4);
        assert_eq!(for_fsync(2, Duration::from_micros(135)), 4);
        assert_eq!(for_fsync(2, Duration::from_micros(189)), 6);
        assert_eq!(for_fsync(2, Duration::from_micros(261)), 8);
        assert_eq!(for_fsync(8, Duration::from_millis(3)), 32);
        assert_eq!(for_fsync(0, Duration::ZERO), 1);
    }

    #[test]
    fn the_probe_times_fsyncs_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let t = fsync_latency(dir.path()).unwrap();
        assert!(t < Duration::from_secs(10), "{t:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let (n, why) = choose(None, dir.path());
        assert!(n >= 1, "{n}");
        assert!(why.contains("µs"), "{why}");
        assert_eq!(
            choose(Some(3), dir.path()),
            (3, "[agent] inbound_workers".into())
        );
        let missing = dir.path().join("missing");
        let (n, why) = choose(None, &missing);
        assert_eq!(n % 4, 0, "four per core when the probe fails: {n}");
        assert!(why.contains("not timed"), "{why}");
    }
}
