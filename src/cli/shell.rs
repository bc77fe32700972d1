//! `kvctl shell`: an interactive session for exploring the store by hand.
//! Each line is a kvctl command (`put k v`, `get k --prefix`, `watch k`,
//! `txn -i`, ...) run with the global flags the shell was started with;
//! `help` lists them, `quit` (or Ctrl-D) leaves. Lines are edited and
//! remembered with rustyline (history in `~/.kvctl_history`); a command
//! that fails prints its error and the session goes on. Ctrl-C stops a
//! running watch or keep-alive, and at the prompt clears the line.

use clap::Parser;
use rustyline::error::ReadlineError;

use super::args::{Cli, Command};
use super::run::run_one;

const HELP: &str = "\
Commands are kvctl's, one per line, quoted as in a shell:
  put KEY VALUE [--lease ID] [--if-absent|--if-version N|...]
  get KEY [RANGE_END] [--prefix] [--rev N] [-w json]
  del KEY [RANGE_END] [--prefix]
  watch KEY [--prefix] [--rev N]          Ctrl-C stops it
  txn -i                                  compares, then success and failure requests
  lease grant TTL | lease list | lock NAME | member list | endpoint status ...
  help                                    this text; COMMAND --help for one command
  quit                                    (or exit, or Ctrl-D)
";

/// The arguments before `shell` on kvctl's command line: the global flags
/// every line runs with.
fn global_args() -> Vec<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args
        .iter()
        .rposition(|a| a == "shell")
        .unwrap_or(args.len());
    args[..at].to_vec()
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".kvctl_history"))
}

/// Runs the session until `quit` or the end of input; its exit code.
pub async fn run() -> std::process::ExitCode {
    match session().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn session() -> anyhow::Result<()> {
    let global = global_args();
    let mut editor = rustyline::DefaultEditor::new()?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    // A session typed by hand is remembered; one piped in is not.
    let history = history_path().filter(|_| interactive);
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    if interactive {
        println!("kvctl shell: kvctl commands, one per line; `help`, `quit`.");
    }
    loop {
        let line = match editor.readline("kvctl> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let _ = editor.add_history_entry(line);
        match line {
            "quit" | "exit" => break,
            "help" | "?" => {
                print!("{HELP}");
                continue;
            }
            _ => {}
        }
        let Some(words) = shlex::split(line) else {
            eprintln!("Error: unbalanced quotes");
            continue;
        };
        let cli = match Cli::try_parse_from(global.iter().cloned().chain(words)) {
            Ok(cli) => cli,
            Err(e) => {
                // Help and version requests print to stdout; errors to
                // stderr. Neither ends the session.
                let _ = e.print();
                continue;
            }
        };
        if matches!(cli.command, Command::Shell) {
            eprintln!("Error: already in the shell");
            continue;
        }
        let code = run_one(cli).await;
        if code != 0 && interactive {
            eprintln!("(exit {code})");
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
