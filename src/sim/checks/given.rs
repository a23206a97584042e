//! A hand-built [`Observed`] for the properties' unit tests: a scenario from TOML text (its
//! `[expect]` and faults), then the RPCs the client saw and the connections the servers
//! recorded, added one call at a time. Faults count as applied at their `at_ms`.

use std::time::Duration;

use super::super::client::{ClientLog, Outcome, RpcRecord};
use super::super::faults::{Applied, schedule};
use super::super::scenario::Scenario;
use super::{ConnectionObs, Ending, Observed, ServerObs};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Servers `a` (host `a`, port 1) and `b` (host `b`, port 1) behind `pass:///a:1,b:1`; the
/// tests append their own tables.
const BASE: &str = r#"
[[server]]
name = "a"
port = 1
[[server]]
name = "b"
port = 1
[client]
target = "pass:///a:1,b:1"
"#;

/// The makings of an [`Observed`].
#[derive(Debug)]
pub(super) struct Given {
    scenario: Scenario,
    log: ClientLog,
    servers: Vec<ServerObs>,
    ending: Ending,
}

impl Given {
    /// The two-server scenario with `toml` appended (`[workload]`, `[expect]`, `[[fault]]`…).
    pub(super) fn scenario(toml: &str) -> Self {
        Self::whole(&format!("{BASE}\n{toml}"))
    }

    /// The scenario `toml`, whole.
    pub(super) fn whole(toml: &str) -> Self {
        let scenario = Scenario::parse("given.toml", toml)
            .unwrap_or_else(|e| panic!("the test scenario must load: {e}"));
        let servers = scenario
            .server_list()
            .into_iter()
            .map(|s| ServerObs { name: s.name, host: s.host, connections: Vec::new() })
            .collect();
        Self { scenario, log: ClientLog::default(), servers, ending: Ending::Finished }
    }

    /// An RPC from `start` to `end` (ms) answered by `server`.
    pub(super) fn ok(self, start: u64, end: u64, server: &str) -> Self {
        let outcome = Outcome::Ok {
            server: server.to_owned(),
            connection: 0,
            subchannel: 0,
            address: format!("{server}:1"),
        };
        self.rpc(start, end, outcome)
    }

    /// An RPC from `start` to `end` (ms) that failed with `code`.
    pub(super) fn failed(self, start: u64, end: u64, code: &str) -> Self {
        let outcome = Outcome::Failed { code: code.to_owned(), message: "lost".to_owned() };
        self.rpc(start, end, outcome)
    }

    /// `n` RPCs to `server`, one every 10 ms from `from` (each taking 2 ms).
    pub(super) fn oks(mut self, from: u64, n: u64, server: &str) -> Self {
        for i in 0..n {
            self = self.ok(from + 10 * i, from + 10 * i + 2, server);
        }
        self
    }

    fn rpc(mut self, start: u64, end: u64, outcome: Outcome) -> Self {
        let index = self.log.rpcs.len() as u32;
        let deadline = ms(self.scenario.workload.deadline_ms);
        self.log.rpcs.push(RpcRecord { index, start: ms(start), end: ms(end), deadline, outcome });
        self
    }

    /// A connection `server` accepted at `opened` (ms), closed at `closed`, carrying `rpcs`.
    pub(super) fn connection(
        mut self,
        server: &str,
        opened: u64,
        closed: Option<u64>,
        rpcs: u64,
    ) -> Self {
        let obs = self.servers.iter_mut().find(|s| s.name == server).expect("a known server");
        let label = format!("{server}#c{}", obs.connections.len());
        obs.connections.push(ConnectionObs {
            label,
            rpcs,
            opened: ms(opened),
            closed: closed.map(ms),
        });
        self
    }

    /// Changes the client's log (subchannels, resolutions, final state, …).
    pub(super) fn log(mut self, change: impl FnOnce(&mut ClientLog)) -> Self {
        change(&mut self.log);
        self
    }

    /// The run hit its time limit.
    pub(super) fn timed_out(mut self) -> Self {
        self.ending = Ending::TimedOut;
        self
    }

    /// The run as the properties see it; it ends when the last RPC does. The client's log
    /// moves into it, so call this once.
    pub(super) fn observed(&mut self) -> Observed<'_> {
        let applied = schedule(&self.scenario.faults)
            .into_iter()
            .map(|fault| Applied { at: ms(fault.at_ms), fault })
            .collect();
        let end = self.log.rpcs.iter().map(|r| r.end).max().unwrap_or_default();
        Observed {
            scenario: &self.scenario,
            log: std::mem::take(&mut self.log),
            servers: self.servers.clone(),
            applied,
            skipped: Vec::new(),
            ending: self.ending.clone(),
            end,
        }
    }
}
