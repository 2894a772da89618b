#!/usr/bin/env bash
# Installs the Debian packages attested-runner's demo and tests need, only if
# they are missing. Quiet when everything is present. Usage: scripts/prereqs.sh [--qemu]
set -euo pipefail

# fdisk, dosfstools and mtools: the GCE disk image test (scripts/image/gce-image.sh).
# postgresql: the server binaries for the PostgreSQL store tests (internal/pgtest
# runs throwaway clusters of its own; the cluster the package may start is unused).
pkgs=(gcc libc6-dev libssl-dev swtpm swtpm-tools git make fdisk dosfstools mtools postgresql)
case "${1:-}" in
  "") ;;
  --qemu)
    # make test-qemu: QEMU + OVMF, the image build (cpio, binutils for
    # objcopy/readelf, file), the signed UKI and Secure Boot case (sbsigntool,
    # systemd-boot-efi, dosfstools, mtools, openssl), pesign, which
    # cross-checks our Authenticode digests, and the runtime image's probe
    # (g++ and the -dev packages of the runner's libraries).
    pkgs+=(qemu-system-x86 ovmf cpio binutils file sbsigntool systemd-boot-efi dosfstools mtools openssl pesign
      g++ pkg-config libicu-dev libkrb5-dev liblttng-ust-dev zlib1g-dev zstd)
    ;;
  *) echo "usage: scripts/prereqs.sh [--qemu]" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "==> installing missing Debian packages: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "==> installed: ${missing[*]}"
