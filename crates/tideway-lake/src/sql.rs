//! SQL over the lake: queries through DataFusion, and the statements that write, each one
//! atomic Delta commit.
//!
//! | statement | what it does |
//! |---|---|
//! | `SELECT ...`, `WITH ...`, `EXPLAIN`, `SHOW TABLES` | a query over every table |
//! | `CREATE TABLE s.t (col TYPE, ...)` | an empty table |
//! | `CREATE [OR REPLACE] TABLE [IF NOT EXISTS] s.t AS SELECT ...` | a table from a query |
//! | `INSERT INTO s.t [(cols)] SELECT ... \| VALUES ...` | append; values map to the listed columns (or the table's, by position) and are cast to their types; a listed column the table lacks is added |
//! | `INSERT OVERWRITE s.t SELECT ...` | replace every row |
//! | `MERGE INTO s.t AS t USING (query) AS s ON ... WHEN MATCHED [AND ...] THEN UPDATE SET ... \| DELETE WHEN NOT MATCHED [AND ...] THEN INSERT (cols) VALUES (...) WHEN NOT MATCHED BY SOURCE THEN DELETE` | Delta MERGE |
//! | `UPDATE s.t SET c = expr [WHERE ...]`, `DELETE FROM s.t [WHERE ...]` | in place |
//! | `DROP TABLE [IF EXISTS] s.t` | removes the table and its files |
//!
//! Several statements separated by `;` run in order. A query that names a table the lake does
//! not have fails before planning, naming the table, the closest known name and every known
//! table.

use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::common::TableReference;
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::logical_expr::col;
use deltalake::datafusion::object_store::ObjectStoreExt as _;
use deltalake::datafusion::prelude::cast;
use deltalake::datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use deltalake::datafusion::sql::sqlparser::ast::{
    self, AssignmentTarget, Expr, FromTable, Ident, MergeAction, MergeClauseKind, MergeInsertKind,
    ObjectName, ObjectType, Query, Statement, TableFactor, TableObject,
};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::TryStreamExt;

use crate::catalog::{CATALOG, DEFAULT_SCHEMA};
use crate::error::{LakeError, Result};
use crate::lake::{Lake, unknown_table_error};
use crate::name::TableName;
use crate::write::{Commit, WriteMode};

/// What one SQL statement produced.
#[derive(Debug)]
pub enum SqlOutput {
    /// Rows of a query.
    Rows(QueryResult),
    /// A write committed.
    Commit(Commit),
    /// A statement that changed something without a commit to show (`DROP TABLE`).
    Done(String),
}

/// The rows of a query, all in memory.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// How many rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What the last statement of [`Lake::execute`] produced, with a query's rows not yet read.
#[derive(Debug)]
pub enum Executed {
    /// A planned query: stream it (`execute_stream`) or collect it.
    Query(DataFrame),
    /// A write committed.
    Commit(Commit),
    /// A statement that changed something without a commit to show (`DROP TABLE`).
    Done(String),
}

impl Lake {
    /// Runs one or more `;`-separated statements and returns what the last one produced, a
    /// query's rows collected in memory. To stream a large result, use [`Lake::execute`].
    pub async fn sql(&self, sql: &str) -> Result<SqlOutput> {
        Ok(match self.execute(sql).await? {
            Executed::Query(df) => {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                SqlOutput::Rows(QueryResult { schema, batches })
            }
            Executed::Commit(commit) => SqlOutput::Commit(commit),
            Executed::Done(message) => SqlOutput::Done(message),
        })
    }

    /// The first value of the first row a query gives, as an integer (`SELECT count(*) ...`,
    /// `SELECT max(version) ...`); `None` for NULL, no row, or a statement that is not a
    /// query. A value that is not a number is an error naming its type.
    pub async fn scalar_i64(&self, sql: &str) -> Result<Option<i64>> {
        use deltalake::arrow::array::{Array, AsArray};
        let SqlOutput::Rows(rows) = self.sql(sql).await? else {
            return Ok(None);
        };
        let Some(batch) = rows.batches.iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        let column = batch.column(0);
        if !column.data_type().is_numeric() && !column.data_type().is_null() {
            return Err(LakeError::Sql(format!(
                "`{sql}` gives a {} where an integer was expected",
                column.data_type()
            )));
        }
        let c =
            deltalake::arrow::compute::cast(column, &deltalake::arrow::datatypes::DataType::Int64)?;
        let c = c.as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        Ok(c.is_valid(0).then(|| c.value(0)))
    }

    /// Runs one or more `;`-separated statements; the last one, if a query, is planned but
    /// not run, so its rows can be streamed.
    pub async fn execute(&self, sql: &str) -> Result<Executed> {
        self.refresh().await?;
        let statements = parse(sql)?;
        let n = statements.len();
        let mut last = Executed::Done("no statement".into());
        for (i, statement) in statements.into_iter().enumerate() {
            last = self.run(statement).await?;
            if let (Executed::Query(df), false) = (&last, i + 1 == n) {
                // An earlier query in a script runs for its effects (there are none to keep).
                df.clone().collect().await?;
            }
        }
        Ok(last)
    }

    async fn plan(&self, statement: DFStatement) -> Result<DataFrame> {
        self.check_references(&statement)?;
        let state = self.session().state();
        let plan = state.statement_to_plan(statement).await?;
        Ok(self.session().execute_logical_plan(plan).await?)
    }

    async fn plan_query(&self, query: Query) -> Result<DataFrame> {
        self.plan(DFStatement::Statement(Box::new(Statement::Query(
            Box::new(query),
        ))))
        .await
    }

    async fn run(&self, statement: DFStatement) -> Result<Executed> {
        let DFStatement::Statement(inner) = &statement else {
            return Ok(Executed::Query(self.plan(statement).await?));
        };
        match inner.as_ref() {
            Statement::CreateTable(create) => {
                let name = table_name(&create.name)?;
                let exists = self.load(&name).await?.is_some();
                if exists && create.if_not_exists {
                    return Ok(Executed::Done(format!("table `{name}` already exists")));
                }
                if exists && !create.or_replace {
                    return Err(LakeError::TableExists(name.to_string()));
                }
                let df = match &create.query {
                    Some(query) => self.plan_query(query.as_ref().clone()).await?,
                    None if create.columns.is_empty() => {
                        return Err(LakeError::Sql(format!(
                            "CREATE TABLE {name} needs columns or AS SELECT"
                        )));
                    }
                    None => {
                        let columns = create
                            .columns
                            .iter()
                            .map(|c| {
                                format!("CAST(NULL AS {}) AS \"{}\"", c.data_type, ident(&c.name))
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        self.session()
                            .sql(&format!("SELECT {columns} LIMIT 0"))
                            .await?
                    }
                };
                let batches = collect_with_schema(df).await?;
                Ok(Executed::Commit(self.overwrite(&name, batches).await?))
            }
            Statement::Insert(insert) => {
                let TableObject::TableName(object) = &insert.table else {
                    return Err(LakeError::Sql(
                        "INSERT INTO a table function is not supported".into(),
                    ));
                };
                let name = table_name(object)?;
                let Some(source) = &insert.source else {
                    return Err(LakeError::Sql(format!(
                        "INSERT INTO {name} needs SELECT or VALUES"
                    )));
                };
                let df = self.plan_query(source.as_ref().clone()).await?;
                let listed: Vec<String> = insert
                    .columns
                    .iter()
                    .map(table_name_part)
                    .collect::<Result<_>>()?;
                let df = self.map_insert_columns(&name, df, listed).await?;
                let batches = collect_with_schema(df).await?;
                let mode = if insert.overwrite {
                    WriteMode::Overwrite
                } else {
                    WriteMode::Append
                };
                Ok(Executed::Commit(self.write(&name, batches, mode).await?))
            }
            Statement::Merge(merge) => self.merge_statement(merge).await,
            Statement::Delete(delete) => {
                let tables = match &delete.from {
                    FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
                };
                let [only] = tables.as_slice() else {
                    return Err(LakeError::Sql("DELETE from one table at a time".into()));
                };
                let TableFactor::Table { name, .. } = &only.relation else {
                    return Err(LakeError::Sql("DELETE FROM needs a table name".into()));
                };
                let name = table_name(name)?;
                let table = self.table(&name).await?;
                let mut builder = table
                    .delete()
                    .with_session_state(Arc::new(self.session().state()));
                if let Some(selection) = &delete.selection {
                    builder = builder.with_predicate(selection.to_string());
                }
                let (table, metrics) = builder.await.map_err(|e| LakeError::delta(&name, e))?;
                let deleted = metrics.num_deleted_rows.unwrap_or(0) as u64;
                Ok(Executed::Commit(Commit {
                    table: name.to_string(),
                    version: table.version(),
                    deleted,
                    ..Commit::default()
                }))
            }
            Statement::Update(update) => {
                let TableFactor::Table { name, .. } = &update.table.relation else {
                    return Err(LakeError::Sql("UPDATE needs a table name".into()));
                };
                let name = table_name(name)?;
                let table = self.table(&name).await?;
                let mut builder = table
                    .update()
                    .with_session_state(Arc::new(self.session().state()));
                for assignment in &update.assignments {
                    let AssignmentTarget::ColumnName(column) = &assignment.target else {
                        return Err(LakeError::Sql(
                            "UPDATE ... SET (a, b) = ... is not supported; set each column".into(),
                        ));
                    };
                    builder =
                        builder.with_update(table_name_part(column)?, assignment.value.to_string());
                }
                if let Some(selection) = &update.selection {
                    builder = builder.with_predicate(selection.to_string());
                }
                let (table, metrics) = builder.await.map_err(|e| LakeError::delta(&name, e))?;
                Ok(Executed::Commit(Commit {
                    table: name.to_string(),
                    version: table.version(),
                    updated: metrics.num_updated_rows as u64,
                    ..Commit::default()
                }))
            }
            Statement::Drop {
                object_type: ObjectType::Table,
                if_exists,
                names,
                ..
            } => {
                let mut dropped = Vec::new();
                for object in names {
                    let name = table_name(object)?;
                    if self.load(&name).await?.is_none() {
                        if *if_exists {
                            continue;
                        }
                        return Err(self.unknown_table(&name.to_string()).await);
                    }
                    self.drop_table(&name).await?;
                    dropped.push(name.to_string());
                }
                Ok(Executed::Done(format!("dropped {}", dropped.join(", "))))
            }
            _ => Ok(Executed::Query(self.plan(statement).await?)),
        }
    }

    /// Renames and casts an INSERT's source columns onto the target's columns: the listed
    /// ones, or the table's own by position.
    async fn map_insert_columns(
        &self,
        name: &TableName,
        df: DataFrame,
        listed: Vec<String>,
    ) -> Result<DataFrame> {
        let table_schema = match self.load(name).await? {
            Some(table) => Some(Lake::schema_of(name, &table)?),
            None => None,
        };
        let source: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let targets: Vec<String> = if !listed.is_empty() {
            listed
        } else if let Some(schema) = &table_schema {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        } else {
            // A new table takes the query's column names.
            source.clone()
        };
        if source.len() != targets.len() {
            return Err(LakeError::Sql(format!(
                "INSERT INTO {name}: the query has {} column(s) but {} target column(s) ({})",
                source.len(),
                targets.len(),
                targets.join(", ")
            )));
        }
        let exprs = source
            .iter()
            .zip(&targets)
            .map(|(from, to)| {
                let expr = col(format!("\"{}\"", from.replace('"', "\"\"")));
                match table_schema
                    .as_ref()
                    .and_then(|s| s.field_with_name(to).ok())
                {
                    Some(field) => cast(expr, field.data_type().clone()).alias(to),
                    None => expr.alias(to),
                }
            })
            .collect::<Vec<_>>();
        Ok(df.select(exprs)?)
    }

    async fn merge_statement(&self, merge: &ast::Merge) -> Result<Executed> {
        let TableFactor::Table { name, alias, .. } = &merge.table else {
            return Err(LakeError::Sql("MERGE INTO needs a table name".into()));
        };
        let name = table_name(name)?;
        let target_alias = alias
            .as_ref()
            .map_or_else(|| name.table().to_string(), |a| ident(&a.name));
        let (source_query, source_alias) = match &merge.source {
            TableFactor::Table {
                name: source,
                alias,
                ..
            } => {
                let source_name = table_name(source)?;
                let alias = alias
                    .as_ref()
                    .map_or_else(|| source_name.table().to_string(), |a| ident(&a.name));
                (format!("SELECT * FROM {source_name}"), alias)
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let alias = alias
                    .as_ref()
                    .map_or_else(|| "source".to_string(), |a| ident(&a.name));
                (subquery.to_string(), alias)
            }
            other => {
                return Err(LakeError::Sql(format!(
                    "MERGE ... USING {other} is not supported; use a table or (SELECT ...)"
                )));
            }
        };
        let source = self.plan(parse(&source_query)?.remove(0)).await?;
        let table = self.table(&name).await?;
        let mut builder = table
            .merge(source, merge.on.to_string())
            .with_source_alias(&source_alias)
            .with_target_alias(&target_alias)
            .with_session_state(Arc::new(self.session().state()));
        let delta = |e| LakeError::delta(&name, e);
        for clause in &merge.clauses {
            let predicate = clause.predicate.as_ref().map(ToString::to_string);
            builder = match (&clause.clause_kind, &clause.action) {
                (MergeClauseKind::Matched, MergeAction::Update(update)) => {
                    let sets = assignments(&update.assignments)?;
                    builder
                        .when_matched_update(|mut u| {
                            if let Some(p) = &predicate {
                                u = u.predicate(p.clone());
                            }
                            for (c, e) in &sets {
                                u = u.update(c.clone(), e.clone());
                            }
                            u
                        })
                        .map_err(delta)?
                }
                (MergeClauseKind::Matched, MergeAction::Delete { .. }) => builder
                    .when_matched_delete(|mut d| {
                        if let Some(p) = &predicate {
                            d = d.predicate(p.clone());
                        }
                        d
                    })
                    .map_err(delta)?,
                (
                    MergeClauseKind::NotMatched | MergeClauseKind::NotMatchedByTarget,
                    MergeAction::Insert(insert),
                ) => {
                    let MergeInsertKind::Values(values) = &insert.kind else {
                        return Err(LakeError::Sql(
                            "MERGE ... INSERT needs (columns) VALUES (...)".into(),
                        ));
                    };
                    let [row] = values.rows.as_slice() else {
                        return Err(LakeError::Sql(
                            "MERGE ... INSERT VALUES takes one row of expressions".into(),
                        ));
                    };
                    let columns: Vec<String> = insert
                        .columns
                        .iter()
                        .map(table_name_part)
                        .collect::<Result<_>>()?;
                    if columns.len() != row.len() {
                        return Err(LakeError::Sql(format!(
                            "MERGE ... INSERT lists {} column(s) but {} value(s)",
                            columns.len(),
                            row.len()
                        )));
                    }
                    let sets: Vec<(String, String)> = columns
                        .into_iter()
                        .zip(row.iter().map(Expr::to_string))
                        .collect();
                    builder
                        .when_not_matched_insert(|mut i| {
                            if let Some(p) = &predicate {
                                i = i.predicate(p.clone());
                            }
                            for (c, e) in &sets {
                                i = i.set(c.clone(), e.clone());
                            }
                            i
                        })
                        .map_err(delta)?
                }
                (MergeClauseKind::NotMatchedBySource, MergeAction::Delete { .. }) => builder
                    .when_not_matched_by_source_delete(|mut d| {
                        if let Some(p) = &predicate {
                            d = d.predicate(p.clone());
                        }
                        d
                    })
                    .map_err(delta)?,
                (MergeClauseKind::NotMatchedBySource, MergeAction::Update(update)) => {
                    let sets = assignments(&update.assignments)?;
                    builder
                        .when_not_matched_by_source_update(|mut u| {
                            if let Some(p) = &predicate {
                                u = u.predicate(p.clone());
                            }
                            for (c, e) in &sets {
                                u = u.update(c.clone(), e.clone());
                            }
                            u
                        })
                        .map_err(delta)?
                }
                (kind, action) => {
                    return Err(LakeError::Sql(format!(
                        "MERGE clause `WHEN {kind} THEN {action}` is not supported"
                    )));
                }
            };
        }
        let (table, m) = builder.await.map_err(delta)?;
        Ok(Executed::Commit(Commit {
            table: name.to_string(),
            version: table.version(),
            rows: m.num_source_rows as u64,
            inserted: m.num_target_rows_inserted as u64,
            updated: m.num_target_rows_updated as u64,
            deleted: m.num_target_rows_deleted as u64,
            ..Commit::default()
        }))
    }

    /// Removes a table: every file under its directory.
    pub async fn drop_table(&self, name: &TableName) -> Result<()> {
        let store = &self.inner.root_store;
        let prefix = deltalake::Path::from(format!("{}/{}", name.schema(), name.table()));
        let files: Vec<_> = store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(|e| LakeError::Location {
                location: self.location().to_string(),
                reason: e.to_string(),
            })?;
        for file in files {
            store.delete(&file).await.map_err(|e| LakeError::Location {
                location: self.location().to_string(),
                reason: e.to_string(),
            })?;
        }
        if self.root().scheme() == "file" {
            let dir = self.table_url(name).to_file_path().expect("a file URL");
            let _ = std::fs::remove_dir_all(dir);
        }
        self.inner.catalog.remove_table(name);
        Ok(())
    }

    /// Fails with [`LakeError::UnknownTable`] if the statement reads a lake table that does not
    /// exist (CTE names, table functions and `information_schema` are not lake tables).
    fn check_references(&self, statement: &DFStatement) -> Result<()> {
        let references = self.session().state().resolve_table_references(statement)?;
        let known = self.inner.catalog.known_names();
        for reference in references {
            let (catalog, schema, table) = match &reference {
                TableReference::Bare { table } => (CATALOG, DEFAULT_SCHEMA, table.as_ref()),
                TableReference::Partial { schema, table } => {
                    (CATALOG, schema.as_ref(), table.as_ref())
                }
                TableReference::Full {
                    catalog,
                    schema,
                    table,
                } => (catalog.as_ref(), schema.as_ref(), table.as_ref()),
            };
            if catalog != CATALOG || schema == "information_schema" {
                continue;
            }
            // `range(1, 10)`, `generate_series(...)`: table functions, not tables.
            if matches!(reference, TableReference::Bare { .. })
                && self.session().state().table_functions().contains_key(table)
            {
                continue;
            }
            let full = format!("{schema}.{table}");
            if !known.contains(&full) {
                let shown = if matches!(reference, TableReference::Bare { .. }) {
                    table.to_string()
                } else {
                    full
                };
                return Err(unknown_table_error(&shown, &known));
            }
        }
        Ok(())
    }
}

fn parse(sql: &str) -> Result<Vec<DFStatement>> {
    let dialect = GenericDialect {};
    let mut parser = DFParserBuilder::new(sql).with_dialect(&dialect).build()?;
    Ok(parser.parse_statements()?.into_iter().collect())
}

/// Unquoted identifiers are lower-cased, as DataFusion does.
fn ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn table_name(object: &ObjectName) -> Result<TableName> {
    let parts: Vec<String> = object
        .0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(ident)
        .collect();
    match parts.as_slice() {
        [table] => TableName::new(DEFAULT_SCHEMA, table),
        [schema, table] => TableName::new(schema, table),
        [catalog, schema, table] if catalog == CATALOG => TableName::new(schema, table),
        _ => Err(LakeError::InvalidTableName {
            name: object.to_string(),
            reason: "tables are addressed `schema.table`".into(),
        }),
    }
}

/// The last part of a (possibly qualified) column name.
fn table_name_part(object: &ObjectName) -> Result<String> {
    object
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident)
        .ok_or_else(|| LakeError::Sql(format!("`{object}` is not a column name")))
}

fn assignments(assignments: &[ast::Assignment]) -> Result<Vec<(String, String)>> {
    assignments
        .iter()
        .map(|a| match &a.target {
            AssignmentTarget::ColumnName(c) => Ok((table_name_part(c)?, a.value.to_string())),
            AssignmentTarget::Tuple(_) => Err(LakeError::Sql(
                "SET (a, b) = ... is not supported; set each column".into(),
            )),
        })
        .collect()
}

/// Collects a DataFrame; an empty result still carries its schema (as one empty batch).
async fn collect_with_schema(df: DataFrame) -> Result<Vec<RecordBatch>> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return Ok(vec![RecordBatch::new_empty(schema)]);
    }
    Ok(batches)
}
