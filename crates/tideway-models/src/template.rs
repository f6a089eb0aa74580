//! The part of dbt's Jinja that models brought from dbt use, rendered to plain SQL.
//!
//! | in the model | becomes |
//! |---|---|
//! | `{{ ref('lifetime_value') }}` | the model's table, `marts.lifetime_value` |
//! | `{{ source('billingdb', 'orders') }}` | the lake table `billingdb.orders` |
//! | `{{ config(materialized='table', unique_key='id', schema='marts') }}` | nothing; it configures the model |
//! | `{{ this }}` | the model's own table |
//! | `{{ env_var('NAME') }}`, `{{ env_var('NAME', 'default') }}` | the variable's value |
//! | `{{ start }}`, `{{ end }}` | the run's window, as `TIMESTAMP '...'` literals |
//! | `{% if is_incremental() %} ... {% else %} ... {% endif %}` | the branch for this run: true when an incremental model's table exists |
//! | `{# comment #}` | nothing |
//!
//! Anything else is an error naming what is understood. Positions in the rendered SQL map back
//! to the model file, so errors found in the SQL point at the file the user wrote.

use std::ops::Range;

use crate::diagnostic::{Code, Diagnostic, Lines};

/// A value in a template call.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Number(String),
    Bool(bool),
    List(Vec<Value>),
    None,
}

impl Value {
    /// The value as a list of strings (`'a'` or `['a', 'b']`).
    pub fn strings(&self) -> Option<Vec<String>> {
        match self {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

/// What a `{{ ... }}` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Ref(String),
    Source(String, String),
    Config(Vec<(String, Value, Range<usize>)>),
    This,
    EnvVar(String, Option<String>),
    Start,
    End,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(Range<usize>),
    Expr(Expr, Range<usize>),
    If { negated: bool },
    Else,
    EndIf,
}

/// A parsed model file: its text and the template pieces in it.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<(Piece, Range<usize>)>,
}

/// What rendering needs to know.
pub trait Context {
    /// The table of the model `name` (a `ref`), or `None` if there is no such model.
    fn model(&self, name: &str) -> Option<String>;
    /// The model's own table.
    fn this(&self) -> String;
    fn env(&self, name: &str) -> Option<String>;
    fn is_incremental(&self) -> bool;
    /// The run's window, as SQL literals.
    fn window(&self) -> (String, String);
}

/// Rendered SQL, with a map back to the file.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sql: String,
    /// (offset in `sql`, offset in the file, whether the piece is copied text).
    map: Vec<(usize, usize, bool)>,
    /// `ref`s and `source`s: (table as rendered, byte range in the file).
    pub references: Vec<(String, Range<usize>)>,
}

impl Rendered {
    /// The file offset of rendered offset `offset`.
    pub fn original_offset(&self, offset: usize) -> usize {
        let i = self.map.partition_point(|&(r, _, _)| r <= offset);
        match i.checked_sub(1).map(|i| self.map[i]) {
            Some((r, o, true)) => o + (offset - r),
            Some((_, o, false)) => o,
            None => offset,
        }
    }
}

const UNDERSTOOD: &str = "ref('model'), source('schema', 'table'), config(...), this, env_var('NAME'), start, end, {% if is_incremental() %}";

impl Template {
    /// Splits `source` into text and template pieces.
    pub fn parse(file: &std::path::Path, source: &str) -> Result<Template, Vec<Diagnostic>> {
        let lines = Lines::new(source);
        let err = |range: Range<usize>, message: String| {
            Diagnostic::at(
                Code::Template,
                file,
                source,
                lines.position(range.start),
                range.len(),
                message,
            )
        };
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut depth = 0usize;
        let mut at = 0;
        while let Some(found) = find_open(source, at) {
            let (start, kind) = found;
            if start > at {
                pieces.push((Piece::Text(at..start), at..start));
            }
            let close = match kind {
                "{{" => "}}",
                "{%" => "%}",
                _ => "#}",
            };
            let Some(end) = source[start + 2..].find(close).map(|e| start + 2 + e + 2) else {
                errors.push(err(
                    start..start + 2,
                    format!("`{kind}` is never closed by `{close}`"),
                ));
                at = source.len();
                break;
            };
            let inner = source[start + 2..end - 2].trim_matches('-').trim();
            let range = start..end;
            match kind {
                "{#" => {}
                "{{" => match parse_expr(inner) {
                    Ok(e) => pieces.push((Piece::Expr(e, range.clone()), range)),
                    Err(m) => errors.push(err(range, m)),
                },
                _ => {
                    let words: Vec<&str> = inner.split_whitespace().collect();
                    let piece = match words.as_slice() {
                        ["if", "is_incremental()"] => Some(Piece::If { negated: false }),
                        ["if", "not", "is_incremental()"] => Some(Piece::If { negated: true }),
                        ["else"] => Some(Piece::Else),
                        ["endif"] => Some(Piece::EndIf),
                        _ => None,
                    };
                    match piece {
                        Some(p) => {
                            match p {
                                Piece::If { .. } => depth += 1,
                                Piece::EndIf if depth == 0 => {
                                    errors.push(err(range.clone(), "`endif` without `if`".into()))
                                }
                                Piece::EndIf => depth -= 1,
                                Piece::Else if depth == 0 => {
                                    errors.push(err(range.clone(), "`else` without `if`".into()))
                                }
                                _ => {}
                            }
                            pieces.push((p, range));
                        }
                        None => errors.push(err(
                            range,
                            format!(
                                "unsupported template tag `{{% {inner} %}}`; Tideway understands {UNDERSTOOD}"
                            ),
                        )),
                    }
                }
            }
            at = end;
        }
        if at < source.len() {
            pieces.push((Piece::Text(at..source.len()), at..source.len()));
        }
        if depth > 0 {
            errors.push(Diagnostic::file(
                Code::Template,
                file,
                "`{% if is_incremental() %}` is never closed by `{% endif %}`",
            ));
        }
        if errors.is_empty() {
            Ok(Template { pieces })
        } else {
            Err(errors)
        }
    }

    /// Every `config(...)` argument in the file: (key, value, byte range of the call).
    pub fn config(&self) -> Vec<(String, Value, Range<usize>)> {
        self.pieces
            .iter()
            .filter_map(|(p, _)| match p {
                Piece::Expr(Expr::Config(args), _) => Some(args.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// True if the file uses no template at all (its text is the SQL).
    pub fn is_plain(&self) -> bool {
        self.pieces.iter().all(|(p, _)| matches!(p, Piece::Text(_)))
    }

    /// Renders the SQL for `ctx`. Unknown `ref`s and unset variables are diagnostics.
    pub fn render(
        &self,
        file: &std::path::Path,
        source: &str,
        ctx: &dyn Context,
    ) -> Result<Rendered, Vec<Diagnostic>> {
        let lines = Lines::new(source);
        let mut out = Rendered {
            sql: String::with_capacity(source.len()),
            map: Vec::new(),
            references: Vec::new(),
        };
        let mut errors = Vec::new();
        // For each open `if`: whether its current branch is emitted.
        let mut emitting: Vec<bool> = Vec::new();
        for (piece, _) in &self.pieces {
            let on = emitting.iter().all(|&e| e);
            match piece {
                Piece::If { negated } => emitting.push(ctx.is_incremental() != *negated),
                Piece::Else => {
                    if let Some(last) = emitting.last_mut() {
                        *last = !*last;
                    }
                }
                Piece::EndIf => {
                    emitting.pop();
                }
                Piece::Text(r) if on => {
                    out.map.push((out.sql.len(), r.start, true));
                    out.sql.push_str(&source[r.clone()]);
                }
                Piece::Expr(expr, r) if on => {
                    let text = match expr {
                        Expr::Ref(name) => match ctx.model(name) {
                            Some(table) => {
                                out.references.push((table.clone(), r.clone()));
                                Some(table)
                            }
                            None => {
                                errors.push(Diagnostic::at(
                                    Code::UnknownTable,
                                    file,
                                    source,
                                    lines.position(r.start),
                                    r.len(),
                                    format!("`ref('{name}')`: there is no model named `{name}`"),
                                ));
                                None
                            }
                        },
                        Expr::Source(schema, table) => {
                            let t = format!("{schema}.{table}");
                            out.references.push((t.clone(), r.clone()));
                            Some(t)
                        }
                        Expr::Config(_) => Some(String::new()),
                        Expr::This => Some(ctx.this()),
                        Expr::EnvVar(name, default) => {
                            match ctx.env(name).or_else(|| default.clone()) {
                                Some(v) => Some(v),
                                None => {
                                    errors.push(Diagnostic::at(
                                        Code::Template,
                                        file,
                                        source,
                                        lines.position(r.start),
                                        r.len(),
                                        format!("environment variable `{name}` is not set and has no default"),
                                    ));
                                    None
                                }
                            }
                        }
                        Expr::Start => Some(ctx.window().0),
                        Expr::End => Some(ctx.window().1),
                    };
                    out.map.push((out.sql.len(), r.start, false));
                    out.sql.push_str(text.as_deref().unwrap_or("NULL"));
                }
                Piece::Text(_) | Piece::Expr(..) => {}
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// The next `{{`, `{%` or `{#` at or after `from` that is not in a `--` comment. Templates in
/// SQL strings count, as in dbt (`read_parquet('{{ env_var("DIR") }}/x.parquet')`).
fn find_open(source: &str, from: usize) -> Option<(usize, &'static str)> {
    let bytes = source.as_bytes();
    let mut i = from;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'-' if bytes[i + 1] == b'-' => {
                i = source[i..].find('\n').map_or(bytes.len(), |e| i + e);
                continue;
            }
            b'{' => match bytes[i + 1] {
                b'{' => return Some((i, "{{")),
                b'%' => return Some((i, "{%")),
                b'#' => return Some((i, "{#")),
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(String),
    Punct(char),
}

fn tokenize(text: &str) -> Result<Vec<(Token, Range<usize>)>, String> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&(_, d)) = chars.get(i) else {
                    return Err(format!("unterminated string in `{text}`"));
                };
                i += 1;
                if d == c {
                    break;
                }
                s.push(d);
            }
            let end = chars.get(i).map_or(text.len(), |&(e, _)| e);
            out.push((Token::Str(s), at..end));
        } else if c.is_ascii_digit() || c == '-' {
            let start = i;
            i += 1;
            while chars
                .get(i)
                .is_some_and(|&(_, d)| d.is_ascii_digit() || d == '.')
            {
                i += 1;
            }
            let end = chars.get(i).map_or(text.len(), |&(e, _)| e);
            out.push((
                Token::Number(text[chars[start].0..end].to_string()),
                at..end,
            ));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|&(_, d)| d.is_alphanumeric() || d == '_' || d == '.')
            {
                i += 1;
            }
            let end = chars.get(i).map_or(text.len(), |&(e, _)| e);
            out.push((Token::Ident(text[chars[start].0..end].to_string()), at..end));
        } else if "(),=[]".contains(c) {
            out.push((Token::Punct(c), at..at + 1));
            i += 1;
        } else {
            return Err(format!("unexpected `{c}` in `{{{{ {text} }}}}`"));
        }
    }
    Ok(out)
}

fn parse_expr(inner: &str) -> Result<Expr, String> {
    let tokens = tokenize(inner)?;
    let unsupported = || {
        format!(
            "unsupported template expression `{{{{ {inner} }}}}`; Tideway understands {UNDERSTOOD}"
        )
    };
    let (name, rest) = match tokens.split_first() {
        Some(((Token::Ident(name), _), rest)) => (name.as_str(), rest),
        _ => return Err(unsupported()),
    };
    if rest.is_empty() {
        return match name {
            "this" => Ok(Expr::This),
            "start" => Ok(Expr::Start),
            "end" => Ok(Expr::End),
            _ => Err(unsupported()),
        };
    }
    if !matches!(name, "ref" | "source" | "env_var" | "config") {
        return Err(unsupported());
    }
    let mut pos = 0;
    let args = parse_args(rest, &mut pos).map_err(|m| format!("{m} in `{{{{ {inner} }}}}`"))?;
    if pos != rest.len() {
        return Err(unsupported());
    }
    let positional: Vec<&Value> = args
        .iter()
        .filter(|(k, _, _)| k.is_none())
        .map(|(_, v, _)| v)
        .collect();
    let strings: Option<Vec<&str>> = positional
        .iter()
        .map(|v| match v {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    match (name, strings.as_deref()) {
        ("ref", Some([model])) => Ok(Expr::Ref(model.to_string())),
        // ref('package', 'model'): packages are not a Tideway notion; the model name decides.
        ("ref", Some([_, model])) => Ok(Expr::Ref(model.to_string())),
        ("source", Some([schema, table])) => {
            Ok(Expr::Source(schema.to_string(), table.to_string()))
        }
        ("env_var", Some([var])) => Ok(Expr::EnvVar(var.to_string(), None)),
        ("env_var", Some([var, default])) => {
            Ok(Expr::EnvVar(var.to_string(), Some(default.to_string())))
        }
        ("config", Some([])) => Ok(Expr::Config(
            args.into_iter()
                .filter_map(|(k, v, r)| k.map(|k| (k, v, r)))
                .collect(),
        )),
        ("ref" | "source" | "env_var", _) => Err(format!(
            "`{name}` takes {} string arguments, in `{{{{ {inner} }}}}`",
            match name {
                "ref" => "one (the model name)",
                "source" => "two (schema and table)",
                _ => "one or two (the variable and a default)",
            }
        )),
        _ => Err(unsupported()),
    }
}

type Args = Vec<(Option<String>, Value, Range<usize>)>;

fn parse_args(tokens: &[(Token, Range<usize>)], pos: &mut usize) -> Result<Args, String> {
    if tokens.get(*pos).map(|t| &t.0) != Some(&Token::Punct('(')) {
        return Err("expected `(`".into());
    }
    *pos += 1;
    let mut args = Vec::new();
    loop {
        if tokens.get(*pos).map(|t| &t.0) == Some(&Token::Punct(')')) {
            *pos += 1;
            return Ok(args);
        }
        let start = tokens.get(*pos).map_or(0, |t| t.1.start);
        let key = match (tokens.get(*pos), tokens.get(*pos + 1)) {
            (Some((Token::Ident(k), _)), Some((Token::Punct('='), _))) => {
                *pos += 2;
                Some(k.clone())
            }
            _ => None,
        };
        let value = parse_value(tokens, pos)?;
        let end = tokens.get(*pos - 1).map_or(start, |t| t.1.end);
        args.push((key, value, start..end));
        match tokens.get(*pos).map(|t| &t.0) {
            Some(Token::Punct(',')) => *pos += 1,
            Some(Token::Punct(')')) => {}
            _ => return Err("expected `,` or `)`".into()),
        }
    }
}

fn parse_value(tokens: &[(Token, Range<usize>)], pos: &mut usize) -> Result<Value, String> {
    let Some((token, _)) = tokens.get(*pos) else {
        return Err("expected a value".into());
    };
    *pos += 1;
    Ok(match token {
        Token::Str(s) => Value::Str(s.clone()),
        Token::Number(n) => Value::Number(n.clone()),
        Token::Ident(i) if i == "true" || i == "True" => Value::Bool(true),
        Token::Ident(i) if i == "false" || i == "False" => Value::Bool(false),
        Token::Ident(i) if i == "none" || i == "None" => Value::None,
        Token::Punct('[') => {
            let mut items = Vec::new();
            loop {
                if tokens.get(*pos).map(|t| &t.0) == Some(&Token::Punct(']')) {
                    *pos += 1;
                    break;
                }
                items.push(parse_value(tokens, pos)?);
                match tokens.get(*pos).map(|t| &t.0) {
                    Some(Token::Punct(',')) => *pos += 1,
                    Some(Token::Punct(']')) => {}
                    _ => return Err("expected `,` or `]` in a list".into()),
                }
            }
            Value::List(items)
        }
        other => return Err(format!("unexpected {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    struct Ctx {
        incremental: bool,
    }

    impl Context for Ctx {
        fn model(&self, name: &str) -> Option<String> {
            (name == "orders").then(|| "staging.orders".to_string())
        }
        fn this(&self) -> String {
            "marts.me".into()
        }
        fn env(&self, name: &str) -> Option<String> {
            (name == "DIR").then(|| "/data".to_string())
        }
        fn is_incremental(&self) -> bool {
            self.incremental
        }
        fn window(&self) -> (String, String) {
            ("TIMESTAMP 'a'".into(), "TIMESTAMP 'b'".into())
        }
    }

    fn render(sql: &str, incremental: bool) -> Result<String, Vec<String>> {
        let file = Path::new("m.sql");
        let t = Template::parse(file, sql)
            .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        t.render(file, sql, &Ctx { incremental })
            .map(|r| r.sql)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn dbt_models_render_to_plain_sql() {
        let sql = "{{ config(materialized='incremental', unique_key=['id']) }}\nselect * from {{ ref('orders') }} o\n{# note #}join {{ source('crm', 'accounts') }} a on a.id = o.account_id\nwhere '{{ env_var(\"DIR\") }}' <> ''\n{%- if is_incremental() %}and o.ts > (select max(ts) from {{ this }}){% endif %}";
        assert_eq!(
            render(sql, false).unwrap(),
            "\nselect * from staging.orders o\njoin crm.accounts a on a.id = o.account_id\nwhere '/data' <> ''\n"
        );
        assert!(
            render(sql, true)
                .unwrap()
                .ends_with("and o.ts > (select max(ts) from marts.me)")
        );
        let t = Template::parse(Path::new("m.sql"), sql).unwrap();
        let config = t.config();
        assert_eq!(config[0].0, "materialized");
        assert_eq!(config[1].1.strings().unwrap(), ["id"]);
    }

    #[test]
    fn rendered_offsets_map_back_to_the_file() {
        let sql = "select x from {{ ref('orders') }} where y";
        let file = Path::new("m.sql");
        let t = Template::parse(file, sql).unwrap();
        let r = t.render(file, sql, &Ctx { incremental: false }).unwrap();
        assert_eq!(r.sql, "select x from staging.orders where y");
        let y = r.sql.find(" y").unwrap() + 1;
        assert_eq!(&sql[r.original_offset(y)..], "y");
        assert_eq!(
            r.original_offset(r.sql.find("staging").unwrap()),
            sql.find("{{").unwrap()
        );
    }

    #[test]
    fn unknown_template_code_is_an_error_naming_what_is_understood() {
        let e = render("select {{ dbt_utils.star(ref('orders')) }} from t", false).unwrap_err();
        assert!(
            e[0].contains("unsupported template expression `{{ dbt_utils.star(ref('orders')) }}`"),
            "{}",
            e[0]
        );
        assert!(e[0].contains("m.sql:1:8"), "{}", e[0]);
        let e = render("select 1 from {{ ref('ordrs') }}", false).unwrap_err();
        assert!(e[0].contains("there is no model named `ordrs`"), "{}", e[0]);
        let e = render("select '{{ env_var(\"NOPE\") }}'", false).unwrap_err();
        assert!(e[0].contains("`NOPE` is not set"), "{}", e[0]);
        let e = render("{% for x in y %}", false).unwrap_err();
        assert!(e[0].contains("unsupported template tag"), "{}", e[0]);
        let e = render("{% if is_incremental() %} x", false).unwrap_err();
        assert!(e[0].contains("never closed"), "{}", e[0]);
    }
}
