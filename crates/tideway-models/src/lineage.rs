//! Column-level lineage, read off each model's logical plan.
//!
//! For every output column of a model, the input columns (of lake tables or upstream models)
//! its values are computed from; and every input column the query names anywhere (select
//! list, filter, join, grouping, ordering, subqueries), with the places it is named. The first
//! answers `tideway lineage`; the second tells `tideway plan` which downstream models a change
//! to a column breaks, and on which line.
//!
//! The walk follows DataFusion's plan node by node: a projection or aggregate computes each
//! output from the columns its expression reads; filters, sorts and limits pass columns
//! through; joins and aliases pass them through by name; a union merges its inputs column by
//! column; CTEs (recursive ones too) are traced to the tables under them. Columns that arrive
//! through `SELECT *` are passed through, not "named": dropping one changes that model's output
//! instead of breaking its query.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use tideway_lake::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use tideway_lake::datafusion::common::{Column, DFSchema, Span, TableReference};
use tideway_lake::datafusion::logical_expr::{Expr, LogicalPlan};

use crate::diagnostic::Position;

/// One column of one table: `schema.table.column`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnRef {
    pub table: String,
    pub column: String,
}

impl ColumnRef {
    pub fn new(table: impl Into<String>, column: impl Into<String>) -> ColumnRef {
        ColumnRef {
            table: table.into(),
            column: column.into(),
        }
    }

    /// Parses `schema.table.column`.
    pub fn parse(s: &str) -> Option<ColumnRef> {
        let (table, column) = s.rsplit_once('.')?;
        table.contains('.').then(|| ColumnRef::new(table, column))
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

impl serde::Serialize for ColumnRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ColumnRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ColumnRef, D::Error> {
        let s = String::deserialize(d)?;
        ColumnRef::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not `schema.table.column`")))
    }
}

/// An output column and the input columns its values are computed from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColumnLineage {
    pub name: String,
    pub from: Vec<ColumnRef>,
}

/// An input column the query names, and where in the model file (first place first).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Read {
    pub column: ColumnRef,
    pub at: Vec<Position>,
}

/// What one model's query does with the columns it reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelLineage {
    /// One entry per output column, in output order.
    pub columns: Vec<ColumnLineage>,
    /// Every input column the query names, sorted.
    pub reads: Vec<Read>,
}

impl ModelLineage {
    /// Where the query names `column`, if it does.
    pub fn read(&self, column: &ColumnRef) -> Option<&Read> {
        self.reads
            .binary_search_by(|r| r.column.cmp(column))
            .ok()
            .map(|i| &self.reads[i])
    }

    /// The input columns behind the output column `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnLineage> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The lineage of a planned query. `table_key` names a scanned table as the project names it
/// (`schema.table`); `position` turns the span of a column the SQL names into a place in the
/// model file (DataFusion gives an outer reference of a correlated subquery no span: then it
/// gets the column's name, to find where it is written).
pub fn of_plan(
    plan: &LogicalPlan,
    table_key: &dyn Fn(&TableReference) -> String,
    position: &dyn Fn(Option<&Span>, &str) -> Position,
) -> ModelLineage {
    let mut walker = Walker {
        table_key,
        work_tables: HashMap::new(),
        reads: Vec::new(),
    };
    let outputs = walker.plan(plan, &[]);
    let columns = plan
        .schema()
        .fields()
        .iter()
        .zip(outputs)
        .map(|(field, from)| ColumnLineage {
            name: field.name().clone(),
            from: from.into_iter().collect(),
        })
        .collect();
    let mut reads: BTreeMap<ColumnRef, BTreeSet<Position>> = BTreeMap::new();
    for (column, span, name) in walker.reads {
        reads
            .entry(column)
            .or_default()
            .insert(position(span.as_ref(), &name));
    }
    ModelLineage {
        columns,
        reads: reads
            .into_iter()
            .map(|(column, at)| Read {
                column,
                at: at.into_iter().collect(),
            })
            .collect(),
    }
}

type Origins = BTreeSet<ColumnRef>;

/// The columns in scope for a node's expressions: its inputs, and (for outer references) the
/// queries around it.
#[derive(Clone, Copy)]
struct Scope<'a> {
    inputs: &'a [(&'a DFSchema, &'a [Origins])],
    outer: &'a [(&'a DFSchema, &'a [Origins])],
}

impl Scope<'_> {
    fn resolve(&self, column: &Column, outer: bool) -> Option<&Origins> {
        let scopes = if outer { self.outer } else { self.inputs };
        scopes.iter().find_map(|(schema, origins)| {
            schema
                .maybe_index_of_column(column)
                .and_then(|i| origins.get(i))
        })
    }
}

struct Walker<'a> {
    table_key: &'a dyn Fn(&TableReference) -> String,
    /// Recursive CTEs: the working table's columns come from the static term.
    work_tables: HashMap<String, Vec<Origins>>,
    /// Input columns named, with the span (if any) and the name as written.
    reads: Vec<(ColumnRef, Option<Span>, String)>,
}

impl Walker<'_> {
    /// The origins of each output column of `plan`.
    fn plan(&mut self, plan: &LogicalPlan, outer: &[(&DFSchema, &[Origins])]) -> Vec<Origins> {
        let width = plan.schema().fields().len();
        if let LogicalPlan::RecursiveQuery(q) = plan {
            let static_term = self.plan(&q.static_term, outer);
            self.work_tables.insert(q.name.clone(), static_term.clone());
            let recursive = self.plan(&q.recursive_term, outer);
            return static_term
                .into_iter()
                .zip(recursive)
                .map(|(mut a, b)| {
                    a.extend(b);
                    a
                })
                .collect();
        }
        let children = plan.inputs();
        let inputs: Vec<Vec<Origins>> = children.iter().map(|c| self.plan(c, outer)).collect();
        let in_scope: Vec<(&DFSchema, &[Origins])> = children
            .iter()
            .zip(&inputs)
            .map(|(c, o)| (c.schema().as_ref(), o.as_slice()))
            .collect();
        let scope = Scope {
            inputs: &in_scope,
            outer,
        };
        let passthrough = |i: usize| {
            inputs
                .first()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .take(i)
        };
        match plan {
            LogicalPlan::TableScan(scan) => {
                if let TableReference::Bare { table } = &scan.table_name
                    && let Some(work) = self.work_tables.get(table.as_ref())
                {
                    return work.clone();
                }
                // A table function (`range(1, 10)`) is not a table: its columns come from
                // no input column.
                if matches!(scan.table_name, TableReference::Bare { .. }) {
                    return vec![Origins::new(); width];
                }
                let key = (self.table_key)(&scan.table_name);
                plan.schema()
                    .fields()
                    .iter()
                    .map(|f| Origins::from([ColumnRef::new(key.clone(), f.name().clone())]))
                    .collect()
            }
            LogicalPlan::Projection(p) => p.expr.iter().map(|e| self.expr(e, scope)).collect(),
            LogicalPlan::Aggregate(a) => {
                let mut out: Vec<Origins> = Vec::with_capacity(width);
                for e in &a.group_expr {
                    match e {
                        Expr::GroupingSet(set) => {
                            for e in set.distinct_expr() {
                                out.push(self.expr(e, scope));
                            }
                        }
                        e => out.push(self.expr(e, scope)),
                    }
                }
                for e in &a.aggr_expr {
                    out.push(self.expr(e, scope));
                }
                // `__grouping_id` of a grouping set comes from no column.
                out.resize(width, Origins::new());
                out
            }
            LogicalPlan::Window(w) => {
                let mut out: Vec<Origins> = passthrough(width).collect();
                for e in &w.window_expr {
                    out.push(self.expr(e, scope));
                }
                out
            }
            LogicalPlan::Union(_) => (0..width)
                .map(|i| {
                    inputs
                        .iter()
                        .filter_map(|input| input.get(i))
                        .flatten()
                        .cloned()
                        .collect()
                })
                .collect(),
            LogicalPlan::Unnest(u) => {
                self.exprs(plan, scope);
                u.dependency_indices
                    .iter()
                    .map(|&i| inputs[0].get(i).cloned().unwrap_or_default())
                    .collect()
            }
            LogicalPlan::Distinct(tideway_lake::datafusion::logical_expr::Distinct::On(on)) => {
                for e in &on.on_expr {
                    self.expr(e, scope);
                }
                for e in on.sort_expr.iter().flatten() {
                    self.expr(&e.expr, scope);
                }
                on.select_expr.iter().map(|e| self.expr(e, scope)).collect()
            }
            LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Repartition(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_) => {
                self.exprs(plan, scope);
                passthrough(width).collect()
            }
            LogicalPlan::Join(_) => {
                self.exprs(plan, scope);
                // Each output column is a column of one side (a mark column of none).
                plan.schema()
                    .iter()
                    .map(|(q, f)| {
                        let column = Column::new(q.cloned(), f.name());
                        scope.resolve(&column, false).cloned().unwrap_or_default()
                    })
                    .collect()
            }
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                self.exprs(plan, scope);
                vec![Origins::new(); width]
            }
            // Anything else: each output may come from any input.
            _ => {
                self.exprs(plan, scope);
                let all: Origins = inputs.iter().flatten().flatten().cloned().collect();
                vec![all; width]
            }
        }
    }

    /// Records what a node's expressions read.
    fn exprs(&mut self, plan: &LogicalPlan, scope: Scope<'_>) {
        let mut exprs = Vec::new();
        let _ = plan.apply_expressions(|e| {
            exprs.push(e.clone());
            Ok(TreeNodeRecursion::Continue)
        });
        for e in &exprs {
            self.expr(e, scope);
        }
    }

    /// The origins of an expression's value; records the columns it names.
    fn expr(&mut self, expr: &Expr, scope: Scope<'_>) -> Origins {
        let mut origins = Origins::new();
        let mut subqueries = Vec::new();
        let _ = expr.apply(|e| {
            let (column, outer) = match e {
                Expr::Column(c) => (c, false),
                Expr::OuterReferenceColumn(_, c) => (c, true),
                Expr::ScalarSubquery(s) => {
                    subqueries.push((s.subquery.clone(), true));
                    return Ok(TreeNodeRecursion::Continue);
                }
                Expr::InSubquery(s) => {
                    subqueries.push((s.subquery.subquery.clone(), true));
                    return Ok(TreeNodeRecursion::Continue);
                }
                Expr::SetComparison(s) => {
                    subqueries.push((s.subquery.subquery.clone(), true));
                    return Ok(TreeNodeRecursion::Continue);
                }
                Expr::Exists(s) => {
                    subqueries.push((s.subquery.subquery.clone(), false));
                    return Ok(TreeNodeRecursion::Continue);
                }
                _ => return Ok(TreeNodeRecursion::Continue),
            };
            if let Some(from) = scope.resolve(column, outer) {
                // Spanned columns are named in the SQL; those without a span were expanded
                // from `*` (or are outer references, which DataFusion leaves unspanned).
                let span = column.spans.first();
                if span.is_some() || outer {
                    self.reads
                        .extend(from.iter().map(|c| (c.clone(), span, column.name.clone())));
                }
                origins.extend(from.iter().cloned());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        // A subquery sees this node's inputs as its outer query, and the queries around it.
        let nested: Vec<(&DFSchema, &[Origins])> =
            scope.inputs.iter().chain(scope.outer).copied().collect();
        for (subquery, feeds_value) in subqueries {
            let out = self.plan(&subquery, &nested);
            if feeds_value {
                origins.extend(out.into_iter().flatten());
            }
        }
        origins
    }
}

/// Which way `tideway lineage` follows the columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Where the values come from, down to lake tables.
    Upstream,
    /// Which model columns are computed from them.
    Downstream,
    /// Both.
    Both,
}

/// What a column in a trace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A column a model computes.
    Model,
    /// A column of a lake table no model builds (extracted, collected or imported).
    Source,
}

/// A column in a trace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TraceColumn {
    pub column: ColumnRef,
    pub kind: Kind,
}

/// "`from` feeds `to`": `to`'s values are computed from `from`'s.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Edge {
    pub from: ColumnRef,
    pub to: ColumnRef,
}

/// The columns reached from some starting columns, and the edges between them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trace {
    /// What was asked for: `schema.table` or `schema.table.column`.
    pub root: String,
    pub direction: Direction,
    /// The starting columns.
    pub start: Vec<ColumnRef>,
    pub columns: Vec<TraceColumn>,
    pub edges: Vec<Edge>,
}

/// Column-level lineage of a whole compiled project: every model column and its inputs.
#[derive(Debug, Default)]
pub struct Graph {
    /// Column -> the columns it is computed from.
    inputs: BTreeMap<ColumnRef, BTreeSet<ColumnRef>>,
    /// Column -> the columns computed from it.
    outputs: BTreeMap<ColumnRef, BTreeSet<ColumnRef>>,
    /// Each model table's columns, in output order.
    models: BTreeMap<String, Vec<String>>,
    /// Each source table's columns that models read.
    sources: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    pub fn new(compilation: &crate::Compilation) -> Graph {
        let mut graph = Graph::default();
        for c in compilation.compiled.iter().flatten() {
            let table = compilation.models.models[c.index].name.to_string();
            for column in &c.lineage.columns {
                let to = ColumnRef::new(table.clone(), column.name.clone());
                for from in &column.from {
                    graph
                        .outputs
                        .entry(from.clone())
                        .or_default()
                        .insert(to.clone());
                    graph
                        .inputs
                        .entry(to.clone())
                        .or_default()
                        .insert(from.clone());
                }
                graph.inputs.entry(to).or_default();
            }
            graph.models.insert(
                table,
                c.lineage.columns.iter().map(|c| c.name.clone()).collect(),
            );
        }
        for from in graph.outputs.keys() {
            if !graph.models.contains_key(&from.table) {
                graph
                    .sources
                    .entry(from.table.clone())
                    .or_default()
                    .insert(from.column.clone());
            }
        }
        graph
    }

    /// The columns `what` names: a model or source table (all its columns) or one column.
    /// The error says what is known.
    pub fn resolve(&self, what: &str) -> Result<Vec<ColumnRef>, String> {
        let table_columns = |table: &str| -> Option<Vec<String>> {
            self.models
                .get(table)
                .cloned()
                .or_else(|| self.sources.get(table).map(|c| c.iter().cloned().collect()))
        };
        if let Some(columns) = table_columns(what) {
            return Ok(columns
                .into_iter()
                .map(|c| ColumnRef::new(what, c))
                .collect());
        }
        let tables: Vec<String> = self
            .models
            .keys()
            .chain(self.sources.keys())
            .cloned()
            .collect();
        if let Some((table, column)) = what.rsplit_once('.')
            && let Some(columns) = table_columns(table)
        {
            if columns.iter().any(|c| c == column) {
                return Ok(vec![ColumnRef::new(table, column)]);
            }
            return Err(match tideway_lake::closest(column, &columns) {
                Some(c) => {
                    format!("`{table}` has no column `{column}`: did you mean `{table}.{c}`?")
                }
                None => format!(
                    "`{table}` has no column `{column}`; its columns: {}",
                    columns.join(", ")
                ),
            });
        }
        Err(match tideway_lake::closest(what, &tables) {
            Some(t) => format!("no model or table `{what}` in the project: did you mean `{t}`?"),
            None if tables.is_empty() => "the project has no compiled models".to_string(),
            None => format!(
                "no model or table `{what}` in the project; write `schema.table` or `schema.table.column` (models: {})",
                self.models
                    .keys()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Everything reached from `start` in `direction`.
    pub fn trace(&self, root: &str, start: Vec<ColumnRef>, direction: Direction) -> Trace {
        let mut seen: BTreeSet<ColumnRef> = start.iter().cloned().collect();
        let mut edges = BTreeSet::new();
        let mut walk = |next: &BTreeMap<ColumnRef, BTreeSet<ColumnRef>>, upstream: bool| {
            let mut stack: Vec<ColumnRef> = start.clone();
            let mut visited: BTreeSet<ColumnRef> = BTreeSet::new();
            while let Some(column) = stack.pop() {
                if !visited.insert(column.clone()) {
                    continue;
                }
                for other in next.get(&column).into_iter().flatten() {
                    edges.insert(if upstream {
                        Edge {
                            from: other.clone(),
                            to: column.clone(),
                        }
                    } else {
                        Edge {
                            from: column.clone(),
                            to: other.clone(),
                        }
                    });
                    seen.insert(other.clone());
                    stack.push(other.clone());
                }
            }
        };
        if direction != Direction::Downstream {
            walk(&self.inputs, true);
        }
        if direction != Direction::Upstream {
            walk(&self.outputs, false);
        }
        Trace {
            root: root.to_string(),
            direction,
            columns: seen
                .into_iter()
                .map(|column| TraceColumn {
                    kind: if self.models.contains_key(&column.table) {
                        Kind::Model
                    } else {
                        Kind::Source
                    },
                    column,
                })
                .collect(),
            start,
            edges: edges.into_iter().collect(),
        }
    }
}

impl Trace {
    /// An indented tree per starting column: `<-` its inputs (upstream), `->` what reads it
    /// (downstream). A column met again is marked `(above)` instead of repeated.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let source = |c: &ColumnRef| {
            self.columns
                .iter()
                .any(|t| &t.column == c && t.kind == Kind::Source)
        };
        let print = |upstream: bool, out: &mut String| {
            for start in &self.start {
                let mut printed = BTreeSet::new();
                let mut stack = vec![(start.clone(), 0usize)];
                while let Some((column, depth)) = stack.pop() {
                    let arrow = match (depth, upstream) {
                        (0, _) => "",
                        (_, true) => "<- ",
                        (_, false) => "-> ",
                    };
                    let again = !printed.insert(column.clone());
                    let note = match (again, source(&column)) {
                        (true, _) => "  (above)",
                        (false, true) => "  (lake table)",
                        (false, false) => "",
                    };
                    out.push_str(&format!("{}{arrow}{column}{note}\n", "   ".repeat(depth)));
                    if again {
                        continue;
                    }
                    let next: Vec<&ColumnRef> = self
                        .edges
                        .iter()
                        .filter_map(|e| match upstream {
                            true if e.to == column => Some(&e.from),
                            false if e.from == column => Some(&e.to),
                            _ => None,
                        })
                        .collect();
                    for n in next.into_iter().rev() {
                        stack.push((n.clone(), depth + 1));
                    }
                }
            }
        };
        match self.direction {
            Direction::Upstream => print(true, &mut out),
            Direction::Downstream => print(false, &mut out),
            Direction::Both => {
                out.push_str("upstream:\n");
                print(true, &mut out);
                out.push_str("downstream:\n");
                print(false, &mut out);
            }
        }
        out
    }

    /// Graphviz: one cluster per table, an edge per "feeds".
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
        let mut tables: BTreeMap<&str, Vec<&TraceColumn>> = BTreeMap::new();
        for c in &self.columns {
            tables.entry(c.column.table.as_str()).or_default().push(c);
        }
        for (i, (table, columns)) in tables.iter().enumerate() {
            out.push_str(&format!(
                "  subgraph cluster_{i} {{\n    label=\"{table}\";\n"
            ));
            for c in columns {
                let style = match c.kind {
                    Kind::Source => ", style=dashed",
                    Kind::Model => "",
                };
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\"{style}];\n",
                    c.column, c.column.column
                ));
            }
            out.push_str("  }\n");
        }
        for e in &self.edges {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", e.from, e.to));
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart: one subgraph per table.
    pub fn to_mermaid(&self) -> String {
        let ids: BTreeMap<&ColumnRef, String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (&c.column, format!("c{i}")))
            .collect();
        let mut out = String::from("flowchart LR\n");
        let mut tables: BTreeMap<&str, Vec<&TraceColumn>> = BTreeMap::new();
        for c in &self.columns {
            tables.entry(c.column.table.as_str()).or_default().push(c);
        }
        for (i, (table, columns)) in tables.iter().enumerate() {
            out.push_str(&format!("  subgraph t{i}[\"{table}\"]\n"));
            for c in columns {
                out.push_str(&format!(
                    "    {}[\"{}\"]\n",
                    ids[&c.column], c.column.column
                ));
            }
            out.push_str("  end\n");
        }
        for e in &self.edges {
            out.push_str(&format!("  {} --> {}\n", ids[&e.from], ids[&e.to]));
        }
        out
    }
}
