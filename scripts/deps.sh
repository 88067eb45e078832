# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/cluster.sh: make sure the system
# packages a build or a test needs are installed, installing them with
# apt-get when this user may, and otherwise stopping with the exact command.

# die MESSAGE...: print to stderr and exit 1.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# have COMMAND: whether COMMAND is on PATH or in an sbin directory
# (nginx lives in /usr/sbin, which is not on a normal user's PATH).
have() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# ensure_packages COMMAND:PACKAGE...: install the Debian package of every
# COMMAND that is missing.
ensure_packages() {
  local spec missing=()
  for spec in "$@"; do
    have "${spec%%:*}" || missing+=("${spec#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  # One package may provide several commands (redis-server, redis-cli).
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  local cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages: ${missing[*]}. This is not a Debian-like system: install them with your package manager, then run this again."
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      die "missing system packages: ${missing[*]}. Install them as root, then run this again:
    sudo sh -c '$cmd'"
    fi
  fi
  echo "==> installing missing system packages: ${missing[*]}"
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
    ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    die "installing ${missing[*]} failed. Run this as root, then run this again:
    sh -c '$cmd'"
  fi
}

# Packages every build needs: a C compiler (ring, zstd) and cmake
# (Pingora's zlib-ng).
ensure_build_packages() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs), then run this again"
  ensure_packages cc:gcc cmake:cmake
}

# The browser tests' npm packages (tests/browser/package-lock.json), if missing.
ensure_browser_modules() {
  [ -d tests/browser/node_modules/playwright-core ] && return 0
  echo "==> installing the browser tests' npm packages (npm ci in tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund) ||
    die "npm ci in tests/browser failed; run it by hand, then run this again"
}
