//! The validation pass's machinery: a [`Reader`] per table of the file structs, an [`Entry`]
//! per value that converts it to a typed value or reports why not, the problems collected,
//! and the document the problems' lines are found in.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml_edit::{ImDocument, Item, TableLike, Value};

use super::raw::{field_names, kind, Key, Raw, Table, Tables};
use crate::config::{Access, Problem};

pub(super) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

pub(super) fn line_of(starts: &[usize], offset: usize) -> usize {
    starts.partition_point(|&s| s <= offset).max(1)
}

/// What the whole pass shares: where the file is, its document (for lines and for describing
/// a wrong value as written) and the problems found so far.
pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
    pub(super) base: PathBuf,
    doc: &'a ImDocument<&'a str>,
    starts: Vec<usize>,
    // Shared by every Reader and Entry alive at once (a site's reader and its routes' readers),
    // so it cannot be a plain `&mut`.
    problems: RefCell<Vec<Problem>>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(text: &str, file: &'a Path, doc: &'a ImDocument<&'a str>) -> Self {
        Cx {
            file,
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            doc,
            starts: line_starts(text),
            problems: RefCell::new(Vec::new()),
        }
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

    /// The line of the key or element at `steps`.
    fn line_at(&self, steps: &[Step<'_>]) -> Option<usize> {
        find(self.doc.as_item(), steps)
            .and_then(|(_, offset)| offset)
            .map(|o| line_of(&self.starts, o))
    }

    fn line_of_key(&self, key: &str) -> Option<usize> {
        self.line_at(&key_steps(key))
    }

    /// How the value under `key` reads in the file, for messages: `integer 8443`, `table`.
    fn found(&self, key: &str) -> String {
        match find(self.doc.as_item(), &key_steps(key)) {
            Some((Node::Item(Item::Value(v)) | Node::Value(v), _)) => describe(v),
            Some((Node::Item(item), _)) => item.type_name().to_owned(),
            Some((Node::Table(_), _)) => "table".to_owned(),
            None => "another kind of value".to_owned(),
        }
    }
}

/// One table of the file structs being validated. [`Reader::finish`] reports the keys its
/// struct does not declare, with the closest declared spelling.
pub(super) struct Reader<'a, T> {
    pub(super) cx: &'a Cx<'a>,
    pub(super) file: &'a T,
    unknown: &'a [String],
    pub(super) path: String,
    pub(super) line: Option<usize>,
}

/// The [`Entry`] for a key of the table a [`Reader`] reads, named by its field so that the
/// key is spelt once, in the schema.
macro_rules! get {
    ($r:expr, $key:ident) => {
        $r.get(stringify!($key), $r.file.$key.as_ref())
    };
}

/// [`get!`] for a key whose absence is a problem; `$expected` says what belongs there.
macro_rules! need {
    ($r:expr, $key:ident, $expected:expr) => {
        $r.need(stringify!($key), $r.file.$key.as_ref(), $expected)
    };
}

pub(super) use {get, need};

impl<'a, T: DeserializeOwned> Reader<'a, T> {
    pub(super) fn root(cx: &'a Cx<'a>, table: &'a Table<T>) -> Option<Self> {
        match table {
            Table::Read { file, unknown } => Some(Reader {
                cx,
                file,
                unknown,
                path: String::new(),
                line: None,
            }),
            Table::Other => None,
        }
    }

    pub(super) fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, if present. Use [`get!`], which names the field once.
    pub(super) fn get<N>(&self, key: &'static str, node: Option<&'a N>) -> Option<Entry<'a, N>> {
        let node = node?;
        let key = self.key_path(key);
        let line = self.cx.line_of_key(&key).or(self.line);
        Some(Entry {
            cx: self.cx,
            node,
            key,
            line,
        })
    }

    /// The value under `key`; its absence is a problem. Use [`need!`].
    pub(super) fn need<N>(
        &self,
        key: &'static str,
        node: Option<&'a N>,
        expected: &str,
    ) -> Option<Entry<'a, N>> {
        let entry = self.get(key, node);
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

    /// Reports every key the table's struct does not declare.
    pub(super) fn finish(self) {
        let known = field_names::<T>();
        let mut steps = key_steps(&self.path);
        for key in self.unknown {
            let hint = match closest(key, known) {
                Some(known) => format!("; did you mean \"{known}\"?"),
                None => format!("; known keys here: {}", known.join(", ")),
            };
            steps.push(Step::Key(key));
            let line = self.cx.line_at(&steps).or(self.line);
            steps.pop();
            self.cx.report(
                line,
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

/// One present value with its place in the file, ready to be converted to a typed value.
/// Each conversion reports its own problem and returns `None` when the value does not fit.
/// `N` is what the schema declares: a [`Key`] of some kind, a [`Table`], [`Tables`], or a
/// [`Raw`] element of a list.
pub(super) struct Entry<'a, N> {
    pub(super) cx: &'a Cx<'a>,
    node: &'a N,
    pub(super) key: String,
    pub(super) line: Option<usize>,
}

/// A value that holds a [`Raw`] TOML value.
pub(super) trait HasRaw {
    fn raw(&self) -> &Raw;
}

impl HasRaw for Raw {
    fn raw(&self) -> &Raw {
        self
    }
}

impl<K> HasRaw for Key<K> {
    fn raw(&self) -> &Raw {
        &self.raw
    }
}

impl<'a, N> Entry<'a, N> {
    pub(super) fn report(&self, message: impl Into<String>) {
        self.cx.report(self.line, self.key.clone(), message);
    }

    pub(super) fn wrong_type(&self, expected: &str) {
        self.report(format!(
            "expected {expected}, found {}",
            self.cx.found(&self.key)
        ));
    }

    /// The entry for the `i`th element of this value.
    fn element<E>(&self, i: usize, node: &'a E) -> Entry<'a, E> {
        let key = format!("{}[{i}]", self.key);
        Entry {
            cx: self.cx,
            node,
            line: self.cx.line_of_key(&key).or(self.line),
            key,
        }
    }
}

impl<'a, N: HasRaw> Entry<'a, N> {
    pub(super) fn str(&self, expected: &str) -> Option<&'a str> {
        match self.node.raw() {
            Raw::Str(s) => Some(s),
            _ => {
                self.wrong_type(expected);
                None
            }
        }
    }
}

impl Entry<'_, Key<kind::Bool>> {
    pub(super) fn bool(&self) -> Option<bool> {
        match self.node.raw {
            Raw::Bool(b) => Some(b),
            _ => {
                self.wrong_type("true or false");
                None
            }
        }
    }
}

impl Entry<'_, Key<kind::Int>> {
    pub(super) fn int_in(&self, range: std::ops::RangeInclusive<i64>) -> Option<usize> {
        let Raw::Int(n) = self.node.raw else {
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
}

impl Entry<'_, Key<kind::Addr>> {
    pub(super) fn addr(&self) -> Option<SocketAddr> {
        const EXPECTED: &str = "\"IP:PORT\" such as \"0.0.0.0:8443\"";
        if let Raw::Int(n) = self.node.raw {
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
}

impl Entry<'_, Key<kind::Duration>> {
    pub(super) fn duration(&self, may_be_zero: bool) -> Option<Duration> {
        const EXPECTED: &str = "a duration string such as \"30s\", \"15m\" or \"12h\"";
        if let Raw::Int(n) = self.node.raw {
            self.report(format!(
                "expected {EXPECTED}, found integer {n}; write \"{n}s\" for seconds"
            ));
            return None;
        }
        // Longer than any session, certificate or cache a gateway keeps, so surely a slip;
        // far short of where moka refuses a lifetime (1,000 years, by panicking) and where
        // adding it to the clock overflows.
        const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);
        let s = self.str(EXPECTED)?;
        match humantime::parse_duration(s) {
            Ok(d) if d.is_zero() && !may_be_zero => {
                self.report(format!(
                    "\"{s}\" is zero; expected a duration greater than zero"
                ));
                None
            }
            Ok(d) if d > LONGEST => {
                self.report(format!(
                    "\"{s}\" is longer than ten years; expected at most \"3650d\""
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
}

impl Entry<'_, Key<kind::Path>> {
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
}

impl Entry<'_, Key<kind::Str>> {
    pub(super) fn access(&self) -> Option<Access> {
        const EXPECTED: &str = "\"protected\", \"public\" or \"deny\"";
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
}

impl<'a> Entry<'a, Key<kind::List>> {
    /// The value as an array, each element keyed `name[i]` with its own line.
    pub(super) fn array(&self, expected: &str) -> Option<Vec<Entry<'a, Raw>>> {
        let Raw::Array(items) = &self.node.raw else {
            self.wrong_type(expected);
            return None;
        };
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| self.element(i, v))
                .collect(),
        )
    }
}

impl<'a, T: DeserializeOwned> Entry<'a, Table<T>> {
    /// The value as a table to validate (`[name]` or an inline `{ ... }`).
    pub(super) fn table(&self, expected: &str) -> Option<Reader<'a, T>> {
        match self.node {
            Table::Read { file, unknown } => Some(Reader {
                cx: self.cx,
                file,
                unknown,
                path: self.key.clone(),
                line: self.line,
            }),
            Table::Other => {
                self.wrong_type(expected);
                None
            }
        }
    }
}

impl<'a, T: DeserializeOwned> Entry<'a, Tables<T>> {
    /// The value as a list of tables (`[[name]]` or an array of inline tables), each keyed
    /// `name[i]`.
    pub(super) fn tables(&self, expected: &str) -> Option<Vec<Reader<'a, T>>> {
        let Tables::Read(tables) = self.node else {
            self.wrong_type(expected);
            return None;
        };
        Some(
            tables
                .iter()
                .enumerate()
                .filter_map(|(i, t)| self.element(i, t).table("a table"))
                .collect(),
        )
    }
}

/// One step of a dotted key: `site[1].route[0].path` is site, 1, route, 0, path.
pub(super) enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

/// The steps of a dotted key as problems spell it. Only declared keys and indexes are
/// parsed back this way; an unknown key, which may hold any character, is pushed as a step.
pub(super) fn key_steps(dotted: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in dotted.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        steps.push(Step::Key(name));
        for index in rest.split('[') {
            if let Ok(n) = index.trim_end_matches(']').parse() {
                steps.push(Step::Index(n));
            }
        }
    }
    steps
}

#[derive(Clone, Copy)]
pub(super) enum Node<'d> {
    Item(&'d Item),
    Value(&'d Value),
    Table(&'d toml_edit::Table),
}

impl<'d> Node<'d> {
    fn table_like(self) -> Option<&'d dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Value(v) => v.as_inline_table().map(|t| t as &dyn TableLike),
            Node::Table(t) => Some(t),
        }
    }
}

/// The node reached by `steps` and the byte offset its line is counted from: a key's own
/// position (or its value's, when the key has none), an element's position in its array.
pub(super) fn find<'d>(root: &'d Item, steps: &[Step<'_>]) -> Option<(Node<'d>, Option<usize>)> {
    let mut node = Node::Item(root);
    let mut offset = None;
    for step in steps {
        match step {
            Step::Key(k) => {
                let (key, item) = node.table_like()?.get_key_value(k)?;
                offset = key.span().or_else(|| item.span()).map(|s| s.start);
                node = Node::Item(item);
            }
            Step::Index(n) => {
                let array = match node {
                    Node::Item(Item::ArrayOfTables(a)) => {
                        let t = a.get(*n)?;
                        offset = t.span().map(|s| s.start).or(offset);
                        node = Node::Table(t);
                        continue;
                    }
                    Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => a,
                    _ => return None,
                };
                let v = array.get(*n)?;
                offset = v.span().map(|s| s.start).or(offset);
                node = Node::Value(v);
            }
        }
    }
    Some((node, offset))
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
