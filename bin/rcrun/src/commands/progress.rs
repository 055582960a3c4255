//! `image import` progress on stderr: on a terminal one line redrawn in place (layer i/n, MB
//! done/total, rate); otherwise one plain line per finished layer, which logs and CI output
//! keep readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use rcrun_storage_overlay2::import::{LayerState, Progress};

/// Redraws faster than this only cost time: progress arrives every 256 KiB.
const REDRAW: Duration = Duration::from_millis(100);

pub struct Printer {
    tty: bool,
    started: Instant,
    last_draw: Option<Instant>,
    /// Blob bytes of the layers already applied.
    bytes_applied: u64,
    /// Bytes of the layer in flight.
    bytes_current: u64,
    drawn: bool,
}

/// Decimal megabytes, as docker prints sizes.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn short(p: &Progress) -> String {
    format!("sha256:{}…", p.diff_id.short())
}

impl Printer {
    pub fn new() -> Printer {
        Printer {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            bytes_applied: 0,
            bytes_current: 0,
            drawn: false,
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        mb(self.bytes_applied + self.bytes_current) / secs
    }

    pub fn update(&mut self, p: &Progress) {
        let (i, n) = (p.layer + 1, p.layers);
        match p.state {
            LayerState::Applying => self.bytes_current = p.bytes_done,
            LayerState::Applied => {
                self.bytes_current = 0;
                self.bytes_applied += p.bytes_done;
            }
            LayerState::Reused => {}
        }
        if !self.tty {
            let line = match p.state {
                LayerState::Applying => return,
                LayerState::Applied => format!(
                    "layer {i}/{n} {} applied {:.1} MB",
                    short(p),
                    mb(p.bytes_done)
                ),
                LayerState::Reused => format!("layer {i}/{n} {} reused", short(p)),
            };
            eprintln!("{line}");
            return;
        }
        let now = Instant::now();
        let due = self
            .last_draw
            .is_none_or(|t| now.duration_since(t) >= REDRAW);
        if p.state == LayerState::Applying && !due {
            return;
        }
        self.last_draw = Some(now);
        let what = match p.state {
            LayerState::Reused => "reused".to_string(),
            _ if p.bytes_total > 0 => {
                format!("{:.1}/{:.1} MB", mb(p.bytes_done), mb(p.bytes_total))
            }
            _ => format!("{:.1} MB", mb(p.bytes_done)),
        };
        // \x1b[K clears what a longer previous line left.
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rlayer {i}/{n} {} {what}  {:.1} MB/s\x1b[K",
            short(p),
            self.rate()
        );
        let _ = err.flush();
        self.drawn = true;
    }

    /// End the redrawn line and print the summary.
    pub fn finish(&mut self, layers: usize, applied: usize, bytes: u64) {
        let secs = self.started.elapsed().as_secs_f64();
        if self.tty && self.drawn {
            eprint!("\r\x1b[K");
        }
        eprintln!(
            "imported {layers} layers ({applied} applied, {} reused), {:.1} MB in {secs:.2} s ({:.1} MB/s)",
            layers - applied.min(layers),
            mb(bytes),
            mb(bytes) / secs.max(1e-3)
        );
    }

    /// After a failure: leave the terminal on a fresh line for the error.
    pub fn abort(&mut self) {
        if self.tty && self.drawn {
            eprintln!();
        }
    }
}
