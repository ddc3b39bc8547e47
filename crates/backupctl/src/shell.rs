//! Shell integration that needs neither a home nor a daemon: completion scripts and manual
//! pages. Both are rendered from the clap definition in `cli`, so they always list the flags
//! this very binary accepts.

use crate::cli::{Cli, CliCommand, ShellCli};
use crate::failure::Failure;
use clap::CommandFactory;
use std::path::Path;

/// Runs `completions` or `man`; `None` for every command that talks to the daemon.
pub fn run_local(cli: &Cli) -> Option<Result<(), Failure>> {
    Some(match &cli.command {
        CliCommand::Completions { shell } => {
            refuse_json(cli, "completions").and_then(|()| completions(*shell))
        }
        CliCommand::Man { out } => refuse_json(cli, "man").and_then(|()| man(out.as_deref())),
        _ => return None,
    })
}

/// A script asking for JSON would otherwise get a shell script or roff and not notice.
fn refuse_json(cli: &Cli, name: &str) -> Result<(), Failure> {
    if cli.json {
        return Err(Failure::Usage(format!(
            "--json does not apply to `{name}`: it prints no answer of the daemon"
        )));
    }
    Ok(())
}

impl From<ShellCli> for clap_complete::Shell {
    fn from(shell: ShellCli) -> Self {
        match shell {
            ShellCli::Bash => Self::Bash,
            ShellCli::Zsh => Self::Zsh,
            ShellCli::Fish => Self::Fish,
        }
    }
}

fn completions(shell: ShellCli) -> Result<(), Failure> {
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    // clap_complete panics on a failed write; rendering into memory first leaves stdout's
    // errors (a closed pipe) to `write_out`.
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut command,
        name,
        &mut script,
    );
    crate::write_out(&script)
}

/// The pages: `backupctl.1` first, then one per subcommand, named `backupctl-<name>.1` by
/// their display name. clap's `help` subcommand gets none and is not listed. Every page names
/// backupctl and its version as its source (clap_mangen's `generate_to` would say `run 0.1.0`).
fn man_pages() -> Vec<clap_mangen::Man> {
    fn collect(command: &clap::Command, pages: &mut Vec<clap::Command>) {
        pages.push(command.clone());
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            collect(sub, pages);
        }
    }
    let mut top = Cli::command().disable_help_subcommand(true);
    // Building gives each subcommand its display name, `backupctl-run`.
    top.build();
    let source = format!("backupctl {}", top.get_version().unwrap_or_default());
    let mut commands = Vec::new();
    collect(&top, &mut commands);
    commands
        .into_iter()
        .map(|command| clap_mangen::Man::new(command).source(source.clone()))
        .collect()
}

fn man(out: Option<&Path>) -> Result<(), Failure> {
    let pages = man_pages();
    let Some(dir) = out else {
        let mut page = Vec::new();
        if let Some(top) = pages.first() {
            top.render(&mut page)
                .map_err(|e| Failure::Local(format!("can't render the manual page: {e}")))?;
        }
        return crate::write_out(&page);
    };
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            pages
                .iter()
                .try_for_each(|page| page.generate_to(dir).map(drop))
        })
        .map_err(|e| {
            Failure::Local(format!(
                "can't write the manual pages to {}: {e}",
                dir.display()
            ))
        })
}
