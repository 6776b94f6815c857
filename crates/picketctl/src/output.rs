//! How results reach the terminal: aligned tables for people, canonical protobuf JSON for scripts.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use picket_proto::pbjson_types::{Duration, Timestamp};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The API's response as canonical protobuf JSON, for scripts.
    Json,
}

/// Where a command writes its result.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
}

impl Output {
    /// Prints `response` as JSON, or the table `view` makes of it.
    pub fn show<T: Serialize>(
        &self,
        response: &T,
        view: impl FnOnce(&T) -> Table,
    ) -> anyhow::Result<()> {
        match self.format {
            Format::Json => print_json(response),
            Format::Table => write_stdout(&view(response).render()),
        }
    }

    /// A listing: JSON of the whole response, or its table and, when the server has more, how to
    /// ask for the next page.
    pub fn list<T: Serialize>(
        &self,
        response: &T,
        next_page_token: &str,
        view: impl FnOnce(&T) -> Table,
    ) -> anyhow::Result<()> {
        self.show(response, view)?;
        if self.format == Format::Table && !next_page_token.is_empty() {
            eprintln!("more results: repeat with --page-token {next_page_token}");
        }
        Ok(())
    }
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Rows under a header, or `field: value` lines for one record.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    /// One record shown as `field  value` lines.
    record: bool,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            ..Table::default()
        }
    }

    /// One record: each `field(name, value)` becomes a line.
    pub fn record() -> Table {
        Table {
            record: true,
            ..Table::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn field(&mut self, name: &str, value: impl Into<String>) {
        self.rows.push(vec![name.to_owned(), value.into()]);
    }

    pub fn render(&self) -> String {
        if !self.record && self.rows.is_empty() {
            return "(none)\n".to_owned();
        }
        let header: Vec<String> = self.header.iter().map(|name| name.to_uppercase()).collect();
        let lines: Vec<&Vec<String>> = if self.record {
            self.rows.iter().collect()
        } else {
            std::iter::once(&header).chain(&self.rows).collect()
        };
        let columns = lines.iter().map(|cells| cells.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|column| {
                lines
                    .iter()
                    .filter_map(|cells| cells.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut text = String::new();
        for cells in lines {
            let last = cells.len().saturating_sub(1);
            for (column, cell) in cells.iter().enumerate() {
                let cell = if cell.is_empty() { "-" } else { cell };
                if column == last {
                    text.push_str(cell);
                } else {
                    let pad = widths[column] - cell.chars().count();
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push('\n');
        }
        text
    }
}

/// A protobuf enum value as a short lowercase word: `INCIDENT_STATE_AWAITING_FIX` → `awaiting-fix`.
pub fn enum_label(unspecified: &str, name: Option<&str>) -> String {
    let prefix = unspecified.strip_suffix("UNSPECIFIED").unwrap_or_default();
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_lowercase()
            .replace('_', "-"),
        None => "unknown".to_owned(),
    }
}

/// Parses a short enum word (`awaiting-fix`, `AWAITING_FIX` or the full name) into its number.
pub fn enum_value<E: Into<i32>>(
    unspecified: &str,
    from_name: fn(&str) -> Option<E>,
    input: &str,
) -> Result<i32, String> {
    let prefix = unspecified.strip_suffix("UNSPECIFIED").unwrap_or_default();
    let word = input.trim().to_uppercase().replace('-', "_");
    let full = if word.starts_with(prefix) {
        word
    } else {
        format!("{prefix}{word}")
    };
    match from_name(&full) {
        Some(value) if full != unspecified => Ok(value.into()),
        _ => Err(format!("`{input}` is not a known value")),
    }
}

/// The label of a protobuf enum field: `label!(IncidentState, incident.state)`.
macro_rules! label {
    ($enum:ty, $value:expr) => {
        $crate::output::enum_label(
            <$enum>::Unspecified.as_str_name(),
            <$enum>::try_from($value)
                .ok()
                .map(|value| value.as_str_name()),
        )
    };
}
pub(crate) use label;

/// A clap value parser for a protobuf enum: `value_parser = choice!(IncidentState)`.
macro_rules! choice {
    ($enum:ty) => {
        |input: &str| {
            $crate::output::enum_value(
                <$enum>::Unspecified.as_str_name(),
                <$enum>::from_str_name,
                input,
            )
        }
    };
}
pub(crate) use choice;

pub fn time(timestamp: &Option<Timestamp>) -> String {
    timestamp
        .as_ref()
        .and_then(|at| DateTime::<Utc>::from_timestamp(at.seconds, at.nanos.max(0) as u32))
        .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub fn duration(value: &Option<Duration>) -> String {
    value
        .as_ref()
        .map(|value| {
            humantime::format_duration(std::time::Duration::from_secs(value.seconds.max(0) as u64))
                .to_string()
        })
        .unwrap_or_default()
}

/// Parses `2026-12-01` (midnight UTC) or an RFC 3339 time.
pub fn parse_time(input: &str) -> Result<Timestamp, String> {
    let at = match NaiveDate::parse_from_str(input, "%Y-%m-%d") {
        Ok(date) => date.and_hms_opt(0, 0, 0).map(|at| at.and_utc()),
        Err(_) => DateTime::parse_from_rfc3339(input)
            .ok()
            .map(|at| at.with_timezone(&Utc)),
    }
    .ok_or_else(|| format!("`{input}` is neither a date (2026-12-01) nor an RFC 3339 time"))?;
    Ok(Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    })
}

/// Parses a human duration such as `30d` or `4h 30m`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let value = humantime::parse_duration(input).map_err(|error| error.to_string())?;
    Ok(Duration {
        seconds: value.as_secs() as i64,
        nanos: value.subsec_nanos() as i32,
    })
}

#[cfg(test)]
mod tests {
    use picket_proto::incidents::v1::IncidentState;

    use super::*;

    #[test]
    fn enum_words_round_trip() {
        let state = i32::from(IncidentState::AwaitingFix);
        assert_eq!(label!(IncidentState, state), "awaiting-fix");
        let parse = choice!(IncidentState);
        assert_eq!(parse("awaiting-fix"), Ok(state));
        assert_eq!(parse("INCIDENT_STATE_AWAITING_FIX"), Ok(state));
        assert!(parse("unspecified").is_err());
        assert!(
            parse("sideways")
                .expect_err("unknown word")
                .contains("sideways")
        );
        assert_eq!(label!(IncidentState, 99), "unknown");
    }

    #[test]
    fn tables_align_and_mark_empty_cells() {
        let mut table = Table::new(&["id", "state"]);
        table.row(vec!["a".into(), "open".into()]);
        table.row(vec!["longer".into(), String::new()]);
        assert_eq!(table.render(), "ID      STATE\na       open\nlonger  -\n");
        assert_eq!(Table::new(&["id"]).render(), "(none)\n");
    }

    #[test]
    fn times_and_durations_parse() {
        assert_eq!(
            parse_time("2026-12-01").map(|at| at.seconds),
            Ok(1_796_083_200)
        );
        assert!(parse_time("2026-12-01T10:00:00Z").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_duration("30d").map(|d| d.seconds), Ok(30 * 86_400));
        assert_eq!(
            duration(&Some(Duration {
                seconds: 90,
                nanos: 0
            })),
            "1m 30s"
        );
    }
}
