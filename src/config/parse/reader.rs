//! The walk's machinery: a [`Reader`] per table that remembers the keys asked for, an
//! [`Entry`] per value that converts it to a typed value or reports why not, and the problems
//! collected with their lines.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use crate::config::{Access, Problem};

pub(super) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

pub(super) fn line_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset).max(1)
}

/// What the whole walk shares: where the file is and the problems found so far.
pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) base: PathBuf,
    pub(super) starts: Vec<usize>,
    // Shared by every Reader and Entry alive at once (a site's reader and its routes' readers),
    // so it cannot be a plain `&mut`.
    pub(super) problems: RefCell<Vec<Problem>>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(text: &str, file: &'a Path) -> Self {
        Cx {
            file,
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            starts: line_starts(text),
            problems: RefCell::new(Vec::new()),
        }
    }

    pub(super) fn line_of(&self, offset: usize) -> usize {
        line_of(&self.starts, offset)
    }

    pub(super) fn span_line(&self, span: Option<std::ops::Range<usize>>) -> Option<usize> {
        span.map(|s| self.line_of(s.start))
    }

    pub(super) fn report(
        &self,
        line: Option<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems.borrow_mut().push(Problem {
            file: self.file.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Problems in file order; those without a line (missing tables) come last.
    pub(super) fn into_problems(self) -> Vec<Problem> {
        let mut problems = self.problems.into_inner();
        problems.sort_by_key(|p| (p.line.is_none(), p.line));
        problems
    }
}

/// One table being read. Every key asked for is remembered, so [`Reader::finish`] can report
/// the rest as unknown and suggest the closest known spelling.
pub(super) struct Reader<'a> {
    pub(super) cx: &'a Cx<'a>,
    pub(super) table: &'a dyn TableLike,
    pub(super) path: String,
    pub(super) line: Option<usize>,
    pub(super) asked: Vec<&'static str>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        cx: &'a Cx<'a>,
        table: &'a dyn TableLike,
        path: String,
        line: Option<usize>,
    ) -> Self {
        Reader {
            cx,
            table,
            path,
            line,
            asked: Vec::new(),
        }
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, if present.
    pub(super) fn get(&mut self, key: &'static str) -> Option<Entry<'a>> {
        self.asked.push(key);
        let (k, item) = self.table.get_key_value(key)?;
        if item.is_none() {
            return None;
        }
        let line = self
            .cx
            .span_line(k.span().or_else(|| item.span()))
            .or(self.line);
        Some(Entry {
            cx: self.cx,
            node: Node::Item(item),
            key: self.key_path(key),
            line,
        })
    }

    /// The value under `key`; its absence is a problem.
    pub(super) fn need(&mut self, key: &'static str, expected: &str) -> Option<Entry<'a>> {
        let entry = self.get(key);
        if entry.is_none() {
            self.cx.report(
                self.line,
                self.key_path(key),
                format!("missing required key {}; expected {expected}", self.place()),
            );
        }
        entry
    }

    /// Where this table is, for messages: `in [server]`, `in site[0]`.
    pub(super) fn place(&self) -> String {
        if self.path.is_empty() {
            "at the top level".to_owned()
        } else if self.path.ends_with(']') {
            format!("in {}", self.path)
        } else {
            format!("in [{}]", self.path)
        }
    }

    /// Reports every key that no one asked for.
    pub(super) fn finish(self) {
        for (key, item) in self.table.iter() {
            if self.asked.contains(&key) {
                continue;
            }
            let span = self
                .table
                .get_key_value(key)
                .and_then(|(k, _)| k.span())
                .or_else(|| item.span());
            let hint = match closest(key, &self.asked) {
                Some(known) => format!("; did you mean \"{known}\"?"),
                None => {
                    let mut known: Vec<&str> = self.asked.clone();
                    known.dedup();
                    format!("; known keys here: {}", known.join(", "))
                }
            };
            self.cx.report(
                self.cx.span_line(span).or(self.line),
                self.key_path(key),
                format!("unknown key \"{key}\" {}{hint}", self.place()),
            );
        }
    }
}

/// The known key nearest to `unknown`, if it is close enough to be a likely typo.
pub(super) fn closest<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    let limit = if lower.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, with an adjacent swap counting as one edit (the commonest typo).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
}

/// One present value with its place in the file, ready to be converted to a typed value.
/// Each conversion reports its own problem and returns `None` when the value does not fit.
pub(super) struct Entry<'a> {
    pub(super) cx: &'a Cx<'a>,
    pub(super) node: Node<'a>,
    pub(super) key: String,
    pub(super) line: Option<usize>,
}

impl<'a> Entry<'a> {
    pub(super) fn value(&self) -> Option<&'a Value> {
        match self.node {
            Node::Item(item) => item.as_value(),
            Node::Value(v) => Some(v),
        }
    }

    pub(super) fn report(&self, message: impl Into<String>) {
        self.cx.report(self.line, self.key.clone(), message);
    }

    /// How the value reads in the file, for messages: `integer 8443`, `table`.
    pub(super) fn found(&self) -> String {
        match self.node {
            Node::Item(Item::Value(v)) | Node::Value(v) => describe(v),
            Node::Item(item) => item.type_name().to_owned(),
        }
    }

    pub(super) fn wrong_type(&self, expected: &str) {
        self.report(format!("expected {expected}, found {}", self.found()));
    }

    pub(super) fn str(&self, expected: &str) -> Option<&'a str> {
        match self.value().and_then(Value::as_str) {
            Some(s) => Some(s),
            None => {
                self.wrong_type(expected);
                None
            }
        }
    }

    pub(super) fn bool(&self) -> Option<bool> {
        let b = self.value().and_then(Value::as_bool);
        if b.is_none() {
            self.wrong_type("true or false");
        }
        b
    }

    pub(super) fn int_in(&self, range: std::ops::RangeInclusive<i64>) -> Option<usize> {
        let Some(n) = self.value().and_then(Value::as_integer) else {
            self.wrong_type(&format!(
                "an integer from {} to {}",
                range.start(),
                range.end()
            ));
            return None;
        };
        if !range.contains(&n) {
            self.report(format!(
                "{n} is out of range; expected an integer from {} to {}",
                range.start(),
                range.end()
            ));
            return None;
        }
        usize::try_from(n).ok()
    }

    pub(super) fn addr(&self) -> Option<SocketAddr> {
        pub(super) const EXPECTED: &str = "\"IP:PORT\" such as \"0.0.0.0:8443\"";
        if let Some(n) = self.value().and_then(Value::as_integer) {
            self.report(format!(
                "expected a string {EXPECTED}, found integer {n}; write \"0.0.0.0:{n}\""
            ));
            return None;
        }
        let s = self.str(&format!("a string {EXPECTED}"))?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.report(format!(
                    "\"{s}\" is not a socket address; expected {EXPECTED} (an IP address, not a host name; IPv6 as \"[::]:8443\")"
                ));
                None
            }
        }
    }

    pub(super) fn duration(&self, may_be_zero: bool) -> Option<Duration> {
        pub(super) const EXPECTED: &str = "a duration string such as \"30s\", \"15m\" or \"12h\"";
        if let Some(n) = self.value().and_then(Value::as_integer) {
            self.report(format!(
                "expected {EXPECTED}, found integer {n}; write \"{n}s\" for seconds"
            ));
            return None;
        }
        let s = self.str(EXPECTED)?;
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() && !may_be_zero => {
                self.report(format!(
                    "\"{s}\" is zero; expected a duration greater than zero"
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.report(format!(
                    "\"{s}\" is not a duration ({e}); expected {EXPECTED}"
                ));
                None
            }
        }
    }

    /// A file path; relative ones are taken from the config file's directory, so the config
    /// means the same thing whatever directory the gateway is started from.
    pub(super) fn path(&self) -> Option<PathBuf> {
        let s = self.str("a file path string")?;
        if s.trim().is_empty() {
            self.report("the path is empty; expected a file path");
            return None;
        }
        let p = Path::new(s);
        Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.cx.base.join(p)
        })
    }

    pub(super) fn access(&self) -> Option<Access> {
        pub(super) const EXPECTED: &str = "\"protected\", \"public\" or \"deny\"";
        let s = self.str(&format!("one of {EXPECTED}"))?;
        match s {
            "protected" => Some(Access::Protected),
            "public" => Some(Access::Public),
            "deny" => Some(Access::Deny),
            _ => {
                self.report(format!(
                    "\"{s}\" is not an access rule; expected one of {EXPECTED}"
                ));
                None
            }
        }
    }

    /// The value as a table to read keys from (`[name]` or an inline `{ ... }`).
    pub(super) fn table(&self, expected: &str) -> Option<Reader<'a>> {
        let (table, span): (&'a dyn TableLike, _) = match self.node {
            Node::Item(Item::Table(t)) => (t, t.span()),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                (t, t.span())
            }
            _ => {
                self.wrong_type(expected);
                return None;
            }
        };
        let line = self.cx.span_line(span).or(self.line);
        Some(Reader::new(self.cx, table, self.key.clone(), line))
    }

    /// The value as a list of tables (`[[name]]` or an array of inline tables), each keyed
    /// `name[i]`.
    pub(super) fn tables(&self, expected: &str) -> Option<Vec<Reader<'a>>> {
        let mut out = Vec::new();
        match self.node {
            Node::Item(Item::ArrayOfTables(a)) => {
                for (i, t) in a.iter().enumerate() {
                    let line = self.cx.span_line(t.span()).or(self.line);
                    out.push(Reader::new(self.cx, t, format!("{}[{i}]", self.key), line));
                }
            }
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                for (i, v) in a.iter().enumerate() {
                    let entry = Entry {
                        cx: self.cx,
                        node: Node::Value(v),
                        key: format!("{}[{i}]", self.key),
                        line: self.cx.span_line(v.span()).or(self.line),
                    };
                    if let Some(r) = entry.table("a table") {
                        out.push(r);
                    }
                }
            }
            _ => {
                self.wrong_type(expected);
                return None;
            }
        }
        Some(out)
    }

    /// The value as an array, each element keyed `name[i]` with its own line.
    pub(super) fn array(&self, expected: &str) -> Option<Vec<Entry<'a>>> {
        let Some(Value::Array(a)) = self.value() else {
            self.wrong_type(expected);
            return None;
        };
        Some(
            a.iter()
                .enumerate()
                .map(|(i, v)| Entry {
                    cx: self.cx,
                    node: Node::Value(v),
                    key: format!("{}[{i}]", self.key),
                    line: self.cx.span_line(v.span()).or(self.line),
                })
                .collect(),
        )
    }
}

pub(super) fn describe(v: &Value) -> String {
    let mut bare = v.clone();
    bare.decor_mut().clear();
    let text = bare.to_string();
    let text = if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    };
    format!("{} {text}", v.type_name())
}
