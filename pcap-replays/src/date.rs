//! Calendar dates for capture timestamps: ITCH times are nanoseconds since midnight, pcap times
//! are since the Unix epoch.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch at midnight UTC of `YYYY-MM-DD`, or `None` if malformed.
pub fn parse_iso_date(s: &str) -> Option<u64> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    Some(days_from_civil(y, m, d) as u64 * 86_400_000_000_000)
}

/// The date of a Nasdaq day file name (`MMDDYYYY.NASDAQ_ITCH50[.gz]`, any prefix directory).
pub fn date_of_day_file(name: &str) -> Option<u64> {
    let base = name.rsplit('/').next()?;
    let digits = base.get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    parse_iso_date(&format!(
        "{}-{}-{}",
        &digits[4..8],
        &digits[..2],
        &digits[2..4]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2023, 8, 22), 19_591);
        assert_eq!(
            parse_iso_date("2023-08-22"),
            Some(19_591 * 86_400_000_000_000)
        );
        assert_eq!(
            date_of_day_file("/data/08222023.NASDAQ_ITCH50.gz"),
            parse_iso_date("2023-08-22")
        );
        assert_eq!(date_of_day_file("sample.bin"), None);
        assert_eq!(parse_iso_date("2023-13-01"), None);
    }
}
