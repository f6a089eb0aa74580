//! The demo's extract step: Kustomer, served by a local Kustomer-shaped API, pulled into the
//! lake in full (day 1) and then incrementally (day 2).

use anyhow::Result;
use tideway_extract::fake::{FakeKustomer, TOKEN};
use tideway_extract::{Extractor, RunOptions, RunReport, SourceConfig};
use tideway_lake::Lake;

use crate::project::Project;

/// The demo's source file; the key comes from the environment, as every secret does.
pub fn source_file(base_url: &str) -> String {
    format!(
        "# Kustomer, served for the demo by a local Kustomer-shaped API.\n\
         type = \"kustomer\"\n\
         api_key = \"${{KUSTOMER_API_KEY}}\"\n\
         base_url = \"{base_url}\"\n\
         # A local server: no need to pace requests (Kustomer's real budget is per organization).\n\
         requests_per_minute = 600000\n\
         resources = [\"customers\", \"conversations\", \"messages\", \"notes\", \"users\", \"teams\", \"tags\"]\n"
    )
}

/// Day 1 and day 2 reports.
#[derive(Debug)]
pub struct ExtractDemo {
    pub day1: RunReport,
    pub day2: RunReport,
}

/// Serves a fake Kustomer with `customers` customers, writes `sources/kustomer.toml`, and runs
/// it twice with changes in between.
pub async fn run(project: &Project, lake: &Lake, customers: usize) -> Result<ExtractDemo> {
    let fake = FakeKustomer::start(customers, customers * 2, 20261125).await?;
    let dir = project.dir.join(crate::extract::SOURCES_DIR);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("kustomer.toml");
    let text = source_file(&fake.base_url);
    std::fs::write(&file, &text)?;
    let env = |v: &str| match v {
        "KUSTOMER_API_KEY" => Some(TOKEN.to_string()),
        other => std::env::var(other).ok(),
    };
    let parse = || SourceConfig::parse(&text, &file.display().to_string(), &env);
    let day1 = Extractor::new(lake.clone(), parse()?, RunOptions::default())?
        .run()
        .await?;
    fake.advance(customers / 50, customers / 100, 2);
    let day2 = Extractor::new(lake.clone(), parse()?, RunOptions::default())?
        .run()
        .await?;
    Ok(ExtractDemo { day1, day2 })
}
