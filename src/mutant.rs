//! Deliberate defects that the simulation's checks must catch (`anchorage mutants`).
//!
//! A [`Mutant`] switches on one known-wrong behaviour in the real channel, at exactly the line
//! where that defect would live: the policy, the `pass` resolver's expansion, address dedup or
//! the call path. The harness runs the scenarios in `sims/` against each mutant to prove that
//! its checks can fail (`sim::mutants`, with the `sim` feature). A channel gets a mutant only through the
//! hidden `ChannelBuilder::mutant`, which nothing outside the simulation calls; with none set
//! the channel behaves exactly as without this module.

use std::fmt;
use std::str::FromStr;

/// One deliberate defect in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutant {
    /// `round_robin` keys its subchannels by the address without its connection index, so a
    /// `#N` target opens one subchannel per `host:port` instead of N.
    RoundRobinIgnoresCount,
    /// `round_robin`'s picker sends every RPC to the first READY subchannel instead of cycling.
    RoundRobinAlwaysFirst,
    /// `pick_first` keeps only the first address of every list, so it never fails over to the
    /// others when that one fails.
    PickFirstNeverFailsOver,
    /// The old liveness bug: a resolver update that arrives while a subchannel backs off in
    /// TRANSIENT_FAILURE makes `pick_first` publish CONNECTING and wait on the first
    /// subchannel without asking it to connect, so the channel stays CONNECTING for good.
    PickFirstStallsAfterUpdateInBackoff,
    /// The `pass` resolver gives an item without `#N` the count of the item before it
    /// (`a:1#2,b:1` opens two connections to b), as the original notes' Go code does.
    CountCarriesOver,
    /// Address dedup compares `host:port` only and ignores attributes, so the `#N` copies of an
    /// address (and the same address with other attributes) collapse into one.
    DedupByHostPortOnly,
    /// With a retry policy, the first RPC that fails on a connection lost at one instant is
    /// failed instead of retried: one RPC lost per lost connection.
    DropOneRpcPerCrash,
    /// The deadline stops applying once response headers arrive: a response whose body or
    /// trailers never come waits until the connection dies.
    DeadlineIgnoredAfterHeaders,
}

impl Mutant {
    /// Every mutant, in a fixed order (the matrix's rows).
    pub const ALL: [Mutant; 8] = [
        Mutant::RoundRobinIgnoresCount,
        Mutant::RoundRobinAlwaysFirst,
        Mutant::PickFirstNeverFailsOver,
        Mutant::PickFirstStallsAfterUpdateInBackoff,
        Mutant::CountCarriesOver,
        Mutant::DedupByHostPortOnly,
        Mutant::DropOneRpcPerCrash,
        Mutant::DeadlineIgnoredAfterHeaders,
    ];

    /// Its name as `--mutant` takes it: the variant's name in snake case.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::RoundRobinIgnoresCount => "round_robin_ignores_count",
            Mutant::RoundRobinAlwaysFirst => "round_robin_always_first",
            Mutant::PickFirstNeverFailsOver => "pick_first_never_fails_over",
            Mutant::PickFirstStallsAfterUpdateInBackoff => {
                "pick_first_stalls_after_update_in_backoff"
            }
            Mutant::CountCarriesOver => "count_carries_over",
            Mutant::DedupByHostPortOnly => "dedup_by_host_port_only",
            Mutant::DropOneRpcPerCrash => "drop_one_rpc_per_crash",
            Mutant::DeadlineIgnoredAfterHeaders => "deadline_ignored_after_headers",
        }
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no [`Mutant`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mutant {name:?}: unknown; known: {}", Mutant::ALL.map(Mutant::name).join(", "))]
pub struct UnknownMutant {
    /// The name given.
    pub name: String,
}

impl FromStr for Mutant {
    type Err = UnknownMutant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mutant::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMutant { name: s.to_owned() })
    }
}

/// Whether `mutant` is `which`: the test each hook makes.
pub(crate) fn is(mutant: Option<Mutant>, which: Mutant) -> bool {
    mutant == Some(which)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutant_name_parses_back_to_the_mutant() {
        for mutant in Mutant::ALL {
            assert_eq!(mutant.name().parse::<Mutant>(), Ok(mutant), "names must round-trip");
        }
        for mutant in Mutant::ALL {
            let json = serde_json::to_string(&mutant).expect("a mutant serialises");
            assert_eq!(json, format!("\"{mutant}\""), "JSON must use the --mutant name");
        }
        let err = "nope".parse::<Mutant>().unwrap_err();
        assert!(err.to_string().starts_with("mutant \"nope\": unknown; known: round_robin"));
    }
}
