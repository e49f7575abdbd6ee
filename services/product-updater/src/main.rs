//! The product-updater binary: configuration, telemetry, build, run until SIGTERM/SIGINT.

use anyhow::Context;
use common::config::Env;
use product_updater::{Application, Config};

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("product-updater: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let env = Env::from_process();
    common::telemetry::init(&env)?;
    let config = Config::from_env(&env)?;
    tracing::info!(?config, "starting product-updater");
    let application = Application::build(config).await.context("cannot start")?;
    application
        .run_until_stopped(common::shutdown::signal_token())
        .await
        .context("stopped on an error")?;
    Ok(())
}
