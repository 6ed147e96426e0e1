//! The example configurations in config/ stay valid: each parses with every key known, its sinks
//! can be built and its HL7 profiles exist.

use std::path::Path;

use direct_agent::config::Config;

#[test]
fn every_example_configuration_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        direct_agent::sink::SinkSet::from_config(&cfg.sinks)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        direct_agent::agent::validation::check_config(&cfg)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!cfg.domains.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 3, "direct-agent.toml, edge.toml and hisp.toml");
}
