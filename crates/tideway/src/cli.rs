//! The commands.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tideway_core::Faulty;
use tideway_lake::{Executed, LakeError, TableName};

use crate::output::{self, Format};
use crate::project::Project;

const EXAMPLES: &str = "\
Examples:
  tideway demo                                   # a sample project with data, in ./tideway-demo
  tideway init my-project                        # scaffold a new project
  tideway tables                                 # every table: rows, version, last commit, size
  tideway sql \"SELECT plan, count(*) FROM crm.customers GROUP BY plan\"
  tideway sql --format csv \"SELECT * FROM events.tracks\" > tracks.csv
  tideway lake import seeds/countries.csv --table ref.countries --replace
  tideway lake optimize crm.customers
  tideway extract kustomer                       # pull what changed since the last run
  tideway sources check                          # validate sources/*.toml and test credentials
  tideway compile                                # type-check every model in models/ against its upstreams
  tideway compile marts.customer_health          # one model's inferred schema
  tideway run +marts.customer_health             # build it and everything it reads
";

/// Tideway: a customer data platform in one binary.
#[derive(Debug, Parser)]
#[command(name = "tideway", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// The project directory (default: the nearest directory upwards with a tideway.toml).
    #[arg(long, short = 'p', global = true, env = "TIDEWAY_PROJECT")]
    pub project: Option<PathBuf>,

    /// More logging (-v: info, -vv: debug); TIDEWAY_LOG=<filter> overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a sample project with generated customer data and show what to run next.
    Demo {
        /// Where to build it (replaced if it is an earlier demo).
        #[arg(long, default_value = "tideway-demo")]
        dir: PathBuf,
        /// Sample customers to generate.
        #[arg(long, default_value_t = 2000)]
        customers: usize,
        /// A Kafka broker (host:port): the app's live events are forwarded to the topic
        /// `tideway-demo.track`.
        #[arg(long, env = "TIDEWAY_DEMO_KAFKA", value_name = "HOST:PORT")]
        kafka: Option<String>,
        /// A Redis server (redis://host:port): the churn score is synced to `profile:<id>` hashes.
        #[arg(long, env = "TIDEWAY_DEMO_REDIS", value_name = "URL")]
        redis: Option<String>,
        /// A Postgres database (postgres://user:password@host/db): the lead score is upserted
        /// into `public.tideway_demo_lead_scores`.
        #[arg(
            long,
            env = "TIDEWAY_DEMO_POSTGRES",
            value_name = "URL",
            hide_env_values = true
        )]
        postgres: Option<String>,
    },
    /// Scaffold a project: tideway.toml, sources/, models/, syncs/, transformations/.
    Init {
        /// The directory (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run SQL against the lake: queries, and CREATE TABLE / INSERT / MERGE / UPDATE / DELETE.
    #[command(
        after_help = "Tables are `schema.table`; several statements can be separated by `;`.\n\nExample:\n  tideway sql \"SELECT c.plan, count(*) FROM crm.customers c JOIN events.tracks t ON t.user_id = c.id GROUP BY 1\""
    )]
    Sql {
        /// The SQL.
        query: String,
        /// Output format.
        #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every table: rows, Delta version, last commit, size.
    Tables {
        #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Lake maintenance and imports.
    Lake {
        #[command(subcommand)]
        command: LakeCommand,
    },
    /// Run the event collector: the Segment-compatible HTTP API and the loader into the lake.
    #[command(
        after_help = "Point any Segment or RudderStack SDK at it (host http://ADDR, the write key of a\n[collect.sources.NAME] in tideway.toml). Events land in NAME.tracks, NAME.identifies,\nNAME.users, NAME.pages, ... within seconds. Ctrl-C stops after loading what was received.\n\nExample:\n  tideway serve --listen 0.0.0.0:8080\n  curl -u wk_web: localhost:8080/v1/track -d '{\"userId\":\"u1\",\"event\":\"Signed Up\"}'"
    )]
    Serve {
        /// Address to listen on (default: `[collect] listen`, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Watch live events arrive at a running `tideway serve` and each live connection deliver
    /// them (event, destination, outcome).
    #[command(
        after_help = "Needs the admin token `tideway serve` was started with, in $TIDEWAY_ADMIN_TOKEN.\n\nExample:\n  TIDEWAY_ADMIN_TOKEN=secret tideway tail\n  tideway tail --url http://10.0.0.5:8080 --format json"
    )]
    Tail {
        /// The server (default: `[collect] listen` of this project).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, short = 'f', value_enum, default_value_t = crate::models::CompileFormat::Text)]
        format: crate::models::CompileFormat,
    },
    /// Pull data from the sources in sources/*.toml into the lake, incrementally.
    #[command(
        after_help = "Each source's tables land in the schema named after its file (sources/kustomer.toml ->\nkustomer.customers, kustomer.customers__emails, ...). A run reads only what changed since the\nlast one; the cursor commits with the rows, so a crash then a rerun gives no duplicate and no gap.\n\nExample:\n  tideway extract kustomer\n  tideway extract kustomer --resource customers --full-refresh"
    )]
    Extract {
        /// Only this source (a file name in sources/ without .toml); default: all.
        source: Option<String>,
        /// Only these resources (and their child resources).
        #[arg(long = "resource", short = 'r')]
        resources: Vec<String>,
        /// Drop the tables and cursors first and read everything again.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Check the source files and test each source's credentials and URL.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Type-check every model (models/**/*.sql) against its upstreams, without running any.
    #[command(
        after_help = "Every model is parsed, its tables resolved (other models, or lake tables), the DAG ordered and\neach query planned against its upstreams' inferred schemas. Every problem is reported at once,\nwith file:line:column. Exits non-zero if there is any.\n\nExample:\n  tideway compile\n  tideway compile marts.lifetime_value\n  tideway compile --format json | jq '.models[].name'"
    )]
    Compile {
        /// Show this model's inferred schema (`schema.table` or its file name).
        model: Option<String>,
        #[arg(long, short = 'f', value_enum, default_value_t = crate::models::CompileFormat::Text)]
        format: crate::models::CompileFormat,
        /// Keep running: re-check whenever a model file changes (only what the change reaches).
        #[arg(long, conflicts_with = "model")]
        watch: bool,
    },
    /// Every model's freshness (how far its windows have run, against its interval, and what
    /// it waits on) and the recent failed runs.
    Status {
        #[arg(long, short = 'f', value_enum, default_value_t = crate::models::CompileFormat::Text)]
        format: crate::models::CompileFormat,
    },
    /// Impact analysis: what the models change against what the last runs deployed.
    #[command(
        after_help = "Lists models added, removed, modified and (downstream of those) to recompute, and per model the
columns added, removed, renamed, retyped or narrowed. A removed, renamed, retyped or narrowed
column that a downstream model reads is a breaking change, named at the reader's line; it is
refused (exit 1, and `tideway run` refuses it too) unless that reader changes in the same
change-set.

Example:
  tideway plan
  tideway plan --format json"
    )]
    Plan {
        #[arg(long, short = 'f', value_enum, default_value_t = crate::models::CompileFormat::Text)]
        format: crate::models::CompileFormat,
    },
    /// Column-level lineage: where a model's columns come from, or what is computed from them.
    #[command(
        after_help = "Lineage is read off the compiled logical plans: an output column's inputs are the columns its
expression computes from (through CTEs, joins, unions and subqueries); columns used only in a
filter or join key are not inputs. Lake tables that no model builds (extracted or collected
tables) end the upstream trace.

Example:
  tideway lineage marts.customer_health.health_score
  tideway lineage billing.invoices.amount_cents --downstream
  tideway lineage marts.customer_health --format mermaid"
    )]
    Lineage {
        /// `schema.table` (all its columns), `schema.table.column`, or a model's file name.
        target: String,
        /// Only where the values come from.
        #[arg(long, conflicts_with = "downstream")]
        upstream: bool,
        /// Only what is computed from them.
        #[arg(long)]
        downstream: bool,
        #[arg(long, short = 'f', value_enum, default_value_t = crate::models::LineageFormat::Text)]
        format: crate::models::LineageFormat,
    },
    /// Run models: compile, then build the selected models' tables, upstreams first.
    #[command(
        after_help = "Selectors as dbt's: `m` (a file name or schema.table), `+m` (and what it reads), `m+` (and what\nreads it), `schema.*`. A table model is rebuilt and replaces the old table atomically; an\nincremental model replaces the windows that are over since its last run (or merges by its\nunique key); a view is inlined into the models that read it. Data tests run after each model.\n\nExample:\n  tideway run\n  tideway run +marts.customer_health\n  tideway run marts.engagement --start 2025-05-01 --end 2025-06-01"
    )]
    Run {
        /// Which models (default: all).
        select: Vec<String>,
        /// Rebuild incremental models from scratch.
        #[arg(long)]
        full_refresh: bool,
        /// Backfill: the window's start (a date or an instant)...
        #[arg(long)]
        start: Option<String>,
        /// ... and its end (exclusive).
        #[arg(long)]
        end: Option<String>,
    },
    /// Reverse ETL: send the new and changed rows of a table or model to a destination, as
    /// events (syncs/*.toml; destinations in tideway.toml).
    #[command(
        after_help = "A run hashes every row of the sync's source, compares it with what the destination last\naccepted (_tideway.sync_state), and sends only the added, changed and removed rows, through\nthe sync's transformations. The state moves only for rows the destination accepted; refused\nrows are retried on the next run, then dead-lettered.\n\nExample:\n  tideway sync plan lead_score_to_customerio\n  tideway sync run\n  tideway sync status"
    )]
    Sync {
        #[command(subcommand)]
        command: crate::sync::SyncCommand,
    },
    /// JavaScript transformations (transformations/*.js, RudderStack's transformEvent).
    Transform {
        #[command(subcommand)]
        command: crate::sync::TransformCommand,
    },
    /// Customer 360: stitch every identifier into stable profiles (`[unify]` in tideway.toml).
    #[command(
        after_help = "A run reads the identifier columns of every source table written since the last run (the\nwarehouse tables of each collect source, and [[unify.sources]]), stitches them into profiles\nunder the merge protection rules, and writes profiles.identity_map, profiles.profiles,\nprofiles.profile_merges, profiles.refused_edges and profiles.identity_links.\n\nExample:\n  tideway unify\n  tideway unify explain email:ann@example.com\n  tideway unify report"
    )]
    Unify {
        #[command(subcommand)]
        command: Option<crate::unify::UnifyCommand>,
    },
    /// Churn prediction: train a model on a features table, score every row with it
    /// (`[predict.NAME]` in tideway.toml).
    #[command(
        after_help = "Example:\n  tideway predict train churn      # AUC, PR-AUC, calibration, top features; stored as the next version\n  tideway predict score churn      # scores by id into `output`, and by profile into profiles.churn_scores"
    )]
    Predict {
        #[command(subcommand)]
        command: crate::unify::PredictCommand,
    },
    /// Benchmarks on the shared workloads (results belong in BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Validate sources/*.toml (every problem at once) and fetch each source's first page.
    Check {
        /// Only this source.
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Compact small files (one table, or every table) and write a checkpoint.
    Optimize {
        table: Option<String>,
        /// Target file size in bytes.
        #[arg(long)]
        target_size: Option<u64>,
    },
    /// Delete files that no version within the retention needs (one table, or every table).
    Vacuum {
        table: Option<String>,
        /// Keep files needed by versions younger than this many hours.
        #[arg(long, default_value_t = 168)]
        retain_hours: u64,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a checkpoint of the table's log (one table, or every table).
    Checkpoint { table: Option<String> },
    /// Load CSV, Parquet or NDJSON files (or folders of them) into a table, in one commit.
    #[command(
        after_help = "Column names are normalized (`First Name` becomes `first_name`); the schema is inferred and evolves.\n\nExample:\n  tideway lake import data/customers.csv --table crm.customers --replace"
    )]
    Import {
        /// Files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The target table, `schema.table`.
        #[arg(long, short = 't')]
        table: String,
        /// Replace the table's rows and schema instead of appending.
        #[arg(long)]
        replace: bool,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            dir,
            customers,
            kafka,
            redis,
            postgres,
        } => {
            let servers = crate::demo_streams::Servers {
                kafka,
                redis,
                postgres,
            };
            crate::demo::run(&dir, customers, &servers).await
        }
        Command::Init { dir } => crate::scaffold::init(&dir),
        Command::Sql { query, format } => {
            let lake = Project::find(cli.project.as_deref())?.lake().await?;
            match lake.execute(&query).await? {
                Executed::Query(df) => output::print_query(df, format).await?,
                Executed::Commit(commit) => output::print_commit(&commit, format)?,
                Executed::Done(message) => println!("{message}"),
            }
            Ok(())
        }
        Command::Tables { format } => {
            let lake = Project::find(cli.project.as_deref())?.lake().await?;
            output::print_tables(&lake.infos().await?, format)
        }
        Command::Lake { command } => {
            let lake = Project::find(cli.project.as_deref())?.lake().await?;
            lake_command(&lake, command).await
        }
        Command::Serve { listen } => {
            let project = Project::find(cli.project.as_deref())?;
            serve(&project, listen).await
        }
        Command::Tail { url, format } => {
            let base = match url {
                Some(url) => url,
                None => {
                    let project = Project::find(cli.project.as_deref())?;
                    format!("http://{}", project.config.collect.listen)
                }
            };
            let token = std::env::var(crate::profile_api::TOKEN_VAR).with_context(|| {
                format!(
                    "set ${} to the admin token `tideway serve` was started with",
                    crate::profile_api::TOKEN_VAR
                )
            })?;
            let url = format!("{}/v1/tail", base.trim_end_matches('/'));
            crate::tail::run(
                &url,
                &token,
                matches!(format, crate::models::CompileFormat::Json),
            )
            .await
        }
        Command::Extract {
            source,
            resources,
            full_refresh,
        } => {
            let project = Project::find(cli.project.as_deref())?;
            let sources = crate::extract::sources(&project, source.as_deref())?;
            let lake = project.lake().await?;
            let options = tideway_extract::RunOptions {
                full_refresh,
                resources,
                ..Default::default()
            };
            crate::extract::run(&lake, sources, options).await?;
            Ok(())
        }
        Command::Sources {
            command: SourcesCommand::Check { source },
        } => {
            let project = Project::find(cli.project.as_deref())?;
            let sources = crate::extract::sources(&project, source.as_deref())?;
            let lake = project.lake().await?;
            crate::extract::check(&lake, sources).await
        }
        Command::Compile {
            model,
            format,
            watch,
        } => {
            let project = Project::find(cli.project.as_deref())?;
            if watch {
                return crate::models::watch_command(&project).await;
            }
            crate::models::compile_command(&project, model.as_deref(), format).await
        }
        Command::Sync { command } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::sync::command(&project, command).await
        }
        Command::Predict { command } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::unify::predict_command(&project, command).await
        }
        Command::Unify { command } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::unify::command(&project, command).await
        }
        Command::Transform { command } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::sync::transform_command(&project, command)
        }
        Command::Status { format } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::models::status_command(&project, format).await
        }
        Command::Plan { format } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::models::plan_command(&project, format).await
        }
        Command::Lineage {
            target,
            upstream,
            downstream,
            format,
        } => {
            let project = Project::find(cli.project.as_deref())?;
            let direction = match (upstream, downstream) {
                (true, _) => tideway_models::lineage::Direction::Upstream,
                (_, true) => tideway_models::lineage::Direction::Downstream,
                _ => tideway_models::lineage::Direction::Both,
            };
            crate::models::lineage_command(&project, &target, direction, format).await
        }
        Command::Run {
            select,
            full_refresh,
            start,
            end,
        } => {
            let project = Project::find(cli.project.as_deref())?;
            crate::models::run_command(&project, select, full_refresh, start, end).await
        }
        Command::Bench { command } => crate::bench::run(command).await,
    }
}

async fn serve(project: &Project, listen: Option<String>) -> Result<()> {
    let stop = shutdown_signal()?;
    let config = &project.config.collect;
    if config.sources.is_empty() {
        anyhow::bail!(
            "no sources to collect for: add one to tideway.toml, e.g.\n\n[collect.sources.web]\nwrite_key = \"wk_web_...\""
        );
    }
    let listen = listen.unwrap_or_else(|| config.listen.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let lake = project.lake().await?;
    let log_dir = project.dir.join(&config.log_dir);
    let service = tideway_collect::service::Service::start(lake, config, &log_dir).await?;
    let (connections, running) =
        crate::sync::start_connections(project, service.log(), &|v| std::env::var(v).ok()).await?;
    let sources: Vec<&str> = config.sources.keys().map(String::as_str).collect();
    eprintln!(
        "collecting on http://{listen} for source(s) {}; log in {}; Ctrl-C to stop",
        sources.join(", "),
        log_dir.display()
    );
    let kafka = crate::extract::follow_kafka(project, &project.lake().await?).await?;
    let scheduler = tokio::spawn(crate::models::schedule_loop(
        project.clone(),
        std::time::Duration::from_secs(30),
    ));
    let syncs = tokio::spawn(crate::sync::schedule_loop(
        project.clone(),
        std::time::Duration::from_secs(5),
    ));
    // The Profile API shares the collector's listener, behind the admin token.
    let (routes, index) = match std::env::var(crate::profile_api::TOKEN_VAR) {
        Ok(token) if !token.is_empty() => {
            let (routes, task) = crate::profile_api::routes(
                project.lake().await?,
                token.clone(),
                std::time::Duration::from_secs(2),
            )
            .await?;
            eprintln!("profile API on http://{listen}/v1/profiles/{{type}}:{{value}}");
            eprintln!("live tail on http://{listen}/v1/tail (`tideway tail`)");
            let tail = crate::tail::routes(service.log(), running, token);
            (routes.merge(tail), Some(task))
        }
        _ => (axum::Router::new(), None),
    };
    let unify = tokio::spawn(crate::unify::schedule_loop(
        project.clone(),
        std::time::Duration::from_secs(30),
    ));
    service.serve_with(listener, routes, stop).await?;
    scheduler.abort();
    syncs.abort();
    unify.abort();
    // A connection stopped mid-step sends again, on restart, what it had not committed.
    connections.iter().for_each(|c| c.abort());
    // A Kafka source stopped mid-batch reads that batch again on restart.
    kafka.iter().for_each(|k| k.abort());
    if let Some(index) = index {
        index.abort();
    }
    eprintln!("stopped: every received event is in the lake");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that comes early is not lost (or fatal).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn lake_command(lake: &tideway_lake::Lake, command: LakeCommand) -> Result<()> {
    let targets = |table: Option<String>| async {
        match table {
            Some(t) => Ok::<_, anyhow::Error>(vec![t.parse::<TableName>()?]),
            None => Ok(lake.tables().await?),
        }
    };
    match command {
        LakeCommand::Optimize { table, target_size } => {
            for name in targets(table).await? {
                let r = lake.optimize(&name, target_size).await?;
                println!(
                    "{}: {} file(s) compacted into {}, now version {}",
                    r.table, r.files_removed, r.files_added, r.version
                );
            }
        }
        LakeCommand::Vacuum {
            table,
            retain_hours,
            dry_run,
        } => {
            for name in targets(table).await? {
                let r = lake
                    .vacuum(&name, Duration::from_secs(retain_hours * 3600), dry_run)
                    .await?;
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!("{}: {verb} {} file(s)", r.table, r.files_deleted);
            }
        }
        LakeCommand::Checkpoint { table } => {
            for name in targets(table).await? {
                let v = lake.checkpoint(&name).await?;
                println!("{name}: checkpoint at version {v}");
            }
        }
        LakeCommand::Import {
            paths,
            table,
            replace,
        } => {
            let name: TableName = table.parse()?;
            let started = Instant::now();
            let spinner = output::spinner(format!("importing into {name}"));
            let report = lake
                .import(&paths, &name, replace)
                .await
                .context("import failed, nothing was written")?;
            spinner.finish_and_clear();
            output::print_import(&report, started.elapsed());
        }
    }
    Ok(())
}

/// What to do about an error, when there is something useful to say.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    let lake = e.chain().find_map(|c| c.downcast_ref::<LakeError>())?;
    match lake {
        LakeError::UnknownTable { .. } => Some("`tideway tables` lists every table".into()),
        LakeError::Location { .. } => {
            Some("the lake location is `[lake] location` in tideway.toml".into())
        }
        other if other.retryable() => Some("this may be temporary: retrying can help".into()),
        other if other.fault() == tideway_core::Fault::Internal => Some(
            "this looks like a bug in Tideway; please report it with the command you ran".into(),
        ),
        _ => None,
    }
}
