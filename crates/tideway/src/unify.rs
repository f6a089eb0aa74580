//! `tideway unify [run|explain|report]`.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tideway_unify::config::UnifyConfig;
use tideway_unify::run::{Progress, RunReport};

use crate::models::CompileFormat;
use crate::project::{PROJECT_FILE, Project};

#[derive(Debug, clap::Subcommand)]
pub enum UnifyCommand {
    /// Stitch what was written since the last run (the default).
    Run {
        #[arg(long, short = 'f', value_enum, default_value_t = CompileFormat::Text)]
        format: CompileFormat,
    },
    /// A profile, its identifiers and the path of edges that joined them, with provenance.
    Explain {
        /// A profile id (`prof_...`) or an identifier `type:value` (`email:ann@example.com`).
        id: String,
    },
    /// Profiles by size, the largest, bridge identifiers, refused edges by rule.
    Report,
}

#[derive(Debug, clap::Subcommand)]
pub enum PredictCommand {
    /// Train on the features table and store the model as the next version.
    Train {
        /// The `[predict.NAME]` block (default: the only one).
        name: Option<String>,
        /// Also write the encoded features, labels and split as CSV (to compare with another
        /// library on the same rows).
        #[arg(long)]
        export_csv: Option<std::path::PathBuf>,
        #[arg(long, short = 'f', value_enum, default_value_t = CompileFormat::Text)]
        format: CompileFormat,
    },
    /// Score every row with the latest model and write the scores.
    Score { name: Option<String> },
}

/// The `[predict.NAME]` block named `name` (or the only one).
pub fn predict_config(
    project: &Project,
    name: Option<&str>,
) -> Result<tideway_unify::churn::PredictConfig> {
    let path = project.dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let all = tideway_unify::churn::PredictConfig::parse_all(&text, PROJECT_FILE)?;
    let known = all
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    match name {
        Some(n) => all.into_iter().find(|c| c.name == n).with_context(|| {
            format!(
                "no [predict.{n}] in {PROJECT_FILE}; known: {}",
                if known.is_empty() { "none" } else { &known }
            )
        }),
        None if all.len() == 1 => Ok(all.into_iter().next().expect("one")),
        None if all.is_empty() => anyhow::bail!(
            "no [predict.NAME] block in {PROJECT_FILE}; add one, e.g.\n\n[predict.churn]\nfeatures = \"marts.churn_features\"\nid = \"user_id\"\nlabel = \"churn_risk >= 20\"\nexclude = [\"churn_risk\"]"
        ),
        None => anyhow::bail!("several [predict] blocks ({known}): name one"),
    }
}

pub async fn predict_command(project: &Project, command: PredictCommand) -> Result<()> {
    let lake = project.lake().await?;
    match command {
        PredictCommand::Train {
            name,
            export_csv,
            format,
        } => {
            let config = predict_config(project, name.as_deref())?;
            if let Some(path) = &export_csv {
                tideway_unify::churn::export_csv(&lake, &config, path).await?;
            }
            let trained = tideway_unify::churn::train(&lake, &config).await?;
            match format {
                CompileFormat::Json => println!("{}", serde_json::to_string_pretty(&trained)?),
                CompileFormat::Text => {
                    println!(
                        "[predict.{}] version {}: trained on {} rows of {}",
                        config.name, trained.version, trained.rows, config.features
                    );
                    print!("{}", trained.report);
                }
            }
        }
        PredictCommand::Score { name } => {
            let config = predict_config(project, name.as_deref())?;
            let s = tideway_unify::churn::score(&lake, &config).await?;
            println!(
                "[predict.{}] version {} scored {} rows into {}{}",
                config.name,
                s.version,
                s.rows,
                s.output,
                s.profiles
                    .map(|p| format!(" and {p} profiles into profiles.{}_scores", config.name))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The `[unify]` section of the project.
pub fn config(project: &Project) -> Result<UnifyConfig> {
    let path = project.dir.join(PROJECT_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    Ok(UnifyConfig::parse(&text, PROJECT_FILE)?)
}

/// The problems of the `[unify]` section, for `tideway compile`.
pub fn check(project: &Project) -> Vec<tideway_core::config::Diagnostic> {
    let Ok(text) = std::fs::read_to_string(project.dir.join(PROJECT_FILE)) else {
        return Vec::new();
    };
    match UnifyConfig::parse(&text, PROJECT_FILE) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

/// The collect sources whose warehouse tables are unify sources by default.
pub fn collect_sources(project: &Project) -> Vec<String> {
    project.config.collect.sources.keys().cloned().collect()
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn rows(&self, table: &str, rows: u64) {
        self.0.set_message(table.to_string());
        self.0.inc(rows);
    }
}

pub async fn run(project: &Project, quiet: bool) -> Result<RunReport> {
    let config = config(project)?;
    let lake = project.lake().await?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} unify: {human_pos} rows read ({per_sec}) {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let report =
        tideway_unify::run::run(&lake, &config, &collect_sources(project), &Bar(bar.clone())).await;
    bar.finish_and_clear();
    Ok(report?)
}

pub fn print_report(r: &RunReport) {
    if r.up_to_date {
        println!(
            "unify: nothing new since run {}; profiles are up to date",
            r.run
        );
        return;
    }
    let rows: u64 = r.rows.iter().map(|(_, n)| n).sum();
    println!(
        "unify run {}{}: {rows} rows from {} tables; {} new identifiers, {} new profiles, {} merges, {} refused",
        r.run,
        if r.resumed {
            " (resumed after a crash)"
        } else {
            ""
        },
        r.rows.len(),
        r.new_ids,
        r.new_profiles,
        r.merges,
        r.refused,
    );
    println!(
        "  {} identifiers in {} profiles; read {:.1}s, stitch {:.1}s, write {:.1}s",
        r.identifiers, r.profiles, r.read_seconds, r.stitch_seconds, r.write_seconds
    );
}

pub async fn command(project: &Project, command: Option<UnifyCommand>) -> Result<()> {
    match command.unwrap_or(UnifyCommand::Run {
        format: CompileFormat::Text,
    }) {
        UnifyCommand::Run { format } => {
            let report = run(project, format == CompileFormat::Json).await?;
            match format {
                CompileFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                CompileFormat::Text => print_report(&report),
            }
        }
        UnifyCommand::Explain { id } => {
            let config = config(project)?;
            let lake = project.lake().await?;
            let started = std::time::Instant::now();
            let e = tideway_unify::explain::explain(&lake, &config, &id).await?;
            print!("{e}");
            tracing::debug!(ms = started.elapsed().as_millis() as u64, "explained");
        }
        UnifyCommand::Report => {
            let lake = project.lake().await?;
            print!("{}", tideway_unify::explain::report(&lake).await?);
        }
    }
    Ok(())
}

/// `tideway serve`: a unify run every `every` when a source table changed (a run with nothing
/// new returns at once).
pub async fn schedule_loop(project: Project, every: std::time::Duration) {
    if !config(&project).is_ok_and(|c| c.declared) {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        match run(&project, true).await {
            Ok(r) if !r.up_to_date => tracing::info!(
                run = r.run,
                merges = r.merges,
                profiles = r.profiles,
                "unify run done"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "unify run failed"),
        }
    }
}
