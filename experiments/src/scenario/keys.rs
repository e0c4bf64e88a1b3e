//! Dotted keys of scenario tables: reading, setting and removing them, the hints an
//! unknown key gets, and the differences between two scenarios.

use super::*;

/// A line number suffix for messages.
#[derive(Debug, Default)]
pub struct LineHint(Option<usize>);

impl fmt::Display for LineHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// A "did you mean" suffix for messages, or the keys the table allows.
#[derive(Debug, Default)]
pub struct NearestHint {
    pub(super) nearest: Option<String>,
    /// The keys of the table the unknown key was found in (listed when no key is near).
    pub(super) allowed: Vec<String>,
    pub(super) note: Option<String>,
}

impl fmt::Display for NearestHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(note) = &self.note {
            return write!(f, "; {note}");
        }
        match &self.nearest {
            Some(key) => write!(f, "; did you mean `{key}`?"),
            None if self.allowed.is_empty() => Ok(()),
            None => write!(f, "; this table's keys: {}", self.allowed.join(", ")),
        }
    }
}

/// Edit distance, for suggesting the nearest valid key.
pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The allowed name closest to `name`, if it is close enough to be a typo.
pub(super) fn nearest<'a>(name: &str, allowed: &'a [String]) -> Option<&'a str> {
    let best = allowed.iter().map(|k| (levenshtein(name, k), k.as_str())).min();
    best.filter(|(d, _)| *d <= name.len().max(4) / 2).map(|(_, k)| k)
}

/// The 1-based line where `key`'s last component is assigned, if it can be found.
pub(super) fn line_of(text: &str, key: &str) -> LineHint {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    let index = text.lines().position(|l| {
        let l = l.trim_start();
        l.strip_prefix(leaf).is_some_and(|rest| rest.trim_start().starts_with('='))
            || l.trim_start_matches('[')
                .strip_prefix(leaf)
                .is_some_and(|rest| rest.starts_with(']') || rest.starts_with('.'))
    });
    LineHint(index.map(|i| i + 1))
}

/// One step of a dotted path: a key, or a key and an index into its array.
pub(super) fn path_steps(key: &str) -> Option<Vec<(&str, Option<usize>)>> {
    key.split('.')
        .map(|part| match part.split_once('[') {
            None if !part.is_empty() => Some((part, None)),
            None => None,
            Some((name, rest)) => Some((name, Some(rest.strip_suffix(']')?.parse().ok()?))),
        })
        .collect()
}

/// The value at a dotted path (`a.b`, `node_classes[0].count`).
pub(super) fn get_key<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let steps = path_steps(key)?;
    let mut node: Option<&Value> = None;
    let mut current = table;
    for (i, (name, index)) in steps.iter().enumerate() {
        let mut value = current.get(*name)?;
        if let Some(k) = index {
            value = value.as_array()?.get(*k)?;
        }
        if i + 1 < steps.len() {
            current = value.as_table()?;
        }
        node = Some(value);
    }
    node
}

/// Sets a dotted key in a table, creating intermediate tables; `name[i]` steps into
/// the i-th table of an existing array.
pub(super) fn set_key(table: &mut Table, key: &str, value: Value) -> Option<()> {
    let steps = path_steps(key)?;
    let (last, rest) = steps.split_last()?;
    let mut node = table;
    for (name, index) in rest {
        let entry = node.entry(name.to_string()).or_insert_with(|| Value::Table(Table::new()));
        let entry = match index {
            Some(k) => entry.as_array_mut()?.get_mut(*k)?,
            None => entry,
        };
        node = entry.as_table_mut()?;
    }
    match last.1 {
        None => {
            node.insert(last.0.to_string(), value);
        }
        Some(k) => *node.get_mut(last.0)?.as_array_mut()?.get_mut(k)? = value,
    }
    Some(())
}

/// Removes a dotted key; returns whether it was there.
pub(super) fn remove_key(table: &mut Table, key: &str) -> bool {
    let Some(steps) = path_steps(key) else { return false };
    let Some(((last, None), rest)) = steps.split_last() else { return false };
    let mut node = table;
    for (name, index) in rest {
        let Some(entry) = node.get_mut(*name) else { return false };
        let entry = match index {
            Some(k) => match entry.as_array_mut().and_then(|a| a.get_mut(*k)) {
                Some(e) => e,
                None => return false,
            },
            None => entry,
        };
        let Some(t) = entry.as_table_mut() else { return false };
        node = t;
    }
    node.remove(*last).is_some()
}

/// Flattens a sweep table into (dotted key, values) pairs: tables are descended,
/// anything else (a list of values) ends a key.
pub(super) fn flatten_sweep(table: &Table, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in table {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Table(t) => flatten_sweep(t, &path, out),
            _ => out.push((path, v.clone())),
        }
    }
}

/// The keys whose values differ between two resolved scenarios (TOML texts), as
/// `key: A -> B` (`(unset)` where one has no value), in key order; arrays of tables are
/// compared element by element. Text that is not TOML differs as a whole.
pub fn differences(a: &str, b: &str) -> Vec<String> {
    fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Table(t) => {
                for (k, v) in t {
                    flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
                }
            }
            Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
                for (i, v) in items.iter().enumerate() {
                    flatten(&format!("{prefix}[{i}]"), v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let parse = |text: &str| text.parse::<Table>().map(Value::Table);
    let (Ok(a), Ok(b)) = (parse(a), parse(b)) else {
        return if a == b { Vec::new() } else { vec!["(the scenario text)".into()] };
    };
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    flatten("", &a, &mut fa);
    flatten("", &b, &mut fb);
    let (ma, mb): (std::collections::BTreeMap<_, _>, std::collections::BTreeMap<_, _>) =
        (fa.into_iter().collect(), fb.into_iter().collect());
    let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let unset = "(unset)".to_string();
    keys.into_iter()
        .filter(|k| ma.get(*k) != mb.get(*k))
        .map(|k| format!("{k}: {} -> {}", ma.get(k).unwrap_or(&unset), mb.get(k).unwrap_or(&unset)))
        .collect()
}
