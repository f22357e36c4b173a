#!/usr/bin/env bash
# Build ms_fa's Ascend C op package (MsFaFlashAttention) on a machine with the CANN toolkit.
#
#   source /usr/local/Ascend/ascend-toolkit/set_env.sh     # sets ASCEND_HOME_PATH, puts bisheng on PATH
#   bash custom_ops/build.sh                               # -> custom_ops/build_out/custom_opp_<os>_<arch>.run
#   bash custom_ops/build.sh --install DIR                 # also unpack the vendor package into DIR
#                                                          #   (then: export ASCEND_CUSTOM_OPP_PATH=DIR/vendors/ms_fa)
#
# What it does: stage this project with the operator-project template that ships inside CANN
# (cmake/ and scripts/: opbuild, add_kernels_compile, the makeself packaging -- CANN's files, not
# vendored here) and with ms_fa's shared headers (ms_fa/csrc: fa_plan.h, fa_kernel.h, fa_meta.h), point
# CMakePresets.json at this CANN, configure, build the binaries for ascend910b and ascend910_93, package.
# Without CANN it stops at once and says why: nothing here can be built on a machine without it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
install_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

cann="${ASCEND_HOME_PATH:-${ASCEND_TOOLKIT_HOME:-}}"
if [ -z "$cann" ] || [ ! -d "$cann" ]; then
  echo "build.sh: the CANN toolkit is not set up (ASCEND_HOME_PATH unset); source <CANN>/set_env.sh first" >&2
  exit 3
fi
if ! command -v bisheng >/dev/null 2>&1 && [ ! -x "$cann/compiler/ccec_compiler/bin/bisheng" ]; then
  echo "build.sh: bisheng (the Ascend C compiler) not found under $cann" >&2
  exit 3
fi
template=""
for t in "$cann/tools/op_project_templates/ascendc/customize" "$cann/tools/msopgen/template/operator_demo_projects/ascendc_operator_sample"; do
  if [ -d "$t/cmake" ]; then template="$t"; break; fi
done
if [ -z "$template" ]; then
  echo "build.sh: no operator project template (cmake/) in $cann/tools; this CANN is incomplete" >&2
  exit 3
fi

stage="$here/build_stage"
rm -rf "$stage" "$here/build_out"
mkdir -p "$stage"
cp -r "$template/cmake" "$stage/cmake"
[ -d "$template/scripts" ] && cp -r "$template/scripts" "$stage/scripts"
cp -r "$here/op_host" "$here/op_kernel" "$here/CMakeLists.txt" "$stage/"
mkdir -p "$stage/csrc"
cp "$root/ms_fa/csrc/fa_plan.h" "$root/ms_fa/csrc/fa_kernel.h" "$root/ms_fa/csrc/fa_meta.h" "$stage/csrc/"
python3 - "$here/CMakePresets.json" "$stage/CMakePresets.json" "$cann" <<'PY'
import json, sys
src, dst, cann = sys.argv[1:4]
p = json.load(open(src))
cv = p["configurePresets"][0]["cacheVariables"]
cv["ASCEND_CANN_PACKAGE_PATH"]["value"] = cann
json.dump(p, open(dst, "w"), indent=4)
PY
cd "$stage"
cmake --preset=default
cmake --build build_out --target binary -j"$(nproc)"
cmake --build build_out --target package -j"$(nproc)"
mkdir -p "$here/build_out"
cp build_out/*.run "$here/build_out/"
run="$(ls "$here"/build_out/*.run | head -1)"
echo "build.sh: built $run"
if [ -n "$install_dir" ]; then
  bash "$run" --install-path="$install_dir"
  echo "build.sh: installed; export ASCEND_CUSTOM_OPP_PATH=$install_dir/vendors/ms_fa:\${ASCEND_CUSTOM_OPP_PATH:-}"
fi
