//! A running agent reuses the certificates it discovered for a recipient (`[discovery]
//! cache_ttl_max`) instead of discovering them again for every message and MDN, and forgets them
//! as soon as the trust store changes. Seen through the partner's `[[discovery.certificate]]`
//! file: once it is gone, only a remembered choice can still seal to the partner.

mod support;

use std::path::{Path, PathBuf};

use direct_agent::address::DirectAddress;
use direct_agent::agent::{Context, SealRefusal};

use support::agents::{AgentSetup, Extra, cli, two_agents};

/// Point agent `a`'s partner certificate at a copy that the test can remove, and set
/// `cache_ttl_max`; returns the copy.
fn with_removable_partner_cert(dir: &Path, a: &AgentSetup, cache_ttl_max: &str) -> PathBuf {
    let original = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/hisp-b.example.pem");
    let copy = dir.join("partner-b.pem");
    std::fs::copy(&original, &copy).unwrap();
    let text = std::fs::read_to_string(&a.config).unwrap();
    let replaced = text
        .replace(&original.display().to_string(), &copy.display().to_string())
        .replace(
            "[discovery]\n",
            &format!("[discovery]\ncache_ttl_max = \"{cache_ttl_max}\"\n"),
        );
    assert_ne!(text, replaced, "the partner certificate path was not found");
    std::fs::write(&a.config, replaced).unwrap();
    copy
}

fn recipients(ctx: &Context) -> Result<usize, SealRefusal> {
    let from = DirectAddress::parse("ehr@hisp-a.example").unwrap();
    let to = [DirectAddress::parse("iis@hisp-b.example").unwrap()];
    let mut certs = Vec::new();
    ctx.signer_and_recipients(&from, &to, &mut certs, &[], &mut Vec::new())?;
    Ok(certs.len())
}

#[test]
fn discovered_certificates_are_reused_until_the_trust_store_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let copy = with_removable_partner_cert(dir.path(), &a, "1h");
    let ctx = Context::load(Some(&a.config)).unwrap();
    assert_eq!(recipients(&ctx).unwrap(), 1, "discovered from the file");

    std::fs::remove_file(&copy).unwrap();
    assert_eq!(
        recipients(&ctx).unwrap(),
        1,
        "the choice made a moment ago is reused: the file is not read again"
    );

    // Any change to the trust store (here a second anchor) makes earlier choices doubtful.
    let root_a = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/root-a.pem");
    let out = cli(&a, &["anchors", "add"])
        .arg(&root_a)
        .args(["--domain", "hisp-a.example", "--direction", "incoming"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = recipients(&ctx).expect_err("discovered again, and the file is gone");
    assert!(
        err.to_string().contains("partner-b.pem"),
        "the refusal names the missing file: {err}"
    );
}

#[test]
fn cache_ttl_max_zero_discovers_for_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = two_agents(dir.path(), &Extra::default(), &Extra::default());
    let copy = with_removable_partner_cert(dir.path(), &a, "0s");
    let ctx = Context::load(Some(&a.config)).unwrap();
    assert_eq!(recipients(&ctx).unwrap(), 1);
    std::fs::remove_file(&copy).unwrap();
    let err = recipients(&ctx).expect_err("nothing is remembered with cache_ttl_max = 0s");
    assert!(err.to_string().contains("partner-b.pem"), "{err}");
}
