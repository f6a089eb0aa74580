//! Object modes end to end: a sync file with `mode = "insert"`, `"update"` or `"upsert"` runs
//! against the HubSpot fake, and the records it holds after each run are what the mode says.

use std::sync::Arc;

use tideway_activate::config::{Mode, OnDelete};
use tideway_activate::destination::Op;
use tideway_activate::destination::hubspot::{self, HubSpotConfig};
use tideway_activate::fake::hubspot::{FakeHubSpot, FakeOptions, start};
use tideway_activate::{SyncConfig, SyncJob};
use tideway_core::config::Secret;
use tideway_lake::Lake;

use crate::golden::options;
use crate::support::Recorder;

/// The sync `name` (its state is its own) writing `crm.leads` with `mode`.
fn job(fake: &FakeHubSpot, name: &str, mode: &str) -> SyncJob {
    let text = format!(
        "source = \"crm.leads\"\nkey = \"email\"\ndestination = \"hs\"\ntype = \"identify\"\nmode = \"{mode}\"\ndead_letter_after = 10\n"
    );
    let config = SyncConfig::parse(
        &text,
        &format!("syncs/{name}.toml"),
        &["hs".to_string()],
        &[],
    )
    .unwrap();
    let mut hs = HubSpotConfig::new(Secret::new(fake.access_token()));
    hs.base_url = Some(fake.base_url().to_string());
    SyncJob::new(
        config,
        Arc::new(hubspot::build("hs", hs)),
        &[],
        Default::default(),
    )
    .unwrap()
}

/// Someone else's upsert sync (`seed`, with its own state) writes `crm.leads` as it is now.
async fn seed(fake: &FakeHubSpot, lake: &Lake) {
    job(fake, "seed", "upsert")
        .run(lake, &options(), &|_| {})
        .await
        .unwrap();
}

async fn lake_with(rows: &str) -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string(), Default::default())
        .await
        .unwrap();
    lake.sql("CREATE TABLE crm.leads (email VARCHAR, firstname VARCHAR)")
        .await
        .unwrap();
    set(&lake, rows).await;
    (dir, lake)
}

async fn set(lake: &Lake, rows: &str) {
    lake.sql("DELETE FROM crm.leads").await.unwrap();
    lake.sql(&format!("INSERT INTO crm.leads VALUES {rows}"))
        .await
        .unwrap();
}

fn firstname(fake: &FakeHubSpot, email: &str) -> Option<String> {
    fake.contact("email", email)
        .map(|c| c.properties["firstname"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn insert_creates_new_rows_skips_changed_ones_and_refuses_records_that_exist() {
    let fake = start(FakeOptions::default()).await.unwrap();
    // Someone else created b@example.com in HubSpot already.
    let (_d, lake) = lake_with("('b@example.com', 'Theirs')").await;
    seed(&fake, &lake).await;

    let (_d, lake) = lake_with("('a@example.com', 'Ann'), ('b@example.com', 'Bo')").await;
    let insert = job(&fake, "leads", "insert");
    let report = insert.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(firstname(&fake, "a@example.com").as_deref(), Some("Ann"));
    assert_eq!(
        firstname(&fake, "b@example.com").as_deref(),
        Some("Theirs"),
        "insert never overwrites"
    );
    assert_eq!(
        (report.counts.delivered, report.counts.rejected),
        (1, 1),
        "{report:?}"
    );
    let (key, message) = &report.problems[0];
    assert_eq!(key, "b@example.com");
    assert!(
        message.contains("409") || message.contains("Contact already exists"),
        "{message}"
    );

    // A changed row is skipped; a new one is created.
    set(&lake, "('a@example.com', 'Anne'), ('c@example.com', 'Cy')").await;
    let report = insert.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(firstname(&fake, "a@example.com").as_deref(), Some("Ann"));
    assert_eq!(firstname(&fake, "c@example.com").as_deref(), Some("Cy"));
    assert_eq!(report.counts.skipped, 1, "{report:?}");
    assert_eq!(report.counts.delivered, 1, "{report:?}");
    assert_eq!(fake.contacts().len(), 3);
    // Nothing changed since: nothing is sent.
    let again = insert.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(again.events, 0, "{again:?}");
    fake.stop().await;
}

#[tokio::test]
async fn update_changes_records_that_exist_and_creates_none() {
    let fake = start(FakeOptions::default()).await.unwrap();
    let (_d, lake) = lake_with("('a@example.com', 'Ann')").await;
    seed(&fake, &lake).await;

    set(
        &lake,
        "('a@example.com', 'Anne'), ('new@example.com', 'Nu')",
    )
    .await;
    let update = job(&fake, "leads", "update");
    let report = update.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(firstname(&fake, "a@example.com").as_deref(), Some("Anne"));
    assert_eq!(
        firstname(&fake, "new@example.com"),
        None,
        "update creates nothing"
    );
    assert_eq!(fake.contacts().len(), 1);
    assert_eq!(
        (report.counts.delivered, report.counts.rejected),
        (1, 1),
        "{report:?}"
    );
    let (key, message) = &report.problems[0];
    assert_eq!(key, "new@example.com");
    assert!(message.contains("not exist"), "{message}");

    // Once the contact exists, the refused row goes through on the next run.
    set(&lake, "('new@example.com', 'Nu')").await;
    seed(&fake, &lake).await;
    set(
        &lake,
        "('a@example.com', 'Anne'), ('new@example.com', 'Newer')",
    )
    .await;
    let report = update.run(&lake, &options(), &|_| {}).await.unwrap();
    assert_eq!(
        firstname(&fake, "new@example.com").as_deref(),
        Some("Newer")
    );
    assert_eq!(report.counts.rejected, 0, "{report:?}");
    fake.stop().await;
}

#[test]
fn a_mode_the_sync_cannot_have_is_an_error_at_its_line() {
    let parse = |rest: &str| {
        SyncConfig::parse(
            &format!("source = \"crm.leads\"\nkey = \"email\"\ndestination = \"hs\"\n{rest}"),
            "syncs/leads.toml",
            &["hs".to_string()],
            &[],
        )
        .map_err(|e| e.to_string())
    };
    let err = parse("type = \"identify\"\nmode = \"merge\"\n").unwrap_err();
    assert!(
        err.contains(
            "leads.toml:5:8: unknown mode `merge`; use `upsert`, `update`, `insert`, `mirror`"
        ),
        "{err}"
    );
    let err = parse("type = \"track\"\nevent = \"Scored\"\nmode = \"insert\"\n").unwrap_err();
    assert!(
        err.contains("leads.toml:6:8: `mode` says how an identify or group sync writes records; a `track` sync sends events"),
        "{err}"
    );
    let err =
        parse("type = \"identify\"\nmode = \"mirror\"\non_delete = \"ignore\"\n").unwrap_err();
    assert!(
        err.contains("leads.toml:6:13: `mode = \"mirror\"` deletes the records of removed rows; `on_delete = \"ignore\"` says otherwise"),
        "{err}"
    );
    let mirror = parse("type = \"group\"\nmode = \"mirror\"\n").unwrap();
    assert_eq!(mirror.on_delete, OnDelete::Delete);
    assert_eq!(mirror.mode, Mode::Mirror);
    let default = parse("type = \"identify\"\n").unwrap();
    assert_eq!(
        (default.mode, default.on_delete),
        (Mode::Upsert, OnDelete::Ignore)
    );
}

/// A run that crashed after the destination created a row's record (before the state
/// committed): the rerun upserts the row, where a second insert would be refused as a
/// duplicate.
#[tokio::test]
async fn an_insert_a_crashed_run_delivered_is_upserted_on_the_rerun() {
    let (_d, lake) = lake_with("('a@example.com', 'Ann'), ('b@example.com', 'Bo')").await;
    let config = SyncConfig::parse(
        "source = \"crm.leads\"\nkey = \"email\"\ndestination = \"rec\"\ntype = \"identify\"\nmode = \"insert\"\n",
        "syncs/leads.toml",
        &["rec".to_string()],
        &[],
    )
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    let opts = options();
    {
        let run = job.run(&lake, &opts, &|_| {});
        tokio::pin!(run);
        let delivered = async {
            while recorder.accepted.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            biased;
            r = &mut run => panic!("the run was to be dropped mid-delivery, it ended: {r:?}"),
            () = delivered => {}
        }
    }
    let first: Vec<Op> = recorder.take().iter().map(|e| e.op).collect();
    assert!(first.iter().all(|op| *op == Op::Insert), "{first:?}");
    let report = job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!(report.counts.rejected, 0, "{report:?}");
    let again = recorder.take();
    assert_eq!(again.len(), 2, "both rows are sent again");
    // Both were written ahead as `sending`: the destination may hold either.
    assert!(again.iter().all(|e| e.op == Op::Upsert), "{again:?}");
    assert_eq!(recorder.holds.lock().unwrap().len(), 2);
    let last = job.run(&lake, &opts, &|_| {}).await.unwrap();
    assert_eq!(last.events, 0, "{last:?}");
}

/// `on_delete = "clear_fields"` blanks the record of a removed row: an update in insert mode
/// too, so that a record deleted at the destination is not created again, empty.
#[tokio::test]
async fn clear_fields_of_an_insert_sync_never_creates_a_record() {
    let (_d, lake) = lake_with("('a@example.com', 'Ann'), ('b@example.com', 'Bo')").await;
    let config = SyncConfig::parse(
        "source = \"crm.leads\"\nkey = \"email\"\ndestination = \"rec\"\ntype = \"identify\"\nmode = \"insert\"\non_delete = \"clear_fields\"\n",
        "syncs/leads.toml",
        &["rec".to_string()],
        &[],
    )
    .unwrap();
    let recorder = Arc::new(Recorder::new());
    let job = SyncJob::new(config, recorder.clone(), &[], Default::default()).unwrap();
    job.run(&lake, &options(), &|_| {}).await.unwrap();
    // Someone deletes b's record at the destination; then both rows leave the source.
    recorder.holds.lock().unwrap().remove("b@example.com");
    recorder.take();
    set(&lake, "('c@example.com', 'Cy')").await;
    let report = job.run(&lake, &options(), &|_| {}).await.unwrap();
    let sent: Vec<(String, Op)> = recorder
        .take()
        .iter()
        .map(|e| (e.origin.clone(), e.op))
        .collect();
    assert!(
        sent.contains(&("a@example.com".into(), Op::Update))
            && sent.contains(&("c@example.com".into(), Op::Insert)),
        "{sent:?}"
    );
    assert_eq!(
        report.counts.rejected, 1,
        "b's update is refused: {report:?}"
    );
    assert!(!recorder.holds.lock().unwrap().contains_key("b@example.com"));
    assert_eq!(
        recorder.holds.lock().unwrap()["a@example.com"]["traits"].get("firstname"),
        Some(&serde_json::Value::Null),
        "a's fields are blanked"
    );
}
