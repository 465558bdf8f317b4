//! The `gridos-setup` binary: parse the command line, run the request, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::parse_args();
    // NO_COLOR (no-color.org): present and not empty turns colours off, as --no-color does.
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if !color {
        gridos_setup::prompt::disable_colors();
    }
    init_tracing(args.verbose, color);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(async {
        watch_signals();
        cli::run(args).await
    }) {
        Ok(code) => code,
        Err(e) => {
            report_once(&e.one_line());
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Whether the run's closing line has been printed. A signal can end the process from another
/// thread while the run prints its own error; the mutex makes the later one wait and stay quiet,
/// so the output has exactly one closing line and it is never cut off by the exit.
static REPORTED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

fn report_once(line: &str) {
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*reported {
        eprintln!("{line}");
        *reported = true;
    }
}

/// Ends the process with the interruption's one line (unless the run already printed its own).
fn exit_interrupted() -> ! {
    let line = if gridos_setup::prompt::at_question() {
        gridos_setup::prompt::restore_terminal();
        let e = gridos_setup::error::Error::Interrupted {
            done: gridos_setup::error::STOPPED_AT_A_QUESTION.into(),
        };
        // The question's line is still open on the terminal.
        format!("\n{}", e.one_line())
    } else {
        "error: interrupted; re-run the same command to resume".to_string()
    };
    report_once(&line);
    std::process::exit(gridos_setup::error::exit::INTERRUPTED);
}

/// SIGINT or SIGTERM asks the run to stop (see `gridos_setup::interrupt`); if it has not ended
/// shortly before the 2 s the contract allows, or on a second signal, the process exits 130 itself.
/// At a question nothing has been written, so the process exits at once.
fn watch_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        cli::INTERRUPT.request();
        if gridos_setup::prompt::at_question() {
            exit_interrupted();
        }
        // A thread, not a task: it must fire even if the runtime's workers are blocked.
        std::thread::spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(1800));
            exit_interrupted();
        });
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        exit_interrupted();
    });
}

/// `-v` info, `-vv` debug; otherwise only warnings. Logs go to stderr, never stdout.
fn init_tracing(verbose: u8, color: bool) {
    let level = match verbose {
        // kube's own reconnect messages would repeat what gridos-setup reports itself.
        0 => "warn,kube_client=off,kube_runtime=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRIDOS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // handlebars logs every helper's parameters at debug, the webhook's private key among them;
    // added last so that no GRIDOS_LOG setting can turn it back on.
    let filter = match "handlebars=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour codes only for a person; a CI log or a file gets plain text.
        .with_ansi(color && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
