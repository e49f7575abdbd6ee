//! `consumer`: joins the consumer group and writes what it owns to its slot's JSON log.

use anyhow::Context;
use common::config::Env;
use consumer::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::from_process();
    common::telemetry::init(&env)?;
    let config = Config::from_env(&env)?;
    let shutdown = common::shutdown::signal_token();
    let app = Application::build(config)
        .await
        .context("consumer failed to start")?;
    app.run_until_stopped(shutdown)
        .await
        .context("consumer stopped with an error")
}
