//! `process_*`: CPU, memory, file descriptors, threads and start time of
//! this process, read from `/proc/self` at every scrape, under the names
//! every Prometheus client library uses (so stock dashboards work).
//!
//! Linux only: elsewhere the files are missing and nothing is reported. A
//! file that cannot be read or parsed drops its metrics from that scrape,
//! never the scrape.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel
/// reports them in USER_HZ, which is 100 on every architecture Tenantry
/// ships for (x86_64, aarch64), whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// What one scrape read.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    threads: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

/// The fields of `/proc/self/stat` after the command name, which is the one
/// field that may hold spaces (in parentheses), so parsing starts after the
/// last `)`. Index 0 is the state, field 3 of proc(5).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// `/proc/stat`'s `btime`: boot time, Unix seconds.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes(status: &str) -> Option<f64> {
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_fds(limits: &str) -> Option<i64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut sample = Sample::default();
    if let Some(stat) = read("/proc/self/stat")
        && let Some(fields) = stat_fields(&stat)
    {
        // proc(5) field n is fields[n - 3]: utime 14, stime 15, num_threads 20,
        // starttime 22, vsize 23.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            sample.cpu_seconds = Some((user + system) / USER_HZ);
        }
        sample.threads = field(20).map(|n| n as i64);
        sample.virtual_bytes = field(23);
        if let (Some(ticks), Some(boot)) = (field(22), read("/proc/stat").as_deref().and_then(boot_time)) {
            sample.start_time_seconds = Some(boot + ticks / USER_HZ);
        }
    }
    sample.resident_bytes = read("/proc/self/status").as_deref().and_then(resident_bytes);
    sample.max_fds = read("/proc/self/limits").as_deref().and_then(max_fds);
    sample.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as i64);
    sample
}

/// Encodes the process metrics at every scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = sample();
        if let Some(seconds) = sample.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(seconds).encode(metric)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes.", sample.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", sample.virtual_bytes),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        let counts = [
            ("process_open_fds", "Number of open file descriptors.", sample.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", sample.max_fds),
            ("process_threads", "Number of OS threads in the process.", sample.threads),
        ];
        for (name, help, value) in counts {
            if let Some(value) = value {
                ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proc_files_are_parsed_past_a_command_name_with_spaces() {
        let stat = "4242 (tenantry (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 123400 734003200 5000 18446744073709551615";
        let fields = stat_fields(stat).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[14 - 3], "250");
        assert_eq!(fields[20 - 3], "9");
        assert_eq!(fields[22 - 3], "123400");
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1764240000\nprocesses 9\n"), Some(1_764_240_000.0));
        assert_eq!(resident_bytes("Name:\ttenantry\nVmRSS:\t   20480 kB\n"), Some(20_971_520.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            65536                524288               files     \n";
        assert_eq!(max_fds(limits), Some(65536));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let sample = sample();
        assert!(sample.cpu_seconds.is_some_and(|s| s >= 0.0));
        assert!(sample.resident_bytes.is_some_and(|b| b > 1_000_000.0), "{sample:?}");
        assert!(sample.open_fds.is_some_and(|n| n >= 3) && sample.max_fds.is_some_and(|n| n >= 3), "{sample:?}");
        assert!(sample.threads.is_some_and(|n| n >= 1));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = sample.start_time_seconds.unwrap();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0, "{started} vs {now}");
    }
}
