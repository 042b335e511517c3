//! The load bench's command line (after `cargo bench --bench load --`).

use crate::proxies::Kind;
use crate::watch::rmem_max;
use crate::{PORTS, RELAY_PORT_COUNT};

/// `--sweep`: per proxy and mode, the highest call rate it sustains (see `sweep.rs`).
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Length of each step (`--sweep-seconds`): calls = rate × seconds.
    pub seconds: u64,
    /// First rate of the ramp (`--sweep-start`), doubled until a step fails.
    pub start: u64,
    /// Highest rate tried (`--sweep-max`).
    pub max: u64,
    /// Bisection steps between the last pass and the first fail (`--sweep-bisect`).
    pub bisect: u32,
    /// Times a failed step is run again when other programs were busy during it
    /// (`--sweep-retry`).
    pub retry: u32,
}

/// sipp's socket buffers in a sweep unless `--sipp-buff` says otherwise (capped by
/// `net.core.rmem_max`). sipp's own default, 65535 bytes, overflows at the UAC from about
/// 5000 calls/s even without a proxy in between, which would make every proxy's limit the
/// same: sipp's.
const SWEEP_SIPP_BUFF: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct Args {
    pub rate: u64,
    pub calls: u64,
    pub modes: Vec<String>,
    pub max_socket: u64,
    pub proxies: Vec<Kind>,
    pub repeat: u64,
    pub keep: bool,
    /// `--pin`: the proxy on CPU 1, sipp on CPU 0 (see `procs::Role`).
    pub pin: bool,
    pub sweep: Option<Sweep>,
    /// sipp's `-buff_size` (UAC and UAS); `None`: sipp's default.
    pub sipp_buff: Option<u64>,
}

impl Args {
    /// Parses the options. Positional arguments are name filters, as `cargo bench -- NAME`
    /// passes them to every bench: `load` or a proxy name (`sipfront`, `nginx`...) selects,
    /// anything else leaves nothing to run. Unknown `--flags` are for other benches.
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut rate = 500;
        let mut seconds = 10;
        let mut calls = None;
        let mut modes = vec!["u1".to_string(), "un".to_string()];
        let mut max_socket = 200;
        let mut proxies = Kind::ALL.to_vec();
        let mut filters: Vec<String> = Vec::new();
        let mut keep = false;
        let mut pin = false;
        let mut repeat = 1;
        let mut sweep = false;
        let mut sweep_seconds = 4;
        let mut sweep_start = 1000;
        let mut sweep_max = 32000;
        let mut sweep_bisect = 3;
        let mut sweep_retry = 1;
        let mut sipp_buff = None;
        let mut it = argv.iter();
        while let Some(a) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            let num = |v: String| v.parse::<u64>().map_err(|_| format!("{a}: `{v}`"));
            match a.as_str() {
                "--bench" => {}
                "--keep" => keep = true,
                "--pin" => pin = true,
                "--rate" => rate = num(value()?)?,
                "--seconds" => seconds = num(value()?)?,
                "--calls" => calls = Some(num(value()?)?),
                "--max-socket" => max_socket = num(value()?)?,
                "--repeat" => repeat = num(value()?)?.max(1),
                "--sweep" => sweep = true,
                "--sweep-seconds" => sweep_seconds = num(value()?)?,
                "--sweep-start" => sweep_start = num(value()?)?,
                "--sweep-max" => sweep_max = num(value()?)?,
                "--sweep-bisect" => sweep_bisect = num(value()?)?.min(10) as u32,
                "--sweep-retry" => sweep_retry = num(value()?)?.min(5) as u32,
                "--sipp-buff" => sipp_buff = Some(num(value()?)?),
                "--modes" => {
                    modes = value()?.split(',').map(str::to_string).collect();
                    if let Some(m) = modes.iter().find(|m| *m != "u1" && *m != "un") {
                        return Err(format!("--modes: `{m}` (u1 or un)"));
                    }
                }
                "--proxies" => {
                    proxies = value()?
                        .split(',')
                        .map(|p| Kind::parse(p).ok_or_else(|| format!("--proxies: `{p}`")))
                        .collect::<Result<_, _>>()?;
                }
                flag if flag.starts_with('-') => {
                    eprintln!("load bench: ignoring `{flag}` (not an option of this bench)");
                }
                filter => filters.push(filter.to_string()),
            }
        }
        if rate == 0 || max_socket == 0 {
            return Err("--rate and --max-socket must be > 0".into());
        }
        if max_socket > RELAY_PORT_COUNT {
            return Err(format!(
                "--max-socket {max_socket}: sipfront has {RELAY_PORT_COUNT} relay ports ({}), \
                 one per client flow",
                PORTS.relay_ports
            ));
        }
        if pin && std::thread::available_parallelism().map_or(0, |n| n.get()) < 2 {
            return Err("--pin needs two CPUs (the proxy on CPU 1, sipp on CPU 0)".into());
        }
        if sweep && (sweep_seconds == 0 || sweep_start == 0 || sweep_max < sweep_start) {
            return Err(
                "--sweep-seconds and --sweep-start must be > 0, --sweep-max ≥ --sweep-start".into(),
            );
        }
        if !filters.is_empty() && !filters.iter().any(|f| "load".contains(f.as_str())) {
            proxies.retain(|k| filters.iter().any(|f| k.name().contains(f.as_str())));
        }
        let sipp_buff = match sipp_buff {
            Some(0) => None,
            Some(b) => Some(b),
            None if sweep => Some(SWEEP_SIPP_BUFF),
            None => None,
        }
        .map(|b| rmem_max().map_or(b, |m| b.min(m)));
        Ok(Args {
            rate,
            calls: calls.unwrap_or(rate * seconds),
            modes,
            max_socket,
            proxies,
            repeat,
            keep,
            pin,
            sweep: sweep.then_some(Sweep {
                seconds: sweep_seconds,
                start: sweep_start,
                max: sweep_max,
                bisect: sweep_bisect,
                retry: sweep_retry,
            }),
            sipp_buff,
        })
    }
}
