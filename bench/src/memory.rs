//! Server memory from `/proc`: RSS and PSS of the given processes and all
//! their descendants (nginx workers, say), from `smaps_rollup`.

use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct MemSample {
    pub rss_bytes: u64,
    pub pss_bytes: u64,
    /// Processes summed (the given ones plus their descendants still alive).
    pub processes: u64,
}

/// Samples the processes `roots` and their descendants. Processes that
/// vanished or cannot be read are skipped.
pub fn sample(roots: &[u32]) -> MemSample {
    let pids = with_descendants(roots);
    let mut total = MemSample::default();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let (rss, pss) = rollup(&text);
        total.rss_bytes += rss;
        total.pss_bytes += pss;
        total.processes += 1;
    }
    total
}

/// `Rss:` and `Pss:` of a `smaps_rollup`, in bytes.
fn rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("Rss:"), field("Pss:"))
}

pub fn with_descendants(roots: &[u32]) -> BTreeSet<u32> {
    let mut all: BTreeSet<u32> = roots.iter().copied().collect();
    if all.is_empty() {
        return all;
    }
    let parents = parent_map();
    // Bounded: each pass adds at least one pid or stops.
    for _ in 0..parents.len() {
        let before = all.len();
        for &(pid, ppid) in &parents {
            if all.contains(&ppid) {
                all.insert(pid);
            }
        }
        if all.len() == before {
            break;
        }
    }
    all
}

/// `(pid, ppid)` of every process.
fn parent_map() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, ppid_of(&stat)?))
    })
    .collect()
}

/// The ppid from `/proc/PID/stat`; the command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
fn ppid_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_reads_rss_and_pss() {
        let text = "55f-7ff ---p 00000000 00:00 0  [rollup]\nRss:     1200 kB\nPss:      900 kB\nPss_Anon: 1 kB\n";
        assert_eq!(rollup(text), (1200 * 1024, 900 * 1024));
    }

    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(ppid_of("42 (nginx: worker (x)) S 7 42 42 0"), Some(7));
    }

    #[test]
    fn own_process_is_sampled() {
        let me = sample(&[std::process::id()]);
        assert!(me.processes >= 1 && me.rss_bytes > 0, "{me:?}");
    }
}
