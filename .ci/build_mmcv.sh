#!/usr/bin/env bash
# Build mmcv (with ops) for the pinned torch once and cache the wheel outside the clone.
# Usage: .ci/build_mmcv.sh PYTHON   -> prints the folder holding the cached wheel.
# mmcv 2.1.0 has no wheel for torch 2.14: its sdist is compiled with MMCV_WITH_OPS=1,
# without build isolation (it imports torch), with setuptools<70 (its setup.py needs
# pkg_resources) and with -std=c++20 (torch 2.14 headers need C++20).
set -euo pipefail
py=$(command -v "${1:?python interpreter of the target venv}")
py=$(cd "$(dirname "$py")" && pwd)/$(basename "$py")
mmcv_version=2.1.0
torch_version=$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')
py_tag=$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
cache_root=${DDARTS_ZOO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ddarts-zoo}
wheel_dir="$cache_root/wheels/mmcv-$mmcv_version-torch$torch_version-$py_tag"
if compgen -G "$wheel_dir/mmcv-$mmcv_version-*.whl" >/dev/null; then
  echo "$wheel_dir"; exit 0
fi
echo "[build_mmcv] no cached wheel in $wheel_dir: building mmcv $mmcv_version from source (~12 min on 2 cores)" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip_quiet=(-q --disable-pip-version-check -c "$(cd "$(dirname "$0")" && pwd)/constraints.txt")
# setuptools<70 only while building; torch itself wants a newer one at run time.
old_setuptools=$("$py" -c 'import importlib.metadata as m; print(m.version("setuptools"))' 2>/dev/null || echo "")
"$py" -m pip install "${pip_quiet[@]}" "setuptools<70" wheel ninja >&2
"$py" -m pip download "${pip_quiet[@]}" --no-deps --no-binary :all: --no-build-isolation \
  "mmcv==$mmcv_version" -d "$work" >&2
tar -xzf "$work/mmcv-$mmcv_version.tar.gz" -C "$work"
src="$work/mmcv-$mmcv_version"
sed -i 's/-std=c++14/-std=c++20/g; s/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q -- '-std=c++20' "$src/setup.py" || { echo "[build_mmcv] could not patch the C++ standard" >&2; exit 1; }
mkdir -p "$work/out"
(cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$py" -m pip wheel "${pip_quiet[@]}" \
  --no-build-isolation --no-deps . -w "$work/out") >&2
if [ -n "$old_setuptools" ]; then
  "$py" -m pip install "${pip_quiet[@]}" "setuptools==$old_setuptools" >&2 || true
fi
mkdir -p "$(dirname "$wheel_dir")"
tmp_dir="$wheel_dir.tmp.$$"
rm -rf "$tmp_dir"; mkdir -p "$tmp_dir"
cp "$work"/out/mmcv-*.whl "$tmp_dir/"
rm -rf "$wheel_dir"; mv "$tmp_dir" "$wheel_dir"   # atomic publish of the cache entry
echo "$wheel_dir"
