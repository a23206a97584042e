//! Protobuf's JSON duration form (`"1.5s"`), as grpc-go reads and writes it.

use std::time::Duration;

use super::DurationError;

/// The largest duration protobuf's `Duration` can hold, in seconds (10,000 years).
pub(super) const MAX_DURATION_SECS: u64 = 315_576_000_000;

/// Parses protobuf's JSON duration form as grpc-go reads it (see the module docs).
pub(super) fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let number = text.strip_suffix('s').ok_or(DurationError::MissingUnit)?;
    if number.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(DurationError::Malformed);
    }
    if fraction.len() > 9 {
        return Err(DurationError::TooPrecise);
    }
    let seconds = if whole.is_empty() { 0 } else { whole.parse::<u64>().unwrap_or(u64::MAX) };
    let nanos = format!("{fraction:0<9}").parse::<u32>().map_err(|_| DurationError::Malformed)?;
    if seconds > MAX_DURATION_SECS || (seconds == MAX_DURATION_SECS && nanos > 0) {
        return Err(DurationError::OutOfRange);
    }
    Ok(Duration::new(seconds, nanos))
}

/// Protobuf's canonical JSON duration: 0, 3, 6 or 9 fractional digits.
pub(super) fn format_duration(duration: Duration) -> String {
    let (seconds, nanos) = (duration.as_secs(), duration.subsec_nanos());
    match nanos {
        0 => format!("{seconds}s"),
        n if n % 1_000_000 == 0 => format!("{seconds}.{:03}s", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{seconds}.{:06}s", n / 1_000),
        n => format!("{seconds}.{n:09}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_protobuf_json_forms() {
        let cases = [
            ("0s", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.000001s", Duration::from_micros(1)),
            ("0.000000001s", Duration::from_nanos(1)),
            (".01s", Duration::from_millis(10)),
            ("1.s", Duration::from_secs(1)),
            ("007s", Duration::from_secs(7)),
            ("315576000000s", Duration::from_secs(MAX_DURATION_SECS)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text:?} is a valid duration");
        }
    }

    #[test]
    fn durations_reject_everything_else_with_a_reason() {
        let cases = [
            ("", DurationError::MissingUnit),
            ("5", DurationError::MissingUnit),
            ("5m", DurationError::MissingUnit),
            ("1.5S", DurationError::MissingUnit),
            ("s", DurationError::Malformed),
            (".s", DurationError::Malformed),
            ("+1s", DurationError::Malformed),
            (" 1s", DurationError::Malformed),
            ("1e3s", DurationError::Malformed),
            ("1.2.3s", DurationError::Malformed),
            ("١s", DurationError::Malformed),
            ("-1s", DurationError::Negative),
            ("-0s", DurationError::Negative),
            ("0.0000000001s", DurationError::TooPrecise),
            ("315576000000.000000001s", DurationError::OutOfRange),
            ("315576000001s", DurationError::OutOfRange),
            ("99999999999999999999999s", DurationError::OutOfRange),
        ];
        for (text, reason) in cases {
            assert_eq!(
                parse_duration(text),
                Err(reason),
                "{text:?} must be rejected as {reason:?}"
            );
        }
    }

    #[test]
    fn durations_format_in_canonical_protobuf_form_and_parse_back() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1.500s"),
            (Duration::from_micros(1), "0.000001s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "canonical form of {duration:?}");
            assert_eq!(parse_duration(text), Ok(duration), "{text:?} must parse back");
        }
    }
}
