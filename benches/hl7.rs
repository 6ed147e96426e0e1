//! HL7 validation throughput on a corpus of a few MB: the committed sample VXU plus generated
//! VXU^V04 (1-5 ORC/RXA groups, varied names) and QBP^Q11 messages, one payload a message as the
//! inbound pipeline sees them. Three passes: read only (`parse_messages_bytes`), the `header`
//! profile and the `immunization` profile (both include the read).
//!
//! `cargo bench --bench hl7` prints messages/s and MB/s for each, on one core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use direct_agent::hl7::parse_messages_bytes;
use direct_agent::hl7::validate::{Environment, Options, Profile, validate_payload};

const SAMPLE: &str = include_str!("../config/samples/vxu-v04.hl7");

const FAMILY: [&str; 8] = [
    "TESTPATIENT",
    "SAMPLEFAMILY",
    "DOE",
    "EXAMPLE",
    "O'BRIENTEST",
    "NGUYENTEST",
    "GARCIATEST",
    "SMITHTEST",
];
const GIVEN: [&str; 6] = ["ALEX", "JORDAN", "SAM", "RILEY", "TAYLOR", "CASEY"];
/// Active CVX codes with their MVX.
const VACCINES: [(&str, &str); 5] = [
    (
        "08^Hep B, adolescent or pediatric^CVX",
        "MSD^Merck and Co^MVX",
    ),
    ("20^DTaP^CVX", "PMC^sanofi pasteur^MVX"),
    ("03^MMR^CVX", "MSD^Merck and Co^MVX"),
    ("10^IPV^CVX", "PMC^sanofi pasteur^MVX"),
    (
        "133^Pneumococcal conjugate PCV 13^CVX",
        "PFR^Pfizer, Inc^MVX",
    ),
];

fn vxu(i: usize) -> String {
    let family = FAMILY[i % FAMILY.len()];
    let given = GIVEN[i % GIVEN.len()];
    let mut m = format!(
        "MSH|^~\\&|DEMO-EHR|DEMO-CLINIC|IIS|STATE-IIS|20261122093000-0500||VXU^V04^VXU_V04|BENCH-{i}|T|2.5.1|||ER|AL|||||Z22^CDCPHINVS|DEMO-CLINIC\r\
         PID|1||MRN{i}^^^DEMO-CLINIC^MR||{family}^{given}^^^^^L||20240115|F||2106-3^White^CDCREC|{i} TEST ST^^AUGUSTA^ME^04330^USA^P|||||||||||2186-5^not Hispanic or Latino^CDCREC\r\
         NK1|1|{family}^PARENT^^^^^L|MTH^Mother^HL70063\r"
    );
    for d in 0..(i % 5) + 1 {
        let (cvx, mvx) = VACCINES[(i + d) % VACCINES.len()];
        m.push_str(&format!(
            "ORC|RE||ORDER-{i}-{d}^DEMO-CLINIC\r\
             RXA|0|1|20261120||{cvx}|0.5|mL^milliliters^UCUM||00^New immunization record^NIP001||||||LOT{i}{d}|20271231|{mvx}|||CP|A\r\
             RXR|C28161^Intramuscular^NCIT|LD^Left Deltoid^HL70163\r\
             OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1|V02^VFC eligible - Medicaid^HL70064||||||F|||20261120|||VXC40^Eligibility captured at the immunization level^CDCPHINVS\r\
             OBX|2|CE|69764-9^Document type^LN|2|253088698300012711120420^VIS^cdcgs1vis||||||F\r\
             OBX|3|TS|29769-7^Date vaccine information statement presented^LN|2|20261120||||||F\r"
        ));
    }
    m
}

fn qbp(i: usize) -> String {
    format!(
        "MSH|^~\\&|DEMO-EHR|DEMO-CLINIC|IIS|STATE-IIS|20261122093000-0500||QBP^Q11^QBP_Q11|BENCHQ-{i}|T|2.5.1|||||||||Z34^CDCPHINVS|DEMO-CLINIC\r\
         QPD|Z34^Request Immunization History^CDCPHINVS|Q{i}|MRN{i}^^^DEMO-CLINIC^MR|{}^{}^^^^^L|MAIDEN^^^^^^M|20240115|F\r\
         RCP|I|10^RD&Records&HL70126\r",
        FAMILY[i % FAMILY.len()],
        GIVEN[i % GIVEN.len()]
    )
}

/// Runs `f` over the corpus for about `budget`; returns (messages/s, MB/s).
fn rate(corpus: &[String], budget: Duration, mut f: impl FnMut(&[u8])) -> (f64, f64) {
    let bytes: usize = corpus.iter().map(String::len).sum();
    for m in corpus.iter().take(1000) {
        f(m.as_bytes());
    }
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < budget || rounds == 0 {
        for m in corpus {
            f(m.as_bytes());
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    (
        (rounds as f64 * corpus.len() as f64) / secs,
        (rounds as f64 * bytes as f64) / secs / 1e6,
    )
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut corpus = vec![SAMPLE.to_string()];
    let mut i = 0;
    while corpus.iter().map(String::len).sum::<usize>() < 4_000_000 {
        corpus.push(if i % 10 == 9 { qbp(i) } else { vxu(i) });
        i += 1;
    }
    let bytes: usize = corpus.iter().map(String::len).sum();
    println!(
        "corpus: {} messages, {:.2} MB (VXU with 1-5 RXA groups, 1 in 10 a QBP)",
        corpus.len(),
        bytes as f64 / 1e6
    );
    let options = |profile| Options {
        profile,
        environment: Environment::Test,
        allow_v231: false,
        today: "20261206".into(),
    };
    // Every generated message must pass, or the figures measure the error path.
    let immunization = options(Profile::Immunization);
    for m in &corpus[1..] {
        let report = validate_payload(m.as_bytes(), &immunization);
        assert!(report.passed(), "{:#?}", report.messages);
    }
    let budget = Duration::from_secs(3);
    let (mps, mbps) = rate(&corpus, budget, |m| {
        black_box(parse_messages_bytes(black_box(m)).map(|v| v.len()).ok());
    });
    println!("read only:            {mps:>9.0} messages/s  {mbps:>6.1} MB/s");
    for profile in [Profile::Header, Profile::Immunization] {
        let o = options(profile);
        let (mps, mbps) = rate(&corpus, budget, |m| {
            black_box(validate_payload(black_box(m), &o));
        });
        println!(
            "{:<21} {mps:>9.0} messages/s  {mbps:>6.1} MB/s",
            format!("{profile} profile:")
        );
    }
}
