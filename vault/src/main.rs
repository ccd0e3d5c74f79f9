//! The `agentward-vault` binary.

use agentward_vault::app::{router, Vault};
use agentward_vault::cli::Args;
use agentward_vault::config::LogFormat;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let (config, keys) = match args.load() {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("agentward-vault: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    if args.check {
        println!(
            "configuration ok: {} connection(s), {} client(s), key {:?}",
            config.connections.len(),
            config.clients.len(),
            keys.current_id()
        );
        return std::process::ExitCode::SUCCESS;
    }
    if args.rekey {
        return rekey(&config, &keys).await;
    }
    match serve(config, keys).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--rekey`: one pass over the store, a summary on stdout.
async fn rekey(
    config: &agentward_vault::config::Config,
    keys: &agentward_vault::seal::Keyring,
) -> std::process::ExitCode {
    let store = match agentward_vault::app::open_store(config, keys).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("agentward-vault: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = agentward_vault::rekey::rekey(&store, keys).await;
    store.close().await;
    match report {
        Ok(r) => {
            println!(
                "rekey to {:?}: {} link(s) sealed anew, {} changed meanwhile (rewritten by a vault), {} unreadable; key ids in use: {}",
                keys.current_id(),
                r.resealed,
                r.changed_meanwhile,
                r.unreadable,
                if r.key_ids_in_use.is_empty() { "none".to_string() } else { r.key_ids_in_use.join(", ") }
            );
            if r.unreadable == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("agentward-vault: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: agentward_vault::config::Config,
    keys: agentward_vault::seal::Keyring,
) -> Result<(), String> {
    let listen = config.listen.clone();
    let vault = Vault::build(config, keys).await?;
    let warm = vault.clone();
    tokio::spawn(async move { warm.subjects.refresh_stale().await });
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, database = vault.store.backend(), key_id = vault.keys.current_id(), "agentward-vault listening");
    let served = axum::serve(listener, router(vault.clone()))
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| format!("server error: {e}"));
    // Flush the audit queue whether or not the server ended cleanly.
    vault.shutdown().await;
    served
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
