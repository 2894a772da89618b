#!/usr/bin/env bash
# Boots a runner image under QEMU + OVMF + swtpm (measured boot, TCG, no KVM)
# and captures what the guest printed on its serial console.
#
# Usage: scripts/image/boot.sh OUTDIR [--cmdline STRING] [--timeout SECONDS]
#          [--memory MIB] [--workdir DIR] [--uki FILE] [--secure-boot]
#          [--net-opts OPTS] [--forward GUEST:PORT=HOST:PORT]...
#          [--serial2 SOCKET | --serial2-file FILE] [--keep-tpm]
#          [--tpm-state DIR] [--agent] [--console-stdout] [--relay PATH]
#          [--disk FILE]
#
# OUTDIR is a build.sh output (vmlinuz, initrd.img, cmdline). By default the
# kernel is booted directly (QEMU -kernel/-initrd/-append: OVMF loads it from
# fw_cfg, no boot loader).
#
# --cmdline   override OUTDIR/cmdline (the measured command line changes too)
# --timeout   seconds before QEMU is killed (default 60, at most 120)
# --memory    guest RAM in MiB (default 512; it changes the QEMU-patched
#             kernel digest, see internal/imageref)
# --workdir   where to put the run's files (default OUTDIR/boot)
# --uki       boot this EFI binary (a signed unified kernel image) from a FAT
#             ESP as \EFI\BOOT\BOOTX64.EFI instead of -kernel
# --secure-boot  use OVMF's Secure Boot build with Debian's snakeoil PK/KEK/db
#             vars (OVMF_VARS_4M.snakeoil.fd); needs --uki signed with
#             /usr/share/ovmf/PkKek-1-snakeoil.key
# --net-opts  extra options for QEMU's user-mode network, appended to
#             "-netdev user,id=net0,restrict=on", e.g.
#             ",guestfwd=tcp:10.0.2.100:8443-tcp:127.0.0.1:8443" (the guest
#             dials 10.0.2.100:8443 and reaches the host's 127.0.0.1:8443) or
#             ",hostfwd=tcp:127.0.0.1:2222-:22". restrict=on cuts the guest
#             off from everything except these forwards. The guest needs the
#             virtio_net module (Debian builds it as a module).
# --forward   GUEST_IP:PORT=HOST_IP:PORT: a guest connection to
#             GUEST_IP:PORT is relayed to HOST_IP:PORT on the host, one host
#             connection per guest connection (guestfwd "cmd:" with socat,
#             or with scripts/image/stdiorelay, built here with go, when
#             socat is missing). Repeatable. Works under restrict=on.
# --relay     the relay program for --forward, run as "PATH HOST:PORT"
#             (default: socat, else stdiorelay)
# --serial2   connect the guest's second UART (/dev/ttyS1, built into the
#             kernel, no module needed) to a listening unix socket at SOCKET
# --serial2-file  write what the guest sends on /dev/ttyS1 to FILE
# --keep-tpm  keep WORKDIR/tpm (the swtpm state) after the run
# --tpm-state use (and keep) this swtpm state directory instead of a fresh
#             WORKDIR/tpm: the TPM keeps its endorsement seed, so its
#             attestation key stays the one an admin enrolled (read it with
#             swtpm alone on the same directory before the boot)
# --agent     the image runs the attested-runner agent (build.sh --agent):
#             no test-init report is expected; success is the guest powering
#             itself off before the timeout
# --disk      attach FILE (raw) as a virtio disk: the guest's /dev/vda on a
#             -kernel boot (the scratch disk of build.sh --scratch /dev/vda)
# --console-stdout  also copy the serial console to stdout as it arrives
#             (WORKDIR/serial.log is still written)
#
# Writes WORKDIR/serial.log (console), WORKDIR/eventlog.bin (the TCG event
# log the guest read from securityfs), WORKDIR/pcrs.txt ("INDEX HEX" lines,
# SHA-256 bank as the guest read it), WORKDIR/cmdline.txt (what the kernel
# saw), WORKDIR/boot-seconds (wall time of the QEMU run) and
# WORKDIR/qemu-args.txt, and WORKDIR/qemu-start (host time QEMU was started,
# seconds since 1970 with nanoseconds). Exit status: 0 when the guest
# printed a complete report (with --agent: powered off), 1 otherwise (the
# serial log says why).
set -euo pipefail

die() { echo "boot.sh: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

outdir=""
cmdline=""
timeout_s=60
memory=512
workdir=""
uki=""
secure_boot=0
net_opts=""
serial2=""
serial2_file=""
keep_tpm=0
tpm_state=""
agent=0
console_stdout=0
relay=""
forwards=()
disk=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cmdline) [[ $# -ge 2 ]] || die "--cmdline needs a value"; cmdline=$2; shift 2 ;;
    --timeout) [[ $# -ge 2 ]] || die "--timeout needs seconds"; timeout_s=$2; shift 2 ;;
    --memory) [[ $# -ge 2 ]] || die "--memory needs MiB"; memory=$2; shift 2 ;;
    --workdir) [[ $# -ge 2 ]] || die "--workdir needs a directory"; workdir=$2; shift 2 ;;
    --uki) [[ $# -ge 2 ]] || die "--uki needs a file"; uki=$2; shift 2 ;;
    --secure-boot) secure_boot=1; shift ;;
    --net-opts) [[ $# -ge 2 ]] || die "--net-opts needs a value"; net_opts=$2; shift 2 ;;
    --serial2) [[ $# -ge 2 ]] || die "--serial2 needs a socket path"; serial2=$2; shift 2 ;;
    --serial2-file) [[ $# -ge 2 ]] || die "--serial2-file needs a file"; serial2_file=$2; shift 2 ;;
    --forward) [[ $# -ge 2 ]] || die "--forward needs GUEST_IP:PORT=HOST_IP:PORT"; forwards+=("$2"); shift 2 ;;
    --relay) [[ $# -ge 2 ]] || die "--relay needs a program"; relay=$2; shift 2 ;;
    --keep-tpm) keep_tpm=1; shift ;;
    --tpm-state) [[ $# -ge 2 ]] || die "--tpm-state needs a directory"; tpm_state=$2; shift 2 ;;
    --agent) agent=1; shift ;;
    --console-stdout) console_stdout=1; shift ;;
    --disk) [[ $# -ge 2 ]] || die "--disk needs a file"; disk=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [[ -z "$outdir" ]] || die "one OUTDIR only"; outdir=$1; shift ;;
  esac
done
[[ -n "$outdir" ]] || usage
[[ "$timeout_s" =~ ^[0-9]+$ && "$timeout_s" -ge 5 && "$timeout_s" -le 120 ]] || die "--timeout must be 5-120 seconds"
[[ "$memory" =~ ^[0-9]+$ && "$memory" -ge 128 ]] || die "--memory must be at least 128 (MiB)"
[[ "$net_opts" != *' '* ]] || die "--net-opts must not contain spaces"
[[ -z "$serial2" || -z "$serial2_file" ]] || die "--serial2 and --serial2-file exclude each other"
for tool in qemu-system-x86_64 swtpm timeout base64 sha256sum awk; do
  command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install qemu-system-x86 ovmf swtpm coreutils gawk)"
done
outdir=$(cd "$outdir" && pwd)
workdir=${workdir:-$outdir/boot}
mkdir -p "$workdir"
workdir=$(cd "$workdir" && pwd)

code=/usr/share/OVMF/OVMF_CODE_4M.fd
vars_template=/usr/share/OVMF/OVMF_VARS_4M.fd
machine_args=(-machine q35)
if [[ $secure_boot -eq 1 ]]; then
  [[ -n "$uki" ]] || die "--secure-boot needs --uki: OVMF does not verify -kernel images"
  code=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
  vars_template=/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd
  # The Secure Boot build keeps its variable store in SMM: QEMU must
  # emulate SMM and let only SMM code write the flash.
  machine_args=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
fi
[[ -f "$code" && -f "$vars_template" ]] || die "OVMF firmware missing ($code, $vars_template): apt-get install ovmf"

boot_args=()
if [[ -n "$uki" ]]; then
  [[ -f "$uki" ]] || die "--uki $uki not found"
  for tool in mkfs.vfat mmd mcopy; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install dosfstools mtools)"
  done
  esp="$workdir/esp.img"
  rm -f "$esp"
  # Size the ESP for the UKI plus slack; FAT16 needs at least ~16 MiB.
  size_mib=$(( $(stat -c %s "$uki") / 1048576 + 16 ))
  truncate -s "${size_mib}M" "$esp"
  mkfs.vfat -n ESP "$esp" >/dev/null
  mmd -i "$esp" ::/EFI ::/EFI/BOOT
  mcopy -i "$esp" "$uki" ::/EFI/BOOT/BOOTX64.EFI
  boot_args=(-drive "if=none,id=esp,format=raw,file=$esp" -device "virtio-blk-pci,drive=esp,bootindex=0")
  say "booting UKI $(basename "$uki") from a FAT ESP (secure boot: $([[ $secure_boot -eq 1 ]] && echo on || echo off))"
else
  for f in vmlinuz initrd.img; do [[ -f "$outdir/$f" ]] || die "$outdir/$f missing: run scripts/image/build.sh first"; done
  if [[ -z "$cmdline" ]]; then
    [[ -f "$outdir/cmdline" ]] || die "$outdir/cmdline missing and no --cmdline"
    cmdline=$(cat "$outdir/cmdline")
  fi
  boot_args=(-kernel "$outdir/vmlinuz" -initrd "$outdir/initrd.img" -append "$cmdline")
  say "booting $outdir/vmlinuz directly (-kernel), cmdline: $cmdline"
fi

# --- forwards: one relay process per guest connection -----------------------
for fwd in "${forwards[@]}"; do
  [[ "$fwd" =~ ^([0-9.]+):([0-9]+)=([0-9A-Za-z.-]+):([0-9]+)$ ]] \
    || die "--forward $fwd: want GUEST_IP:PORT=HOST_IP:PORT"
  if [[ -z "$relay" ]]; then
    if command -v socat >/dev/null; then
      relay=socat
    else
      command -v go >/dev/null || die "--forward needs socat or go (to build scripts/image/stdiorelay)"
      here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
      cache="${XDG_CACHE_HOME:-$HOME/.cache}/attested-runner-image"
      mkdir -p "$cache"
      (cd "$here/../.." && CGO_ENABLED=0 go build -trimpath -o "$cache/stdiorelay.tmp.$$" ./scripts/image/stdiorelay) \
        || die "building scripts/image/stdiorelay failed"
      mv -f "$cache/stdiorelay.tmp.$$" "$cache/stdiorelay"
      relay="$cache/stdiorelay"
    fi
  fi
  case "$relay" in
    socat) cmd="socat STDIO TCP:${BASH_REMATCH[3]}:${BASH_REMATCH[4]}" ;;
    *) [[ -x "$relay" ]] || die "--relay $relay is not executable"
       cmd="$relay ${BASH_REMATCH[3]}:${BASH_REMATCH[4]}" ;;
  esac
  [[ "$cmd" != *,* && "$cmd" != *\'* && "$cmd" != *\"* ]] || die "relay command $cmd must not contain commas or quotes"
  net_opts+=",guestfwd=tcp:${BASH_REMATCH[1]}:${BASH_REMATCH[2]}-cmd:$cmd"
done

rm -rf "$workdir/serial.log" "$workdir/eventlog.bin" "$workdir/pcrs.txt" "$workdir/cmdline.txt" "$workdir/boot-seconds" "$workdir/qemu-start"
if [[ -n "$tpm_state" ]]; then
  mkdir -p "$tpm_state"
  tpm_dir=$(cd "$tpm_state" && pwd)
else
  rm -rf "$workdir/tpm"
  mkdir -p "$workdir/tpm"
  tpm_dir="$workdir/tpm"
fi
cp "$vars_template" "$workdir/vars.fd"
tpm_sock="$workdir/swtpm.sock"
rm -f "$tpm_sock"

swtpm_pid=""
cleanup() {
  if [[ -n "$swtpm_pid" ]] && kill -0 "$swtpm_pid" 2>/dev/null; then
    kill "$swtpm_pid" 2>/dev/null || true
    wait "$swtpm_pid" 2>/dev/null || true
  fi
  rm -f "$tpm_sock"
  [[ $keep_tpm -eq 1 || -n "$tpm_state" ]] || rm -rf "$workdir/tpm"
}
trap cleanup EXIT

# QEMU's tpm-emulator backend drives swtpm over the control channel (it
# sends CMD_INIT itself and the firmware sends TPM2_Startup), so no
# --flags startup-clear here. --terminate: exit when QEMU disconnects.
swtpm socket --tpm2 --ctrl "type=unixio,path=$tpm_sock" --tpmstate "dir=$tpm_dir" \
  --terminate --log "file=$workdir/swtpm.log,level=1" &
swtpm_pid=$!
for _ in $(seq 1 50); do [[ -S "$tpm_sock" ]] && break; sleep 0.1; done
[[ -S "$tpm_sock" ]] || die "swtpm did not create $tpm_sock (see $workdir/swtpm.log)"

serial2_args=()
if [[ -n "$serial2" ]]; then
  serial2_args=(-chardev "socket,id=ser2,path=$serial2" -device "isa-serial,chardev=ser2")
elif [[ -n "$serial2_file" ]]; then
  [[ "$serial2_file" != *,* ]] || die "--serial2-file must not contain commas"
  serial2_args=(-chardev "file,id=ser2,path=$serial2_file" -device "isa-serial,chardev=ser2")
fi
disk_args=()
if [[ -n "$disk" ]]; then
  [[ -f "$disk" && "$disk" != *,* ]] || die "--disk $disk: want an existing raw image file (no commas in the path)"
  disk_args=(-drive "if=none,id=scratch,format=raw,file=$disk" -device "virtio-blk-pci,drive=scratch")
fi
console_args=(-serial "file:$workdir/serial.log")
[[ $console_stdout -eq 0 ]] || console_args=(-serial stdio)

qemu_args=(
  "${machine_args[@]}" -accel tcg -smp 1 -m "$memory"
  -nographic -no-reboot -monitor none
  "${console_args[@]}"
  "${serial2_args[@]}"
  -drive "if=pflash,format=raw,readonly=on,file=$code"
  -drive "if=pflash,format=raw,file=$workdir/vars.fd"
  -chardev "socket,id=chrtpm,path=$tpm_sock"
  -tpmdev emulator,id=tpm0,chardev=chrtpm
  -device tpm-tis,tpmdev=tpm0
  -netdev "user,id=net0,restrict=on$net_opts"
  -device virtio-net-pci,netdev=net0,romfile=
  "${disk_args[@]}"
  "${boot_args[@]}"
)
printf '%q ' qemu-system-x86_64 "${qemu_args[@]}" >"$workdir/qemu-args.txt"
echo >>"$workdir/qemu-args.txt"

say "QEMU (TCG, ${memory} MiB, timeout ${timeout_s}s), console in $workdir/serial.log"
start=$(date +%s.%N)
echo "$start" >"$workdir/qemu-start"
rc=0
if [[ $console_stdout -eq 1 ]]; then
  # QEMU's stdout is the console; its own messages go to qemu.out.
  set +e
  timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null 2>"$workdir/qemu.out" \
    | tee "$workdir/serial.log"
  rc=${PIPESTATUS[0]}
  set -e
else
  timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$workdir/qemu.out" 2>&1 || rc=$?
fi
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "$secs" >"$workdir/boot-seconds"
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  die "QEMU timed out after ${timeout_s}s; last console lines: $(tail -c 600 "$workdir/serial.log" 2>/dev/null | tr -d '\r')"
elif [[ $rc -ne 0 ]]; then
  die "QEMU exited with status $rc: $(tail -5 "$workdir/qemu.out")"
fi
say "guest powered off after ${secs}s"
if [[ $agent -eq 1 ]]; then
  tr -d '\r' <"$workdir/serial.log" >"$workdir/serial.clean"
  if grep -q 'Kernel panic' "$workdir/serial.clean"; then
    die "the guest kernel panicked: $(grep -m1 'Kernel panic' "$workdir/serial.clean")"
  fi
  if grep -q '^agentinit: .*FATAL' "$workdir/serial.clean"; then
    die "guest init failed: $(grep -m1 '^agentinit: .*FATAL' "$workdir/serial.clean")"
  fi
  rm -f "$workdir/serial.clean"
  exit 0
fi

# Extract the test init's report (format: scripts/image/testinit/main.go).
log="$workdir/serial.log"
tr -d '\r' <"$log" >"$workdir/serial.clean"
if grep -q '^ATTESTED-ERROR ' "$workdir/serial.clean"; then
  die "guest init failed: $(grep '^ATTESTED-ERROR ' "$workdir/serial.clean" | head -1)"
fi
grep -q 'ATTESTED-TESTINIT-END' "$workdir/serial.clean" || die "no test-init report in $log (another /init, or a kernel panic?)"
awk '/^ATTESTED-EVENTLOG-BEGIN /{on=1; next} /^ATTESTED-EVENTLOG-END /{on=0} on && /^[A-Za-z0-9+\/=]+$/' "$workdir/serial.clean" \
  | base64 -d >"$workdir/eventlog.bin" || die "event log base64 is corrupt"
want=$(awk '/^ATTESTED-EVENTLOG-END sha256:/{sub(/^ATTESTED-EVENTLOG-END sha256:/, ""); print}' "$workdir/serial.clean")
got=$(sha256sum "$workdir/eventlog.bin" | cut -d' ' -f1)
[[ "$want" == "$got" ]] || die "event log digest $got, guest printed $want"
awk '/^ATTESTED-PCR sha256 /{print $3, $4}' "$workdir/serial.clean" >"$workdir/pcrs.txt"
sed -n 's/^ATTESTED-CMDLINE //p' "$workdir/serial.clean" >"$workdir/cmdline.txt"
rm -f "$workdir/serial.clean"
say "event log: $(stat -c %s "$workdir/eventlog.bin") bytes (sha256 $got), $(wc -l <"$workdir/pcrs.txt") PCRs, kernel uptime at init $(sed -n 's/^ATTESTED-UPTIME //p' "$log" | tr -d '\r')s"
