# Source this (`. scripts/env.sh`) to build the worker against the libtorch in
# .venv/ (installed by scripts/setup-libtorch.sh).
_cf_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
_cf_site="$(ls -d "$_cf_root"/.venv/lib/python3*/site-packages 2>/dev/null | head -n 1)"
if [ -n "$_cf_site" ] && [ -f "$_cf_site/torch/lib/libtorch_cpu.so" ]; then
  export LIBTORCH="$_cf_site/torch"
  export LIBTORCH_CXX11_ABI=1
  unset LIBTORCH_USE_PYTORCH
else
  echo "scripts/env.sh: no libtorch in $_cf_root/.venv; run scripts/setup-libtorch.sh" >&2
fi
unset _cf_root _cf_site
