//! HL7 validation profiles: the data-driven cases of `tests/fixtures/hl7/` through
//! [`validate_payload`], and `direct-agent hl7 validate` (text, JSON, exit codes, no PHI in the
//! output) on some of them.
//!
//! Each case is `NAME.hl7` with a sibling `NAME.expect`: `#` comments, optional directives
//! (`profile header`, `environment production`, `allow-v231`), then the expected findings, one
//! `error RULE-ID` or `warning RULE-ID` a line (as a set: a rule found twice is listed once),
//! or `read-error` for a payload that is not HL7. No finding line: the message has no finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use direct_agent::hl7::Severity;
use direct_agent::hl7::validate::{Environment, Options, Profile, validate_payload};

mod common;
use common::{BIN, root, text};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/hl7")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The expectation of one case.
struct Expect {
    options: Options,
    read_error: bool,
    findings: BTreeSet<String>,
}

fn read_expect(path: &Path) -> Expect {
    let mut e = Expect {
        options: Options {
            profile: Profile::Immunization,
            environment: Environment::Test,
            allow_v231: false,
            today: "20261206".into(),
        },
        read_error: false,
        findings: BTreeSet::new(),
    };
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err} (each .hl7 case needs a .expect)", path.display()));
    for line in text.lines().map(str::trim) {
        match line.split_once(' ') {
            _ if line.is_empty() || line.starts_with('#') => {}
            Some(("profile", p)) => e.options.profile = p.parse().unwrap(),
            Some(("environment", "production")) => e.options.environment = Environment::Production,
            Some(("error" | "warning", _)) => {
                e.findings.insert(line.to_string());
            }
            None if line == "allow-v231" => e.options.allow_v231 = true,
            None if line == "read-error" => e.read_error = true,
            _ => panic!("{}: unknown line {line:?}", path.display()),
        }
    }
    e
}

#[test]
fn every_fixture_gives_its_expected_findings() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 70, "{} cases", cases.len());
    let mut failures = Vec::new();
    let mut rules_seen = BTreeSet::new();
    for case in &cases {
        let expect = read_expect(&case.with_extension("expect"));
        let report = validate_payload(&std::fs::read(case).unwrap(), &expect.options);
        let found: BTreeSet<String> = report
            .messages
            .iter()
            .flat_map(|m| &m.findings)
            .map(|f| {
                let severity = if f.severity == Severity::Error {
                    "error"
                } else {
                    "warning"
                };
                format!("{severity} {}", f.rule)
            })
            .collect();
        rules_seen.extend(found.iter().cloned());
        let errors = found.iter().any(|f| f.starts_with("error "));
        if report.read_error.is_some() != expect.read_error
            || found != expect.findings
            || report.passed() == (errors || expect.read_error)
        {
            failures.push(format!(
                "{}: expected {:?}{}, found {:?}{}",
                case.file_name().unwrap().to_string_lossy(),
                expect.findings,
                if expect.read_error {
                    " + read error"
                } else {
                    ""
                },
                found,
                if report.read_error.is_some() {
                    " + read error"
                } else {
                    ""
                },
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Every rule of the validator is covered by at least one case.
    for rule in RULES {
        assert!(
            rules_seen.iter().any(|f| f.ends_with(&format!(" {rule}"))),
            "no fixture triggers {rule}"
        );
    }
}

/// Every rule id the validator has (docs/hl7-validation.md lists the same).
const RULES: &[&str] = &[
    "MSH-1-SEPARATOR",
    "MSH-2-ENCODING",
    "MSH-3-REQUIRED",
    "MSH-4-REQUIRED",
    "MSH-5-REQUIRED",
    "MSH-6-REQUIRED",
    "MSH-7-REQUIRED",
    "MSH-9-REQUIRED",
    "MSH-10-REQUIRED",
    "MSH-11-REQUIRED",
    "MSH-12-REQUIRED",
    "MSH-7-INVALID",
    "MSH-7-PRECISION",
    "MSH-9-TYPE",
    "MSH-9-EVENT",
    "MSH-9-STRUCTURE",
    "MSH-11-PROCESSING-ID",
    "MSH-11-ENVIRONMENT",
    "MSH-12-VERSION",
    "MSH-8-NOT-SUPPORTED",
    "MSH-13-NOT-SUPPORTED",
    "MSH-14-NOT-SUPPORTED",
    "MSH-15-NOT-SUPPORTED",
    "MSH-16-NOT-SUPPORTED",
    "MSH-17-NOT-SUPPORTED",
    "MSH-18-NOT-SUPPORTED",
    "MSH-19-NOT-SUPPORTED",
    "MSH-20-NOT-SUPPORTED",
    "MSH-21-PROFILE",
    "MSH-4-ID",
    "MSH-22-REQUIRED",
    "PID-MISSING",
    "PID-5-FAMILY-MISSING",
    "PID-5-GIVEN-MISSING",
    "PID-7-MISSING",
    "PID-7-INVALID",
    "PID-7-FUTURE",
    "PID-11-MISSING",
    "PID-11-INCOMPLETE",
    "PID-10-RACE-UNKNOWN",
    "PID-10-RACE-DEPRECATED",
    "PID-22-ETHNICITY-UNKNOWN",
    "PID-22-ETHNICITY-DEPRECATED",
    "NK1-MISSING",
    "RXA-MISSING",
    "RXA-9-MISSING",
    "RXA-9-INVALID",
    "RXA-20-INVALID",
    "RXA-21-INVALID",
    "RXA-5-NOT-CVX",
    "RXA-5-MISSING",
    "RXA-5-CVX-UNKNOWN",
    "RXA-5-CVX-INACTIVE",
    "RXA-5-CVX-UNSPECIFIED",
    "RXA-17-MVX-UNKNOWN",
    "RXA-3-MISSING",
    "RXA-3-INVALID",
    "RXA-3-FUTURE",
    "RXA-3-BEFORE-BIRTH",
    "RXA-15-LOT-MISSING",
    "RXA-16-EXPIRATION-MISSING",
    "RXA-16-INVALID",
    "OBX-VFC-MISSING",
    "OBX-VFC-INVALID",
    "OBX-VFC-UNKNOWN",
    "OBX-VIS-MISSING",
    "OBX-VIS-PRESENTED-MISSING",
    "OBX-VIS-DATE-INVALID",
    "RXA-6-MISSING",
    "RXA-6-UNKNOWN-AMOUNT",
    "RXA-6-INVALID",
    "RXA-7-UNITS-MISSING",
    "RXA-7-UNITS",
    "RCP-MISSING",
    "QPD-MISSING",
    "QPD-1-QUERY-NAME",
    "QPD-2-QUERY-TAG",
    "QPD-3-PATIENT-ID",
    "QPD-4-NAME",
    "QPD-6-DOB",
];

fn validate(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(BIN)
        .args(["hl7", "validate"])
        .args(args)
        .args(files)
        // The environment default comes from a named configuration: none here.
        .env_remove("DIRECT_AGENT_CONFIG")
        .output()
        .unwrap()
}

/// Values written in the fixtures that must never reach the output (PHI stand-ins).
const VALUES: &[&str] = &[
    "FIXTUREFAMILY",
    "FIXTUREGIVEN",
    "GUARDIANNAME",
    "FIXTURETOWN",
    "12 FIXTURE ST",
    "20240115",
    "20991231",
    "FIX123",
    "LOT123",
    "9999-9",
];

fn assert_no_values(out: &Output) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for v in VALUES {
        assert!(!all.contains(v), "{v:?} appears in the output:\n{all}");
    }
}

#[test]
fn cli_passes_the_committed_sample_and_a_complete_vxu() {
    let out = validate(
        &[],
        &[
            root().join("config/samples/vxu-v04.hl7"),
            fixture("vxu-complete.hl7"),
            fixture("qbp-z34-valid.hl7"),
            fixture("ack-valid.hl7"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("message 1 DEMO-0001 VXU^V04^VXU_V04: PASS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FIX-0001 VXU^V04^VXU_V04: PASS"),
        "{stdout}"
    );
    // The sample has no expiration date, VFC or VIS observation: warnings only.
    assert!(
        stdout.contains("warning OBX-VFC-MISSING at RXA:"),
        "{stdout}"
    );
    assert_no_values(&out);
}

#[test]
fn cli_fails_with_exit_1_and_rule_ids_in_json() {
    let out = validate(
        &["--json"],
        &[
            fixture("vxu-complete.hl7"),
            fixture("pid-7-future.hl7"),
            fixture("pid-10-race-unknown.hl7"),
            fixture("rxa-3-future.hl7"),
            fixture("pid-5-name-empty.hl7"),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = json.as_array().unwrap();
    assert_eq!(files.len(), 5);
    assert!(
        files[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("vxu-complete.hl7")
    );
    assert_eq!(
        files[0]["report"]["messages"][0]["findings"],
        serde_json::json!([])
    );
    let finding = &files[1]["report"]["messages"][0]["findings"][0];
    assert_eq!(finding["rule"], "PID-7-FUTURE");
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["location"], "PID-7");
    assert_eq!(finding["hl7_error_code"], "102");
    assert_eq!(finding["application_error_code"], "1");
    assert_eq!(finding["item"], "date-of-birth");
    assert_eq!(
        files[2]["report"]["messages"][0]["findings"][0]["rule"],
        "PID-10-RACE-UNKNOWN"
    );
    assert_no_values(&out);
}

#[test]
fn cli_text_names_rule_and_location() {
    let out = validate(&[], &[fixture("msh-7-precision.hl7")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FIX-0001 VXU^V04^VXU_V04: FAIL"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error MSH-7-PRECISION at MSH-7: "),
        "{stdout}"
    );
}

#[test]
fn cli_flags_profile_environment_and_version() {
    let prod = [fixture("msh-11-production.hl7")];
    assert_eq!(validate(&[], &prod).status.code(), Some(1));
    assert_eq!(
        validate(&["--environment", "production"], &prod)
            .status
            .code(),
        Some(0)
    );
    let v231 = [fixture("msh-12-v231-allowed.hl7")];
    assert_eq!(validate(&[], &v231).status.code(), Some(1));
    assert_eq!(validate(&["--allow-v231"], &v231).status.code(), Some(0));
    let content = [fixture("nk1-missing.hl7")];
    assert_eq!(validate(&[], &content).status.code(), Some(1));
    assert_eq!(
        validate(&["--profile", "header"], &content).status.code(),
        Some(0)
    );
    let bad = validate(&["--profile", "lab"], &content);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("unknown HL7 validation profile"));
}

#[test]
fn cli_unreadable_file_is_exit_2_and_not_hl7_is_exit_1() {
    let missing = validate(&[], &[fixture("no-such-file.hl7")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("cannot read"),
        "{}",
        text(&missing.stderr)
    );

    let out = validate(&["--json"], &[fixture("not-hl7.hl7")]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json[0]["report"]["read_error"].is_string());
    assert!(!text(&out.stdout).contains("Dear IIS"));
}

/// Without `--environment`, a named configuration's `[agent] environment` decides, as it does for
/// the running agent; the flag still wins, and an unreadable named configuration is a usage
/// error (exit 2) that says how to go without it.
#[test]
fn environment_defaults_to_the_named_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let production = dir.path().join("production.toml");
    std::fs::write(&production, "[agent]\nenvironment = \"production\"\n").unwrap();
    let prod = fixture("msh-11-production.hl7");
    let with_config = |config: &Path, args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(config)
            .args(["hl7", "validate"])
            .args(args)
            .arg(&prod)
            .env_remove("DIRECT_AGENT_CONFIG")
            .output()
            .unwrap()
    };
    assert_eq!(with_config(&production, &[]).status.code(), Some(0));
    assert_eq!(
        with_config(&production, &["--environment", "test"])
            .status
            .code(),
        Some(1),
        "the flag wins over the configuration"
    );
    let by_env = Command::new(BIN)
        .args(["hl7", "validate"])
        .arg(&prod)
        .env("DIRECT_AGENT_CONFIG", &production)
        .output()
        .unwrap();
    assert_eq!(
        by_env.status.code(),
        Some(0),
        "DIRECT_AGENT_CONFIG names one too"
    );
    let missing = with_config(&dir.path().join("missing.toml"), &[]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("--environment"),
        "{}",
        text(&missing.stderr)
    );
    let review = |config: Option<&Path>| {
        let mut c = Command::new(BIN);
        if let Some(config) = config {
            c.arg("--config").arg(config);
        }
        c.args(["hl7", "review", "--json"])
            .arg(&prod)
            .env_remove("DIRECT_AGENT_CONFIG")
            .output()
            .unwrap()
    };
    assert_eq!(review(None).status.code(), Some(1), "test by default");
    let reviewed = review(Some(&production));
    assert_eq!(
        reviewed.status.code(),
        Some(0),
        "{}",
        text(&reviewed.stderr)
    );
}
