//! Seeded mutations of every `sims/*.toml`: loading never panics, and every mutant that loads
//! is within the documented limits, loads the same way twice, and (a sample of them) runs
//! 200 ms of simulated time without a panic.
#![cfg(feature = "sim")]

use std::panic::{AssertUnwindSafe, catch_unwind};

use anchorage::sim::{self, scenario::*};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use toml::{Table, Value};

/// Mutants per scenario file.
const MUTANTS_PER_FILE: usize = 40;

/// Every this many accepted mutants, one is run for [`RUN_MS`] of simulated time.
const RUN_EVERY: usize = 2;

/// How long a sampled mutant runs, simulated ms.
const RUN_MS: u64 = 200;

/// Written where a value should be `u64::MAX`, which a [`toml::Value`] cannot hold.
const U64_MAX_MARK: &str = "@u64-max@";

/// A path to a value: keys and array indices.
type Path = Vec<Step>;

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(value: &Value, prefix: &Path, out: &mut Vec<Path>) {
    let children: Vec<(Step, &Value)> = match value {
        Value::Table(t) => t.iter().map(|(k, v)| (Step::Key(k.clone()), v)).collect(),
        Value::Array(a) => a.iter().enumerate().map(|(i, v)| (Step::Index(i), v)).collect(),
        _ => Vec::new(),
    };
    for (step, child) in children {
        let mut path = prefix.clone();
        path.push(step);
        out.push(path.clone());
        paths(child, &path, out);
    }
}

fn get_mut<'v>(value: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, step| match (step, v) {
        (Step::Key(k), Value::Table(t)) => t.get_mut(k),
        (Step::Index(i), Value::Array(a)) => a.get_mut(*i),
        _ => None,
    })
}

/// The values a leaf may be set to: edge numbers, other types, long and odd strings.
fn replacement(rng: &mut ChaCha8Rng) -> Value {
    let choices: [fn() -> Value; 14] = [
        || Value::Integer(0),
        || Value::Integer(-1),
        || Value::Integer(i64::MAX),
        || Value::Integer(i64::MIN),
        || Value::Float(1e300),
        || Value::Float(f64::NAN),
        || Value::Float(f64::NEG_INFINITY),
        || Value::Float(-0.5),
        || Value::String(U64_MAX_MARK.to_owned()),
        || Value::String("x".repeat(100_000)),
        || Value::String("a:1#0,,[::1".to_owned()),
        || Value::Boolean(true),
        || Value::Array(vec![Value::String("a".into()); 3]),
        || Value::Table(Table::new()),
    ];
    choices[rng.random_range(0..choices.len())]()
}

/// One mutation of `root`: delete a key, replace a value, duplicate an array entry.
fn mutate(root: &mut Value, rng: &mut ChaCha8Rng) {
    let mut all = Vec::new();
    paths(root, &Vec::new(), &mut all);
    if all.is_empty() {
        return;
    }
    let path = all[rng.random_range(0..all.len())].clone();
    let (last, parent) = path.split_last().expect("paths are not empty");
    let Some(parent) = get_mut(root, parent) else { return };
    match (rng.random_range(0..4), last, parent) {
        (0, Step::Key(k), Value::Table(t)) => {
            t.remove(k);
        }
        (1, Step::Index(i), Value::Array(a)) => {
            let copy = a[*i].clone();
            a.push(copy);
        }
        (_, Step::Key(k), Value::Table(t)) => {
            t.insert(k.clone(), replacement(rng));
        }
        (_, Step::Index(i), Value::Array(a)) => a[*i] = replacement(rng),
        _ => {}
    }
}

/// `text` mutated: 1 to 3 structural mutations, or a duplicated table header.
fn mutant(text: &str, rng: &mut ChaCha8Rng) -> String {
    if rng.random_range(0..10) == 0 {
        let header = text.lines().rev().find(|l| l.starts_with('[')).unwrap_or("[client]");
        return format!("{text}\n{header}\n");
    }
    let mut root = Value::Table(text.parse::<Table>().expect("sims/*.toml parse"));
    for _ in 0..rng.random_range(1..=3) {
        mutate(&mut root, rng);
    }
    let out = toml::to_string(&root).unwrap_or_default();
    out.replace(&format!("\"{U64_MAX_MARK}\""), "18446744073709551615")
}

/// What every accepted scenario must satisfy: the documented limits.
fn within_limits(s: &Scenario) -> Result<(), String> {
    let b = &s.client.backoff;
    let w = &s.workload;
    let checks = [
        (s.server_list().len() <= MAX_SERVERS, "servers"),
        (s.time_limit_ms <= MAX_TIME_LIMIT_MS, "time_limit_ms"),
        (w.rpcs <= MAX_RPCS && w.rpcs >= 1, "rpcs"),
        (w.concurrency <= MAX_CONCURRENCY && w.concurrency >= 1, "concurrency"),
        (w.deadline_ms <= MAX_TIME_MS, "deadline_ms"),
        (s.faults.len() <= MAX_FAULTS, "faults"),
        (b.multiplier.is_finite() && b.jitter.is_finite(), "backoff"),
        (s.expect.weights.iter().flat_map(|m| m.values()).all(|w| w.is_finite()), "weights"),
        (s.expect.tolerance.is_none_or(f64::is_finite), "tolerance"),
        (s.etcd.as_ref().is_none_or(|e| e.port > 0 && e.min_lease_ttl_s <= MAX_TTL_S), "etcd"),
        (!s.client.target.to_ascii_lowercase().starts_with("dns:"), "dns target"),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, what)) => Err(format!("{what} is beyond its limit")),
        None => Ok(()),
    }
}

#[test]
fn mutated_scenarios_never_panic_and_every_accepted_one_is_within_the_limits() {
    let mut files: Vec<_> = std::fs::read_dir("sims")
        .expect("sims/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let (mut tried, mut accepted, mut ran) = (0, 0, 0);
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for _ in 0..MUTANTS_PER_FILE {
            let text = mutant(&text, &mut rng);
            tried += 1;
            let loaded = catch_unwind(|| Scenario::parse(file, &text));
            let Ok(loaded) = loaded else {
                panic!("loading must never panic; it did on this mutant of {file:?}:\n{text}");
            };
            let Ok(mut scenario) = loaded else { continue };
            accepted += 1;
            if let Err(why) = within_limits(&scenario) {
                panic!("an accepted mutant of {file:?} must be within the limits: {why}\n{text}");
            }
            let again = Scenario::parse(file, &text).expect("a mutant that loaded loads again");
            assert_eq!(
                format!("{again:?}"),
                format!("{scenario:?}"),
                "loading must be a function of the text"
            );
            if accepted % RUN_EVERY == 0 {
                ran += 1;
                scenario.time_limit_ms = RUN_MS;
                let report = catch_unwind(AssertUnwindSafe(|| sim::run(&scenario, 1)))
                    .unwrap_or_else(|_| panic!("sim::run must never panic:\n{text}"));
                let panicked = report.properties.iter().find(|p| p.name == "no_panic");
                assert!(
                    panicked.is_none(),
                    "an accepted mutant of {file:?} must run without a panic: {panicked:?}\n{text}"
                );
            }
        }
    }
    assert!(tried >= 400, "a few hundred mutants must be tried, got {tried}");
    assert!(
        accepted > 0 && accepted < tried,
        "some mutants load and some do not: {accepted}/{tried}"
    );
    assert!(ran > 0, "some accepted mutants must run");
}
