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
#   OUTDIR/attested-runner  (--agent) the agent binary inside the initrd, for
#                         the reference values' agentDigests
#
# Usage: scripts/image/build.sh OUTDIR [--init STATIC-BINARY] [--extra DIR]...
#          [--cmdline STRING] [--kernel-deb FILE | --kernel-package NAME[=VERSION]]
#          [--cache DIR] [--no-compress]
#        scripts/image/build.sh OUTDIR --agent --gate URL --gate-key FILE [--gate-ca FILE]
#          [--runner fake|DIR] [--runner-user UID:GID] [--net ADDR/PREFIX[@GW]]
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
#             depends on now; pin NAME=VERSION for a reproducible rebuild)
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
# --runner-user  uid:gid of the runner and the job (default 1000:1000)
# --net       static IPv4 of eth0 (default 10.0.2.15/24@10.0.2.2: QEMU user
#             networking); "none" leaves the network down
# --module    kernel module to load, with its dependencies (repeatable;
#             default: virtio_pci virtio_net)
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
cache="${XDG_CACHE_HOME:-$HOME/.cache}/attested-runner-image"
compress=gzip
agent_mode=0
gate=""
gate_ca=""
gate_key=""
runner_src=fake
runner_user=1000:1000
net_spec=10.0.2.15/24@10.0.2.2
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
    --cache) [[ $# -ge 2 ]] || die "--cache needs a directory"; cache=$2; shift 2 ;;
    --no-compress) compress=none; shift ;;
    --agent) agent_mode=1; shift ;;
    --gate) [[ $# -ge 2 ]] || die "--gate needs a URL"; gate=$2; agent_opts=1; shift 2 ;;
    --gate-ca) [[ $# -ge 2 ]] || die "--gate-ca needs a file"; gate_ca=$2; agent_opts=1; shift 2 ;;
    --gate-key) [[ $# -ge 2 ]] || die "--gate-key needs a file"; gate_key=$2; agent_opts=1; shift 2 ;;
    --runner) [[ $# -ge 2 ]] || die "--runner needs 'fake' or a directory"; runner_src=$2; agent_opts=1; shift 2 ;;
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
  [[ "$net_spec" == none || "$net_spec" =~ ^[0-9.]+/[0-9]+(@[0-9.]+)?$ ]] || die "--net $net_spec: want ADDR/PREFIX[@GATEWAY] or none"
  for x in "${agent_flags[@]}" "${runner_devices[@]}"; do
    [[ "$x" =~ ^[A-Za-z0-9=:/._,-]+$ ]] || die "agent flag or device $x has characters this script does not quote"
  done
  [[ ${#modules[@]} -gt 0 ]] || modules=(virtio_pci virtio_net)
  for tool in objcopy readelf; do
    command -v "$tool" >/dev/null || die "$tool not found: --agent reads module and ELF metadata (apt-get install binutils)"
  done
  command -v go >/dev/null || die "go not found: --agent builds the agent"
elif [[ $agent_opts -eq 1 ]]; then
  die "--gate, --gate-key, --gate-ca, --runner, --runner-user, --net, --module, --package, --agent-flag and --runner-device need --agent"
fi
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
  deb="$cache/debs/${name}_${version//:/%3a}_amd64.deb"
  if [[ ! -s "$deb" ]]; then
    mkdir -p "$cache/debs"
    say "package: downloading $name=$version"
    (cd "$cache/debs" && apt-get download -q "$name=$version" >/dev/null 2>"$cache/apt-download.log") \
      || die "apt-get download $name=$version failed: $(tail -3 "$cache/apt-download.log")"
    [[ -s "$deb" ]] || die "download did not produce $deb"
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
    dpkg-deb --fsys-tarfile "$kernel_deb" | tar -x -C "$work" "./lib/modules/$kernel_release/modules.builtin" \
      || die "$kernel_deb has no modules.builtin"
    cache_put "$work/lib/modules/$kernel_release/modules.builtin" "$modcache/modules.builtin"
  fi
  declare -A mod_file=() mod_deps=() mod_seen=()
  pending=()
  for m in "${modules[@]}"; do pending+=("${m//-/_}"); done
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
      [[ -n "$(find_module "$modcache/lib" "$m")" ]] || want+=("$m")
    done
    if [[ ${#want[@]} -gt 0 ]]; then
      patterns=()
      for m in "${want[@]}"; do patterns+=("./lib/modules/$kernel_release/kernel/*/${m//_/[-_]}.ko*"); done
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
      hit=$(find_module "$modcache/lib" "$m")
      [[ -n "$hit" ]] || die "module $m is neither in $deb_pkg nor built into its kernel"
      mod_file[$m]=$hit
      mod_deps[$m]=$(modinfo_depends "$hit")
      for d in ${mod_deps[$m]}; do pending+=("$d"); done
    done
  done
  # Dependencies first (depth-first post-order).
  mod_order=()
  declare -A mod_done=()
  visit() {
    local m=$1 d
    [[ -z "${mod_done[$m]:-}" && "${mod_deps[$m]}" != builtin ]] || return 0
    mod_done[$m]=1
    for d in ${mod_deps[$m]}; do visit "$d"; done
    mod_order+=("$m")
  }
  for m in "${modules[@]}"; do visit "${m//-/_}"; done
  modpaths=()
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
    modpaths+=("/$rel")
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
    rm rmdir sed seq sha1sum sha256sum sha512sum sleep sort stat tail tar tee test timeout touch tr true \
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
  if [[ "$runner_src" == fake ]]; then
    say "runner: building the fake Runner.Listener (tests)"
    gobuild "$work/bin/Runner.Listener" ./e2e/cmd/fake-runner-listener
    install -m 0755 "$work/bin/Runner.Listener" "$agentroot/runner/bin/Runner.Listener"
  else
    [[ -x "$runner_src/bin/Runner.Listener" ]] || die "--runner $runner_src has no bin/Runner.Listener"
    cp -a --no-preserve=ownership "$runner_src/." "$agentroot/runner/"
  fi
  listener_sha=$(sha256sum "$agentroot/runner/bin/Runner.Listener" | cut -d' ' -f1)
  cp -r "$repo/action/attest" "$agentroot/opt/attested-runner/action/attest"
  find "$agentroot/opt" -type f -exec chmod 0644 {} +
  find "$agentroot/opt" -type f -name '*.sh' -exec chmod 0755 {} +

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
  if [[ "$net_spec" != none ]]; then
    addr=${net_spec%%@*} gw=""
    [[ "$net_spec" == *@* ]] && gw=${net_spec#*@}
    net_json="{\"interface\": \"eth0\", \"address\": \"$addr\"${gw:+, \"gateway\": \"$gw\"}}"
  fi
  cat >"$agentroot/etc/attested-runner/init.json" <<EOF
{
  "modules": $(json_list "${modpaths[@]}"),
  "network": $net_json,
  "runnerDir": "/runner",
  "runnerUser": "$runner_user",
  "runnerDevices": $(json_list "${runner_devices[@]}"),
  "agent": $(json_list "${argv[@]}")
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
    \"runner\": $(json_string "$runner_src"),
    \"runnerListenerSHA256\": \"$listener_sha\",
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
    "sha256": "$(sum vmlinuz)"
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
