//! The store: migrations (including from an older schema), WAL, leases, atomic completion.

use std::time::Duration;

use results::store::migrations;
use results::{EvalCell, JobState, NewJob, Prediction, Store};
use sqlx::migrate::Migrator;

fn job(hash: &str) -> NewJob {
    NewJob {
        hash: hash.into(),
        kind: "eval".into(),
        spec: "{}".into(),
    }
}

fn setup(store: &Store, hashes: &[&str]) {
    let jobs: Vec<NewJob> = hashes.iter().map(|h| job(h)).collect();
    store
        .record_experiment(
            "e",
            "h1",
            "name = \"e\"",
            &[(
                "v".into(),
                "{}".into(),
                hashes.iter().map(|h| h.to_string()).collect(),
            )],
            &jobs,
        )
        .unwrap();
}

#[test]
fn a_database_made_by_an_older_version_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    let first_only = Migrator::with_migrations(migrations().into_iter().take(1).collect());
    {
        let old = Store::open_with(&path, first_only).unwrap();
        setup(&old, &["a"]);
        assert!(
            old.count("SELECT COUNT(*) FROM job_events").is_err(),
            "v1 has no job_events"
        );
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.count("SELECT COUNT(*) FROM jobs").unwrap(),
        1,
        "data survives"
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM job_events").unwrap(), 0);
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM _sqlx_migrations")
            .unwrap(),
        migrations().len() as i64
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM pragma_table_info('eval_cells') WHERE name = 'groups'")
            .unwrap(),
        1,
        "v3 adds eval_cells.groups"
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'")
            .unwrap(),
        1
    );
}

#[test]
fn one_claimer_wins_and_expired_or_dead_leases_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.sqlite");
    let a = Store::open(&path).unwrap();
    let b = Store::open(&path).unwrap();
    setup(&a, &["j1"]);
    let ttl = Duration::from_secs(60);
    assert!(a.try_claim("j1", "host:1:a", ttl, None).unwrap());
    assert!(
        !b.try_claim("j1", "host:2:b", ttl, None).unwrap(),
        "a live lease blocks"
    );
    assert!(
        b.try_claim("j1", "host:2:b", ttl, Some("host:1:a"))
            .unwrap(),
        "a dead owner's lease is taken"
    );
    assert!(
        !a.finish("j1", "host:1:a", "{}", 1.0).unwrap(),
        "the old owner cannot finish any more"
    );
    assert!(
        b.heartbeat("j1", "host:2:b", Duration::from_millis(1))
            .unwrap()
    );
    std::thread::sleep(Duration::from_millis(20));
    let st = a.job_status(&["j1".into()]).unwrap();
    assert!(st["j1"].lease_expired);
    assert!(
        a.try_claim("j1", "host:3:c", ttl, None).unwrap(),
        "an expired lease is reclaimed"
    );
    assert!(a.finish("j1", "host:3:c", "{\"ok\":1}", 1.0).unwrap());
    let st = b.job_status(&["j1".into()]).unwrap();
    assert_eq!(st["j1"].state, JobState::Done);
    assert_eq!(st["j1"].attempts, 3);
    assert!(
        !b.try_claim("j1", "host:2:b", ttl, None).unwrap(),
        "done jobs are never claimed"
    );
    assert_eq!(
        a.count("SELECT COUNT(*) FROM job_events WHERE job_hash = 'j1'")
            .unwrap(),
        4
    );
}

#[test]
fn concurrent_claims_from_threads_never_double_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let s = Store::open(&path).unwrap();
    let hashes: Vec<String> = (0..20).map(|i| format!("j{i}")).collect();
    let refs: Vec<&str> = hashes.iter().map(String::as_str).collect();
    setup(&s, &refs);
    let wins: Vec<usize> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let (path, hashes) = (&path, &hashes);
                sc.spawn(move || {
                    let st = Store::open(path).unwrap();
                    hashes
                        .iter()
                        .filter(|h| {
                            st.try_claim(h, &format!("h:{w}:x"), Duration::from_secs(60), None)
                                .unwrap()
                        })
                        .count()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().sum::<usize>(), 20);
}

#[test]
fn an_eval_cell_and_its_done_state_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("e.sqlite")).unwrap();
    setup(&s, &["c1"]);
    let cell = EvalCell {
        job_hash: "c1".into(),
        dataset: "coco".into(),
        shots: 4,
        seed: 42,
        metric: "vqa-accuracy".into(),
        value: 0.5,
        count: 2,
        fingerprint: "{}".into(),
        groups: Some(r#"{"answer_type":{"number":{"score":50.0,"count":2}}}"#.into()),
    };
    // Not claimed by this owner: nothing is written.
    assert!(!s.finish_eval_cell("me", &cell, 1.0).unwrap());
    assert_eq!(s.count("SELECT COUNT(*) FROM eval_cells").unwrap(), 0);
    assert!(
        s.try_claim("c1", "me", Duration::from_secs(60), None)
            .unwrap()
    );
    let preds = vec![
        Prediction {
            example_id: "1".into(),
            prediction: "a cat".into(),
            score: None,
            extra: None,
        },
        Prediction {
            example_id: "2".into(),
            prediction: "a dog".into(),
            score: Some(0.1),
            extra: None,
        },
    ];
    s.put_predictions("c1", &preds[..1]).unwrap();
    s.put_predictions("c1", &preds).unwrap(); // re-flushing is idempotent
    assert_eq!(s.predictions("c1").unwrap(), preds);
    assert!(s.finish_eval_cell("me", &cell, 1.0).unwrap());
    let stored = &s.eval_cells(&["c1".into()]).unwrap()[0];
    assert_eq!(stored.value, 0.5);
    assert_eq!(stored.groups, cell.groups);
    assert_eq!(
        s.job_status(&["c1".into()]).unwrap()["c1"].state,
        JobState::Done
    );
}
