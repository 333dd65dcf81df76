//! Fingerprints the top-level `migrations/` folder for the test harness.
//!
//! `embed_migrations!` compiles the migrations into the crate but keeps their text private,
//! so the digest is taken here, over the same files, and handed to the crate as
//! `TASKPILOT_MIGRATIONS_DIGEST`. `testing` names its template database after it: a changed,
//! added or removed migration file gets a template of its own, never a stale one.

use std::path::{Path, PathBuf};

/// The folder `embed_migrations!("../../migrations")` reads, relative to this crate.
const MIGRATIONS_DIR: &str = "../../migrations";

fn main() -> std::io::Result<()> {
    // A directory makes cargo rerun this script when anything under it changes.
    println!("cargo:rerun-if-changed={MIGRATIONS_DIR}");
    println!("cargo:rerun-if-changed=build.rs");
    let root = Path::new(MIGRATIONS_DIR);
    let mut files = Vec::new();
    collect_files(root, &mut files)?;
    files.sort();
    let mut digest = Fnv1a::new();
    for file in &files {
        // The relative path as well as the contents: a renamed migration is another
        // migration to diesel (the version lives in the folder name).
        let relative = file.strip_prefix(root).unwrap_or(file);
        digest.write(relative.to_string_lossy().as_bytes());
        digest.write(&[0]);
        digest.write(&std::fs::read(file)?);
        digest.write(&[0]);
    }
    println!("cargo:rustc-env=TASKPILOT_MIGRATIONS_DIGEST={:016x}", digest.finish());
    Ok(())
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// 64-bit FNV-1a: tiny, and stable across Rust releases (unlike `DefaultHasher`), so the
/// same migrations give the same template name whichever toolchain built the tests.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
