#!/usr/bin/env bash
# Boots a runner image under QEMU + OVMF + swtpm (measured boot, TCG, no KVM)
# and captures what the guest printed on its serial console.
#
# Usage: scripts/image/boot.sh OUTDIR [--cmdline STRING] [--timeout SECONDS]
#          [--memory MIB] [--workdir DIR] [--uki FILE] [--secure-boot]
#          [--net-opts OPTS] [--serial2 SOCKET] [--keep-tpm]
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
# --serial2   connect the guest's second UART (/dev/ttyS1, built into the
#             kernel, no module needed) to a listening unix socket at SOCKET
# --keep-tpm  keep WORKDIR/tpm (the swtpm state) after the run
#
# Writes WORKDIR/serial.log (console), WORKDIR/eventlog.bin (the TCG event
# log the guest read from securityfs), WORKDIR/pcrs.txt ("INDEX HEX" lines,
# SHA-256 bank as the guest read it), WORKDIR/cmdline.txt (what the kernel
# saw), WORKDIR/boot-seconds (wall time of the QEMU run) and
# WORKDIR/qemu-args.txt. Exit status: 0 when the guest printed a complete
# report, 1 otherwise (the serial log says why).
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
keep_tpm=0
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
    --keep-tpm) keep_tpm=1; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (try --help)" ;;
    *) [[ -z "$outdir" ]] || die "one OUTDIR only"; outdir=$1; shift ;;
  esac
done
[[ -n "$outdir" ]] || usage
[[ "$timeout_s" =~ ^[0-9]+$ && "$timeout_s" -ge 5 && "$timeout_s" -le 120 ]] || die "--timeout must be 5-120 seconds"
[[ "$memory" =~ ^[0-9]+$ && "$memory" -ge 128 ]] || die "--memory must be at least 128 (MiB)"
[[ "$net_opts" != *' '* ]] || die "--net-opts must not contain spaces"
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

rm -rf "$workdir/tpm" "$workdir/serial.log" "$workdir/eventlog.bin" "$workdir/pcrs.txt" "$workdir/cmdline.txt" "$workdir/boot-seconds"
mkdir -p "$workdir/tpm"
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
  [[ $keep_tpm -eq 1 ]] || rm -rf "$workdir/tpm"
}
trap cleanup EXIT

# QEMU's tpm-emulator backend drives swtpm over the control channel (it
# sends CMD_INIT itself and the firmware sends TPM2_Startup), so no
# --flags startup-clear here. --terminate: exit when QEMU disconnects.
swtpm socket --tpm2 --ctrl "type=unixio,path=$tpm_sock" --tpmstate "dir=$workdir/tpm" \
  --terminate --log "file=$workdir/swtpm.log,level=1" &
swtpm_pid=$!
for _ in $(seq 1 50); do [[ -S "$tpm_sock" ]] && break; sleep 0.1; done
[[ -S "$tpm_sock" ]] || die "swtpm did not create $tpm_sock (see $workdir/swtpm.log)"

serial2_args=()
if [[ -n "$serial2" ]]; then
  serial2_args=(-chardev "socket,id=ser2,path=$serial2" -device "isa-serial,chardev=ser2")
fi

qemu_args=(
  "${machine_args[@]}" -accel tcg -smp 1 -m "$memory"
  -nographic -no-reboot -monitor none
  -serial "file:$workdir/serial.log"
  "${serial2_args[@]}"
  -drive "if=pflash,format=raw,readonly=on,file=$code"
  -drive "if=pflash,format=raw,file=$workdir/vars.fd"
  -chardev "socket,id=chrtpm,path=$tpm_sock"
  -tpmdev emulator,id=tpm0,chardev=chrtpm
  -device tpm-tis,tpmdev=tpm0
  -netdev "user,id=net0,restrict=on$net_opts"
  -device virtio-net-pci,netdev=net0,romfile=
  "${boot_args[@]}"
)
printf '%q ' qemu-system-x86_64 "${qemu_args[@]}" >"$workdir/qemu-args.txt"
echo >>"$workdir/qemu-args.txt"

say "QEMU (TCG, ${memory} MiB, timeout ${timeout_s}s), console in $workdir/serial.log"
start=$(date +%s.%N)
rc=0
timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$workdir/qemu.out" 2>&1 || rc=$?
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "$secs" >"$workdir/boot-seconds"
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  die "QEMU timed out after ${timeout_s}s; last console lines: $(tail -c 600 "$workdir/serial.log" 2>/dev/null | tr -d '\r')"
elif [[ $rc -ne 0 ]]; then
  die "QEMU exited with status $rc: $(tail -5 "$workdir/qemu.out")"
fi
say "guest powered off after ${secs}s"

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
