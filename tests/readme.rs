//! The README's claims, checked: it opens with the two commands, its `anchorage target` examples
//! print what it shows, its command table lists exactly the binary's subcommands, every example
//! in its scheme table parses to a scheme of its row, the repository paths it names exist, and
//! its links to its own sections lead somewhere.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md")
}

/// The contents of every fenced code block, with the word after its opening fence.
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(kind)) => open = Some((kind.trim().to_owned(), String::new())),
            (Some(block), Some(_)) => blocks.push(block),
            (Some((kind, mut body)), None) => {
                body.push_str(line);
                body.push('\n');
                open = Some((kind, body));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has a code block that is never closed");
    blocks
}

/// Splits a command line as a POSIX shell would for the quoting the README uses: words
/// separated by spaces, and single-quoted strings taken literally.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            ' ' if !quoted => words.extend(word.take()),
            '"' | '\\' | '$' | '`' if !quoted => {
                panic!("README example {line:?}: only single quotes are supported here")
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "README example {line:?}: unterminated single quote");
    words.extend(word);
    words
}

fn anchorage(args: &[String]) -> (bool, String) {
    let output =
        Command::new(env!("CARGO_BIN_EXE_anchorage")).args(args).output().expect("run anchorage");
    let mut text = String::from_utf8(output.stdout).expect("UTF-8 stdout");
    text.push_str(&String::from_utf8(output.stderr).expect("UTF-8 stderr"));
    (output.status.success(), text)
}

/// The rows of the Markdown table whose header row starts with `| first_header |`, as cells.
fn table_rows(text: &str, first_header: &str) -> Vec<Vec<String>> {
    let header = format!("| {first_header} |");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("README.md has no table headed {header:?}"));
    lines[start + 2..]
        .iter()
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells = l.trim_matches('|').replace("\\|", "\u{0}");
            cells.split('|').map(|c| c.trim().replace('\u{0}', "|")).collect()
        })
        .collect()
}

/// The `code` spans of `cell`.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_readme_opens_with_the_two_commands() {
    let text = readme();
    let (kind, first) = code_blocks(&text).into_iter().next().expect("README.md has code blocks");
    assert_eq!(kind, "sh", "the first block must be shell commands");
    let commands: Vec<&str> =
        first.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).collect();
    assert_eq!(
        commands,
        ["cargo run --release -- sim", "cargo test"],
        "the README must open with the two commands"
    );
}

#[test]
fn every_anchorage_target_example_prints_what_the_readme_shows() {
    let text = readme();
    let mut examples = 0;
    for (_, block) in code_blocks(&text) {
        let Some((first, shown)) = block.split_once('\n') else { continue };
        let Some(command) = first.strip_prefix("$ cargo run -q -- ") else { continue };
        let args = shell_words(command);
        if args.first().map(String::as_str) != Some("target") {
            continue;
        }
        let (_, printed) = anchorage(&args);
        assert_eq!(printed, shown, "README example `anchorage {command}` must print what it shows");
        examples += 1;
    }
    assert!(examples >= 5, "the README's target section shows 5 examples; found {examples}");
}

#[test]
fn the_command_table_lists_exactly_the_binarys_subcommands() {
    let (ok, help) = anchorage(&["--help".to_owned()]);
    assert!(ok, "anchorage --help must succeed: {help}");
    let mut actual: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    actual.sort();
    let text = readme();
    let mut listed: Vec<String> = table_rows(&text, "command")
        .iter()
        .filter_map(|row| {
            let usage = code_spans(&row[0]).into_iter().next()?;
            usage.strip_prefix("anchorage ")?.split_whitespace().next().map(str::to_owned)
        })
        .collect();
    listed.sort();
    assert_eq!(listed, actual, "the README's command table must list every subcommand, once");
}

#[test]
fn every_scheme_table_example_parses_to_a_scheme_of_its_row() {
    let text = readme();
    let rows = table_rows(&text, "scheme");
    assert!(rows.len() >= 5, "the scheme table has a row per resolver; found {}", rows.len());
    for row in rows {
        let schemes = code_spans(&row[0]);
        let example = code_spans(&row[2]);
        let [example] = example[..] else { panic!("row {row:?} must show one example") };
        let (ok, printed) = anchorage(&["target".to_owned(), example.to_owned()]);
        assert!(ok, "the README's example {example:?} must parse: {printed}");
        let scheme = printed
            .lines()
            .find_map(|l| l.strip_prefix("scheme:"))
            .map(str::trim)
            .unwrap_or_default();
        assert!(
            schemes.contains(&scheme),
            "the README's example {example:?} belongs to {schemes:?} but parses as {scheme:?}"
        );
    }
}

#[test]
fn every_repository_path_the_readme_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = readme();
    let dirs = ["src/", "sims/", "tests/", "docs/", "snapshots/", ".ci/", "proto/", "benches/"];
    let mut checked = 0;
    for span in text.split('`').skip(1).step_by(2) {
        for word in span.split([' ', '(', ')', ',']) {
            let word = word.trim_end_matches([':', '.']);
            if !dirs.iter().any(|d| word.starts_with(d)) {
                continue;
            }
            checked += 1;
            let exists = match word.split_once('*') {
                None => root.join(word).exists(),
                Some((prefix, suffix)) => {
                    let (dir, start) = prefix.rsplit_once('/').unwrap_or(("", prefix));
                    std::fs::read_dir(root.join(dir)).is_ok_and(|entries| {
                        entries.filter_map(Result::ok).any(|e| {
                            let name = e.file_name().to_string_lossy().into_owned();
                            name.starts_with(start) && name.ends_with(suffix)
                        })
                    })
                }
            };
            assert!(exists, "the README names {word:?}, which does not exist");
        }
    }
    assert!(checked >= 10, "the README names repository paths; only {checked} found");
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_link_to_a_readme_section_leads_to_a_heading() {
    let text = readme();
    let anchors: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let links: Vec<&str> =
        text.split("](#").skip(1).filter_map(|rest| rest.split(')').next()).collect();
    assert!(!links.is_empty(), "the README links to its own sections");
    for link in links {
        assert!(anchors.iter().any(|a| a == link), "the README links to #{link}, no such heading");
    }
}
