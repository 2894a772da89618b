#!/usr/bin/env bash
# Builds a minimal, reproducible runner image for a QEMU/OVMF measured boot:
#
#   OUTDIR/vmlinuz        the kernel from a Debian linux-image .deb (signed PE/COFF,
#                         EFI stub, TPM drivers tpm_tis/tpm_crb built in)
#   OUTDIR/initrd.img     a newc cpio (zstd -12, or gzip -n with --compress gzip,
#                         or plain with --no-compress) whose
#                         /init is the given static binary
#   OUTDIR/cmdline        the kernel command line (one line, no newline)
#   OUTDIR/SHA256SUMS     sha256sum-format digests of the three files above
#   OUTDIR/manifest.json  inputs and digests: kernel package and .deb digest,
#                         init digest, SOURCE_DATE_EPOCH, tool versions
#   OUTDIR/attested-runner  (--agent) the agent binary inside the initrd, for
#                         the reference values' agentDigests
#
# Usage: scripts/image/build.sh OUTDIR [--init STATIC-BINARY] [--extra DIR]...
#          [--cmdline STRING] [--kernel-deb FILE | --kernel-package NAME[=VERSION]]
#          [--cache DIR] [--compress zstd|gzip] [--no-compress]
#        scripts/image/build.sh OUTDIR --agent --gate URL --gate-key FILE [--gate-ca FILE]
#          [--runner fake|DIR | --runner-tarball FILE --runner-sha256 HEX |
#           --runner-version V --runner-sha256 HEX] [--runtime]
#          [--runner-user UID:GID] [--net dhcp|none|ADDR/PREFIX[@GW]] [--scratch DEVICE]
#          [--module NAME]... [--package NAME=VERSION]... [--agent-flag FLAG]...
#          [--runner-device PATH]... [--extra DIR]... [common options]
#
# --init      static binary to run as /init (default: scripts/image/testinit,
#             built here with CGO_ENABLED=0 -trimpath)
# --extra     copy DIR's contents into the initramfs root (repeatable; later
#             directories win)
# --cmdline   kernel command line (default: "console=ttyS0 panic=-1 quiet")
# --kernel-deb      use this linux-image .deb (no download)
# --kernel-package  Debian package to download (default: what linux-image-amd64
#             depends on now; a meta package such as linux-image-cloud-amd64
#             is resolved the same way; pin NAME=VERSION for a reproducible
#             rebuild)
# --kernel-suite    take the kernel from this Debian suite instead of the
#             system's apt sources, e.g. trixie-backports: Linux 6.16 and later
#             let a TD's agent extend RTMRs (the 6.1 kernel of bookworm cannot).
#             Its package list is fetched from --kernel-mirror (default
#             http://deb.debian.org/debian) into the cache and checked with the
#             system's Debian archive keyring, as apt-get update does
# --cache     download/build cache (default: $XDG_CACHE_HOME/attested-runner-image)
#
# Agent image (--agent): /init is scripts/image/agentinit (PID 1: mounts,
# modules, static network, then `attested-runner run`, see its doc comment),
# configured by /etc/attested-runner/init.json. The initrd also carries:
#   /usr/bin/attested-runner  ./cmd/attested-runner, built here (static,
#                             CGO_ENABLED=0, -trimpath, no build id)
#   /runner                   the runner directory (RAM-backed: the initramfs)
#   /bin/bash + its libraries bash, libc6, libtinfo6 from pinned Debian .debs
#                             (the runner runs hooks and steps with bash)
#   /bin/busybox + applets    busybox-static: coreutils for jobs
#   /lib/modules/...          --module NAME and its dependencies (from the
#                             kernel .deb's .modinfo), loaded in order
#   /opt/attested-runner/action/attest  the job-side action
# --gate      gate URL the agent dials (required), e.g. https://gate.example
# --gate-key  PEM public key(s) of the gate (`jobgate keygen` prints it), pinned
#             in the image as /etc/attested-runner/gate-keys.pem: the agent
#             accepts an admission answer and a certificate only if one of
#             them signed it (required; list several to rotate keys)
# --gate-ca   PEM CA bundle for the gate's TLS certificate
# --runner    'fake': e2e/cmd/fake-runner-listener as bin/Runner.Listener
#             (tests); DIR: copy an actions-runner directory (default: fake)
# --runner-tarball FILE --runner-sha256 HEX
#             an official actions-runner-linux-x64-V.tar.gz release (or one
#             laid out like it), checked against the pinned SHA-256 and
#             unpacked as the runner directory; implies --runtime
# --runner-version V --runner-sha256 HEX
#             download actions-runner-linux-x64-V.tar.gz from GitHub's releases
#             (github.com/actions/runner/releases) into the cache, check the
#             pinned digest, use it as --runner-tarball; implies --runtime
# --runtime   the runner's runtime from pinned Debian .debs: ICU, Kerberos,
#             zlib, OpenSSL, LTTng-UST, libstdc++/libgcc_s (the list of
#             actions/runner's installdependencies.sh, plus what .NET and node
#             link), ca-certificates, git, tar, gzip, the rest of libc6, and
#             /opt/attested-runner/runtime-probe (a C++ program linked
#             against them, built here with g++ and the -dev packages). Every
#             ELF file of the image must resolve its libraries inside it, or
#             the build fails
# --runner-user  uid:gid of the runner and the job (default 1000:1000)
# --net       dhcp (default): busybox udhcpc on eth0 configures the address,
#             default route and /etc/resolv.conf and renews the lease;
#             ADDR/PREFIX[@GW]: static IPv4 of eth0 (no DNS); none: network down
# --scratch   DEVICE (e.g. /dev/vdb): the job's work folder on this disk,
#             dm-crypt (aes-xts-plain64) with a key made at boot that exists
#             only in kernel memory, ext2, mounted at /scratch; the work folder
#             is /scratch/_work (set the gate's github.workFolder to it). The
#             disk's contents are lost at every boot
# --module    kernel module to load, with its dependencies (repeatable;
#             default: virtio_pci virtio_net; --scratch adds virtio_blk
#             dm_mod dm_crypt ecb xts crc32c_generic ext4). The NIC drivers of
#             Compute Engine (gve), Azure (hv_netvsc) and AWS (ena), and QEMU's
#             fw_cfg (qemu_fw_cfg: the fleet names each VM through it) are
#             always added as optional modules: loaded where their hardware exists
# --package   pin a userland package version (bash, libc6, libtinfo6,
#             busybox-static; default: apt's candidate). Recorded in the
#             manifest with each .deb's SHA-256.
# --agent-flag  extra flag for `attested-runner run` (repeatable), e.g.
#             --agent-flag --idle-ttl=5m
# --runner-device  device node handed to the runner user at boot (tests:
#             /dev/ttyS1 to export results); production images list none
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
json_string() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
json_list() { local out="" x; for x in "$@"; do out+="${out:+, }$(json_string "$x")"; done; printf '[%s]' "$out"; }

outdir=""
init=""
extras=()
cmdline="console=ttyS0 panic=-1 quiet"
kernel_deb=""
kernel_pkg=""
kernel_suite=""
kernel_mirror=http://deb.debian.org/debian
cache="${XDG_CACHE_HOME:-$HOME/.cache}/attested-runner-image"
compress=zstd
agent_mode=0
gate=""
gate_ca=""
gate_key=""
runner_src=fake
runner_tarball=""
runner_sha256=""
runner_version=""
runtime=0
scratch_dev=""
runner_user=1000:1000
net_spec=dhcp
modules=()
pins=()
agent_flags=()
runner_devices=()
agent_opts=0 # set by any option that only applies to --agent

while [[ $# -gt 0 ]]; do
  case "$1" in
    --init) [[ $# -ge 2 ]] || die "--init needs a path"; init=$2; shift 2 ;;
    --extra) [[ $# -ge 2 ]] || die "--extra needs a directory"; extras+=("$2"); shift 2 ;;
    --cmdline) [[ $# -ge 2 ]] || die "--cmdline needs a value"; cmdline=$2; shift 2 ;;
    --kernel-deb) [[ $# -ge 2 ]] || die "--kernel-deb needs a path"; kernel_deb=$2; shift 2 ;;
    --kernel-package) [[ $# -ge 2 ]] || die "--kernel-package needs a name"; kernel_pkg=$2; shift 2 ;;
    --kernel-suite) [[ $# -ge 2 ]] || die "--kernel-suite needs a suite"; kernel_suite=$2; shift 2 ;;
    --kernel-mirror) [[ $# -ge 2 ]] || die "--kernel-mirror needs a URL"; kernel_mirror=$2; shift 2 ;;
    --cache) [[ $# -ge 2 ]] || die "--cache needs a directory"; cache=$2; shift 2 ;;
    --no-compress) compress=none; shift ;;
    --compress) [[ $# -ge 2 && ( "$2" == zstd || "$2" == gzip ) ]] || die "--compress needs zstd or gzip"; compress=$2; shift 2 ;;
    --agent) agent_mode=1; shift ;;
    --gate) [[ $# -ge 2 ]] || die "--gate needs a URL"; gate=$2; agent_opts=1; shift 2 ;;
    --gate-ca) [[ $# -ge 2 ]] || die "--gate-ca needs a file"; gate_ca=$2; agent_opts=1; shift 2 ;;
    --gate-key) [[ $# -ge 2 ]] || die "--gate-key needs a file"; gate_key=$2; agent_opts=1; shift 2 ;;
    --runner) [[ $# -ge 2 ]] || die "--runner needs 'fake' or a directory"; runner_src=$2; agent_opts=1; shift 2 ;;
    --runner-tarball) [[ $# -ge 2 ]] || die "--runner-tarball needs a file"; runner_tarball=$2; agent_opts=1; shift 2 ;;
    --runner-sha256) [[ $# -ge 2 ]] || die "--runner-sha256 needs a hex digest"; runner_sha256=$2; agent_opts=1; shift 2 ;;
    --runner-version) [[ $# -ge 2 ]] || die "--runner-version needs a version"; runner_version=$2; agent_opts=1; shift 2 ;;
    --runtime) runtime=1; agent_opts=1; shift ;;
    --scratch) [[ $# -ge 2 ]] || die "--scratch needs a device"; scratch_dev=$2; agent_opts=1; shift 2 ;;
    --runner-user) [[ $# -ge 2 ]] || die "--runner-user needs uid:gid"; runner_user=$2; agent_opts=1; shift 2 ;;
    --net) [[ $# -ge 2 ]] || die "--net needs ADDR/PREFIX[@GATEWAY] or none"; net_spec=$2; agent_opts=1; shift 2 ;;
    --module) [[ $# -ge 2 ]] || die "--module needs a name"; modules+=("$2"); agent_opts=1; shift 2 ;;
    --package) [[ $# -ge 2 ]] || die "--package needs NAME=VERSION"; pins+=("$2"); agent_opts=1; shift 2 ;;
    --agent-flag) [[ $# -ge 2 ]] || die "--agent-flag needs a flag"; agent_flags+=("$2"); agent_opts=1; shift 2 ;;
    --runner-device) [[ $# -ge 2 ]] || die "--runner-device needs a path"; runner_devices+=("$2"); agent_opts=1; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [[ -z "$outdir" ]] || die "one OUTDIR only (got $outdir and $1)"; outdir=$1; shift ;;
  esac
done
[[ -n "$outdir" ]] || usage
[[ "$cmdline" != *$'\n'* ]] || die "--cmdline must be one line"
if [[ $agent_mode -eq 1 ]]; then
  [[ -z "$init" ]] || die "--agent and --init exclude each other (the agent image's init is scripts/image/agentinit)"
  [[ -n "$gate" ]] || die "--agent needs --gate URL"
  [[ -n "$gate_key" ]] || die "--agent needs --gate-key FILE: the gate's public key (jobgate keygen prints it), pinned in the image"
  [[ -f "$gate_key" ]] || die "--gate-key $gate_key not found"
  grep -q -- '-----BEGIN PUBLIC KEY-----' "$gate_key" || die "--gate-key $gate_key has no PEM PUBLIC KEY block"
  [[ "$gate" =~ ^https?://[A-Za-z0-9.:-]+(/[A-Za-z0-9._~/-]*)?$ ]] || die "--gate $gate: want http(s)://HOST[:PORT][/PATH]"
  [[ "$runner_user" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || die "--runner-user $runner_user: want uid:gid, not root"
  [[ "$net_spec" == none || "$net_spec" == dhcp || "$net_spec" =~ ^[0-9.]+/[0-9]+(@[0-9.]+)?$ ]] || die "--net $net_spec: want dhcp, none or ADDR/PREFIX[@GATEWAY]"
  if [[ -n "$runner_tarball" || -n "$runner_version" ]]; then
    [[ "$runner_src" == fake ]] || die "--runner and --runner-tarball/--runner-version exclude each other"
    [[ -z "$runner_tarball" || -z "$runner_version" || "$runner_tarball" == *"-$runner_version.tar.gz" ]] || die "--runner-tarball $runner_tarball is not version $runner_version"
    [[ "$runner_sha256" =~ ^[0-9a-f]{64}$ ]] || die "--runner-tarball/--runner-version need --runner-sha256 HEX (the pinned SHA-256 of the release tarball)"
    runtime=1
  elif [[ -n "$runner_sha256" ]]; then
    die "--runner-sha256 needs --runner-tarball or --runner-version"
  fi
  [[ -z "$runner_version" || "$runner_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--runner-version $runner_version: want X.Y.Z"
  [[ "$runner_src" == fake ]] || runtime=1
  [[ -z "$scratch_dev" || "$scratch_dev" =~ ^/dev/[a-z0-9]+$ ]] || die "--scratch $scratch_dev: want a device such as /dev/vdb"
  for x in "${agent_flags[@]}" "${runner_devices[@]}"; do
    [[ "$x" =~ ^[A-Za-z0-9=:/._,-]+$ ]] || die "agent flag or device $x has characters this script does not quote"
  done
  [[ ${#modules[@]} -gt 0 ]] || modules=(virtio_pci virtio_net)
  # The NICs of the clouds: loaded where their device exists (a module
  # whose hardware is absent, such as hv_vmbus outside Hyper-V, refuses to
  # load: agentinit logs it and goes on).
  optional_modules=(gve hv_netvsc ena qemu_fw_cfg)
  [[ -z "$scratch_dev" ]] || modules+=(virtio_blk dm_mod dm_crypt ecb xts crc32c_generic ext4)
  for tool in objcopy readelf; do
    command -v "$tool" >/dev/null || die "$tool not found: --agent reads module and ELF metadata (apt-get install binutils)"
  done
  command -v go >/dev/null || die "go not found: --agent builds the agent"
elif [[ $agent_opts -eq 1 ]]; then
  die "--gate, --gate-key, --gate-ca, --runner*, --runtime, --runner-user, --net, --scratch, --module, --package, --agent-flag and --runner-device need --agent"
fi
[[ "$compress" != zstd ]] || command -v zstd >/dev/null || die "zstd not found (apt-get install zstd, or --compress gzip)"
for tool in dpkg-deb tar cpio gzip sha256sum find sort; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install dpkg tar cpio gzip coreutils findutils)"
done
mkdir -p "$cache" "$outdir"
cache=$(cd "$cache" && pwd)
outdir=$(cd "$outdir" && pwd)

# --- kernel -----------------------------------------------------------------
if [[ -z "$kernel_deb" ]]; then
  command -v apt-get >/dev/null || die "no --kernel-deb given and apt-get is missing"
  apt_opts=()
  if [[ -n "$kernel_suite" ]]; then
    [[ "$kernel_suite" =~ ^[a-z0-9.-]+$ ]] || die "--kernel-suite $kernel_suite is not a Debian suite name"
    # A private apt state for that suite only: the system's sources and
    # lists are not touched.
    aptdir="$cache/apt/$kernel_suite"
    mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/sources.list.d"
    echo "deb $kernel_mirror $kernel_suite main" >"$aptdir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$aptdir/sources.list" -o "Dir::Etc::SourceParts=$aptdir/sources.list.d"
      -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache" -o Debug::NoLocking=1)
    say "kernel: package list of $kernel_suite from $kernel_mirror"
    apt-get "${apt_opts[@]}" -q update >"$aptdir/update.log" 2>&1 \
      || die "apt-get update for $kernel_suite failed: $(tail -3 "$aptdir/update.log")"
    if grep -q "^W: .*\(NO_PUBKEY\|not signed\|Signature\)" "$aptdir/update.log"; then
      die "the $kernel_suite package list did not verify: $(grep '^W:' "$aptdir/update.log" | head -2)"
    fi
  fi
  [[ -n "$kernel_pkg" ]] || kernel_pkg=linux-image-amd64
  if [[ "$kernel_pkg" != *=* && ! "$kernel_pkg" =~ ^linux-image-[0-9] ]]; then
    # A meta package: the versioned image package it depends on now.
    meta=$kernel_pkg
    kernel_pkg=$(apt-cache "${apt_opts[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [[ -n "$kernel_pkg" ]] || die "cannot resolve $meta${kernel_suite:+ in $kernel_suite} (run apt-get update?)"
  fi
  name=${kernel_pkg%%=*}
  want_version=""
  [[ "$kernel_pkg" == *=* ]] && want_version=${kernel_pkg#*=}
  [[ -n "$want_version" ]] || want_version=$(apt-cache "${apt_opts[@]}" policy "$name" | awk '/Candidate:/ {print $2}')
  [[ -n "$want_version" && "$want_version" != "(none)" ]] || die "no candidate version for $name (apt-get update?)"
  # Debian .deb file names encode ':' in epochs as %3a.
  kernel_deb="$cache/${name}_${want_version//:/%3a}_amd64.deb"
  if [[ -s "$kernel_deb" ]]; then
    say "kernel: $name $want_version (cached)"
  else
    say "kernel: downloading $name=$want_version"
    # apt-get download checks the .deb against the signed archive index.
    (cd "$cache" && apt-get "${apt_opts[@]}" download -q "$name=$want_version" >/dev/null 2>"$cache/apt-download.log") \
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

if ! dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" --wildcards './boot/vmlinuz-*' 2>/dev/null; then
  if dpkg-deb -f "$kernel_deb" Depends | grep -q 'linux-binary-'; then
    die "$kernel_deb has no /boot/vmlinuz-*: it is a split kernel package (vmlinuz in linux-binary-*, modules in linux-modules-*), which this script does not assemble yet; pin an image package that carries both, e.g. --kernel-package linux-image-6.16.12+deb13-cloud-amd64"
  fi
  die "$kernel_deb has no /boot/vmlinuz-*"
fi
vmlinuz=$(find "$work/boot" -name 'vmlinuz-*' -type f | head -1)
[[ -n "$vmlinuz" ]] || die "$kernel_deb has no /boot/vmlinuz-*"
kernel_release=${vmlinuz##*/vmlinuz-}
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$vmlinuz")}
[[ "$epoch" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH must be seconds since 1970, got $epoch"
say "kernel: $deb_pkg $deb_version ($kernel_release), SOURCE_DATE_EPOCH=$epoch"
# Where the .deb keeps its modules: /lib/modules, or /usr/lib/modules in
# the merged-/usr packages of Debian 13 and its backports.
dpkg-deb -c "$kernel_deb" | awk '{print $6}' >"$work/deb-files"
moddir=$(awk -v r="$kernel_release" '$0 == "./lib/modules/" r "/modules.builtin" || $0 == "./usr/lib/modules/" r "/modules.builtin" {sub("/modules.builtin$", ""); print; exit}' "$work/deb-files")
[[ -n "$moddir" ]] || die "$kernel_deb has no lib/modules/$kernel_release/modules.builtin"
# What the kernel offers a confidential VM (its /boot/config): the TDX and
# SEV-SNP guest drivers, configfs-tsm quotes, and the TDX RTMR sysfs files
# (TSM measurements, Linux 6.16) the agent extends its lifecycle log into.
kconfig() { [[ -s "$work/kconfig" ]] && sed -n "s/^CONFIG_$1=//p" "$work/kconfig" | head -1; return 0; }
: >"$work/kconfig"
if grep -qxF "./boot/config-$kernel_release" "$work/deb-files"; then
  dpkg-deb --fsys-tarfile "$kernel_deb" | tar -xO "./boot/config-$kernel_release" >"$work/kconfig" || die "cannot read the kernel config in $kernel_deb"
fi
tdx_rtmr=false
[[ "$(kconfig TDX_GUEST_DRIVER)" =~ ^[ym]$ && "$(kconfig TSM_MEASUREMENTS)" == y ]] && tdx_rtmr=true
cc_json="\"tdxGuest\": $(json_string "$(kconfig TDX_GUEST_DRIVER)"), \"sevGuest\": $(json_string "$(kconfig SEV_GUEST)"), \"tsmReports\": $(json_string "$(kconfig TSM_REPORTS)"), \"tsmMeasurements\": $(json_string "$(kconfig TSM_MEASUREMENTS)"), \"tdxRTMRExtend\": $tdx_rtmr"
[[ -s "$work/kconfig" ]] || cc_json="\"unknown\": \"no /boot/config-$kernel_release in the .deb\""
say "kernel: confidential computing: {$cc_json}"

# --- agent image --------------------------------------------------------------
gobuild() { # gobuild OUT PACKAGE: static, reproducible (no paths, no build id)
  (cd "$repo" && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -buildvcs=false \
    -ldflags='-s -w -buildid=' -o "$1" "$2") || die "building $2 failed"
}

# fetch_deb NAME: downloads NAME (at its --package pin, else apt's candidate)
# into the cache and prints the .deb's path. apt-get download checks the
# file against the signed archive index.
fetch_deb() {
  local name=$1 version="" p deb
  for p in "${pins[@]}"; do [[ "${p%%=*}" == "$name" ]] && version=${p#*=}; done
  if [[ -z "$version" ]]; then
    version=$(apt-cache policy "$name" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n "$version" && "$version" != "(none)" ]] || die "no candidate version for $name (apt-get update?)"
  fi
  # amd64, or "all" for architecture-independent packages (ca-certificates).
  local stem="$cache/debs/${name}_${version//:/%3a}"
  deb="${stem}_amd64.deb"
  [[ -s "$deb" ]] || deb="${stem}_all.deb"
  if [[ ! -s "$deb" ]]; then
    mkdir -p "$cache/debs"
    say "package: downloading $name=$version"
    (cd "$cache/debs" && apt-get download -q "$name=$version" >/dev/null 2>"$cache/apt-download.log") \
      || die "apt-get download $name=$version failed: $(tail -3 "$cache/apt-download.log")"
    deb="${stem}_amd64.deb"
    [[ -s "$deb" ]] || deb="${stem}_all.deb"
    [[ -s "$deb" ]] || die "download of $name=$version produced neither ${stem}_amd64.deb nor _all.deb"
  fi
  echo "$deb"
}

# find_module DIR NAME: the first NAME.ko[.xz|.zst] under DIR (module file
# names may use '-' where module names use '_').
find_module() {
  find "$1" -regextype posix-extended -regex ".*/${2//_/[-_]}\.ko(\.xz|\.zst)?" -print -quit 2>/dev/null || true
}

# modinfo_depends KO: the module's dependencies (its .modinfo "depends=").
modinfo_depends() {
  local ko=$1
  case "$ko" in
    *.ko.xz) xz -dc "$ko" >"$work/mod.ko"; ko="$work/mod.ko" ;;
    *.ko.zst) zstd -qdc "$ko" >"$work/mod.ko"; ko="$work/mod.ko" ;;
  esac
  objcopy -O binary --only-section=.modinfo "$ko" "$work/modinfo" || die "cannot read .modinfo of $1"
  tr '\0' '\n' <"$work/modinfo" | sed -n 's/^depends=//p' | tr ',' ' '
}

agent_manifest=""
if [[ $agent_mode -eq 1 ]]; then
  agentroot="$work/agentroot"
  mkdir -p "$agentroot"/{bin,usr/bin,lib/x86_64-linux-gnu,lib64,etc/attested-runner,runner/bin,opt/attested-runner/action}

  # Kernel modules: the closure of --module over .modinfo dependencies,
  # extracted from the same kernel .deb (cached per .deb digest).
  modcache="$cache/modules/$deb_sha"
  mkdir -p "$modcache/lib"
  # cache_put SRC DEST: copy into the cache under a temporary name, then
  # rename, so a concurrent build never reads half a file.
  cache_put() { mkdir -p "$(dirname "$2")"; cp "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"; }
  if [[ ! -f "$modcache/modules.builtin" ]]; then
    dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" "$moddir/modules.builtin" \
      || die "$kernel_deb has no modules.builtin"
    cache_put "$work/$moddir/modules.builtin" "$modcache/modules.builtin"
  fi
  # The confidential-computing guest drivers this kernel has (configfs,
  # configfs-tsm, TDX and SEV-SNP guests): optional, loaded where their
  # hardware exists, so the agent can quote through configfs-tsm in a TD.
  for m in configfs tsm tsm_report tdx_guest sev_guest; do
    if grep -qE "/${m//_/[-_]}\.ko(\.[a-z]+)?$" "$work/deb-files"; then optional_modules+=("$m"); fi
  done
  declare -A mod_file=() mod_deps=() mod_seen=()
  pending=()
  for m in "${modules[@]}" "${optional_modules[@]}"; do pending+=("${m//-/_}"); done
  while [[ ${#pending[@]} -gt 0 ]]; do
    todo=() want=()
    for m in "${pending[@]}"; do
      [[ -z "${mod_seen[$m]:-}" ]] || continue
      mod_seen[$m]=1
      if grep -qE "/${m//_/[-_]}\.ko(\.[a-z]+)?$" "$modcache/modules.builtin"; then
        say "module $m: built into the kernel"
        mod_deps[$m]=builtin
        continue
      fi
      todo+=("$m")
      [[ -n "$(find_module "$modcache/${moddir#./}" "$m")" ]] || want+=("$m")
    done
    if [[ ${#want[@]} -gt 0 ]]; then
      patterns=()
      for m in "${want[@]}"; do patterns+=("$moddir/kernel/*/${m//_/[-_]}.ko*"); done
      say "modules: extracting ${want[*]} from $deb_pkg"
      # tar fails on patterns that match nothing; find_module below names them.
      rm -rf "$work/modx" && mkdir -p "$work/modx"
      (dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work/modx" --wildcards --wildcards-match-slash "${patterns[@]}") 2>/dev/null || true
      while IFS= read -r -d '' ko; do
        cache_put "$work/modx/$ko" "$modcache/$ko"
      done < <(cd "$work/modx" && find . -type f -print0)
    fi
    pending=()
    for m in "${todo[@]}"; do
      hit=$(find_module "$modcache/${moddir#./}" "$m")
      [[ -n "$hit" ]] || die "module $m is neither in $deb_pkg nor built into its kernel"
      mod_file[$m]=$hit
      mod_deps[$m]=$(modinfo_depends "$hit")
      for d in ${mod_deps[$m]}; do pending+=("${d//-/_}"); done
    done
  done
  # Dependencies first (depth-first post-order).
  mod_order=()
  declare -A mod_done=()
  visit() {
    local m=$1 d
    [[ -z "${mod_done[$m]:-}" && "${mod_deps[$m]}" != builtin ]] || return 0
    mod_done[$m]=1
    for d in ${mod_deps[$m]}; do visit "${d//-/_}"; done
    mod_order+=("$m")
  }
  for m in "${modules[@]}" "${optional_modules[@]}"; do visit "${m//-/_}"; done
  # Which of them the required modules need (the rest is optional).
  declare -A mod_req=()
  need() {
    local m=$1 d
    [[ -z "${mod_req[$m]:-}" && "${mod_deps[$m]}" != builtin ]] || return 0
    mod_req[$m]=1
    for d in ${mod_deps[$m]}; do need "${d//-/_}"; done
  }
  for m in "${modules[@]}"; do need "${m//-/_}"; done
  modpaths=()
  optpaths=()
  for m in "${mod_order[@]}"; do
    src=${mod_file[$m]}
    rel=${src#"$modcache"/}
    mkdir -p "$agentroot/$(dirname "$rel")"
    case "$rel" in
      # Loaded with finit_module(2) without decompression flags: store them
      # decompressed (a module's signature is inside the compressed payload).
      *.ko.xz) rel=${rel%.xz}; xz -dc "$src" >"$agentroot/$rel" ;;
      *.ko.zst) rel=${rel%.zst}; zstd -qdc "$src" >"$agentroot/$rel" ;;
      *) cp "$src" "$agentroot/$rel" ;;
    esac
    chmod 0644 "$agentroot/$rel"
    if [[ -n "${mod_req[$m]:-}" ]]; then modpaths+=("/$rel"); else optpaths+=("/$rel"); fi
  done
  say "modules: ${mod_order[*]:-none}"

  # bash and its libraries, busybox: from pinned Debian packages.
  pkg_json=""
  for name in bash libc6 libtinfo6 busybox-static; do
    deb=$(fetch_deb "$name")
    pkg_json+="${pkg_json:+, }{\"package\": \"$(dpkg-deb -f "$deb" Package)\", \"version\": \"$(dpkg-deb -f "$deb" Version)\", \"debSHA256\": \"$(sha256sum "$deb" | cut -d' ' -f1)\"}"
    mkdir -p "$work/pkg-$name"
    dpkg-deb -x "$deb" "$work/pkg-$name"
  done
  libdir=lib/x86_64-linux-gnu
  install -m 0755 "$work/pkg-bash/bin/bash" "$agentroot/bin/bash"
  install -m 0755 "$work/pkg-busybox-static/bin/busybox" "$agentroot/bin/busybox"
  install -m 0755 "$work/pkg-libc6/$libdir/libc.so.6" "$work/pkg-libc6/$libdir/ld-linux-x86-64.so.2" "$agentroot/$libdir/"
  tinfo=$(readlink "$work/pkg-libtinfo6/$libdir/libtinfo.so.6") || die "libtinfo6 has no libtinfo.so.6"
  install -m 0644 "$work/pkg-libtinfo6/$libdir/$tinfo" "$agentroot/$libdir/$tinfo"
  ln -s "$tinfo" "$agentroot/$libdir/libtinfo.so.6"
  ln -s "/$libdir/ld-linux-x86-64.so.2" "$agentroot/lib64/ld-linux-x86-64.so.2"
  for lib in $(readelf -d "$agentroot/bin/bash" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [[ -e "$agentroot/$libdir/$lib" ]] || die "bash needs $lib, which the image lacks"
  done
  ln -s bash "$agentroot/bin/sh"
  # Tools for jobs and for the job-side action (#!/usr/bin/env bash).
  applets=$("$agentroot/bin/busybox" --list) || die "cannot list busybox applets"
  for a in awk base64 basename cat chmod cmp cp cut date diff dirname du echo env expr false find grep \
    gunzip gzip head hostname id ln ls md5sum mkdir mktemp mv nproc od printf pwd readlink realpath \
    rm rmdir sed seq sha1sum sha256sum sha512sum sleep sort stat sync tail tar tee test timeout touch tr true \
    truncate uname uniq wc wget which whoami xargs xxd yes; do
    grep -qx "$a" <<<"$applets" || die "busybox-static has no $a applet"
    ln -s busybox "$agentroot/bin/$a"
  done
  ln -s /bin/busybox "$agentroot/usr/bin/env"

  # The agent, the runner, the job-side action.
  say "agent: building ./cmd/attested-runner (static)"
  # Built into this run's work directory (Go's build cache makes it
  # cheap), so concurrent builds never share a binary.
  mkdir -p "$work/bin"
  gobuild "$work/bin/attested-runner" ./cmd/attested-runner
  install -m 0755 "$work/bin/attested-runner" "$agentroot/usr/bin/attested-runner"
  agent_sha=$(sha256sum "$work/bin/attested-runner" | cut -d' ' -f1)
  runner_manifest="\"source\": $(json_string "$runner_src")"
  if [[ -n "$runner_version" && -z "$runner_tarball" ]]; then
    # An admin machine with internet: the official release, pinned by digest.
    runner_tarball="$cache/runner/actions-runner-linux-x64-$runner_version.tar.gz"
    if [[ ! -s "$runner_tarball" ]]; then
      url="https://github.com/actions/runner/releases/download/v$runner_version/actions-runner-linux-x64-$runner_version.tar.gz"
      say "runner: downloading $url"
      mkdir -p "$cache/runner"
      if command -v curl >/dev/null; then curl -fsSL -o "$runner_tarball.tmp" "$url"
      else wget -q -O "$runner_tarball.tmp" "$url"; fi || die "downloading $url failed (no internet? give --runner-tarball FILE)"
      mv -f "$runner_tarball.tmp" "$runner_tarball"
    fi
  fi
  if [[ -n "$runner_tarball" ]]; then
    [[ -f "$runner_tarball" ]] || die "--runner-tarball $runner_tarball not found"
    got=$(sha256sum "$runner_tarball" | cut -d' ' -f1)
    [[ "$got" == "$runner_sha256" ]] || die "runner tarball $runner_tarball has SHA-256 $got, the pinned --runner-sha256 is $runner_sha256"
    [[ -n "$runner_version" ]] || runner_version=$(basename "$runner_tarball" | sed -n 's/^actions-runner-linux-x64-\([0-9][0-9.]*\)\.tar\.gz$/\1/p')
    say "runner: unpacking $(basename "$runner_tarball") (sha256 $got, version ${runner_version:-unknown})"
    tar -xzf "$runner_tarball" -C "$agentroot/runner" --no-same-owner --no-same-permissions --delay-directory-restore \
      || die "unpacking $runner_tarball failed"
    [[ -x "$agentroot/runner/bin/Runner.Listener" ]] || die "$runner_tarball has no executable bin/Runner.Listener: not an actions-runner release"
    runner_manifest="\"source\": \"tarball\", \"tarball\": $(json_string "$(basename "$runner_tarball")"), \"tarballSHA256\": \"$got\", \"version\": $(json_string "${runner_version:-unknown}")"
  elif [[ "$runner_src" == fake ]]; then
    say "runner: building the fake Runner.Listener (tests)"
    gobuild "$work/bin/Runner.Listener" ./e2e/cmd/fake-runner-listener
    install -m 0755 "$work/bin/Runner.Listener" "$agentroot/runner/bin/Runner.Listener"
  else
    [[ -x "$runner_src/bin/Runner.Listener" ]] || die "--runner $runner_src has no bin/Runner.Listener"
    cp -a --no-preserve=ownership "$runner_src/." "$agentroot/runner/"
  fi
  listener_sha=$(sha256sum "$agentroot/runner/bin/Runner.Listener" | cut -d' ' -f1)
  # Every file of the runner directory is measured with the initrd (PCR 9);
  # the manifest lists them so an admin can see what an image runs.
  runner_files_sha=$(cd "$agentroot/runner" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  runner_manifest+=", \"listenerSHA256\": \"$listener_sha\", \"filesSHA256\": \"$runner_files_sha\""

  # The runner's runtime: pinned Debian packages (actions/runner
  # installdependencies.sh: libkrb5, zlib, lttng-ust, libssl, libicu; node
  # and the listener also link libstdc++ and libgcc_s), with git, tar,
  # gzip and the CA certificates jobs expect. The closure below was
  # computed from the packages' ELF dependencies; the library check after
  # assembly proves it complete.
  runtime_json=""
  if [[ $runtime -eq 1 ]]; then
    runtime_pkgs=(libicu72 libstdc++6 libgcc-s1 zlib1g libssl3 libkrb5-3 libgssapi-krb5-2 libk5crypto3
      libkrb5support0 libcom-err2 libkeyutils1 liblttng-ust1 liblttng-ust-common1 libnuma1
      ca-certificates git tar gzip libacl1 libselinux1 libpcre2-8-0 libcurl3-gnutls libbrotli1 libffi8
      libgmp10 libgnutls30 libhogweed6 libidn2-0 libldap-2.5-0 libnettle8 libnghttp2-14 libp11-kit0
      libpsl5 librtmp1 libsasl2-2 libssh2-1 libtasn1-6 libunistring2 libzstd1 libexpat1)
    rt="$work/runtime"
    mkdir -p "$rt"
    for name in "${runtime_pkgs[@]}"; do
      deb=$(fetch_deb "$name")
      runtime_json+="${runtime_json:+, }{\"package\": \"$(dpkg-deb -f "$deb" Package)\", \"version\": \"$(dpkg-deb -f "$deb" Version)\", \"debSHA256\": \"$(sha256sum "$deb" | cut -d' ' -f1)\"}"
      dpkg-deb -x "$deb" "$rt"
    done
    # The whole of libc6 (libm, libresolv, ...), not only what bash needs.
    cp -a "$work/pkg-libc6/lib/." "$rt/lib/"
    rm -rf "$rt/usr/share/doc" "$rt/usr/share/man" "$rt/usr/share/info" "$rt/usr/share/locale" "$rt/usr/share/lintian" \
      "$rt/usr/share/bash-completion" "$rt/usr/share/gitweb" "$rt/usr/share/perl5" "$rt/usr/share/git-gui" "$rt/usr/lib/git-core/mergetools" \
      "$rt/etc/bash_completion.d" "$rt/usr/share/zsh"
    # A build machine needs git's client, not its servers.
    rm -f "$rt/usr/bin/git-shell" "$rt/usr/bin/scalar" "$rt/usr/lib/git-core/git-shell" "$rt/usr/lib/git-core/git-daemon" \
      "$rt/usr/lib/git-core/git-http-backend" "$rt/usr/lib/git-core/git-imap-send" "$rt/usr/lib/git-core/scalar"
    # The real tar and gzip replace busybox's applets of the same name.
    for a in tar gzip gunzip; do rm -f "$agentroot/bin/$a"; done
    cp -a "$rt/." "$agentroot/"
    # /etc/ssl/certs/ca-certificates.crt, as update-ca-certificates would
    # write it, in a fixed order.
    mkdir -p "$agentroot/etc/ssl/certs"
    (cd "$agentroot/usr/share/ca-certificates" && find . -name '*.crt' -print0 | LC_ALL=C sort -z | xargs -0 cat) \
      >"$agentroot/etc/ssl/certs/ca-certificates.crt"
    [[ -s "$agentroot/etc/ssl/certs/ca-certificates.crt" ]] || die "ca-certificates gave no certificate"
    printf 'hosts: files dns\n' >"$agentroot/etc/nsswitch.conf"
    printf '127.0.0.1 localhost\n::1 localhost\n' >"$agentroot/etc/hosts"
    # The probe: a C++ program against the same libraries.
    for tool in g++ pkg-config; do command -v "$tool" >/dev/null || die "$tool not found: --runtime builds the runtime probe (apt-get install g++ pkg-config libicu-dev libkrb5-dev liblttng-ust-dev zlib1g-dev libssl-dev)"; done
    say "runtime: building the runtime probe (C++: ICU, OpenSSL, zlib, GSSAPI, LTTng-UST, libstdc++)"
    g++ -O2 -o "$work/bin/runtime-probe" "$here/runtime-probe.cc" -ffile-prefix-map="$repo"=. \
      -licui18n -licuuc -lz -lssl -lcrypto -lgssapi_krb5 -Wl,--no-as-needed -llttng-ust -Wl,--as-needed -Wl,--build-id=none \
      || die "building the runtime probe failed (apt-get install g++ libicu-dev libkrb5-dev liblttng-ust-dev zlib1g-dev libssl-dev)"
    install -m 0755 "$work/bin/runtime-probe" "$agentroot/opt/attested-runner/runtime-probe"
    say "runtime: ${#runtime_pkgs[@]} packages"
  fi
  cp -r "$repo/action/attest" "$agentroot/opt/attested-runner/action/attest"
  find "$agentroot/opt/attested-runner/action" -type f -exec chmod 0644 {} +
  find "$agentroot/opt/attested-runner/action" -type f -name '*.sh' -exec chmod 0755 {} +

  # Every ELF file of the image resolves its libraries inside it (the
  # dynamic loader's default directories, plus an $ORIGIN RUNPATH): a
  # missing library fails the build here, not the job in the VM.
  libdirs=("$agentroot/lib/x86_64-linux-gnu" "$agentroot/usr/lib/x86_64-linux-gnu" "$agentroot/lib64" "$agentroot/usr/lib")
  nelf=0
  while IFS= read -r -d '' f; do
    [[ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' ')" == 7f454c46 ]] || continue
    case "$f" in *.ko) continue ;; esac
    nelf=$((nelf + 1))
    dyn=$(readelf -d "$f" 2>/dev/null) || continue
    runpath=$(sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p' <<<"$dyn" | sed "s|\$ORIGIN|$(dirname "$f")|g" | tr ':' ' ')
    for lib in $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dyn"); do
      found=0
      for d in "${libdirs[@]}" $runpath "$(dirname "$f")"; do [[ -e "$d/$lib" ]] && { found=1; break; }; done
      [[ $found -eq 1 ]] || die "${f#"$agentroot"} needs $lib, which the image lacks (add its package with --runtime / --package)"
    done
  done < <(find "$agentroot" -type f -print0)
  say "library check: every one of $nelf ELF files resolves its libraries"

  # Users, and the init configuration.
  uid=${runner_user%%:*} gid=${runner_user#*:}
  printf 'root:x:0:0:root:/root:/bin/bash\nrunner:x:%s:%s:runner:/runner:/bin/bash\n' "$uid" "$gid" >"$agentroot/etc/passwd"
  printf 'root:x:0:\nrunner:x:%s:\n' "$gid" >"$agentroot/etc/group"
  install -m 0644 "$gate_key" "$agentroot/etc/attested-runner/gate-keys.pem"
  gate_key_sha=$(sha256sum "$gate_key" | cut -d' ' -f1)
  argv=(/usr/bin/attested-runner run --gate "$gate" --gate-key /etc/attested-runner/gate-keys.pem
    --tpm /dev/tpmrm0 --runner-dir /runner --runner-user "$runner_user" --poweroff-command reboot-syscall)
  if [[ -n "$gate_ca" ]]; then
    [[ -f "$gate_ca" ]] || die "--gate-ca $gate_ca not found"
    install -m 0644 "$gate_ca" "$agentroot/etc/attested-runner/gate-ca.pem"
    argv+=(--gate-ca /etc/attested-runner/gate-ca.pem)
  fi
  argv+=("${agent_flags[@]}")
  net_json=null
  if [[ "$net_spec" == dhcp ]]; then
    install -m 0755 "$here/udhcpc.script" "$agentroot/etc/attested-runner/udhcpc.script"
    net_json="{\"interface\": \"eth0\", \"dhcp\": true, \"script\": \"/etc/attested-runner/udhcpc.script\"}"
  elif [[ "$net_spec" != none ]]; then
    addr=${net_spec%%@*} gw=""
    [[ "$net_spec" == *@* ]] && gw=${net_spec#*@}
    net_json="{\"interface\": \"eth0\", \"address\": \"$addr\"${gw:+, \"gateway\": \"$gw\"}}"
  fi
  scratch_json=""
  if [[ -n "$scratch_dev" ]]; then
    scratch_json=",
  \"scratch\": {\"device\": \"$scratch_dev\", \"mount\": \"/scratch\", \"workDir\": \"/scratch/_work\"}"
  fi
  cat >"$agentroot/etc/attested-runner/init.json" <<EOF
{
  "modules": $(json_list "${modpaths[@]}"),
  "optionalModules": $(json_list "${optpaths[@]}"),
  "network": $net_json,
  "runnerDir": "/runner",
  "runnerUser": "$runner_user",
  "runnerDevices": $(json_list "${runner_devices[@]}"),
  "agent": $(json_list "${argv[@]}")$scratch_json
}
EOF
  chmod 0644 "$agentroot/etc/passwd" "$agentroot/etc/group" "$agentroot/etc/attested-runner/init.json"

  say "init: building scripts/image/agentinit"
  gobuild "$work/bin/agentinit" ./scripts/image/agentinit
  init="$work/bin/agentinit"
  extras=("$agentroot" "${extras[@]}")
  agent_manifest=",
  \"agent\": {
    \"sha256\": \"$agent_sha\",
    \"gate\": $(json_string "$gate"),
    \"gateKeysSHA256\": \"$gate_key_sha\",
    \"runner\": {$runner_manifest},
    \"runtime\": [$runtime_json],
    \"network\": $(json_string "$net_spec"),
    \"scratch\": $(json_string "$scratch_dev"),
    \"runnerUser\": \"$runner_user\",
    \"modules\": $(json_list "${mod_order[@]}"),
    \"packages\": [$pkg_json],
    \"go\": \"$(go env GOVERSION)\"
  }"
fi

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
  # zstd decompresses several times faster than gzip (the kernel unpacks
  # the initrd at every boot); single-threaded, so the bytes are the same
  # on every machine with the same zstd.
  zstd) zstd -q -12 --single-thread --no-check -c "$work/initrd.cpio" >"$work/initrd.img" ;;
  gzip) gzip -n -9 -c "$work/initrd.cpio" >"$work/initrd.img" ;;
  none) mv "$work/initrd.cpio" "$work/initrd.img" ;;
esac

# --- outputs ----------------------------------------------------------------
cp "$vmlinuz" "$work/vmlinuz"
printf '%s' "$cmdline" >"$work/cmdline"
(cd "$work" && sha256sum vmlinuz initrd.img cmdline) >"$work/SHA256SUMS"
sum() { awk -v f="$1" '$2 == f {print $1}' "$work/SHA256SUMS"; }
cat >"$work/manifest.json" <<EOF
{
  "kernel": {
    "package": $(json_string "$deb_pkg"),
    "version": $(json_string "$deb_version"),
    "release": $(json_string "$kernel_release"),
    "debSHA256": "$deb_sha",
    "sha256": "$(sum vmlinuz)",
    "confidentialComputing": {$cc_json}
  },
  "initrd": {
    "sha256": "$(sum initrd.img)",
    "compression": "$compress",
    "initSHA256": "$init_sha"
  },
  "cmdline": $(json_string "$cmdline"),
  "cmdlineSHA256": "$(sum cmdline)",
  "sourceDateEpoch": $epoch$agent_manifest
}
EOF
outputs=(vmlinuz initrd.img cmdline SHA256SUMS manifest.json)
if [[ $agent_mode -eq 1 ]]; then
  cp "$work/bin/attested-runner" "$work/attested-runner"
  outputs+=(attested-runner)
else
  rm -f "$outdir/attested-runner"
fi
for f in "${outputs[@]}"; do
  mv -f "$work/$f" "$outdir/$f.tmp" && mv -f "$outdir/$f.tmp" "$outdir/$f"
done
say "image in $outdir:"
sed 's/^/    /' "$outdir/SHA256SUMS" >&2
