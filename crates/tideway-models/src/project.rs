//! The model files of a project (`models/**/*.sql`), their names, and the DAG their
//! references make.
//!
//! A model's table is `<folder>.<file stem>`: `models/marts/customer_health.sql` builds
//! `marts.customer_health` (a file directly in `models/` builds `models.<stem>`); a header's
//! `schema` / `name` (or Datacoral's `@matview-schema` / `@matview-name`, or dbt's
//! `config(schema=..., alias=...)`) override either part. `{{ ref('customer_health') }}` finds a
//! model by its file stem or its table name.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};

use tideway_lake::TableName;
use tideway_lake::datafusion::sql::sqlparser::ast::{
    ObjectName, Query, Statement, TableFactor, Visit, Visitor,
};
use tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect;
use tideway_lake::datafusion::sql::sqlparser::parser::{Parser, ParserError};
use tideway_lake::datafusion::sql::sqlparser::tokenizer::Span;

use crate::diagnostic::{Code, Diagnostic, Lines, Position};
use crate::header::{self, Materialized, ModelConfig};
use crate::template::{self, Rendered, Template};

/// The schema of models that sit directly in `models/`.
pub const DEFAULT_SCHEMA: &str = "models";

/// One model file.
#[derive(Debug, Clone)]
pub struct Model {
    /// The table the model builds.
    pub name: TableName,
    /// The file, relative to the project directory.
    pub file: PathBuf,
    /// The file's text.
    pub source: String,
    pub config: ModelConfig,
    /// The file stem, the name `ref()` uses.
    pub stem: String,
    template: Template,
}

/// Every model of a project.
#[derive(Debug, Clone, Default)]
pub struct Models {
    pub models: Vec<Model>,
    /// `schema.table` and file stem -> index.
    by_name: HashMap<String, usize>,
}

impl Models {
    /// Reads `dir/models/**/*.sql`. Files that cannot be read or configured become
    /// diagnostics; the rest are returned.
    pub fn load(dir: &Path) -> (Models, Vec<Diagnostic>) {
        let mut files = Vec::new();
        collect_sql_files(&dir.join("models"), &mut files);
        files.sort();
        let mut sources = Vec::with_capacity(files.len());
        let mut errors = Vec::new();
        for path in files {
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            match std::fs::read_to_string(&path) {
                Ok(text) => sources.push((rel, text)),
                Err(e) => errors.push(Diagnostic::file(
                    Code::Io,
                    rel,
                    format!("cannot read the model file: {e}"),
                )),
            }
        }
        let (models, more) = Models::from_sources(sources);
        errors.extend(more);
        (models, errors)
    }

    /// Builds the models from (path relative to the project, text) pairs.
    pub fn from_sources(sources: Vec<(PathBuf, String)>) -> (Models, Vec<Diagnostic>) {
        let mut parsed = Vec::with_capacity(sources.len());
        let mut errors = Vec::new();
        for (file, source) in sources {
            match Model::parse(file, source) {
                Ok(model) => parsed.push(model),
                Err(e) => errors.extend(e),
            }
        }
        let (models, more) = Models::from_parsed(parsed);
        errors.extend(more);
        (models, errors)
    }

    /// Builds the project from models already parsed: names them, and reports a table two
    /// models build.
    pub fn from_parsed(parsed: Vec<Model>) -> (Models, Vec<Diagnostic>) {
        let mut models = Models {
            models: parsed,
            by_name: HashMap::new(),
        };
        let mut errors = Vec::new();
        // Names: a table built twice is an error naming both files.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, m) in models.models.iter().enumerate() {
            if let Some(&j) = seen.get(&m.name.to_string()) {
                errors.push(
                    Diagnostic::file(
                        Code::DuplicateModel,
                        &m.file,
                        format!(
                            "`{}` is built by two models: {} and {}",
                            m.name,
                            models.models[j].file.display(),
                            m.file.display()
                        ),
                    )
                    .with_help("rename one file, or set `name` in its header"),
                );
            } else {
                seen.insert(m.name.to_string(), i);
            }
        }
        models.by_name = seen.clone();
        let mut stems: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, m) in models.models.iter().enumerate() {
            stems.entry(&m.stem).or_default().push(i);
            stems.entry(m.name.table()).or_default().push(i);
        }
        for (stem, mut idx) in stems {
            idx.dedup();
            if idx.len() == 1 && !models.by_name.contains_key(stem) {
                models.by_name.insert(stem.to_string(), idx[0]);
            }
        }
        (models, errors)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The model building `schema.table`, or named `stem`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every model's `schema.table`, for "did you mean" hints.
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.to_string()).collect()
    }
}

pub(crate) fn collect_sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_sql_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
}

impl Model {
    /// Parses one model file: header, template, name.
    pub fn parse(file: PathBuf, source: String) -> Result<Model, Vec<Diagnostic>> {
        let (mut config, mut errors) = header::parse(&file, &source);
        let template = match Template::parse(&file, &source) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let lines = Lines::new(&source);
        if let Some(t) = &template {
            dbt_config(&file, &source, &lines, t, &mut config, &mut errors);
        }
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let folder = file
            .components()
            .skip_while(|c| c.as_os_str() != "models")
            .nth(1)
            .filter(|_| file.components().count() > 2)
            .map(|c| c.as_os_str().to_string_lossy().to_string());
        let schema = config
            .schema
            .clone()
            .or(folder.filter(|f| !f.ends_with(".sql")))
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
        let table = config.name.clone().unwrap_or_else(|| stem.clone());
        let name = match TableName::new(&schema.to_lowercase(), &table.to_lowercase()) {
            Ok(n) => Some(n),
            Err(e) => {
                errors.push(
                    Diagnostic::file(
                        Code::Header,
                        &file,
                        format!("the model's table `{schema}.{table}` is not a valid name: {e}"),
                    )
                    .with_help(
                        "rename the file or its folder, or set `schema` / `name` in the header",
                    ),
                );
                None
            }
        };
        if config.materialized == Materialized::Incremental
            && config.unique_key.is_empty()
            && config.time_column.is_none()
        {
            errors.push(
                Diagnostic::file(
                    Code::Header,
                    &file,
                    "an incremental model needs a `time_column` (each run replaces its window) or a `unique_key` (each run merges by it)",
                ),
            );
        }
        match (name, template, errors.is_empty()) {
            (Some(name), Some(template), true) => Ok(Model {
                name,
                file,
                source,
                config,
                stem,
                template,
            }),
            _ => Err(errors),
        }
    }

    /// Renders the model's SQL.
    pub fn render(&self, ctx: &dyn template::Context) -> Result<Rendered, Vec<Diagnostic>> {
        self.template.render(&self.file, &self.source, ctx)
    }

    /// A diagnostic at a byte range of the rendered SQL, pointed back at the file.
    pub fn diagnostic_at(
        &self,
        rendered: &Rendered,
        range: Range<usize>,
        code: Code,
        message: impl Into<String>,
    ) -> Diagnostic {
        let start = rendered.original_offset(range.start);
        let end = rendered.original_offset(range.end.max(range.start + 1) - 1) + 1;
        let lines = Lines::new(&self.source);
        let position = lines.position(start);
        let length = if lines.position(end).line == position.line {
            self.source[start..end.min(self.source.len()).max(start)]
                .chars()
                .count()
        } else {
            1
        };
        Diagnostic::at(code, &self.file, &self.source, position, length, message)
    }
}

/// dbt's `config(materialized=..., unique_key=..., schema=..., alias=...)`.
fn dbt_config(
    file: &Path,
    source: &str,
    lines: &Lines,
    template: &Template,
    config: &mut ModelConfig,
    errors: &mut Vec<Diagnostic>,
) {
    use template::Value;
    for (key, value, range) in template.config() {
        let err = |message: String| {
            Diagnostic::at(
                Code::Header,
                file,
                source,
                lines.position(range.start),
                range.len(),
                message,
            )
        };
        let text = match &value {
            Value::Str(s) => Some(s.clone()),
            _ => None,
        };
        match (key.as_str(), text) {
            ("materialized", Some(m)) => match Materialized::parse(&m) {
                Some(v) => config.materialized = v,
                None => errors.push(err(format!(
                    "unknown materialization `{m}`; choose one of {}",
                    Materialized::CHOICES
                ))),
            },
            ("unique_key", _) => match value.strings() {
                Some(keys) => config.unique_key = keys,
                None => errors.push(err("unique_key is a column name or a list of them".into())),
            },
            ("schema", Some(s)) => config.schema = Some(s),
            ("alias", Some(s)) => config.name = Some(s),
            // dbt settings that have no effect on how Tideway builds the table.
            ("tags" | "enabled" | "persist_docs" | "docs" | "meta" | "grants" | "on_schema_change" | "incremental_strategy" | "full_refresh" | "contract" | "database", _) => {}
            (k, _) => errors.push(err(format!(
                "config key `{k}` is not understood here; known: materialized, unique_key, schema, alias (tags, meta, docs, grants, enabled and on_schema_change are accepted and ignored)"
            ))),
        }
    }
}

/// A table a model reads.
#[derive(Debug, Clone)]
pub struct Reference {
    /// As written, normalized: `schema.table` (lowercase unless quoted).
    pub name: String,
    /// Where in the rendered SQL.
    pub range: Range<usize>,
}

/// Parses the rendered SQL of `model`: exactly one query.
pub fn parse_query(model: &Model, rendered: &Rendered) -> Result<Statement, Box<Diagnostic>> {
    let dialect = GenericDialect {};
    let statements = Parser::new(&dialect)
        .try_with_sql(&rendered.sql)
        .and_then(|mut p| p.parse_statements());
    let lines = Lines::new(&rendered.sql);
    let mut statements = match statements {
        Ok(s) => s,
        Err(e) => {
            let message = match &e {
                ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
                ParserError::RecursionLimitExceeded => "the query nests too deeply".to_string(),
            };
            let (message, position) = split_location(&message);
            // "found: EOF" comes without a position: the query ends too early.
            let end = rendered.sql.trim_end().len().saturating_sub(1);
            let offset = position.map_or(end, |p| lines.offset(p));
            return Err(Box::new(model.diagnostic_at(
                rendered,
                offset..offset + 1,
                Code::Syntax,
                format!("syntax error: {}", message.trim()),
            )));
        }
    };
    match statements.len() {
        1 if matches!(statements[0], Statement::Query(_)) => Ok(statements.remove(0)),
        0 => Err(Box::new(Diagnostic::file(
            Code::Syntax,
            &model.file,
            "the model has no query; a model is one SELECT (WITH ... SELECT ...)",
        ))),
        _ => {
            let at = statements
                .iter()
                .find(|s| !matches!(s, Statement::Query(_)))
                .or(statements.get(1))
                .map(span_of_statement)
                .unwrap_or(Span::empty());
            let offset = lines.offset(Position {
                line: at.start.line as usize,
                column: at.start.column as usize,
            });
            Err(Box::new(model.diagnostic_at(
                rendered,
                offset..offset + 1,
                Code::Syntax,
                "a model is exactly one SELECT (WITH ... SELECT ...); Tideway writes the table itself, so leave out CREATE, INSERT and other statements",
            )))
        }
    }
}

fn span_of_statement(s: &Statement) -> Span {
    use tideway_lake::datafusion::sql::sqlparser::ast::Spanned;
    s.span()
}

/// Splits sqlparser's "... at Line: 3, Column: 7" into the message and the position.
fn split_location(message: &str) -> (String, Option<Position>) {
    let Some(i) = message.rfind(" at Line: ") else {
        return (message.to_string(), None);
    };
    let rest = &message[i + " at Line: ".len()..];
    let mut parts = rest.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let column = parts.next().and_then(|c| {
        c.trim_end_matches(|ch: char| !ch.is_ascii_digit())
            .parse()
            .ok()
    });
    match (line, column) {
        (Some(line), Some(column)) => (message[..i].to_string(), Some(Position { line, column })),
        _ => (message.to_string(), None),
    }
}

/// The tables a query reads (CTE names and table functions left out), in order of appearance.
pub fn references(statement: &Statement, sql: &str) -> Vec<Reference> {
    struct Refs<'a> {
        ctes: HashSet<String>,
        out: Vec<Reference>,
        lines: Lines<'a>,
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                for cte in &with.cte_tables {
                    self.ctes
                        .insert(normalize(&cte.alias.name.value, cte.alias.name.quote_style));
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name, args: None, ..
            } = factor
            {
                let parts = parts(name);
                if parts.len() == 1 && self.ctes.contains(&parts[0]) {
                    return ControlFlow::Continue(());
                }
                let (first, last) = (name.0.first(), name.0.last());
                let range = match (
                    first.and_then(|p| p.as_ident()),
                    last.and_then(|p| p.as_ident()),
                ) {
                    (Some(a), Some(b)) => {
                        let start = self.lines.offset(Position {
                            line: a.span.start.line as usize,
                            column: a.span.start.column as usize,
                        });
                        let end = self.lines.offset(Position {
                            line: b.span.end.line as usize,
                            column: b.span.end.column as usize,
                        });
                        start..end.max(start + 1)
                    }
                    _ => 0..1,
                };
                self.out.push(Reference {
                    name: parts.join("."),
                    range,
                });
            }
            ControlFlow::Continue(())
        }
    }
    // CTE names are collected first, so a reference before its CTE's definition in the text
    // (a CTE used by an earlier CTE is not valid SQL anyway) is still recognized.
    let mut refs = Refs {
        ctes: HashSet::new(),
        out: Vec::new(),
        lines: Lines::new(sql),
    };
    let _ = statement.visit(&mut refs);
    refs.out
}

fn normalize(value: &str, quote: Option<char>) -> String {
    if quote.is_some() {
        value.to_string()
    } else {
        value.to_lowercase()
    }
}

fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .filter_map(|p| p.as_ident())
        .map(|i| normalize(&i.value, i.quote_style))
        .collect()
}

/// Models in an order where each comes after the models it reads, and the cycles that
/// prevent ordering the rest (each cycle as model indexes, each reading the next, first =
/// last).
pub fn order(upstreams: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let n = upstreams.len();
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (i, ups) in upstreams.iter().enumerate() {
        let unique: HashSet<usize> = ups.iter().copied().collect();
        pending[i] = unique.len();
        for u in unique {
            downstream[u].push(i);
        }
    }
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_front() {
        order.push(i);
        for &d in &downstream[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push_back(d);
            }
        }
    }
    // What is left is on a cycle or downstream of one: walk upstream edges among the left
    // models until a model repeats.
    let mut cycles = Vec::new();
    let mut on_cycle: HashSet<usize> = HashSet::new();
    let left: BTreeMap<usize, ()> = (0..n)
        .filter(|&i| pending[i] > 0)
        .map(|i| (i, ()))
        .collect();
    for &start in left.keys() {
        if on_cycle.contains(&start) {
            continue;
        }
        let mut path = vec![start];
        let mut index: HashMap<usize, usize> = HashMap::from([(start, 0)]);
        let mut at = start;
        while let Some(&next) = upstreams[at].iter().find(|u| left.contains_key(u)) {
            if let Some(&k) = index.get(&next) {
                let mut cycle: Vec<usize> = path[k..].to_vec();
                if cycle.iter().any(|c| on_cycle.contains(c)) {
                    break;
                }
                cycle.push(next);
                on_cycle.extend(cycle.iter().copied());
                cycles.push(cycle);
                break;
            }
            index.insert(next, path.len());
            path.push(next);
            at = next;
        }
    }
    (order, cycles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_upstreams_first_and_finds_cycles() {
        // 0 <- 1 <- 2, and 3 <-> 4, 5 reads 4.
        let ups = vec![vec![], vec![0], vec![1, 0], vec![4], vec![3], vec![4]];
        let (order, cycles) = order(&ups);
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(cycles.len(), 1);
        let c = &cycles[0];
        assert_eq!(c.first(), c.last());
        assert_eq!(c.len(), 3);
        // A model reading itself is a cycle of one.
        let (_, cycles) = super::order(&[vec![0]]);
        assert_eq!(cycles, [vec![0, 0]]);
    }

    #[test]
    fn names_come_from_the_folder_and_the_file() {
        let m = Model::parse("models/marts/lead_score.sql".into(), "select 1 as a".into()).unwrap();
        assert_eq!(m.name.to_string(), "marts.lead_score");
        let m = Model::parse("models/top.sql".into(), "select 1 as a".into()).unwrap();
        assert_eq!(m.name.to_string(), "models.top");
        let m = Model::parse(
            "models/x/y.sql".into(),
            "-- @matview-schema analytics\n-- @matview-name health\nselect 1 as a".into(),
        )
        .unwrap();
        assert_eq!(m.name.to_string(), "analytics.health");
        let m = Model::parse(
            "models/x/y.sql".into(),
            "{{ config(schema='finance', alias='ltv', materialized='view') }} select 1 as a".into(),
        )
        .unwrap();
        assert_eq!(m.name.to_string(), "finance.ltv");
        assert_eq!(m.config.materialized, Materialized::View);
    }
}
