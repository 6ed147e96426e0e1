//! Progress of long command-line work ("released 40/120") on standard error, shown only when it
//! is a terminal and there is enough work to be worth it: piped output stays clean.

use std::io::{IsTerminal, Write};

/// Above this many items, a terminal shows progress.
pub const PROGRESS_ABOVE: usize = 20;

/// A counter printed in place on a terminal.
pub struct Progress {
    verb: &'static str,
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    /// Progress over `total` items, described by `verb` ("reviewed", "released").
    pub fn new(verb: &'static str, total: usize) -> Progress {
        Progress {
            verb,
            total,
            done: 0,
            shown: total > PROGRESS_ABOVE && std::io::stderr().is_terminal(),
        }
    }

    /// One more item done.
    pub fn tick(&mut self) {
        self.done += 1;
        if self.shown {
            eprint!("\r{} {}/{}", self.verb, self.done, self.total);
            let _ = std::io::stderr().flush();
        }
    }

    /// End the line (before printing anything else, and at the end).
    pub fn finish(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
