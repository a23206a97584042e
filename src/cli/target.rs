//! `anchorage target <TARGET> [--json]`: parses a target, names the resolver that would take it,
//! and shows what `pass` and `etcd` endpoints expand to.
//!
//! Exit codes: 0 when the target is valid, 2 when it is not (the error goes to stderr).

use std::process::ExitCode;

use anchorage::address::Address;
use anchorage::anchor::{AnchorError, AnchorList, EtcdService, ServiceError};
use anchorage::channel::Channel;
use anchorage::target::{BUILTIN_SCHEMES, PASS_ALIASES, Target, TargetError};
use serde_json::{Value, json};

/// The exit code for a target that does not parse.
const BAD_INPUT: u8 = 2;

/// Arguments of `anchorage target`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The target string, e.g. `pass:///10.0.0.1:9080#2,10.0.0.2:9090`.
    target: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    // The channel's own checks first, so this command says exactly what `Channel::build` would.
    if let Err(err) = Channel::builder(args.target.as_str()).validate() {
        eprintln!("anchorage target: {err}");
        return ExitCode::from(BAD_INPUT);
    }
    match Inspection::of(&args.target) {
        Ok(inspection) => {
            if args.json {
                println!("{}", inspection.to_json());
            } else {
                print!("{}", inspection.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("anchorage target: {err}");
            ExitCode::from(BAD_INPUT)
        }
    }
}

/// Why a target is rejected: the target itself, or the grammar of its resolver's endpoint.
#[derive(Debug, thiserror::Error)]
enum InspectError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What the endpoint means to the resolver that takes it.
#[derive(Debug)]
enum Endpoint {
    /// A resolver whose endpoint grammar this command does not check further.
    Opaque,
    /// A `pass` anchor list.
    Pass(AnchorList),
    /// An `etcd` service name.
    Etcd(EtcdService),
}

/// A parsed target and its parsed endpoint.
#[derive(Debug)]
struct Inspection {
    target: Target,
    endpoint: Endpoint,
}

impl Inspection {
    fn of(input: &str) -> Result<Self, InspectError> {
        let target = Target::parse(input, |scheme| BUILTIN_SCHEMES.contains(&scheme))?;
        let endpoint = match resolver_of(target.scheme()) {
            "pass" => Endpoint::Pass(target.endpoint().parse()?),
            "etcd" => Endpoint::Etcd(target.endpoint().parse()?),
            _ => Endpoint::Opaque,
        };
        Ok(Inspection { target, endpoint })
    }

    fn to_json(&self) -> Value {
        let t = &self.target;
        let mut object = json!({
            "scheme": t.scheme(),
            "authority": t.authority(),
            "endpoint": t.endpoint(),
            "resolver": resolver_of(t.scheme()),
            "fallback": t.is_fallback(),
        });
        match &self.endpoint {
            Endpoint::Opaque => {}
            Endpoint::Pass(list) => {
                let addresses: Vec<Value> = list.expand().iter().map(address_json).collect();
                object["addresses"] = Value::Array(addresses);
            }
            Endpoint::Etcd(service) => {
                object["service"] = json!(service.name());
                object["connections_per_address"] = json!(service.connections());
            }
        }
        object
    }

    fn to_text(&self) -> String {
        let t = &self.target;
        let shown = |s: &str| if s.is_empty() { "(empty)".to_owned() } else { s.to_owned() };
        let mut out = format!(
            "target:    {t}\nscheme:    {}\nauthority: {}\nendpoint:  {}\nresolver:  {}",
            t.scheme(),
            shown(t.authority()),
            t.endpoint(),
            resolver_of(t.scheme()),
        );
        if resolver_of(t.scheme()) != t.scheme() {
            out.push_str(&format!(" ({} is an alias of {})", t.scheme(), resolver_of(t.scheme())));
        }
        if t.is_fallback() {
            out.push_str(" (no registered scheme: the whole target goes to passthrough)");
        }
        out.push('\n');
        match &self.endpoint {
            Endpoint::Opaque => {}
            Endpoint::Pass(list) => {
                let (connections, addresses) = (list.total_connections(), list.items().len());
                out.push_str(&format!(
                    "addresses: {} to {}\n",
                    counted(connections, "connection"),
                    counted(addresses, "address")
                ));
                for address in list.expand() {
                    let idx = address.connection_index().unwrap_or_default();
                    out.push_str(&format!("  {} idx={idx}\n", address.addr));
                }
            }
            Endpoint::Etcd(service) => {
                out.push_str(&format!(
                    "service:   {}\nconnections per address: {}\n",
                    service.name(),
                    service.connections()
                ));
            }
        }
        out
    }
}

/// The resolver that serves `scheme`: `pass` for its aliases, else the scheme itself.
fn resolver_of(scheme: &str) -> &str {
    if PASS_ALIASES.contains(&scheme) { "pass" } else { scheme }
}

fn address_json(address: &Address) -> Value {
    json!({ "addr": address.addr, "idx": address.connection_index() })
}

/// `n` and `noun`, in the plural unless `n` is 1: "1 connection", "2 addresses".
fn counted(n: usize, noun: &str) -> String {
    match (n, noun.ends_with('s')) {
        (1, _) => format!("1 {noun}"),
        (_, true) => format!("{n} {noun}es"),
        (_, false) => format!("{n} {noun}s"),
    }
}
