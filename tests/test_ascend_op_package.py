"""Static consistency of the Ascend C op package (issue 11, item 4) -- plain parsing, no CANN.

MindSpore's tutorial lists the ways a custom Ascend C op fails to load: an op type spelled differently in
the OpDef, the kernel entry, the aclnn header and the framework registration; inputs / outputs named or
ordered differently; and (CPU twin builds) host / device overloads that differ only by ``__aicore__`` or
``__gm__``. These tests read the sources of custom_ops/ and ms_fa and check each of those, plus what ties
the package together: tiling keys, SoCs, the tiling struct, the value-depend meta input's index, the
headers build.sh stages, the limits Python states for the op, and that nothing is left unfinished.
"""

from __future__ import annotations

import itertools
import json
import os
import re

import pytest

from ms_fa import backends

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = os.path.join(ROOT, "custom_ops")


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", " ", src)


KCMAKE = _read(OPS, "op_kernel", "CMakeLists.txt")


class Op:
    """The sources of one op of the package and its MindSpore registration."""

    def __init__(self, name, stem, inputs, outputs, reg):
        self.name, self.stem, self.inputs, self.outputs, self.reg = name, stem, inputs, outputs, reg
        self.DEF = _strip_comments(_read(OPS, "op_host", stem + "_def.cpp"))
        self.TILING = _strip_comments(_read(OPS, "op_host", stem + "_tiling.cpp"))
        self.ENTRY = _strip_comments(_read(OPS, "op_kernel", stem + ".cpp"))

    def __repr__(self):
        return self.name


def _ops():
    from ms_fa.mindspore import ascend_c as ac

    return [
        Op(backends.ASCEND_C_OP, "ms_fa_flash_attention", ac.INPUTS, ac.OUTPUTS, ac.reg_info),
        Op(backends.ASCEND_C_GRAD_OP, "ms_fa_flash_attention_grad", ac.GRAD_INPUTS, ac.GRAD_OUTPUTS, ac.grad_reg_info),
    ]


OP_IDS = ["forward", "backward"]


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _opdef_io(DEF, kind):
    """[(name, param_type, dtype list name)] of OpDef Input / Output calls, in order."""
    pat = kind + r'\("(\w+)"\)\.ParamType\((\w+)\)(?:\.ValueDepend\(\w+\))?\.DataType\((\w+)\)'
    return re.findall(pat, DEF)


def _opdef_dtypes(DEF):
    """the DataType vectors an OpDef names: variable -> [ge dtype, ...], read through op_host/fa_op_dtypes.h"""
    header = _strip_comments(_read(OPS, "op_host", "fa_op_dtypes.h"))
    lists = {
        fn: [t.strip().replace("ge::DT_", "") for t in body.split(",")]
        for fn, body in re.findall(r"std::vector<ge::DataType> (\w+)\(\)\s*\{\s*return\s*\{([^}]*)\};\s*\}", header)
    }
    return {var: lists[fn] for var, fn in re.findall(r"(\w+) = ms_fa_op::(\w+)\(\)", DEF) if fn in lists}


@pytest.mark.parametrize("op", _ops(), ids=OP_IDS)
def test_op_type_is_one_name_everywhere(op):
    DEF, TILING, ENTRY = op.DEF, op.TILING, op.ENTRY
    assert re.search(rf"class {op.name} : public OpDef", DEF) and re.search(rf"OP_ADD\({op.name}\);", DEF)
    assert re.search(rf"explicit {op.name}\(const char\* name\)", DEF)
    # the kernel entry is the op type in snake case (what opbuild / the aclnn launcher call)
    entry = re.search(r'extern "C" __global__ __aicore__ void (\w+)\(', ENTRY).group(1)
    assert entry == _snake(op.name) == op.stem
    # the aclnn header MindSpore's ops.Custom looks for (its own name rule); the backend looks for the forward's
    from mindspore.ops.operations._custom_ops_utils import CustomInfoGenerator

    header = CustomInfoGenerator._get_aclnn_api_file_name("aclnn" + op.name)
    assert header == "aclnn_" + op.stem + ".h"
    if op.name == backends.ASCEND_C_OP:
        assert header == backends.ASCEND_C_ACLNN_HEADER
    # the MindSpore registration
    assert op.reg()["op_name"] == op.name
    # the tiling: OpDef points at the function the tiling file defines; kernel and host share one struct
    fn = re.search(r"SetTiling\(optiling::(\w+)\)", DEF).group(1)
    assert re.search(rf"ge::graphStatus {fn}\(gert::TilingContext\* context\)\s*\{{", TILING)
    struct = re.search(r"REGISTER_TILING_DEFAULT\((\w+)\)", ENTRY).group(1)
    assert struct == op.name + "TilingData"
    assert re.search(rf"GET_TILING_DATA_WITH_STRUCT\({struct}, td, tiling\)", ENTRY)
    assert f"GetTilingData<{struct}>" in TILING
    assert re.search(rf"struct {struct} \{{", _read(OPS, "op_kernel", "ms_fa_flash_attention_tiling.h"))


@pytest.mark.parametrize("op", _ops(), ids=OP_IDS)
def test_inputs_and_outputs_agree_across_opdef_kernel_and_mindspore(op):
    ins, outs = _opdef_io(op.DEF, "Input"), _opdef_io(op.DEF, "Output")
    assert tuple(n for n, _, _ in ins) == op.inputs
    assert tuple(n for n, _, _ in outs) == op.outputs
    # kernel entry arguments: inputs, outputs, then workspace and tiling
    params = re.search(rf"void {op.stem}\(([^)]*)\)", op.ENTRY).group(1)
    names = [p.split()[-1] for p in params.split(",")]
    assert names == list(op.inputs) + list(op.outputs) + ["workspace", "tiling"]
    # MindSpore reg info: names, order and optionality
    info = op.reg()
    assert [(x["name"], x["paramType"]) for x in info["inputs"]] == [(n, t.lower()) for n, t, _ in ins]
    assert [(x["name"], x["paramType"]) for x in info["outputs"]] == [(n, t.lower()) for n, t, _ in outs]
    # dtype combinations: the OpDef's column k == the reg info's k-th dtype_format
    vec = _opdef_dtypes(op.DEF)
    ms_name = {"FLOAT16": "float16", "BF16": "bfloat16", "FLOAT": "float32", "UINT8": "uint8", "INT64": "int64"}
    cols = [vec[v] for _, _, v in ins + outs]
    want = [tuple(ms_name[c[k]] for c in cols) for k in range(len(cols[0]))]
    got = [tuple(d for d, _fmt in combo) for combo in info["dtype_format"]]
    assert got == want
    # the backward's outputs are the gradients of the forward's first three inputs, shapes and dtypes alike
    if op.name == backends.ASCEND_C_GRAD_OP:
        assert re.search(r"GetInputShape\(k\)", op.DEF) and re.search(r"GetInputDataType\(k\)", op.DEF)


@pytest.mark.parametrize("op", _ops(), ids=OP_IDS)
def test_the_meta_input_index_is_the_one_host_code_reads(op):
    idx = op.inputs.index("meta")
    srcs = (
        (op.DEF, op.TILING) if op.name == backends.ASCEND_C_OP else (op.TILING,)
    )  # the backward's shapes are its inputs'
    for src in srcs:
        assert re.findall(r"GetInputTensor\((\d+)\)", src) == [str(idx)]
    assert re.search(r'Input\("meta"\)\.ParamType\(REQUIRED\)\.ValueDepend\(REQUIRED\)', op.DEF)


@pytest.mark.parametrize("op", _ops(), ids=OP_IDS)
def test_tiling_keys_socs_and_limits(op):
    # tiling keys = the FaDtype codes of float16 / bfloat16 (the host sets the key to the dtype code)
    kernel_h = _read(ROOT, "ms_fa", "csrc", "fa_kernel.h")
    codes = dict(re.findall(r"FA_(F16|BF16) = (\d+)", kernel_h))
    keys = sorted(re.findall(r"TILING_KEY_IS\((\d+)\)", op.ENTRY))
    assert keys == sorted([codes["F16"], codes["BF16"]])
    assert (
        re.search(rf"add_ops_compile_options\({op.name} OPTIONS --tiling_key=(\S+)\)", KCMAKE).group(1).split(",")
        == keys
    )
    assert "SetTilingKey(static_cast<uint64_t>(p.dtype))" in op.TILING
    # SoCs: OpDef and the build presets name Atlas A2 and A3
    assert re.findall(r'AddConfig\("(\w+)"\)', op.DEF) == ["ascend910b", "ascend910_93"]
    presets = json.loads(_read(OPS, "CMakePresets.json"))
    units = presets["configurePresets"][0]["cacheVariables"]["ASCEND_COMPUTE_UNIT"]["value"]
    assert units.split(";") == ["ascend910b", "ascend910_93"]
    # the limits ms_fa.backends states are the kernel's
    tiling_h = _read(OPS, "op_host", "fa_tiling_core.h")
    assert int(re.search(r"#define FA_TILING_MAX_BATCH (\d+)", tiling_h).group(1)) == backends.ASCEND_C_MAX_BATCH
    assert int(re.search(r"FA_MAX_HEAD_DIM = (\d+)", tiling_h).group(1)) == backends.ASCEND_C_MAX_HEAD_DIM


def test_build_stages_every_header_the_op_includes():
    """build.sh copies op_host/, op_kernel/ and some ms_fa/csrc headers; every quoted include of the op's
    sources must be one of those (or CANN's)."""
    build = _read(OPS, "build.sh")
    staged = set(re.findall(r'"\$root/ms_fa/csrc/(\w+\.h)"', build))
    ours = {f for d in ("op_host", "op_kernel") for f in os.listdir(os.path.join(OPS, d))}
    cann = ("kernel_operator.h", "lib/matmul_intf.h", "kernel_tiling/kernel_tiling.h", "register/op_def_registry.h",
            "tiling/platform/platform_ascendc.h", "tiling/tiling_api.h")  # fmt: skip
    seen = set()
    for d in ("op_host", "op_kernel"):
        for f in os.listdir(os.path.join(OPS, d)):
            if not f.endswith((".h", ".cpp")):
                continue
            for inc in re.findall(r'#include "([^"]+)"', _read(OPS, d, f)):
                base = os.path.basename(inc)
                seen.add(base)
                assert inc in cann or base in ours or base in staged, (f, inc)
    # and what csrc headers they need is exactly what build.sh stages (fa_plan.h through the tiling core)
    assert staged == {"fa_plan.h", "fa_kernel.h", "fa_meta.h"}
    assert {"fa_meta.h", "fa_kernel.h", "fa_plan.h"} <= seen


def test_nothing_left_unfinished():
    for d, _dirs, files in os.walk(OPS):
        if "build_" in d:
            continue
        for f in files:
            src = _read(d, f)
            assert src.strip(), f"{f} is empty"
            assert not re.search(r"\b(TODO|FIXME|XXX|TBD)\b|NotImplemented", src), f
    expected = {
        "CMakeLists.txt", "CMakePresets.json", "build.sh", "README.md",
        "op_host/CMakeLists.txt", "op_host/ms_fa_flash_attention_def.cpp", "op_host/ms_fa_flash_attention_tiling.cpp",
        "op_host/ms_fa_flash_attention_grad_def.cpp", "op_host/ms_fa_flash_attention_grad_tiling.cpp",
        "op_host/fa_op_dtypes.h",
        "op_host/fa_tiling_core.h", "op_host/fa_kernel_params_fill.h", "op_host/fa_cube_tiling.h",
        "op_kernel/CMakeLists.txt", "op_kernel/ms_fa_flash_attention.cpp", "op_kernel/ms_fa_flash_attention_tiling.h",
        "op_kernel/fa_forward.h", "op_kernel/fa_schedule.h", "op_kernel/fa_kernel_params.h",
        "op_kernel/ms_fa_flash_attention_grad.cpp", "op_kernel/fa_backward.h", "op_kernel/fa_row_ops.h",
    }  # fmt: skip
    present = {
        os.path.relpath(os.path.join(d, f), OPS) for d, _dirs, files in os.walk(OPS) if "build_" not in d for f in files
    }
    assert present == expected, present ^ expected


# --------------------------------------------------------------------------------------------------
# host / device overloads that differ only by __aicore__ / __gm__ (the CPU twin defines both away)

_QUALS = re.compile(r"\b(__aicore__|__gm__|__global__|inline|static|FA_PLAN_INLINE|constexpr)\b")
_DEF = re.compile(
    r"([A-Za-z_][\w:<>,\s\*&]*?)\b([A-Za-z_]\w*)\s*\(([^;{}()]*(?:\([^()]*\)[^;{}()]*)*)\)\s*(?:const)?\s*\{"
)


def overload_collisions(sources):
    """(name, params) of functions defined more than once once the Ascend qualifiers are removed."""
    seen = {}
    hits = []
    for src in sources:
        for m in _DEF.finditer(_strip_comments(src)):
            ret, name, params = m.group(1), m.group(2), m.group(3)
            if name in ("if", "for", "while", "switch", "return", "sizeof"):
                continue
            norm = re.sub(r"\s+", " ", _QUALS.sub("", ret + " " + name + "(" + params + ")")).strip()
            norm = re.sub(r"\b\w+\s*([,)])", r"\1", norm)  # parameter names do not make an overload
            norm = re.sub(r"\s*([(),*&])\s*", r"\1", norm)
            if norm in seen and seen[norm] != m.group(0):
                hits.append(norm)
            seen.setdefault(norm, m.group(0))
    return hits


def _op_sources():
    files = [os.path.join(ROOT, "ms_fa", "csrc", f) for f in ("fa_plan.h", "fa_kernel.h", "fa_meta.h")]
    for d in ("op_host", "op_kernel"):
        files += [
            os.path.join(OPS, d, f) for f in sorted(os.listdir(os.path.join(OPS, d))) if f.endswith((".h", ".cpp"))
        ]
    return [_read(f) for f in files]


def test_no_overloads_differing_only_by_ascend_qualifiers():
    srcs = _op_sources()
    assert sum(len(_DEF.findall(_strip_comments(s))) for s in srcs) > 60  # the scan sees the functions
    assert overload_collisions(srcs) == []


@pytest.mark.parametrize(
    "a, b",
    [
        ("__aicore__ inline int64_t f(int64_t x) { return x; }", "inline int64_t f(int64_t y) { return y; }"),
        ("__aicore__ inline void g(__gm__ uint8_t* p) { }", "inline void g(uint8_t* q) { }"),
    ],
)
def test_the_overload_check_catches_a_collision(a, b):
    assert overload_collisions([a, b]) != []
    assert overload_collisions([a, b.replace("(int64_t", "(int32_t").replace("(uint8_t", "(int8_t")]) == []


@pytest.mark.parametrize("op", _ops(), ids=OP_IDS)
def test_host_and_device_sources_name_every_opdef_dtype_list(op):
    vec = _opdef_dtypes(op.DEF)
    used = {v for _, _, v in _opdef_io(op.DEF, "Input") + _opdef_io(op.DEF, "Output")}
    assert used == set(vec) and len({len(v) for v in vec.values()}) == 1
    assert list(itertools.chain(vec["qkv"])) == ["FLOAT16", "BF16", "FLOAT16", "BF16"]


# --------------------------------------------------------------------------------------------------
# a g++ syntax and name check of the CANN-facing sources against declarations of the API they call

DECLS = os.path.join(ROOT, "tests", "ascendc_decls")
CANN_FACING = [
    os.path.join(OPS, "op_kernel", "ms_fa_flash_attention.cpp"),  # the kernel (FaForward<half>, <bfloat16_t>)
    os.path.join(OPS, "op_kernel", "ms_fa_flash_attention_grad.cpp"),  # FaBackward<half>, <bfloat16_t>
    os.path.join(OPS, "op_host", "ms_fa_flash_attention_def.cpp"),
    os.path.join(OPS, "op_host", "ms_fa_flash_attention_tiling.cpp"),
    os.path.join(OPS, "op_host", "ms_fa_flash_attention_grad_def.cpp"),
    os.path.join(OPS, "op_host", "ms_fa_flash_attention_grad_tiling.cpp"),
    os.path.join(ROOT, "st", "ascend_c", "twin_main.cpp"),
]


KERNEL_DIR = os.path.join(OPS, "op_kernel")


def _syntax(path, kernel_dir=KERNEL_DIR):
    import shutil
    import subprocess

    gxx = shutil.which("g++")
    cmd = [gxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I", DECLS]
    cmd += ["-I", os.path.join(ROOT, "ms_fa", "csrc"), "-I", os.path.join(OPS, "op_host"), "-I", kernel_dir, path]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.parametrize("path", CANN_FACING, ids=os.path.basename)
def test_cann_facing_sources_type_check_against_the_api_declarations(path):
    """tests/ascendc_decls declares (never defines) the Ascend C / CANN calls these files make, as the
    API reference gives them; g++ then checks our code's names, members, argument counts and types, and
    instantiates the kernel for both dtypes. It is not a CANN compile (docs/ascend_c.md)."""
    r = _syntax(path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_the_syntax_check_catches_a_typo(tmp_path):
    for f in os.listdir(os.path.join(OPS, "op_kernel")):
        src = _read(OPS, "op_kernel", f)
        if f == "fa_forward.h":
            src = src.replace("LocalTensor<float> a = acc_[r * dv16_];", "LocalTensor<float> a = acc[r * dv16_];", 1)
        (tmp_path / f).write_text(src)
    r = _syntax(str(tmp_path / "ms_fa_flash_attention.cpp"), kernel_dir=str(tmp_path))
    assert r.returncode != 0 and "'acc' was not declared" in r.stderr.replace("‘", "'").replace("’", "'")
