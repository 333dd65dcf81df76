//! Small edits of libpq connection strings, in both of their forms: URIs
//! (`postgres://user@host:5432/db?sslmode=disable`) and key/value strings
//! (`host=localhost dbname=db`). Only what this crate needs: naming another database on the
//! same server and adding a parameter unless one is already set.

/// Whether `url` is a URI rather than a key/value string.
fn is_uri(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Splits a URI into what precedes the database name (scheme and authority), the database
/// name as written (possibly empty) and the rest (`?query`, possibly empty).
fn split_uri(url: &str) -> (&str, &str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let (head, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    match head[after_scheme..].find('/') {
        Some(slash) => {
            let slash = after_scheme + slash;
            (&head[..slash], &head[slash + 1..], query)
        }
        None => (head, "", query),
    }
}

/// The value of `key` in a key/value string (unquoted values only, which is all we write).
fn keyword_value<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    url.split_whitespace().find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then_some(v.trim_matches('\''))
    })
}

/// The database named in `url`, percent-decoded; `None` when it names none (libpq then uses
/// the user's name).
pub(crate) fn database_name(url: &str) -> Option<String> {
    if is_uri(url) {
        let (_, db, _) = split_uri(url);
        let db = percent_decode(db);
        (!db.is_empty()).then_some(db)
    } else {
        keyword_value(url, "dbname").filter(|db| !db.is_empty()).map(str::to_owned)
    }
}

/// `url` naming database `database` instead of its own.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    if is_uri(url) {
        let (head, _, query) = split_uri(url);
        format!("{head}/{}{query}", percent_encode(database))
    } else {
        let kept: Vec<&str> = url
            .split_whitespace()
            .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k.trim() != "dbname"))
            .collect();
        format!("{} dbname='{}'", kept.join(" "), database.replace('\'', "\\'"))
    }
}

/// Whether `url` sets parameter `key`.
pub(crate) fn has_param(url: &str, key: &str) -> bool {
    if is_uri(url) {
        let (_, _, query) = split_uri(url);
        query
            .trim_start_matches('?')
            .split('&')
            .any(|pair| pair.split('=').next().is_some_and(|k| k == key))
    } else {
        keyword_value(url, key).is_some()
    }
}

/// `url` with `key=value` added, unless it already sets `key`: an explicit setting wins.
pub(crate) fn with_default_param(url: &str, key: &str, value: &str) -> String {
    if has_param(url, key) {
        url.to_owned()
    } else if is_uri(url) {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}{key}={value}")
    } else {
        format!("{url} {key}={value}")
    }
}

/// Quotes `name` as an SQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| raw.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_names_its_database_and_can_name_another() {
        let url = "postgres://postgres:secret@127.0.0.1:5432/taskpilot?sslmode=disable";

        assert_eq!(database_name(url).as_deref(), Some("taskpilot"));
        assert_eq!(
            with_database(url, "postgres"),
            "postgres://postgres:secret@127.0.0.1:5432/postgres?sslmode=disable"
        );
    }

    #[test]
    fn a_uri_without_a_database_gets_one_appended() {
        assert_eq!(database_name("postgresql://localhost"), None);
        assert_eq!(database_name("postgresql://localhost/"), None);
        assert_eq!(with_database("postgresql://localhost", "db"), "postgresql://localhost/db");
    }

    #[test]
    fn database_names_are_percent_coded_in_uris() {
        assert_eq!(database_name("postgres://h/my%20db").as_deref(), Some("my db"));
        assert_eq!(with_database("postgres://h/x", "my db"), "postgres://h/my%20db");
    }

    #[test]
    fn a_keyword_string_names_its_database_and_can_name_another() {
        let url = "host=127.0.0.1 port=5432 dbname=taskpilot user=postgres";

        assert_eq!(database_name(url).as_deref(), Some("taskpilot"));
        assert_eq!(
            with_database(url, "postgres"),
            "host=127.0.0.1 port=5432 user=postgres dbname='postgres'"
        );
    }

    #[test]
    fn a_default_parameter_is_added_only_when_absent() {
        assert_eq!(
            with_default_param("postgres://h/db", "connect_timeout", "5"),
            "postgres://h/db?connect_timeout=5"
        );
        assert_eq!(
            with_default_param("postgres://h/db?sslmode=disable", "connect_timeout", "5"),
            "postgres://h/db?sslmode=disable&connect_timeout=5"
        );
        assert_eq!(
            with_default_param("postgres://h/db?connect_timeout=30", "connect_timeout", "5"),
            "postgres://h/db?connect_timeout=30"
        );
        assert_eq!(
            with_default_param("host=h", "connect_timeout", "5"),
            "host=h connect_timeout=5"
        );
        assert_eq!(
            with_default_param("host=h connect_timeout=9", "connect_timeout", "5"),
            "host=h connect_timeout=9"
        );
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_identifier("taskpilot"), "\"taskpilot\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
