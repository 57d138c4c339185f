//! The one grammar for duration flags (`SHUTDOWN_TIMEOUT`, `TOKEN_TTL`, `REVOCATION_GRACE`…).
//!
//! ```text
//! duration = number [ spaces ] [ unit ]          surrounding whitespace is ignored
//! number   = digits [ "." [ digits ] ] | "." digits
//! unit     = "ms" | "s" | "sec" | "secs" | "m" | "min" | "h" | "d"      (none: seconds)
//! ```
//!
//! Examples: `30`, `0.5`, `1.5s`, `500ms`, `15m`, `24h`, `7d`. Refused: empty, negative,
//! exponents (`1e3`), other units (`1w`, `5y`), several parts (`1h30m`), and anything above
//! `u64::MAX` seconds. The value is exact to the nanosecond (no floating point): `0.1` is
//! 100 ms, `1.5ms` is 1500 µs; digits below a nanosecond are dropped.
//!
//! Why this grammar: it is the union of what ext-authz (fractions, `sec`, `min`) and
//! login-service (`d`) accepted before they shared a parser, so no operator's config breaks.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A duration flag that does not follow the grammar in this module's docs. The message names
/// the text and the expected form on one line (clap prints it after the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not a number followed by a known unit.
    #[error(
        "invalid duration {0:?}: expected seconds or a number with a unit (ms, s, m, h, d), e.g. 30, 1.5s, 500ms, 15m, 24h, 7d"
    )]
    Syntax(String),
    /// A number followed by an unknown unit.
    #[error("unknown unit {unit:?} in duration {text:?}: use ms, s, m, h or d")]
    Unit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More than `u64::MAX` seconds.
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses a duration flag; see the module docs for the grammar. Usable directly as a clap
/// `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let syntax = || DurationError::Syntax(text.to_owned());
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(syntax());
    }
    let nanos_per_unit: u128 = match unit.trim_start() {
        "" | "s" | "sec" | "secs" => NANOS_PER_SEC,
        "ms" => 1_000_000,
        "m" | "min" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        "d" => 86_400 * NANOS_PER_SEC,
        other if other.starts_with(|c: char| c.is_ascii_alphabetic()) => {
            return Err(DurationError::Unit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
        _ => return Err(syntax()),
    };
    let too_large = || DurationError::TooLarge(text.to_owned());
    // Digits only (checked by the split above), so a parse error here is an overflow.
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse::<u64>().map_err(|_| too_large())?.into()
    };
    // Why 20 digits: below a nanosecond even for days (1e-20 d < 1e-6 ns), and small enough
    // that `fraction * nanos_per_unit` cannot overflow a u128.
    let fraction = &fraction[..fraction.len().min(20)];
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().map_err(|_| syntax())?;
        digits * nanos_per_unit / 10u128.pow(u32::try_from(fraction.len()).unwrap_or(20))
    };
    let nanos = whole * nanos_per_unit + fraction_nanos;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| too_large())?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Ok(Duration::new(secs, subsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn accepted_spellings() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        for (text, want) in [
            ("0", s(0)),
            ("2", s(2)),
            ("86400", s(86_400)),
            ("0.25", ms(250)),
            ("0.1", ms(100)),
            (".5", ms(500)),
            ("1.", s(1)),
            ("1s", s(1)),
            ("1sec", s(1)),
            ("10secs", s(10)),
            ("1.5s", ms(1500)),
            ("500ms", ms(500)),
            ("13001ms", ms(13_001)),
            ("1.5ms", Duration::from_micros(1500)),
            ("2m", s(120)),
            ("2min", s(120)),
            ("15m", s(900)),
            ("24h", s(86_400)),
            ("0.5h", s(1800)),
            ("7d", s(604_800)),
            ("1.000000001", Duration::new(1, 1)),
            ("0.0000000019", Duration::new(0, 1)),
            ("  30s\n", s(30)),
            ("30 s", s(30)),
            ("18446744073709551615", s(u64::MAX)),
        ] {
            assert_eq!(ok(text), want, "{text:?}");
        }
    }

    #[test]
    fn refused_spellings() {
        for text in [
            "", " ", ".", "..5", "1.2.3", "-1", "-1s", "+5", "s", "h", "ms", "fast", "5 5",
            "1_000", "inf", "NaN",
        ] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::Syntax(_))),
                "{text:?}: {:?}",
                parse_duration(text)
            );
        }
        for text in [
            "5y",
            "1w",
            "1 fortnight",
            "10S",
            "1hr",
            "1e3",
            "1h30m",
            "0x10",
        ] {
            assert!(
                matches!(parse_duration(text), Err(DurationError::Unit { .. })),
                "{text:?}: {:?}",
                parse_duration(text)
            );
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        for text in [
            "18446744073709551616",
            "99999999999999999999999",
            "18446744073709551615m",
            "213503982334602d",
            "18446744073709551615.5d",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(DurationError::TooLarge(text.to_owned())),
                "{text:?}"
            );
        }
        // The largest number of days that fits.
        assert_eq!(
            ok("213503982334601d"),
            Duration::from_secs(213_503_982_334_601 * 86_400)
        );
    }

    #[test]
    fn errors_are_one_clear_line() {
        let e = parse_duration("soon").unwrap_err().to_string();
        assert_eq!(
            e,
            r#"invalid duration "soon": expected seconds or a number with a unit (ms, s, m, h, d), e.g. 30, 1.5s, 500ms, 15m, 24h, 7d"#
        );
        let e = parse_duration("5y").unwrap_err().to_string();
        assert_eq!(
            e,
            r#"unknown unit "y" in duration "5y": use ms, s, m, h or d"#
        );
    }

    /// What ext-authz's own parser asserted before it was replaced by this one.
    #[test]
    fn ext_authz_spellings() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("").is_err());
    }

    /// What login-service's own parser asserted before it was replaced by this one.
    #[test]
    fn login_service_spellings() {
        assert_eq!(
            parse_duration("86400").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("").is_err());
    }
}
