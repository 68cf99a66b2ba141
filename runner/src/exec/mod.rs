//! The executor: runs a plan's pending jobs in dependency order, resumably.
//!
//! Each job is claimed in the store with a lease (so two `exec` processes never run the same job),
//! kept alive by heartbeats while it runs, and finished or failed in one transaction. Done jobs
//! are skipped; a failed job is recorded with its error and the run goes on (unless
//! `--fail-fast`); jobs of stages this build does not have stay pending and are reported.

pub mod backbone;
pub mod device;
pub mod lease;
pub mod progress;
pub mod stages;
pub mod train_stage;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use results::{JobState, NewJob, Store};

use crate::plan::{JobKind, Plan};
use progress::{JobProgress, Reporter};
pub use stages::{Stage, StageOutcome};

/// Which stages `exec` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Only {
    /// Everything up to and including training.
    Train,
    /// Only evaluation cells (their training must be done).
    Eval,
}

/// Options of `runner exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Run only part of the plan.
    pub only: Option<Only>,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// Jobs run at once (worker threads).
    pub jobs: usize,
    /// Lease duration; heartbeats renew it at a third of this.
    pub lease_ttl: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            only: None,
            fail_fast: false,
            jobs: 1,
            lease_ttl: Duration::from_secs(60),
        }
    }
}

/// What one `exec` did.
#[derive(Debug, Default, Clone)]
pub struct ExecSummary {
    /// Jobs this run completed.
    pub ran: usize,
    /// Jobs already done before this run.
    pub already_done: usize,
    /// Jobs that failed in this run: (label, error).
    pub failed: Vec<(String, String)>,
    /// Jobs not run because a dependency failed or is not available.
    pub blocked: usize,
    /// Jobs of stages this build lacks, by kind.
    pub unavailable: Vec<(String, usize)>,
}

/// Everything a running stage may use.
pub struct JobContext<'a> {
    /// The store (the worker's own connection).
    pub store: &'a Store,
    /// The job.
    pub job: &'a crate::plan::Job,
    /// The lease owner (needed to record completion atomically).
    pub owner: &'a str,
    /// A directory for this job's artifacts (created).
    pub artifacts: PathBuf,
    /// The root of all run artifacts (the database's directory).
    pub runs_dir: PathBuf,
    /// The loaded experiment (variant configs).
    pub loaded: &'a crate::config::Loaded,
    /// Progress within the job.
    pub progress: &'a JobProgress,
}

impl JobContext<'_> {
    /// The experiment of the first variant that uses this job.
    pub fn experiment(&self) -> &crate::config::Experiment {
        let name = self.job.variants.first().map(String::as_str).unwrap_or("");
        self.loaded
            .variants
            .iter()
            .find(|v| v.name == name)
            .map(|v| &v.experiment)
            .unwrap_or(&self.loaded.composed.experiment)
    }
}

/// The directory of run artifacts: the database's directory (`runs/` by default).
pub fn runs_dir(db: &Path) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Records the plan in the store (experiment, variants, jobs) in one transaction.
pub fn record_plan(store: &Store, plan: &Plan) -> Result<()> {
    let jobs: Vec<NewJob> = plan
        .jobs
        .iter()
        .map(|j| NewJob {
            hash: j.hash.clone(),
            kind: j.kind.as_str().to_string(),
            spec: crate::plan::hash::canonical_json(&j.spec),
        })
        .collect();
    let variants: Vec<(String, String, Vec<String>)> = plan
        .variants
        .iter()
        .map(|(name, o)| (name.clone(), o.to_string(), plan.variant_jobs(name)))
        .collect();
    store.record_experiment(
        &plan.name,
        &plan.experiment_hash,
        &plan.resolved,
        &variants,
        &jobs,
    )?;
    Ok(())
}

fn selected(kind: JobKind, only: Option<Only>) -> bool {
    match only {
        None => true,
        Some(Only::Train) => kind != JobKind::Eval,
        Some(Only::Eval) => kind == JobKind::Eval,
    }
}

/// Runs the plan's pending jobs against the database at `db`.
pub fn exec(
    plan: &Plan,
    loaded: &crate::config::Loaded,
    db: &Path,
    opts: &ExecOptions,
) -> Result<ExecSummary> {
    let store = Store::open(db)?;
    record_plan(&store, plan)?;
    let runs_dir = runs_dir(db);

    let hashes: Vec<String> = plan.jobs.iter().map(|j| j.hash.clone()).collect();
    // A done job whose outputs were deleted or overwritten runs again.
    for (hash, st) in store.job_status(&hashes)? {
        let Some(job) = plan.jobs.iter().find(|j| j.hash == hash) else {
            continue;
        };
        if st.state == JobState::Done
            && selected(job.kind, opts.only)
            && stages::stage_for(job.kind).is_some_and(|s| !s.intact(job, &runs_dir))
        {
            store.invalidate(&hash, "outputs missing or overwritten")?;
        }
    }
    let initial = store.job_status(&hashes)?;
    let mut summary = ExecSummary {
        already_done: plan
            .jobs
            .iter()
            .filter(|j| selected(j.kind, opts.only))
            .filter(|j| {
                initial
                    .get(&j.hash)
                    .is_some_and(|s| s.state == JobState::Done)
            })
            .count(),
        ..Default::default()
    };
    let mut unavailable: Vec<(String, usize)> = Vec::new();
    for j in plan.jobs.iter().filter(|j| selected(j.kind, opts.only)) {
        let done = initial
            .get(&j.hash)
            .is_some_and(|s| s.state == JobState::Done);
        if !done && stages::stage_for(j.kind).is_none() {
            match unavailable.iter_mut().find(|(k, _)| k == j.kind.as_str()) {
                Some((_, n)) => *n += 1,
                None => unavailable.push((j.kind.as_str().to_string(), 1)),
            }
        }
    }
    summary.unavailable = unavailable;

    let total = plan
        .jobs
        .iter()
        .filter(|j| selected(j.kind, opts.only))
        .count() as u64;
    let reporter = Reporter::new(total);
    for _ in 0..summary.already_done {
        reporter.job_finished();
    }
    let shared = Shared {
        failed: Mutex::new(HashSet::new()),
        ran: Mutex::new(0),
        failures: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    };
    let workers = opts.jobs.max(1);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (shared, reporter, runs_dir) = (&shared, &reporter, &runs_dir);
                s.spawn(move || worker(w, plan, loaded, db, runs_dir, opts, shared, reporter))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => anyhow::bail!("an exec worker thread panicked"),
            }
        }
        Ok(())
    })?;
    reporter.finish();

    let statuses = store.job_status(&hashes)?;
    summary.ran = *shared.ran.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    summary.failed = shared
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    summary.blocked = plan
        .jobs
        .iter()
        .filter(|j| selected(j.kind, opts.only))
        .filter(|j| stages::stage_for(j.kind).is_some())
        .filter(|j| {
            statuses
                .get(&j.hash)
                .is_some_and(|s| s.state == JobState::Pending)
        })
        .count();
    Ok(summary)
}

struct Shared {
    failed: Mutex<HashSet<String>>,
    ran: Mutex<usize>,
    failures: Mutex<Vec<(String, String)>>,
    stop: AtomicBool,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    id: usize,
    plan: &Plan,
    loaded: &crate::config::Loaded,
    db: &Path,
    runs_dir: &Path,
    opts: &ExecOptions,
    shared: &Shared,
    reporter: &Reporter,
) -> Result<()> {
    let store = Store::open(db)?;
    let owner = lease::new_owner(id);
    let hashes: Vec<String> = plan.jobs.iter().map(|j| j.hash.clone()).collect();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let statuses = store.job_status(&hashes)?;
        let failed_here = shared.failed.lock().map(|f| f.clone()).unwrap_or_default();
        let state = |h: &str| {
            statuses
                .get(h)
                .map(|s| s.state)
                .unwrap_or(JobState::Pending)
        };
        let mut waiting = false;
        let mut claimed = None;
        for job in &plan.jobs {
            if !selected(job.kind, opts.only)
                || state(&job.hash) == JobState::Done
                || failed_here.contains(&job.hash)
                || stages::stage_for(job.kind).is_none()
            {
                continue;
            }
            // Dependencies not all done: blocked (failed/unavailable), or waiting on a running job,
            // which the check after the loop sees.
            if !job.deps.iter().all(|d| state(d) == JobState::Done) {
                continue;
            }
            let st = statuses.get(&job.hash);
            let stale_owner = st
                .filter(|s| s.state == JobState::Running)
                .and_then(|s| s.lease_owner.clone())
                .filter(|o| lease::is_dead_local(o));
            if let Some(s) = st.filter(|s| s.state == JobState::Running && !s.lease_expired)
                && stale_owner.is_none()
                && s.lease_owner.as_deref() != Some(owner.as_str())
            {
                continue; // another live process runs it
            }
            if store.try_claim(&job.hash, &owner, opts.lease_ttl, stale_owner.as_deref())? {
                claimed = Some(job);
                break;
            }
            // Another worker claimed it after our status snapshot: its dependants may wait on it.
            waiting = true;
        }
        // A job running anywhere may unblock a pending one (also one whose dependency is still
        // pending behind it), so stop only when nothing runs.
        waiting |= statuses
            .values()
            .any(|s| s.state == JobState::Running && !s.lease_expired);
        match claimed {
            Some(job) => run_job(
                job, plan, loaded, &store, &owner, db, runs_dir, opts, shared, reporter,
            )?,
            None if waiting => std::thread::sleep(Duration::from_millis(500)),
            None => return Ok(()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    job: &crate::plan::Job,
    plan: &Plan,
    loaded: &crate::config::Loaded,
    store: &Store,
    owner: &str,
    db: &Path,
    runs_dir: &Path,
    opts: &ExecOptions,
    shared: &Shared,
    reporter: &Reporter,
) -> Result<()> {
    let stage = stages::stage_for(job.kind).context("no stage for job")?;
    let artifacts = backbone::job_dir(runs_dir, job.kind, &job.hash);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("cannot create {}", artifacts.display()))?;
    record_environment(store, &job.hash, &loaded.composed.experiment.device);

    // Heartbeats keep the lease while the stage runs.
    let stop = Arc::new(AtomicBool::new(false));
    let hb = {
        let (stop, db, hash, owner, ttl) = (
            stop.clone(),
            db.to_path_buf(),
            job.hash.clone(),
            owner.to_string(),
            opts.lease_ttl,
        );
        std::thread::spawn(move || {
            let Ok(hb_store) = Store::open(&db) else {
                return;
            };
            let period = ttl / 3;
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= period {
                    let _ = hb_store.heartbeat(&hash, &owner, ttl);
                    last = Instant::now();
                }
            }
        })
    };

    let progress = reporter.job_bar(&job.label);
    let started = Instant::now();
    let ctx = JobContext {
        store,
        job,
        owner,
        artifacts,
        runs_dir: runs_dir.to_path_buf(),
        loaded,
        progress: &progress,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stage.run(&ctx)))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("internal error (panic): {msg}"))
        });
    stop.store(true, Ordering::SeqCst);
    let _ = hb.join();
    progress.done();
    let wall = started.elapsed().as_secs_f64();
    let _ = plan;
    match outcome {
        Ok(StageOutcome::Done(result)) => {
            store.finish(&job.hash, owner, &result.to_string(), wall)?;
            if let Ok(mut n) = shared.ran.lock() {
                *n += 1;
            }
        }
        Ok(StageOutcome::Recorded) => {
            if let Ok(mut n) = shared.ran.lock() {
                *n += 1;
            }
        }
        Err(err) => {
            let msg = format!("{err:#}");
            store.fail(&job.hash, owner, &msg, wall)?;
            reporter.line(&format!("FAILED {}: {msg}", job.label));
            if let Ok(mut f) = shared.failed.lock() {
                f.insert(job.hash.clone());
            }
            if let Ok(mut f) = shared.failures.lock() {
                f.push((job.label.clone(), msg));
            }
            if opts.fail_fast {
                shared.stop.store(true, Ordering::SeqCst);
            }
        }
    }
    reporter.job_finished();
    Ok(())
}

/// Records git sha, crate versions, host and device for a job (best effort).
fn record_environment(store: &Store, hash: &str, device: &str) {
    let git_sha = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let versions = serde_json::json!({
        "runner": env!("CARGO_PKG_VERSION"),
        "candle": "0.11",
        "rustc_target": std::env::consts::ARCH,
    });
    let _ = store.put_environment(
        Some(hash),
        git_sha.as_deref(),
        &versions.to_string(),
        &lease::hostname(),
        device,
    );
}
