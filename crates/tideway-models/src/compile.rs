//! The compile step: every model parsed, resolved and type-checked against its upstreams,
//! in DAG order, without reading a row.
//!
//! Each model's query is planned by DataFusion against the *schemas* of what it reads: lake
//! tables as they are now, and upstream models as this compile inferred them. So a model is
//! checked against the upstream SQL in the same change, not against last night's tables, and
//! the whole DAG of 1,000 models plans in about a tenth of a second. Every problem in every
//! model is reported in one pass; a model whose upstream has an error is not checked (its
//! inputs are unknown) and is listed as such.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tideway_lake::arrow::datatypes::{DataType, SchemaRef};
use tideway_lake::datafusion::catalog::{TableFunction, TableFunctionArgs};
use tideway_lake::datafusion::common::config::ConfigOptions;
use tideway_lake::datafusion::common::{
    DataFusionError, Result as DfResult, SchemaError, TableReference, plan_datafusion_err,
};
use tideway_lake::datafusion::datasource::cte_worktable::CteWorkTable;
use tideway_lake::datafusion::datasource::empty::EmptyTable;
use tideway_lake::datafusion::datasource::provider_as_source;
use tideway_lake::datafusion::execution::FunctionRegistry as _;
use tideway_lake::datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use tideway_lake::datafusion::logical_expr::planner::{ExprPlanner, RelationPlanner};
use tideway_lake::datafusion::logical_expr::{
    AggregateUDF, HigherOrderUDF, LogicalPlan, ScalarUDF, TableSource, WindowUDF,
};
use tideway_lake::datafusion::prelude::SessionConfig;
use tideway_lake::datafusion::sql::planner::{ContextProvider, ParserOptions, SqlToRel};
use tideway_lake::datafusion::sql::sqlparser::ast::Statement;
use tideway_lake::{Lake, TableName, closest};

use crate::diagnostic::{Code, Diagnostic};
use crate::dialect;
use crate::lineage::{self, ModelLineage};
use crate::project::{self, Models, Reference};
use crate::template::{Context, Rendered};

/// A model that compiled. Only what later steps use is kept (the logical plan is read for
/// lineage and dropped): a DAG of 10,000 models compiles in a few hundred megabytes less.
#[derive(Debug, Clone)]
pub struct CompiledModel {
    /// Index into [`Compilation::models`].
    pub index: usize,
    /// The inferred output schema.
    pub schema: SchemaRef,
    /// For a view: its query, rendered and rewritten, which runs inline in its readers.
    pub view_query: Option<Statement>,
    /// The models it reads (indexes).
    pub upstream_models: Vec<usize>,
    /// The lake tables it reads that no model builds.
    pub upstream_sources: Vec<String>,
    /// Where each output column comes from, and which input columns the query names.
    pub lineage: Arc<ModelLineage>,
}

/// The result of compiling a project.
#[derive(Debug)]
pub struct Compilation {
    pub models: Models,
    /// By model index; `None` for a model with errors or not checked.
    pub compiled: Vec<Option<CompiledModel>>,
    /// Model indexes, upstreams first.
    pub order: Vec<usize>,
    pub diagnostics: Vec<Diagnostic>,
    /// Models not checked, with the upstream model that has errors.
    pub not_checked: Vec<(usize, usize)>,
    /// The lake tables models read, with their schemas.
    pub sources: HashMap<String, SchemaRef>,
}

impl Compilation {
    pub fn is_ok(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// The compiled model building `name` (`schema.table` or a file stem).
    pub fn get(&self, name: &str) -> Option<&CompiledModel> {
        self.models
            .find(name)
            .and_then(|i| self.compiled[i].as_ref())
    }
}

/// Compiles `models` against the tables of `lake` (or against no tables at all).
/// `load_errors` are the problems found reading the files; they are reported first.
pub async fn compile(
    models: Models,
    load_errors: Vec<Diagnostic>,
    lake: Option<&Lake>,
) -> Result<Compilation, tideway_lake::LakeError> {
    let mut once = Cache {
        once: true,
        ..Cache::default()
    };
    compile_with(models, load_errors, lake, &mut once).await
}

/// What one compile keeps so that the next is incremental (`tideway compile --watch`): a model
/// whose file did not change is not rendered or parsed again, and is not planned again unless
/// the schema of something it reads changed. So an edit that keeps a model's columns re-plans
/// that model alone; one that changes them re-plans the readers, and stops where their
/// schemas come out the same.
#[derive(Debug, Default)]
pub struct Cache {
    /// The project's model names when `prepared` was filled (a reference resolves against them).
    names: Vec<String>,
    /// By model file: its text and what preparing it gave.
    prepared: HashMap<std::path::PathBuf, (String, Result<Prepared, Vec<Diagnostic>>)>,
    /// The lake tables' schemas `compiled` was checked against.
    sources: HashMap<String, SchemaRef>,
    /// By table: the model file's text and the compiled model.
    compiled: HashMap<String, (String, CompiledModel)>,
    /// The planning session (DataFusion's functions and ours), built once.
    state: Option<SessionState>,
    /// How many models the last compile planned (the rest it reused).
    pub planned: usize,
    /// A one-off compile: keep nothing (what is kept would be most of its peak memory).
    once: bool,
}

/// [`compile`], reusing what `cache` holds from the previous compile, and refilling it.
pub async fn compile_with(
    models: Models,
    load_errors: Vec<Diagnostic>,
    lake: Option<&Lake>,
    cache: &mut Cache,
) -> Result<Compilation, tideway_lake::LakeError> {
    let lake_tables: Vec<String> = match lake {
        Some(lake) => lake
            .tables()
            .await?
            .iter()
            .map(ToString::to_string)
            .collect(),
        None => Vec::new(),
    };
    let started = std::time::Instant::now();
    let names = models.names();
    if names != cache.names {
        cache.prepared.clear();
        cache.names = names;
    }
    let mut prepared = prepare(&models, &cache.prepared);
    let prepare_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The schemas of the lake tables that models read and no model builds.
    let wanted: HashSet<String> = prepared
        .iter()
        .flatten()
        .flat_map(|p| p.references.iter().map(|r| r.name.clone()))
        .map(|n| n.strip_prefix("lake.").map(str::to_string).unwrap_or(n))
        .filter(|n| models.find(n).is_none() && lake_tables.contains(n))
        .collect();
    let mut sources = HashMap::new();
    if let Some(lake) = lake {
        let loads = wanted.iter().map(|name| async move {
            let table: TableName = name.parse()?;
            Ok::<_, tideway_lake::LakeError>((name.clone(), lake.schema(&table).await?))
        });
        for loaded in futures::future::join_all(loads).await {
            let (name, schema) = loaded?;
            sources.insert(name, schema);
        }
    }
    if sources != cache.sources {
        cache.compiled.clear();
        cache.sources = sources.clone();
    }
    // Keep what was prepared for each file whose text is new; forget files that are gone.
    if cache.once {
        cache.prepared.clear();
    }
    let files: HashSet<&std::path::Path> = models.models.iter().map(|m| m.file.as_path()).collect();
    cache.prepared.retain(|f, _| files.contains(f.as_path()));
    for (m, p) in models.models.iter().zip(&prepared) {
        if cache
            .prepared
            .get(&m.file)
            .is_none_or(|(s, _)| *s != m.source)
        {
            cache
                .prepared
                .insert(m.file.clone(), (m.source.clone(), p.clone()));
        }
    }
    let loaded_ms = started.elapsed().as_secs_f64() * 1000.0 - prepare_ms;
    let reusable = std::mem::take(&mut cache.compiled);
    let state = cache.state.get_or_insert_with(session_state);
    let (compilation, planned) = check(
        models,
        load_errors,
        &mut prepared,
        sources,
        &lake_tables,
        &reusable,
        state,
    );
    cache.planned = planned;
    if !cache.once {
        cache.compiled = compilation
            .compiled
            .iter()
            .flatten()
            .map(|c| {
                let m = &compilation.models.models[c.index];
                (m.name.to_string(), (m.source.clone(), c.clone()))
            })
            .collect();
    }
    tracing::debug!(
        models = compilation.models.len(),
        planned,
        prepare_ms,
        schemas_ms = loaded_ms,
        plan_ms = started.elapsed().as_secs_f64() * 1000.0 - prepare_ms - loaded_ms,
        "compiled: rendered and parsed, read the lake tables' schemas, planned"
    );
    Ok(compilation)
}

/// A model rendered and parsed, not yet planned. The parsed query is not kept: a DAG's
/// syntax trees together are most of a compile's memory (about 40 KB a model), so each model
/// is parsed again when its layer is planned.
#[derive(Debug, Clone)]
struct Prepared {
    rendered: Arc<Rendered>,
    references: Arc<Vec<Reference>>,
}

/// The compile-time render context: no table exists yet, the window is a fixed day.
struct CompileContext<'a> {
    models: &'a Models,
    this: String,
}

impl Context for CompileContext<'_> {
    fn model(&self, name: &str) -> Option<String> {
        self.models
            .find(name)
            .map(|i| self.models.models[i].name.to_string())
    }
    fn this(&self) -> String {
        self.this.clone()
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn is_incremental(&self) -> bool {
        false
    }
    fn window(&self) -> (String, String) {
        (
            "TIMESTAMP '1970-01-01 00:00:00'".into(),
            "TIMESTAMP '1970-01-02 00:00:00'".into(),
        )
    }
}

/// Renders and parses each model (on every core), or takes what `cached` holds for its text;
/// `Err` holds its diagnostics.
fn prepare(
    models: &Models,
    cached: &HashMap<std::path::PathBuf, (String, Result<Prepared, Vec<Diagnostic>>)>,
) -> Vec<Result<Prepared, Vec<Diagnostic>>> {
    parallel(models.models.iter().collect(), |model| {
        if let Some((source, p)) = cached.get(&model.file)
            && *source == model.source
        {
            return p.clone();
        }
        let ctx = CompileContext {
            models,
            this: model.name.to_string(),
        };
        let rendered = model.render(&ctx)?;
        let statement = project::parse_query(model, &rendered).map_err(|d| vec![*d])?;
        let references = project::references(&statement, &rendered.sql);
        Ok(Prepared {
            rendered: Arc::new(rendered),
            references: Arc::new(references),
        })
    })
}

/// `f` over `items` on every core, in order. Threads get a large stack: planning a deeply
/// nested query recurses.
fn parallel<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len() / 4)
        .max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    for _ in 0..threads {
        chunks.push(items.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                std::thread::Builder::new()
                    .stack_size(32 << 20)
                    .spawn_scoped(scope, move || chunk.into_iter().map(f).collect::<Vec<R>>())
                    .expect("starting a compile thread")
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a compile thread panicked"))
            .collect()
    })
}

/// A session with DataFusion's functions and Tideway's warehouse functions, for planning.
pub fn session_state() -> SessionState {
    let config = SessionConfig::new()
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
        .set_bool("datafusion.sql_parser.collect_spans", true);
    let mut state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .build();
    for f in dialect::functions() {
        state
            .register_udf(Arc::new(f))
            .expect("registering a scalar function cannot fail");
    }
    state
}

fn check(
    models: Models,
    mut diagnostics: Vec<Diagnostic>,
    prepared: &mut [Result<Prepared, Vec<Diagnostic>>],
    sources: HashMap<String, SchemaRef>,
    lake_tables: &[String],
    reusable: &HashMap<String, (String, CompiledModel)>,
    state: &SessionState,
) -> (Compilation, usize) {
    let n = models.len();
    let mut known: Vec<String> = models.names();
    known.extend(lake_tables.iter().cloned());
    known.sort();
    known.dedup();
    // Resolve references: to a model (an edge of the DAG) or a lake table.
    let mut upstream_models: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut upstream_sources: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut failed = vec![false; n];
    for (i, p) in prepared.iter_mut().enumerate() {
        let model = &models.models[i];
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                diagnostics.append(e);
                failed[i] = true;
                continue;
            }
        };
        for r in p.references.iter() {
            let name = r.name.strip_prefix("lake.").unwrap_or(&r.name);
            if let Some(j) = models.find(name).filter(|_| name.contains('.')) {
                if !upstream_models[i].contains(&j) {
                    upstream_models[i].push(j);
                }
            } else if sources.contains_key(name) {
                if !upstream_sources[i].iter().any(|s| s == name) {
                    upstream_sources[i].push(name.to_string());
                }
            } else {
                let mut d = model.diagnostic_at(
                    &p.rendered,
                    r.range.clone(),
                    Code::UnknownTable,
                    format!("unknown table `{}`", r.name),
                );
                let bare = models.find(name).map(|j| models.models[j].name.to_string());
                d = match bare.as_deref().or_else(|| closest(name, &known)) {
                    Some(hint) if !name.contains('.') => d.with_help(format!(
                        "tables are named `schema.table`: did you mean `{hint}`?"
                    )),
                    Some(hint) => d.with_help(format!("did you mean `{hint}`?")),
                    None if known.is_empty() => d.with_help(
                        "the lake has no tables and no model builds one; run `tideway extract` or `tideway serve` first, or import one with `tideway lake import`",
                    ),
                    None => d.with_help(format!(
                        "no model builds it and the lake has no such table; known tables: {}",
                        known.iter().take(12).cloned().collect::<Vec<_>>().join(", ")
                            + if known.len() > 12 { ", ..." } else { "" }
                    )),
                };
                diagnostics.push(d);
                failed[i] = true;
            }
        }
    }
    // Order the DAG; report each cycle once, at the reference that closes it.
    let (order, cycles) = project::order(&upstream_models);
    for cycle in &cycles {
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| models.models[i].name.to_string())
            .collect();
        let (a, b) = (cycle[0], cycle[1]);
        let message = if cycle.len() == 2 {
            format!("`{}` reads its own table", names[0])
        } else {
            format!(
                "models form a cycle: {} (each reads the next)",
                names.join(" -> ")
            )
        };
        let d = match &prepared[a] {
            Ok(p) => {
                let target = models.models[b].name.to_string();
                let range = p
                    .references
                    .iter()
                    .find(|r| r.name.strip_prefix("lake.").unwrap_or(&r.name) == target)
                    .map_or(0..1, |r| r.range.clone());
                models.models[a].diagnostic_at(&p.rendered, range, Code::Cycle, message)
            }
            Err(_) => Diagnostic::file(Code::Cycle, &models.models[a].file, message),
        };
        diagnostics.push(d.with_help(
            "a model cannot read a table built downstream of it; for an incremental model that reads its own rows, use {{ this }} inside {% if is_incremental() %}",
        ));
        for &i in cycle {
            failed[i] = true;
        }
    }
    // Plan in order, one layer of the DAG at a time (a layer's models read only earlier
    // layers), each layer on every core.
    let options = ParserOptions::from(&state.config_options().sql_parser);
    let mut tables: HashMap<String, Arc<dyn TableSource>> = sources
        .iter()
        .map(|(name, schema)| {
            let source = provider_as_source(Arc::new(EmptyTable::new(schema.clone())));
            (name.clone(), source)
        })
        .collect();
    let mut compiled: Vec<Option<CompiledModel>> = vec![None; n];
    let mut not_checked = Vec::new();
    let mut blocked_by: Vec<Option<usize>> = vec![None; n];
    let mut depth = vec![0usize; n];
    for &i in &order {
        depth[i] = upstream_models[i]
            .iter()
            .map(|&u| depth[u] + 1)
            .max()
            .unwrap_or(0);
    }
    let mut layers: Vec<Vec<usize>> = Vec::new();
    for &i in &order {
        if layers.len() <= depth[i] {
            layers.resize_with(depth[i] + 1, Vec::new);
        }
        layers[depth[i]].push(i);
    }
    let position: HashMap<usize, usize> = order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut plan_errors: Vec<(usize, Diagnostic)> = Vec::new();
    let mut planned = 0;
    // The previous compile's models by their index then.
    let previous: HashMap<usize, (&str, &CompiledModel)> = reusable
        .iter()
        .map(|(n, (_, c))| (c.index, (n.as_str(), c)))
        .collect();
    for layer in layers {
        let mut jobs: Vec<(usize, Prepared)> = Vec::with_capacity(layer.len());
        for i in layer {
            if failed[i] {
                continue;
            }
            if let Some(&u) = upstream_models[i]
                .iter()
                .find(|&&u| failed[u] || blocked_by[u].is_some())
            {
                let root = blocked_by[u].unwrap_or(u);
                blocked_by[i] = Some(root);
                not_checked.push((i, root));
                continue;
            }
            // Reused: the same text, reading the same models with the same schemas (the lake
            // tables' schemas were compared before).
            let name = models.models[i].name.to_string();
            if let Some((source, c)) = reusable.get(&name)
                && *source == models.models[i].source
                && c.upstream_sources == upstream_sources[i]
                && c.upstream_models.len() == upstream_models[i].len()
                && c.upstream_models
                    .iter()
                    .zip(&upstream_models[i])
                    .all(|(&old, &new)| {
                        compiled[new].as_ref().is_some_and(|now| {
                            previous.get(&old).is_some_and(|(n, before)| {
                                *n == models.models[new].name.to_string()
                                    && (Arc::ptr_eq(&before.schema, &now.schema)
                                        || before.schema == now.schema)
                            })
                        })
                    })
            {
                let mut c = c.clone();
                c.index = i;
                c.upstream_models = upstream_models[i].clone();
                tables.insert(
                    name,
                    provider_as_source(Arc::new(EmptyTable::new(c.schema.clone()))),
                );
                compiled[i] = Some(c);
                continue;
            }
            if let Ok(p) = std::mem::replace(&mut prepared[i], Err(Vec::new())) {
                jobs.push((i, p));
            }
        }
        planned += jobs.len();
        let provider = Provider {
            state,
            tables: &tables,
        };
        let models = &models;
        let outcomes = parallel(jobs, |(i, p)| {
            let model = &models.models[i];
            let view = model.config.materialized == crate::header::Materialized::View;
            // It parsed when prepared, so it parses now.
            let mut statement = match project::parse_query(model, &p.rendered) {
                Ok(statement) => statement,
                Err(d) => return (i, Err(*d)),
            };
            dialect::rewrite(&mut statement);
            let view_query = view.then(|| statement.clone());
            let planner = SqlToRel::new_with_options(&provider, options);
            let outcome = match planner.sql_statement_to_plan(statement) {
                Ok(plan) => {
                    let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
                    match check_output(model, &p.rendered, &schema) {
                        Some(d) => Err(d),
                        None => Ok((
                            schema,
                            Arc::new(model_lineage(model, &p.rendered, &plan)),
                            view_query,
                        )),
                    }
                }
                Err(e) => Err(plan_error(model, &p.rendered, &e)),
            };
            (i, outcome)
        });
        for (i, outcome) in outcomes {
            match outcome {
                Ok((schema, lineage, view_query)) => {
                    tables.insert(
                        models.models[i].name.to_string(),
                        provider_as_source(Arc::new(EmptyTable::new(schema.clone()))),
                    );
                    compiled[i] = Some(CompiledModel {
                        index: i,
                        schema,
                        view_query,
                        upstream_models: upstream_models[i].clone(),
                        upstream_sources: upstream_sources[i].clone(),
                        lineage,
                    });
                }
                Err(d) => {
                    plan_errors.push((position[&i], d));
                    failed[i] = true;
                }
            }
        }
    }
    plan_errors.sort_by_key(|(k, _)| *k);
    diagnostics.extend(plan_errors.into_iter().map(|(_, d)| d));
    // Cycles downstream of a failed model: those models are in no order at all.
    for i in 0..n {
        if !failed[i]
            && compiled[i].is_none()
            && blocked_by[i].is_none()
            && !order.contains(&i)
            && let Some(&u) = upstream_models[i].iter().find(|&&u| failed[u])
        {
            not_checked.push((i, u));
        }
    }
    (
        Compilation {
            models,
            compiled,
            order,
            diagnostics,
            not_checked,
            sources,
        },
        planned,
    )
}

/// A model's lineage, its positions in the model file.
fn model_lineage(model: &project::Model, rendered: &Rendered, plan: &LogicalPlan) -> ModelLineage {
    let planned = crate::diagnostic::Lines::new(&rendered.sql);
    let file = crate::diagnostic::Lines::new(&model.source);
    lineage::of_plan(plan, &table_key, &|span, name| {
        let offset = match span {
            Some(span) => planned.offset(crate::diagnostic::Position {
                line: span.start.line as usize,
                column: span.start.column as usize,
            }),
            None => find_word(&rendered.sql, name).unwrap_or(0),
        };
        file.position(rendered.original_offset(offset))
    })
}

/// A table as the project names it: `schema.table` (`lake.schema.table` is the same table).
fn table_key(name: &TableReference) -> String {
    match name {
        TableReference::Bare { table } => table.to_string(),
        TableReference::Partial { schema, table } => format!("{schema}.{table}"),
        TableReference::Full {
            catalog,
            schema,
            table,
        } if catalog.as_ref() == tideway_lake::catalog::CATALOG => format!("{schema}.{table}"),
        TableReference::Full { .. } => name.to_string(),
    }
}

/// Column names a Delta table can hold, unique.
fn check_output(
    model: &project::Model,
    rendered: &Rendered,
    schema: &SchemaRef,
) -> Option<Diagnostic> {
    // A diagnostic at the first place the column's name is written.
    let at_column = |name: &str, message: String, help: String| {
        let at = find_word(&rendered.sql, name).unwrap_or(0);
        Some(
            model
                .diagnostic_at(rendered, at..at + name.len(), Code::Output, message)
                .with_help(help),
        )
    };
    let mut seen: HashSet<String> = HashSet::new();
    for field in schema.fields() {
        let name = field.name();
        if name.chars().any(|c| " ,;{}()\n\t=".contains(c)) {
            return at_column(
                name,
                format!("the column `{name}` needs a name"),
                format!("write `{name} AS <name>`: a lake table's columns are plain names"),
            );
        }
        if !seen.insert(name.to_lowercase()) {
            return at_column(
                name,
                format!("two output columns are named `{name}`"),
                "give one of them another name with `AS`".into(),
            );
        }
        if matches!(field.data_type(), DataType::Null) {
            return at_column(
                name,
                format!("the column `{name}` has no type (it is always NULL)"),
                format!("cast it: `CAST(NULL AS VARCHAR) AS {name}`"),
            );
        }
    }
    // The header names output columns: they must exist (and a time column must be a time).
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let config = &model.config;
    let mut named: Vec<(&str, &str)> = config
        .unique_key
        .iter()
        .map(|k| ("unique_key", k.as_str()))
        .collect();
    named.extend(config.time_column.as_deref().map(|t| ("time_column", t)));
    named.extend(config.tests.keys().map(|c| ("a test", c.as_str())));
    for (what, column) in named {
        if !names.iter().any(|n| n == column) {
            let help = match closest(column, &names) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("the model's columns: {}", names.join(", ")),
            };
            let at = find_word(&model.source, column);
            let d = match at {
                Some(at) => Diagnostic::at(
                    Code::Header,
                    &model.file,
                    &model.source,
                    crate::diagnostic::Lines::new(&model.source).position(at),
                    column.chars().count(),
                    format!("{what} names `{column}`, which is not a column of the model's output"),
                ),
                None => Diagnostic::file(
                    Code::Header,
                    &model.file,
                    format!("{what} names `{column}`, which is not a column of the model's output"),
                ),
            };
            return Some(d.with_help(help));
        }
    }
    if let Some(t) = &config.time_column
        && let Ok(field) = schema.field_with_name(t)
        && !matches!(
            field.data_type(),
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
        )
    {
        return Some(
            Diagnostic::file(
                Code::Header,
                &model.file,
                format!(
                    "time_column `{t}` is {}, not a timestamp or a date",
                    field.data_type()
                ),
            )
            .with_help(format!(
                "cast it in the query: `CAST({t} AS TIMESTAMP) AS {t}`"
            )),
        );
    }
    None
}

/// The first occurrence of `word` in `sql` as a whole identifier, outside comments and strings.
fn find_word(sql: &str, word: &str) -> Option<usize> {
    let lower = sql.to_lowercase();
    let word = word.to_lowercase();
    let bytes = lower.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if lower[i..].starts_with("--") {
            i = lower[i..].find('\n').map_or(bytes.len(), |e| i + e);
            continue;
        }
        if lower[i..].starts_with("/*") {
            i = lower[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |e| i + 2 + e + 2);
            continue;
        }
        if bytes[i] == b'\'' {
            i = lower[i + 1..]
                .find('\'')
                .map_or(bytes.len(), |e| i + 1 + e + 1);
            continue;
        }
        if lower[i..].starts_with(&word)
            && (i == 0 || !ident(bytes[i - 1]))
            && bytes.get(i + word.len()).is_none_or(|&b| !ident(b))
        {
            return Some(i);
        }
        i += lower[i..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// A planning error as a diagnostic at the right place, with a hint that names the right column.
fn plan_error(model: &project::Model, rendered: &Rendered, e: &DataFusionError) -> Diagnostic {
    let lines = crate::diagnostic::Lines::new(&rendered.sql);
    let span_range = e.diagnostic().and_then(|d| d.span).map(|s| {
        let start = lines.offset(crate::diagnostic::Position {
            line: s.start.line as usize,
            column: s.start.column as usize,
        });
        let end = lines.offset(crate::diagnostic::Position {
            line: s.end.line as usize,
            column: s.end.column as usize,
        });
        start..end.max(start + 1)
    });
    let root = e.find_root();
    if let DataFusionError::SchemaError(err, _) = root
        && let SchemaError::FieldNotFound {
            field,
            valid_fields,
        } = err.as_ref()
    {
        let written = match &field.relation {
            Some(q) => format!("{q}.{}", field.name),
            None => field.name.clone(),
        };
        let range = span_range.unwrap_or_else(|| {
            let at = find_word(&rendered.sql, &written)
                .or_else(|| find_word(&rendered.sql, &field.name))
                .unwrap_or(0);
            at..at + written.len()
        });
        let (message, candidates): (String, Vec<String>) = match &field.relation {
            Some(q) => {
                let of_q: Vec<String> = valid_fields
                    .iter()
                    .filter(|c| c.relation.as_ref().is_some_and(|r| r.table() == q.table()))
                    .map(|c| c.name.clone())
                    .collect();
                if of_q.is_empty() {
                    (
                        format!(
                            "`{q}` is not a table or alias in this query (looking for `{written}`)"
                        ),
                        valid_fields.iter().map(|c| c.flat_name()).collect(),
                    )
                } else {
                    (format!("`{q}` has no column `{}`", field.name), of_q)
                }
            }
            None => (
                format!("no column `{}` in the tables this query reads", field.name),
                valid_fields.iter().map(|c| c.name.clone()).collect(),
            ),
        };
        let mut unique = candidates.clone();
        unique.sort();
        unique.dedup();
        let help = match closest(&field.name, &unique) {
            Some(c) => format!("did you mean `{c}`?"),
            None if unique.is_empty() => "no columns are in scope here".to_string(),
            None => format!(
                "columns in scope: {}{}",
                unique
                    .iter()
                    .take(15)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if unique.len() > 15 { ", ..." } else { "" }
            ),
        };
        return model
            .diagnostic_at(rendered, range, Code::UnknownColumn, message)
            .with_help(help);
    }
    if let DataFusionError::SchemaError(err, _) = root {
        let name = match err.as_ref() {
            SchemaError::AmbiguousReference { field } => Some(field.name.clone()),
            SchemaError::DuplicateQualifiedField { name, .. }
            | SchemaError::DuplicateUnqualifiedField { name } => Some(name.clone()),
            SchemaError::FieldNotFound { .. } => None,
        };
        if let Some(name) = name {
            // The second place the name appears is the second column that takes it.
            let first = find_word(&rendered.sql, &name);
            let second = first.and_then(|f| {
                find_word(&rendered.sql[f + name.len()..], &name).map(|s| f + name.len() + s)
            });
            let at = second.or(first).unwrap_or(0);
            return model
                .diagnostic_at(
                    rendered,
                    at..at + name.len(),
                    Code::Output,
                    format!("two output columns are named `{name}`"),
                )
                .with_help("give one of them another name with `AS`");
        }
    }
    let message = e
        .diagnostic()
        .map(|d| d.message.clone())
        .unwrap_or_else(|| root.message().to_string());
    let message = message
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ")
        .to_string();
    match span_range {
        Some(range) => model.diagnostic_at(rendered, range, Code::Plan, message),
        None => Diagnostic::file(Code::Plan, &model.file, message),
    }
}

/// Tables by name for the planner: lake tables and upstream models, as schemas only.
struct Provider<'a> {
    state: &'a SessionState,
    tables: &'a HashMap<String, Arc<dyn TableSource>>,
}

impl ContextProvider for Provider<'_> {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        let key = table_key(&name);
        self.tables
            .get(&key)
            .cloned()
            .ok_or_else(|| plan_datafusion_err!("table '{name}' not found"))
    }

    fn get_table_function_source(
        &self,
        name: &str,
        args: Vec<tideway_lake::datafusion::logical_expr::Expr>,
    ) -> DfResult<Arc<dyn TableSource>> {
        let function: &Arc<TableFunction> = self
            .state
            .table_functions()
            .get(name)
            .ok_or_else(|| plan_datafusion_err!("unknown table function `{name}`"))?;
        let provider =
            function.create_table_provider_with_args(TableFunctionArgs::new(&args, self.state))?;
        Ok(provider_as_source(provider))
    }

    fn create_cte_work_table(
        &self,
        name: &str,
        schema: SchemaRef,
    ) -> DfResult<Arc<dyn TableSource>> {
        Ok(provider_as_source(Arc::new(CteWorkTable::new(
            name, schema,
        ))))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_relation_planners(&self) -> &[Arc<dyn RelationPlanner>] {
        self.state.relation_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state
            .higher_order_functions()
            .keys()
            .cloned()
            .collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
