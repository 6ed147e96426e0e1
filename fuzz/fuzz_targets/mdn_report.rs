#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| direct_agent_fuzz::mdn_report(data));
