//! Tests that touch files or procfs: the committed scenarios, procfs sampling, and the section rewrite of
//! `docs/performance.md`.

use std::path::Path;

use omnigate_loadtest::report::replace_sections;
use omnigate_loadtest::scenario::{Scenario, StoreKind};
use omnigate_loadtest::server::sample;

#[test]
fn committed_scenarios_parse_and_pass_their_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    let mut on_redis = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            if scenario.store == StoreKind::Redis {
                on_redis.push(scenario.name.clone());
            }
            names.push(scenario.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "capacity",
            "churn",
            "idle-10k",
            "relay-5k",
            "relay-5k-redis",
            "relay-throughput",
            "smoke",
            "smoke-webhooks",
            "webhooks",
            "webhooks-ingest",
            "webhooks-throughput"
        ]
    );
    assert_eq!(on_redis, ["relay-5k-redis"]);
}

#[test]
fn samples_cpu_and_memory_of_this_process() {
    let s = sample(std::process::id()).unwrap();
    assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
    assert!(s.cpu_secs >= 0.0 && s.load_average >= 0.0);
}

#[test]
fn replacing_a_section_keeps_the_others_and_an_empty_one_removes_it() {
    let dir = std::env::temp_dir().join(format!("omnigate-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("performance.md");
    std::fs::write(
        &path,
        "# Performance\n\n## Router\n\nrouter text\n\n## Method\n\nold\n\n## Stale\n\ngone\n",
    )
    .unwrap();
    replace_sections(
        &path,
        "Performance",
        &[
            ("Method", "## Method\n\nnew\n".to_owned()),
            ("Stale", String::new()),
            ("Relay", "## Relay\n\nfigures\n".to_owned()),
        ],
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("router text") && text.contains("new") && !text.contains("old"),
        "{text}"
    );
    // A section given with an empty body is removed, heading and all, leaving no blank run behind.
    assert!(!text.contains("## Stale") && !text.contains("gone"), "{text}");
    assert!(!text.contains("\n\n\n"), "{text:?}");
    assert!(text.find("## Router").unwrap() < text.find("## Method").unwrap());
    assert!(text.trim_end().ends_with("figures"));
    std::fs::remove_dir_all(dir).unwrap();
}
