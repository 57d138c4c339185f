//! CPU time of a process from `/proc/<pid>/stat` (utime + stime, all threads).

use anyhow::Context as _;

/// Kernel clock ticks per second (`USER_HZ`). 100 on every Linux architecture we run on; the
/// kernel exports times to user space in this unit whatever its internal `HZ` is.
const USER_HZ: f64 = 100.0;

/// Total user + system CPU time of `pid` so far, in microseconds.
pub fn cpu_micros(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: split after its closing parenthesis.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/<pid>/stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ * 1e6)
}
