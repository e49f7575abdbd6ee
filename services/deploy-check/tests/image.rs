//! docker/Dockerfile, its health probe and its `prepare-dirs`. The image is built and run by the
//! compose end-to-end test (scripts/compose-e2e.sh, with a Docker engine); here, without one, the
//! two small programs are compiled exactly as the Dockerfile compiles them and run against real
//! HTTP servers and real folders, and the Dockerfile's structure is checked.

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

/// The rustc flags the Dockerfile builds its small programs with.
const RUSTC_FLAGS: &[&str] = &[
    "--edition",
    "2021",
    "-C",
    "opt-level=s",
    "-C",
    "strip=symbols",
    "-C",
    "panic=abort",
];

/// Compiles docker/NAME.rs with the Dockerfile's flags into the test's temporary folder.
fn compile(name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let status = Command::new(rustc)
        .args(RUSTC_FLAGS)
        .arg(repo_root().join(format!("docker/{name}.rs")))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "docker/{name}.rs does not compile");
    out
}

/// The probe, built once per test run with the same rustc flags as in the Dockerfile.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| compile("healthcheck"))
}

/// prepare-dirs, built once per test run like the probe.
fn prepare_dirs() -> &'static Path {
    static PREPARE: OnceLock<PathBuf> = OnceLock::new();
    PREPARE.get_or_init(|| compile("prepare-dirs"))
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
    let build = build.split_whitespace().collect::<Vec<_>>().join(" ");
    let flags = RUSTC_FLAGS.join(" ");
    for (source, out) in [
        ("docker/healthcheck.rs", "/out/bin/healthcheck"),
        ("docker/prepare-dirs.rs", "/out/bin/prepare-dirs"),
    ] {
        assert!(
            build.contains(&format!("rustc {flags} {source} -o {out}")),
            "{source} is built like in these tests: {build}"
        );
    }
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

/// A fresh folder for one prepare-dirs test: DIR/out/{a/b/file, link -> outside}, DIR/outside.
fn tree(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("prepare-dirs-trees")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("out/a/b")).expect("mkdir");
    std::fs::write(dir.join("out/a/b/file"), "x").expect("write");
    std::fs::create_dir_all(dir.join("outside")).expect("mkdir");
    std::os::unix::fs::symlink(dir.join("outside"), dir.join("out/link")).expect("symlink");
    dir
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (meta.uid(), meta.gid())
}

fn run_prepare_dirs(args: &[&str]) -> (i32, String) {
    let output = Command::new(prepare_dirs())
        .args(args)
        .output()
        .expect("prepare-dirs runs");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// What the compose file's dirs-init does on a host whose checkout belongs to someone else than the
/// containers' user (root on CI). As root, the folder and everything in it changes hands (links
/// themselves, not what they point to); as anyone else, the same call must fail, saying why and
/// what to do.
#[test]
fn prepare_dirs_hands_a_folder_tree_to_another_user_or_says_why_it_cannot() {
    let dir = tree("other_user");
    let out = dir.join("out");
    let me = owner(&dir);
    let (uid, gid) = (me.0 + 4242, me.1 + 4343);
    let (code, said) = run_prepare_dirs(&[&format!("{uid}:{gid}"), out.to_str().unwrap()]);
    if me.0 == 0 {
        assert_eq!(code, 0, "{said}");
        for path in ["out", "out/a", "out/a/b", "out/a/b/file", "out/link"] {
            assert_eq!(owner(&dir.join(path)), (uid, gid), "{path}: {said}");
        }
        assert_eq!(
            owner(&dir.join("outside")),
            me,
            "a link's target is left alone"
        );
        assert!(said.contains("handed 5 entries"), "{said}");
        // A second run finds nothing to do.
        let (code, said) = run_prepare_dirs(&[&format!("{uid}:{gid}"), out.to_str().unwrap()]);
        assert_eq!(code, 0, "{said}");
        assert!(said.contains(&format!("is owned by {uid}:{gid}")), "{said}");
    } else {
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains("cannot make") && said.contains(".env"),
            "{said}"
        );
        assert_eq!(owner(&out), me);
    }
}

#[test]
fn prepare_dirs_leaves_a_folder_of_the_right_user_alone() {
    let dir = tree("same_user");
    let out = dir.join("out");
    let (uid, gid) = owner(&dir);
    let (code, said) = run_prepare_dirs(&[&format!("{uid}:{gid}"), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("is owned by {uid}:{gid}")), "{said}");
}

#[test]
fn prepare_dirs_rejects_bad_arguments_and_missing_folders() {
    let (code, said) = run_prepare_dirs(&["1000", "/tmp"]);
    assert_eq!(code, 2);
    assert!(said.contains("is not UID:GID"), "{said}");
    let (code, said) = run_prepare_dirs(&["1000:1000"]);
    assert_eq!(code, 2, "{said}");
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("prepare-dirs-trees/does-not-exist");
    let (code, said) = run_prepare_dirs(&["1000:1000", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        said.contains("cannot make") && said.contains("No such file"),
        "{said}"
    );
    let dir = tree("a_file");
    let file = dir.join("out/a/b/file");
    let (code, said) = run_prepare_dirs(&["1000:1000", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(said.contains("not a directory"), "{said}");
}
