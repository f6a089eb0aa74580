//! Unify runs over a real lake: the tables written, incremental runs, and a crash at every
//! step of a run, then a rerun, giving the same tables as a run that never crashed.

use std::collections::HashMap;

use tideway_lake::{Lake, SqlOutput};
use tideway_unify::config::UnifyConfig;
use tideway_unify::explain::{explain, report, text_rows};
use tideway_unify::run::{CrashPoint, run, run_until};

const CONFIG: &str = r#"
[unify]
[[unify.sources]]
table = "crm.contacts"
ids = { email = "email", crm_id = "id", user_id = "external_id" }
time = "updated_at"
key = "id"
"#;

async fn open(dir: &tempfile::TempDir) -> Lake {
    Lake::open(dir.path().to_str().unwrap(), HashMap::new())
        .await
        .unwrap()
}

async fn exec(lake: &Lake, sql: &str) {
    lake.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const DAY1: &str = "
CREATE TABLE web.identifies (id VARCHAR, anonymous_id VARCHAR, user_id VARCHAR, email VARCHAR, timestamp TIMESTAMP);
INSERT INTO web.identifies VALUES
  ('m1', 'a1', NULL, NULL, TIMESTAMP '2026-11-01 10:00:00'),
  ('m2', 'a1', 'u1', 'Ann@Example.com', TIMESTAMP '2026-11-01 10:05:00'),
  ('m3', 'a2', NULL, NULL, TIMESTAMP '2026-11-01 11:00:00'),
  ('m4', 'a3', 'null', NULL, TIMESTAMP '2026-11-01 12:00:00');
CREATE TABLE web.tracks (id VARCHAR, anonymous_id VARCHAR, user_id VARCHAR, event VARCHAR, timestamp TIMESTAMP);
INSERT INTO web.tracks VALUES
  ('t1', 'a2', NULL, 'Viewed', TIMESTAMP '2026-11-01 11:01:00'),
  ('t2', 'a4', 'u2', 'Viewed', TIMESTAMP '2026-11-01 13:00:00');
CREATE TABLE crm.contacts (id VARCHAR, email VARCHAR, external_id VARCHAR, updated_at TIMESTAMP);
INSERT INTO crm.contacts VALUES
  ('c1', 'ann@example.com', NULL, TIMESTAMP '2026-11-01 09:00:00'),
  ('c2', 'bob@example.com', 'u2', TIMESTAMP '2026-11-01 09:30:00');
";

const DAY2: &str = "
INSERT INTO web.identifies VALUES
  ('m5', 'a2', NULL, 'bob@example.com', TIMESTAMP '2026-11-02 08:00:00'),
  ('m6', 'a5', 'u1', NULL, TIMESTAMP '2026-11-02 09:00:00');
INSERT INTO crm.contacts VALUES ('c3', 'cy@example.com', 'u1', TIMESTAMP '2026-11-02 10:00:00');
";

async fn snapshot(lake: &Lake) -> Vec<Vec<Option<String>>> {
    let mut out = text_rows(
        lake,
        "SELECT id_type, id_value, profile_id, first_seen, last_seen, source_table FROM profiles.identity_map ORDER BY id_type, id_value",
    )
    .await
    .unwrap();
    out.extend(
        text_rows(lake, "SELECT * FROM profiles.profiles ORDER BY profile_id")
            .await
            .unwrap(),
    );
    for t in ["profile_merges", "refused_edges", "identity_links"] {
        out.extend(
            text_rows(
                lake,
                &format!("SELECT * FROM profiles.{t} ORDER BY 1, 2, 3, 4, 5, 6, 7"),
            )
            .await
            .unwrap(),
        );
    }
    out
}

fn sources() -> Vec<String> {
    vec!["web".to_string()]
}

#[tokio::test]
async fn a_run_writes_the_profile_tables_and_the_next_run_reads_only_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(&dir).await;
    exec(&lake, DAY1).await;
    let config = UnifyConfig::parse(CONFIG, "tideway.toml").unwrap();
    let r1 = run(&lake, &config, &sources(), &()).await.unwrap();
    assert_eq!(r1.run, 1);
    let rows: u64 = r1.rows.iter().map(|r| r.1).sum();
    assert_eq!(rows, 8, "{:?}", r1.rows);
    // Ann: a1, u1, e-mail (lower-cased), crm c1 → one profile; a2 alone; Bob: a4, u2, c2, his
    // e-mail; a3 (its user id `null` refused).
    let p = text_rows(
        &lake,
        "SELECT profile_id, count(*) FROM profiles.identity_map GROUP BY profile_id ORDER BY 2 DESC",
    )
    .await
    .unwrap();
    let sizes: Vec<&str> = p.iter().map(|r| r[1].as_deref().unwrap()).collect();
    assert_eq!(sizes, ["4", "4", "1", "1"], "{p:?}");
    let refused = text_rows(&lake, "SELECT rule, to_value FROM profiles.refused_edges")
        .await
        .unwrap();
    assert_eq!(
        refused,
        [[Some("blocked_value".into()), Some("null".into())]]
    );
    let ann = explain(&lake, &config, "email:ANN@example.com")
        .await
        .unwrap();
    let text = ann.to_string();
    assert_eq!(ann.members.len(), 4, "{text}");
    assert!(text.contains("joined via"), "{text}");
    assert!(text.contains("crm.contacts row c1"), "{text}");

    // Day 2: Bob's e-mail joins a2; u1 gains a5 and the CRM's c3 (cy@ is a second e-mail).
    exec(&lake, DAY2).await;
    let r2 = run(&lake, &config, &sources(), &()).await.unwrap();
    assert_eq!(r2.run, 2);
    let rows: u64 = r2.rows.iter().map(|r| r.1).sum();
    assert_eq!(rows, 3, "only the new rows are read: {:?}", r2.rows);
    assert_eq!(r2.merges, 1, "a2's profile merges into Bob's");
    let bob = explain(&lake, &config, "anonymous_id:a2").await.unwrap();
    assert_eq!(bob.members.len(), 5, "{bob}");
    assert_eq!(bob.merges.len(), 1, "{bob}");
    // The absorbed profile's id leads to the survivor.
    let absorbed = bob.merges[0][0].clone().unwrap();
    let redirected = explain(&lake, &config, &absorbed).await.unwrap();
    assert_eq!(redirected.profile, bob.profile);
    assert!(redirected.to_string().contains("was merged into"));

    // Same as one run over both days.
    let dir2 = tempfile::tempdir().unwrap();
    let once = open(&dir2).await;
    exec(&once, DAY1).await;
    exec(&once, DAY2).await;
    run(&once, &config, &sources(), &()).await.unwrap();
    let ids = "SELECT id_type, id_value, profile_id FROM profiles.identity_map ORDER BY 1, 2";
    assert_eq!(
        text_rows(&lake, ids).await.unwrap(),
        text_rows(&once, ids).await.unwrap()
    );

    let rep = report(&lake).await.unwrap();
    assert_eq!(rep.profiles, 3);
    assert_eq!(rep.refused.get("blocked_value"), Some(&1));
    assert!(rep.to_string().contains("profiles by size"));
}

#[tokio::test]
async fn a_crash_at_any_step_then_a_rerun_gives_the_tables_of_an_uninterrupted_run() {
    let config = UnifyConfig::parse(CONFIG, "tideway.toml").unwrap();
    let clean_dir = tempfile::tempdir().unwrap();
    let clean = open(&clean_dir).await;
    exec(&clean, DAY1).await;
    run(&clean, &config, &sources(), &()).await.unwrap();
    exec(&clean, DAY2).await;
    run(&clean, &config, &sources(), &()).await.unwrap();
    let want = snapshot(&clean).await;

    for point in [
        CrashPoint::Planned,
        CrashPoint::History,
        CrashPoint::Profiles,
        CrashPoint::IdentityMap,
    ] {
        for crash_run in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let lake = open(&dir).await;
            exec(&lake, DAY1).await;
            let at = |run| (run == crash_run).then_some(point);
            let e = run_until(&lake, &config, &sources(), &(), at(1)).await;
            if crash_run == 1 {
                assert!(e.unwrap_err().to_string().contains("simulated crash"));
                // New rows arrive before the restart: they belong to the next run.
                exec(&lake, DAY2).await;
                let resumed = run(&lake, &config, &sources(), &()).await.unwrap();
                assert!(resumed.resumed, "{point:?}");
                assert_eq!(resumed.run, 1);
                run(&lake, &config, &sources(), &()).await.unwrap();
            } else {
                e.unwrap();
                exec(&lake, DAY2).await;
                let e = run_until(&lake, &config, &sources(), &(), at(2)).await;
                assert!(e.is_err(), "{point:?}");
                let resumed = run(&lake, &config, &sources(), &()).await.unwrap();
                assert!(resumed.resumed && resumed.run == 2, "{point:?}");
            }
            let got = snapshot(&lake).await;
            // Row order of history tables aside, identical (the `run` column included).
            assert_eq!(got.len(), want.len(), "{point:?} in run {crash_run}");
            let strip = |rows: &Vec<Vec<Option<String>>>| {
                let mut v: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
                v.sort();
                v
            };
            assert_eq!(strip(&got), strip(&want), "{point:?} in run {crash_run}");
            let runs = lake
                .sql("SELECT count(*) FROM _tideway.unify_runs WHERE status = 'done'")
                .await
                .unwrap();
            let SqlOutput::Rows(runs) = runs else {
                panic!()
            };
            assert_eq!(runs.num_rows(), 1);
        }
    }
}

#[tokio::test]
async fn a_missing_column_is_named_with_the_columns_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let lake = open(&dir).await;
    exec(&lake, "CREATE TABLE crm.contacts (id VARCHAR, mail VARCHAR, external_id VARCHAR, updated_at TIMESTAMP); INSERT INTO crm.contacts VALUES ('c1', 'a@b.io', NULL, TIMESTAMP '2026-11-01 09:00:00')").await;
    let config = UnifyConfig::parse(CONFIG, "tideway.toml").unwrap();
    let e = run(&lake, &config, &sources(), &())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unify source `crm.contacts`: its `email` column `email` does not exist; the table has: id, mail, external_id, updated_at"),
        "{e}"
    );
}
