"""torch_npu's schema strings of the fused-attention training ops, exactly as torch_npu 2.13 registers
them (op-plugin ``op_plugin_functions.yaml``), and the versions of that contract ms_fa can emulate.

The schemas are data: :mod:`ms_fa.torch.ops` defines each op from its string (``torch.library`` would
infer ``SymInt`` where torch_npu says ``int``), so ``str(op._schema)`` is torch_npu's, argument names and
spellings included (v1 ``pre_tockens``, v2 ``pre_tokens``).
"""

from __future__ import annotations

import os
from typing import Dict

__all__ = ["SCHEMAS", "API_VERSIONS", "api_version", "grad_v2_outputs", "schema"]

_V1_TAIL = (
    "Tensor? pse=None, Tensor? padding_mask=None, Tensor? atten_mask=None, float scale=1., float keep_prob=1., "
    "int pre_tockens=2147483647, int next_tockens=2147483647, int inner_precise=0, int[]? prefix=None, "
    "int[]? actual_seq_qlen=None, int[]? actual_seq_kvlen=None, int sparse_mode=0, bool gen_mask_parallel=True, "
    'bool sync=False, str softmax_layout="", Tensor? sink=None'
)

SCHEMAS: Dict[str, str] = {
    "npu_fusion_attention": (
        "(Tensor query, Tensor key, Tensor value, int head_num, str input_layout, " + _V1_TAIL + ", "
        "Tensor? dropout_mask=None, int seed=0, int offset=0) -> (Tensor, Tensor, Tensor, Tensor, int, int, int)"
    ),
    "npu_fusion_attention_grad": (
        "(Tensor query, Tensor key, Tensor value, Tensor dy, int head_num, str input_layout, *, Tensor? pse=None, "
        "Tensor? padding_mask=None, Tensor? atten_mask=None, Tensor? softmax_max=None, Tensor? softmax_sum=None, "
        "Tensor? softmax_in=None, Tensor? attention_in=None, float scale_value=1., float keep_prob=1., "
        "int pre_tockens=2147483647, int next_tockens=2147483647, int inner_precise=0, int seed=0, int offset=0, "
        "int numels=0, int[]? prefix=None, int[]? actual_seq_qlen=None, int[]? actual_seq_kvlen=None, "
        'int sparse_mode=0, bool gen_mask_parallel=True, bool sync=False, str softmax_layout="", Tensor? sink=None) '
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "npu_fusion_attention_v2": (
        "(Tensor query, Tensor key, Tensor value, int head_num, str input_layout, *, Tensor? pse=None, "
        "Tensor? padding_mask=None, Tensor? atten_mask=None, Tensor? query_rope=None, Tensor? key_rope=None, "
        "float scale=1., float keep_prob=1., int pre_tokens=2147483647, int next_tokens=2147483647, "
        "int inner_precise=0, int[]? prefix=None, int[]? actual_seq_qlen=None, int[]? actual_seq_kvlen=None, "
        "int sparse_mode=0, bool gen_mask_parallel=True, bool sync=False, int pse_type=1, "
        'int[]? q_start_idx=None, int[]? kv_start_idx=None, str softmax_layout="", Tensor? sink=None, '
        "Tensor? dropout_mask=None, int seed=0, int offset=0) -> (Tensor, Tensor, Tensor, Tensor, int, int, int)"
    ),
    "npu_fusion_attention_grad_v2": (
        "(Tensor query, Tensor key, Tensor value, Tensor dy, int head_num, str input_layout, *, Tensor? pse=None, "
        "Tensor? padding_mask=None, Tensor? atten_mask=None, Tensor? softmax_max=None, Tensor? softmax_sum=None, "
        "Tensor? softmax_in=None, Tensor? attention_in=None, Tensor? query_rope=None, Tensor? key_rope=None, "
        "float scale_value=1., float keep_prob=1., int pre_tokens=2147483647, int next_tokens=2147483647, "
        "int inner_precise=0, int seed=0, int offset=0, int numels=0, int[]? prefix=None, "
        "int[]? actual_seq_qlen=None, int[]? actual_seq_kvlen=None, int sparse_mode=0, "
        "bool gen_mask_parallel=True, bool sync=False, int pse_type=1, int[]? q_start_idx=None, "
        'int[]? kv_start_idx=None, str softmax_layout="", Tensor? sink=None) '
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "npu_fusion_attention_v3": (
        "(Tensor query, Tensor key, Tensor value, int head_num, str input_layout, Tensor? pse=None, "
        "Tensor? padding_mask=None, Tensor? atten_mask=None, float scale=1., float keep_prob=1., "
        "int pre_tockens=2147483647, int next_tockens=2147483647, int inner_precise=0, SymInt[]? prefix=None, "
        "Tensor? actual_seq_qlen=None, Tensor? actual_seq_kvlen=None, int sparse_mode=0, "
        'bool gen_mask_parallel=True, bool sync=False, str softmax_layout="", Tensor? sink=None) '
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "npu_fusion_attention_grad_v3": (
        "(Tensor query, Tensor key, Tensor value, Tensor dy, int head_num, str input_layout, *, Tensor? pse=None, "
        "Tensor? padding_mask=None, Tensor? atten_mask=None, Tensor? softmax_max=None, Tensor? softmax_sum=None, "
        "Tensor? softmax_in=None, Tensor? attention_in=None, float scale_value=1., float keep_prob=1., "
        "int pre_tockens=2147483647, int next_tockens=2147483647, int inner_precise=0, Tensor? seed=None, "
        "Tensor? offset=None, SymInt[]? prefix=None, Tensor? actual_seq_qlen=None, Tensor? actual_seq_kvlen=None, "
        'int sparse_mode=0, bool gen_mask_parallel=True, bool sync=False, str softmax_layout="", '
        "Tensor? sink=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
    "npu_ring_attention_update": (
        "(Tensor prev_attn_out, Tensor prev_softmax_max, Tensor prev_softmax_sum, Tensor cur_attn_out, "
        "Tensor cur_softmax_max, Tensor cur_softmax_sum, *, Tensor? actual_seq_qlen=None, "
        'str input_layout="SBH", str input_softmax_layout="") -> (Tensor, Tensor, Tensor)'
    ),
    "_npu_dropout_gen_mask.Tensor": (
        "(Tensor self, int[] size, float p, int seed, int offset, *, bool? parallel=True, bool? sync=None) -> Tensor"
    ),
}

#: torch_npu releases whose contract differs for these ops: "7.3" (torch_npu 2.13, CANN >= 8.5: grad_v2
#: returns 7 tensors incl. dsink) and "7.2" (before sink: grad_v2 returns 6, as yunchang 0.6.4 unpacks)
API_VERSIONS = ("7.3", "7.2")


def api_version() -> str:
    """The emulated torch_npu API version: ``$MS_FA_TORCH_NPU_API`` (default ``"7.3"``).

    Raises:
        ValueError: ``[npu.api_version]`` an unknown version.
    """
    v = os.environ.get("MS_FA_TORCH_NPU_API", API_VERSIONS[0]).strip()
    if v not in API_VERSIONS:
        from ms_fa.semantics.rules import R

        R.npu__api_version.fail(f"MS_FA_TORCH_NPU_API must be one of {API_VERSIONS}, got {v!r}")
    return v


def grad_v2_outputs() -> int:
    """How many tensors ``npu_fusion_attention_grad_v2`` returns under the emulated API version."""
    return 7 if api_version() == "7.3" else 6


def schema(name: str, version: str) -> str:
    """The schema of op ``name`` under torch_npu API ``version`` (only grad_v2's outputs differ)."""
    s = SCHEMAS[name]
    if name == "npu_fusion_attention_grad_v2" and version == "7.2":
        s = s.replace(
            "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
            "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        )
    return s
