//! What the commands print for people: aligned columns and `field: value` blocks, with
//! every value made safe for a terminal.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Adds a row; its cells are made printable ([`cell`]). Missing cells print empty.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| cell(c)).collect());
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines, each ending in a newline; the last column is not padded, so
    /// that lines carry no trailing spaces.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, text) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(width(text));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, column_width) in widths.iter().enumerate() {
                let text = row.get(i).map_or("", String::as_str);
                if i + 1 == columns {
                    line.push_str(text);
                } else {
                    let _ = write!(line, "{text}{:pad$}  ", "", pad = column_width - width(text));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `field: value` lines, the values aligned after the longest field name.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let name_width = pairs.iter().map(|(name, _)| width(name)).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value) in pairs {
        let value = cell(value);
        let line = format!("{name}:{:pad$} {value}", "", pad = name_width - width(name));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` on one line and harmless to a terminal: the values come from whoever created the
/// task (names, errors, payloads), so a control character (a newline, an escape sequence)
/// is shown escaped instead of moving the cursor or recolouring the screen.
pub fn cell(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// How many columns `text` takes, counting one per character: right for the ASCII and
/// most of the text a queue holds; wide characters (CJK, emoji) make their row a little
/// wider.
fn width(text: &str) -> usize {
    text.chars().count()
}

/// An instant as the API writes it (RFC 3339, UTC, microseconds), `-` for none.
pub fn at(instant: Option<DateTime<Utc>>) -> String {
    instant.map_or_else(|| "-".to_owned(), taskpilot_api::time::format)
}

/// `value` or `-`.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `text` cut to `max` characters, with `…` when it was longer.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell_and_lines_end_without_spaces() {
        let mut table = Table::new(&["ID", "STATUS", "NAME"]);
        table.row(vec!["1".into(), "PENDING".into(), "send-email".into()]);
        table.row(vec!["22".into(), "RUNNING".into(), String::new()]);

        assert_eq!(table.render(), "ID  STATUS   NAME\n1   PENDING  send-email\n22  RUNNING\n");
    }

    #[test]
    fn control_characters_from_task_data_are_shown_escaped() {
        let mut table = Table::new(&["NAME"]);
        table.row(vec!["evil\u{1b}[31m\nname".into()]);

        assert_eq!(table.render(), "NAME\nevil\\u{1b}[31m\\nname\n");
        assert_eq!(
            fields(&[("id", "7".into()), ("status", "a\tb".into())]),
            "id:     7\nstatus: a\\tb\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        assert_eq!(shorten("timeout", 10), "timeout");
        assert_eq!(shorten("connection reset", 8), "connect…");
    }
}
