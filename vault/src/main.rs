//! The `agentward-vault` binary.

use agentward_vault::app::{metrics_router, router, Vault};
use agentward_vault::cli::Args;
use agentward_vault::serve::Limits;
use clap::Parser;
use std::time::Duration;

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
    agentward_vault::logging::init(config.log_format);
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
    let limits = Limits {
        header_read_timeout: Duration::from_secs(config.header_read_timeout_seconds.max(1)),
        max_connections: config.max_connections,
        drain: Duration::from_secs(config.request_timeout_seconds.max(1)),
    };
    let listener = bind(&config.listen).await?;
    let metrics_listener = match &config.metrics_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let vault = Vault::build(config, keys).await?;
    let warm = vault.clone();
    tokio::spawn(async move {
        warm.subjects.refresh_stale().await;
        warm.users.refresh_stale().await;
    });
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    tracing::info!(%addr, metrics = ?metrics_addr, database = vault.store.backend(), key_id = vault.keys.current_id(), "agentward-vault listening");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let public = tokio::spawn(agentward_vault::serve::serve(
        listener,
        router(vault.clone()),
        limits,
        stopped.clone(),
    ));
    let metrics = metrics_listener.map(|listener| {
        tokio::spawn(agentward_vault::serve::serve(
            listener,
            metrics_router(vault.clone()),
            limits,
            stopped,
        ))
    });
    shutdown().await;
    let _ = stop.send(true);
    let served = public.await.map_err(|e| format!("server error: {e}"));
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    // Flush the audit queue whether or not the server ended cleanly.
    vault.shutdown().await;
    served
}

async fn bind(address: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))
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
