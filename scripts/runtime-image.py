#!/usr/bin/env python3
"""docker/Dockerfile's runtime stage, built from this machine's binaries instead of its builder
stage, so that the image the compose end-to-end test runs is described by docker/Dockerfile alone
(user, working directory, environment, command, health check, files). Used by
scripts/compose-images.sh.

    runtime-image.py packages DOCKERFILE
        prints the cargo packages the builder stage builds, one a line

    runtime-image.py check DOCKERFILE INSPECT_JSON
        compares `docker image inspect IMAGE` (saved in INSPECT_JSON) with the runtime stage's
        USER, WORKDIR, ENV, LABEL, CMD, ENTRYPOINT, EXPOSE and HEALTHCHECK; prints each
        difference and exits 1 if there is any

    runtime-image.py stage DOCKERFILE REPO RELEASE_DIR BASE_IMAGE CONTEXT
        fills the empty folder CONTEXT with a Dockerfile and what it copies:
        - the builder stage's last RUN is replayed with /out/... under CONTEXT/builder/ (its
          `mkdir -p`, its `cp target/release/...` from RELEASE_DIR, stripped, and its `rustc`
          probes, with the Dockerfile's own flags; its `cargo build` must already have been
          run on this machine: `packages` says which);
        - the runtime stage's own COPY sources are copied from REPO;
        - CONTEXT/Dockerfile is the runtime stage with `FROM BASE_IMAGE` and every
          `COPY --from=<builder>` reading CONTEXT/builder/ instead. Every other instruction is
          the Dockerfile's, unchanged.

Anything in those stages it does not know how to replay stops it with an error naming it.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

BUILDER_ROOT = "builder"


def fail(message):
    sys.exit(f"runtime-image.py: {message}")


def instructions(text):
    """The Dockerfile's instructions: continuation lines joined, comments and blank lines dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            out.append(current.strip())
        current = ""
    if current.strip():
        out.append(current.strip())
    return out


def stages(text):
    """[(name or None, FROM instruction, [instructions after it])]"""
    result = []
    for instruction in instructions(text):
        keyword = instruction.split(None, 1)[0].upper()
        if keyword == "FROM":
            words = instruction.split()
            name = words[3] if len(words) >= 4 and words[2].upper() == "AS" else None
            result.append((name, instruction, []))
        elif result:
            result[-1][2].append(instruction)
    if not result:
        fail("no FROM in the Dockerfile")
    return result


def copy_parts(instruction):
    """COPY [--flag=value]... SRC... DEST -> (flags, sources, dest)"""
    words = shlex.split(instruction)[1:]
    if words and words[0].startswith("["):
        fail(f"JSON-form COPY is not supported: {instruction}")
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if len(paths) < 2:
        fail(f"cannot read {instruction!r}")
    return flags, paths[:-1], paths[-1]


def runtime_and_builder(text):
    all_stages = stages(text)
    runtime = all_stages[-1]
    froms = set()
    for instruction in runtime[2]:
        if instruction.upper().startswith("COPY") or instruction.upper().startswith("ADD"):
            if instruction.upper().startswith("ADD"):
                fail(f"ADD in the runtime stage is not supported: {instruction}")
            flags, _, _ = copy_parts(instruction)
            froms.update(f.split("=", 1)[1] for f in flags if f.startswith("--from="))
    if len(froms) != 1:
        fail(f"the runtime stage must copy from exactly one stage, it copies from {sorted(froms)}")
    builder_name = froms.pop()
    builder = [s for s in all_stages if s[0] == builder_name]
    if not builder:
        fail(f"the runtime stage copies from {builder_name!r}, which is no stage of the Dockerfile")
    return runtime, builder[0]


def builder_run(builder):
    runs = [i for i in builder[2] if i.split(None, 1)[0].upper() == "RUN" and "cargo build" in i]
    if len(runs) != 1:
        fail(f"expected one RUN with `cargo build` in stage {builder[0]!r}, found {len(runs)}")
    return [c.strip() for c in runs[0].split(None, 1)[1].split("&&")]


def packages(dockerfile):
    _, builder = runtime_and_builder(open(dockerfile).read())
    found = []
    for command in builder_run(builder):
        words = shlex.split(command)
        if words[:2] == ["cargo", "build"]:
            for i, word in enumerate(words):
                if word in ("--package", "-p") and i + 1 < len(words):
                    found.append(words[i + 1])
                elif word.startswith("--package="):
                    found.append(word.split("=", 1)[1])
    if not found:
        fail("the builder's `cargo build` names no --package")
    return found


def under(context, path):
    """An absolute path of the builder's filesystem, inside CONTEXT/builder/."""
    if not path.startswith("/"):
        fail(f"expected an absolute path in the builder stage, got {path!r}")
    return os.path.join(context, BUILDER_ROOT, path.lstrip("/"))


def strip_copy(source, dest):
    shutil.copy2(source, dest)
    if shutil.which("strip"):
        # The Dockerfile builds with strip=symbols; this machine's release profile keeps them.
        subprocess.run(["strip", "--strip-all", dest], check=True)


def replay_builder(builder, repo, release_dir, context):
    for command in builder_run(builder):
        words = shlex.split(command)
        if words[:2] == ["cargo", "build"]:
            continue  # done by the caller, with this machine's release profile
        if words[:2] == ["mkdir", "-p"]:
            for path in words[2:]:
                os.makedirs(under(context, path), exist_ok=True)
        elif words[0] == "cp":
            *sources, dest = words[1:]
            dest = under(context, dest)
            for source in sources:
                if not source.startswith("target/release/"):
                    fail(f"cannot replay {command!r}: only target/release/ is copied")
                binary = os.path.join(release_dir, source[len("target/release/"):])
                if not os.path.isfile(binary):
                    fail(f"{binary} is missing: run `cargo build --release` for it first")
                target = os.path.join(dest, os.path.basename(binary)) if os.path.isdir(dest) else dest
                strip_copy(binary, target)
        elif words[0] == "rustc":
            args = words[1:]
            if "-o" not in args:
                fail(f"cannot replay {command!r}: no -o")
            at = args.index("-o")
            args[at + 1] = under(context, args[at + 1])
            args = [os.path.join(repo, a) if a.endswith(".rs") else a for a in args]
            rustc = os.environ.get("RUSTC", "rustc")
            subprocess.run([rustc, *args], check=True)
        else:
            fail(f"cannot replay the builder command {command!r}")


def stage(dockerfile, repo, release_dir, base_image, context):
    runtime, builder = runtime_and_builder(open(dockerfile).read())
    if os.path.exists(context) and os.listdir(context):
        fail(f"{context} is not empty")
    os.makedirs(context, exist_ok=True)
    replay_builder(builder, repo, release_dir, context)
    lines = [
        f"# Generated by scripts/runtime-image.py from {os.path.relpath(dockerfile, repo)}'s "
        f"runtime stage: only FROM and the builder's files differ.",
        f"FROM {base_image}",
    ]
    for instruction in runtime[2]:
        if instruction.split(None, 1)[0].upper() != "COPY":
            lines.append(instruction)
            continue
        flags, sources, dest = copy_parts(instruction)
        if any(f.startswith("--from=") for f in flags):
            flags = [f for f in flags if not f.startswith("--from=")]
            new_sources = []
            for source in sources:
                staged = under(context, source)
                if not os.path.exists(staged):
                    fail(f"the runtime stage copies {source} from the builder, which the replay did not produce")
                new_sources.append(os.path.relpath(staged, context) + ("/" if source.endswith("/") else ""))
            sources = new_sources
        else:
            for source in sources:
                origin = os.path.join(repo, source)
                target = os.path.join(context, source)
                if os.path.isdir(origin):
                    shutil.copytree(origin, target, dirs_exist_ok=True)
                elif os.path.isfile(origin):
                    os.makedirs(os.path.dirname(target) or context, exist_ok=True)
                    shutil.copy2(origin, target)
                else:
                    fail(f"the runtime stage copies {source}, which is not in {repo}")
        lines.append(" ".join(["COPY", *flags, *sources, dest]))
    with open(os.path.join(context, "Dockerfile"), "w") as out:
        out.write("\n".join(lines) + "\n")


DURATION_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def duration_ns(text):
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not match:
        fail(f"cannot read the duration {text!r}")
    return int(match.group(1)) * DURATION_NS[match.group(2)]


def expected_config(dockerfile):
    """What `docker image inspect` must show of the runtime stage: {field: value}."""
    runtime, _ = runtime_and_builder(open(dockerfile).read())
    expected = {"Env": {}, "Labels": {}, "ExposedPorts": set()}
    for instruction in runtime[2]:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "USER":
            expected["User"] = rest.strip()
        elif keyword == "WORKDIR":
            expected["WorkingDir"] = rest.strip()
        elif keyword in ("ENV", "LABEL"):
            pairs = dict(w.split("=", 1) for w in shlex.split(rest))
            expected["Env" if keyword == "ENV" else "Labels"].update(pairs)
        elif keyword in ("CMD", "ENTRYPOINT"):
            expected[keyword.capitalize() if keyword == "CMD" else "Entrypoint"] = json.loads(rest)
        elif keyword == "EXPOSE":
            expected["ExposedPorts"].update(p if "/" in p else f"{p}/tcp" for p in rest.split())
        elif keyword == "HEALTHCHECK":
            options, _, command = rest.partition(" CMD ")
            check = {"Test": ["CMD", *json.loads(command)]}
            for option in options.split():
                name, _, value = option.lstrip("-").partition("=")
                field = {"interval": "Interval", "timeout": "Timeout",
                         "start-period": "StartPeriod", "retries": "Retries"}.get(name)
                if not field:
                    fail(f"unknown HEALTHCHECK option {option}")
                check[field] = int(value) if field == "Retries" else duration_ns(value)
            expected["Healthcheck"] = check
    return expected


def check(dockerfile, inspect_json):
    """Compares an image's `docker image inspect` output with the runtime stage; prints the
    differences and exits 1 if there are any."""
    config = json.load(open(inspect_json))[0]["Config"]
    problems = []
    for field, want in expected_config(dockerfile).items():
        if field == "Env":
            have = dict(e.split("=", 1) for e in config.get("Env") or [])
            for name, value in want.items():
                if have.get(name) != value:
                    problems.append(f"ENV {name}: image {have.get(name)!r}, Dockerfile {value!r}")
        elif field == "Labels":
            have = config.get("Labels") or {}
            for name, value in want.items():
                if have.get(name) != value:
                    problems.append(f"LABEL {name}: image {have.get(name)!r}, Dockerfile {value!r}")
        elif field == "ExposedPorts":
            have = set((config.get("ExposedPorts") or {}).keys())
            if have != want:
                problems.append(f"EXPOSE: image {sorted(have)}, Dockerfile {sorted(want)}")
        elif field == "Healthcheck":
            have = config.get("Healthcheck") or {}
            for key, value in want.items():
                if have.get(key) != value:
                    problems.append(f"HEALTHCHECK {key}: image {have.get(key)!r}, Dockerfile {value!r}")
        elif config.get(field) != want:
            problems.append(f"{field}: image {config.get(field)!r}, Dockerfile {want!r}")
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


def main(argv):
    if len(argv) == 3 and argv[1] == "packages":
        print("\n".join(packages(argv[2])))
    elif len(argv) == 7 and argv[1] == "stage":
        stage(*argv[2:])
    elif len(argv) == 4 and argv[1] == "check":
        check(argv[2], argv[3])
    else:
        fail(
            "usage: runtime-image.py packages DOCKERFILE | "
            "stage DOCKERFILE REPO RELEASE_DIR BASE_IMAGE CONTEXT | check DOCKERFILE INSPECT_JSON"
        )


if __name__ == "__main__":
    main(sys.argv)
