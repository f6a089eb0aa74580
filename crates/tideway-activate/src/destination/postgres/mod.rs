//! Postgres: sync rows upserted into a table by key, events appended to an events table.
//!
//! ```toml
//! [destinations.app_db]
//! type = "postgres"
//! url = "${APP_DATABASE_URL}"              # never logged; messages name host:port/db only
//! table = "public.lead_scores"
//! key = "user_id"
//! # events_table = "public.tideway_events"
//! # create = true
//! # batch_size = 1000
//! # concurrency = 4
//! ```
//!
//! | Segment message                        | what Postgres gets                                           |
//! |----------------------------------------|--------------------------------------------------------------|
//! | `identify`                             | `traits` upserted into `table`, key from `userId`            |
//! | `group`                                | `traits` upserted into `table`, key from `groupId`           |
//! | `track`, `page`, `screen`              | a row of `events_table` (once per `messageId`), or without one, `properties` upserted like traits |
//! | any, `Op::Delete` (`on_delete = "delete"`) | the row of its key deleted from `table`                  |
//! | `alias`, others                        | refused                                                      |
//!
//! A key column takes the field of that name from `traits`/`properties` when the event has
//! it, else the event's `userId` (`groupId` for a group). Top-level fields are columns, nested
//! objects and arrays `jsonb`; types are inferred from the values (see [`schema`]). Each row
//! also gets `_tideway_message_id` (the last event's `messageId`) and `_tideway_updated_at`
//! when the table has them (`create = true` adds them).
//!
//! One transaction per batch: the batch merged per key is `COPY`ed into a temporary staging
//! table, then deleted from and upserted into the table (`INSERT ... ON CONFLICT (key) DO
//! UPDATE`, only the columns the events carry), and events appended (`ON CONFLICT (message_id)
//! DO NOTHING`, so a redelivered event is not stored twice); see [`plan`]. With `create = true`
//! missing tables and columns are made first, in their own short transaction (`ALTER TABLE ...
//! ADD COLUMN IF NOT EXISTS`, serialized by an advisory lock).
//!
//! Answers: a commit delivers every event of the batch. An event refused before sending
//! (no key, a value its column cannot take) is rejected alone, naming the column, the value and
//! the type. A data error from Postgres (SQLSTATE classes 22, 23, 42, ...) rejects the batch,
//! which the delivery layer halves until the bad event is alone; a lost connection, a server
//! shutting down (57P01), a serialization failure or deadlock (40001, 40P01), a lack of
//! resources (53xxx) or a timeout retries the batch. A retried batch may have committed
//! already: upserts by key and appends by `messageId` make the second delivery a no-op.
//!
//! TLS: rustls, with the URL's `sslmode` read as libpq reads it (`require` encrypts,
//! `verify-full` also checks the certificate against `sslrootcert` or the Mozilla roots); see
//! [`tls`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::SinkExt;
use tokio_postgres::{Client, GenericClient};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{BatchLimits, DeliveryError, Destination, OutboundEvent, Outcome};

mod config;
pub mod plan;
pub mod schema;
#[cfg(test)]
mod tests;
pub mod tls;

pub use config::{
    DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, EXAMPLE, MESSAGE_ID_COLUMN, PostgresConfig, TableName,
    UPDATED_AT_COLUMN, check_url, describe, quote,
};
use plan::{Plan, Tables, Target};
use schema::PgType;

/// The longest a batch's transaction (with its DDL and connecting) may take before it is
/// abandoned and retried.
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting may take, unless the URL says (`connect_timeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long DDL waits for the table's lock before giving up (and retrying).
pub const LOCK_TIMEOUT: &str = "30s";

/// Builds the destination named `name` from a checked configuration; this does not connect
/// (the first delivery or healthcheck does).
pub fn build(name: &str, config: PostgresConfig) -> Postgres {
    let connection = check_url(config.url.expose()).and_then(|(mut pg, verify)| {
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("tideway");
        }
        Ok((pg, tls::connector(&verify)?))
    });
    let endpoint =
        check_url(config.url.expose()).map_or_else(|_| "?".into(), |(pg, _)| describe(&pg));
    Postgres {
        name: name.to_string(),
        target: Target {
            table: config.table.clone(),
            key: config.key.clone(),
            events_table: config.events_table.clone(),
            create: config.create,
        },
        config,
        connection,
        endpoint,
        idle: Mutex::new(Vec::new()),
        tables: Mutex::new(None),
        ddl: tokio::sync::Mutex::new(()),
    }
}

/// A Postgres destination. See the module docs.
pub struct Postgres {
    name: String,
    config: PostgresConfig,
    target: Target,
    /// The client's configuration and TLS connector, or why the URL cannot be used.
    connection: Result<(tokio_postgres::Config, MakeRustlsConnect), String>,
    /// `host:port/db`, for messages.
    endpoint: String,
    /// Connections not in use (at most `concurrency`).
    idle: Mutex<Vec<Client>>,
    /// The tables as last read; `None` until read, or after an error that may mean they
    /// changed.
    tables: Mutex<Option<Tables>>,
    /// One DDL transaction at a time from this process.
    ddl: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("table", &self.target.table.display())
            .field("key", &self.target.key)
            .finish_non_exhaustive()
    }
}

/// Why a step failed, as the delivery layer needs it.
#[derive(Debug)]
enum Failure {
    /// Retrying may help (connection, shutdown, deadlock, resources, timeout).
    Retry(DeliveryError),
    /// The data or the configuration is wrong.
    Refused(DeliveryError),
}

impl Failure {
    fn into_error(self) -> DeliveryError {
        match self {
            Failure::Retry(e) | Failure::Refused(e) => e,
        }
    }
}

/// Whether an error with SQLSTATE `code` may pass when retried.
pub fn is_transient(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58" | "XX"))
        || matches!(code, "55P03" | "55006" | "25P03")
}

impl Postgres {
    /// The configuration the destination was built with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    fn failure(&self, doing: &str, e: &tokio_postgres::Error) -> Failure {
        let Some(db) = e.as_db_error() else {
            // The causes too (tokio-postgres leaves a TLS error's out of its message).
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                let more = c.to_string();
                if !text.contains(&more) {
                    text.push_str(&format!(": {more}"));
                }
                cause = c.source();
            }
            return Failure::Retry(DeliveryError::external(
                None,
                format!(
                    "Postgres at {} failed during {doing}: {text}",
                    self.endpoint
                ),
            ));
        };
        let code = db.code().code();
        let mut message = format!(
            "Postgres at {} refused {doing}: {} (SQLSTATE {code}",
            self.endpoint,
            db.message()
        );
        if let Some(column) = db.column() {
            message.push_str(&format!(", column `{column}`"));
        }
        if let Some(place) = db.where_() {
            message.push_str(&format!("; {place}"));
        }
        message.push(')');
        if let Some(detail) = db.detail() {
            message.push_str(&format!(": {detail}"));
        }
        if code == "42P10" {
            message.push_str(&format!(
                "; {} needs a primary key or unique index on ({})",
                self.target.table.display(),
                self.target.key.join(", ")
            ));
        }
        if is_transient(code) {
            Failure::Retry(DeliveryError::external(None, message))
        } else {
            Failure::Refused(DeliveryError::refused(None, message))
        }
    }

    async fn connect(&self) -> Result<Client, Failure> {
        loop {
            let idle = self.idle.lock().expect("pool lock poisoned").pop();
            match idle {
                Some(client) if !client.is_closed() => return Ok(client),
                Some(_) => continue,
                None => break,
            }
        }
        let (pg, tls) = self
            .connection
            .as_ref()
            .map_err(|e| Failure::Refused(DeliveryError::refused(None, e.clone())))?;
        let (client, connection) = pg
            .connect(tls.clone())
            .await
            .map_err(|e| self.failure("the connection", &e))?;
        let endpoint = self.endpoint.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "postgres connection closed");
            }
        });
        Ok(client)
    }

    fn release(&self, client: Client) {
        let mut idle = self.idle.lock().expect("pool lock poisoned");
        if !client.is_closed() && idle.len() < self.config.concurrency {
            idle.push(client);
        }
    }

    fn forget_tables(&self) {
        *self.tables.lock().expect("tables lock poisoned") = None;
    }

    async fn tables(&self, client: &Client) -> Result<Tables, Failure> {
        if let Some(t) = self.tables.lock().expect("tables lock poisoned").clone() {
            return Ok(t);
        }
        let t = self.load(client).await?;
        *self.tables.lock().expect("tables lock poisoned") = Some(t.clone());
        Ok(t)
    }

    /// Reads the tables' existence and the target's columns, in one round trip.
    async fn load(&self, client: &impl GenericClient) -> Result<Tables, Failure> {
        let events = self.target.events_table.as_ref().map(TableName::sql);
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, coalesce(to_regclass($2) IS NOT NULL, false), \
                 (SELECT coalesce(json_agg(json_build_array(attname, format_type(atttypid, atttypmod))), '[]')::text \
                  FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped)",
                &[&self.target.table.sql(), &events],
            )
            .await
            .map_err(|e| self.failure("the column lookup", &e))?;
        let columns: Vec<(String, String)> = serde_json::from_str(row.get::<_, &str>(2))
            .expect("json_agg of json_build_array(name, type) is a JSON array of pairs");
        Ok(Tables {
            target: row.get::<_, bool>(0).then(|| {
                columns
                    .into_iter()
                    .map(|(name, ty)| (name, PgType::from_sql(&ty)))
                    .collect::<BTreeMap<_, _>>()
            }),
            events: row.get(1),
        })
    }

    /// Runs the DDL `batch` needs, then plans it against the changed tables.
    async fn migrate(&self, client: &mut Client, batch: &[OutboundEvent]) -> Result<Plan, Failure> {
        let _one_at_a_time = self.ddl.lock().await;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.failure("BEGIN", &e))?;
        let lock = format!("tideway:{}", self.target.table.display());
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await
            .map_err(|e| self.failure("SET lock_timeout", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
            .await
            .map_err(|e| self.failure("the schema lock", &e))?;
        // Read again under the lock: another process may have changed the table meanwhile.
        let tables = self.load(&tx).await?;
        for statement in plan::plan(&self.target, &tables, batch).ddl {
            tracing::info!(destination = %self.name, %statement, "changing the table");
            tx.batch_execute(&statement)
                .await
                .map_err(|e| self.failure("the table change", &e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.failure("COMMIT of the table change", &e))?;
        let tables = self.load(&*client).await?;
        *self.tables.lock().expect("tables lock poisoned") = Some(tables.clone());
        Ok(plan::plan(&self.target, &tables, batch))
    }

    /// The batch's transaction.
    async fn apply(&self, client: &mut Client, plan: Plan) -> Result<(), Failure> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.failure("BEGIN", &e))?;
        let creates: Vec<&str> = plan.stages.iter().map(|s| s.create.as_str()).collect();
        tx.batch_execute(&creates.join(";\n"))
            .await
            .map_err(|e| self.failure("the staging table", &e))?;
        for stage in plan.stages {
            let sink = tx
                .copy_in::<_, bytes::Bytes>(&stage.copy)
                .await
                .map_err(|e| self.failure("the COPY", &e))?;
            let mut sink = std::pin::pin!(sink);
            sink.send(bytes::Bytes::from(stage.data))
                .await
                .map_err(|e| self.failure("the COPY", &e))?;
            sink.as_mut()
                .finish()
                .await
                .map_err(|e| self.failure("the COPY", &e))?;
        }
        tx.batch_execute(&plan.apply.join(";\n"))
            .await
            .map_err(|e| self.failure("the batch", &e))?;
        tx.commit().await.map_err(|e| self.failure("COMMIT", &e))
    }

    async fn run(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        let mut client = match self.connect().await {
            Ok(c) => c,
            Err(f) => return outcomes(&vec![None; batch.len()], Err(f)),
        };
        // Per event, why it was refused before sending (known once the batch is planned).
        let mut refused = vec![None; batch.len()];
        let result = async {
            let tables = self.tables(&client).await?;
            let mut plan = plan::plan(&self.target, &tables, batch);
            if !plan.ddl.is_empty() && !plan.is_empty() {
                plan = self.migrate(&mut client, batch).await?;
            }
            refused.clone_from(&plan.refused);
            if !plan.is_empty() {
                self.apply(&mut client, plan).await?;
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => self.release(client),
            Err(Failure::Refused(_)) => {
                // The table may have changed under us (a column dropped, its type altered).
                self.forget_tables();
                self.release(client);
            }
            // The connection may be broken: it is dropped.
            Err(Failure::Retry(_)) => {}
        }
        outcomes(&refused, result)
    }
}

/// One outcome per event: those refused before sending are rejected alone; the others share
/// the transaction's fate. When some were refused and Postgres then refused the data, the
/// others are retried rather than rejected: the delivery layer sends them again without the
/// refused ones, and splits them if the error repeats.
fn outcomes(refused: &[Option<String>], result: Result<(), Failure>) -> Vec<Outcome> {
    let any_refused = refused.iter().any(Option::is_some);
    let shared = match result {
        Ok(()) => Outcome::Delivered,
        Err(Failure::Retry(error)) => Outcome::Retry { after: None, error },
        Err(Failure::Refused(error)) if any_refused => Outcome::Retry {
            after: None,
            error: DeliveryError::external(
                None,
                format!("{error} (sent again without the events refused before sending)"),
            ),
        },
        Err(Failure::Refused(error)) => Outcome::Rejected(error),
    };
    refused
        .iter()
        .map(|r| match r {
            Some(message) => Outcome::Rejected(DeliveryError::refused(None, message.clone())),
            None => shared.clone(),
        })
        .collect()
}

#[async_trait]
impl Destination for Postgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    /// Connects, then checks that the tables exist (or may be created) and that the user may
    /// write them, and that the table has a primary key or unique index on `key`.
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let client = self.connect().await.map_err(Failure::into_error)?;
        let result = self.check(&client).await;
        self.release(client);
        result.map_err(Failure::into_error)
    }

    async fn deliver(&self, batch: &[OutboundEvent]) -> Vec<Outcome> {
        match tokio::time::timeout(BATCH_TIMEOUT, self.run(batch)).await {
            Ok(outcomes) => outcomes,
            Err(_) => Outcome::Retry {
                after: None,
                error: DeliveryError::external(
                    None,
                    format!(
                        "Postgres at {} did not finish the batch within {}s",
                        self.endpoint,
                        BATCH_TIMEOUT.as_secs()
                    ),
                ),
            }
            .all(batch.len()),
        }
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.config.batch_size,
            max_bytes: 64 * 1024 * 1024,
            requests_per_second: None,
            rate_window: None,
            concurrency: self.config.concurrency,
        }
    }
}

impl Postgres {
    async fn check(&self, client: &Client) -> Result<(), Failure> {
        let tables = self.load(client).await?;
        let refused = |m: String| Err(Failure::Refused(DeliveryError::refused(None, m)));
        let mut checks = vec![(
            self.target.table.clone(),
            tables.target.is_some(),
            self.target.key.clone(),
            "INSERT,UPDATE",
        )];
        if let Some(events) = &self.target.events_table {
            checks.push((
                events.clone(),
                tables.events,
                vec!["message_id".into()],
                "INSERT",
            ));
        }
        for (table, exists, key, privileges) in checks {
            let name = table.display();
            if !exists {
                if !self.target.create {
                    return refused(format!(
                        "table {name} does not exist at {} and `create = false`; create it or set \
                         `create = true`",
                        self.endpoint
                    ));
                }
                let row = client
                    .query_one(
                        "SELECT coalesce(has_schema_privilege(coalesce($1, current_schema()), 'CREATE'), false)",
                        &[&table.schema],
                    )
                    .await
                    .map_err(|e| self.failure("the privilege check", &e))?;
                if !row.get::<_, bool>(0) {
                    return refused(format!(
                        "the user may not create tables in the schema of {name} at {}; create the \
                         table or grant CREATE on the schema",
                        self.endpoint
                    ));
                }
                continue;
            }
            let mut sorted = key.clone();
            sorted.sort();
            let row = client
                .query_one(
                    "SELECT has_table_privilege($1, $2), EXISTS (SELECT 1 FROM pg_index i \
                     WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL \
                     AND i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) \
                     FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) = $3::text[])",
                    &[&table.sql(), &privileges, &sorted],
                )
                .await
                .map_err(|e| self.failure("the privilege check", &e))?;
            if !row.get::<_, bool>(0) {
                return refused(format!(
                    "the user may not {} {name} at {}; grant it {privileges}",
                    privileges.to_lowercase().replace(',', " and "),
                    self.endpoint
                ));
            }
            if !row.get::<_, bool>(1) {
                return refused(format!(
                    "{name} at {} has no primary key or unique index on ({}), which upserts need",
                    self.endpoint,
                    key.join(", ")
                ));
            }
        }
        Ok(())
    }
}
