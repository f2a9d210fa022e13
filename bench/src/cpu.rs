//! CPU time from `/proc/PID/stat`, to show how the machine's two cores were
//! split between the server and the load generator.

use crate::memory::with_descendants;

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU seconds of `roots` and their live descendants.
pub fn cpu_secs(roots: &[u32]) -> f64 {
    with_descendants(roots)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| ticks_of(&stat))
        .sum::<u64>() as f64
        / TICKS_PER_SEC
}

/// `utime + stime` (fields 14 and 15) of a `stat` line; fields are counted
/// after the last `)` because the command name may contain anything.
fn ticks_of(stat: &str) -> Option<u64> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_utime_plus_stime() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0 99";
        assert_eq!(ticks_of(stat), Some(280));
    }

    #[test]
    fn own_cpu_is_readable() {
        assert!(cpu_secs(&[std::process::id()]) >= 0.0);
    }
}
