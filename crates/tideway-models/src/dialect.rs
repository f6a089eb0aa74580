//! Warehouse SQL that DataFusion does not speak, made to work: models are written for
//! Snowflake, Redshift or DuckDB, and should run here unchanged.
//!
//! Rewrites of the parsed query (the meaning is kept; positions still point at the user's text):
//!
//! | written | runs as |
//! |---|---|
//! | `IFF(c, a, b)` | `CASE WHEN c THEN a ELSE b END` |
//! | `DECODE(x, v1, r1, ..., [default])` | `CASE WHEN x IS NOT DISTINCT FROM v1 THEN r1 ... ELSE default END` |
//! | `x [NOT] LIKE ANY (p1, p2)`, `ILIKE ANY` | `x [NOT] LIKE p1 OR x [NOT] LIKE p2` |
//! | `ZEROIFNULL(x)`, `NULLIFZERO(x)` | `coalesce(x, 0)`, `nullif(x, 0)` |
//! | `LEN(s)`, `CHARINDEX(sub, s)` | `character_length(s)`, `strpos(s, sub)` |
//! | `LISTAGG(x, sep)` | `string_agg(x, sep)` |
//! | `GETDATE()`, `SYSDATE()` | `now()` |
//! | `DATEDIFF(day, a, b)`, `date_diff('day', a, b)` | [`DateDiff`]: date-part boundaries between `a` and `b` |
//! | `DATEADD(month, n, ts)`, `date_add('month', n, ts)` | [`DateAdd`] |
//! | `INTERVAL 30 DAY` | `INTERVAL '30 day'` |
//!
//! A date part may be written bare (`day`, Snowflake) or quoted (`'day'`, DuckDB); the parts are
//! microsecond, millisecond, second, minute, hour, day, week (ISO, from Monday), month, quarter,
//! year, with the usual abbreviations (`dd`, `mm`, `yy`, `hh`, `mi`, `ss`, ...).

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Months};
use tideway_lake::arrow::array::{Array, ArrayRef, Int64Array, TimestampMicrosecondArray};
use tideway_lake::arrow::datatypes::{DataType, TimeUnit};
use tideway_lake::datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use tideway_lake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use tideway_lake::datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, CaseWhen, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Statement, Value, ValueWithSpan, visit_expressions_mut,
};
use tideway_lake::datafusion::sql::sqlparser::tokenizer::Span;

/// The user-defined functions the rewrites call; register them in every session that runs
/// models.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(DateDiff::new()),
        ScalarUDF::from(DateAdd::new()),
    ]
}

/// Rewrites the warehouse functions of `statement` in place.
pub fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::Function(f) => {
            let Some(name) = single_name(&f.name) else {
                return;
            };
            let span = f
                .name
                .0
                .first()
                .and_then(|p| p.as_ident())
                .map_or(Span::empty(), |i| i.span);
            let lower = name.to_ascii_lowercase();
            let FunctionArguments::List(list) = &mut f.args else {
                if matches!(lower.as_str(), "getdate" | "sysdate") {
                    *expr = call("now", span, vec![]);
                }
                return;
            };
            if f.over.is_some() && lower != "listagg" {
                return;
            }
            let plain: Option<Vec<Expr>> = list
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                    _ => None,
                })
                .collect();
            let Some(mut args) = plain else { return };
            match (lower.as_str(), args.len()) {
                ("iff", 3) => {
                    let else_result = args.pop().map(Box::new);
                    let result = args.pop().expect("three arguments");
                    let condition = args.pop().expect("three arguments");
                    *expr = case(vec![CaseWhen { condition, result }], else_result);
                }
                ("decode", n) if n >= 3 => {
                    let subject = args.remove(0);
                    let default = (args.len() % 2 == 1).then(|| args.pop()).flatten();
                    let conditions = args
                        .chunks(2)
                        .map(|pair| CaseWhen {
                            condition: Expr::IsNotDistinctFrom(
                                Box::new(subject.clone()),
                                Box::new(pair[0].clone()),
                            ),
                            result: pair[1].clone(),
                        })
                        .collect();
                    *expr = case(conditions, default.map(Box::new));
                }
                ("zeroifnull", 1) => {
                    args.push(number("0"));
                    *expr = call("coalesce", span, args);
                }
                ("nullifzero", 1) => {
                    args.push(number("0"));
                    *expr = call("nullif", span, args);
                }
                ("len", 1) => rename(f, "character_length"),
                ("charindex", 2) => {
                    args.swap(0, 1);
                    *expr = call("strpos", span, args);
                }
                ("listagg", 1 | 2) => {
                    if args.len() == 1 {
                        args.push(Expr::Value(ValueWithSpan {
                            value: Value::SingleQuotedString(String::new()),
                            span: Span::empty(),
                        }));
                        set_args(f, args);
                    }
                    rename(f, "string_agg");
                }
                ("getdate" | "sysdate", 0) => *expr = call("now", span, vec![]),
                ("datediff" | "date_diff" | "timestampdiff", 3) => {
                    quote_part(&mut args[0]);
                    set_args(f, args);
                    rename(f, DateDiff::NAME);
                }
                ("dateadd" | "date_add" | "timestampadd", 3) => {
                    quote_part(&mut args[0]);
                    set_args(f, args);
                    rename(f, DateAdd::NAME);
                }
                _ => {}
            }
        }
        Expr::Like {
            negated,
            any: true,
            expr: subject,
            pattern,
            escape_char,
        } => {
            if let Some(e) = any_of(pattern, |p| Expr::Like {
                negated: *negated,
                any: false,
                expr: subject.clone(),
                pattern: Box::new(p),
                escape_char: escape_char.clone(),
            }) {
                *expr = e;
            }
        }
        Expr::ILike {
            negated,
            any: true,
            expr: subject,
            pattern,
            escape_char,
        } => {
            if let Some(e) = any_of(pattern, |p| Expr::ILike {
                negated: *negated,
                any: false,
                expr: subject.clone(),
                pattern: Box::new(p),
                escape_char: escape_char.clone(),
            }) {
                *expr = e;
            }
        }
        Expr::Interval(interval) => {
            if let (Expr::Value(v), Some(field), None) = (
                interval.value.as_ref(),
                &interval.leading_field,
                &interval.last_field,
            ) && let Value::Number(n, _) = &v.value
            {
                *interval.value = Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(format!("{n} {field}")),
                    span: v.span,
                });
                interval.leading_field = None;
            }
        }
        _ => {}
    }
}

fn single_name(name: &ObjectName) -> Option<&str> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] if i.quote_style.is_none() => Some(&i.value),
        _ => None,
    }
}

fn rename(f: &mut ast::Function, to: &str) {
    let span = f
        .name
        .0
        .first()
        .and_then(|p| p.as_ident())
        .map_or(Span::empty(), |i| i.span);
    f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::with_span(span, to))]);
}

fn set_args(f: &mut ast::Function, args: Vec<Expr>) {
    if let FunctionArguments::List(list) = &mut f.args {
        list.args = args
            .into_iter()
            .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
            .collect();
    }
}

fn call(name: &str, span: Span, args: Vec<Expr>) -> Expr {
    Expr::Function(ast::Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::with_span(
            span, name,
        ))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn case(conditions: Vec<CaseWhen>, else_result: Option<Box<Expr>>) -> Expr {
    Expr::Case {
        case_token: ast::helpers::attached_token::AttachedToken::empty(),
        end_token: ast::helpers::attached_token::AttachedToken::empty(),
        operand: None,
        conditions,
        else_result,
    }
}

fn number(n: &str) -> Expr {
    Expr::Value(ValueWithSpan {
        value: Value::Number(n.to_string(), false),
        span: Span::empty(),
    })
}

/// A bare date part (`day`) becomes a string (`'day'`).
fn quote_part(arg: &mut Expr) {
    if let Expr::Identifier(ident) = arg {
        *arg = Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(ident.value.clone()),
            span: ident.span,
        });
    }
}

fn any_of(pattern: &Expr, each: impl Fn(Expr) -> Expr) -> Option<Expr> {
    let items: Vec<Expr> = match pattern {
        Expr::Tuple(items) => items.clone(),
        Expr::Nested(inner) => vec![inner.as_ref().clone()],
        _ => return None,
    };
    items
        .into_iter()
        .map(each)
        .reduce(|a, b| Expr::BinaryOp {
            left: Box::new(a),
            op: BinaryOperator::Or,
            right: Box::new(b),
        })
        .map(|e| Expr::Nested(Box::new(e)))
}

/// A date part, as `date_diff` and `dateadd` take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

const PARTS: &str =
    "microsecond, millisecond, second, minute, hour, day, week, month, quarter, year";

impl Part {
    fn parse(s: &str) -> Option<Part> {
        Some(match s.to_ascii_lowercase().trim_end_matches('s') {
            "microsecond" | "u" | "usec" | "us" => Part::Microsecond,
            "millisecond" | "m" | "msec" | "ms" => Part::Millisecond,
            "second" | "sec" | "s" | "ss" => Part::Second,
            "minute" | "min" | "mi" => Part::Minute,
            "hour" | "h" | "hh" | "hr" => Part::Hour,
            "day" | "d" | "dd" => Part::Day,
            "week" | "w" | "wk" | "ww" => Part::Week,
            "month" | "mm" | "mon" => Part::Month,
            "quarter" | "q" | "qq" | "qtr" => Part::Quarter,
            "year" | "y" | "yy" | "yyyy" | "yr" => Part::Year,
            _ => return None,
        })
    }

    fn micros(self) -> Option<i64> {
        Some(match self {
            Part::Microsecond => 1,
            Part::Millisecond => 1_000,
            Part::Second => 1_000_000,
            Part::Minute => 60_000_000,
            Part::Hour => 3_600_000_000,
            Part::Day => 86_400_000_000,
            Part::Week => 7 * 86_400_000_000,
            Part::Month | Part::Quarter | Part::Year => return None,
        })
    }

    fn months(self) -> i64 {
        match self {
            Part::Quarter => 3,
            Part::Year => 12,
            _ => 1,
        }
    }
}

const MICROS: DataType = DataType::Timestamp(TimeUnit::Microsecond, None);

fn part_argument(name: &str, arg: &ColumnarValue) -> DfResult<Part> {
    let text = match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => s,
        _ => {
            return exec_err!(
                "{name}: the first argument is a date part written in the query ({PARTS}), not a column"
            );
        }
    };
    Part::parse(text).map_or_else(
        || exec_err!("{name}: unknown date part `{text}`; known parts: {PARTS}"),
        Ok,
    )
}

fn timestamps(arg: &ColumnarValue, rows: usize) -> DfResult<TimestampMicrosecondArray> {
    let array: ArrayRef = arg.to_array(rows)?;
    let array = tideway_lake::arrow::compute::cast(&array, &MICROS)?;
    Ok(array
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .expect("cast to microsecond timestamps")
        .clone())
}

fn month_index(micros: i64) -> Option<i64> {
    let t = DateTime::from_timestamp_micros(micros)?;
    Some(i64::from(t.year()) * 12 + i64::from(t.month0()))
}

/// `date_diff(part, start, end)`: how many `part` boundaries lie between `start` and `end`
/// (negative if `end` is earlier), as Snowflake's `DATEDIFF` and DuckDB's `date_diff` count.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateDiff {
    signature: Signature,
}

impl DateDiff {
    pub const NAME: &str = "date_diff";

    fn new() -> DateDiff {
        DateDiff {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateDiff {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 3 {
            return plan_err!(
                "date_diff takes three arguments: a date part ({PARTS}), a start and an end"
            );
        }
        Ok(vec![DataType::Utf8, MICROS, MICROS])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let part = part_argument(Self::NAME, &args.args[0])?;
        let start = timestamps(&args.args[1], args.number_rows)?;
        let end = timestamps(&args.args[2], args.number_rows)?;
        let result: Int64Array = match part.micros() {
            Some(unit) => {
                // Weeks start on Monday; 1970-01-01 was a Thursday.
                let shift = if part == Part::Week {
                    3 * 86_400_000_000
                } else {
                    0
                };
                let index = |t: i64| (t + shift).div_euclid(unit);
                tideway_lake::arrow::compute::binary(&start, &end, |a, b| index(b) - index(a))?
            }
            None => start
                .iter()
                .zip(end.iter())
                .map(|(a, b)| {
                    let (a, b) = (month_index(a?)?, month_index(b?)?);
                    let per = part.months();
                    Some(b.div_euclid(per) - a.div_euclid(per))
                })
                .collect(),
        };
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}

/// `dateadd(part, n, ts)`: `ts` moved by `n` parts; months, quarters and years keep the day
/// of the month where it exists (Jan 31 + 1 month = Feb 28 or 29).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateAdd {
    signature: Signature,
}

impl DateAdd {
    pub const NAME: &str = "dateadd";

    fn new() -> DateAdd {
        DateAdd {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateAdd {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if arg_types.len() != 3 {
            return plan_err!(
                "dateadd takes three arguments: a date part ({PARTS}), a count and a timestamp"
            );
        }
        Ok(vec![DataType::Utf8, DataType::Int64, MICROS])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(MICROS)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let part = part_argument(Self::NAME, &args.args[0])?;
        let counts = args.args[1].to_array(args.number_rows)?;
        let counts = tideway_lake::arrow::compute::cast(&counts, &DataType::Int64)?;
        let counts = counts
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64")
            .clone();
        let ts = timestamps(&args.args[2], args.number_rows)?;
        let result: TimestampMicrosecondArray = counts
            .iter()
            .zip(ts.iter())
            .map(|(n, t)| {
                let (n, t) = (n?, t?);
                match part.micros() {
                    Some(unit) => n.checked_mul(unit).and_then(|d| t.checked_add(d)),
                    None => {
                        let dt = DateTime::from_timestamp_micros(t)?;
                        let months = n.checked_mul(part.months())?;
                        let moved = if months >= 0 {
                            dt.checked_add_months(Months::new(u32::try_from(months).ok()?))
                        } else {
                            dt.checked_sub_months(Months::new(u32::try_from(-months).ok()?))
                        }?;
                        Some(moved.timestamp_micros())
                    }
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}

/// Speeds up grouped queries with `count(DISTINCT x)`: DataFusion keeps a hash set per group
/// and distinct column, which on a million groups costs seconds and gigabytes. Each distinct
/// count becomes a join to `SELECT keys, count(x) FROM (SELECT DISTINCT keys, x FROM <the
/// same FROM> WHERE <the same WHERE>) GROUP BY keys` (one row per group, joined on the keys
/// with `IS NOT DISTINCT FROM`, so NULL keys match and no row is multiplied), and the count is
/// read from it. Same result; 5.1 s -> 1.8 s on 6M events and 923k customers (BENCHMARKS.md).
///
/// Only plain cases are rewritten: one FROM item, GROUP BY plain expressions (or ordinals),
/// no HAVING, DISTINCT, window functions or FILTER on the distinct count. Returns whether
/// anything changed; a run falls back to the query as written if the rewrite does not plan.
pub fn rewrite_distinct_counts(statement: &mut Statement) -> bool {
    use tideway_lake::datafusion::sql::sqlparser::ast::VisitorMut;
    struct Rewrite {
        changed: bool,
        next: usize,
    }
    impl VisitorMut for Rewrite {
        type Break = ();
        fn post_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            if let ast::SetExpr::Select(select) = query.body.as_mut() {
                self.changed |= distinct_counts(select, &mut self.next);
            }
            ControlFlow::Continue(())
        }
    }
    let mut r = Rewrite {
        changed: false,
        next: 0,
    };
    let _ = ast::VisitMut::visit(statement, &mut r);
    r.changed
}

/// The argument of `count(DISTINCT x)` (no FILTER, no OVER), if `f` is one.
fn distinct_count_arg(f: &ast::Function) -> Option<&Expr> {
    if !single_name(&f.name)?.eq_ignore_ascii_case("count")
        || f.filter.is_some()
        || f.over.is_some()
    {
        return None;
    }
    let ast::FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if list.duplicate_treatment != Some(ast::DuplicateTreatment::Distinct)
        || list.args.len() != 1
        || !list.clauses.is_empty()
    {
        return None;
    }
    match &list.args[0] {
        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e),
        _ => None,
    }
}

fn distinct_counts(select: &mut ast::Select, next: &mut usize) -> bool {
    let original = select.clone();
    let done = try_distinct_counts(select, next);
    if !done {
        *select = original;
    }
    done
}

fn try_distinct_counts(select: &mut ast::Select, next: &mut usize) -> bool {
    let ast::GroupByExpr::Expressions(group, modifiers) = &select.group_by else {
        return false;
    };
    if group.is_empty()
        || !modifiers.is_empty()
        || select.from.len() != 1
        || select.having.is_some()
        || select.distinct.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
    {
        return false;
    }
    // The projection's expressions, for ordinals; a window function anywhere: leave it.
    let mut items: Vec<&Expr> = Vec::new();
    for item in &select.projection {
        match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                items.push(e)
            }
            _ => return false,
        }
    }
    let mut windowed = false;
    let mut found = 0;
    for e in &items {
        let _ = ast::visit_expressions(*e, |e| {
            if let Expr::Function(f) = e {
                windowed |= f.over.is_some();
                found += usize::from(distinct_count_arg(f).is_some());
            }
            ControlFlow::<()>::Continue(())
        });
    }
    if windowed || found == 0 {
        return false;
    }
    // The group keys as expressions (ordinals resolved); a key that names an output alias is
    // ambiguous here: leave the query.
    let aliases: Vec<String> = select
        .projection
        .iter()
        .filter_map(|i| match i {
            ast::SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
            _ => None,
        })
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for g in group {
        let key = match g {
            Expr::Value(v) => match &v.value {
                ast::Value::Number(n, _) => match n.parse::<usize>() {
                    Ok(k) if k >= 1 && k <= items.len() => items[k - 1].to_string(),
                    _ => return false,
                },
                _ => return false,
            },
            Expr::Identifier(i) if aliases.contains(&i.value.to_lowercase()) => return false,
            e => e.to_string(),
        };
        keys.push(key);
    }
    let from = select.from[0].to_string();
    let filter = select
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    // Each distinct count: its subquery, joined; the count read from it.
    let mut joins: Vec<String> = Vec::new();
    let mut by_arg: Vec<(String, String)> = Vec::new();
    let key_list: Vec<String> = (0..keys.len()).map(|k| format!("__k{k}")).collect();
    let mut replaced = true;
    for item in select.projection.iter_mut() {
        let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
            item
        else {
            continue;
        };
        let _ = visit_expressions_mut(e, |e| {
            let Expr::Function(f) = e else {
                return ControlFlow::<()>::Continue(());
            };
            let Some(arg) = distinct_count_arg(f).map(ToString::to_string) else {
                return ControlFlow::Continue(());
            };
            let alias = match by_arg.iter().find(|(a, _)| *a == arg) {
                Some((_, alias)) => alias.clone(),
                None => {
                    let alias = format!("__tideway_distinct_{}", *next);
                    *next += 1;
                    let selected: Vec<String> = keys
                        .iter()
                        .zip(&key_list)
                        .map(|(k, n)| format!("{k} AS {n}"))
                        .collect();
                    let on: Vec<String> = keys
                        .iter()
                        .zip(&key_list)
                        .map(|(k, n)| format!("(({k}) IS NOT DISTINCT FROM {alias}.{n})"))
                        .collect();
                    joins.push(format!(
                        "LEFT JOIN (SELECT {keys}, count(__x) AS __n FROM (SELECT DISTINCT {selected}, {arg} AS __x FROM {from}{filter}) AS __d GROUP BY {keys}) AS {alias} ON {on}",
                        keys = key_list.join(", "),
                        selected = selected.join(", "),
                        on = on.join(" AND "),
                    ));
                    by_arg.push((arg.clone(), alias.clone()));
                    alias
                }
            };
            match parse_expr(&format!("coalesce(max({alias}.__n), 0)")) {
                Some(new) => *e = new,
                None => replaced = false,
            }
            ControlFlow::Continue(())
        });
    }
    let sql = format!("SELECT 1 FROM __t {}", joins.join(" "));
    let parsed = tideway_lake::datafusion::sql::sqlparser::parser::Parser::parse_sql(
        &tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect {},
        &sql,
    );
    let Ok(mut statements) = parsed else {
        return false;
    };
    let Some(Statement::Query(q)) = statements.pop() else {
        return false;
    };
    let ast::SetExpr::Select(s) = *q.body else {
        return false;
    };
    let Some(twj) = s.from.into_iter().next() else {
        return false;
    };
    select.from[0].joins.extend(twj.joins);
    replaced
}

fn parse_expr(sql: &str) -> Option<Expr> {
    tideway_lake::datafusion::sql::sqlparser::parser::Parser::new(
        &tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect {},
    )
    .try_with_sql(sql)
    .ok()?
    .parse_expr()
    .ok()
}

#[cfg(test)]
mod tests {
    use tideway_lake::datafusion::sql::sqlparser::dialect::GenericDialect;
    use tideway_lake::datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        rewrite(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn warehouse_functions_are_rewritten() {
        assert_eq!(
            rewritten("SELECT IFF(a > 1, 'x', 'y') FROM t"),
            "SELECT CASE WHEN a > 1 THEN 'x' ELSE 'y' END FROM t"
        );
        assert_eq!(
            rewritten("SELECT DECODE(a, 1, 'one', 2, 'two', 'many') FROM t"),
            "SELECT CASE WHEN a IS NOT DISTINCT FROM 1 THEN 'one' WHEN a IS NOT DISTINCT FROM 2 THEN 'two' ELSE 'many' END FROM t"
        );
        assert_eq!(
            rewritten("SELECT * FROM t WHERE path LIKE ANY ('/docs%', '/help%')"),
            "SELECT * FROM t WHERE (path LIKE '/docs%' OR path LIKE '/help%')"
        );
        assert_eq!(
            rewritten(
                "SELECT ZEROIFNULL(a), NULLIFZERO(b), LEN(s), CHARINDEX('x', s), GETDATE() FROM t"
            ),
            "SELECT coalesce(a, 0), nullif(b, 0), character_length(s), strpos(s, 'x'), now() FROM t"
        );
        assert_eq!(
            rewritten(
                "SELECT DATEDIFF(day, a, b), DATEADD(month, 1, a), date_diff('week', a, b) FROM t"
            ),
            "SELECT date_diff('day', a, b), dateadd('month', 1, a), date_diff('week', a, b) FROM t"
        );
        assert_eq!(
            rewritten("SELECT TIMESTAMP '2025-06-01' - INTERVAL 30 DAY"),
            "SELECT TIMESTAMP '2025-06-01' - INTERVAL '30 DAY'"
        );
        assert_eq!(
            rewritten("SELECT LISTAGG(a, ',') FROM t"),
            "SELECT string_agg(a, ',') FROM t"
        );
    }

    #[test]
    fn date_parts_count_boundaries() {
        let t = |s: &str| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        let diff = |part: &str, a: &str, b: &str| {
            let f = DateDiff::new();
            let args = ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Scalar(ScalarValue::Utf8(Some(part.into()))),
                    ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(Some(t(a)), None)),
                    ColumnarValue::Scalar(ScalarValue::TimestampMicrosecond(Some(t(b)), None)),
                ],
                arg_fields: vec![],
                number_rows: 1,
                return_field: Arc::new(tideway_lake::arrow::datatypes::Field::new(
                    "x",
                    DataType::Int64,
                    true,
                )),
                config_options: Default::default(),
            };
            let ColumnarValue::Array(a) = f.invoke_with_args(args).unwrap() else {
                panic!()
            };
            a.as_any().downcast_ref::<Int64Array>().unwrap().value(0)
        };
        assert_eq!(diff("day", "2025-01-01 23:59", "2025-01-02 00:01"), 1);
        assert_eq!(diff("day", "2025-01-02 00:01", "2025-01-01 23:59"), -1);
        assert_eq!(diff("hour", "2025-01-01 10:59", "2025-01-01 11:00"), 1);
        assert_eq!(diff("month", "2025-01-31 00:00", "2025-02-01 00:00"), 1);
        assert_eq!(diff("year", "2024-12-31 00:00", "2025-01-01 00:00"), 1);
        assert_eq!(diff("quarter", "2025-03-31 00:00", "2025-04-01 00:00"), 1);
        // 2025-01-05 is a Sunday, 2025-01-06 a Monday.
        assert_eq!(diff("week", "2025-01-05 12:00", "2025-01-06 00:00"), 1);
        assert_eq!(diff("week", "2025-01-06 00:00", "2025-01-12 23:00"), 0);
        assert_eq!(diff("dd", "1969-12-31 23:00", "1970-01-01 01:00"), 1);
    }
}
