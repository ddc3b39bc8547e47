//! `keygen`: makes an age identity in the client, as `age-keygen` does, so that a secret key
//! never passes through the daemon. The file is created new with mode 0600 and never
//! replaces an existing one.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use age::secrecy::ExposeSecret;

use crate::cli::{Cli, CliCommand};
use crate::failure::Failure;

/// Runs `keygen`; `None` for every other command.
pub fn run_local(cli: &Cli) -> Option<Result<(), Failure>> {
    let CliCommand::Keygen { out } = &cli.command else {
        return None;
    };
    if cli.json {
        return Some(Err(Failure::Usage(
            "--json does not apply to `keygen`: it prints no answer of the daemon".to_owned(),
        )));
    }
    Some(keygen(out.as_deref()))
}

fn keygen(out: Option<&Path>) -> Result<(), Failure> {
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    // The same three lines as age-keygen writes.
    let created = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# created: {created}\n# public key: {public}\n{}\n",
        identity.to_string().expose_secret()
    );
    match out {
        Some(path) => {
            let written = OpenOptions::new()
                .write(true)
                .create_new(true)
                // create_new (O_EXCL) also refuses a symlink planted under the name.
                .mode(0o600)
                .open(path)
                .and_then(|mut file| {
                    file.write_all(text.as_bytes())?;
                    file.sync_all()
                });
            written.map_err(|e| {
                let why = match e.kind() {
                    io::ErrorKind::AlreadyExists => "it exists; an identity is never replaced",
                    _ => return Failure::Local(format!("can't write {}: {e}", path.display())),
                };
                Failure::Local(format!("can't write {}: {why}", path.display()))
            })?;
            println!("{public}");
        }
        None => {
            print!("{text}");
            eprintln!("Public key: {public}");
        }
    }
    Ok(())
}
