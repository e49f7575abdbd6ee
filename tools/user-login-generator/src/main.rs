//! The user-login-generator binary: configuration, telemetry, produce until done or SIGTERM/SIGINT.
//! Exits with status 1 and a one-line message on a bad setting or a fatal Kafka error.

use anyhow::Context;
use common::config::Env;
use user_login_generator::Config;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("user-login-generator: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let env = Env::from_process();
    common::telemetry::init(&env)?;
    let config = Config::from_env(&env)?;
    tracing::info!(?config, "starting user-login-generator");
    user_login_generator::run(&config, common::shutdown::signal_token())
        .await
        .context("stopped on an error")?;
    Ok(())
}
