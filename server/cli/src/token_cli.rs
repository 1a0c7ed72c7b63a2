//! `taskplane token create|revoke|list`: manages bearer tokens where the
//! server reads them, in its database or in a tokens file. It works on the
//! storage directly, not over gRPC, so the first admin token can be made
//! before anyone can call the server.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::client_cli::{Output, say};
use taskplane_server::QueueConfig;
use taskplane_server::auth::Role;
use taskplane_server::auth::tokens::{TokenRecord, TokensFile, issue};
use taskplane_server::store::{self, Store};

/// Where tokens are kept.
#[derive(Debug, Args)]
pub struct TokenStoreArgs {
    /// The server's database (as given to `taskplane serve`).
    #[arg(
        long,
        global = true,
        env = "TASKPLANE_DATABASE_URL",
        default_value = "sqlite://taskplane-data/taskplane.db"
    )]
    database_url: String,
    /// Keep tokens in this TOML file instead of the database (the server's
    /// --tokens-file).
    #[arg(long, global = true, env = "TASKPLANE_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// How answers are printed.
    #[arg(long, global = true, value_enum, default_value = "table")]
    output: Output,
}

/// `taskplane token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates a token and prints it once (only its SHA-256 is kept).
    Create {
        /// What it is for, e.g. billing-agent.
        #[arg(long)]
        name: String,
        /// client (enqueue, inspect), agent (connect, inspect) or admin (everything).
        #[arg(long, value_parser = Role::parse)]
        role: Role,
        /// A domain the token may act on; repeat for several. None: every domain.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Revokes a token by its id (the part after `tp_`).
    Revoke {
        /// The token's id.
        id: String,
    },
    /// Lists tokens (never their secrets).
    List,
}

/// Runs a token command.
pub async fn token(store_args: &TokenStoreArgs, command: TokenCommand) -> anyhow::Result<()> {
    match &store_args.tokens_file {
        Some(path) => in_file(path, store_args.output, command),
        None => {
            let store = store::open(&store_args.database_url, &QueueConfig::default()).await?;
            in_database(store.as_ref(), store_args.output, command).await
        }
    }
}

fn in_file(path: &std::path::Path, output: Output, command: TokenCommand) -> anyhow::Result<()> {
    let mut file = TokensFile::load(path).map_err(anyhow::Error::msg)?;
    match command {
        TokenCommand::Create {
            name,
            role,
            domains,
        } => {
            let issued = issue(&name, role, domains).map_err(anyhow::Error::msg)?;
            file.add(&issued);
            file.save(path).map_err(anyhow::Error::msg)?;
            print_created(&issued.record, &issued.token, output);
        }
        TokenCommand::Revoke { id } => {
            if !file.revoke(&id) {
                anyhow::bail!(
                    "no token has id '{id}' in {}: see `taskplane token list`",
                    path.display()
                );
            }
            file.save(path).map_err(anyhow::Error::msg)?;
            eprintln!(
                "revoked {id}; servers reading {} drop it within their reload interval",
                path.display()
            );
        }
        TokenCommand::List => print_list(&file.records(), output),
    }
    Ok(())
}

async fn in_database(
    store: &dyn Store,
    output: Output,
    command: TokenCommand,
) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            domains,
        } => {
            let issued = issue(&name, role, domains).map_err(anyhow::Error::msg)?;
            store.create_token(&issued).await?;
            print_created(&issued.record, &issued.token, output);
        }
        TokenCommand::Revoke { id } => {
            if !store.revoke_token(&id).await? {
                anyhow::bail!("no live token has id '{id}': see `taskplane token list`");
            }
            eprintln!(
                "revoked {id}; servers refuse it within their token cache time (--token-cache-ttl)"
            );
        }
        TokenCommand::List => print_list(&store.list_tokens().await?, output),
    }
    Ok(())
}

fn describe(record: &TokenRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "name": record.name,
        "role": record.role.as_str(),
        "domains": record.domains.to_list(),
        "created_at": record.created_at.to_rfc3339(),
        "revoked_at": record.revoked_at.map(|at| at.to_rfc3339()),
    })
}

fn print_created(record: &TokenRecord, token: &str, output: Output) {
    match output {
        Output::Json => {
            let mut value = describe(record);
            value["token"] = token.into();
            say!("{value}");
        }
        Output::Table => {
            say!("{token}");
            eprintln!(
                "created {} token '{}' (id {}); it is shown only now: store it as a secret",
                record.role.as_str(),
                record.name,
                record.id
            );
        }
    }
}

fn print_list(records: &[TokenRecord], output: Output) {
    match output {
        Output::Json => say!(
            "{}",
            serde_json::Value::Array(records.iter().map(describe).collect())
        ),
        Output::Table => {
            say!(
                "{:<14} {:<24} {:<7} {:<30} STATE",
                "ID",
                "NAME",
                "ROLE",
                "DOMAINS"
            );
            for record in records {
                let domains = match record.domains.to_list() {
                    list if list.is_empty() => "*".to_owned(),
                    list => list.join(","),
                };
                let state = match record.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".to_owned(),
                };
                say!(
                    "{:<14} {:<24} {:<7} {:<30} {state}",
                    record.id,
                    record.name,
                    record.role.as_str(),
                    domains
                );
            }
        }
    }
}
