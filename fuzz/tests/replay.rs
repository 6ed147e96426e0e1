//! Replays every seed and every saved crasher through the fuzz target bodies on the stable
//! toolchain, without libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.
//! Crashers live in tests/fixtures/fuzz/<target>/ (one file each, named after the bug).

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target, &[&str])] = &[
    (
        "open_message",
        direct_agent_fuzz::open_message,
        &["tests/fixtures/open"],
    ),
    (
        "mime_entity",
        direct_agent_fuzz::mime_entity,
        &["fuzz/seeds/mime_entity", "tests/fixtures/open"],
    ),
    (
        "mdn_report",
        direct_agent_fuzz::mdn_report,
        &["fuzz/seeds/mdn_report"],
    ),
    (
        "hl7_message",
        direct_agent_fuzz::hl7_message,
        &["config/samples"],
    ),
    (
        "cert_rdata",
        direct_agent_fuzz::cert_rdata,
        &["fuzz/seeds/cert_rdata"],
    ),
    (
        "smtp_session",
        direct_agent_fuzz::smtp_session,
        &["fuzz/seeds/smtp_session"],
    ),
];

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn seeds_and_crashers_do_not_panic() {
    let root = direct_agent_fuzz::repo_root();
    for (name, target, seed_dirs) in TARGETS {
        let crashers = format!("tests/fixtures/fuzz/{name}");
        let mut n = 0;
        for dir in seed_dirs.iter().copied().chain([crashers.as_str()]) {
            for f in files(&root.join(dir)) {
                let data = std::fs::read(&f).unwrap();
                eprintln!("{name}: {}", f.display());
                target(&data);
                n += 1;
            }
        }
        assert!(n > 0, "{name}: no seeds found");
    }
}
