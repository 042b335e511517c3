//! The `sipfront` binary: parses the command line, loads config, runs. `anyhow` lives
//! here only; the library reports typed errors.

mod cli;
mod ctl;
mod demo;

use std::process::ExitCode;
use std::time::Duration;

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use sipfront::config::Config;
use sipfront::{admin, server};
use tokio::net::UdpSocket;

use cli::{Cli, Command, CtlAction};

/// Exit status for configuration errors (distinct from runtime failures).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(cfg) => {
                // Ignore a closed pipe (`check-config f | head`).
                let _ = writeln!(std::io::stdout(), "# {}: valid\n{cfg}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sipfront: invalid config {}: {e}", file.display());
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sipfront: invalid config {}: {e}", config.display());
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match runtime().and_then(|rt| rt.block_on(run(cfg, Some(config)))) {
                // A config key this host cannot honour (no such interface) is a config
                // error too.
                Err(e) if names_a_missing_interface(&e) => {
                    eprintln!("sipfront: invalid config: {e}");
                    ExitCode::from(EXIT_CONFIG)
                }
                r => report(r),
            }
        }
        Command::Ctl {
            admin,
            token_file,
            config,
            action,
        } => {
            let target = match ctl_target(admin, token_file, config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("sipfront ctl: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let r = match action {
                CtlAction::Status => ctl::status(&target),
                CtlAction::Drain { name } => ctl::set_admin(&target, &name, "drain"),
                CtlAction::Enable { name } => ctl::set_admin(&target, &name, "enable"),
                CtlAction::Disable { name } => ctl::set_admin(&target, &name, "disable"),
                CtlAction::Flows { client, limit } => ctl::flows(&target, client, limit),
                CtlAction::Peers => ctl::peers(&target),
                CtlAction::Ban { cidr, seconds } => ctl::ban(&target, &cidr, seconds),
                CtlAction::Unban { cidr } => ctl::unban(&target, &cidr),
                CtlAction::Bans => ctl::bans(&target),
                CtlAction::Top { limit } => ctl::top(&target, limit),
                CtlAction::Capture {
                    client,
                    call_id,
                    backend,
                    seconds,
                    max,
                    pcap,
                } => ctl::capture(
                    &target,
                    &ctl::CaptureArgs {
                        client,
                        call_id,
                        backend,
                        seconds,
                        max,
                    },
                    pcap.as_deref(),
                ),
            };
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sipfront ctl: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo {
            sip,
            admin,
            duration,
        } => report(runtime().and_then(|rt| rt.block_on(run_demo(sip, admin, duration)))),
    }
}

fn names_a_missing_interface(e: &anyhow::Error) -> bool {
    use sipfront::vrrp::shell::VrrpError;
    matches!(
        e.downcast_ref::<server::ServerError>(),
        Some(server::ServerError::Vrrp(VrrpError::Interface { .. }))
    )
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipfront: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn ctl_target(
    admin: Option<std::net::SocketAddr>,
    token_file: Option<std::path::PathBuf>,
    config: Option<std::path::PathBuf>,
) -> anyhow::Result<ctl::Target> {
    let cfg = match &config {
        Some(p) => Some(Config::load(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading token file {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => cfg.as_ref().and_then(|c| c.admin.token.clone()),
    };
    let admin = admin
        .or(cfg.as_ref().map(|c| c.admin.listen))
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9090)));
    Ok(ctl::Target { admin, token })
}

/// Runs until SIGINT/SIGTERM; SIGHUP re-reads `path` and applies it.
async fn run(cfg: Config, path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Before anything starts and for the whole run: a SIGHUP right after READY=1 must
    // not kill the process (the default action), and a SIGTERM that comes while a
    // reload runs must wait for the loop, not be lost (a signal with no listener is).
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let prom = admin::install_recorder().map_err(anyhow::Error::msg)?;
    let mut running = server::start(cfg, prom).await?;
    sipfront::notify::notify("READY=1");
    let ended = running.take_ended();
    tokio::pin!(ended);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            what = &mut ended => {
                sipfront::notify::notify("STOPPING=1");
                // The VRRP speaker hands the address over first (priority 0).
                running.shutdown().await?;
                anyhow::bail!("{what} stopped");
            }
            _ = hup.recv() => {
                let Some(p) = &path else { continue };
                sipfront::notify::notify("RELOADING=1");
                // An unusable admin token file does not reject the reload: the running
                // token stays and the reload notes say so.
                let result = Config::load_for_reload(p);
                sipfront::notify::notify("READY=1");
                match result {
                    Ok(cfg) => match running.reload(cfg).await {
                        Ok(notes) => tracing::info!(file = %p.display(), changes = ?notes, "config reloaded"),
                        Err(e) => tracing::error!(error = %e, "reload failed"),
                    },
                    Err(e) => tracing::error!(file = %p.display(), error = %e, "reload rejected: invalid config; keeping the running one"),
                }
            }
        }
    }
    tracing::info!("stopping");
    sipfront::notify::notify("STOPPING=1");
    running.shutdown().await?;
    Ok(())
}

async fn wait_for_stop(limit: Option<Duration>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let sleep = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = sleep => {}
    }
    Ok(())
}

async fn run_demo(
    sip: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    duration: Option<u64>,
) -> anyhow::Result<()> {
    let cfg = demo::demo_config(sip, admin_addr).context("demo config")?;
    for b in &cfg.backends {
        let sock = UdpSocket::bind(b.addr)
            .await
            .with_context(|| format!("binding demo backend {} on {}", b.name, b.addr))?;
        tokio::spawn(demo::demo_backend(sock, b.name.clone()));
    }
    let prom = admin::install_recorder().map_err(anyhow::Error::msg)?;
    let running = server::start(cfg.clone(), prom).await?;
    println!(
        "sipfront demo: SIP on udp:{sip}, backends {} and {}, metrics on http://{}/metrics",
        cfg.backends[0].addr, cfg.backends[1].addr, running.admin_addr
    );
    println!("try:  sipp -sn uac {sip} -r 100 -m 5000      (Ctrl-C stops the demo)");
    let printer = tokio::spawn(demo::print_status(running.status.clone()));
    wait_for_stop(duration.map(Duration::from_secs)).await?;
    printer.abort();
    running.stop()?;
    Ok(())
}
