//! The suite's own pipeline: a tansu broker with sqlite storage, a MariaDB server on a data
//! directory of its own, the dev schema registry, product-updater, producer and consumers, all on
//! ports of the suite (`--port-base`), never the shared test bed's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;
use tokio::sync::Mutex;

use crate::eventlog::EventLog;
use crate::procs::{Proc, Shared, RUN_MARKER_VAR};

pub const TOPIC: &str = "product_updates";
pub const PARTITIONS: i32 = 10;
pub const GROUP: &str = "chaos_consumers";
pub const DATABASE: &str = "chaos";
/// Slots of the five regular consumers; 6 and 7 are the scaling event's.
pub const REGULAR_SLOTS: [u32; 5] = [1, 2, 3, 4, 5];
pub const SCALE_SLOTS: [u32; 2] = [6, 7];

/// The suite's ports, all derived from one base so they can be moved together.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub fn updater(self) -> u16 {
        self.base + 1
    }
    pub fn producer(self) -> u16 {
        self.base + 2
    }
    pub fn database(self) -> u16 {
        self.base + 6
    }
    pub fn consumer(self, slot: u32) -> u16 {
        self.base + 10 + slot as u16
    }
    pub fn registry(self) -> u16 {
        self.base + 81
    }
    pub fn broker(self) -> u16 {
        self.base + 92
    }
    pub fn all(self) -> Vec<(String, u16)> {
        let mut ports = vec![
            ("product-updater".to_owned(), self.updater()),
            ("producer".to_owned(), self.producer()),
            ("database".to_owned(), self.database()),
            ("registry".to_owned(), self.registry()),
            ("broker".to_owned(), self.broker()),
        ];
        for slot in REGULAR_SLOTS.iter().chain(&SCALE_SLOTS) {
            ports.push((format!("consumer_{slot}"), self.consumer(*slot)));
        }
        ports
    }
}

/// Where the run keeps its files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The run's folder (kept after the run).
    pub work: PathBuf,
    /// One log file per process.
    pub process_logs: PathBuf,
    pub pids: PathBuf,
    pub consumer_logs: PathBuf,
    pub watermark: PathBuf,
    /// MariaDB's data directory and socket: under the system's temporary folder, which the
    /// `mysql` user can always reach (a checkout under a private home may not be).
    pub database_dir: PathBuf,
}

impl Layout {
    pub fn new(work: &Path, port_base: u16) -> Self {
        Self {
            work: work.to_owned(),
            process_logs: work.join("logs"),
            pids: work.join("pids"),
            consumer_logs: work.join("consumer_logs"),
            watermark: work.join("time_track/last_read_timestamp.json"),
            database_dir: std::env::temp_dir().join(format!("productstream-chaos-{port_base}")),
        }
    }

    pub fn slot_dir(&self, slot: u32) -> PathBuf {
        self.consumer_logs.join(format!("consumer_{slot}"))
    }
}

/// The programs the suite runs.
#[derive(Debug, Clone)]
pub struct Programs {
    pub updater: PathBuf,
    pub producer: PathBuf,
    pub consumer: PathBuf,
    pub registry: PathBuf,
    pub tansu: PathBuf,
    pub mariadbd: PathBuf,
    pub install_db: PathBuf,
}

impl Programs {
    /// The services of the same build profile as this program, tansu and MariaDB's server.
    pub fn find(bin_dir: &Path) -> anyhow::Result<Self> {
        let service = |name: &str| -> anyhow::Result<PathBuf> {
            let path = bin_dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{} is missing: build it (the suite does unless --no-build)",
                path.display()
            );
            Ok(path)
        };
        let home_tansu = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|d| d.join("bin/tansu"));
        let tansu = std::env::var_os("TANSU_BIN")
            .map(PathBuf::from)
            .or_else(|| which("tansu"))
            .or(home_tansu.filter(|p| p.is_file()))
            .context("tansu is not installed: run scripts/install-tansu.sh (or set TANSU_BIN)")?;
        let mariadbd = which("mariadbd")
            .or_else(|| Some(PathBuf::from("/usr/sbin/mariadbd")).filter(|p| p.is_file()))
            .context(
                "mariadbd is not installed: run scripts/testbed.sh up (it installs MariaDB)",
            )?;
        let install_db = which("mariadb-install-db")
            .or_else(|| which("mysql_install_db"))
            .context("mariadb-install-db is not installed (Debian package mariadb-server)")?;
        Ok(Self {
            updater: service("product-updater")?,
            producer: service("producer")?,
            consumer: service("consumer")?,
            registry: service("dev-schema-registry")?,
            tansu,
            mariadbd,
            install_db,
        })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Everything the suite runs, and how to reach it.
pub struct Cluster {
    pub ports: Ports,
    pub layout: Layout,
    pub broker: Shared,
    pub database: Shared,
    pub registry: Shared,
    pub updater: Shared,
    pub producer: Shared,
    pub consumers: BTreeMap<u32, Shared>,
    http: reqwest::Client,
}

impl Cluster {
    pub fn new(
        programs: &Programs,
        ports: Ports,
        layout: Layout,
        run_marker: &str,
        updates_per_second: u32,
        service_env: &[(String, String)],
        repo: &Path,
    ) -> Self {
        let p = &layout;
        let shared = |proc: Proc| Arc::new(Mutex::new(proc));
        let marker = (RUN_MARKER_VAR.to_owned(), run_marker.to_owned());
        let make =
            |name: &str, program: &Path, args: Vec<OsString>, mut env: Vec<(String, String)>| {
                env.push(marker.clone());
                shared(Proc::new(
                    name,
                    program,
                    args,
                    env,
                    &p.process_logs,
                    &p.pids,
                    &p.work,
                ))
            };
        let kv = |k: &str, v: String| (k.to_owned(), v);

        let broker_url = format!("tcp://127.0.0.1:{}", ports.broker());
        let broker = make(
            "broker",
            &programs.tansu,
            [
                "broker",
                "--listener-url",
                &broker_url,
                "--advertised-listener-url",
                &broker_url,
                // Relative to the broker's working directory, the run's folder (tansu drops the
                // leading `/` of an absolute path).
                "--storage-engine",
                "sqlite://tansu.db",
            ]
            .map(OsString::from)
            .to_vec(),
            // TANSU_LOG (a RUST_LOG filter) shows the group coordinator's decisions, e.g.
            // `warn,tansu_broker::coordinator::group=debug`.
            vec![kv(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )],
        );

        let db = &p.database_dir;
        let mut db_args: Vec<OsString> = vec![
            "--no-defaults".into(),
            format!("--datadir={}", db.join("data").display()).into(),
            format!("--port={}", ports.database()).into(),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", db.join("mysqld.sock").display()).into(),
            format!("--pid-file={}", db.join("mysqld.pid").display()).into(),
            "--innodb-buffer-pool-size=64M".into(),
            "--max-connections=300".into(),
        ];
        if running_as_root() {
            // mariadbd refuses to run as root unless told which user to become.
            db_args.push("--user=mysql".into());
        }
        let database = make("database", &programs.mariadbd, db_args, Vec::new());

        let registry = make(
            "registry",
            &programs.registry,
            Vec::new(),
            vec![
                kv("REGISTRY_ADDR", format!("127.0.0.1:{}", ports.registry())),
                // Kept across its restarts: schema ids must not change.
                kv(
                    "REGISTRY_DATA_FILE",
                    p.work.join("registry.json").display().to_string(),
                ),
                kv("RUST_LOG", "info".into()),
            ],
        );

        let common_env = vec![
            kv(
                "DATABASE_URL",
                format!("mysql://root@127.0.0.1:{}/{DATABASE}", ports.database()),
            ),
            kv(
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", ports.broker()),
            ),
            kv(
                "SCHEMA_REGISTRY_URL",
                format!("http://127.0.0.1:{}", ports.registry()),
            ),
            kv("TOPIC", TOPIC.into()),
            kv("TOPIC_PARTITIONS", PARTITIONS.to_string()),
            kv("WATERMARK_PATH", p.watermark.display().to_string()),
            kv("CONSUMER_LOGS_DIR", p.consumer_logs.display().to_string()),
            kv("CONSUMER_GROUP", GROUP.into()),
            // tansu 0.6 returns nothing of a record batch when a fetch starts in its middle.
            kv("CONSUMER_RESUME_REWIND_RECORDS", "1000".into()),
            kv(
                "PRODUCTS_CSV",
                repo.join("data/products.csv").display().to_string(),
            ),
            kv("LOG_FORMAT", "text".into()),
            kv("RUST_LOG", "info".into()),
            kv("NO_COLOR", "1".into()),
        ];
        // `--env` settings come last, so they win over the suite's.
        let with = |extra: Vec<(String, String)>| {
            let mut env = common_env.clone();
            env.extend(extra);
            env.extend(service_env.iter().cloned());
            env
        };
        let updater = make(
            "product-updater",
            &programs.updater,
            Vec::new(),
            with(vec![
                kv("HTTP_ADDR", format!("127.0.0.1:{}", ports.updater())),
                kv("UPDATES_PER_SECOND", updates_per_second.to_string()),
            ]),
        );
        let producer = make(
            "producer",
            &programs.producer,
            Vec::new(),
            with(vec![kv(
                "HTTP_ADDR",
                format!("127.0.0.1:{}", ports.producer()),
            )]),
        );
        let consumers = REGULAR_SLOTS
            .iter()
            .chain(&SCALE_SLOTS)
            .map(|&slot| {
                let proc = make(
                    &format!("consumer_{slot}"),
                    &programs.consumer,
                    Vec::new(),
                    with(vec![
                        kv("HTTP_ADDR", format!("127.0.0.1:{}", ports.consumer(slot))),
                        kv("CONSUMER_SLOT", format!("consumer_{slot}")),
                    ]),
                );
                (slot, proc)
            })
            .collect();
        Self {
            ports,
            layout,
            broker,
            database,
            registry,
            updater,
            producer,
            consumers,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("reqwest client with static settings"),
        }
    }

    pub fn all(&self) -> Vec<Shared> {
        let mut all = vec![
            self.broker.clone(),
            self.database.clone(),
            self.registry.clone(),
            self.updater.clone(),
            self.producer.clone(),
        ];
        all.extend(self.consumers.values().cloned());
        all
    }

    pub fn consumer(&self, slot: u32) -> Shared {
        self.consumers[&slot].clone()
    }

    /// `mysql://root@127.0.0.1:<port>` (no database).
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.ports.database())
    }

    pub fn database_url(&self) -> String {
        format!("{}/{DATABASE}", self.server_url())
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.broker())
    }

    pub fn registry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.registry())
    }

    /// Creates MariaDB's data directory (`mariadb-install-db`: root without a password).
    pub fn install_database(&self, programs: &Programs) -> anyhow::Result<()> {
        let dir = &self.layout.database_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("remove the old data directory {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let mut command = std::process::Command::new(&programs.install_db);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        if running_as_root() {
            let status = std::process::Command::new("chown")
                .args(["mysql:mysql"])
                .arg(dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown mysql {} failed", dir.display());
            command.arg("--user=mysql");
        }
        let output = command.output().context("run mariadb-install-db")?;
        if !output.status.success() {
            bail!(
                "mariadb-install-db failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    pub async fn broker_up(&self) -> bool {
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(("127.0.0.1", self.ports.broker())),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    pub async fn database_up(&self) -> bool {
        let connect = sqlx::MySqlConnection::connect(&self.server_url());
        match tokio::time::timeout(Duration::from_secs(3), connect).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            _ => false,
        }
    }

    pub async fn http_ok(&self, port: u16, path: &str) -> bool {
        self.http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub async fn http_text(&self, port: u16, path: &str) -> Option<String> {
        let response = self
            .http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// The partitions consumer `slot` reports owning, if it answers.
    pub async fn assignment(&self, slot: u32) -> Option<Vec<i64>> {
        let text = self
            .http_text(self.ports.consumer(slot), "/assignments")
            .await?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(
            value["partitions"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_i64())
                .collect(),
        )
    }

    pub async fn topic_exists(&self) -> bool {
        let kafka = common::kafka::KafkaConfig::plaintext(&self.bootstrap());
        matches!(
            common::kafka::partition_count(&kafka, TOPIC).await,
            Ok(Some(n)) if n == PARTITIONS
        )
    }

    /// Starts everything in order, each piece once the one it needs answers, and waits for the
    /// consumer group to share the partitions.
    pub async fn start_all(&self, events: &EventLog) -> anyhow::Result<()> {
        self.start_and_wait(&self.broker, Duration::from_secs(60), || self.broker_up())
            .await?;
        self.start_and_wait(&self.database, Duration::from_secs(120), || {
            self.database_up()
        })
        .await?;
        let registry = self.ports.registry();
        self.start_and_wait(&self.registry, Duration::from_secs(30), || {
            self.http_ok(registry, "/health")
        })
        .await?;
        // Seeding the table comes before the updater is ready.
        let updater = self.ports.updater();
        self.start_and_wait(&self.updater, Duration::from_secs(180), || {
            self.http_ok(updater, "/ready")
        })
        .await?;
        let producer = self.ports.producer();
        self.start_and_wait(&self.producer, Duration::from_secs(120), || async move {
            self.http_ok(producer, "/ready").await && self.topic_exists().await
        })
        .await?;
        for slot in REGULAR_SLOTS {
            self.consumer(slot).lock().await.start()?;
        }
        for slot in REGULAR_SLOTS {
            let port = self.ports.consumer(slot);
            self.start_and_wait(&self.consumer(slot), Duration::from_secs(60), || {
                self.http_ok(port, "/health")
            })
            .await?;
        }
        let settled = Instant::now();
        let outcome = wait_for(
            "the five consumers to share the 10 partitions",
            Duration::from_secs(120),
            || async {
                let mut owned = Vec::new();
                for slot in REGULAR_SLOTS {
                    owned.extend(self.assignment(slot).await.unwrap_or_default());
                }
                owned.sort_unstable();
                owned == (0..i64::from(PARTITIONS)).collect::<Vec<_>>()
            },
        )
        .await;
        match outcome {
            Ok(()) => events.note(
                "phase",
                &format!(
                    "group settled in {:.1} s: {}",
                    settled.elapsed().as_secs_f64(),
                    self.assignments_text().await
                ),
            ),
            Err(e) => events.note(
                "note",
                &format!("{e:#}; going on: {}", self.assignments_text().await),
            ),
        }
        Ok(())
    }

    /// Starts `proc` (if it is not running) and waits until `ready`; fails at once, with its
    /// last log lines, if it exits meanwhile.
    async fn start_and_wait<F, Fut>(
        &self,
        proc: &Shared,
        timeout: Duration,
        mut ready: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let name = {
            let mut p = proc.lock().await;
            p.start()?;
            p.name.clone()
        };
        let deadline = Instant::now() + timeout;
        loop {
            if ready().await {
                return Ok(());
            }
            let mut p = proc.lock().await;
            if !p.is_running() {
                bail!(
                    "{name} exited during start-up: {}",
                    crate::procs::last_lines(&p.log_path(), 5)
                );
            }
            drop(p);
            if Instant::now() >= deadline {
                bail!("{name} was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The group as the broker describes it.
    pub async fn group_text(&self) -> String {
        crate::group::describe(&self.bootstrap(), GROUP).await
    }

    /// `consumer_1=[0, 5] consumer_2=[...] ...` for every consumer that answers.
    pub async fn assignments_text(&self) -> String {
        let mut parts = Vec::new();
        for slot in self.consumers.keys() {
            if let Some(partitions) = self.assignment(*slot).await {
                parts.push(format!("consumer_{slot}={partitions:?}"));
            }
        }
        parts.join(" ")
    }

    /// Stops everything: the consumers (SIGTERM: they write, commit and leave), then the
    /// producer, the updater and the registry, then the broker and the database. Each group is
    /// signalled at once and waited for together (SIGKILL after 60 s).
    pub async fn stop_all(&self) {
        let consumers: Vec<Shared> = self.consumers.values().cloned().collect();
        stop_together(&consumers).await;
        stop_together(&[
            self.producer.clone(),
            self.updater.clone(),
            self.registry.clone(),
        ])
        .await;
        stop_together(&[self.broker.clone(), self.database.clone()]).await;
    }
}

async fn stop_together(procs: &[Shared]) {
    for proc in procs {
        let _ = proc.lock().await.signal(crate::procs::Signal::Term);
    }
    let waits: Vec<_> = procs
        .iter()
        .cloned()
        .map(|proc| {
            tokio::spawn(async move { proc.lock().await.wait_exit(Duration::from_secs(60)).await })
        })
        .collect();
    for wait in waits {
        let _ = wait.await;
    }
}

/// Polls `check` every 250 ms until it is true, or fails naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
