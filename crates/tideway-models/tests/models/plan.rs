//! Impact analysis against a real lake: a project is run (deployed), then changed, then
//! planned. Dropping, renaming, retyping or narrowing a column a downstream model reads is
//! refused (by `plan` and by `run`) and names the reader's line; adding a column, changing one
//! nobody reads, or changing the reader in the same change-set is not.

use std::path::PathBuf;

use anyhow::Result;
use tideway_lake::Lake;
use tideway_models::compile::compile;
use tideway_models::plan::{ColumnChange, ModelStatus, Plan, plan, read_deployed};
use tideway_models::run::{self, RunError, RunOptions, Status};
use tideway_models::{Code, Compilation, Models};

use crate::run::{compiled, lake};

const REVENUE: &str = "select customer_id, sum(amount_cents) as revenue_cents, max(paid_at) as last_paid\nfrom billing.invoices\ngroup by customer_id";
const TOP: &str = "select customer_id,\n    revenue_cents / 100 as revenue\nfrom marts.revenue\nwhere revenue_cents > 0";
const PASS: &str = "select * from marts.revenue";
const PASS_READER: &str = "select customer_id, last_paid\nfrom marts.all_revenue";

async fn setup() -> Result<(tempfile::TempDir, Lake)> {
    let (dir, lake) = lake().await?;
    lake.sql("CREATE TABLE billing.invoices (customer_id BIGINT, amount_cents BIGINT, paid_at TIMESTAMP)")
        .await?;
    lake.sql("INSERT INTO billing.invoices VALUES (1, 500, TIMESTAMP '2025-06-01 10:00:00'), (2, 700, TIMESTAMP '2025-06-02 10:00:00')")
        .await?;
    Ok((dir, lake))
}

fn project(revenue: &str, top: &str) -> Vec<(&'static str, String)> {
    vec![
        ("models/marts/revenue.sql", revenue.to_string()),
        ("models/marts/top.sql", top.to_string()),
        ("models/marts/all_revenue.sql", PASS.to_string()),
        ("models/marts/recent.sql", PASS_READER.to_string()),
    ]
}

/// Compiles without asserting success (a breaking change can make a reader fail to compile).
async fn compile_any(lake: &Lake, files: &[(&str, String)]) -> Result<Compilation> {
    let sources = files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.clone()))
        .collect();
    let (models, errors) = Models::from_sources(sources);
    Ok(compile(models, errors, Some(lake)).await?)
}

async fn deploy(lake: &Lake, files: &[(&str, String)]) -> Result<()> {
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let c = compiled(lake, &borrowed).await?;
    let runs = run::run(lake, &c, &RunOptions::default(), |_| {}).await?;
    assert!(runs.iter().all(|r| r.status == Status::Success), "{runs:?}");
    Ok(())
}

async fn plan_of(lake: &Lake, files: &[(&str, String)]) -> Result<(Compilation, Plan)> {
    let c = compile_any(lake, files).await?;
    let deployed = read_deployed(lake).await?;
    let p = plan(&c, &deployed);
    Ok((c, p))
}

fn status(p: &Plan, model: &str) -> Option<ModelStatus> {
    p.models.iter().find(|m| m.model == model).map(|m| m.status)
}

fn changes(p: &Plan, model: &str) -> Vec<ColumnChange> {
    p.models
        .iter()
        .find(|m| m.model == model)
        .map(|m| m.columns.clone())
        .unwrap_or_default()
}

fn shown(p: &Plan) -> String {
    p.breaking
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn an_unchanged_project_plans_nothing_and_a_first_plan_adds_everything() -> Result<()> {
    let (_dir, lake) = setup().await?;
    let files = project(REVENUE, TOP);
    let (_, first) = plan_of(&lake, &files).await?;
    assert_eq!(first.count(ModelStatus::Added), 4, "{first:?}");
    assert!(first.is_safe() && first.deployed_at.is_none());
    deploy(&lake, &files).await?;
    let (_, again) = plan_of(&lake, &files).await?;
    assert!(again.models.is_empty(), "{again:?}");
    assert!(again.deployed_at.is_some());
    Ok(())
}

#[tokio::test]
async fn dropping_a_column_a_downstream_model_reads_is_refused_at_the_readers_line() -> Result<()> {
    let (_dir, lake) = setup().await?;
    deploy(&lake, &project(REVENUE, TOP)).await?;
    let dropped = "select customer_id, max(paid_at) as last_paid\nfrom billing.invoices\ngroup by customer_id";
    let files = project(dropped, TOP);
    let (_, p) = plan_of(&lake, &files).await?;
    assert_eq!(status(&p, "marts.revenue"), Some(ModelStatus::Modified));
    assert!(
        changes(&p, "marts.revenue").contains(&ColumnChange::Removed {
            column: "revenue_cents".into(),
            r#type: "Int64".into()
        })
    );
    assert!(!p.is_safe());
    let text = shown(&p);
    // The reader is named at the first place it names the column: line 2 of top.sql.
    assert!(
        text.contains(
            "`marts.revenue.revenue_cents` is removed (was Int64), and `marts.top` reads it"
        ) && text.contains("models/marts/top.sql:2:5"),
        "{text}"
    );
    assert!(p.breaking.iter().all(|d| d.code == Code::Breaking));
    // `run` refuses it before running anything.
    let c = compile_any(&lake, &files).await?;
    let before = crate::run::count(&lake, "_tideway.model_runs").await?;
    let refused = run::run(&lake, &c, &RunOptions::default(), |_| {}).await;
    assert!(matches!(
        refused,
        Err(RunError::NotCompiled(_)) | Err(RunError::Breaking(_))
    ));
    assert_eq!(
        crate::run::count(&lake, "_tideway.model_runs").await?,
        before
    );
    Ok(())
}

#[tokio::test]
async fn renaming_or_retyping_a_read_column_is_refused_and_fixing_the_reader_passes() -> Result<()>
{
    let (_dir, lake) = setup().await?;
    deploy(&lake, &project(REVENUE, TOP)).await?;
    // Renamed: same inputs, same type, new name.
    let renamed = REVENUE.replace("as revenue_cents", "as total_cents");
    let (_, p) = plan_of(&lake, &project(&renamed, TOP)).await?;
    assert!(
        changes(&p, "marts.revenue").contains(&ColumnChange::Renamed {
            column: "revenue_cents".into(),
            to: "total_cents".into()
        })
    );
    assert!(
        shown(&p).contains("is renamed to `total_cents`, and `marts.top` reads it"),
        "{}",
        shown(&p)
    );
    // Fixing the reader in the same change-set: accepted, and the reader is "changed too".
    let fixed_top = TOP.replace("revenue_cents", "total_cents");
    let (c, p) = plan_of(&lake, &project(&renamed, &fixed_top)).await?;
    assert!(c.is_ok() && p.is_safe(), "{}", shown(&p));
    assert!(
        p.impacts
            .iter()
            .any(|i| i.reader == "marts.top" && i.reader_changed)
    );
    assert_eq!(status(&p, "marts.top"), Some(ModelStatus::Modified));
    // ... and the run goes through and deploys it: the next plan is empty.
    deploy(&lake, &project(&renamed, &fixed_top)).await?;
    let (_, p) = plan_of(&lake, &project(&renamed, &fixed_top)).await?;
    assert!(p.models.is_empty(), "{p:?}");

    // Retyped to text: breaking for the reader that computes with it. A narrowed type is
    // breaking too, and the reader still compiles: only the plan can tell.
    let retyped = renamed.replace(
        "sum(amount_cents) as total_cents",
        "cast(sum(amount_cents) as varchar) as total_cents",
    );
    let (_, p) = plan_of(&lake, &project(&retyped, &fixed_top)).await?;
    assert!(
        changes(&p, "marts.revenue").iter().any(|c| matches!(c, ColumnChange::Retyped { column, from, to } if column == "total_cents" && from == "Int64" && to == "Utf8View")),
        "{p:?}"
    );
    assert!(!p.is_safe());
    let narrowed = renamed.replace(
        "sum(amount_cents) as total_cents",
        "cast(sum(amount_cents) as int) as total_cents",
    );
    let (c, p) = plan_of(&lake, &project(&narrowed, &fixed_top)).await?;
    assert!(c.is_ok(), "a narrowed column still compiles downstream");
    assert!(
        changes(&p, "marts.revenue").iter().any(|c| matches!(c, ColumnChange::Narrowed { from, to, .. } if from == "Int64" && to == "Int32")),
        "{p:?}"
    );
    assert!(
        shown(&p).contains("narrowed Int64 -> Int32"),
        "{}",
        shown(&p)
    );
    let refused = run::run(&lake, &c, &RunOptions::default(), |_| {}).await;
    match refused {
        Err(RunError::Breaking(d)) => assert_eq!(d.len(), 1, "{d:?}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn adding_a_column_or_changing_one_nobody_reads_is_not_breaking() -> Result<()> {
    let (_dir, lake) = setup().await?;
    deploy(&lake, &project(REVENUE, TOP)).await?;
    // Added column, and a filter edit: modified, recompute downstream, nothing refused.
    let added = "select customer_id, sum(amount_cents) as revenue_cents, max(paid_at) as last_paid, count(*) as invoices\nfrom billing.invoices\nwhere amount_cents > 0\ngroup by customer_id";
    let (_, p) = plan_of(&lake, &project(added, TOP)).await?;
    assert!(p.is_safe(), "{}", shown(&p));
    assert_eq!(
        changes(&p, "marts.revenue"),
        vec![ColumnChange::Added {
            column: "invoices".into(),
            r#type: "Int64".into()
        }]
    );
    assert_eq!(status(&p, "marts.top"), Some(ModelStatus::Recompute));
    let top = p.models.iter().find(|m| m.model == "marts.top").unwrap();
    assert_eq!(top.because, vec!["marts.revenue".to_string()]);
    // `select *` passes the new column on: all_revenue's columns change too, not breaking.
    assert!(
        changes(&p, "marts.all_revenue")
            .iter()
            .any(|c| matches!(c, ColumnChange::Added { column, .. } if column == "invoices"))
    );
    // Retyping `last_paid`, which top does not read but recent reads through all_revenue's
    // `*`: the change reaches recent through all_revenue, and is breaking there.
    let retyped = REVENUE.replace(
        "max(paid_at) as last_paid",
        "cast(max(paid_at) as date) as last_paid",
    );
    let (_, p) = plan_of(&lake, &project(&retyped, TOP)).await?;
    assert!(
        changes(&p, "marts.all_revenue")
            .iter()
            .any(|c| matches!(c, ColumnChange::Retyped { column, .. } if column == "last_paid")),
        "{p:?}"
    );
    let text = shown(&p);
    assert!(
        text.contains("`marts.all_revenue.last_paid` is retyped")
            && text.contains("models/marts/recent.sql:1:21"),
        "{text}"
    );
    assert!(
        !text.contains("marts.top"),
        "top does not read last_paid: {text}"
    );
    // Retyping a column nobody reads: fine.
    let lonely = "select customer_id, sum(amount_cents) as revenue_cents, max(paid_at) as last_paid\nfrom billing.invoices\ngroup by customer_id";
    let files = vec![
        ("models/marts/revenue.sql", lonely.to_string()),
        ("models/marts/top.sql", TOP.to_string()),
    ];
    let (_dir2, lake2) = setup().await?;
    deploy(&lake2, &files).await?;
    let changed = lonely.replace(
        "max(paid_at) as last_paid",
        "cast(max(paid_at) as date) as last_paid",
    );
    let files = vec![
        ("models/marts/revenue.sql", changed),
        ("models/marts/top.sql", TOP.to_string()),
    ];
    let (_, p) = plan_of(&lake2, &files).await?;
    assert!(p.is_safe(), "{}", shown(&p));
    assert!(
        changes(&p, "marts.revenue")
            .iter()
            .any(|c| matches!(c, ColumnChange::Retyped { .. }))
    );
    Ok(())
}

#[tokio::test]
async fn removing_a_model_that_others_read_is_refused_and_a_whole_run_forgets_removed_models()
-> Result<()> {
    let (_dir, lake) = setup().await?;
    deploy(&lake, &project(REVENUE, TOP)).await?;
    // recent.sql is gone, its table stays in the lake, nobody reads it: removed, not breaking.
    let mut files = project(REVENUE, TOP);
    files.retain(|(p, _)| !p.ends_with("recent.sql"));
    let (_, p) = plan_of(&lake, &files).await?;
    assert_eq!(status(&p, "marts.recent"), Some(ModelStatus::Removed));
    assert!(p.is_safe());
    deploy(&lake, &files).await?;
    let (_, p) = plan_of(&lake, &files).await?;
    assert!(
        p.models.is_empty(),
        "a whole run forgets removed models: {p:?}"
    );
    // revenue.sql is gone, but top still reads its (now unmaintained) table.
    let files: Vec<_> = files
        .into_iter()
        .filter(|(p, _)| !p.ends_with("/revenue.sql"))
        .collect();
    let (_, p) = plan_of(&lake, &files).await?;
    assert_eq!(status(&p, "marts.revenue"), Some(ModelStatus::Removed));
    let text = shown(&p);
    assert!(
        text.contains(
            "`marts.top` reads `marts.revenue`, whose model (models/marts/revenue.sql) is removed"
        ),
        "{text}"
    );
    Ok(())
}
