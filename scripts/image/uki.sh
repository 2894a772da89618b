#!/usr/bin/env bash
# Wraps a build.sh image into a signed unified kernel image (UKI) for a
# Secure Boot test: systemd's EFI stub with the kernel, initrd and command
# line as PE sections, signed with sbsign.
#
# Usage: scripts/image/uki.sh OUTDIR [--key KEY.pem --cert CERT.pem]
#
# Writes OUTDIR/uki.efi. Without --key/--cert it signs with Debian's OVMF
# "snakeoil" test key (/usr/share/ovmf/PkKek-1-snakeoil.key, password
# "snakeoil"), which OVMF_VARS_4M.snakeoil.fd enrolls as PK, KEK and db, so
# `boot.sh OUTDIR --uki OUTDIR/uki.efi --secure-boot` boots it with Secure
# Boot enforced. The snakeoil key is public: for tests only.
#
# Needs: binutils (objcopy), sbsigntool (sbsign), systemd-boot-efi (the stub),
# openssl (to unlock the snakeoil key).
set -euo pipefail

die() { echo "uki.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

outdir=""
key=""
cert=""
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
while [[ $# -gt 0 ]]; do
  case "$1" in
    --key) [[ $# -ge 2 ]] || die "--key needs a file"; key=$2; shift 2 ;;
    --cert) [[ $# -ge 2 ]] || die "--cert needs a file"; cert=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$outdir" ]] || die "one OUTDIR only"; outdir=$1; shift ;;
  esac
done
[[ -n "$outdir" ]] || die "usage: uki.sh OUTDIR [--key KEY --cert CERT]"
for f in vmlinuz initrd.img cmdline; do [[ -f "$outdir/$f" ]] || die "$outdir/$f missing: run build.sh first"; done
for tool in objcopy sbsign; do command -v "$tool" >/dev/null || die "$tool not found (apt-get install binutils sbsigntool)"; done
[[ -f "$stub" ]] || die "$stub not found (apt-get install systemd-boot-efi)"

work=$(mktemp -d "${TMPDIR:-/tmp}/attested-uki.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [[ -z "$key" ]]; then
  [[ -z "$cert" ]] || die "--cert without --key"
  command -v openssl >/dev/null || die "openssl not found"
  cert=/usr/share/ovmf/PkKek-1-snakeoil.pem
  [[ -f "$cert" ]] || die "$cert not found (apt-get install ovmf)"
  key="$work/snakeoil.key"
  (umask 077 && openssl rsa -in /usr/share/ovmf/PkKek-1-snakeoil.key -passin pass:snakeoil -out "$key" 2>/dev/null) \
    || die "cannot unlock the snakeoil key"
  say "signing with Debian's OVMF snakeoil test key"
fi
[[ -f "$key" && -f "$cert" ]] || die "key $key or certificate $cert not found"

# objcopy stamps the PE header with the current time unless
# SOURCE_DATE_EPOCH is set: use the image's, so the UKI is reproducible.
if [[ -z "${SOURCE_DATE_EPOCH:-}" && -f "$outdir/manifest.json" ]]; then
  SOURCE_DATE_EPOCH=$(sed -n 's/^ *"sourceDateEpoch": *\([0-9]*\).*/\1/p' "$outdir/manifest.json")
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
printf 'ID=attested-runner\nNAME="attested-runner test image"\n' >"$work/os-release"
# Section addresses from systemd's documentation for this stub: above the
# stub's own sections, in this order, with room for the kernel.
objcopy \
  --add-section .osrel="$work/os-release" --change-section-vma .osrel=0x20000 \
  --add-section .cmdline="$outdir/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$outdir/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$outdir/initrd.img" --change-section-vma .initrd=0x3000000 \
  "$stub" "$work/uki-unsigned.efi"
sbsign --key "$key" --cert "$cert" --output "$work/uki.efi" "$work/uki-unsigned.efi" 2>&1 \
  | grep -v 'gaps between PE/COFF sections' >&2 || true
[[ -s "$work/uki.efi" ]] || die "sbsign failed"
mv -f "$work/uki.efi" "$outdir/uki.efi"
say "UKI: $outdir/uki.efi ($(stat -c %s "$outdir/uki.efi") bytes)"
