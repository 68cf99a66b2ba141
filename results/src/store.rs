//! The SQLite store of experiments, jobs and results (sqlx, embedded migrations, WAL).
//!
//! The API is synchronous: the store owns a small current-thread tokio runtime and blocks on each
//! query, so callers (the executor, training loops, reports) stay plain Rust. Every state change of
//! a job happens in one transaction together with its audit event.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlSafeStr, SqlitePool};

/// Errors of the store; each names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the results database {path}: {source}")]
    Open {
        /// Database file.
        path: PathBuf,
        /// Underlying error.
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("cannot migrate the results database {path}: {source}")]
    Migrate {
        /// Database file.
        path: PathBuf,
        /// Underlying error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("results database {path}: {what}: {source}")]
    Query {
        /// Database file.
        path: PathBuf,
        /// What the store was doing.
        what: &'static str,
        /// Underlying error.
        source: sqlx::Error,
    },
    /// The runtime for the store could not be created.
    #[error("cannot start the store runtime: {0}")]
    Runtime(std::io::Error),
}

/// The state of a job in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Not started, or released.
    Pending,
    /// Claimed by a live process (its lease has not expired).
    Running,
    /// Finished; its results are recorded.
    Done,
    /// The last attempt failed; `exec` retries it.
    Failed,
}

impl JobState {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "failed" => JobState::Failed,
            _ => JobState::Pending,
        }
    }
}

/// What the store knows about one job.
#[derive(Debug, Clone)]
pub struct JobStatus {
    /// Stored state (a `running` job whose lease expired is reported as `running` still; see
    /// [`JobStatus::lease_expired`]).
    pub state: JobState,
    /// Number of attempts so far.
    pub attempts: i64,
    /// Owner of the current or last lease.
    pub lease_owner: Option<String>,
    /// Whether a `running` job's lease has expired (its process died).
    pub lease_expired: bool,
    /// Error of the last failed attempt.
    pub error: Option<String>,
    /// JSON summary of the result, when done.
    pub result: Option<String>,
}

/// A job as registered by the planner.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Content hash (the job's identity).
    pub hash: String,
    /// Job kind: synth, pretrain, train, eval.
    pub kind: String,
    /// JSON of the resolved inputs.
    pub spec: String,
}

/// One evaluation cell with its metric value, as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalCell {
    /// Hash of the eval job.
    pub job_hash: String,
    /// Dataset name.
    pub dataset: String,
    /// Number of in-context examples.
    pub shots: i64,
    /// Demonstration seed.
    pub seed: i64,
    /// Metric name.
    pub metric: String,
    /// Metric value.
    pub value: f64,
    /// Number of scored examples.
    pub count: i64,
    /// JSON fingerprint of everything the value depends on.
    pub fingerprint: String,
    /// JSON scores of groups within the cell (VQA: `{"answer_type": {"number": {"score",
    /// "count"}, ..}, "question_type": {..}}`); `None` where the metric has none.
    pub groups: Option<String>,
}

/// One per-example prediction of an eval cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// Dataset example id (question id, image id, meme id).
    pub example_id: String,
    /// The model's output after post-processing.
    pub prediction: String,
    /// A score (e.g. P(yes) for classification), when the task has one.
    pub score: Option<f64>,
    /// Extra JSON (raw generation, timings).
    pub extra: Option<String>,
}

/// One training metrics row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainMetric {
    /// Optimizer step (1-based).
    pub step: i64,
    /// Data source name, or "all".
    pub source: String,
    /// Loss of this source (unweighted).
    pub loss: Option<f64>,
    /// Learning rate used at this step.
    pub lr: Option<f64>,
    /// Gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Throughput in tokens per second.
    pub tokens_per_s: Option<f64>,
    /// Throughput in samples per second.
    pub samples_per_s: Option<f64>,
}

/// A variant of an experiment, for reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantRow {
    /// Experiment name.
    pub experiment: String,
    /// Variant name.
    pub variant: String,
    /// Hashes of the jobs of this variant.
    pub job_hashes: Vec<String>,
}

/// The embedded migrations, in order. Keep old files unchanged: databases made by older versions
/// are migrated forward by the ones they lack.
pub fn migrations() -> Vec<Migration> {
    let files: [(i64, &str, &'static str); 3] = [
        (1, "init", include_str!("../migrations/0001_init.sql")),
        (
            2,
            "job events",
            include_str!("../migrations/0002_job_events.sql"),
        ),
        (
            3,
            "eval cell groups",
            include_str!("../migrations/0003_eval_cell_groups.sql"),
        ),
    ];
    files
        .into_iter()
        .map(|(version, name, sql)| {
            Migration::new(
                version,
                name.into(),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(sql.to_owned()).into_sql_str(),
                false,
            )
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// SQLite expression for the current UTC time as ISO 8601 text.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// A handle on the results database.
pub struct Store {
    rt: tokio::runtime::Runtime,
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, Migrator::with_migrations(migrations()))
    }

    /// Opens the database with a given migrator (tests use it to build an older schema).
    pub fn open_with(path: &Path, migrator: Migrator) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StoreError::Runtime)?;
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let opts = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = rt
            .block_on(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts),
            )
            .map_err(open_err)?;
        // Two processes opening a new database at once must not both apply the migrations:
        // hold an exclusive file lock beside the database while migrating.
        let lock_path = path.with_extension("sqlite.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|f| f.lock().map(|_| f))
            .map_err(|e| StoreError::Open {
                path: lock_path.clone(),
                source: sqlx::Error::Io(e),
            })?;
        let migrated = rt.block_on(migrator.run(&pool));
        drop(lock);
        migrated.map_err(|source| StoreError::Migrate {
            path: path.to_owned(),
            source,
        })?;
        Ok(Store {
            rt,
            pool,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
        move |source| StoreError::Query {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Records an experiment (idempotent on name + config hash) and its variants with their jobs;
    /// registers jobs not yet known as pending. Returns the experiment id.
    pub fn record_experiment(
        &self,
        name: &str,
        hash: &str,
        config: &str,
        variants: &[(String, String, Vec<String>)],
        jobs: &[NewJob],
    ) -> Result<i64, StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin"))?;
            sqlx::query(concat!(
                "INSERT INTO experiments (name, hash, config, created_at) VALUES (?, ?, ?, ", now!(), ")
                 ON CONFLICT (name, hash) DO NOTHING"
            ))
            .bind(name)
            .bind(hash)
            .bind(config)
            .execute(&mut *tx)
            .await
            .map_err(self.err("record experiment"))?;
            let exp_id: i64 =
                sqlx::query_scalar("SELECT id FROM experiments WHERE name = ? AND hash = ?")
                    .bind(name)
                    .bind(hash)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(self.err("read experiment id"))?;
            for job in jobs {
                sqlx::query(concat!(
                    "INSERT INTO jobs (hash, kind, spec, state, created_at) VALUES (?, ?, ?, 'pending', ", now!(), ")
                     ON CONFLICT (hash) DO NOTHING"
                ))
                .bind(&job.hash)
                .bind(&job.kind)
                .bind(&job.spec)
                .execute(&mut *tx)
                .await
                .map_err(self.err("register job"))?;
            }
            for (variant, overrides, hashes) in variants {
                sqlx::query(
                    "INSERT INTO variants (experiment_id, name, overrides) VALUES (?, ?, ?)
                     ON CONFLICT (experiment_id, name) DO NOTHING",
                )
                .bind(exp_id)
                .bind(variant)
                .bind(overrides)
                .execute(&mut *tx)
                .await
                .map_err(self.err("record variant"))?;
                let vid: i64 = sqlx::query_scalar(
                    "SELECT id FROM variants WHERE experiment_id = ? AND name = ?",
                )
                .bind(exp_id)
                .bind(variant)
                .fetch_one(&mut *tx)
                .await
                .map_err(self.err("read variant id"))?;
                for h in hashes {
                    sqlx::query(
                        "INSERT INTO variant_jobs (variant_id, job_hash) VALUES (?, ?)
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(vid)
                    .bind(h)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err("link variant job"))?;
                }
            }
            tx.commit().await.map_err(self.err("commit experiment"))?;
            Ok(exp_id)
        })
    }

    /// The status of each of the given jobs that the store knows.
    pub fn job_status(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashMap<String, JobStatus>, StoreError> {
        let now = unix_now();
        self.rt.block_on(async {
            let mut out = std::collections::HashMap::new();
            for chunk in hashes.chunks(400) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT hash, state, attempts, lease_owner, lease_expires, error, result
                     FROM jobs WHERE hash IN ({marks})"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for h in chunk {
                    q = q.bind(h);
                }
                let rows = q
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err("read job states"))?;
                for row in rows {
                    let expires: Option<f64> = row.get("lease_expires");
                    let state = JobState::parse(row.get::<&str, _>("state"));
                    out.insert(
                        row.get::<String, _>("hash"),
                        JobStatus {
                            state,
                            attempts: row.get("attempts"),
                            lease_owner: row.get("lease_owner"),
                            lease_expired: state == JobState::Running
                                && expires.is_none_or(|e| e < now),
                            error: row.get("error"),
                            result: row.get("result"),
                        },
                    );
                }
            }
            Ok(out)
        })
    }

    /// Claims a job for `owner` with a lease of `ttl`: succeeds when the job is pending or failed,
    /// or running under an expired lease (or under `stale_owner`, a lease known to be dead).
    /// Exactly one of several concurrent claimers wins.
    pub fn try_claim(
        &self,
        hash: &str,
        owner: &str,
        ttl: Duration,
        stale_owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = unix_now();
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin claim"))?;
            let res = sqlx::query(concat!(
                "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires = ?2, heartbeat = ?3,
                        attempts = attempts + 1, started_at = ", now!(), ", error = NULL
                 WHERE hash = ?4 AND (state IN ('pending', 'failed')
                       OR (state = 'running' AND (lease_expires IS NULL OR lease_expires < ?3
                                                  OR lease_owner = ?5)))"
            ))
            .bind(owner)
            .bind(now + ttl.as_secs_f64())
            .bind(now)
            .bind(hash)
            .bind(stale_owner.unwrap_or("\u{0}"))
            .execute(&mut *tx)
            .await
            .map_err(self.err("claim job"))?;
            let won = res.rows_affected() == 1;
            if won {
                insert_event(&mut tx, hash, "running", Some(owner), None)
                    .await
                    .map_err(self.err("record claim"))?;
            }
            tx.commit().await.map_err(self.err("commit claim"))?;
            Ok(won)
        })
    }

    /// Extends the lease of a running job; returns false when the lease was lost.
    pub fn heartbeat(&self, hash: &str, owner: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = unix_now();
        self.rt.block_on(async {
            let res = sqlx::query(
                "UPDATE jobs SET lease_expires = ?, heartbeat = ?
                 WHERE hash = ? AND lease_owner = ? AND state = 'running'",
            )
            .bind(now + ttl.as_secs_f64())
            .bind(now)
            .bind(hash)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(self.err("heartbeat"))?;
            Ok(res.rows_affected() == 1)
        })
    }

    /// Marks a job done with its JSON result summary (only if `owner` still holds it).
    pub fn finish(
        &self,
        hash: &str,
        owner: &str,
        result: &str,
        wall_seconds: f64,
    ) -> Result<bool, StoreError> {
        self.transition(hash, owner, "done", None, Some(result), wall_seconds)
    }

    /// Marks a job failed with its error (only if `owner` still holds it).
    pub fn fail(
        &self,
        hash: &str,
        owner: &str,
        error: &str,
        wall_seconds: f64,
    ) -> Result<bool, StoreError> {
        self.transition(hash, owner, "failed", Some(error), None, wall_seconds)
    }

    /// Makes a done job pending again (its outputs are gone), recording why.
    pub fn invalidate(&self, hash: &str, why: &str) -> Result<bool, StoreError> {
        self.rt.block_on(async {
            let mut tx = self
                .pool
                .begin()
                .await
                .map_err(self.err("begin invalidate"))?;
            let res =
                sqlx::query("UPDATE jobs SET state = 'pending' WHERE hash = ? AND state = 'done'")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(self.err("invalidate job"))?;
            let ok = res.rows_affected() == 1;
            if ok {
                insert_event(&mut tx, hash, "pending", None, Some(why))
                    .await
                    .map_err(self.err("record invalidation"))?;
            }
            tx.commit().await.map_err(self.err("commit invalidate"))?;
            Ok(ok)
        })
    }

    /// Releases a claimed job back to pending (e.g. its stage is not available in this build).
    pub fn release(&self, hash: &str, owner: &str, why: &str) -> Result<bool, StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin release"))?;
            let res = sqlx::query(
                "UPDATE jobs SET state = 'pending', lease_owner = NULL, lease_expires = NULL,
                        attempts = MAX(attempts - 1, 0)
                 WHERE hash = ? AND lease_owner = ? AND state = 'running'",
            )
            .bind(hash)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(self.err("release job"))?;
            let ok = res.rows_affected() == 1;
            if ok {
                insert_event(&mut tx, hash, "pending", Some(owner), Some(why))
                    .await
                    .map_err(self.err("record release"))?;
            }
            tx.commit().await.map_err(self.err("commit release"))?;
            Ok(ok)
        })
    }

    fn transition(
        &self,
        hash: &str,
        owner: &str,
        state: &'static str,
        error: Option<&str>,
        result: Option<&str>,
        wall_seconds: f64,
    ) -> Result<bool, StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin finish"))?;
            let res = sqlx::query(concat!(
                "UPDATE jobs SET state = ?, error = ?, result = COALESCE(?, result), finished_at = ", now!(), ",
                        wall_seconds = ?, lease_expires = NULL
                 WHERE hash = ? AND lease_owner = ? AND state = 'running'"
            ))
            .bind(state)
            .bind(error)
            .bind(result)
            .bind(wall_seconds)
            .bind(hash)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(self.err("finish job"))?;
            let ok = res.rows_affected() == 1;
            if ok {
                insert_event(&mut tx, hash, state, Some(owner), error)
                    .await
                    .map_err(self.err("record finish"))?;
            }
            tx.commit().await.map_err(self.err("commit finish"))?;
            Ok(ok)
        })
    }

    /// Records an eval cell's value and all its predictions, and marks the job done, in one
    /// transaction: a cell is either complete and done, or absent.
    pub fn finish_eval_cell(
        &self,
        owner: &str,
        cell: &EvalCell,
        wall_seconds: f64,
    ) -> Result<bool, StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin eval cell"))?;
            sqlx::query(concat!(
                "INSERT INTO eval_cells (job_hash, dataset, shots, seed, metric, value, count, fingerprint, groups, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ", now!(), ")
                 ON CONFLICT (job_hash) DO UPDATE SET value = excluded.value, count = excluded.count,
                    metric = excluded.metric, fingerprint = excluded.fingerprint, groups = excluded.groups"
            ))
            .bind(&cell.job_hash)
            .bind(&cell.dataset)
            .bind(cell.shots)
            .bind(cell.seed)
            .bind(&cell.metric)
            .bind(cell.value)
            .bind(cell.count)
            .bind(&cell.fingerprint)
            .bind(&cell.groups)
            .execute(&mut *tx)
            .await
            .map_err(self.err("record eval cell"))?;
            let result = serde_json::json!({"metric": cell.metric, "value": cell.value, "count": cell.count});
            let res = sqlx::query(concat!(
                "UPDATE jobs SET state = 'done', error = NULL, result = ?, finished_at = ", now!(), ",
                        wall_seconds = ?, lease_expires = NULL
                 WHERE hash = ? AND lease_owner = ? AND state = 'running'"
            ))
            .bind(result.to_string())
            .bind(wall_seconds)
            .bind(&cell.job_hash)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(self.err("finish eval job"))?;
            if res.rows_affected() != 1 {
                // Lost the lease: leave everything as it was.
                tx.rollback().await.map_err(self.err("rollback eval cell"))?;
                return Ok(false);
            }
            insert_event(&mut tx, &cell.job_hash, "done", Some(owner), None)
                .await
                .map_err(self.err("record eval event"))?;
            tx.commit().await.map_err(self.err("commit eval cell"))?;
            Ok(true)
        })
    }

    /// Stores a batch of per-example predictions of an eval job (idempotent per example id), so a
    /// killed cell resumes from what it had flushed.
    pub fn put_predictions(&self, job_hash: &str, preds: &[Prediction]) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin predictions"))?;
            for p in preds {
                sqlx::query(
                    "INSERT INTO predictions (job_hash, example_id, prediction, score, extra)
                     VALUES (?, ?, ?, ?, ?)
                     ON CONFLICT (job_hash, example_id) DO UPDATE SET prediction = excluded.prediction,
                        score = excluded.score, extra = excluded.extra",
                )
                .bind(job_hash)
                .bind(&p.example_id)
                .bind(&p.prediction)
                .bind(p.score)
                .bind(&p.extra)
                .execute(&mut *tx)
                .await
                .map_err(self.err("store prediction"))?;
            }
            tx.commit().await.map_err(self.err("commit predictions"))
        })
    }

    /// The stored predictions of an eval job.
    pub fn predictions(&self, job_hash: &str) -> Result<Vec<Prediction>, StoreError> {
        self.rt.block_on(async {
            let rows = sqlx::query(
                "SELECT example_id, prediction, score, extra FROM predictions WHERE job_hash = ?
                 ORDER BY example_id",
            )
            .bind(job_hash)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("read predictions"))?;
            Ok(rows
                .into_iter()
                .map(|r| Prediction {
                    example_id: r.get("example_id"),
                    prediction: r.get("prediction"),
                    score: r.get("score"),
                    extra: r.get("extra"),
                })
                .collect())
        })
    }

    /// Appends training metrics rows (idempotent per step and source: a resumed run overwrites).
    pub fn put_train_metrics(
        &self,
        job_hash: &str,
        rows: &[TrainMetric],
    ) -> Result<(), StoreError> {
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await.map_err(self.err("begin metrics"))?;
            for m in rows {
                sqlx::query(
                    "INSERT INTO train_metrics (job_hash, step, source, loss, lr, grad_norm, tokens_per_s, samples_per_s)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                     ON CONFLICT (job_hash, step, source) DO UPDATE SET loss = excluded.loss, lr = excluded.lr,
                        grad_norm = excluded.grad_norm, tokens_per_s = excluded.tokens_per_s,
                        samples_per_s = excluded.samples_per_s",
                )
                .bind(job_hash)
                .bind(m.step)
                .bind(&m.source)
                .bind(m.loss)
                .bind(m.lr)
                .bind(m.grad_norm)
                .bind(m.tokens_per_s)
                .bind(m.samples_per_s)
                .execute(&mut *tx)
                .await
                .map_err(self.err("store train metric"))?;
            }
            tx.commit().await.map_err(self.err("commit metrics"))
        })
    }

    /// Training metrics of a job, ordered by step.
    pub fn train_metrics(&self, job_hash: &str) -> Result<Vec<TrainMetric>, StoreError> {
        self.rt.block_on(async {
            let rows = sqlx::query(
                "SELECT step, source, loss, lr, grad_norm, tokens_per_s, samples_per_s
                 FROM train_metrics WHERE job_hash = ? ORDER BY step, source",
            )
            .bind(job_hash)
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("read train metrics"))?;
            Ok(rows
                .into_iter()
                .map(|r| TrainMetric {
                    step: r.get("step"),
                    source: r.get("source"),
                    loss: r.get("loss"),
                    lr: r.get("lr"),
                    grad_norm: r.get("grad_norm"),
                    tokens_per_s: r.get("tokens_per_s"),
                    samples_per_s: r.get("samples_per_s"),
                })
                .collect())
        })
    }

    /// Records a checkpoint written by a training job.
    pub fn put_checkpoint(
        &self,
        job_hash: &str,
        step: i64,
        path: &str,
        sha256: Option<&str>,
    ) -> Result<(), StoreError> {
        self.rt.block_on(async {
            sqlx::query(concat!(
                "INSERT INTO checkpoints (job_hash, step, path, sha256, created_at) VALUES (?, ?, ?, ?, ", now!(), ")
                 ON CONFLICT (job_hash, step) DO UPDATE SET path = excluded.path, sha256 = excluded.sha256"
            ))
            .bind(job_hash)
            .bind(step)
            .bind(path)
            .bind(sha256)
            .execute(&self.pool)
            .await
            .map_err(self.err("record checkpoint"))?;
            Ok(())
        })
    }

    /// Records the environment a job ran in.
    pub fn put_environment(
        &self,
        job_hash: Option<&str>,
        git_sha: Option<&str>,
        versions: &str,
        host: &str,
        device: &str,
    ) -> Result<(), StoreError> {
        self.rt.block_on(async {
            sqlx::query(concat!(
                "INSERT INTO environment (job_hash, git_sha, versions, host, device, recorded_at)
                 VALUES (?, ?, ?, ?, ?, ",
                now!(),
                ")"
            ))
            .bind(job_hash)
            .bind(git_sha)
            .bind(versions)
            .bind(host)
            .bind(device)
            .execute(&self.pool)
            .await
            .map_err(self.err("record environment"))?;
            Ok(())
        })
    }

    /// Eval cells of the given jobs.
    pub fn eval_cells(&self, hashes: &[String]) -> Result<Vec<EvalCell>, StoreError> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            for chunk in hashes.chunks(400) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT job_hash, dataset, shots, seed, metric, value, count, fingerprint, groups
                     FROM eval_cells WHERE job_hash IN ({marks})"
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for h in chunk {
                    q = q.bind(h);
                }
                for r in q
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err("read eval cells"))?
                {
                    out.push(EvalCell {
                        job_hash: r.get("job_hash"),
                        dataset: r.get("dataset"),
                        shots: r.get("shots"),
                        seed: r.get("seed"),
                        metric: r.get("metric"),
                        value: r.get("value"),
                        count: r.get("count"),
                        fingerprint: r.get("fingerprint"),
                        groups: r.get("groups"),
                    });
                }
            }
            Ok(out)
        })
    }

    /// The kind (synth, pretrain, train, eval) of each of the given jobs that the store knows.
    pub fn job_kinds(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        self.rt.block_on(async {
            let mut out = std::collections::HashMap::new();
            for chunk in hashes.chunks(400) {
                let marks = vec!["?"; chunk.len()].join(",");
                let sql = format!("SELECT hash, kind FROM jobs WHERE hash IN ({marks})");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for h in chunk {
                    q = q.bind(h);
                }
                for r in q
                    .fetch_all(&self.pool)
                    .await
                    .map_err(self.err("read job kinds"))?
                {
                    out.insert(r.get::<String, _>("hash"), r.get::<String, _>("kind"));
                }
            }
            Ok(out)
        })
    }

    /// Variants of the named experiments (all experiments when `names` is empty), newest
    /// configuration of each experiment name first, with their job hashes.
    pub fn variants(&self, names: &[String]) -> Result<Vec<VariantRow>, StoreError> {
        self.rt.block_on(async {
            // Latest recorded configuration per experiment name.
            let rows = sqlx::query(
                "SELECT e.name AS experiment, v.name AS variant, v.id AS vid
                 FROM experiments e JOIN variants v ON v.experiment_id = e.id
                 WHERE e.id IN (SELECT MAX(id) FROM experiments GROUP BY name)
                 ORDER BY e.name, v.id",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(self.err("read variants"))?;
            let mut out = Vec::new();
            for r in rows {
                let experiment: String = r.get("experiment");
                if !names.is_empty() && !names.contains(&experiment) {
                    continue;
                }
                let vid: i64 = r.get("vid");
                let job_hashes: Vec<String> =
                    sqlx::query_scalar("SELECT job_hash FROM variant_jobs WHERE variant_id = ?")
                        .bind(vid)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(self.err("read variant jobs"))?;
                out.push(VariantRow {
                    experiment,
                    variant: r.get("variant"),
                    job_hashes,
                });
            }
            Ok(out)
        })
    }

    /// Runs a read-only scalar count query (tests and diagnostics), e.g.
    /// `SELECT COUNT(*) FROM eval_cells`.
    pub fn count(&self, sql: &str) -> Result<i64, StoreError> {
        self.rt.block_on(async {
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&self.pool)
                .await
                .map_err(self.err("count"))
        })
    }
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    hash: &str,
    state: &str,
    owner: Option<&str>,
    message: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(concat!(
        "INSERT INTO job_events (job_hash, state, owner, message, at) VALUES (?, ?, ?, ?, ",
        now!(),
        ")"
    ))
    .bind(hash)
    .bind(state)
    .bind(owner)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
