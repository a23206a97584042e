//! What `anchorage sim` prints: by default one line per scenario and a summary, the per-run
//! tables with `--verbose`, and always the table and replay line of a failing run; and the
//! SVGs of `--plot` and `--plot-dir`, with their errors.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_anchorage");

fn anchorage(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("the anchorage binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A fresh directory under the target's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

const TWO_SCENARIOS: [&str; 2] = ["sims/weighted_round_robin.toml", "sims/pick_first_default.toml"];

#[test]
fn the_default_output_is_one_line_per_scenario_then_the_summary() {
    let output = anchorage(&["sim", TWO_SCENARIOS[0], TWO_SCENARIOS[1], "--seeds", "0..2"]);
    let text = stdout(&output);
    assert!(output.status.success(), "both scenarios must pass:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "one line per scenario plus the summary, nothing else:\n{text}");
    assert!(
        lines[0].starts_with("weighted_round_robin") && lines[0].contains(" 2/2 "),
        "a scenario's line must start with its name and its seeds passed/run:\n{text}"
    );
    assert!(
        lines[0].contains("conns a=2 b=1") && lines[0].contains("split a=0.6"),
        "a scenario's line must show its headline figures (connections, split):\n{text}"
    );
    assert!(lines[1].starts_with("pick_first_default"), "scenarios in the order given:\n{text}");
    let name_end = |line: &str| line.find(" 2/2").unwrap_or(0);
    assert_eq!(name_end(lines[0]), name_end(lines[1]), "the columns must be aligned:\n{text}");
    assert!(
        lines[2].starts_with("4 runs over 2 scenarios: 4 passed, 0 failed; wall time ")
            && lines[2].contains("determinism self-check passed"),
        "the summary must count runs, scenarios, passes and failures, the wall time and the \
         determinism check:\n{text}"
    );
    assert!(!text.contains("== "), "no per-run table without --verbose:\n{text}");
}

#[test]
fn verbose_prints_every_runs_table_before_the_scenario_lines() {
    let output = anchorage(&["sim", TWO_SCENARIOS[0], "--seeds", "0..2", "--verbose"]);
    let text = stdout(&output);
    assert!(output.status.success(), "the scenario must pass:\n{text}");
    for seed in 0..2 {
        let header = format!("== weighted_round_robin seed {seed} PASS");
        assert!(text.contains(&header), "--verbose must print the table of seed {seed}:\n{text}");
    }
    assert!(text.contains("  property"), "a table lists the properties:\n{text}");
    assert!(
        text.contains("determinism weighted_round_robin seed 0: trace"),
        "--verbose must print the determinism lines:\n{text}"
    );
    let summary = text.lines().last().unwrap_or_default();
    assert!(summary.starts_with("2 runs over 1 scenarios"), "the summary comes last:\n{text}");
}

#[test]
fn a_failing_run_prints_its_table_then_its_replay_line() {
    let text = std::fs::read_to_string(TWO_SCENARIOS[0]).expect("read the scenario");
    let impossible =
        text.replace("connections = { a = 2, b = 1 }", "connections = { a = 3, b = 1 }");
    assert_ne!(text, impossible, "premise: the scenario states its connection counts");
    let path = temp_dir("failing_run_table").join("impossible_connections.toml");
    std::fs::write(&path, impossible).expect("write the scenario");
    let path = path.to_string_lossy().into_owned();

    let output = anchorage(&["sim", &path, "--seeds", "0..2"]);
    let text = stdout(&output);
    assert!(!output.status.success(), "a failing run must make the exit status non-zero:\n{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with("impossible_connections") && l.contains(" 0/2 ")),
        "the scenario's line must say no seed passed:\n{text}"
    );
    for seed in 0..2 {
        let table = text.find(&format!("== impossible_connections seed {seed} FAIL"));
        let replay = text.find(&format!("replay: cargo run --release -- sim {path} --seed {seed}"));
        match (table, replay) {
            (Some(table), Some(replay)) => assert!(
                table < replay,
                "a failing run's table must come before its replay line:\n{text}"
            ),
            _ => panic!("a failing run must print its table and its replay line:\n{text}"),
        }
    }
}

#[test]
fn a_mutant_run_prints_its_table_and_replay_line() {
    let output = anchorage(&[
        "sim",
        "sims/notes_example_without_count.toml",
        "--seeds",
        "0..1",
        "--mutant",
        "count_carries_over",
    ]);
    let text = stdout(&output);
    assert!(!output.status.success(), "the mutant must fail the run:\n{text}");
    assert!(
        text.starts_with("notes_example_without_count") && text.contains(" 0/1 "),
        "the answer comes first: the scenario's line, with no seed passed:\n{text}"
    );
    assert!(
        text.contains("== notes_example_without_count seed 0 FAIL"),
        "a failing run must print its table even without --verbose:\n{text}"
    );
    assert!(
        text.contains("--seed 0 --mutant count_carries_over"),
        "the replay line must set the mutant:\n{text}"
    );
}

#[test]
fn plot_writes_an_svg_of_the_run_naming_its_servers_and_faults() {
    let path = temp_dir("plot_one_run").join("crash.svg");
    let output = anchorage(&[
        "sim",
        "sims/crash_restart_weighted.toml",
        "--seed",
        "0",
        "--plot",
        path.to_str().expect("a UTF-8 path"),
    ]);
    assert!(output.status.success(), "the run must pass and plot:\n{}", stderr(&output));
    let svg = std::fs::read_to_string(&path).expect("--plot must write the file");
    assert!(svg.starts_with("<svg"), "the file must be an SVG document");
    for label in ["server a", "server b", "crash a", "restart a", "failover", "split window"] {
        assert!(svg.contains(label), "the plot must label {label:?}");
    }
}

#[test]
fn plot_refuses_more_than_one_run_and_says_so() {
    let path = temp_dir("plot_many_runs").join("many.svg");
    let output = anchorage(&["sim", TWO_SCENARIOS[0], "--plot", path.to_str().unwrap()]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "a usage error:\n{text}");
    assert!(
        text.contains("--plot") && text.contains("8 runs") && text.contains("--seed"),
        "the error must say --plot draws one run, how many this is, and how to pick one:\n{text}"
    );
    assert!(!path.exists(), "nothing is written");
}

#[test]
fn plot_to_an_unwritable_path_fails_naming_the_path_without_panicking() {
    let path = temp_dir("plot_unwritable").join("no_such_dir").join("x.svg");
    let path = path.to_string_lossy().into_owned();
    let output = anchorage(&["sim", TWO_SCENARIOS[1], "--seed", "0", "--plot", &path]);
    let text = stderr(&output);
    assert!(!output.status.success(), "an unwritable plot must fail the command:\n{text}");
    assert!(text.contains(&path), "the error must name the path:\n{text}");
    assert!(!text.contains("panicked"), "no panic:\n{text}");
}

#[test]
fn plot_dir_writes_one_svg_per_scenario_named_by_its_first_seed() {
    let dir = temp_dir("plot_dir");
    let output = anchorage(&[
        "sim",
        TWO_SCENARIOS[0],
        TWO_SCENARIOS[1],
        "--seeds",
        "3..5",
        "--plot-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "the runs must pass and plot:\n{}", stderr(&output));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("the directory exists")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["pick_first_default-seed3.svg", "weighted_round_robin-seed3.svg"],
        "one SVG per scenario, of its first seed"
    );
}

/// Guards the simulator's speed without timing it: with glibc's allocator a quarter of
/// `anchorage sim`'s CPU time went to `malloc` and `free` under hyper, h2 and tonic, and the
/// binary's mimalloc allocator took that back. mimalloc prints its statistics at exit when
/// `MIMALLOC_SHOW_STATS` is set; glibc's allocator ignores the variable.
#[test]
#[cfg(feature = "mimalloc")]
fn the_simulator_allocates_with_mimalloc() {
    let output = Command::new(BIN)
        .args(["sim", "sims/zero_addresses.toml", "--seed", "0"])
        .env("MIMALLOC_SHOW_STATS", "1")
        .output()
        .expect("the anchorage binary runs");
    assert!(output.status.success(), "the run must pass:\n{}", stdout(&output));
    assert!(
        stderr(&output).contains("peak commit"),
        "the anchorage binary must allocate with mimalloc (its exit statistics are missing):\n{}",
        stderr(&output)
    );
}

/// Regression: once the tonic clients were audit subjects, `--subject tonic-balance-list`
/// found the subject's placeholder resolver first and ran anchorage's channel, so the replay
/// command printed for a failing tonic cell replayed a run that passed.
#[test]
fn the_replay_command_of_a_tonic_client_runs_that_tonic_client() {
    let output = anchorage(&[
        "sim",
        "sims/weighted_round_robin.toml",
        "--seed",
        "0",
        "--subject",
        "tonic-balance-list",
        "--trace",
    ]);
    let text = stdout(&output);
    assert!(!output.status.success(), "balance_list must fail connections per #N:\n{text}");
    assert!(
        text.contains("connections        FAIL    a=1 (want 2), b=1 (want 1)"),
        "balance_list keys endpoints by URI, so a#2 must give one connection:\n{text}"
    );
    assert!(
        text.contains("p2c insert http://a:9080") && !text.contains(" created for "),
        "the trace must be tonic's client, not anchorage's channel:\n{text}"
    );
    assert!(
        text.contains("--subject tonic-balance-list"),
        "the replay line must name the client:\n{text}"
    );
}

/// Regression: `--mutant` with a tonic client was accepted and ignored (a mutant is a defect in
/// anchorage's channel, which a tonic client does not run), and the replay line named it.
#[test]
fn a_mutant_with_a_tonic_client_is_refused_naming_both() {
    let output = anchorage(&[
        "sim",
        "sims/weighted_round_robin.toml",
        "--seed",
        "0",
        "--subject",
        "tonic-p2c",
        "--mutant",
        "drop_one_rpc_per_crash",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "bad flags must exit 2:\n{stderr}");
    assert!(
        stderr.contains("--mutant drop_one_rpc_per_crash") && stderr.contains("tonic-p2c"),
        "the error must name the mutant and the client:\n{stderr}"
    );
}
