//! Finding and opening a project: its directory, its `tideway.toml`, its lake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tideway_core::config::ProjectConfig;
use tideway_lake::Lake;

/// The project file's name.
pub const PROJECT_FILE: &str = "tideway.toml";

/// An opened project.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub config: ProjectConfig,
}

impl Project {
    /// The project at `dir` if given, else the nearest directory from the current one upwards
    /// that has a `tideway.toml`.
    pub fn find(dir: Option<&Path>) -> Result<Project> {
        let dir = match dir {
            Some(dir) => {
                if !dir.join(PROJECT_FILE).is_file() {
                    bail!(
                        "`{}` is not a Tideway project: it has no {PROJECT_FILE}; run `tideway init {}` to make it one",
                        dir.display(),
                        dir.display()
                    );
                }
                dir.to_path_buf()
            }
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                match cwd.ancestors().find(|d| d.join(PROJECT_FILE).is_file()) {
                    Some(d) => d.to_path_buf(),
                    None => bail!(
                        "no {PROJECT_FILE} in `{}` or any parent directory; run `tideway init` to create a project, \
                         `tideway demo` to try one, or pass --project DIR",
                        cwd.display()
                    ),
                }
            }
        };
        Project::open(&dir)
    }

    /// The project at `dir`, its `tideway.toml` parsed and checked.
    pub fn open(dir: &Path) -> Result<Project> {
        let file = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read `{}`", file.display()))?;
        let config = ProjectConfig::parse(&text, &file.display().to_string(), &|v| {
            std::env::var(v).ok()
        })?;
        Ok(Project {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// The lake location, with a relative path resolved against the project directory.
    pub fn lake_location(&self) -> String {
        let location = &self.config.lake.location;
        if location.contains("://") || Path::new(location).is_absolute() {
            location.clone()
        } else {
            self.dir.join(location).display().to_string()
        }
    }

    /// Opens the project's lake.
    pub async fn lake(&self) -> Result<Lake> {
        let storage: HashMap<String, String> = self
            .config
            .lake
            .storage
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_string()))
            .collect();
        Ok(Lake::open(&self.lake_location(), storage).await?)
    }
}
