//! Compaction: the store rewritten into fresh files, so nothing erased is
//! left in old versions that sled has not reclaimed yet.
//!
//! It runs when the store opens, if an erasure asked for it: every tree is
//! copied into `DIR.compacting`, synced and marked complete; then `DIR`
//! becomes `DIR.old`, `DIR.compacting` becomes `DIR`, and `DIR.old` is
//! removed. A crash at any step is finished or undone by [`recover`] on the
//! next start, so the store is always either the old one or the complete new
//! one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The file that marks a copy as complete.
const COMPLETE: &str = "COMPACTION-COMPLETE";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Finishes or undoes a compaction a crash interrupted.
pub(super) fn recover(dir: &Path) -> io::Result<()> {
    let (copy, old) = (sibling(dir, ".compacting"), sibling(dir, ".old"));
    if !dir.exists() && copy.join(COMPLETE).exists() {
        fs::rename(&copy, dir)?;
    } else if !dir.exists() && old.exists() {
        fs::rename(&old, dir)?;
    }
    if copy.exists() {
        fs::remove_dir_all(&copy)?;
    }
    if old.exists() {
        fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Copies every tree of `db` (the store at `dir`) into fresh files, closes
/// `db`, and puts the copy in its place. `done` is called on the copy, to
/// record that no compaction is owed any more.
pub(super) fn rewrite(
    db: sled::Db,
    dir: &Path,
    done: impl FnOnce(&sled::Db) -> Result<(), sled::Error>,
) -> Result<(), sled::Error> {
    let copy_dir = sibling(dir, ".compacting");
    if copy_dir.exists() {
        fs::remove_dir_all(&copy_dir)?;
    }
    let copy = sled::Config::new().path(&copy_dir).open()?;
    let mut entries = 0u64;
    for name in db.tree_names() {
        let (from, to) = (db.open_tree(&name)?, copy.open_tree(&name)?);
        for entry in from.iter() {
            let (key, value) = entry?;
            to.insert(key, value)?;
            entries += 1;
        }
    }
    done(&copy)?;
    copy.flush()?;
    drop(copy);
    fs::write(copy_dir.join(COMPLETE), b"")?;
    drop(db);
    sync_parent(dir)?;
    let old = sibling(dir, ".old");
    fs::rename(dir, &old)?;
    fs::rename(&copy_dir, dir)?;
    sync_parent(dir)?;
    fs::remove_file(dir.join(COMPLETE))?;
    fs::remove_dir_all(&old)?;
    log::info!(
        "compacted the store at {}: {entries} entries rewritten",
        dir.display()
    );
    Ok(())
}

/// Makes the renames in `dir`'s parent durable.
fn sync_parent(dir: &Path) -> io::Result<()> {
    match dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        Some(parent) => fs::File::open(parent)?.sync_all(),
        None => fs::File::open(".")?.sync_all(),
    }
}
