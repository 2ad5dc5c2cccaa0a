//! SIGTERM / SIGINT handling shared by every binary: the first signal cancels the token (graceful
//! drain), a second one exits at once.

use tokio_util::sync::CancellationToken;

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn on_signal(token: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("shutdown signal received; draining (send again to exit now)");
    token.cancel();
    wait_for_signal().await;
    tracing::warn!("second signal; exiting now");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
