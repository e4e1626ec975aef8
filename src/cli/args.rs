//! The command line: what each command takes, with an example in its help. Parsed by the
//! binary (`src/main.rs`), which does the work.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "vallum",
    version,
    about = "Identity-aware gateway on Pingora, Pomerium-compatible",
    after_help = "Examples:\n  vallum demo                                  try it on loopback (http://app.localhost:8000)\n  vallum -c /etc/vallum/config.yaml            run the gateway\n  vallum check-config --pomerium config.yaml   what Vallum makes of a Pomerium config\n\nThe manual: docs/ (mdBook), installed under /usr/share/doc/vallum/ by the Debian package.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    #[command(
        after_help = "Example:\n  vallum run -c /etc/vallum/config.yaml --conf /etc/vallum/pingora.yaml -d"
    )]
    Run(RunArgs),
    /// Try Vallum on loopback: the gateway, a development identity provider and a whoami app.
    #[command(
        after_help = "Example:\n  vallum demo --port 8000    # then open http://app.localhost:8000"
    )]
    Demo {
        /// Gateway port; the demo identity provider and the whoami app take the next two.
        #[arg(long, default_value_t = 8000)]
        port: u16,
    },
    /// Validate config files and print a summary of their routes; exits non-zero on any error.
    #[command(after_help = "Example:\n  vallum check-config --pomerium /etc/pomerium/config.yaml")]
    CheckConfig {
        /// Also report, key by key, how Vallum treats a Pomerium config.
        #[arg(long)]
        pomerium: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Sign in to a route from a terminal and print a token for scripts
    /// (`curl -H "Authorization: Pomerium $(vallum login --print-token URL)" URL`).
    #[command(
        after_help = "Example:\n  curl -H \"Authorization: Pomerium $(vallum login --print-token https://app.example.com)\" https://app.example.com/api"
    )]
    Login {
        /// A URL on the route, e.g. https://app.example.com
        url: String,
        /// Reuse the cached token if the gateway still accepts it; sign in only if not.
        #[arg(long)]
        print_token: bool,
        /// Print `{"host", "token"}` as JSON.
        #[arg(long)]
        json: bool,
        /// Print the sign-in URL only; do not try to open a browser.
        #[arg(long)]
        no_browser: bool,
        /// Do not verify the gateway's TLS certificate (test setups only).
        #[arg(long)]
        insecure: bool,
        /// How long to wait for the sign-in, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Carry local TCP connections to a tunnel route (`from: tcp+https://HOST:PORT`).
    #[command(
        after_help = "Example:\n  vallum tcp db.example.com:5432 --listen 127.0.0.1:5432 &  psql -h 127.0.0.1"
    )]
    Tcp {
        /// The route's HOST:PORT, e.g. db.example.com:5432
        target: String,
        /// Local address to accept connections on.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The gateway's URL (default: https://HOST).
        #[arg(long)]
        gateway: Option<String>,
        /// Token to use (default: $VALLUM_TOKEN, else the one `vallum login` cached for the gateway URL).
        /// Tokens are base64url and may begin with `-`: taken as a value, never as a flag.
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
        /// Do not verify the gateway's TLS certificate (test setups only).
        #[arg(long)]
        insecure: bool,
    },
    /// List or revoke sessions in the configured store (the local database, Redis or PostgreSQL).
    #[command(
        after_help = "Example:\n  vallum sessions revoke --user alice@example.com -c /etc/vallum/config.yaml"
    )]
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// List, approve or remove users' WebAuthn devices in the configured store (file, Redis or PostgreSQL).
    #[command(
        after_help = "Example:\n  vallum devices approve --user alice@example.com --device ID -c /etc/vallum/config.yaml"
    )]
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum DevicesAction {
    /// List a user's enrolled devices.
    List {
        /// The user's email or IdP subject.
        #[arg(long)]
        user: String,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Mark a device approved (for `device: {approved: true}`).
    Approve {
        #[arg(long)]
        user: String,
        /// The id `vallum devices list` shows: base64url, so it may start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        device: String,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Withdraw a device's approval.
    Unapprove {
        #[arg(long)]
        user: String,
        /// The id `vallum devices list` shows: base64url, so it may start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        device: String,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Remove a device; sessions that proved it lose the proof at once.
    Remove {
        #[arg(long)]
        user: String,
        /// The id `vallum devices list` shows: base64url, so it may start with `-`.
        #[arg(long, allow_hyphen_values = true)]
        device: String,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum SessionsAction {
    /// List a user's live sessions.
    List {
        /// The user's email (or IdP subject for users without one).
        #[arg(long)]
        user: String,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// End sessions at once on every node: one session, or all of a user's.
    Revoke {
        #[arg(long, conflicts_with = "session", required_unless_present = "session")]
        user: Option<String>,
        /// A session id (base64url, so it may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        session: Option<String>,
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Vallum (Pomerium-compatible) config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Take over the listening sockets of a running Vallum (zero-downtime binary upgrade).
    #[arg(short = 'u', long)]
    pub upgrade: bool,
    /// Run in the background.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Check that the server can start with this config, then exit.
    #[arg(short = 't', long)]
    pub test: bool,
    /// Pingora server conf (threads, pid_file, upgrade_sock, grace periods).
    #[arg(long = "conf", value_name = "FILE")]
    pub pingora_conf: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn ids_may_start_with_a_hyphen() {
        let cli = Cli::try_parse_from([
            "vallum",
            "devices",
            "approve",
            "--user",
            "a@example.com",
            "--device",
            "-Sdq56Y1u",
            "-c",
            "x.yaml",
        ])
        .unwrap();
        let Some(Command::Devices {
            action: DevicesAction::Approve { device, .. },
        }) = cli.command
        else {
            panic!("not parsed as devices approve: {cli:?}")
        };
        assert_eq!(device, "-Sdq56Y1u");
        let cli = Cli::try_parse_from([
            "vallum",
            "sessions",
            "revoke",
            "--session",
            "-x2Y",
            "-c",
            "x.yaml",
        ])
        .unwrap();
        assert!(format!("{cli:?}").contains("\"-x2Y\""), "{cli:?}");
    }
}
