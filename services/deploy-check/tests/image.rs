//! docker/Dockerfile and its health probe. There is no Docker engine here, so the image itself is
//! not built; the probe is compiled exactly as the Dockerfile compiles it and run against real
//! HTTP servers, and the Dockerfile's structure is checked.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread;

use deploy_check::repo_root;

fn dockerfile() -> String {
    std::fs::read_to_string(repo_root().join("docker/Dockerfile"))
        .expect("docker/Dockerfile exists")
}

/// The probe, built once per test run with the same rustc flags as in the Dockerfile.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("healthcheck");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let status = Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "-C",
                "opt-level=s",
                "-C",
                "strip=symbols",
                "-C",
                "panic=abort",
            ])
            .arg(repo_root().join("docker/healthcheck.rs"))
            .arg("-o")
            .arg(&out)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "docker/healthcheck.rs does not compile");
        out
    })
}

/// Serves one HTTP request with `status_line`, returns the request line received.
fn serve_once(status_line: &'static str) -> (String, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut request_line = String::new();
        reader.read_line(&mut request_line).expect("request line");
        // Read the headers up to the blank line.
        let mut line = String::new();
        while reader.read_line(&mut line).expect("header") > 2 {
            line.clear();
        }
        let mut stream = stream;
        write!(
            stream,
            "{status_line}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        )
        .expect("respond");
        request_line
    });
    (format!("http://{addr}"), handle)
}

fn run_probe(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(probe());
    command.args(args).env_remove("HEALTHCHECK_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("probe runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn probe_passes_on_2xx_and_sends_a_get_for_the_path() {
    let (base, server) = serve_once("HTTP/1.1 200 OK");
    let (ok, stderr) = run_probe(&[&format!("{base}/health")], &[]);
    assert!(ok, "probe failed on 200: {stderr}");
    assert_eq!(
        server.join().expect("server").trim_end(),
        "GET /health HTTP/1.0"
    );
}

#[test]
fn probe_fails_on_an_error_status_and_says_which() {
    let (base, server) = serve_once("HTTP/1.1 503 Service Unavailable");
    let (ok, stderr) = run_probe(&[&format!("{base}/health")], &[]);
    server.join().expect("server");
    assert!(!ok, "probe passed on 503");
    assert!(stderr.contains("503"), "{stderr}");
}

#[test]
fn probe_fails_when_nothing_listens() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    }; // closed again here
    let (ok, stderr) = run_probe(&[&format!("http://127.0.0.1:{port}/health")], &[]);
    assert!(!ok);
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn probe_takes_its_url_from_the_environment_when_not_given() {
    let (base, server) = serve_once("HTTP/1.1 204 No Content");
    let (ok, stderr) = run_probe(&[], &[("HEALTHCHECK_URL", &format!("{base}/ready"))]);
    assert!(ok, "{stderr}");
    assert!(server.join().expect("server").starts_with("GET /ready "));
}

#[test]
fn probe_rejects_what_it_cannot_speak() {
    let (ok, stderr) = run_probe(&["https://127.0.0.1:1/health"], &[]);
    assert!(!ok);
    assert!(stderr.contains("only http://"), "{stderr}");
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile().lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            current.push_str(continued);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            if !current.trim().is_empty() {
                out.push(current.trim().to_owned());
            }
            current.clear();
        }
    }
    out
}

#[test]
fn dockerfile_caches_dependencies_before_copying_the_sources() {
    let lines = instructions();
    let cook = lines
        .iter()
        .position(|l| {
            l.starts_with("RUN") && l.contains("cargo chef cook") && l.contains("--release")
        })
        .expect("a `cargo chef cook --release` step");
    let recipe_copy = lines
        .iter()
        .position(|l| l.starts_with("COPY") && l.contains("recipe.json"))
        .expect("the recipe is copied in");
    let sources_copy = lines
        .iter()
        .rposition(|l| l == "COPY . .")
        .expect("the sources are copied in");
    let build = lines
        .iter()
        .position(|l| l.starts_with("RUN") && l.contains("cargo build --release"))
        .expect("a release build");
    assert!(
        recipe_copy < cook && cook < sources_copy && sources_copy < build,
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("cargo chef prepare")));
}

#[test]
fn dockerfile_builds_the_three_services_and_not_the_dev_registry() {
    let lines = instructions();
    let build = lines
        .iter()
        .find(|l| l.contains("cargo build --release"))
        .expect("a release build");
    for package in ["product-updater", "producer", "consumer"] {
        assert!(build.contains(&format!("--package {package}")), "{build}");
        assert!(
            build.contains(&format!("target/release/{package}")),
            "{package} is copied out: {build}"
        );
    }
    assert!(!dockerfile()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .any(|l| l.contains("dev-schema-registry")));
    assert!(
        build.contains("docker/healthcheck.rs"),
        "the probe is built like in this test: {build}"
    );
}

#[test]
fn runtime_stage_is_small_non_root_and_health_checked() {
    let lines = instructions();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM"))
        .expect("FROM");
    let runtime = &lines[last_from..];
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM")).count() >= 3,
        "multi-stage"
    );
    let user = runtime
        .iter()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "USER {user}"
    );
    let healthcheck = runtime
        .iter()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK");
    assert!(
        healthcheck.contains("/usr/local/bin/healthcheck") && healthcheck.contains(":8080/health")
    );
    for dir in ["schemas/", "data/"] {
        assert!(
            runtime
                .iter()
                .any(|l| l.starts_with(&format!("COPY {dir}"))),
            "runtime copies {dir}"
        );
    }
    let env = runtime
        .iter()
        .filter(|l| l.starts_with("ENV"))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(env.contains("HTTP_ADDR=0.0.0.0:8080"), "{env}");
    // The runtime base: an ARG default that names a slim or distroless Debian 12 image.
    let base = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUNTIME_IMAGE="))
        .expect("ARG RUNTIME_IMAGE");
    assert!(
        base.contains("distroless") || base.contains("slim"),
        "{base}"
    );
    // zlib linked statically: distroless has no libz.
    assert!(lines.iter().any(|l| l.contains("LIBZ_SYS_STATIC=1")));
}

#[test]
fn build_context_leaves_out_build_output_and_local_state() {
    let ignore =
        std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore exists");
    let entries: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for needed in [
        "/target/",
        "/.git/",
        "/.testbed/",
        "/consumer_logs/",
        "/time_track/",
    ] {
        assert!(entries.contains(&needed), ".dockerignore lacks {needed}");
    }
    for kept in ["schemas", "data", "services", "Cargo.toml", "docker"] {
        assert!(
            !entries.iter().any(|e| e.trim_matches('/') == kept),
            ".dockerignore must not exclude {kept}"
        );
    }
}
