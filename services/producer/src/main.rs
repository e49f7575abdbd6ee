//! `producer`: MySQL/MariaDB `product` table -> Kafka. Configuration: environment variables (see
//! `producer::config`). Stops gracefully on SIGTERM/SIGINT.

use anyhow::Context;
use common::config::Env;
use producer::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::from_process();
    common::telemetry::init(&env)?;
    let config = Config::from_env(&env)?;
    let app = Application::build(config)
        .await
        .context("producer cannot start")?;
    app.run_until_stopped(common::shutdown::signal_token())
        .await
        .context("producer stopped with an error")?;
    Ok(())
}
