#!/usr/bin/env bash
# The main job until `direct-agent demo` exists: seal a VXU^V04 as ehr@hisp-a.example for
# iis@hisp-b.example with the committed test PKI, open it as hisp-b, and let OpenSSL check the
# same message independently. Synthetic data only.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/direct-agent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
c=certs
echo "== seal: ehr@hisp-a.example -> iis@hisp-b.example (sign SHA-256, AES-128-CBC, RSA-OAEP)"
"$bin" message seal --from ehr@hisp-a.example --to iis@hisp-b.example \
  --in config/samples/vxu-v04.hl7 --out "$work/message.eml" --request-mdn \
  --sign-key "$c/ehr@hisp-a.example.key" --sign-cert "$c/ehr@hisp-a.example.fullchain.pem" \
  --recipient-cert "$c/iis@hisp-b.example.pem"
echo "== open as hisp-b (anchor: HISP A's root; CRLs checked)"
"$bin" message open --in "$work/message.eml" --out-dir "$work/inbox" \
  --key "$c/iis@hisp-b.example.key" --cert "$c/iis@hisp-b.example.pem" \
  --anchor "$c/root-a.pem" --crl "$c/intermediate-a.crl.pem" --crl "$c/root-a.crl.pem"
cmp config/samples/vxu-v04.hl7 "$work/inbox/02-vxu-v04.hl7"
echo "== payload delivered byte-exact"
echo "== independent check with openssl cms"
openssl cms -decrypt -in "$work/message.eml" -recip "$c/iis@hisp-b.example.pem" \
  -inkey "$c/iis@hisp-b.example.key" -out "$work/signed.eml"
openssl cms -verify -in "$work/signed.eml" -CAfile "$c/root-a.pem" -out /dev/null
echo "quickstart: OK"
