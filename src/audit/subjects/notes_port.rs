//! A faithful port of the original notes' Go `pass` resolver (`ParseAnchorAddress` and
//! `passAnchorResolver`), kept as a **model** for the audit to catch. Do not use it.
//!
//! The Go code splits the endpoint on `,`, and for each item cuts at the first `#` when that
//! `#` is not the first byte, parsing the rest with `strconv.Atoi` and ignoring its error. Its
//! `addr` and `anch` variables live outside the loop, so:
//!
//! - an item without `#N` inherits the previous item's count (`a:1#2,b:1` gives b two
//!   connections);
//! - `#0`, `#abc` and `#-3` silently become 1 (`Atoi` fails or the count is below 1);
//! - `#2` (no address) becomes the address `"#2"`; an empty item becomes the address `""`;
//!   nothing is ever rejected.
//!
//! Each item is expanded into `anch` addresses tagged `idx = 0..anch`, as the Go code does with
//! `attributes.New("idx", i)`. An address with an empty host (`:9080`) is given as
//! `localhost:9080`, which is where Go's dialer connects it.

use crate::address::Address;
use crate::resolver::{
    Resolver, ResolverBuilder, ResolverError, ResolverState, StaticResolver, UpdateSink,
};
use crate::target::Target;

/// The Go resolver's builder, registered under `scheme`.
#[derive(Debug, Clone)]
pub struct NotesPassBuilder {
    scheme: String,
}

impl NotesPassBuilder {
    /// The port, serving `scheme` (the notes use `pass`).
    pub fn new(scheme: impl Into<String>) -> Self {
        Self { scheme: scheme.into() }
    }
}

/// `ParseAnchorAddress`, line for line: (address, count) per item.
pub fn parse_anchor_address(endpoint: &str) -> Vec<(String, i64)> {
    // `anch` outlives the loop body as in the Go code (that is the carry-over bug); `addr` is
    // assigned on every path, so it never carries over.
    let mut anch = 0_i64;
    let mut out = Vec::new();
    for val in endpoint.split(',') {
        let addr = match val.find('#') {
            Some(idx) if idx > 0 => {
                // strconv.Atoi: decimal with an optional sign; on error it returns 0.
                anch = val[idx + 1..].parse::<i64>().unwrap_or(0);
                val[..idx].to_owned()
            }
            _ => val.to_owned(),
        };
        if anch < 1 {
            anch = 1;
        }
        out.push((addr, anch));
    }
    out
}

impl ResolverBuilder for NotesPassBuilder {
    fn scheme(&self) -> &str {
        &self.scheme
    }

    fn build(
        &self,
        target: &Target,
        updates: UpdateSink,
    ) -> Result<Box<dyn Resolver>, ResolverError> {
        let mut addresses = Vec::new();
        for (addr, anch) in parse_anchor_address(target.endpoint()) {
            // Go's dialer reads an empty host as the local host (`:9080` dials localhost:9080);
            // our connectors do not, so the port spells out what Go's dial would do.
            let addr = if addr.starts_with(':') { format!("localhost{addr}") } else { addr };
            // The Go loop runs `anch` times; bound it so a huge count cannot exhaust memory here.
            let anch = u32::try_from(anch.min(1024)).unwrap_or(1);
            addresses
                .extend((0..anch).map(|i| Address::new(addr.clone()).with_connection_index(i)));
        }
        updates.update(ResolverState::from_addresses(addresses));
        Ok(Box::new(StaticResolver))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_keeps_the_go_bugs() {
        let got = parse_anchor_address("a:1#2,b:1,c:1#0,d:1#abc,#2,");
        let want = [("a:1", 2), ("b:1", 2), ("c:1", 1), ("d:1", 1), ("#2", 1), ("", 1)];
        let want: Vec<(String, i64)> = want.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect();
        assert_eq!(got, want, "the port must reproduce ParseAnchorAddress exactly");
    }
}
