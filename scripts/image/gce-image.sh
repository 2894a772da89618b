#!/usr/bin/env bash
# Turns a build's signed UKI into a disk Compute Engine can import for the
# fleet's gce provider: a raw disk whose GPT holds one EFI system partition
# with the UKI as \EFI\BOOT\BOOTX64.EFI (the removable-media path UEFI
# boots without boot entries), packed as GCE wants it
# (disk.raw in a sparse, old-GNU-format tar.gz).
#
# Usage: scripts/image/gce-image.sh UKI.efi|OUTDIR [options]
#
#   --out DIR          where disk.raw and disk.raw.tar.gz go (default: the
#                      UKI's directory)
#   --name NAME        the GCE image name (default attested-runner-uki-HEX12)
#   --bucket gs://B/P  the Cloud Storage prefix the tarball is uploaded to
#                      (default gs://BUCKET, a placeholder)
#   --db-cert CERT     the UKI signer's certificate, added to the image's
#                      Secure Boot signature database (the gce provider
#                      enables Secure Boot; without it only a UKI signed by
#                      a key in Google's default db boots). gcloud takes
#                      DER (openssl x509 -in C.pem -outform der -out C.der).
#   --disk-gib N       disk size in GiB (default 1; GCE wants whole GiB)
#   -h, --help         this text
#
# It does not run gcloud: it prints the commands that upload the tarball
# and create the image, whose description carries "uki-sha256:HEX", the
# SHA-256 of the UKI. The gce provider refuses to launch an image whose
# description does not name the UKI the fleet has just verified against
# the signed provenance. The output is reproducible: GUIDs, the volume id
# and timestamps derive from the UKI digest and SOURCE_DATE_EPOCH.
#
# Needs: sfdisk (fdisk), mkfs.vfat (dosfstools), mmd/mcopy (mtools), GNU tar,
# sha256sum.
set -euo pipefail

die() { echo "gce-image.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

src=""
out=""
name=""
bucket=""
dbcert=""
gib=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out=$2; shift 2 ;;
    --name) [[ $# -ge 2 ]] || die "--name needs a name"; name=$2; shift 2 ;;
    --bucket) [[ $# -ge 2 ]] || die "--bucket needs gs://BUCKET[/PREFIX]"; bucket=${2%/}; shift 2 ;;
    --db-cert) [[ $# -ge 2 ]] || die "--db-cert needs a certificate"; dbcert=$2; shift 2 ;;
    --disk-gib) [[ $# -ge 2 ]] || die "--disk-gib needs a number"; gib=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$src" ]] || die "one UKI or OUTDIR only"; src=$1; shift ;;
  esac
done
[[ -n "$src" ]] || die "usage: gce-image.sh UKI.efi|OUTDIR [--out DIR] [--name NAME] [--bucket gs://B/P] [--db-cert CERT] (--help)"
uki=$src
[[ -d "$src" ]] && uki=$src/uki.efi
[[ -f "$uki" && -s "$uki" ]] || die "$uki: no UKI (run build.sh and uki.sh first)"
[[ -z "$dbcert" || -f "$dbcert" ]] || die "--db-cert $dbcert: no such file"
[[ "$gib" =~ ^[1-9][0-9]{0,3}$ ]] || die "--disk-gib $gib: want a whole number of GiB"
[[ -z "$bucket" || "$bucket" =~ ^gs://[a-z0-9][-_.a-z0-9]*(/[^[:space:]]*)?$ ]] || die "--bucket $bucket: want gs://BUCKET[/PREFIX]"
bucket=${bucket:-gs://BUCKET}
for tool in sfdisk mkfs.vfat mmd mcopy tar sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install fdisk dosfstools mtools tar coreutils)"
done

digest=$(sha256sum "$uki" | cut -d' ' -f1)
[[ "$digest" =~ ^[0-9a-f]{64}$ ]] || die "cannot hash $uki"
name=${name:-attested-runner-uki-${digest:0:12}}
[[ "$name" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] || die "--name $name: want lower-case letters, digits and '-', at most 63"
out=${out:-$(dirname "$uki")}
mkdir -p "$out"

# Layout: GPT, the ESP from 1 MiB, sized for the UKI plus room (FAT32
# needs at least ~33 MiB), the rest of the disk left unpartitioned.
uki_bytes=$(stat -c %s "$uki")
esp_mib=$(( uki_bytes / 1048576 + 64 ))
(( esp_mib >= 100 )) || esp_mib=100
disk_bytes=$(( gib * 1024 * 1048576 ))
(( (esp_mib + 2) * 1048576 <= disk_bytes )) || die "a ${esp_mib} MiB ESP does not fit in ${gib} GiB: raise --disk-gib"

# Reproducible identities from the UKI digest.
guid() { local h; h=$(printf '%s/%s' "$1" "$digest" | sha256sum | cut -c1-32)
  echo "${h:0:8}-${h:8:4}-4${h:13:3}-8${h:17:3}-${h:20:12}" | tr a-f A-F; }
epoch=${SOURCE_DATE_EPOCH:-315532800}
(( epoch >= 315532800 )) || epoch=315532800 # FAT has no time before 1980

work=$(mktemp -d "${TMPDIR:-/tmp}/attested-gce.XXXXXX")
trap 'rm -rf "$work"' EXIT
disk=$work/disk.raw
truncate -s "$disk_bytes" "$disk"
say "partitioning a ${gib} GiB disk: ESP of ${esp_mib} MiB at 1 MiB"
sfdisk --quiet --no-reread --no-tell-kernel "$disk" >/dev/null <<EOF
label: gpt
label-id: $(guid disk)
first-lba: 2048
start=2048, size=$(( esp_mib * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(guid esp), name="EFI system partition"
EOF

say "formatting the ESP and copying the UKI to \\EFI\\BOOT\\BOOTX64.EFI"
# --invariant first: it would otherwise replace the volume id too.
log=$(mkfs.vfat --invariant -F 32 -s 1 -n ESP -i "${digest:0:8}" --offset=2048 "$disk" $(( esp_mib * 1024 )) 2>&1) \
  || die "mkfs.vfat: $log"
cp "$uki" "$work/BOOTX64.EFI"
touch -d "@$epoch" "$work/BOOTX64.EFI"
export SOURCE_DATE_EPOCH=$epoch
img="$disk@@1M"
mmd -i "$img" ::/EFI ::/EFI/BOOT
mcopy -m -i "$img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

say "packing disk.raw.tar.gz"
touch -d "@$epoch" "$disk"
(cd "$work" && tar --format=oldgnu --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -Sczf disk.raw.tar.gz disk.raw)
mv "$work/disk.raw" "$work/disk.raw.tar.gz" "$out/"

uri="$bucket/$name.tar.gz"
db=""
[[ -z "$dbcert" ]] || db=" --signature-database-file=$(printf '%q' "$dbcert")"
[[ -n "$dbcert" ]] || say "no --db-cert: Secure Boot will boot this UKI only if Google's default db trusts its signer"
say "wrote $out/disk.raw.tar.gz (uki-sha256:$digest); to import it, run:"
cat <<EOF
gcloud storage cp $(printf '%q' "$out/disk.raw.tar.gz") $uri
gcloud compute images create $name --source-uri $uri --guest-os-features=UEFI_COMPATIBLE,GVNIC,TDX_CAPABLE,SEV_SNP_CAPABLE$db --description "uki-sha256:$digest"
EOF
