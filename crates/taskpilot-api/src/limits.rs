//! Every size and time limit of the API, declared once.
//!
//! The server's use cases enforce these numbers and its HTTP adapter quotes them in its
//! errors; clients size their requests by them (the `Worker` runtime's batches, for one).
//! The bounds of single values (lease lengths, name lengths, `maxAttempts`) are rules of the
//! task itself and live with the domain's validated types.

/// Tasks a listing returns when it names no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Most tasks one listing page may return.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Most tasks one claim may take.
pub const MAX_CLAIM_BATCH: u32 = 100;
/// Most tasks one batch may create, and most outcomes one batch may report.
pub const MAX_BATCH: usize = 1000;
/// The longest a claim may wait for work (`waitMs`), in milliseconds.
pub const MAX_CLAIM_WAIT_MS: i64 = 30_000;
/// Most queues one claim may name.
pub const MAX_CLAIM_QUEUES: usize = 100;
/// The earliest instant the API reads or writes, 0000-01-01T00:00:00Z, in microseconds since
/// the Unix epoch: RFC 3339 writes years of four digits. Cursors carry instants too.
pub const EARLIEST_INSTANT_MICROS: i64 = -62_167_219_200_000_000;
/// The latest instant the API reads or writes, 9999-12-31T23:59:59.999999Z, in microseconds
/// since the Unix epoch.
pub const LATEST_INSTANT_MICROS: i64 = 253_402_300_799_999_999;
/// Most tasks one bulk action (`POST /api/tasks/bulk`) may take, by filter or by ids.
pub const MAX_BULK: u32 = 10_000;
/// Tasks a bulk action takes at most when it names no `limit`.
pub const DEFAULT_BULK: u32 = 1_000;
/// Tasks a bulk action judges and writes per transaction.
pub const BULK_BATCH: u32 = 500;
/// The longest text a `lastError` filter may look for, in characters.
pub const MAX_ERROR_FILTER_CHARS: usize = 500;

/// Minutes of `GET /api/stats/throughput` when `minutes` is not given: the last hour.
pub const DEFAULT_THROUGHPUT_MINUTES: u32 = 60;
/// Most minutes `GET /api/stats/throughput` answers: the day the server keeps.
pub const MAX_THROUGHPUT_MINUTES: u32 = 1440;
/// Most failed tasks `GET /api/dead-letters` groups: the newest that many. Grouping reads
/// each one's row: 25,000 take about 50 ms on a small machine, 100,000 about 150 ms.
pub const DEAD_LETTER_SCAN: u32 = 25_000;
