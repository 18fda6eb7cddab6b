//! Progress output on stderr: an indicatif bar on a terminal, plain periodic
//! lines otherwise (and in `--json` mode), nothing in tests.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else plain lines.
    #[default]
    Auto,
    /// Plain lines on stderr every few seconds.
    Lines,
    /// Nothing.
    Quiet,
}

/// One phase's progress ("recording sales 3000/18532").
#[derive(Clone)]
pub struct Phase {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    total: u64,
    bar: Option<ProgressBar>,
    lines: bool,
    last: Mutex<(Instant, u64)>,
}

/// Interval between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

impl Phase {
    /// Starts a phase of `total` units.
    pub fn start(mode: ProgressMode, label: &str, total: u64) -> Phase {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => None,
            ProgressMode::Auto | ProgressMode::Lines => Some(true),
            ProgressMode::Quiet => Some(false),
        };
        let bar = if mode.is_none() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_string());
            Some(bar)
        } else {
            None
        };
        let lines = mode == Some(true);
        if lines {
            eprintln!("{label}: 0/{total}");
        }
        Phase {
            inner: Arc::new(Inner {
                label: label.to_string(),
                total,
                bar,
                lines,
                last: Mutex::new((Instant::now(), 0)),
            }),
        }
    }

    /// Sets the position.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.set_position(position);
        }
        if self.inner.lines
            && let Ok(mut last) = self.inner.last.lock()
            && last.0.elapsed() >= LINE_EVERY
            && last.1 != position
        {
            *last = (Instant::now(), position);
            eprintln!("{}: {position}/{}", self.inner.label, self.inner.total);
        }
    }

    /// Finishes the phase with a closing message.
    pub fn finish(&self, message: &str) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_with_message(format!("{} {message}", self.inner.label));
        }
        if self.inner.lines {
            eprintln!("{}: {message}", self.inner.label);
        }
    }
}

/// Prints a one-off status line (not in quiet mode).
pub fn note(mode: ProgressMode, message: &str) {
    if mode != ProgressMode::Quiet {
        eprintln!("{message}");
    }
}
