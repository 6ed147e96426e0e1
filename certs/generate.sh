#!/usr/bin/env bash
# Regenerate the direct-agent test PKI.
#
#   bash certs/generate.sh [OUTDIR]     (default OUTDIR = the directory of this script)
#
# Requires only the openssl CLI (3.0+). Keys are freshly generated on every run,
# so fingerprints/serials change, but names, extensions and dates are fixed.
# CA working databases live in a temp dir and are discarded.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$SCRIPT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

BASE_URL="http://127.0.0.1:18080"
P12_PASSWORD="demo-password"

# Fixed validity windows (YYYYMMDDHHMMSSZ)
ROOT_START=20240101000000Z;  ROOT_END=20540101000000Z
INT_START=20240101000000Z;   INT_END=20530101000000Z
LEAF_START=20250101000000Z;  LEAF_END=20450101000000Z
CRL_DAYS=3650

log() { echo "== $*" >&2; }

# newkey NAME BITS -> $WORK/NAME.key (unencrypted PKCS#8 PEM)
newkey() {
  openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$2" -out "$WORK/$1.key" 2>/dev/null
}

# initca NAME : create an `openssl ca` working directory + minimal config for CA NAME
initca() {
  local d="$WORK/ca/$1"
  mkdir -p "$d/newcerts"
  : > "$d/index.txt"
  echo "unique_subject = no" > "$d/index.txt.attr"
  echo 1000 > "$d/crlnumber"
  openssl rand -hex 16 > "$d/serial"
  cat > "$d/ca.cnf" <<EOF
[ ca ]
default_ca = CA_default

[ CA_default ]
dir              = $d
database         = \$dir/index.txt
new_certs_dir    = \$dir/newcerts
crlnumber        = \$dir/crlnumber
serial           = \$dir/serial
certificate      = $WORK/$1.pem
private_key      = $WORK/$1.key
default_md       = sha256
default_crl_days = $CRL_DAYS
policy           = policy_any
unique_subject   = no
copy_extensions  = none
email_in_dn      = yes
crl_extensions   = crl_ext

[ policy_any ]
countryName      = optional
organizationName = optional
commonName       = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
}

# issue CA NAME SUBJ START END EXTS
#   CA = issuing CA name, or "self" for a self-signed root (NAME must already have a key)
#   EXTS = extension lines (written into section [ext])
issue() {
  local ca="$1" name="$2" subj="$3" start="$4" end="$5" exts="$6"
  local ext="$WORK/$name.ext" csr="$WORK/$name.csr"
  printf '[ ext ]\n%s\n' "$exts" > "$ext"
  openssl req -new -key "$WORK/$name.key" -subj "$subj" -out "$csr"
  if [ "$ca" = self ]; then
    openssl ca -batch -notext -config "$WORK/ca/$name/ca.cnf" -selfsign \
      -keyfile "$WORK/$name.key" -in "$csr" -out "$WORK/$name.pem" \
      -rand_serial -preserveDN -md sha256 -startdate "$start" -enddate "$end" \
      -extfile "$ext" -extensions ext 2>"$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 1; }
  else
    openssl ca -batch -notext -config "$WORK/ca/$ca/ca.cnf" \
      -in "$csr" -out "$WORK/$name.pem" \
      -rand_serial -preserveDN -md sha256 -startdate "$start" -enddate "$end" \
      -extfile "$ext" -extensions ext 2>"$WORK/$name.log" || { cat "$WORK/$name.log" >&2; exit 1; }
  fi
}

root_exts() {
  cat <<EOF
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
}

# int_exts ISSUER
int_exts() {
  cat <<EOF
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:$BASE_URL/crl/$1.crl
authorityInfoAccess = caIssuers;URI:$BASE_URL/aia/$1.cer
EOF
}

# leaf_exts ISSUER SAN KU
leaf_exts() {
  cat <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,$3
extendedKeyUsage = emailProtection
subjectAltName = $2
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
crlDistributionPoints = URI:$BASE_URL/crl/$1.crl
authorityInfoAccess = caIssuers;URI:$BASE_URL/aia/$1.cer
EOF
}

# ---------------------------------------------------------------- roots
make_root() { # NAME CN O
  log "root $1"
  newkey "$1" 2048
  initca "$1"
  issue self "$1" "/O=$3/CN=$2" "$ROOT_START" "$ROOT_END" "$(root_exts)"
}
make_root root-a "Direct Agent Test Root A" "HISP A Test"
make_root root-b "Direct Agent Test Root B" "HISP B Test"
make_root root-untrusted "Untrusted Test Root" "Untrusted Test"

# ---------------------------------------------------------------- intermediates
make_int() { # NAME ISSUER CN O
  log "intermediate $1"
  newkey "$1" 2048
  initca "$1"
  issue "$2" "$1" "/O=$4/CN=$3" "$INT_START" "$INT_END" "$(int_exts "$2")"
}
make_int intermediate-a  root-a "Direct Agent Test Intermediate A"  "HISP A Test"
make_int intermediate-a2 root-a "Direct Agent Test Intermediate A2" "HISP A Test"
make_int intermediate-b  root-b "Direct Agent Test Intermediate B"  "HISP B Test"

# ---------------------------------------------------------------- leaves
LEAVES=()
# make_leaf STEM ISSUER CN O SAN KU [START END BITS]
make_leaf() {
  local stem="$1" issuer="$2" cn="$3" o="$4" san="$5" ku="$6"
  local start="${7:-$LEAF_START}" end="${8:-$LEAF_END}" bits="${9:-2048}"
  log "leaf $stem"
  newkey "$stem" "$bits"
  issue "$issuer" "$stem" "/O=$o/CN=$cn" "$start" "$end" "$(leaf_exts "$issuer" "$san" "$ku")"
  cat "$WORK/$stem.pem" "$WORK/$issuer.pem" > "$WORK/$stem.fullchain.pem"
  LEAVES+=("$stem")
}
DS_KE="digitalSignature,keyEncipherment"
A="HISP A Test"; B="HISP B Test"

make_leaf hisp-a.example             intermediate-a hisp-a.example      "$A" "DNS:hisp-a.example"           "$DS_KE"
make_leaf ehr@hisp-a.example         intermediate-a ehr@hisp-a.example  "$A" "email:ehr@hisp-a.example"     "$DS_KE"
make_leaf hisp-b.example             intermediate-b hisp-b.example      "$B" "DNS:hisp-b.example"           "$DS_KE"
make_leaf iis@hisp-b.example         intermediate-b iis@hisp-b.example  "$B" "email:iis@hisp-b.example"     "$DS_KE"
make_leaf split@hisp-b.example.sign    intermediate-b split@hisp-b.example "$B" "email:split@hisp-b.example" "digitalSignature"
make_leaf split@hisp-b.example.encrypt intermediate-b split@hisp-b.example "$B" "email:split@hisp-b.example" "keyEncipherment"
make_leaf expired@hisp-b.example     intermediate-b expired@hisp-b.example "$B" "email:expired@hisp-b.example" "$DS_KE" 20200101000000Z 20210101000000Z
make_leaf notyet@hisp-b.example      intermediate-b notyet@hisp-b.example  "$B" "email:notyet@hisp-b.example"  "$DS_KE" 20400101000000Z 20450101000000Z
make_leaf revoked@hisp-b.example     intermediate-b revoked@hisp-b.example "$B" "email:revoked@hisp-b.example" "$DS_KE"
make_leaf wrongdomain@hisp-b.example intermediate-b someone@hisp-c.example "$B" "email:someone@hisp-c.example" "$DS_KE"
make_leaf rsa1024@hisp-b.example     intermediate-b rsa1024@hisp-b.example "$B" "email:rsa1024@hisp-b.example" "$DS_KE" "$LEAF_START" "$LEAF_END" 1024
make_leaf nosign@hisp-b.example      intermediate-b nosign@hisp-b.example  "$B" "email:nosign@hisp-b.example"  "keyEncipherment"
make_leaf untrusted@hisp-b.example   root-untrusted untrusted@hisp-b.example "Untrusted Test" "email:untrusted@hisp-b.example" "$DS_KE"
make_leaf revoked-intermediate-leaf@hisp-a.example intermediate-a2 revoked-intermediate-leaf@hisp-a.example "$A" \
  "email:revoked-intermediate-leaf@hisp-a.example" "$DS_KE"

# ---------------------------------------------------------------- revocations + CRLs
# gencrl CA OUTNAME [extra openssl ca args...]
gencrl() {
  local ca="$1" outname="$2"; shift 2
  openssl ca -batch -config "$WORK/ca/$ca/ca.cnf" -gencrl -md sha256 "$@" \
    -out "$WORK/$outname.crl.pem" 2>"$WORK/$outname.crl.log" || { cat "$WORK/$outname.crl.log" >&2; exit 1; }
}
# Stale CRL from intermediate-b: issued (and expired) in 2024, i.e. before any revocation,
# within the intermediate's validity. Generated first so it is CRL number 0x1000 and empty.
log "expired CRL"
gencrl intermediate-b  intermediate-b.expired -crl_lastupdate 20240601000000Z -crl_nextupdate 20240701000000Z

log "revocations"
openssl ca -batch -config "$WORK/ca/root-a/ca.cnf" -revoke "$WORK/intermediate-a2.pem" \
  -crl_reason cessationOfOperation 2>"$WORK/rev1.log" || { cat "$WORK/rev1.log" >&2; exit 1; }
openssl ca -batch -config "$WORK/ca/intermediate-b/ca.cnf" -revoke "$WORK/revoked@hisp-b.example.pem" \
  -crl_reason keyCompromise 2>"$WORK/rev2.log" || { cat "$WORK/rev2.log" >&2; exit 1; }

log "CRLs"
gencrl root-a          root-a          -crldays "$CRL_DAYS"
gencrl root-b          root-b          -crldays "$CRL_DAYS"
gencrl root-untrusted  root-untrusted  -crldays "$CRL_DAYS"
gencrl intermediate-a  intermediate-a  -crldays "$CRL_DAYS"
gencrl intermediate-a2 intermediate-a2 -crldays "$CRL_DAYS"
gencrl intermediate-b  intermediate-b  -crldays "$CRL_DAYS"

# ---------------------------------------------------------------- PKCS#12, DER copies, bundle
log "PKCS#12 / DER / bundle"
openssl pkcs12 -export -inkey "$WORK/ehr@hisp-a.example.key" -in "$WORK/ehr@hisp-a.example.pem" \
  -certfile "$WORK/intermediate-a.pem" -name "ehr@hisp-a.example" \
  -passout "pass:$P12_PASSWORD" -out "$WORK/ehr@hisp-a.example.p12"

CAS=(root-a root-b root-untrusted intermediate-a intermediate-a2 intermediate-b)
for c in "${CAS[@]}"; do
  openssl x509 -in "$WORK/$c.pem" -outform DER -out "$WORK/$c.cer"
done
CRLS=(root-a root-b root-untrusted intermediate-a intermediate-a2 intermediate-b intermediate-b.expired)
for c in "${CRLS[@]}"; do
  openssl crl -in "$WORK/$c.crl.pem" -outform DER -out "$WORK/$c.crl"
done

openssl crl2pkcs7 -nocrl -certfile "$WORK/root-a.pem" -certfile "$WORK/root-b.pem" \
  -outform DER -out "$WORK/bundle-a.p7b"

# ---------------------------------------------------------------- copy products
log "copying products to $OUT"
products=()
for c in "${CAS[@]}"; do products+=("$c.pem" "$c.key" "$c.cer"); done
for l in "${LEAVES[@]}"; do products+=("$l.pem" "$l.key" "$l.fullchain.pem"); done
for c in "${CRLS[@]}"; do products+=("$c.crl.pem" "$c.crl"); done
products+=("ehr@hisp-a.example.p12" "bundle-a.p7b")
for p in "${products[@]}"; do
  cp "$WORK/$p" "$OUT/$p"
done
chmod 644 "$OUT"/*.key
log "done: ${#products[@]} files written to $OUT"
