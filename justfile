# TaskPilot developer commands. `just check` runs exactly what CI runs.

# Run the server (with no DATABASE_URL it finds or starts a local development database).
run *ARGS:
    cargo run --release -p taskpilot-http --bin taskpilot -- {{ARGS}}

# Apply migrations to DATABASE_URL and exit.
migrate:
    cargo run --release -p taskpilot-http --bin taskpilot -- migrate

# The whole test suite (the README's test command).
test:
    cargo test --workspace

# Lints as CI runs them.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# The API docs of every crate, warnings denied as in CI.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Format the tree.
fmt:
    cargo fmt --all

# The API against its OpenAPI document (schemathesis, every check, bounded) on the debug
# server; `API_FUZZ_MAX_TIME=600 just api-fuzz` for a longer run.
api-fuzz:
    cargo build -p taskpilot-http --bin taskpilot
    scripts/api-fuzz

# What CI runs: formatting check, lints, rustdoc, the whole test suite, the API fuzz run.
check:
    bash .ci/run

# The benchmark (docs/performance.md): a release server on a throwaway database against the
# raw-SQL ceiling; `just bench --quick` for a smoke run, `just bench --help` for the flags.
bench *ARGS:
    cargo build --release -p taskpilot-http -p taskpilot-bench
    cargo run --release -p taskpilot-bench -- {{ARGS}}
