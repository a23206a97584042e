//! The shared record of one instrumented server: accepted connections and the RPCs each served.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tonic::transport::server::Connected;

use crate::pb;

/// Who one accepted connection is: the server-assigned id and the peer's address.
///
/// Every connection served through [`ServerRecorder::accept`] carries one; tonic puts it into the
/// extensions of each request read from that connection, which is how a handler learns which
/// connection serves it ([`ConnectionInfo::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionInfo {
    /// Assigned 0, 1, 2, … in accept order, per server.
    pub id: u64,
    /// The remote address of the connection.
    pub peer: SocketAddr,
}

impl ConnectionInfo {
    /// The connection that carried `request`, if it was served through a [`ServerRecorder`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Self> {
        request.extensions().get::<Self>().copied()
    }
}

/// Per-connection detail ([`ServerStats::connections`]) is kept for at most this many
/// connections: open ones first, then the most recently accepted closed ones. The counts in
/// [`ServerStats`] stay exact; [`ServerStats::connections_dropped`] says how many connections'
/// detail was let go. This bounds the memory of a long-running server and keeps the `Stats`
/// reply far below gRPC's 4 MiB default message limit (about 250 KB at this bound). It is at
/// least the 4,096 connections a simulated scenario may open to one server, so the simulation's
/// checks always see every connection.
pub const MAX_CONNECTION_DETAIL: usize = 4_096;

/// Method paths counted under their own name, per server: the first this many distinct paths
/// seen. RPCs of any later path, or of a path longer than [`MAX_METHOD_PATH_LEN`], are counted
/// under [`OTHER_METHODS`].
pub const MAX_METHOD_PATHS: usize = 100;

/// The longest method path counted under its own name, in bytes.
pub const MAX_METHOD_PATH_LEN: usize = 256;

/// The key under which RPCs of method paths beyond [`MAX_METHOD_PATHS`] are counted (a real
/// path always starts with `/`, so it never collides).
pub const OTHER_METHODS: &str = "(other)";

/// A cloneable handle on what one server has recorded.
///
/// The server, its handlers, tests and the CLI all hold clones; reads ([`stats`](Self::stats))
/// may happen while the server runs or after it stopped.
///
/// # Determinism
/// Connection ids are handed out in the order [`accept`](Self::accept) is called, which the
/// serving loop does in accept order, and everything is kept in ordered maps, so a snapshot
/// depends only on the sequence of events, never on hashing. Times are measured with
/// [`tokio::time::Instant`] from the moment the recorder was created, so under a simulated
/// clock they are simulated times: create the recorder on the runtime that serves.
#[derive(Debug, Clone)]
pub struct ServerRecorder {
    name: Arc<str>,
    started: Instant,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    closed: u64,
    rpcs: u64,
    /// Connections whose record was evicted to respect [`MAX_CONNECTION_DETAIL`].
    dropped: u64,
    /// The method paths counted under their own name (at most [`MAX_METHOD_PATHS`]).
    methods: BTreeSet<Arc<str>>,
    /// The kept records, at most [`MAX_CONNECTION_DETAIL`].
    connections: BTreeMap<u64, ConnectionRecord>,
    /// The ids of kept records that are closed: evicted first, oldest first.
    closed_ids: BTreeSet<u64>,
}

impl State {
    /// Makes room for one more record: evicts the oldest closed record, or the oldest record
    /// when all are open.
    fn make_room(&mut self) {
        while self.connections.len() >= MAX_CONNECTION_DETAIL {
            let oldest = match self.closed_ids.pop_first() {
                Some(id) => Some(id),
                None => self.connections.first_key_value().map(|(&id, _)| id),
            };
            let Some(id) = oldest else { return };
            self.connections.remove(&id);
            self.dropped += 1;
        }
    }

    /// The key `method` is counted under: its own name while the table has room.
    fn method_key(&mut self, method: &str) -> Arc<str> {
        if let Some(known) = self.methods.get(method) {
            return known.clone();
        }
        if self.methods.len() >= MAX_METHOD_PATHS || method.len() > MAX_METHOD_PATH_LEN {
            return Arc::from(OTHER_METHODS);
        }
        let key: Arc<str> = Arc::from(method);
        self.methods.insert(key.clone());
        key
    }
}

#[derive(Debug)]
struct ConnectionRecord {
    peer: SocketAddr,
    accepted_at: Duration,
    closed_at: Option<Duration>,
    /// RPCs served on this connection, by method path (bounded by [`MAX_METHOD_PATHS`] + 1).
    methods: BTreeMap<Arc<str>, u64>,
}

impl ServerRecorder {
    /// A recorder for the server called `name`; time zero of its timestamps is now.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: Arc::from(name.into()), started: Instant::now(), state: Arc::default() }
    }

    /// The server's name, as echoed in every response.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records a newly accepted connection and wraps its stream so that tonic attaches its
    /// [`ConnectionInfo`] to every request, and the connection is recorded closed when the
    /// stream is dropped.
    ///
    /// # Contract
    /// Called by the serving loop once per accepted connection, in accept order; the id it
    /// assigns is one more than the previous call's.
    pub fn accept<Io>(&self, io: Io, peer: SocketAddr) -> RecordedIo<Io> {
        let accepted_at = self.started.elapsed();
        let id = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            state.make_room();
            let record =
                ConnectionRecord { peer, accepted_at, closed_at: None, methods: BTreeMap::new() };
            state.connections.insert(id, record);
            id
        };
        tracing::debug!(server = %self.name, id, %peer, "connection accepted");
        RecordedIo { io, info: ConnectionInfo { id, peer }, recorder: self.clone() }
    }

    /// Counts one RPC of `method` (a path such as `/anchorage.echo.v1.Echo/Echo`) as served
    /// on connection `id`. The total always counts it; the connection's detail does when it
    /// is still kept (see [`MAX_CONNECTION_DETAIL`]). An id never assigned is ignored: it cannot
    /// come from [`accept`](Self::accept).
    pub fn record_rpc(&self, id: u64, method: &str) {
        let mut state = self.lock();
        if id >= state.next_id {
            tracing::warn!(server = %self.name, id, "RPC on an unknown connection");
            return;
        }
        state.rpcs += 1;
        if !state.connections.contains_key(&id) {
            return;
        }
        let key = state.method_key(method);
        if let Some(record) = state.connections.get_mut(&id) {
            *record.methods.entry(key).or_default() += 1;
        }
    }

    /// A snapshot of everything recorded so far: exact counts, and the kept connections (see
    /// [`MAX_CONNECTION_DETAIL`]) in id order.
    pub fn stats(&self) -> ServerStats {
        let state = self.lock();
        let connections: Vec<ConnectionStats> = state
            .connections
            .iter()
            .map(|(&id, record)| ConnectionStats {
                id,
                peer: record.peer,
                accepted_at_ms: millis(record.accepted_at),
                closed_at_ms: record.closed_at.map(millis),
                rpcs: record.methods.values().sum(),
                methods: record.methods.iter().map(|(m, &n)| (m.to_string(), n)).collect(),
            })
            .collect();
        ServerStats {
            server: self.name.to_string(),
            connections_accepted: state.next_id,
            connections_closed: state.closed,
            rpcs: state.rpcs,
            connections_dropped: state.dropped,
            connections,
        }
    }

    fn closed(&self, id: u64) {
        let closed_at = self.started.elapsed();
        let mut state = self.lock();
        let newly_closed = match state.connections.get_mut(&id) {
            Some(record) if record.closed_at.is_none() => {
                record.closed_at = Some(closed_at);
                true
            }
            Some(_) => false,
            // Evicted while open: this is its only close.
            None => true,
        };
        if newly_closed {
            state.closed += 1;
            if state.connections.contains_key(&id) {
                state.closed_ids.insert(id);
            }
        }
        drop(state);
        tracing::debug!(server = %self.name, id, "connection closed");
    }

    /// A panic elsewhere while holding the lock leaves counters that are still meaningful, so
    /// a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What a server has recorded: the payload of the `Stats` RPC and of the JSON dump.
///
/// Serialises as
/// `{"server":"a","connections_accepted":2,"connections_closed":0,"rpcs":15,"connections":[..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// The server's name.
    pub server: String,
    /// Connections accepted since the server started.
    pub connections_accepted: u64,
    /// Of those, the connections whose stream has been dropped.
    pub connections_closed: u64,
    /// RPCs served, over all connections.
    pub rpcs: u64,
    /// Accepted connections left out of `connections` (see [`MAX_CONNECTION_DETAIL`]).
    #[serde(default)]
    pub connections_dropped: u64,
    /// The accepted connections whose detail is kept (all of them until
    /// [`MAX_CONNECTION_DETAIL`] is reached), in id order.
    pub connections: Vec<ConnectionStats>,
}

/// One accepted connection in [`ServerStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionStats {
    /// The connection id (0, 1, 2, … in accept order).
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Milliseconds from the server's start to the accept.
    pub accepted_at_ms: u64,
    /// Milliseconds from the server's start to the close; `None` while open.
    pub closed_at_ms: Option<u64>,
    /// RPCs served on this connection.
    pub rpcs: u64,
    /// RPCs served on this connection by method path, in path order; paths beyond
    /// [`MAX_METHOD_PATHS`] are counted under [`OTHER_METHODS`].
    pub methods: BTreeMap<String, u64>,
}

impl ServerStats {
    /// The stats as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs, strings, integers and string-keyed maps cannot fail.
        serde_json::to_string(self).expect("server stats always serialise to JSON")
    }
}

impl From<&ServerStats> for pb::StatsResponse {
    fn from(stats: &ServerStats) -> Self {
        Self {
            server: stats.server.clone(),
            connections_accepted: stats.connections_accepted,
            connections_closed: stats.connections_closed,
            rpcs: stats.rpcs,
            connections_dropped: stats.connections_dropped,
            connections: stats
                .connections
                .iter()
                .map(|c| pb::ConnectionStats {
                    id: c.id,
                    peer: c.peer.to_string(),
                    accepted_at_ms: c.accepted_at_ms,
                    rpcs: c.rpcs,
                    closed_at_ms: c.closed_at_ms,
                })
                .collect(),
        }
    }
}

/// An accepted stream tagged with its [`ConnectionInfo`]; made by [`ServerRecorder::accept`].
///
/// Reads and writes go straight to the inner stream. Dropping it records the connection closed.
#[derive(Debug)]
pub struct RecordedIo<Io> {
    io: Io,
    info: ConnectionInfo,
    recorder: ServerRecorder,
}

impl<Io> RecordedIo<Io> {
    /// The id and peer of this connection.
    pub fn info(&self) -> ConnectionInfo {
        self.info
    }
}

impl<Io> Drop for RecordedIo<Io> {
    fn drop(&mut self) {
        self.recorder.closed(self.info.id);
    }
}

impl<Io> Connected for RecordedIo<Io> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for RecordedIo<Io> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for RecordedIo<Io> {
    crate::io::forward_async_write!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn ids_count_from_zero_in_accept_order() {
        let recorder = ServerRecorder::new("a");
        let ids: Vec<u64> = (0..3).map(|p| recorder.accept((), peer(5000 + p)).info().id).collect();
        assert_eq!(ids, [0, 1, 2], "connection ids must be 0, 1, 2 in accept order");
    }

    #[test]
    fn rpcs_are_counted_per_connection_and_method() {
        let recorder = ServerRecorder::new("a");
        let first = recorder.accept((), peer(5000));
        let second = recorder.accept((), peer(5001));
        for _ in 0..3 {
            recorder.record_rpc(first.info().id, "/x.S/A");
        }
        recorder.record_rpc(first.info().id, "/x.S/B");
        recorder.record_rpc(second.info().id, "/x.S/A");

        let stats = recorder.stats();
        assert_eq!(stats.rpcs, 5);
        assert_eq!(stats.connections[0].rpcs, 4);
        assert_eq!(stats.connections[0].methods["/x.S/A"], 3);
        assert_eq!(stats.connections[0].methods["/x.S/B"], 1);
        assert_eq!(stats.connections[1].rpcs, 1);
    }

    #[test]
    fn dropping_the_stream_records_the_connection_closed() {
        let recorder = ServerRecorder::new("a");
        let first = recorder.accept((), peer(5000));
        let _second = recorder.accept((), peer(5001));
        drop(first);

        let stats = recorder.stats();
        assert_eq!(stats.connections_accepted, 2);
        assert_eq!(stats.connections_closed, 1, "a dropped stream must count as closed");
        assert!(stats.connections[0].closed_at_ms.is_some());
        assert_eq!(stats.connections[1].closed_at_ms, None, "an open stream must not count");
    }

    #[test]
    fn stats_round_trip_through_json() {
        let recorder = ServerRecorder::new("a");
        let conn = recorder.accept((), peer(5555));
        recorder.record_rpc(conn.info().id, "/x.S/A");

        let stats = recorder.stats();
        let json = stats.to_json();
        assert!(json.contains(r#""peer":"127.0.0.1:5555""#), "peer must be an address string");
        let back: ServerStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back, stats);
    }
}

#[cfg(test)]
mod bounds {
    use super::*;
    use prost::Message as _;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Regression: every connection ever accepted was kept, so after ~150,000 connections the
    /// `Stats` reply passed tonic's 4 MiB decoding limit and could not be read at all.
    #[test]
    fn stats_keep_detail_for_the_most_recent_connections_only_and_counts_stay_exact() {
        let recorder = ServerRecorder::new("a");
        for i in 0..150_000u64 {
            let conn = recorder.accept((), peer(1 + (i % 60_000) as u16));
            recorder.record_rpc(conn.info().id, "/x.S/A");
        }
        let open = recorder.accept((), peer(7));
        recorder.record_rpc(open.info().id, "/x.S/A");

        let stats = recorder.stats();
        assert_eq!(stats.connections_accepted, 150_001, "accepted must count every connection");
        assert_eq!(stats.connections_closed, 150_000, "closed must count every close");
        assert_eq!(stats.rpcs, 150_001, "rpcs must count every RPC");
        assert_eq!(stats.connections.len(), MAX_CONNECTION_DETAIL, "detail must be bounded");
        assert_eq!(stats.connections_dropped, 150_001 - MAX_CONNECTION_DETAIL as u64);
        let first = stats.connections.first().expect("kept detail");
        assert_eq!(first.id, 150_001 - MAX_CONNECTION_DETAIL as u64, "the most recent are kept");
        let last = stats.connections.last().expect("the most recent connection is kept");
        assert_eq!(last.id, 150_000, "the most recent connection must be kept");
        let reply = pb::StatsResponse::from(&stats).encoded_len();
        assert!(reply < 1024 * 1024, "the Stats reply must stay far below 4 MiB, got {reply}");
    }

    #[test]
    fn open_connections_keep_their_detail_before_closed_ones() {
        let recorder = ServerRecorder::new("a");
        let oldest_open = recorder.accept((), peer(1));
        for i in 0..MAX_CONNECTION_DETAIL as u16 + 10 {
            drop(recorder.accept((), peer(2 + i)));
        }
        let stats = recorder.stats();
        assert_eq!(stats.connections[0].id, oldest_open.info().id, "open detail must be kept");
        assert_eq!(stats.connections.len(), MAX_CONNECTION_DETAIL);
        assert_eq!(stats.connections_closed, MAX_CONNECTION_DETAIL as u64 + 10);
        drop(oldest_open);
        assert_eq!(recorder.stats().connections_closed, MAX_CONNECTION_DETAIL as u64 + 11);
    }

    /// Regression: 20,000 distinct method paths on one connection added 33 MB to the record.
    #[test]
    fn distinct_method_paths_beyond_the_limit_are_counted_together() {
        let recorder = ServerRecorder::new("a");
        let conn = recorder.accept((), peer(5000));
        for i in 0..20_000 {
            recorder.record_rpc(conn.info().id, &format!("/x.S/M{i}"));
        }
        let stats = recorder.stats();
        let methods = &stats.connections[0].methods;
        assert_eq!(methods.len(), MAX_METHOD_PATHS + 1, "named method paths must be bounded");
        assert_eq!(methods[OTHER_METHODS], 20_000 - MAX_METHOD_PATHS as u64);
        assert_eq!(methods.values().sum::<u64>(), 20_000, "every RPC must still be counted");
        assert_eq!(stats.connections[0].rpcs, 20_000);
    }
}
