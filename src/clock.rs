//! `Clock`: where the current time comes from, so trust decisions can be tested at a fixed time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time (like rustls' `TimeProvider`).
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch, as OpenSSL's verifier takes them.
    fn unix_seconds(&self) -> i64 {
        match self.now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }
}

/// An ASN.1 time (a certificate's notAfter, a CRL's nextUpdate) as Unix seconds.
pub fn asn1_unix(t: &openssl::asn1::Asn1TimeRef) -> Option<i64> {
    let (kind, text) = crate::smime::asn1_time_text(t);
    rfc5280_unix(kind, text).or_else(|| {
        // Any other form OpenSSL accepts (no seconds, an offset, fractions): its own arithmetic.
        let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
        let d = epoch.diff(t).ok()?;
        Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
    })
}

/// The two forms RFC 5280 (4.1.2.5) allows, read directly: UTCTime "YYMMDDHHMMSSZ" (years 1950 to
/// 2049) and GeneralizedTime "YYYYMMDDHHMMSSZ". `None` for anything else or an impossible date.
/// Reading them here costs a few nanoseconds where OpenSSL's comparison formats and allocates.
fn rfc5280_unix(kind: std::ffi::c_int, text: &[u8]) -> Option<i64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |d: &[u8]| d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0'));
    let (year, rest) = match (kind, digits.len()) {
        (openssl_sys::V_ASN1_UTCTIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (openssl_sys::V_ASN1_GENERALIZEDTIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let (month, day) = (num(&rest[0..2]), num(&rest[2..4]));
    let (hour, minute, second) = (num(&rest[4..6]), num(&rest[6..8]), num(&rest[8..10]));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An ASN.1 time as `YYYY-MM-DD HH:MM:SS UTC`, for messages.
pub fn asn1_iso(t: &openssl::asn1::Asn1TimeRef) -> String {
    asn1_unix(t)
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one instant, for tests and for re-checking a message "as of" a time.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub SystemTime);

impl FixedClock {
    pub fn at_unix(seconds: u64) -> Self {
        FixedClock(UNIX_EPOCH + Duration::from_secs(seconds))
    }
}

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;

    fn slow(t: &openssl::asn1::Asn1TimeRef) -> i64 {
        let d = Asn1Time::from_unix(0).unwrap().diff(t).unwrap();
        i64::from(d.days) * 86_400 + i64::from(d.secs)
    }

    /// The direct reading agrees with OpenSSL's arithmetic for both forms, across leap days,
    /// month and year ends and the UTCTime century switch.
    #[test]
    fn direct_reading_matches_openssl() {
        let mut t: i64 = -631_152_000; // 1950-01-01
        while t < 4_102_444_800 {
            // 2100-01-01
            let utc_or_gen = Asn1Time::from_unix(t).unwrap();
            assert_eq!(asn1_unix(&utc_or_gen), Some(t), "{t}");
            assert_eq!(slow(&utc_or_gen), t);
            t += 86_400 * 13 + 3_607;
        }
        for (text, want) in [
            ("20000229235959Z", 951_868_799),
            ("20491231235959Z", 2_524_607_999),
            ("20500101000000Z", 2_524_608_000),
            ("99991231235959Z", 253_402_300_799),
            ("19700101000000Z", 0),
            ("491231235959Z", 2_524_607_999),
            ("500101000000Z", -631_152_000),
            ("240229120000Z", 1_709_208_000),
        ] {
            let a = Asn1Time::from_str(text).unwrap();
            assert!(rfc5280_unix(crate::smime::asn1_time_text(&a).0, text.as_bytes()).is_some());
            assert_eq!(asn1_unix(&a), Some(want), "{text}");
            assert_eq!(slow(&a), want, "{text}");
        }
    }

    /// Forms outside RFC 5280, and impossible dates, are not read directly.
    #[test]
    fn other_forms_are_left_to_openssl() {
        const UTC: std::ffi::c_int = openssl_sys::V_ASN1_UTCTIME;
        const GEN: std::ffi::c_int = openssl_sys::V_ASN1_GENERALIZEDTIME;
        for (kind, text) in [
            (UTC, "2402291200Z"),
            (UTC, "240229120000+0100"),
            (GEN, "20240229120000.5Z"),
            (GEN, "202402291200Z"),
            (UTC, "20240229120000Z"),
            (GEN, "240229120000Z"),
            (UTC, "230229120000Z"),
            (UTC, "241301000000Z"),
            (UTC, "240431000000Z"),
            (UTC, "240101240000Z"),
            (UTC, "240101006000Z"),
            (UTC, "240101000060Z"),
            (UTC, "2401010000-0Z"),
            (UTC, ""),
        ] {
            assert_eq!(rfc5280_unix(kind, text.as_bytes()), None, "{text}");
        }
    }
}
