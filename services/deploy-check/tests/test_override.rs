//! docker-compose.test.yml, the override the compose end-to-end test (scripts/compose-e2e.sh)
//! runs docker-compose.yml with: it may swap only where the images come from. Everything else of
//! the merged configuration (definitions, health checks, dependencies, mounts, replicas,
//! environment, networks, volumes) must be exactly docker-compose.yml's, so that what the test
//! runs is what users run.

use std::collections::BTreeSet;

use deploy_check::{repo_root, Compose};
use serde_json::Value;

const OVERRIDE: &str = "docker-compose.test.yml";
/// The only keys of a service the override may change.
const SWAPPED: &[&str] = &["image", "pull_policy", "build"];
/// Our own services: their image is built by scripts/compose-images.sh, not by compose.
const OURS: &[&str] = &["product-updater", "producer", "consumer", "dirs-init"];
/// No image can be made for it here (Grafana is not packaged in Debian); the test does not start it.
const NOT_STOOD_IN: &[&str] = &["grafana"];

fn without_swapped_keys(mut config: Value) -> Value {
    for service in config["services"]
        .as_object_mut()
        .expect("services")
        .values_mut()
    {
        let service = service.as_object_mut().expect("a service is an object");
        for key in SWAPPED {
            service.remove(*key);
        }
    }
    config
}

fn both(profiles: &[&str]) -> (Value, Value) {
    let base = Compose::find().config(profiles);
    let merged = Compose::with_files(&["docker-compose.yml", OVERRIDE]).config(profiles);
    (base, merged)
}

#[test]
fn the_override_changes_nothing_but_where_images_come_from() {
    for profiles in [&[][..], &["observability"][..]] {
        let (base, merged) = both(profiles);
        let (base, merged) = (without_swapped_keys(base), without_swapped_keys(merged));
        if base != merged {
            let a = serde_json::to_string_pretty(&base).expect("json");
            let b = serde_json::to_string_pretty(&merged).expect("json");
            let first_difference = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{OVERRIDE} changes more than {SWAPPED:?} (profiles {profiles:?}); first difference at line \
                 {first_difference}:\n--- docker-compose.yml\n{}\n--- with {OVERRIDE}\n{}",
                a.lines().skip(first_difference).take(8).collect::<Vec<_>>().join("\n"),
                b.lines().skip(first_difference).take(8).collect::<Vec<_>>().join("\n"),
            );
        }
    }
}

#[test]
fn every_service_the_test_starts_uses_a_local_image_and_never_pulls() {
    let (base, merged) = both(&["observability"]);
    let images_script = std::fs::read_to_string(repo_root().join("scripts/compose-images.sh"))
        .expect("scripts/compose-images.sh exists");
    for (name, service) in merged["services"].as_object().expect("services") {
        let original = &base["services"][name];
        let image = service["image"].as_str().unwrap_or_default();
        if NOT_STOOD_IN.contains(&name.as_str()) {
            assert_eq!(service, original, "{name} is left as it is");
            continue;
        }
        assert_eq!(
            service["pull_policy"], "never",
            "{name} must never be pulled (no registry)"
        );
        assert!(
            service.get("build").is_none(),
            "{name} must not be built by compose: scripts/compose-images.sh builds it"
        );
        if OURS.contains(&name.as_str()) {
            assert_eq!(
                service["image"], original["image"],
                "{name} keeps its own image name"
            );
        } else {
            assert_ne!(
                service["image"], original["image"],
                "{name} runs a local stand-in for {}",
                original["image"]
            );
        }
        assert!(
            images_script.contains(&format!("=\"{image}\"")),
            "scripts/compose-images.sh does not build {image} (used by {name})"
        );
    }
    let ours: BTreeSet<&str> = OURS.iter().copied().collect();
    let with_build: BTreeSet<&str> = base["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, s)| s.get("build").is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(with_build, ours, "the services docker-compose.yml builds");
}
