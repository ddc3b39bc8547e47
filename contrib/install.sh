#!/usr/bin/env bash
# Installs backupd and backupctl with their systemd units under a prefix.
#
#   contrib/install.sh [--no-build]
#
#   PREFIX           where to install (default /usr/local)
#   DESTDIR          a staging root prepended to every path (for packaging; default none)
#   BACKUPD_BIN_DIR  take backupd and backupctl from this folder instead of building them
#                    (needs --no-build); default: ${CARGO_TARGET_DIR:-target}/release
#   --no-build       do not run cargo; the binaries must already be in the folder above
#
# What goes where (under $DESTDIR):
#   $PREFIX/bin/backupd, $PREFIX/bin/backupctl
#   $PREFIX/lib/systemd/system/backupd.{service,socket}   the system units
#   $PREFIX/lib/systemd/user/backupd.{service,socket}     the user units
#   $PREFIX/share/doc/backupd/README.md                   what the units' Documentation= names
#   $PREFIX/share/man/man1/backupd.1, backupctl.1, backupctl-<command>.1
#   $PREFIX/share/bash-completion/completions/backupctl, zsh/site-functions/_backupctl,
#   fish/vendor_completions.d/backupctl.fish              shell completions
# systemd looks for units in /usr/local/lib/systemd/{system,user} and /usr/lib/systemd/...,
# so with another PREFIX link them (systemctl link) or copy them to /etc/systemd/system.
# /etc is left to the administrator's own units and `systemctl edit` drop-ins.
# The units name /usr/local/bin/backupd; with another PREFIX they are rewritten to name
# $PREFIX/bin/backupd.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    -h | --help)
      sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *)
      echo "install.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

prefix="${PREFIX:-/usr/local}"
destdir="${DESTDIR:-}"
# The prefix is written into the units' ExecStart=, where spaces and % would need quoting.
if [[ ! "$prefix" =~ ^/[A-Za-z0-9/._+-]*$ ]]; then
  echo "install.sh: PREFIX must be an absolute path of letters, digits and / . _ + -: $prefix" >&2
  exit 2
fi
prefix="${prefix%/}"
if [ -n "${BACKUPD_BIN_DIR:-}" ] && ((build)); then
  echo "install.sh: BACKUPD_BIN_DIR names prebuilt binaries; add --no-build" >&2
  exit 2
fi
bin_dir="${BACKUPD_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/release}"

if ((build)); then
  (cd "$repo" && cargo build --release --locked -p backupd -p backupctl)
fi
for bin in backupd backupctl; do
  if [ ! -x "$bin_dir/$bin" ]; then
    echo "install.sh: $bin_dir/$bin is missing; build it or drop --no-build" >&2
    exit 1
  fi
done

# The units as shipped name /usr/local; point ExecStart= and Documentation= at $prefix.
rewrite_unit() {
  sed -e "s|^ExecStart=/usr/local/|ExecStart=$prefix/|" \
    -e "s|^Documentation=file:///usr/local/|Documentation=file://$prefix/|" "$1"
}

install_unit() { # source, target folder
  local target
  target="$2/$(basename "$1")"
  install -d -m 0755 "$2"
  rewrite_unit "$1" >"$target.tmp"
  chmod 0644 "$target.tmp"
  mv -f "$target.tmp" "$target"
  echo "  $target"
}

root="$destdir$prefix"
echo "Installing into $root:"
for bin in backupd backupctl; do
  install -D -m 0755 "$bin_dir/$bin" "$root/bin/$bin"
  echo "  $root/bin/$bin"
done
for unit in "$repo"/contrib/systemd/backupd.service "$repo"/contrib/systemd/backupd.socket; do
  install_unit "$unit" "$root/lib/systemd/system"
done
for unit in "$repo"/contrib/systemd/user/backupd.service "$repo"/contrib/systemd/user/backupd.socket; do
  install_unit "$unit" "$root/lib/systemd/user"
done
install -D -m 0644 "$repo/README.md" "$root/share/doc/backupd/README.md"
echo "  $root/share/doc/backupd/README.md"

# Man pages and completions come from the binaries themselves, so they always match them.
man_dir="$root/share/man/man1"
install -d -m 0755 "$man_dir"
"$bin_dir/backupctl" man --out "$man_dir"
"$bin_dir/backupd" --print-man >"$man_dir/backupd.1"
chmod 0644 "$man_dir"/*.1
echo "  $man_dir/backupd.1, backupctl.1, backupctl-*.1"
install_completion() { # shell, target file
  install -d -m 0755 "$(dirname "$2")"
  "$bin_dir/backupctl" completions "$1" >"$2"
  chmod 0644 "$2"
  echo "  $2"
}
install_completion bash "$root/share/bash-completion/completions/backupctl"
install_completion zsh "$root/share/zsh/site-functions/_backupctl"
install_completion fish "$root/share/fish/vendor_completions.d/backupctl.fish"

if [ -z "$destdir" ]; then
  cat <<EOF

Next, for the system service (as root):
  getent group backup >/dev/null || groupadd --system backup
  systemctl daemon-reload && systemctl enable --now backupd.socket backupd.service
or for your user:
  systemctl --user daemon-reload && systemctl --user enable --now backupd.socket backupd.service
Both units: the socket alone starts backupd only at the first request, and schedules need it
running from boot (or login) on.
EOF
fi
