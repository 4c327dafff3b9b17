//! Time formats shared by every channel and the gateway.

/// Formats unix milliseconds as RFC 3339 UTC with exactly three fractional digits (`2023-11-14T22:13:20.000Z`).
///
/// Written digit by digit rather than through `format!`: every relayed message carries two or three of these.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(secs) else {
        return "9999-12-31T23:59:59.999Z".to_owned();
    };
    let Ok(year) = u32::try_from(t.year()) else {
        return "0000-01-01T00:00:00.000Z".to_owned();
    };
    let mut out = [0u8; 24];
    put_digits(&mut out[0..4], year);
    out[4] = b'-';
    put_digits(&mut out[5..7], u32::from(u8::from(t.month())));
    out[7] = b'-';
    put_digits(&mut out[8..10], u32::from(t.day()));
    out[10] = b'T';
    put_digits(&mut out[11..13], u32::from(t.hour()));
    out[13] = b':';
    put_digits(&mut out[14..16], u32::from(t.minute()));
    out[16] = b':';
    put_digits(&mut out[17..19], u32::from(t.second()));
    out[19] = b'.';
    put_digits(&mut out[20..23], (ms % 1000) as u32);
    out[23] = b'Z';
    out.iter().map(|b| char::from(*b)).collect()
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u32) {
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
