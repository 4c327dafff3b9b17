//! Time formats shared by every channel and the gateway.

/// The first instant `rfc3339_ms` cannot write with a four-digit year (10000-01-01T00:00:00Z).
const YEAR_10000_MS: u64 = 253_402_300_800_000;

/// Formats unix milliseconds as RFC 3339 UTC with exactly three fractional digits (`2023-11-14T22:13:20.000Z`).
///
/// Written digit by digit, with the civil date computed directly (Howard Hinnant's `civil_from_days`)
/// rather than through `time`'s `OffsetDateTime` or `format!`: every relayed message carries two or three of
/// these. Instants past year 9999 are written as its last millisecond.
pub fn rfc3339_ms(ms: u64) -> String {
    let text = rfc3339_ms_bytes(ms);
    // Only ASCII digits and separators are written.
    std::str::from_utf8(&text).map_or_else(|_| String::new(), str::to_owned)
}

/// [`rfc3339_ms`]'s 24 ASCII bytes, for a writer that copies them straight into a buffer.
pub fn rfc3339_ms_bytes(ms: u64) -> [u8; 24] {
    if ms >= YEAR_10000_MS {
        return *b"9999-12-31T23:59:59.999Z";
    }
    let secs = ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    let mut out = [0u8; 24];
    put_digits(&mut out[0..4], year);
    out[4] = b'-';
    put_digits(&mut out[5..7], month);
    out[7] = b'-';
    put_digits(&mut out[8..10], day);
    out[10] = b'T';
    put_digits(&mut out[11..13], second_of_day / 3600);
    out[13] = b':';
    put_digits(&mut out[14..16], second_of_day / 60 % 60);
    out[16] = b':';
    put_digits(&mut out[17..19], second_of_day % 60);
    out[19] = b'.';
    put_digits(&mut out[20..23], ms % 1000);
    out[23] = b'Z';
    out
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01
/// (<https://howardhinnant.github.io/date_algorithms.html#civil_from_days>, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_exactly_three_fractional_digits() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(YEAR_10000_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    }

    proptest::proptest! {
        /// The same text as formatting the `time` crate's date and time of the instant.
        #[test]
        fn agrees_with_the_time_crates_calendar(ms in 0u64..YEAR_10000_MS) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second(), t.millisecond()
            );
            proptest::prop_assert_eq!(rfc3339_ms(ms), expected);
        }
    }

    #[test]
    fn agrees_with_the_time_crates_own_rfc3339_on_a_spread_of_instants() {
        use time::format_description::well_known::Rfc3339;
        let mut ms: u64 = 0;
        while ms < 4_102_444_800_000 {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
            let theirs = t.format(&Rfc3339).unwrap();
            // `time` drops a zero fraction and trims trailing zeros; compare the parsed instants and our shape.
            let ours = rfc3339_ms(ms);
            let parsed = time::OffsetDateTime::parse(&ours, &Rfc3339).unwrap();
            assert_eq!(parsed, t, "{ours} vs {theirs}");
            assert_eq!(ours.len(), 24);
            ms += 7_777_777_777 + ms % 997;
        }
    }
}
