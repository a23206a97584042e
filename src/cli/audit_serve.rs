//! `anchorage audit-serve --servers a=127.0.0.1:9080,b=127.0.0.1:9090 --expect a=2,b=1 --for 30s`:
//! instrumented servers for auditing any client, then a verdict.
//!
//! Output contract (stdout): one line `listening <name>=<bound address>` per server, flushed
//! at once, in the order given; when the time is up or on Ctrl-C/SIGTERM, the handshake log
//! (every accepted connection per server) with per-connection RPC counts, then the verdict.
//! `--json` replaces everything after the listening lines by one JSON object. Exit status 0
//! when every expectation holds, 1 when one does not, 2 for bad arguments or a failed bind.
//!
//! With `--tls-cert FILE --tls-key FILE [--client-ca FILE]` every server speaks TLS (mTLS with
//! `--client-ca`), for auditing TLS clients; the handshake log then also counts each server's
//! TLS handshakes, completed and failed (`--json`: `tls_handshakes` per server).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anchorage::audit::clients::{ClientAudit, judge};
use anchorage::server::{
    InstrumentedServer, ServerRecorder, ServerStats, TlsHandshakes, TlsListener,
};
use anchorage::tls::ServerTlsConfig;
use tokio::net::TcpListener;

use super::common::{TlsServerArgs, init_tracing, parse_duration, print_line, stop_signal};

/// Arguments of `anchorage audit-serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Servers to run, `name=address` separated by commas (port 0 picks a free port).
    #[arg(long, value_parser = parse_servers)]
    servers: Servers,
    /// Expected connections per server, `name=N` separated by commas.
    #[arg(long, value_parser = parse_expect)]
    expect: Expect,
    /// How long to serve: seconds (`30`) or with a unit (`30s`, `500ms`, `2m`).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    run_for: Duration,
    /// Largest allowed difference between a server's share of RPCs and its share of the
    /// expected connections, as a fraction.
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
    /// Allow non-loopback listen addresses.
    #[arg(long)]
    allow_remote: bool,
    /// Print the log and verdict as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsServerArgs,
}

#[derive(Debug, Clone)]
struct Servers(Vec<(String, SocketAddr)>);

#[derive(Debug, Clone)]
struct Expect(BTreeMap<String, u32>);

/// Splits `a=x,b=y` into pairs, rejecting empty or repeated names.
fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for (i, item) in text.split(',').enumerate() {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("item {} ({item:?}): expected name=value", i + 1))?;
        if name.is_empty() || value.is_empty() {
            return Err(format!("item {} ({item:?}): empty name or value", i + 1));
        }
        if seen.insert(name.to_owned(), ()).is_some() {
            return Err(format!("item {} ({item:?}): {name:?} appears twice", i + 1));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

fn parse_servers(text: &str) -> Result<Servers, String> {
    let parsed = pairs(text)?
        .into_iter()
        .map(|(name, addr)| {
            let addr = addr
                .parse()
                .map_err(|_| format!("server {name}: {addr:?} is not an ip:port address"))?;
            Ok((name, addr))
        })
        .collect::<Result<_, String>>()?;
    Ok(Servers(parsed))
}

fn parse_expect(text: &str) -> Result<Expect, String> {
    let parsed = pairs(text)?
        .into_iter()
        .map(|(name, n)| {
            let n = n.parse().map_err(|_| format!("expect {name}: {n:?} is not a whole number"))?;
            Ok((name, n))
        })
        .collect::<Result<_, String>>()?;
    Ok(Expect(parsed))
}

pub(crate) fn run(args: Args) -> ExitCode {
    let tls = match validate(&args).and_then(|()| args.tls.config()) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("audit-serve: {message}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("audit-serve: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(audit(&args, tls.as_ref())) {
        Ok(audit) if audit.pass => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("audit-serve: {message}");
            ExitCode::from(2)
        }
    }
}

fn validate(args: &Args) -> Result<(), String> {
    for (name, addr) in &args.servers.0 {
        if !addr.ip().is_loopback() && !args.allow_remote {
            return Err(format!(
                "server {name}: refusing to listen on {addr}: not a loopback address; pass --allow-remote"
            ));
        }
    }
    for name in args.expect.0.keys() {
        if !args.servers.0.iter().any(|(server, _)| server == name) {
            return Err(format!("--expect names {name:?}, which is not in --servers"));
        }
    }
    if !(0.0..=1.0).contains(&args.tolerance) {
        return Err("--tolerance must be between 0 and 1".into());
    }
    Ok(())
}

async fn audit(args: &Args, tls: Option<&ServerTlsConfig>) -> Result<ClientAudit, String> {
    let stop = stop_signal(Some(args.run_for)).map_err(|e| format!("cannot watch signals: {e}"))?;
    let mut listeners = Vec::new();
    for (name, addr) in &args.servers.0 {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("server {name}: cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| format!("server {name}: {e}"))?;
        listeners.push((name.clone(), listener, bound));
    }
    for (name, _, bound) in &listeners {
        print_line(&format!("listening {name}={bound}"))?;
    }
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    let mut handshakes = Vec::new();
    for (name, listener, _) in listeners {
        let server = InstrumentedServer::new(ServerRecorder::new(name))
            .drain_timeout(Some(Duration::from_secs(2)));
        let mut stopped = stop_tx.subscribe();
        let stopped = async move {
            let _ = stopped.recv().await;
        };
        tasks.push(match tls {
            None => tokio::spawn(server.serve(listener, stopped)),
            Some(tls) => {
                let listener =
                    TlsListener::new(listener, tls).map_err(|e| format!("--tls-cert: {e}"))?;
                handshakes.push(listener.handshakes());
                tokio::spawn(server.serve(listener, stopped))
            }
        });
    }
    stop.await;
    let _ = stop_tx.send(());
    let mut stats: Vec<ServerStats> = Vec::new();
    for task in tasks {
        stats.push(task.await.map_err(|e| format!("a server task failed: {e}"))?);
    }
    let audit = judge(&stats, &args.expect.0, args.tolerance);
    if args.json {
        let mut servers = serde_json::to_value(&stats).map_err(|e| format!("stats: {e}"))?;
        if let Some(servers) = servers.as_array_mut() {
            for (server, counts) in servers.iter_mut().zip(&handshakes) {
                server["tls_handshakes"] = serde_json::json!({
                    "completed": counts.completed(),
                    "failed": counts.failed(),
                });
            }
        }
        let report = serde_json::json!({ "servers": servers, "verdict": audit });
        print_line(&report.to_string())?;
    } else {
        print_line(&handshake_log(&stats, &handshakes))?;
        print_line(&audit.to_string())?;
    }
    Ok(audit)
}

/// Every accepted connection per server, in accept order, with its RPCs per method; with TLS,
/// each server's handshake counts (`handshakes` is empty without TLS, else one per server).
fn handshake_log(stats: &[ServerStats], handshakes: &[TlsHandshakes]) -> String {
    let mut lines = Vec::new();
    for (i, server) in stats.iter().enumerate() {
        let tls = handshakes.get(i).map_or(String::new(), |h| {
            format!(", {} TLS handshake(s) completed, {} failed", h.completed(), h.failed())
        });
        lines.push(format!(
            "server {}: {} connection(s){tls}",
            server.server, server.connections_accepted
        ));
        for c in &server.connections {
            let closed = c.closed_at_ms.map_or("open".to_owned(), |t| format!("closed at {t} ms"));
            let methods: Vec<String> = c.methods.iter().map(|(m, n)| format!("{m} ×{n}")).collect();
            lines.push(format!(
                "  #{} from {} accepted at {} ms, {closed}: {} RPC(s) {}",
                c.id,
                c.peer,
                c.accepted_at_ms,
                c.rpcs,
                methods.join(", ")
            ));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_expectation_lists_reject_malformed_items_by_position() {
        assert!(parse_servers("a=127.0.0.1:1,b=127.0.0.1:2").is_ok());
        assert_eq!(
            parse_servers("a=127.0.0.1:1,b").unwrap_err(),
            r#"item 2 ("b"): expected name=value"#
        );
        assert!(
            parse_servers("a=127.0.0.1:1,a=127.0.0.1:2").unwrap_err().contains("appears twice")
        );
        assert!(parse_servers("a=localhost").unwrap_err().contains("not an ip:port"));
        assert!(parse_expect("a=x").unwrap_err().contains("not a whole number"));
        assert!(parse_expect("=2").unwrap_err().contains("empty name"));
    }
}
