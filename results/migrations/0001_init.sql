-- Experiments, variants, jobs and their results. A job is identified by the hash of the inputs that
-- determine its result, so a job shared by several experiments or variants is computed once.

CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    hash        TEXT NOT NULL,          -- hash of the resolved configuration
    config      TEXT NOT NULL,          -- the resolved TOML
    created_at  TEXT NOT NULL,
    UNIQUE (name, hash)
);

CREATE TABLE variants (
    id            INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    name          TEXT NOT NULL,
    overrides     TEXT NOT NULL,        -- JSON object: dotted key -> value set by the sweep
    UNIQUE (experiment_id, name)
);

CREATE TABLE jobs (
    hash          TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,        -- synth | pretrain | train | eval
    spec          TEXT NOT NULL,        -- JSON: the resolved inputs the hash was computed from
    state         TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_expires REAL,                 -- unix seconds
    heartbeat     REAL,
    error         TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    wall_seconds  REAL,
    result        TEXT                  -- JSON summary written when done
);

-- Which experiment variant uses which job (many-to-many: jobs are shared by hash).
CREATE TABLE variant_jobs (
    variant_id INTEGER NOT NULL REFERENCES variants(id),
    job_hash   TEXT NOT NULL REFERENCES jobs(hash),
    PRIMARY KEY (variant_id, job_hash)
);

CREATE TABLE train_metrics (
    job_hash       TEXT NOT NULL REFERENCES jobs(hash),
    step           INTEGER NOT NULL,
    source         TEXT NOT NULL,       -- data source name, or 'all'
    loss           REAL,
    lr             REAL,
    grad_norm      REAL,
    tokens_per_s   REAL,
    samples_per_s  REAL,
    PRIMARY KEY (job_hash, step, source)
);

CREATE TABLE checkpoints (
    job_hash    TEXT NOT NULL REFERENCES jobs(hash),
    step        INTEGER NOT NULL,
    path        TEXT NOT NULL,
    sha256      TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_hash, step)
);

CREATE TABLE eval_cells (
    job_hash     TEXT PRIMARY KEY REFERENCES jobs(hash),
    dataset      TEXT NOT NULL,
    shots        INTEGER NOT NULL,
    seed         INTEGER NOT NULL,
    metric       TEXT NOT NULL,
    value        REAL NOT NULL,
    count        INTEGER NOT NULL,
    fingerprint  TEXT NOT NULL,         -- JSON: checkpoint, prompts, decoding, split, annotation sha256s, code version
    created_at   TEXT NOT NULL
);

CREATE TABLE predictions (
    job_hash    TEXT NOT NULL REFERENCES jobs(hash),
    example_id  TEXT NOT NULL,
    prediction  TEXT NOT NULL,
    score       REAL,
    extra       TEXT,
    PRIMARY KEY (job_hash, example_id)
);

CREATE TABLE environment (
    id           INTEGER PRIMARY KEY,
    job_hash     TEXT REFERENCES jobs(hash),
    git_sha      TEXT,
    versions     TEXT NOT NULL,         -- JSON: crate versions
    host         TEXT NOT NULL,
    device       TEXT NOT NULL,
    recorded_at  TEXT NOT NULL
);
