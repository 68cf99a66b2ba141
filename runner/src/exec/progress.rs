//! Progress display: indicatif bars on a terminal (overall jobs, and steps or examples within a
//! job with rate and ETA), plain log lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared progress output of one `exec`.
pub struct Reporter {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    plain_done: Mutex<(u64, u64)>,
}

impl Reporter {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new(total_jobs: u64) -> Reporter {
        if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total_jobs));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {pos}/{len} jobs {elapsed_precise} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.set_prefix("exec");
            Reporter {
                multi: Some(multi),
                overall: Some(overall),
                plain_done: Mutex::new((0, total_jobs)),
            }
        } else {
            Reporter {
                multi: None,
                overall: None,
                plain_done: Mutex::new((0, total_jobs)),
            }
        }
    }

    /// Prints a line above the bars (or plainly).
    pub fn line(&self, msg: &str) {
        match &self.multi {
            Some(m) => {
                if m.println(msg).is_err() {
                    eprintln!("{msg}");
                }
            }
            None => println!("{msg}"),
        }
    }

    /// Counts a job as finished (done, failed or skipped).
    pub fn job_finished(&self) {
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        if let Ok(mut d) = self.plain_done.lock() {
            d.0 += 1;
        }
    }

    /// A bar for one running job.
    pub fn job_bar(&self, label: &str) -> JobProgress {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix("job");
            b.set_message(label.to_string());
            b
        });
        let (done, total) = self.plain_done.lock().map(|d| *d).unwrap_or((0, 0));
        if bar.is_none() {
            println!("[{}/{}] start {label}", done + 1, total);
        }
        JobProgress {
            bar,
            label: label.to_string(),
            started: Instant::now(),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Clears the bars at the end.
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

/// Progress of one job: steps, examples or files.
pub struct JobProgress {
    bar: Option<ProgressBar>,
    label: String,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl JobProgress {
    /// Sets position, length and a short status message (e.g. the current loss).
    pub fn set(&self, pos: u64, len: u64, unit: &str, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_length(len);
                b.set_position(pos);
                b.set_message(format!("{} {unit} {msg}", self.label));
            }
            None => {
                // A line every few seconds, and at the end.
                if let Ok(mut last) = self.last_line.lock()
                    && (last.elapsed() >= Duration::from_secs(5) || pos == len)
                {
                    let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                    println!(
                        "  {}: {pos}/{len} {unit} ({:.1}/s) {msg}",
                        self.label,
                        pos as f64 / secs
                    );
                    *last = Instant::now();
                }
            }
        }
    }

    /// Prints a line above the bar (or plainly), e.g. what a stage is about to do.
    pub fn line(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => println!("  {msg}"),
        }
    }

    /// Removes the bar.
    pub fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
