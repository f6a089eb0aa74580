//! The demo's streams step, when `tideway demo` is given servers to reach: the app's live
//! traffic forwarded to Kafka as it arrives, the churn score synced to Redis (so that
//! `HGET profile:<id> churn_score` answers), and the lead score upserted into a Postgres table.
//!
//! ```text
//! tideway demo --kafka 127.0.0.1:9092 --redis redis://127.0.0.1:6379 \
//!     --postgres postgres://postgres@127.0.0.1:5432/postgres
//! ```
//!
//! Each server is optional; the demo's project refers to them through variables
//! (`${TIDEWAY_DEMO_KAFKA}`...) so that no address or password is written into its files.

use anyhow::{Context, Result};
use tideway_activate::{Project as Activation, RunOptions, RunReport};
use tideway_extract::kafka::{KafkaReader, KafkaSourceConfig};
use tideway_lake::Lake;

use crate::project::Project;

pub const KAFKA_VAR: &str = "TIDEWAY_DEMO_KAFKA";
pub const REDIS_VAR: &str = "TIDEWAY_DEMO_REDIS";
pub const POSTGRES_VAR: &str = "TIDEWAY_DEMO_POSTGRES";

/// The topic the app's events go to (`tideway-demo.{type}`: the app sends `track` calls).
pub const TOPIC: &str = "tideway-demo.track";
/// The Postgres table the lead score is upserted into.
pub const LEADS_TABLE: &str = "public.tideway_demo_lead_scores";

const CHURN_SYNC: &str = r#"# The churn score by profile, to Redis: HGET profile:<profile_id> churn_score.
source = "profiles.churn_scores"
key = "profile_id"
destination = "cache"
type = "identify"

[mapping]
rename = { churn_probability = "churn_score" }
exclude = ["profile_id"]
"#;

const LEADS_SYNC: &str = r#"# The lead score, upserted by customer into a Postgres table of the app.
source = "marts.lead_score"
key = "customer_id"
destination = "app_db"
type = "identify"

[mapping]
exclude = ["customer_id"]
"#;

/// The servers the demo streams to, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    pub kafka: Option<String>,
    pub redis: Option<String>,
    pub postgres: Option<String>,
}

impl Servers {
    /// The value of one of the demo's variables, when its server was given.
    pub fn env(&self, var: &str) -> Option<String> {
        match var {
            KAFKA_VAR => self.kafka.clone(),
            REDIS_VAR => self.redis.clone(),
            POSTGRES_VAR => self.postgres.clone(),
            _ => None,
        }
    }

    /// The destinations (and the Kafka connection) to add to the demo's tideway.toml.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        if self.kafka.is_some() {
            out += &format!(
                "\n# Kafka, given to `tideway demo --kafka`: every app event, keyed by user.\n\
                 [destinations.bus]\ntype = \"kafka\"\nbrokers = \"${{{KAFKA_VAR}}}\"\n\
                 topic = \"tideway-demo.{{type}}\"\ncompression = \"lz4\"\n\n\
                 [connections.app_to_kafka]\nsource = \"app\"\ndestination = \"bus\"\nstart = \"earliest\"\n"
            );
        }
        if self.redis.is_some() {
            out += &format!(
                "\n# Redis, given to `tideway demo --redis`: a hash per profile.\n\
                 [destinations.cache]\ntype = \"redis\"\nurl = \"${{{REDIS_VAR}}}\"\nmode = \"hash\"\n\
                 key = \"profile:{{userId}}\"\nttl = \"7d\"\n"
            );
        }
        if self.postgres.is_some() {
            out += &format!(
                "\n# Postgres, given to `tideway demo --postgres`: the app's lead score table.\n\
                 [destinations.app_db]\ntype = \"postgres\"\nurl = \"${{{POSTGRES_VAR}}}\"\n\
                 table = \"{LEADS_TABLE}\"\nkey = \"user_id\"\n"
            );
        }
        out
    }

    /// Before the traffic: makes the topic if it is missing; how many records it holds.
    pub async fn prepare(&self) -> Result<Option<i64>> {
        let Some(brokers) = &self.kafka else {
            return Ok(None);
        };
        let writer = tideway_extract::kafka::KafkaWriter::new(
            std::slice::from_ref(brokers),
            &Default::default(),
        )
        .await
        .with_context(|| format!("cannot reach Kafka at {brokers} (--kafka)"))?;
        writer.create_topic(TOPIC, 3).await?;
        Ok(Some(records(brokers).await?))
    }
}

/// Records in [`TOPIC`], over its partitions.
async fn records(brokers: &str) -> Result<i64> {
    let config: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
        "brokers": [brokers],
        "topics": [TOPIC],
        "group_id": "tideway-demo",
    }))?;
    let reader = KafkaReader::connect(config).await?;
    Ok(reader.high_watermarks().await?.values().sum())
}

/// What reached the servers.
#[derive(Debug, Default)]
pub struct Streamed {
    /// Records the app's traffic added to the topic.
    pub kafka: Option<i64>,
    pub redis: Option<InRedis>,
    pub postgres: Option<InPostgres>,
}

/// The churn sync, and one profile's score as the lake and Redis have it.
#[derive(Debug)]
pub struct InRedis {
    pub report: RunReport,
    pub profile: String,
    pub lake_score: f64,
    /// `HGET profile:<profile> churn_score`.
    pub answer: Option<String>,
    /// Seconds from the score's commit to Redis's answer.
    pub after: f64,
}

/// The lead sync, the rows of the table, and its top three leads (user, e-mail, score).
#[derive(Debug)]
pub struct InPostgres {
    pub report: RunReport,
    pub rows: i64,
    pub top: Vec<(String, String, f64)>,
}

/// After the traffic: what Kafka holds now, less `before`.
pub async fn kafka_added(servers: &Servers, before: Option<i64>) -> Result<Option<i64>> {
    match (&servers.kafka, before) {
        (Some(brokers), Some(before)) => Ok(Some(records(brokers).await? - before)),
        _ => Ok(None),
    }
}

/// After the churn score and the lead score: syncs them to Redis and Postgres, reads them back
/// from there, and puts what it found into `out`.
pub async fn sync(
    project: &Project,
    lake: &Lake,
    servers: &Servers,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut Streamed,
) -> Result<()> {
    if servers.redis.is_none() && servers.postgres.is_none() {
        return Ok(());
    }
    let dir = &project.dir;
    if servers.redis.is_some() {
        std::fs::write(dir.join("syncs/churn_to_redis.toml"), CHURN_SYNC)?;
    }
    if servers.postgres.is_some() {
        std::fs::write(dir.join("syncs/leads_to_postgres.toml"), LEADS_SYNC)?;
    }
    let activation = Activation::load(dir, env)?;
    let options = RunOptions::default();
    if let Some(url) = &servers.redis {
        let report = activation
            .job("churn_to_redis")?
            .run(lake, &options, &|_| {})
            .await?;
        // The riskiest profile, its score, and when the score was committed.
        let picked = tideway_unify::explain::text_rows(
            lake,
            "SELECT profile_id, CAST(churn_probability AS VARCHAR) AS score, \
             CAST(CAST(scored_at AS BIGINT) AS VARCHAR) AS scored_at FROM profiles.churn_scores \
             ORDER BY churn_probability DESC, profile_id LIMIT 1",
        )
        .await?;
        let [profile, score, scored_at] = picked
            .into_iter()
            .next()
            .and_then(|r| <[Option<String>; 3]>::try_from(r).ok())
            .context("profiles.churn_scores is empty")?
            .map(Option::unwrap_or_default);
        let client = redis::Client::open(url.as_str())
            .with_context(|| "the --redis URL is not a Redis URL (redis://host:port)")?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .context("cannot reach Redis (--redis)")?;
        let answer: Option<String> = redis::cmd("HGET")
            .arg(format!("profile:{profile}"))
            .arg("churn_score")
            .query_async(&mut conn)
            .await?;
        let scored_at: i64 = scored_at.parse().unwrap_or_default();
        let after = (chrono::Utc::now().timestamp_micros() - scored_at) as f64 / 1e6;
        let score: f64 = score.parse().unwrap_or(f64::NAN);
        out.redis = Some(InRedis {
            report,
            profile,
            lake_score: score,
            answer,
            after,
        });
    }
    if let Some(url) = &servers.postgres {
        let report = activation
            .job("leads_to_postgres")?
            .run(lake, &options, &|_| {})
            .await?;
        // The read-back connects as the destination does, TLS settings (`sslmode`) included.
        use tideway_activate::destination::postgres::tls;
        let (plain, verify) =
            tls::split_url(url).map_err(|e| anyhow::anyhow!("--postgres {url}: {e}"))?;
        let connector =
            tls::connector(&verify).map_err(|e| anyhow::anyhow!("--postgres {url}: {e}"))?;
        let (client, connection) = tokio_postgres::connect(&plain, connector)
            .await
            .context("cannot reach Postgres (--postgres)")?;
        let task = tokio::spawn(connection);
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {LEADS_TABLE}"), &[])
            .await?
            .get(0);
        let top = client
            .query(
                &format!(
                    "SELECT user_id, email, lead_score::float8 FROM {LEADS_TABLE} \
                     ORDER BY lead_score DESC, user_id LIMIT 3"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        task.abort();
        out.postgres = Some(InPostgres {
            report,
            rows: count,
            top,
        });
    }
    Ok(())
}

/// The demo's account of the streams; how to add them when no server was given.
pub fn print(s: &Streamed) {
    println!("\nStreams:");
    match s.kafka {
        Some(n) => println!(
            "  Kafka: connection `app_to_kafka` forwarded the app's events live to the topic {TOPIC} \
             ({n} records added, keyed by user, in order per user)"
        ),
        None => println!(
            "  Kafka: not given (tideway demo --kafka HOST:PORT forwards the app's events live)"
        ),
    }
    match &s.redis {
        Some(r) => println!(
            "  Redis: sync `churn_to_redis` wrote {} profiles' churn scores; HGET profile:{} churn_score \
             answers {} (the lake has {}), {:.1} s after the score's commit",
            r.report.counts.delivered,
            r.profile,
            r.answer.as_deref().unwrap_or("(nothing)"),
            r.lake_score,
            r.after,
        ),
        None => println!(
            "  Redis: not given (tideway demo --redis redis://HOST:PORT syncs the churn score)"
        ),
    }
    match &s.postgres {
        Some(p) => {
            println!(
                "  Postgres: sync `leads_to_postgres` upserted {} lead scores into {LEADS_TABLE} ({} rows); top leads:",
                p.report.counts.delivered, p.rows
            );
            for (user, email, score) in &p.top {
                println!("    {user}  {email}  {score:.1}");
            }
        }
        None => println!(
            "  Postgres: not given (tideway demo --postgres postgres://USER@HOST/DB upserts the lead score)"
        ),
    }
}
