//! `direct-agent hl7 review DIR|FILE...`: the onboarding review. Reads each file, validates it
//! ([`validate_payload`]), folds the reports into a [`Review`] and prints it (text or JSON);
//! `--html OUT` also writes the page for the onboarding file.
//!
//! A DIR is read non-recursively: its files ending `.hl7` or `.er7`, and `.txt` files that start
//! like HL7 (MSH, FHS or BHS; so a sink folder's Direct Context `metadata.txt` is left out), sorted
//! by name. A FILE named on the command line is reviewed whatever its name.
//!
//! Exit codes: 0 every message passed; 1 ([`EXIT_FAILED`]) at least one message failed or a file
//! could not be read as HL7; 2 ([`EXIT_USAGE`](super::EXIT_USAGE)) usage errors, a path that does not exist or cannot
//! be read, nothing to review, or the HTML page could not be written.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::hl7::review::{Review, render_html, render_text};
use crate::hl7::validate::{Environment, Options, Profile, validate_payload};

use super::{EXIT_FAILED, usage};

/// File name endings reviewed in a directory.
const EXTENSIONS: [&str; 3] = ["hl7", "txt", "er7"];

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// Files, or directories whose *.hl7, *.txt and *.er7 files are reviewed (not recursive).
    #[arg(required = true, value_name = "DIR|FILE")]
    paths: Vec<PathBuf>,
    /// Also write the review as one self-contained HTML page to OUT.
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Print the review as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The rules to apply.
    #[arg(long, value_enum, default_value_t = ProfileArg::Immunization)]
    profile: ProfileArg,
    /// The processing ID (MSH-11) expected: T for test, P for production. Default: `[agent]
    /// environment` of the configuration named by --config or DIRECT_AGENT_CONFIG, else test.
    #[arg(long, value_enum)]
    environment: Option<EnvironmentArg>,
    /// Accept HL7 version 2.3.1 (MSH-12) as well as 2.5.1.
    #[arg(long)]
    allow_v231: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProfileArg {
    /// The message header only (MiHIN MSH table).
    Header,
    /// Header plus the immunization content rules and Maine's checklist.
    Immunization,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EnvironmentArg {
    Test,
    Production,
}

pub fn run_review(a: ReviewArgs, config: Option<&std::path::Path>) -> i32 {
    let environment = match super::hl7::environment(
        a.environment.map(|e| match e {
            EnvironmentArg::Test => Environment::Test,
            EnvironmentArg::Production => Environment::Production,
        }),
        config,
    ) {
        Ok(e) => e,
        Err(e) => return usage(e),
    };
    let files = match collect_files(&a.paths) {
        Ok(f) if f.is_empty() => {
            return usage(format!(
                "nothing to review: no files ending .{} in {}",
                EXTENSIONS.join(", ."),
                list(&a.paths)
            ));
        }
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let options = Options {
        profile: match a.profile {
            ProfileArg::Header => Profile::Header,
            ProfileArg::Immunization => Profile::Immunization,
        },
        environment,
        allow_v231: a.allow_v231,
        // The pipeline's "today" (UTC+14), so a review and the live agent agree on future dates.
        today: crate::agent::validation::today(chrono::Utc::now().timestamp()),
    };

    let mut progress = super::progress::Progress::new("reviewed", files.len());
    let mut reports = Vec::with_capacity(files.len());
    for path in &files {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                progress.finish();
                return usage(format!("cannot read {}: {e}", path.display()));
            }
        };
        reports.push((
            path.display().to_string(),
            validate_payload(&bytes, &options),
        ));
        progress.tick();
    }
    progress.finish();

    let review = Review::build(&reports);
    if a.json {
        match serde_json::to_string_pretty(&review) {
            Ok(j) => println!("{j}"),
            Err(e) => return usage(format!("cannot write the review as JSON: {e}")),
        }
    } else {
        print!("{}", render_text(&review));
    }
    if let Some(out) = &a.html {
        let generated_at = chrono::Local::now()
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string();
        if let Err(e) = write_atomically(out, render_html(&review, &generated_at).as_bytes()) {
            return usage(format!(
                "cannot write the HTML review to {}: {e}",
                out.display()
            ));
        }
        eprintln!("wrote the HTML review to {}", out.display());
    }
    if review.passed() { 0 } else { EXIT_FAILED }
}

/// The files to review, in order: each path as given, directories expanded (sorted by name).
fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                format!("{}: no such file or directory", path.display())
            } else {
                format!("cannot read {}: {e}", path.display())
            }
        })?;
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = fs::read_dir(path)
            .map_err(|e| format!("cannot list directory {}: {e}", path.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("cannot list directory {}: {e}", path.display()))?;
            let p = entry.path();
            // fs::metadata follows symbolic links: a link to a message file is reviewed.
            if has_reviewed_extension(&p)
                && fs::metadata(&p).is_ok_and(|m| m.is_file())
                && (!is_txt(&p) || starts_like_hl7(&p))
            {
                found.push(p);
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn is_txt(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
}

/// A `.txt` file in a folder is reviewed only when it starts like HL7 (`MSH|`, `FHS|`, `BHS|`):
/// a sink's folder also holds the Direct Context `metadata.txt` of each message.
fn starts_like_hl7(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&head[..n]);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    ["MSH", "FHS", "BHS"]
        .iter()
        .any(|s| text.len() > 3 && text.starts_with(s))
}

fn has_reviewed_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write `bytes` to a temporary file beside `out`, then rename it over `out`: a reader sees the
/// old page or the new one, never half of it.
fn write_atomically(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = out
        .file_name()
        .ok_or_else(|| std::io::Error::other("OUT must name a file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, out)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_filtered_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.hl7", "c.er7", "notes.md", "d"] {
            fs::write(dir.path().join(name), "x").unwrap();
        }
        // A .txt is taken when it starts like HL7; a Direct Context metadata.txt is not.
        fs::write(dir.path().join("a.TXT"), "MSH|^~\\&|A\r").unwrap();
        fs::write(dir.path().join("metadata.txt"), "version: 1.1\n").unwrap();
        fs::create_dir(dir.path().join("sub.hl7")).unwrap();
        let files = collect_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.TXT", "b.hl7", "c.er7"]);
        // A file named explicitly is taken whatever its name.
        let explicit = collect_files(&[dir.path().join("notes.md")]).unwrap();
        assert_eq!(explicit.len(), 1);
        let e = collect_files(&[dir.path().join("missing")]).unwrap_err();
        assert!(e.contains("no such file or directory"), "{e}");
    }

    #[test]
    fn html_is_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("review.html");
        fs::write(&out, "old").unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no tmp file left"
        );
        assert!(write_atomically(&dir.path().join("no/such/dir.html"), b"x").is_err());
    }
}
