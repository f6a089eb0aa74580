//! The webhook destination, end to end: a project's tideway.toml and sync file, a local
//! receiver that checks signatures and refuses bad events, and the sync's tables after.

use std::time::Duration;

use anyhow::Result;
use tideway_activate::delivery::RetryPolicy;
use tideway_activate::fake::webhook::{SinkOptions, WebhookSink};
use tideway_activate::{Project, RunOptions};
use tideway_lake::Lake;

use crate::support::count;

fn env(v: &str) -> Option<String> {
    (v == "HOOK_SECRET").then(|| "s3cr3t-value".to_string())
}

#[tokio::test]
async fn a_sync_through_the_webhook_signs_batches_and_finds_the_bad_rows() -> Result<()> {
    let sink = WebhookSink::start(SinkOptions {
        secret: Some("s3cr3t-value".into()),
        refuse_bad: true,
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("tideway.toml"),
        format!(
            "[destinations.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"${{HOOK_SECRET}}\"\nheaders = {{ \"X-Team\" = \"growth\" }}\nbatch_size = 10\n",
            sink.url
        ),
    )?;
    std::fs::create_dir(dir.path().join("syncs"))?;
    std::fs::write(
        dir.path().join("syncs/scores.toml"),
        "source = \"marts.scores\"\nkey = \"user_id\"\ndestination = \"hook\"\ntype = \"identify\"\ndead_letter_after = 1\n",
    )?;
    let project = Project::load(dir.path(), &env)?;
    let lake = Lake::open(
        &dir.path().join("lake").display().to_string(),
        Default::default(),
    )
    .await?;
    let values: Vec<String> = (0..95)
        .map(|i| format!("('u{i}', {i}, {})", i == 17 || i == 60))
        .collect();
    lake.sql(&format!(
        "CREATE TABLE marts.scores (user_id VARCHAR, score BIGINT, bad BOOLEAN); INSERT INTO marts.scores VALUES {}",
        values.join(", ")
    ))
    .await?;
    let job = project.job("scores")?;
    let options = RunOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(10),
        },
        ..Default::default()
    };
    let report = job.run(&lake, &options, &|_| {}).await?;
    assert_eq!(report.counts.added, 95);
    assert_eq!(report.counts.delivered, 93, "{report:?}");
    assert_eq!(
        report.counts.dead, 2,
        "the two bad rows, refused and dead-lettered at once"
    );
    assert_eq!(sink.event_count(), 93, "each good row delivered once");
    assert!(sink.headers().iter().all(|h| h["x-team"] == "growth"));
    let (requests, _, refused) = sink.counts();
    assert!(
        refused >= 2 && requests < 40,
        "batches of 10, split only around the bad rows: {requests} requests"
    );
    for e in job.destination().inspect() {
        assert!(!e.request.contains("s3cr3t-value") && !e.url.contains("s3cr3t-value"));
    }
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM _tideway.dead_letters WHERE source = 'sync:scores'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM _tideway.sync_log WHERE sync = 'scores' AND status = 'delivered'"
        )
        .await,
        93
    );
    // Nothing changed: nothing is sent, the dead rows stay dead.
    let again = job.run(&lake, &options, &|_| {}).await?;
    assert_eq!((again.events, again.counts.dead), (0, 0), "{again:?}");
    // Fixing the bad rows sends them.
    lake.sql("UPDATE marts.scores SET bad = false WHERE bad")
        .await?;
    let fixed = job.run(&lake, &options, &|_| {}).await?;
    assert_eq!(fixed.counts.delivered, 2, "{fixed:?}");
    assert_eq!(sink.event_count(), 95);
    sink.stop();
    Ok(())
}

#[tokio::test]
async fn destination_tables_are_checked_with_every_problem_at_once() {
    let text = "[project]\nname = \"x\"\n\n[destinations.hook]\ntype = \"webhok\"\n\n[destinations.other]\ntype = \"webhook\"\nurl = \"ftp://x\"\nsecret = \"plain\"\nbatchsize = 3\n";
    let err = tideway_activate::config::destinations(text, "tideway.toml", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "tideway.toml:5:8: unknown destination type `webhok`; did you mean `webhook`?"
        ),
        "{err}"
    );
    assert!(
        err.contains("tideway.toml:11:1: unknown field `batchsize`"),
        "{err}"
    );
}

#[test]
fn a_destination_whose_variable_is_unset_refuses_only_what_sends_to_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("tideway.toml"),
        "[destinations.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/in\"\nsecret = \"${HOOK_SECRET}\"\n\n\
         [destinations.crm]\ntype = \"webhook\"\nurl = \"${CRM_URL}\"\nsecret = \"${CRM_SECRET}\"\n",
    )?;
    std::fs::create_dir(dir.path().join("syncs"))?;
    for (name, destination) in [("scores", "hook"), ("leads", "crm")] {
        std::fs::write(
            dir.path().join(format!("syncs/{name}.toml")),
            format!(
                "source = \"marts.scores\"\nkey = \"user_id\"\ndestination = \"{destination}\"\ntype = \"identify\"\n"
            ),
        )?;
    }
    // CRM_URL and CRM_SECRET are not set: the project loads, the sync to `hook` is ready.
    let project = Project::load(dir.path(), &env)?;
    assert!(project.job("scores").is_ok());
    assert_eq!(
        project.unset.get("crm"),
        Some(&vec!["CRM_URL".to_string(), "CRM_SECRET".to_string()])
    );
    let Err(err) = project.job("leads") else {
        panic!("the sync to `crm` ran with its variables unset");
    };
    assert_eq!(
        err.to_string(),
        "sync `leads` sends to destination `crm`, which reads ${CRM_URL}, ${CRM_SECRET}, not set in this environment: set them to run it"
    );
    assert_eq!(tideway_core::Faulty::fault(&err), tideway_core::Fault::User);
    // Once set, an empty URL is a problem of the file again, at its line.
    let set = |v: &str| env(v).or_else(|| (v.starts_with("CRM_")).then(String::new));
    let err = Project::load(dir.path(), &set).unwrap_err().to_string();
    assert!(err.contains("tideway.toml:8:"), "{err}");
    Ok(())
}
