-- Every state change of a job, in order, with who made it: the audit trail of `runner exec`.
CREATE TABLE job_events (
    id        INTEGER PRIMARY KEY,
    job_hash  TEXT NOT NULL REFERENCES jobs(hash),
    state     TEXT NOT NULL,
    owner     TEXT,
    message   TEXT,
    at        TEXT NOT NULL
);
CREATE INDEX job_events_by_job ON job_events (job_hash, id);
CREATE INDEX eval_cells_by_grid ON eval_cells (dataset, shots, seed);
