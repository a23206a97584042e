//! Where a key sits in a scenario file: the line an error about it names.

use toml::de::{DeTable, DeValue};

/// One step of a path into the file: a key of a table, or an entry of an array (`[[fault]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// A key.
    Key(String),
    /// An array entry, 0-based.
    Index(usize),
}

/// The path of a dotted key (`client.backoff.multiplier`).
pub(super) fn key_path(dotted: &str) -> Vec<Step> {
    dotted.split('.').map(|k| Step::Key(k.to_owned())).collect()
}

/// The 1-based line of the deepest part of `path` found in `text`: the key itself when it is
/// written, else the table or entry that lacks it. `None` when `text` does not parse or not
/// even the first step is found.
pub(super) fn line_of(text: &str, path: &[Step]) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    let mut found = None;
    for step in path {
        let (span, next) = match step {
            Step::Key(key) => {
                let Some((k, v)) = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref() == key))
                else {
                    break;
                };
                (k.span(), v)
            }
            Step::Index(i) => {
                let Some(v) = value.and_then(DeValue::as_array).and_then(|a| a.get(*i)) else {
                    break;
                };
                (v.span(), v)
            }
        };
        found = Some(span.start);
        value = Some(next.get_ref());
        table = next.get_ref().as_table();
    }
    found.map(|offset| text[..offset.min(text.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_an_array_of_tables_is_found_on_its_own_line() {
        let text = "[[fault]]\nat_ms = 1\n\n[[fault]]\naction = \"crash\"\nat_ms = 2\n";
        let path = [Step::Key("fault".into()), Step::Index(1), Step::Key("at_ms".into())];
        assert_eq!(line_of(text, &path), Some(6), "the second fault's at_ms is on line 6");
        let path = [Step::Key("fault".into()), Step::Index(1), Step::Key("host".into())];
        assert!(line_of(text, &path).is_some(), "a missing key falls back to its entry");
        assert_eq!(line_of("[client]\n\ntarget = 1", &key_path("client.target")), Some(3));
    }
}
