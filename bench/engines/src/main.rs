//! The store writer's pattern, without the rest of Crier: messages of the
//! ingest benchmark's size appended round-robin to 64 channels (key
//! `channel ++ id`), one sync after every GROUP messages, on one
//! thread. Prints the process's CPU time and the wall time per message, so
//! that engines are compared on the work Crier gives them.
//!
//!   crier-bench-engines ENGINE [MESSAGES] [GROUP]
//!
//! ENGINE: `sled` (flush: `pwrite` + `sync_file_range`, what Crier's store
//! does), `sled-fdatasync` (the same, then `fdatasync` of sled's file),
//! `fjall` (journal `fdatasync`, `PersistMode::SyncData`), or any of them with
//! `-nosync` (inserts only).

use std::error::Error;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

const CHANNELS: u64 = 64;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// One engine under test: an insert and a sync.
trait Engine {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    fn sync(&mut self) -> Result<()>;
}

struct Sled {
    db: sled::Db,
    tree: sled::Tree,
    /// sled's log file, synced with `fdatasync` after each flush when set.
    file: Option<File>,
}

impl Sled {
    fn open(dir: &Path, fdatasync: bool) -> Result<Self> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = db.open_tree("messages")?;
        let file = fdatasync.then(|| File::open(dir.join("db"))).transpose()?;
        Ok(Sled { db, tree, file })
    }
}

impl Engine for Sled {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.db.flush()?;
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    messages: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Result<Self> {
        let keyspace = fjall::Config::new(dir).open()?;
        let messages = keyspace.open_partition("messages", Default::default())?;
        Ok(Fjall { keyspace, messages })
    }
}

impl Engine for Fjall {
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.messages.insert(key, value)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.keyspace.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
}

fn message_key(channel: u64, id: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&u128::from(channel).to_be_bytes());
    key[16..].copy_from_slice(&id.to_be_bytes());
    key
}

/// A stored message as Crier encodes the ingest benchmark's POST.
fn message_json(channel: u64, id: u64) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"channel":"00000000-0000-4000-8000-{channel:012}","author":"bench","text":"hello from the ingest benchmark","ts":"2026-12-05T21:00:00.123456Z"}}"#
    )
    .into_bytes()
}

/// User plus system CPU seconds of this process so far (every thread,
/// the engines' background threads included).
fn process_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); 12 and 13 after the name.
    let mut ticks = 0.0;
    for index in [11, 12] {
        let field = fields
            .get(index)
            .ok_or("/proc/self/stat is shorter than stat(5)")?;
        ticks += field.parse::<f64>()?;
    }
    // Linux reports them in USER_HZ, 100 per second on every architecture.
    Ok(ticks / 100.0)
}

fn append_all(engine: &mut dyn Engine, messages: u64, group: u64, sync: bool) -> Result<()> {
    let mut last_ids = vec![0u64; CHANNELS as usize];
    for n in 1..=messages {
        let channel = n % CHANNELS;
        let id = &mut last_ids[channel as usize];
        *id += 1;
        engine.insert(&message_key(channel, *id), &message_json(channel, *id))?;
        if sync && n % group == 0 {
            engine.sync()?;
        }
    }
    if sync {
        engine.sync()?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let messages: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let group: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(17)
        .max(1);
    let (engine_name, sync) = match name.strip_suffix("-nosync") {
        Some(engine) => (engine, false),
        None => (name.as_str(), true),
    };
    // On the disk, as Crier's data directory would be (not a tmpfs).
    let dir = tempfile::tempdir_in(".")?;
    let mut engine: Box<dyn Engine> = match engine_name {
        "sled" => Box::new(Sled::open(dir.path(), false)?),
        "sled-fdatasync" => Box::new(Sled::open(dir.path(), true)?),
        "fjall" => Box::new(Fjall::open(dir.path())?),
        other => {
            return Err(format!(
                "unknown engine '{other}': sled, sled-fdatasync or fjall, with -nosync or not"
            )
            .into());
        }
    };
    let (cpu_before, started) = (process_cpu_seconds()?, Instant::now());
    append_all(engine.as_mut(), messages, group, sync)?;
    let cpu = process_cpu_seconds()? - cpu_before;
    let per_message = |seconds: f64| seconds * 1e6 / messages as f64;
    println!(
        "{name} {messages} messages, sync every {group}: cpu {:.2} us/message, wall {:.2} us/message",
        per_message(cpu),
        per_message(started.elapsed().as_secs_f64())
    );
    Ok(())
}
