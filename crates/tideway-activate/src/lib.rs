//! Activation: data in the lake sent to the tools people work in.
//!
//! - [`config`]: sync files (`syncs/*.toml`) and the `[destinations.NAME]` tables of
//!   `tideway.toml`, every problem reported at once with its line.
//! - [`diff`]: which rows are new, changed or gone since the destination last accepted them
//!   (a 128-bit hash per row, full-joined in DataFusion with the sync's state).
//! - [`transform`]: RudderStack-compatible JavaScript transformations on an embedded engine.
//! - [`delivery`]: batching, rate limits shared per destination, retries, splitting refused
//!   batches, per-event outcomes; one loop for every destination.
//! - [`destination`]: the [`destination::Destination`] trait and one folder per destination.
//! - [`run`]: a sync run, committing the state only for rows the destination accepted.
//! - [`forward`]: live connections, the collector's events forwarded as they arrive.
//! - [`state`]: the `_tideway.sync_state`, `sync_log` and `sync_runs` tables.
//!
//! ```no_run
//! # async fn demo(lake: tideway_lake::Lake) -> Result<(), tideway_activate::ActivateError> {
//! let project = tideway_activate::Project::load(std::path::Path::new("."), &|v| std::env::var(v).ok())?;
//! let job = project.job("lead_score_to_customerio")?;
//! let report = job.run(&lake, &Default::default(), &|_| {}).await?;
//! println!("{} delivered, {} refused", report.counts.delivered, report.counts.rejected);
//! # Ok(()) }
//! ```

pub mod config;
pub mod delivery;
pub mod destination;
pub mod diff;
pub mod error;
pub mod fake;
pub mod forward;
pub mod run;
pub mod schedule;
pub mod state;
pub mod transform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::SyncConfig;
use config::{Mode, OnDelete};
pub use destination::{Destination, DestinationConfig};
pub use error::{ActivateError, Result};
pub use run::{Progress, RunOptions, RunReport, SyncJob};

/// The activation side of a project: its destinations, transformations and syncs.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    /// The destinations that can send.
    pub destinations: BTreeMap<String, DestinationConfig>,
    /// The destinations that read variables this environment does not set, with those
    /// variables: what sends to them is refused when it runs, the rest of the project loads.
    pub unset: BTreeMap<String, Vec<String>>,
    pub scripts: Vec<transform::Source>,
    pub syncs: Vec<SyncConfig>,
    /// Live connections (`[connections.NAME]`): collect sources forwarded to destinations.
    pub connections: Vec<forward::ConnectionConfig>,
}

impl Project {
    /// Reads `tideway.toml`'s destinations, `transformations/*.js` and `syncs/*.toml` of the
    /// project in `dir`. Every problem of every file is reported together.
    pub fn load(dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Project> {
        let file = dir.join("tideway.toml");
        let text = config::read(&file)?;
        let destinations = config::destinations(&text, &file.display().to_string(), env);
        let scripts = scripts(dir)?;
        let names: Vec<String> = scripts.iter().map(|s| s.name.clone()).collect();
        let destination_names: Vec<String> = match &destinations {
            Ok(d) => d.ready.keys().chain(d.unset.keys()).cloned().collect(),
            Err(_) => tideway_core_destination_names(&text),
        };
        let syncs = config::load_syncs(&dir.join("syncs"), &destination_names, &names);
        let connections = forward::connections(
            &text,
            &file.display().to_string(),
            &collect_source_names(&text),
            &destination_names,
            &names,
        );
        match (destinations, syncs, connections) {
            (Ok(destinations), Ok(syncs), Ok(connections)) => {
                let refused: Vec<_> = syncs
                    .iter()
                    .filter_map(|s| unsupported(s, destinations.ready.get(&s.destination)?))
                    .collect();
                if !refused.is_empty() {
                    return Err(tideway_core::config::ConfigErrors(refused).into());
                }
                Ok(Project {
                    dir: dir.to_path_buf(),
                    destinations: destinations.ready,
                    unset: destinations.unset,
                    scripts,
                    syncs,
                    connections,
                })
            }
            (destinations, syncs, connections) => {
                let mut problems = Vec::new();
                if let Err(a) = destinations {
                    problems.extend(a.0);
                }
                match syncs {
                    Err(ActivateError::Config(b)) => problems.extend(b.0),
                    Err(other) => return Err(other),
                    Ok(_) => {}
                }
                if let Err(c) = connections {
                    problems.extend(c.0);
                }
                Err(tideway_core::config::ConfigErrors(problems).into())
            }
        }
    }

    /// The sync `name`, ready to run.
    pub fn job(&self, name: &str) -> Result<SyncJob> {
        let Some(config) = self.syncs.iter().find(|s| s.name == name) else {
            let names: Vec<String> = self.syncs.iter().map(|s| s.name.clone()).collect();
            let hint = tideway_lake::closest(name, &names)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            return Err(ActivateError::UnknownSync {
                name: name.to_string(),
                known: if names.is_empty() {
                    "there is no sync: add a file to syncs/".to_string()
                } else {
                    format!("{hint}syncs: {}", names.join(", "))
                },
            });
        };
        let destination = self.destination(&config.destination, &format!("sync `{name}`"))?;
        SyncJob::new(
            config.clone(),
            destination,
            &self.scripts,
            Default::default(),
        )
    }

    /// The destination `name`, ready to send, for `user` (a sync or a connection, named in
    /// the error when the destination reads variables this environment does not set).
    pub fn destination(&self, name: &str, user: &str) -> Result<std::sync::Arc<dyn Destination>> {
        if let Some(variables) = self.unset.get(name) {
            return Err(ActivateError::UnsetVariables {
                user: user.to_string(),
                destination: name.to_string(),
                variables: variables.clone(),
            });
        }
        Ok(self.destinations[name].build(name))
    }
}

/// The files of `transformations/` (transformations and the libraries they import).
pub fn scripts(dir: &Path) -> Result<Vec<transform::Source>> {
    config::files(&dir.join("transformations"), "js")?
        .into_iter()
        .map(|path| {
            Ok(transform::Source {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
                text: config::read(&path)?,
                file: path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
            })
        })
        .collect()
}

/// What `sync` asks of `destination` that it cannot do: a mode it does not write with, or a
/// delete it refuses.
fn unsupported(
    sync: &SyncConfig,
    destination: &DestinationConfig,
) -> Option<tideway_core::config::Diagnostic> {
    let modes = destination.modes();
    if !modes.contains(&sync.mode) {
        let why = match (sync.mode, destination.refuses_deletes()) {
            (Mode::Mirror, Some(why)) => format!(" (a mirror deletes: {why})"),
            _ => String::new(),
        };
        return Some(sync.mode_diagnostic(format!(
            "`mode = \"{}\"`, but the destination `{}` ({}) writes records with mode {}{why}",
            sync.mode.name(),
            sync.destination,
            destination.type_name(),
            modes
                .iter()
                .map(|m| format!("`{}`", m.name()))
                .collect::<Vec<_>>()
                .join(", "),
        )));
    }
    let why = destination.refuses_deletes()?;
    (sync.on_delete == OnDelete::Delete).then(|| {
        sync.on_delete_diagnostic(format!(
            "`on_delete = \"delete\"`, but the destination `{}` cannot delete: {why}",
            sync.destination
        ))
    })
}

/// The `[collect.sources.NAME]` names written in `text` (core's config checks those tables).
fn collect_source_names(text: &str) -> Vec<String> {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            let sources = t.get("collect")?.get("sources")?.as_table()?;
            Some(sources.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// The destination names written in `text`, for checking sync files when a destination
/// table itself has problems (those are reported separately).
fn tideway_core_destination_names(text: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Names {
        #[serde(default)]
        destinations: BTreeMap<String, toml::Value>,
    }
    toml::from_str::<Names>(text)
        .map(|n| n.destinations.into_keys().collect())
        .unwrap_or_default()
}
