//! [`Cadence`]: when a schedule fires, a cron expression read in a time
//! zone or a fixed interval, and the computation of its fire times.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::error::{Error, Result};

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When a schedule fires.
#[derive(Clone)]
pub enum Cadence {
    /// A cron expression (five fields, six with seconds first, or an
    /// `@nickname`) read in an IANA time zone. In a DST gap a fixed-time
    /// expression fires at the first instant after the gap, and times in
    /// the gap of a wildcard or stepped one are skipped; in an overlap a
    /// fixed-time expression fires once, at the first pass, and a wildcard
    /// one at every matching instant (croner's rules, after OCPS and Vixie
    /// cron).
    Cron {
        /// The expression as written.
        expression: String,
        /// The time zone it is read in.
        timezone: Tz,
        /// The parsed expression.
        cron: Box<Cron>,
    },
    /// Every `interval`, at whole multiples of it since the Unix epoch, so
    /// every replica computes the same fire times.
    Every(Duration),
}

impl Cadence {
    /// Parses a cron expression in the IANA time zone `timezone` ("" is
    /// UTC). The error names the field and says what to fix.
    pub fn cron(expression: &str, timezone: &str) -> Result<Self> {
        let timezone = parse_timezone(timezone)?;
        let fields = expression.split_whitespace().count();
        if !expression.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(Error::InvalidArgument(format!(
                "cron \"{expression}\" has {fields} fields: write five (minute hour \
                 day-of-month month day-of-week, e.g. \"0 2 * * *\"), six with seconds first, \
                 or a nickname such as @hourly or @daily"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|error| {
                Error::InvalidArgument(format!(
                    "cron \"{expression}\" is not a cron expression ({error}): write five fields \
                     (minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\"), six \
                     with seconds first, or a nickname such as @hourly or @daily"
                ))
            })?;
        let cadence = Cadence::Cron {
            expression: expression.trim().to_owned(),
            timezone,
            cron: Box::new(cron),
        };
        if cadence.next_after(Utc::now()).is_none() {
            return Err(Error::InvalidArgument(format!(
                "cron \"{expression}\" never fires (e.g. the 31st of February): write one that matches a real time"
            )));
        }
        Ok(cadence)
    }

    /// A fixed interval of at least [`MIN_INTERVAL`], in whole milliseconds.
    pub fn every(interval: Duration) -> Result<Self> {
        if interval < MIN_INTERVAL || !interval.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(Error::InvalidArgument(format!(
                "interval is {interval:?}: a schedule fires at most once a second, in whole \
                 milliseconds (e.g. \"30s\")"
            )));
        }
        Ok(Cadence::Every(interval))
    }

    /// The first fire time strictly after `after`, or `None` when there is
    /// none (a cron expression that matches no real time).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Cron { timezone, cron, .. } => cron
                .find_next_occurrence(&after.with_timezone(timezone), false)
                .ok()
                .map(|at| at.with_timezone(&Utc)),
            Cadence::Every(interval) => {
                let step = interval.as_millis() as i64;
                let next = (after.timestamp_millis().div_euclid(step) + 1) * step;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }

    /// Up to `count` fire times from `from` (inclusive), in order.
    pub fn upcoming(&self, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let start = from - chrono::Duration::milliseconds(1);
        std::iter::successors(self.next_after(start), |at| self.next_after(*at))
            .take(count)
            .collect()
    }

    /// The cron expression, if this is one.
    pub fn expression(&self) -> Option<&str> {
        match self {
            Cadence::Cron { expression, .. } => Some(expression),
            Cadence::Every(_) => None,
        }
    }

    /// The interval, if this is one.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Cadence::Cron { .. } => None,
            Cadence::Every(interval) => Some(*interval),
        }
    }

    /// The IANA name of the time zone ("UTC" for intervals).
    pub fn timezone(&self) -> &'static str {
        match self {
            Cadence::Cron { timezone, .. } => timezone.name(),
            Cadence::Every(_) => "UTC",
        }
    }
}

impl PartialEq for Cadence {
    fn eq(&self, other: &Self) -> bool {
        self.expression() == other.expression()
            && self.interval() == other.interval()
            && self.timezone() == other.timezone()
    }
}

impl fmt::Debug for Cadence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cadence::Cron {
                expression,
                timezone,
                ..
            } => write!(f, "cron \"{expression}\" in {}", timezone.name()),
            Cadence::Every(interval) => write!(f, "every {interval:?}"),
        }
    }
}

/// An IANA time zone by name; "" is UTC.
fn parse_timezone(name: &str) -> Result<Tz> {
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    name.parse::<Tz>().map_err(|_| {
        Error::InvalidArgument(format!(
            "timezone \"{name}\" is not an IANA time zone: write one such as \"UTC\", \
             \"Europe/Berlin\" or \"America/New_York\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn five_fields_six_fields_and_nicknames_parse() {
        let five = Cadence::cron("30 2 * * *", "").unwrap();
        assert_eq!(
            five.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T02:30:00Z"))
        );
        let six = Cadence::cron("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            six.next_after(at("2026-01-01T00:00:05Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        let hourly = Cadence::cron("@hourly", "").unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        let daily = Cadence::cron("@daily", "").unwrap();
        assert_eq!(
            daily.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_name_the_field() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * *", "banana"] {
            let message = Cadence::cron(bad, "").unwrap_err().to_string();
            assert!(message.starts_with("cron \""), "{bad:?}: {message}");
        }
        let message = Cadence::cron("* * * * *", "Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(message.contains("timezone \"Mars/Olympus\""), "{message}");
        let message = Cadence::every(Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with("interval"), "{message}");
    }

    #[test]
    fn intervals_fire_at_multiples_of_themselves() {
        let every = Cadence::every(Duration::from_secs(30)).unwrap();
        assert_eq!(
            every.next_after(at("2026-01-01T00:00:10Z")),
            Some(at("2026-01-01T00:00:30Z"))
        );
        assert_eq!(
            every.next_after(at("2026-01-01T00:00:30Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            every.upcoming(at("2026-01-01T00:00:30Z"), 2),
            vec![at("2026-01-01T00:00:30Z"), at("2026-01-01T00:01:00Z")]
        );
    }

    /// New York springs forward on 2026-03-08 (02:00 EST becomes 03:00
    /// EDT) and falls back on 2026-11-01 (02:00 EDT becomes 01:00 EST).
    #[test]
    fn a_time_zone_follows_its_dst_changes() {
        let daily = Cadence::cron("30 2 * * *", "America/New_York").unwrap();
        // 02:30 does not exist on the 8th: it fires at 03:00 EDT (07:00Z),
        // the first instant after the gap, then at 02:30 EDT again.
        assert_eq!(
            daily.upcoming(at("2026-03-07T00:00:00Z"), 3),
            vec![
                at("2026-03-07T07:30:00Z"),
                at("2026-03-08T07:00:00Z"),
                at("2026-03-09T06:30:00Z"),
            ]
        );
        // 01:30 happens twice on 1 November: a fixed time fires once.
        let early = Cadence::cron("30 1 * * *", "America/New_York").unwrap();
        assert_eq!(
            early.upcoming(at("2026-10-31T12:00:00Z"), 3),
            vec![
                at("2026-11-01T05:30:00Z"),
                at("2026-11-02T06:30:00Z"),
                at("2026-11-03T06:30:00Z"),
            ]
        );
        // The same wall-clock time is 5 hours after UTC in winter, 4 in summer.
        let nine = Cadence::cron("0 9 * * *", "America/New_York").unwrap();
        assert_eq!(
            nine.next_after(at("2026-01-15T00:00:00Z")),
            Some(at("2026-01-15T14:00:00Z"))
        );
        assert_eq!(
            nine.next_after(at("2026-07-15T00:00:00Z")),
            Some(at("2026-07-15T13:00:00Z"))
        );
    }
}
