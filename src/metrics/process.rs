//! The process metrics under their standard names (as every Prometheus
//! client exports them, so the usual dashboards and alerts work):
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`
//! and `process_start_time_seconds`, read from `/proc/self` at each scrape.
//! Off Linux (no `/proc`), nothing is written.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What `/proc/self/stat` says, in base units.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ProcStat {
    pub cpu_seconds: f64,
    pub virtual_bytes: u64,
    pub resident_bytes: u64,
    /// Seconds after boot the process started.
    pub start_after_boot: f64,
}

/// Parse `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces or parentheses itself: the fields are counted from
/// the last `)`.
pub(super) fn parse_stat(text: &str, ticks_per_second: f64, page_bytes: u64) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so field n is f[n - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        cpu_seconds: (num(14)? + num(15)?) as f64 / ticks_per_second,
        start_after_boot: num(22)? as f64 / ticks_per_second,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page_bytes,
    })
}

/// The boot time, Unix seconds, from `/proc/stat`'s `btime`.
pub(super) fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files, from `/proc/self/limits`.
pub(super) fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn sysconf(name: libc::c_int, fallback: i64) -> i64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 { v } else { fallback }
}

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ticks = sysconf(libc::_SC_CLK_TCK, 100) as f64;
        let page = sysconf(libc::_SC_PAGESIZE, 4096) as u64;
        let read = |p: &str| std::fs::read_to_string(p).ok();
        if let Some(stat) = read("/proc/self/stat").and_then(|s| parse_stat(&s, ticks, page)) {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stat.resident_bytes as f64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                stat.virtual_bytes as f64,
            )?;
            if let Some(boot) = read("/proc/stat").as_deref().and_then(parse_btime) {
                let start = boot as f64 + stat.start_after_boot;
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    start,
                )?;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors.", dir.count() as f64)?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_fds) {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors.", max as f64)?;
        }
        Ok(())
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis in it.
        let text = "4242 (back stop) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 9 0 \
                    123456 1048576000 25600 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        let s = parse_stat(text, 100.0, 4096).unwrap();
        assert_eq!(s.cpu_seconds, 3.8);
        assert_eq!(s.start_after_boot, 1234.56);
        assert_eq!(s.virtual_bytes, 1_048_576_000);
        assert_eq!(s.resident_bytes, 25600 * 4096);
        assert_eq!(parse_stat("garbage", 100.0, 4096), None);
        assert_eq!(parse_stat("1 (x) S 1 2", 100.0, 4096), None, "too few fields");
    }

    #[test]
    fn boot_time_and_the_fd_limit() {
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1795984537\nprocesses 9\n"), Some(1_795_984_537));
        assert_eq!(parse_btime("cpu 1\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(20000));
        assert_eq!(parse_max_fds("Max open files            unlimited   unlimited  files\n"), None);
    }

    #[test]
    fn this_process_is_read_from_proc() {
        // Some CPU time to read (the kernel counts it in 10 ms ticks).
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} in {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let rss = value("process_resident_memory_bytes");
        assert!(rss > 1e6 && rss < 1e11, "RSS {rss}");
        assert!(value("process_virtual_memory_bytes") >= rss);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") > 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86400.0, "start {start}, now {now}");
    }
}
