//! The themes that pace configuration recommendations, read from the scanner's catalogue (one
//! source for both services), and Theme Tuesday: when the next theme launches in a partner's time
//! zone.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// The scanner's catalogue; only its themes matter here.
const CATALOGUE: &str = include_str!("../../scanner/catalogue.toml");

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Theme {
    pub id: String,
    pub title: String,
    pub order: u32,
}

#[derive(Debug, Deserialize)]
struct Catalogue {
    theme: Vec<Theme>,
}

/// The themes in launch order (orders 1, 2, 3...).
#[derive(Debug, Clone)]
pub struct Themes(Vec<Theme>);

impl Themes {
    /// The themes of the shipped catalogue.
    pub fn shipped() -> Themes {
        let catalogue: Catalogue =
            toml::from_str(CATALOGUE).expect("the shipped catalogue is valid (tested)");
        Themes::new(catalogue.theme).expect("the shipped themes are ordered 1..n (tested)")
    }

    /// Themes ordered 1..=n without gaps, or why not.
    pub fn new(mut themes: Vec<Theme>) -> Result<Themes, String> {
        themes.sort_by_key(|theme| theme.order);
        for (index, theme) in themes.iter().enumerate() {
            if theme.order as usize != index + 1 {
                return Err(format!(
                    "theme {} has order {}, expected {}",
                    theme.id,
                    theme.order,
                    index + 1
                ));
            }
        }
        Ok(Themes(themes))
    }

    pub fn order_of(&self, theme_id: &str) -> Option<u32> {
        self.0
            .iter()
            .find(|theme| theme.id == theme_id)
            .map(|theme| theme.order)
    }

    pub fn by_order(&self, order: u32) -> Option<&Theme> {
        self.0.get((order as usize).checked_sub(1)?)
    }

    pub fn count(&self) -> u32 {
        self.0.len() as u32
    }

    pub fn all(&self) -> &[Theme] {
        &self.0
    }
}

/// `hour`:00 local time on `date` in `zone`; an hour skipped by a daylight-saving change moves to
/// the first instant after it.
fn local_instant(zone: Tz, date: NaiveDate, hour: u32) -> DateTime<Utc> {
    let mut naive = date.and_hms_opt(hour, 0, 0).unwrap_or_default();
    loop {
        if let Some(instant) = zone.from_local_datetime(&naive).earliest() {
            return instant.with_timezone(&Utc);
        }
        naive += chrono::Duration::minutes(30);
    }
}

/// The latest Theme Tuesday launch (Tuesday at `hour` in `zone`) at or before `now`.
pub fn last_launch(now: DateTime<Utc>, zone: Tz, hour: u32) -> DateTime<Utc> {
    let today = now.with_timezone(&zone).date_naive();
    let since_tuesday = (today.weekday().num_days_from_monday() + 6) % 7;
    let tuesday = today - Days::new(u64::from(since_tuesday));
    let launch = local_instant(zone, tuesday, hour);
    if launch <= now {
        launch
    } else {
        local_instant(zone, tuesday - Days::new(7), hour)
    }
}

/// The first Theme Tuesday launch after `now`.
pub fn next_launch(now: DateTime<Utc>, zone: Tz, hour: u32) -> DateTime<Utc> {
    let last = last_launch(now, zone, hour)
        .with_timezone(&zone)
        .date_naive();
    local_instant(zone, last + Days::new(7), hour)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn the_shipped_themes_are_ordered_from_one() {
        let themes = Themes::shipped();
        assert_eq!(
            themes.by_order(1).map(|theme| theme.id.as_str()),
            Some("identity-mfa")
        );
        assert_eq!(themes.order_of("suspicious-activity"), Some(themes.count()));
        assert!(themes.by_order(0).is_none());
    }

    #[test]
    fn a_gap_in_the_theme_order_is_refused() {
        let theme = |id: &str, order| Theme {
            id: id.into(),
            title: id.into(),
            order,
        };
        assert!(Themes::new(vec![theme("a", 1), theme("b", 3)]).is_err());
    }

    #[test]
    fn the_launch_is_tuesday_at_the_partners_local_hour() {
        let amsterdam: Tz = "Europe/Amsterdam".parse().expect("zone");
        // Tuesday 2026-11-24 09:00 in Amsterdam is 08:00 UTC (winter time).
        assert_eq!(
            last_launch(utc("2026-11-24T08:00:00Z"), amsterdam, 9),
            utc("2026-11-24T08:00:00Z")
        );
        assert_eq!(
            last_launch(utc("2026-11-24T07:59:59Z"), amsterdam, 9),
            utc("2026-11-17T08:00:00Z")
        );
        assert_eq!(
            next_launch(utc("2026-11-24T08:00:00Z"), amsterdam, 9),
            utc("2026-12-01T08:00:00Z")
        );
        // In summer the same local hour is 07:00 UTC.
        assert_eq!(
            last_launch(utc("2026-07-01T00:00:00Z"), amsterdam, 9),
            utc("2026-06-30T07:00:00Z")
        );
    }

    #[test]
    fn a_launch_hour_skipped_by_daylight_saving_moves_past_the_gap() {
        // New York skips 02:00-03:00 local on 2026-03-08.
        let new_york: Tz = "America/New_York".parse().expect("zone");
        let date = NaiveDate::from_ymd_opt(2026, 3, 8).expect("date");
        assert_eq!(
            local_instant(new_york, date, 2),
            utc("2026-03-08T07:00:00Z")
        );
    }
}
