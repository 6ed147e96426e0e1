#!/usr/bin/env python3
"""Generate data/codes/*.tsv, the code tables compiled into src/hl7/validate/codes.rs.

Reads the public code sets copied by the immregistries "codebase" project (Apache-2.0,
commit 641f2ea) from ../shared/data (relative to the repository root; override with
--source DIR) and writes one tab-separated file per table: `code<TAB>status<TAB>text`, with
a header comment naming the source file, the project and the generation date.

Run from the repository root:  python3 scripts/gen-code-tables.py
"""

import argparse
import datetime
import os
import sys
import xml.etree.ElementTree as ET

PROJECT = "immregistries codebase (Apache-2.0, commit 641f2ea)"


def clean(text):
    """One line, no tabs: the TSV reader splits on tabs and lines."""
    return " ".join((text or "").split())


def cvx(root):
    for info in root.iter("CVXInfo"):
        yield (
            clean(info.findtext("CVXCode")),
            clean(info.findtext("Status")),
            clean(info.findtext("ShortDescription")),
        )


def mvx(root):
    # <MVXInfo> holds alternating <Name>/<Value> pairs.
    for info in root.iter("MVXInfo"):
        names = [clean(e.text) for e in info if e.tag == "Name"]
        values = [clean(e.text) for e in info if e.tag == "Value"]
        row = dict(zip(names, values))
        yield (row.get("MVX_CODE", ""), row.get("Status", ""), row.get("Manufacturer Name", ""))


def codeset(root):
    for code in root.iter("code"):
        yield (
            clean(code.findtext("value")),
            clean(code.findtext("code-status/status")),
            clean(code.findtext("label")),
        )


TABLES = [
    ("cvx.xml", "cvx.tsv", cvx, "CDC CVX vaccine codes: code, status (Active, Inactive, Never Active, Non-US), short description"),
    ("mvx.xml", "mvx.tsv", mvx, "CDC MVX manufacturer codes: code, status (Active, Inactive), name"),
    ("vfc-eligibility.xml", "vfc-eligibility.tsv", codeset, "financial status (VFC eligibility, OBX 64994-7) codes: code, status (Valid, Invalid), label"),
    ("race.xml", "race.tsv", codeset, "patient race (CDCREC, PID-10) codes: code, status (Valid, Deprecated), label"),
    ("ethnicity.xml", "ethnicity.tsv", codeset, "patient ethnicity (HL7 0189, PID-22) codes: code, status (Valid, Deprecated), label"),
]


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.path.join(repo, "..", "shared", "data"))
    parser.add_argument("--out", default=os.path.join(repo, "data", "codes"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    for source, target, read, what in TABLES:
        root = ET.parse(os.path.join(args.source, source)).getroot()
        rows, seen = [], set()
        for code, status, text in read(root):
            # A code listed twice (race.xml repeats 2076-8) keeps its first row.
            if not code or code in seen:
                continue
            seen.add(code)
            rows.append((code, status, text))
        with open(os.path.join(args.out, target), "w", encoding="utf-8", newline="\n") as out:
            out.write(f"# {what}\n")
            out.write(f"# source: {source} from {PROJECT}\n")
            out.write(f"# generated {today} by scripts/gen-code-tables.py; do not edit by hand\n")
            for row in rows:
                out.write("\t".join(row) + "\n")
        print(f"{target}: {len(rows)} codes", file=sys.stderr)


if __name__ == "__main__":
    main()
