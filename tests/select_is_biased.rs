//! Every `tokio::select!` in the crate is `biased`: an unbiased select polls its branches in an
//! order drawn from tokio's thread RNG, which is seeded from the OS outside a seeded runtime, so
//! the same simulation seed could take different paths.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_select_in_the_crate_polls_its_branches_in_a_fixed_order() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    files.sort();
    let mut unbiased = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a source file is readable");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("tokio::select! {") {
                let next = lines.get(i + 1).map_or("", |l| l.trim());
                if next != "biased;" {
                    unbiased.push(format!("{}:{}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(files.len() > 20, "the scan must see the crate's sources");
    assert!(unbiased.is_empty(), "tokio::select! without `biased;` at {unbiased:?}");
}
