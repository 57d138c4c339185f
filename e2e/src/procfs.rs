//! What Linux's `/proc` says about a process (CPU time, resident memory) and about a set of CPUs
//! (busy and total time): the soak driver's RSS trend and `make bench`'s CPU accounting read the
//! same numbers the same way.

use std::io;

/// Kernel clock ticks per second (`USER_HZ`). 100 on every Linux architecture we run on; the
/// kernel exports times to user space in this unit whatever its internal `HZ` is.
const USER_HZ: f64 = 100.0;

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Total user + system CPU time of `pid` so far (all threads), in microseconds, from
/// `/proc/<pid>/stat`.
pub fn cpu_micros(pid: u32) -> io::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces: split after its closing parenthesis.
    let rest = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| invalid(format!("/proc/{pid}/stat: no command name")))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let ticks = |i: usize| -> io::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| invalid(format!("/proc/{pid}/stat: field {}", i + 3)))
    };
    Ok((ticks(11)? + ticks(12)?) / USER_HZ * 1e6)
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| invalid(format!("/proc/{pid}/status: no VmRSS")))
}

/// A set of CPUs in `taskset` list syntax (`0`, `1-3`, `0,2-3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(Vec<usize>);

impl std::str::FromStr for CpuSet {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let mut cpus = Vec::new();
        for part in list.split(',') {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let parse = |s: &str| {
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("not a CPU list: {list:?}"))
            };
            cpus.extend(parse(lo)?..=parse(hi)?);
        }
        Ok(Self(cpus))
    }
}

/// Busy and total time of a [`CpuSet`] since boot, in clock ticks (from `/proc/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every state but idle and iowait.
    pub busy: u64,
    /// Every state.
    pub total: u64,
}

impl CpuTimes {
    /// Reads the current times of `cpus` (summed; CPUs absent from `/proc/stat` count zero).
    pub fn read(cpus: &CpuSet) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/stat")?, cpus))
    }

    /// Sums the `cpuN` lines of a `/proc/stat` text for the CPUs in `cpus`.
    fn parse(stat: &str, cpus: &CpuSet) -> Self {
        let (mut busy, mut total) = (0, 0);
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(n) = fields
                .next()
                .and_then(|name| name.strip_prefix("cpu"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if !cpus.0.contains(&n) {
                continue;
            }
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let v: Vec<u64> = fields.take(8).map(|x| x.parse().unwrap_or(0)).collect();
            let sum: u64 = v.iter().sum();
            total += sum;
            busy += sum - v.get(3).unwrap_or(&0) - v.get(4).unwrap_or(&0);
        }
        Self { busy, total }
    }

    /// The share of `later - self` the CPUs were busy, in percent rounded to 0.1 (0 when no time
    /// passed).
    pub fn busy_pct(&self, later: &Self) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        let busy = later.busy.saturating_sub(self.busy);
        (1000.0 * busy as f64 / total as f64).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_follow_taskset_syntax() {
        assert_eq!("1".parse(), Ok(CpuSet(vec![1])));
        assert_eq!("0,2-3".parse(), Ok(CpuSet(vec![0, 2, 3])));
        assert!("x".parse::<CpuSet>().is_err());
    }

    #[test]
    fn busy_time_excludes_idle_and_iowait_of_the_chosen_cpus_only() {
        let stat = "cpu  9 9 9 9 9 9 9 9 0 0\n\
                    cpu0 10 0 5 80 5 0 0 0 0 0\n\
                    cpu1 1 1 1 1 1 1 1 1 0 0\n";
        let t = CpuTimes::parse(stat, &"0".parse().unwrap());
        assert_eq!(
            t,
            CpuTimes {
                busy: 15,
                total: 100
            }
        );
        let later = CpuTimes {
            busy: 45,
            total: 200,
        };
        assert_eq!(t.busy_pct(&later), 30.0);
        assert_eq!(t.busy_pct(&t), 0.0);
    }
}
