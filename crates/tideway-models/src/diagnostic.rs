//! Compiler-style messages: what is wrong, in which file, on which line and column, and how to
//! fix it. Every problem the compile step finds becomes one [`Diagnostic`]; they are all
//! reported together.

use std::fmt;
use std::path::PathBuf;

/// A position in a model file: 1-based line and column (in characters).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// What kind of problem a diagnostic is, for tools (`tideway compile --format json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The model file cannot be read.
    Io,
    /// The header block (native, Datacoral or dbt `config()`) is wrong.
    Header,
    /// A `{{ ... }}` or `{% ... %}` the renderer does not understand.
    Template,
    /// The SQL does not parse, or is not one query.
    Syntax,
    /// Two models build the same table.
    DuplicateModel,
    /// A table that is neither a model nor a lake table.
    UnknownTable,
    /// A model whose upstreams read it back.
    Cycle,
    /// A column that no table in scope has.
    UnknownColumn,
    /// Any other planning error (types, functions, grouping).
    Plan,
    /// The model's output cannot be stored (duplicate or unnamed columns).
    Output,
    /// A change to a column (or a removed model) that a downstream model reads, which that
    /// model does not change with (`tideway plan`).
    Breaking,
}

/// One problem, at one place.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diagnostic {
    pub code: Code,
    /// The model file, relative to the project.
    pub file: PathBuf,
    /// Where in the file; `None` when the problem is the whole file.
    pub position: Option<Position>,
    /// How many characters from the position the problem spans (for the `^^^` underline).
    #[serde(skip)]
    pub length: usize,
    /// The source line at the position, for display.
    #[serde(skip)]
    pub line_text: Option<String>,
    pub message: String,
    /// How to fix it, when Tideway can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic about a whole file.
    pub fn file(code: Code, file: impl Into<PathBuf>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            file: file.into(),
            position: None,
            length: 0,
            line_text: None,
            message: message.into(),
            help: None,
        }
    }

    /// A diagnostic at `position` of `source` (the file's text), underlining `length` characters.
    pub fn at(
        code: Code,
        file: impl Into<PathBuf>,
        source: &str,
        position: Position,
        length: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            code,
            file: file.into(),
            position: Some(position),
            length: length.max(1),
            line_text: source
                .lines()
                .nth(position.line.saturating_sub(1))
                .map(str::to_string),
            message: message.into(),
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    /// ```text
    /// error[unknown-column]: `l` has no column `lifetme_value`
    ///   --> models/marts/customer_health.sql:4:11
    ///    |
    ///  4 |         l.lifetme_value,
    ///    |           ^^^^^^^^^^^^^
    ///    = help: did you mean `lifetime_value`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = label(&self.code);
        writeln!(f, "error[{code}]: {}", self.message)?;
        match (self.position, &self.line_text) {
            (Some(p), Some(text)) => {
                let gutter = p.line.to_string().len();
                let pad = " ".repeat(gutter);
                writeln!(
                    f,
                    "{pad}--> {}:{}:{}",
                    self.file.display(),
                    p.line,
                    p.column
                )?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{} | {text}", p.line)?;
                let indent: String = text
                    .chars()
                    .take(p.column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "{pad} | {indent}{}", "^".repeat(self.length))?;
                if let Some(help) = &self.help {
                    write!(f, "\n{pad} = help: {help}")?;
                }
            }
            (Some(p), None) => {
                write!(f, "  --> {}:{}:{}", self.file.display(), p.line, p.column)?;
                if let Some(help) = &self.help {
                    write!(f, "\n   = help: {help}")?;
                }
            }
            (None, _) => {
                write!(f, "  --> {}", self.file.display())?;
                if let Some(help) = &self.help {
                    write!(f, "\n   = help: {help}")?;
                }
            }
        }
        Ok(())
    }
}

/// The lowercase name of a unit enum, as serde writes it (`unknown-column`, `up_to_date`).
pub fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Line starts of a text, to turn byte offsets into positions and back.
#[derive(Debug, Clone)]
pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }

    /// The position of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let column = self.text[self.starts[line]..offset].chars().count() + 1;
        Position {
            line: line + 1,
            column,
        }
    }

    /// The byte offset of `position` (clamped to the text).
    pub(crate) fn offset(&self, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line.saturating_sub(1)) else {
            return self.text.len();
        };
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        self.text[start..line_end]
            .char_indices()
            .nth(position.column.saturating_sub(1))
            .map_or(line_end, |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_round_trip() {
        let text = "select\n  é.a,\nfrom t";
        let lines = Lines::new(text);
        for offset in [0, 3, 7, 9, 11, 15, 18] {
            let p = lines.position(offset);
            assert_eq!(lines.offset(p), offset, "{p:?}");
        }
        assert_eq!(lines.position(9), Position { line: 2, column: 3 });
    }

    #[test]
    fn a_diagnostic_underlines_its_span() {
        let source = "select\n    l.lifetme_value\nfrom x";
        let d = Diagnostic::at(
            Code::UnknownColumn,
            "models/a.sql",
            source,
            Position { line: 2, column: 7 },
            13,
            "`l` has no column `lifetme_value`",
        )
        .with_help("did you mean `lifetime_value`?");
        assert_eq!(
            d.to_string(),
            "error[unknown-column]: `l` has no column `lifetme_value`\n \
             --> models/a.sql:2:7\n  |\n2 |     l.lifetme_value\n  |       ^^^^^^^^^^^^^\n  \
             = help: did you mean `lifetime_value`?"
        );
    }
}
