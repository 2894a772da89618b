#!/usr/bin/env bash
# Builds a minimal, reproducible runner image for a QEMU/OVMF measured boot:
#
#   OUTDIR/vmlinuz        the kernel from a Debian linux-image .deb (signed PE/COFF,
#                         EFI stub, TPM drivers tpm_tis/tpm_crb built in)
#   OUTDIR/initrd.img     a newc cpio (gzip -n, or plain with --no-compress) whose
#                         /init is the given static binary
#   OUTDIR/cmdline        the kernel command line (one line, no newline)
#   OUTDIR/SHA256SUMS     sha256sum-format digests of the three files above
#   OUTDIR/manifest.json  inputs and digests: kernel package and .deb digest,
#                         init digest, SOURCE_DATE_EPOCH, tool versions
#
# Usage: scripts/image/build.sh OUTDIR [--init STATIC-BINARY] [--extra DIR]...
#          [--cmdline STRING] [--kernel-deb FILE | --kernel-package NAME[=VERSION]]
#          [--cache DIR] [--no-compress]
#
# --init      static binary to run as /init (default: scripts/image/testinit,
#             built here with CGO_ENABLED=0 -trimpath)
# --extra     copy DIR's contents into the initramfs root (repeatable; later
#             directories win)
# --cmdline   kernel command line (default: "console=ttyS0 panic=-1 quiet")
# --kernel-deb      use this linux-image .deb (no download)
# --kernel-package  Debian package to download (default: what linux-image-amd64
#             depends on now; pin NAME=VERSION for a reproducible rebuild)
# --cache     download/build cache (default: $XDG_CACHE_HOME/attested-runner-image)
#
# Reproducible: the same kernel .deb, init binary, extra files, command line and
# SOURCE_DATE_EPOCH give byte-identical outputs. Every initramfs entry is owned
# by 0:0, has mtime SOURCE_DATE_EPOCH (default: the kernel's mtime inside the
# .deb), and is stored in C-locale path order with renumbered inodes.
# Idempotent: running it again rewrites OUTDIR with the same bytes.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "build.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

outdir=""
init=""
extras=()
cmdline="console=ttyS0 panic=-1 quiet"
kernel_deb=""
kernel_pkg=""
cache="${XDG_CACHE_HOME:-$HOME/.cache}/attested-runner-image"
compress=gzip

while [[ $# -gt 0 ]]; do
  case "$1" in
    --init) [[ $# -ge 2 ]] || die "--init needs a path"; init=$2; shift 2 ;;
    --extra) [[ $# -ge 2 ]] || die "--extra needs a directory"; extras+=("$2"); shift 2 ;;
    --cmdline) [[ $# -ge 2 ]] || die "--cmdline needs a value"; cmdline=$2; shift 2 ;;
    --kernel-deb) [[ $# -ge 2 ]] || die "--kernel-deb needs a path"; kernel_deb=$2; shift 2 ;;
    --kernel-package) [[ $# -ge 2 ]] || die "--kernel-package needs a name"; kernel_pkg=$2; shift 2 ;;
    --cache) [[ $# -ge 2 ]] || die "--cache needs a directory"; cache=$2; shift 2 ;;
    --no-compress) compress=none; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [[ -z "$outdir" ]] || die "one OUTDIR only (got $outdir and $1)"; outdir=$1; shift ;;
  esac
done
[[ -n "$outdir" ]] || usage
[[ "$cmdline" != *$'\n'* ]] || die "--cmdline must be one line"
for tool in dpkg-deb tar cpio gzip sha256sum find sort; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install dpkg tar cpio gzip coreutils findutils)"
done
mkdir -p "$cache" "$outdir"
cache=$(cd "$cache" && pwd)
outdir=$(cd "$outdir" && pwd)

# --- kernel -----------------------------------------------------------------
if [[ -z "$kernel_deb" ]]; then
  command -v apt-get >/dev/null || die "no --kernel-deb given and apt-get is missing"
  if [[ -z "$kernel_pkg" ]]; then
    kernel_pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n "$kernel_pkg" ]] || die "cannot resolve linux-image-amd64 (run apt-get update?)"
  fi
  name=${kernel_pkg%%=*}
  want_version=""
  [[ "$kernel_pkg" == *=* ]] && want_version=${kernel_pkg#*=}
  [[ -n "$want_version" ]] || want_version=$(apt-cache policy "$name" | awk '/Candidate:/ {print $2}')
  [[ -n "$want_version" && "$want_version" != "(none)" ]] || die "no candidate version for $name (apt-get update?)"
  # Debian .deb file names encode ':' in epochs as %3a.
  kernel_deb="$cache/${name}_${want_version//:/%3a}_amd64.deb"
  if [[ -s "$kernel_deb" ]]; then
    say "kernel: $name $want_version (cached)"
  else
    say "kernel: downloading $name=$want_version"
    # apt-get download checks the .deb against the signed archive index.
    (cd "$cache" && apt-get download -q "$name=$want_version" >/dev/null 2>"$cache/apt-download.log") \
      || die "apt-get download $name=$want_version failed: $(tail -3 "$cache/apt-download.log")"
    [[ -s "$kernel_deb" ]] || die "download did not produce $kernel_deb"
  fi
fi
[[ -f "$kernel_deb" ]] || die "kernel .deb $kernel_deb not found"
kernel_deb=$(cd "$(dirname "$kernel_deb")" && pwd)/$(basename "$kernel_deb")
deb_pkg=$(dpkg-deb -f "$kernel_deb" Package)
deb_version=$(dpkg-deb -f "$kernel_deb" Version)
deb_sha=$(sha256sum "$kernel_deb" | cut -d' ' -f1)

work=$(mktemp -d "${TMPDIR:-/tmp}/attested-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' \
  || die "$kernel_deb has no /boot/vmlinuz-*"
vmlinuz=$(find "$work/boot" -name 'vmlinuz-*' -type f | head -1)
[[ -n "$vmlinuz" ]] || die "$kernel_deb has no /boot/vmlinuz-*"
kernel_release=${vmlinuz##*/vmlinuz-}
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$vmlinuz")}
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since 1970, got $epoch"
say "kernel: $deb_pkg $deb_version ($kernel_release), SOURCE_DATE_EPOCH=$epoch"

# --- init -------------------------------------------------------------------
if [[ -z "$init" ]]; then
  command -v go >/dev/null || die "go not found: needed to build the default test init (or pass --init)"
  init="$cache/testinit"
  say "init: building scripts/image/testinit"
  (cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
    -ldflags='-s -w -buildid=' -o "$init.tmp" ./scripts/image/testinit) || die "building testinit failed"
  mv -f "$init.tmp" "$init"
fi
[[ -f "$init" ]] || die "init $init not found"
if command -v file >/dev/null && ! file -b "$init" | grep -q 'statically linked\|static-pie'; then
  die "init $init is not a statically linked executable ($(file -b "$init"))"
fi
init_sha=$(sha256sum "$init" | cut -d' ' -f1)
say "init: $init (sha256 $init_sha)"

# --- initramfs --------------------------------------------------------------
root="$work/root"
mkdir -p "$root"
for x in "${extras[@]}"; do
  [[ -d "$x" ]] || die "--extra $x is not a directory"
  say "extra: $x"
  cp -a --no-preserve=ownership "$x/." "$root/"
done
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run"
install -m 0755 "$init" "$root/init"
# Only permission bits matter inside; make them independent of the umask.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$epoch" {} +
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort \
  | cpio --quiet -o -H newc --reproducible -R 0:0 >"$work/initrd.cpio") || die "cpio failed"
case "$compress" in
  gzip) gzip -n -9 -c "$work/initrd.cpio" >"$work/initrd.img" ;;
  none) mv "$work/initrd.cpio" "$work/initrd.img" ;;
esac

# --- outputs ----------------------------------------------------------------
cp "$vmlinuz" "$work/vmlinuz"
printf '%s' "$cmdline" >"$work/cmdline"
(cd "$work" && sha256sum vmlinuz initrd.img cmdline) >"$work/SHA256SUMS"
sum() { awk -v f="$1" '$2 == f {print $1}' "$work/SHA256SUMS"; }
json_string() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
cat >"$work/manifest.json" <<EOF
{
  "kernel": {
    "package": $(json_string "$deb_pkg"),
    "version": $(json_string "$deb_version"),
    "release": $(json_string "$kernel_release"),
    "debSHA256": "$deb_sha",
    "sha256": "$(sum vmlinuz)"
  },
  "initrd": {
    "sha256": "$(sum initrd.img)",
    "compression": "$compress",
    "initSHA256": "$init_sha"
  },
  "cmdline": $(json_string "$cmdline"),
  "cmdlineSHA256": "$(sum cmdline)",
  "sourceDateEpoch": $epoch
}
EOF
for f in vmlinuz initrd.img cmdline SHA256SUMS manifest.json; do
  mv -f "$work/$f" "$outdir/$f.tmp" && mv -f "$outdir/$f.tmp" "$outdir/$f"
done
say "image in $outdir:"
sed 's/^/    /' "$outdir/SHA256SUMS" >&2
