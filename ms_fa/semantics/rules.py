"""The validation rules of ms_fa's semantics: each declared once, as an object in one registry.

A rule is a :class:`Rule`: the exception it raises, the condition that raises it and its source in
``docs/spec.md``. Its name is the attribute it is declared as, with ``__`` read as ``.``
(``sparse_mode__range`` is the rule ``sparse_mode.range``), so the name is written once. A check
raises it by name::

    R.sparse_mode__range.fail(f"sparse_mode must be one of {allowed} ..., got {mode}")

which raises ``ValueError("[sparse_mode.range] sparse_mode must be one of ...")``. Errors that carry a
rule name in brackets are a stable interface: users and tests match on the name. :data:`RULES` lists
every rule (``docs/validation.md`` is the same table for humans; tests check the two agree and that
every rule has a failing case).
"""

from __future__ import annotations

from typing import Dict, Iterator, NoReturn, Optional, Tuple, Type

__all__ = ["Rule", "RuleSet", "R", "RULES", "ALL_RULES", "FAMILIES", "rule", "rule_names", "Note", "W", "WARNINGS"]


class Rule:
    """One validation rule: ``exc`` (TypeError for a wrong Python type or dtype, ValueError for a wrong
    value or shape), the ``condition`` that raises it and its ``source``. The ``name`` comes from the
    attribute the rule is declared as in a :class:`RuleSet`.

    A rule also reads as the tuple ``(name, exc, condition, source)``.
    """

    __slots__ = ("name", "exc", "excs", "condition", "source")

    def __init__(self, exc, condition: str, source: str, name: Optional[str] = None):
        excs = tuple(exc) if isinstance(exc, tuple) else (exc,)
        if not excs or any(e not in (TypeError, ValueError, RuntimeError) for e in excs):
            raise ValueError(
                f"a rule raises TypeError, ValueError (bad input) or RuntimeError (environment), got {exc!r}"
            )
        self.excs: Tuple[Type[Exception], ...] = excs
        self.exc: Type[Exception] = excs[0]
        self.condition = condition
        self.source = source
        self.name: str = name or ""  # set from the attribute by __set_name__ when not given

    def __set_name__(self, owner, attr: str) -> None:
        if not self.name:
            self.name = attr.replace("__", ".")

    def fail(self, msg: str, exc: Optional[Type[Exception]] = None) -> NoReturn:
        """Raise this rule's exception, the message starting with the rule's name in brackets. A rule
        declared with two exceptions (TypeError for the wrong type, ValueError for the wrong value of
        the same argument) is told which one by ``exc``."""
        if exc is None:
            if len(self.excs) != 1:
                raise RuntimeError(f"rule {self.name} raises one of {self.excs}: say which")
            exc = self.exc
        elif exc not in self.excs:
            raise RuntimeError(f"rule {self.name} is declared with {self.excs}, not {exc.__name__}")
        raise exc(f"[{self.name}] {msg}")

    def _astuple(self) -> tuple:
        return (self.name, self.exc, self.condition, self.source)

    def __iter__(self) -> Iterator:
        return iter(self._astuple())

    def __getitem__(self, i):
        return self._astuple()[i]

    def __len__(self) -> int:
        return 4

    def __repr__(self) -> str:
        exc = "/".join(e.__name__ for e in self.excs)
        return f"Rule({self.name!r}, {exc}, {self.condition!r}, {self.source!r})"


class RuleSet:
    """A family of rules, declared as class attributes (see the module docstring)."""

    @classmethod
    def all(cls) -> Tuple[Rule, ...]:
        """The rules of this set, in declaration order."""
        return tuple(v for v in vars(cls).values() if isinstance(v, Rule))


class R(RuleSet):
    """The rules of :func:`ms_fa.semantics.args.normalize` (SPEC §0a, §1-§5, §9, and ms_fa's own)."""

    api = Rule(ValueError, "api not in APIS", "§0a")
    input_layout__type = Rule(TypeError, "input_layout is not a str", "§9 SEED2")
    input_layout__value = Rule(ValueError, "input_layout (case-insensitive) not in BSH/SBH/BSND/BNSD/TND", "§9")
    head_num__type = Rule(TypeError, "head_num is not an int", "§9 SEED2")
    head_num__positive = Rule(ValueError, "head_num <= 0", "§9")
    query__type = Rule(TypeError, "query has no .shape/.dtype", "§9 SEED2")
    key__type = Rule(TypeError, "key has no .shape/.dtype", "§9 SEED2")
    value__type = Rule(TypeError, "value has no .shape/.dtype", "§9 SEED2")
    qkv__rank = Rule(ValueError, "rank != 3 (BSH/SBH/TND) or != 4 (BSND/BNSD)", "§9")
    shape__static = Rule(
        ValueError, "a tensor argument has a negative or non-int dimension (dynamic shapes are not supported)", "ms_fa"
    )
    qkv__dtype = Rule(TypeError, "q/k/v dtype not in float16/bfloat16/float32", "§1, §9")
    qkv__same_dtype = Rule(TypeError, "q, k, v dtypes differ", "§1, §9")
    head_num__divides_H = Rule(ValueError, "BSH/SBH: H1 % head_num != 0", "§9")
    head_num__equals_N = Rule(ValueError, "BSND/BNSD/TND: head_num != N axis of query", "§9")
    head_dim__range = Rule(ValueError, "D not in (0, 768]", "§9")
    head_dim__qk = Rule(ValueError, "query D != key D", "§9")
    head_dim__v = Rule(ValueError, "value Dv not in (0, D]", "§1, §9")
    kv__hidden = Rule(ValueError, "BSH/SBH: H2 % D != 0 or value hidden % N2 != 0", "§9")
    kv__same_heads = Rule(ValueError, "key and value head counts differ", "§9")
    kv__same_shape = Rule(ValueError, "key and value shapes differ outside the last dim", "§9")
    batch__equal = Rule(ValueError, "query and key batch sizes differ", "§9")
    gqa__N1_mod_N2 = Rule(ValueError, "N2 <= 0 or N1 % N2 != 0", "§9")
    actual_seq_qlen__type = Rule(TypeError, "not a list/tuple/1-D tensor of int", "§9 SEED2")
    actual_seq_kvlen__type = Rule(TypeError, "not a list/tuple/1-D tensor of int", "§9 SEED2")
    tnd__actual_seq_required = Rule(ValueError, "TND without non-empty actual_seq_qlen/kvlen", "§3, §9")
    tnd__actual_seq_only_tnd = Rule(ValueError, "actual_seq lists given for a non-TND layout", "SEED2")
    tnd__same_length = Rule(ValueError, "actual_seq_qlen and actual_seq_kvlen lengths differ", "§3")
    tnd__nonnegative = Rule(ValueError, "an actual_seq entry is negative", "ms_fa")
    tnd__T1 = Rule(ValueError, "sum of per-batch query lengths > T1", "§3")
    tnd__T2 = Rule(ValueError, "sum of per-batch key lengths > T2", "§3")
    scale__type = Rule(TypeError, "scale is not a float/int", "SEED2")
    keep_prob__type = Rule(TypeError, "keep_prob is not a float/int", "SEED2")
    keep_prob__range = Rule(ValueError, "keep_prob not in (0, 1] (0 included: CANN rejects it)", "§4, §9, §10-8")
    pre_tokens__type = Rule(TypeError, "pre_tokens is not an int", "SEED2")
    next_tokens__type = Rule(TypeError, "next_tokens is not an int", "SEED2")
    sparse_mode__type = Rule(TypeError, "sparse_mode is not an int", "SEED2")
    inner_precise__type = Rule(TypeError, "inner_precise is not an int", "SEED2")
    pse_type__type = Rule(TypeError, "pse_type is not an int", "SEED2")
    pse_type__range = Rule(ValueError, "pse_type not in [0, 3]", "§5.1, §9")
    pse_type__api = Rule(ValueError, "pse_type != 1 for flash_attention_score / npu_fusion_attention (v1)", "§0a")
    start_idx__api = Rule(ValueError, "q_start_idx / kv_start_idx given to an API that has no such argument", "§0a")
    sparse_mode__range = Rule(
        ValueError,
        "non-TND: not in [0, 6]; TND: not in {0..4, 6, 7, 8} (5: 'Var len not support sparse mode 5')",
        "§2.3, §2.4, §9",
    )
    padding_mask__type = Rule(TypeError, "padding_mask is not a tensor", "SEED2")
    padding_mask__none = Rule(ValueError, "padding_mask is not None (reserved)", "§9")
    atten_mask__type = Rule(TypeError, "atten_mask is not a tensor", "SEED2")
    atten_mask__dtype = Rule(TypeError, "atten_mask dtype not bool/uint8", "§1, §9")
    atten_mask__compressed_shape = Rule(
        ValueError, "modes 2/3/4/7/8: shape[-2:] != (2048, 2048) or rank not 2/4", "§2.2"
    )
    atten_mask__compressed_content = Rule(ValueError, "modes 2/3/4/7/8: content != triu(ones(2048, 2048), 1)", "§2.2")
    atten_mask__prefix_compressed_shape = Rule(ValueError, "mode 6: shape[-2:] != (3072, 2048) or rank not 2/4", "§2.2")
    atten_mask__prefix_compressed_content = Rule(ValueError, "mode 6: content != the 3072x2048 prefix layout", "§2.2")
    atten_mask__full_shape = Rule(
        ValueError, "non-TND modes 0/1 (and 5 with B == 1): not (B,N1,S1,S2)/(B,1,S1,S2)/(1,1,S1,S2)/(S1,S2)", "§2.3"
    )
    atten_mask__prefix_full_shape = Rule(ValueError, "mode 5 with B > 1: not (B,N1,S1,S2)/(B,1,S1,S2)", "§2.3, §9")
    atten_mask__tnd_shape = Rule(ValueError, "TND modes 0/1: not (maxS1,maxS2) (or larger 2-D) nor (T1,T2)", "§2.4")
    prefix__type = Rule(TypeError, "prefix is not a list/tuple/1-D tensor of int", "SEED2")
    prefix__mode = Rule(ValueError, "prefix given with sparse_mode not 5/6", "§2.3, §9")
    prefix__required = Rule(ValueError, "sparse_mode 6 without prefix", "§2.3")
    prefix__length = Rule(ValueError, "len(prefix) != B", "§2.3")
    prefix__range = Rule(
        ValueError, "mode 6: prefix[b] outside [max(S2-S1, 0), S2] (S1 > S2: [0, S2]); per batch for TND", "§2.3, §2.4"
    )
    pse__type = Rule(TypeError, "pse is not a tensor", "SEED2")
    pse__required = Rule(ValueError, "pse_type 2/3 with pse None ('pse_type is not default but pse is None')", "§5.1")
    pse__dtype = Rule(TypeError, "pse_type 0/1: pse dtype != query dtype", "§1, §5.1")
    pse__shape = Rule(ValueError, "pse_type 0/1, non-TND: not (B|1, N1, S1|1|1024, S2)", "§5.1, §9")
    pse__alibi_rows = Rule(ValueError, "1024-row pse with S1 < 1024", "§5.2")
    pse__alibi_same_s = Rule(
        ValueError, "1024-row (compressed ALiBi) pse with S1 > 1024 and S1 != S2 (TND: some S1b != S2b)", "§5.2"
    )
    pse__alibi_causal = Rule(
        ValueError,
        "compressed ALiBi pse without a causal sparse type (atten_mask and mode 2, mode 3 with S1 == S2, or mode 0 with pre >= S1, next == 0)",
        "§5.2",
    )
    pse__tnd_shape = Rule(ValueError, "pse_type 0/1, TND: not (B|1, N1, 1024, maxS2)", "§3, §5.2")
    pse__slopes_dtype = Rule(TypeError, "pse_type 2/3: slopes not float32", "§5.1")
    pse__slopes_shape = Rule(ValueError, "pse_type 2/3: slopes not (B, N1) or (N1,)", "§5.1")
    pse__inner_same_s = Rule(ValueError, "pse_type 2/3, non-TND: S1 != S2", "§5.1")
    pse__inner_mode7 = Rule(ValueError, "pse_type 2/3 with TND sparse_mode 7", "§5.1")
    pse__inner_mode8 = Rule(
        ValueError,
        "pse_type 2/3 with TND mode 8: S1_0 - S2_0 + q_start - kv_start != 0 or S1b != S2b for some b > 0",
        "§5.1",
    )
    q_start_idx__type = Rule(TypeError, "q_start_idx is not a list/tuple of int", "SEED2")
    kv_start_idx__type = Rule(TypeError, "kv_start_idx is not a list/tuple of int", "SEED2")
    start_idx__length = Rule(ValueError, "q_start_idx / kv_start_idx length != 1", "§5.1, SEED2")
    band__both_negative = Rule(
        ValueError, "modes 0/4 with atten_mask, left-up pre < 0 and next < 0", "§9 SparseBandModeCheck"
    )
    band__pre_negative = Rule(
        ValueError, "modes 0/4, left-up pre < 0 <= next and (next < |pre| or |pre| >= S2)", "§9 SparseBandModeCheck"
    )
    band__next_negative = Rule(
        ValueError, "modes 0/4, left-up next < 0 <= pre and (|next| > pre or |next| >= S1)", "§9 SparseBandModeCheck"
    )
    tnd__mode0__next_negative = Rule(ValueError, "TND mode 0 with atten_mask, next_tokens < 0", "§2.4")
    tnd__mode0__invalid_row = Rule(ValueError, "TND mode 0 with atten_mask, some batch with S2b + pre < S1b", "§2.4")
    tnd__mode3__s1_gt_s2 = Rule(ValueError, "TND mode 3 with atten_mask, some S1b > S2b", "§2.4")
    tnd__mode4__pre_negative = Rule(ValueError, "TND mode 4 with atten_mask, pre_tokens < 0", "§2.4")
    tnd__mode4__empty_band = Rule(ValueError, "TND mode 4 with atten_mask, next < 0 and pre + next < 0", "§2.4")
    tnd__mode4__invalid_row = Rule(
        ValueError, "TND mode 4 with atten_mask, a non-empty batch with S1b - next > S2b", "§2.4"
    )
    tnd__mode78__pre_lt_s2 = Rule(
        ValueError, "TND modes 7/8 with atten_mask, pre_tokens < S2 of the band batch", "§2.4"
    )
    tnd__mode7__next_positive = Rule(ValueError, "TND mode 7 with atten_mask, next_tokens > 0", "§2.4")
    tnd__mode7__s1_gt_s2 = Rule(ValueError, "TND mode 7 with atten_mask, a non-empty batch with S1b > S2b", "§2.4")
    tnd__mode78__invalid_row = Rule(ValueError, "TND modes 7/8 with atten_mask, band batch S1b - next > S2b", "§2.4")
    drop_mask__type = Rule(TypeError, "drop_mask is not a tensor", "§4")
    drop_mask__dtype = Rule(TypeError, "drop_mask dtype != uint8", "§4, §9")
    drop_mask__shape = Rule(
        ValueError,
        "drop_mask not (B,N1,S1,S2//8) with S2 % 8 == 0 (non-TND) nor 1-D with >= ceil(numels/8) bytes",
        "§4, §9",
    )
    softmax_layout__type = Rule(TypeError, "softmax_layout is not a str", "§9 [OP]")
    softmax_layout__value = Rule(ValueError, "softmax_layout not in {'', 'TND'}", "§9 [OP]")
    softmax_layout__layout = Rule(ValueError, "softmax_layout 'TND' with an input_layout other than TND", "§9 [OP]")
    npu__tokens_spelling = Rule(
        TypeError, "npu_fusion_attention given pre_tokens/next_tokens, or _v2 given pre_tockens/next_tockens", "§0a"
    )
    npu__sink = Rule(ValueError, "sink is not None (not studied, SPEC §10-11)", "§10")

    kernel__buffers = Rule(
        ValueError,
        "numpy kernel entry (run_forward / run_backward): q / k / v / atten_mask / pse / drop_mask not the arrays of the validated call",
        "ms_fa",
    )
    env__value = Rule(
        ValueError,
        "an MS_FA_* environment variable names no usable value (MS_FA_NUM_THREADS not an int, MS_FA_LIB not a loadable library)",
        "ms_fa",
    )
    int__range = Rule(
        ValueError,
        "an integer argument outside the kernel field it is passed in (int64; int32 for sparse_mode, inner_precise, pse_type)",
        "ms_fa",
    )
    merge__layout = Rule(
        ValueError, "ring_attention_update: input_layout not SBH/TND or input_softmax_layout not ''/SBH/TND", "§6 [OP]"
    )
    merge__shape = Rule(
        ValueError, "ring_attention_update: outputs or statistics of different or wrong shapes", "§6 [OP]"
    )
    merge__dtype = Rule(
        TypeError, "ring_attention_update: outputs not fp16/bf16/fp32 or statistics not float32", "§6 [OP]"
    )
    merge__actual_seq = Rule(
        ValueError, "ring_attention_update TND: actual_seq_qlen missing or longer than T", "§3 [OP]"
    )
    npu__pse_grad = Rule(ValueError, "torch: pse requires grad (dpse is not computed, as on Atlas A2)", "§7")
    npu__rope = Rule(ValueError, "torch: query_rope / key_rope given (not supported)", "§0a")
    npu__compile_dropout = Rule(
        ValueError, "torch.compile / fake tensors with keep_prob < 1 on v1 / v2 (int seed / offset outputs)", "§4 [OP]"
    )
    npu__rng_state = Rule(ValueError, "torch_npu.npu.set_rng_state: a state that is not 16 bytes", "§4")
    npu__api_version = Rule(ValueError, "MS_FA_TORCH_NPU_API not one of the emulated torch_npu versions", "[OP]")
    npu__not_differentiable = Rule(
        ValueError, "torch: a grad / merge / mask op asked for its own gradient (none exists)", "[OP]"
    )
    npu__dtype = Rule(TypeError, "torch: a tensor argument is not a torch.Tensor on the CPU", "ms_fa")


# --------------------------------------------------------------------------------------------------
# the rules of the other entry points: same Rule objects, one family per layer (docs/validation.md,
# "Rules of the other entry points"). The normalize rules above are the semantics; these check the
# arguments a layer adds (mask objects, adapters, the Cell, explain) or the environment.
# --------------------------------------------------------------------------------------------------
_TV = (TypeError, ValueError)


class Semantics(RuleSet):
    """Helpers of the semantics layer outside normalize (ALiBi slopes, canonical masks, bit unpacking)."""

    alibi__n_heads = Rule(_TV, "alibi_slopes: n_heads not an int, or not in [1, 2**20]", "§5.1")
    alibi__scale = Rule(TypeError, "alibi_slopes: alibi_scale not a float", "§5.1")
    alibi__tp = Rule(
        _TV, "alibi_slopes: tp_size / tp_rank not ints, tp_size not dividing n_heads, rank out of range", "§5.1"
    )
    compressed_mask__kind = Rule(ValueError, "canonical_compressed_mask kind not 'causal' / 'prefix'", "§2.2")
    plan__full_mask_mode = Rule(ValueError, "canonical_full_mask for a sparse_mode other than 0, 1, 5", "§2.3")
    pse_type__inner = Rule(ValueError, "inner_alibi with pse_type not 2 / 3", "§5.1")
    drop_mask__size = Rule(ValueError, "drop_mask_to_bits: fewer bits than the call's numels", "§4")
    cp__args = Rule(
        _TV, "plan_context_parallel: world size, lengths, mask, strategy, scheme or cuts outside what it plans", "ms_fa"
    )
    pse__form = Rule(ValueError, "internal: an AttnArgs.pse_form the oracle does not know", "ms_fa")
    atten_mask__form = Rule(ValueError, "internal: an AttnArgs.mask_form the oracle does not know", "ms_fa")


class Masks(RuleSet):
    """Mask objects (``ms_fa.masks``): constructors, ``to_ascend`` and the compiler."""

    mask__size = Rule(_TV, "a size (S1, S2, batch) not an int / negative, or too large to draw", "ms_fa")
    mask__align = Rule(ValueError, "align not 'top_left' / 'bottom_right'", "ms_fa")
    mask__batch = Rule(_TV, "batch not an int >= 1, or a batch-dependent mask compiled for a different batch", "ms_fa")
    mask__expressible = Rule(ValueError, "no sparse_mode / mask form expresses the mask at these sizes", "§2")
    mask__sliding_window__type = Rule(TypeError, "SlidingWindow left / right not int or None", "ms_fa")
    mask__sliding_window__empty = Rule(ValueError, "SlidingWindow keeps nothing (left + right < 0 ...)", "ms_fa")
    mask__prefix = Rule(ValueError, "PrefixLM prefix negative", "ms_fa")
    mask__prefix__type = Rule(TypeError, "PrefixLM prefix not an int / list of int", "ms_fa")
    mask__prefix__empty = Rule(ValueError, "PrefixLM prefix list empty", "ms_fa")
    mask__prefix__batch = Rule(ValueError, "PrefixLM prefix list length != batch", "ms_fa")
    mask__packed__type = Rule(TypeError, "Packed lengths / cu_seqlens not ints", "ms_fa")
    mask__packed__empty = Rule(ValueError, "Packed with no sequence", "ms_fa")
    mask__packed__length = Rule(ValueError, "Packed seqlens_q and seqlens_kv lengths differ", "ms_fa")
    mask__packed__negative = Rule(ValueError, "Packed with a negative length", "ms_fa")
    mask__packed__cu_seqlens = Rule(ValueError, "cu_seqlens without a leading 0 or decreasing", "ms_fa")
    mask__packed__size = Rule(ValueError, "Packed compiled at sizes other than its totals", "ms_fa")
    mask__packed__batch = Rule(ValueError, "Packed compiled with batch != 1", "§3")
    mask__packed__multiple = Rule(ValueError, "combining two Packed masks", "ms_fa")
    mask__dense__type = Rule(TypeError, "DenseMask of something that is not an array / tensor", "ms_fa")
    mask__dense__rank = Rule(ValueError, "DenseMask not 2-D / 4-D", "ms_fa")
    mask__dense__shape = Rule(ValueError, "DenseMask shape differs from the sizes it is compiled at", "ms_fa")
    mask__dense__packed_shape = Rule(ValueError, "DenseMask with Packed: not (T1, T2)", "§3")


class Compat(RuleSet):
    """The adapters (``ms_fa.compat``): torch SDPA, flash-attn, xFormers, TensorRT call forms."""

    compat__flag = Rule(TypeError, "is_causal / causal / enable_gqa / deterministic not a bool", "ms_fa")
    compat__qkv__rank = Rule(ValueError, "q / k / v not of the source API's rank", "ms_fa")
    compat__qkv__heads = Rule(ValueError, "head counts / head dims of q, k, v inconsistent", "ms_fa")
    compat__dropout_p = Rule(_TV, "dropout_p not a float in [0, 1)", "§4")
    compat__mask__shape = Rule(ValueError, "mask not broadcastable to (B, N, L, S)", "ms_fa")
    compat__size = Rule(ValueError, "the (B, N, L, S) mask / bias a translation builds would not fit memory", "ms_fa")
    compat__mask__values = Rule(
        ValueError, "additive mask with +inf / NaN or values the query dtype cannot hold", "ms_fa"
    )
    sdpa__attn_mask__dtype = Rule(TypeError, "SDPA attn_mask neither bool nor floating", "ms_fa")
    sdpa__enable_gqa = Rule(ValueError, "SDPA: key heads differ from query heads without enable_gqa", "ms_fa")
    sdpa__mask_and_causal = Rule(ValueError, "SDPA: attn_mask together with is_causal", "ms_fa")
    flash_attn__window_size = Rule(_TV, "flash-attn window_size not two ints >= -1", "ms_fa")
    flash_attn__cu_seqlens = Rule(
        _TV, "flash-attn cu_seqlens not int32/int64, no leading 0, decreasing, or too long", "§3"
    )
    flash_attn__max_seqlen = Rule(ValueError, "flash-attn max_seqlen smaller than a sequence", "ms_fa")
    flash_attn__softcap = Rule(_TV, "flash-attn softcap != 0 (no Ascend equivalent)", "ms_fa")
    flash_attn__return_attn_probs = Rule(_TV, "flash-attn return_attn_probs (no probabilities are stored)", "ms_fa")
    flash_attn__block_table = Rule(ValueError, "flash-attn block_table (paged KV is inference only)", "ms_fa")
    flash_attn__alibi_slopes = Rule(_TV, "flash-attn alibi_slopes not a float array of shape (N,) / (B, N)", "§5.1")
    flash_attn__varlen_mask = Rule(ValueError, "flash-attn varlen with a mask TND cannot express", "§2.4")
    flash_attn__varlen_alibi = Rule(ValueError, "flash-attn varlen ALiBi with unequal q / k lengths", "§5.1")
    xformers__bias__dtype = Rule(TypeError, "xFormers tensor bias neither bool nor floating", "ms_fa")
    xformers__bias__unsupported = Rule(ValueError, "an xFormers attn_bias class with no Ascend form", "ms_fa")
    xformers__block_diagonal__batch = Rule(ValueError, "xFormers BlockDiagonalMask with batch != 1", "§3")
    xformers__window_size = Rule(_TV, "xFormers window sizes not ints >= 0", "ms_fa")
    tensorrt__mask__dtype = Rule(TypeError, "TensorRT mask neither bool nor floating", "ms_fa")
    tensorrt__normalization_op = Rule(ValueError, "TensorRT normalization_op other than SOFTMAX", "ms_fa")


class MindSporeLayer(RuleSet):
    """The MindSpore layer: the FlashAttention Cell, GRAPH-mode limits, patch()."""

    flash_attention__mask = Rule(
        _TV, "FlashAttention Cell: mask argument not a mask object / Tensor, or of the wrong shape", "ms_fa"
    )
    flash_attention__mask_twice = Rule(
        ValueError, "FlashAttention Cell: a mask object and atten_mask / sparse arguments together", "ms_fa"
    )
    flash_attention__mask_layout = Rule(
        ValueError, "FlashAttention Cell: mask object with a layout it cannot serve", "ms_fa"
    )
    flash_attention__alibi_mode = Rule(
        ValueError, "FlashAttention Cell: alibi mode not one of the documented ones", "ms_fa"
    )
    flash_attention__alibi = Rule(TypeError, "FlashAttention Cell: alibi not a bool", "ms_fa")
    flash_attention__cache_size = Rule(ValueError, "FlashAttention Cell: mask cache size < 0", "ms_fa")
    query__dynamic_shape = Rule(ValueError, "GRAPH: query with a dynamic shape (set_inputs with None)", "ms_fa")
    key__dynamic_shape = Rule(ValueError, "GRAPH: key with a dynamic shape", "ms_fa")
    value__dynamic_shape = Rule(ValueError, "GRAPH: value with a dynamic shape", "ms_fa")
    pse__dynamic_shape = Rule(ValueError, "GRAPH: pse with a dynamic shape", "ms_fa")
    atten_mask__dynamic_shape = Rule(ValueError, "GRAPH: atten_mask with a dynamic shape", "ms_fa")
    prefix__graph_tensor = Rule(TypeError, "GRAPH / ms.jit: prefix given as a Tensor (use the op plugin)", "ms_fa")
    actual_seq_qlen__graph_tensor = Rule(TypeError, "GRAPH / ms.jit: actual_seq_qlen given as a Tensor", "ms_fa")
    actual_seq_kvlen__graph_tensor = Rule(TypeError, "GRAPH / ms.jit: actual_seq_kvlen given as a Tensor", "ms_fa")
    q_start_idx__graph_tensor = Rule(TypeError, "GRAPH / ms.jit: q_start_idx given as a Tensor", "ms_fa")
    kv_start_idx__graph_tensor = Rule(TypeError, "GRAPH / ms.jit: kv_start_idx given as a Tensor", "ms_fa")
    patch__mechanism = Rule(ValueError, "patch(mechanism=...) not 'auto' / 'op_plugin' / 'python'", "ms_fa")
    backend__name = Rule(ValueError, "set_backend / MS_FA_BACKEND: not 'auto', 'native', 'ascend_c' or 'cpu'", "ms_fa")
    backend__unsupported = Rule(
        ValueError,
        "the chosen backend refuses the call (device, op package or the call's shape; reasons listed)",
        "ms_fa",
    )


class Kernel(RuleSet):
    """The numpy kernel entry (``ms_fa.kernels.cpu``) and its gradient inputs."""

    precision = Rule(ValueError, "the CPU kernel asked for precision other than 'chip'", "ms_fa")
    kernel__seed = Rule(TypeError, "seed / offset not an int", "§4")
    kernel__isa = Rule(ValueError, "MS_FA_ISA unknown, unsupported by this CPU, or not built", "ms_fa")
    kernel__size = Rule(ValueError, "the outputs and contiguous copies would not fit this machine's memory", "ms_fa")
    grad__dy = Rule(_TV, "fa_grad: dy not an array of the output's shape and q's dtype", "§7")
    grad__attention_out = Rule(_TV, "fa_grad: attention_out not an array of the output's shape and q's dtype", "§7")
    grad__softmax_max = Rule(TypeError, "fa_grad: softmax_max not an array", "§7")
    grad__softmax_sum = Rule(TypeError, "fa_grad: softmax_sum not an array", "§7")
    grad__softmax_stats = Rule(
        ValueError, "fa_grad: softmax_max / softmax_sum not float32 of the statistics' shape", "§7"
    )


class Tools(RuleSet):
    """``python -m ms_fa explain`` (usage errors: exit status 2, one line)."""

    explain__s1 = Rule(ValueError, "--s1 negative, or missing where the mask needs it", "ms_fa")
    explain__s2 = Rule(ValueError, "--s2 negative", "ms_fa")
    explain__size = Rule(ValueError, "sizes too large to draw", "ms_fa")
    explain__heads = Rule(ValueError, "--heads < 1", "ms_fa")
    explain__batch = Rule(ValueError, "--batch < 1", "ms_fa")
    explain__max_cells = Rule(ValueError, "--max-cells < 1", "ms_fa")
    explain__block = Rule(ValueError, "--block not two positive ints", "ms_fa")
    explain__tnd_kv = Rule(ValueError, "--tnd-kv without --tnd-q", "ms_fa")
    explain__atten_mask = Rule(ValueError, "--atten-mask not an .npy file ms_fa can read", "ms_fa")
    explain__png = Rule(ValueError, "--png without matplotlib, or a path that cannot be written", "ms_fa")
    explain__int_list = Rule(ValueError, "a list option not comma-separated ints", "ms_fa")
    explain__prefix = Rule(ValueError, "--prefix not comma-separated ints", "ms_fa")
    explain__tnd_q = Rule(ValueError, "--tnd-q not comma-separated ints", "ms_fa")
    explain__mask_expr = Rule(ValueError, "--mask expression malformed or naming an unknown mask", "ms_fa")


class Environment(RuleSet):
    """Not bad input but a machine that cannot run the request: RuntimeError, with the way out."""

    kernel__library = Rule(RuntimeError, "the kernel library is missing or cannot be loaded", "ms_fa")
    kernel__abi = Rule(RuntimeError, "the library's FaScalars layout differs from ms_fa.kernels.abi", "ms_fa")
    patch__op_plugin = Rule(RuntimeError, "patch(mechanism='op_plugin') after MindSpore created a kernel", "ms_fa")
    run__op_plugin_pynative = Rule(RuntimeError, "python -m ms_fa run --op-plugin on a PYNATIVE script", "ms_fa")
    npu__shim_refused = Rule(RuntimeError, "the torch_npu stand-in next to a real torch_npu", "ms_fa")
    explain__io = Rule(RuntimeError, "explain: a file it reads or writes cannot be opened (exit 2, one line)", "ms_fa")


class CAbi(RuleSet):
    """Raised in C by the kernel library and the MindSpore op plugin, for callers that bypass Python
    (C ABI, MindSpore's C++ kernel threads); from Python the rules above fire first. The message comes
    back as the C entry's error string (RuntimeError through ctypes / MindSpore)."""

    kernel__null = Rule(RuntimeError, "a required pointer is NULL", "ms_fa")
    kernel__dims = Rule(RuntimeError, "dimensions out of range or inconsistent", "ms_fa")
    kernel__dtype = Rule(RuntimeError, "dtype code unknown", "ms_fa")
    kernel__layout = Rule(RuntimeError, "layout code unknown", "ms_fa")
    kernel__fields = Rule(
        RuntimeError, "sparse_mode / mask / pse kind / pse_type / keep_prob field value unknown", "ms_fa"
    )
    kernel__mask = Rule(RuntimeError, "mask form unknown or its pointer missing", "ms_fa")
    kernel__pse = Rule(RuntimeError, "pse form unknown or its pointer missing", "ms_fa")
    kernel__prefix = Rule(RuntimeError, "prefix list missing or of the wrong length", "ms_fa")
    kernel__tnd = Rule(RuntimeError, "TND lists missing, negative or beyond T1 / T2", "ms_fa")
    kernel__memory = Rule(RuntimeError, "scratch memory could not be allocated", "ms_fa")
    plugin__layout = Rule(RuntimeError, "op plugin: a tensor's rank / strides not the layout's", "ms_fa")
    drop_mask__required = Rule(RuntimeError, "op plugin: FlashAttentionScore with keep_prob < 1 and no drop_mask", "§4")


#: the rule families of the other entry points, in the order docs/validation.md lists them
FAMILIES: Tuple[Type[RuleSet], ...] = (Semantics, Masks, Compat, MindSporeLayer, Kernel, Tools, Environment, CAbi)


#: every rule of normalize, in declaration order
RULES: Tuple[Rule, ...] = R.all()
#: every rule ms_fa raises: normalize's, then each family's
ALL_RULES: Tuple[Rule, ...] = RULES + tuple(r for f in FAMILIES for r in f.all())
_BY_NAME: Dict[str, Rule] = {r.name: r for r in ALL_RULES}
if len(_BY_NAME) != len(ALL_RULES):  # a declaration bug, caught at import
    raise RuntimeError("ms_fa.semantics.rules: duplicate rule name")


def rule(name: str) -> Rule:
    """The rule called ``name``, for checks whose rule name is computed (``f"{arg}.type"``)."""
    return _BY_NAME[name]


def rule_names() -> Tuple[str, ...]:
    """Names of all rules ms_fa raises (:data:`ALL_RULES`)."""
    return tuple(_BY_NAME)


# --------------------------------------------------------------------------------------------------
# warnings: accepted calls whose result may surprise (the permissive choices, docs/validation.md)
# --------------------------------------------------------------------------------------------------
class Note:
    """One warning: a call ms_fa accepts (as some Ascend path does) whose result may surprise. Declared in
    :class:`W` like a rule (name = attribute, ``__`` read as ``.``); ``note(warns, msg)`` records
    ``"[name] msg"`` in a call's warnings (:attr:`ms_fa.semantics.args.AttnArgs.warnings`), which the public
    entry points emit as :class:`ms_fa.MsFaWarning`."""

    __slots__ = ("name", "condition", "source")

    def __init__(self, condition: str, source: str):
        self.condition = condition
        self.source = source
        self.name = ""

    def __set_name__(self, owner, attr: str) -> None:
        self.name = attr.replace("__", ".")

    def note(self, warns: list, msg: str) -> None:
        warns.append(f"[{self.name}] {msg}")

    def __repr__(self) -> str:
        return f"Note({self.name!r}, {self.condition!r}, {self.source!r})"


class W:
    """The warnings of :func:`ms_fa.semantics.args.normalize`."""

    sparse_mode__no_mask = Note("sparse_mode != 0 without atten_mask: nothing is masked, pre/next ignored", "§2.1-1")
    band__whole_matrix = Note("sparse_mode 4 whose band covers the whole matrix (CANN warns, masks nothing)", "§9")
    prefix__fallback = Note("sparse_mode 5 without a usable prefix: the full user mask applies (ALL)", "§2.3")
    start_idx__kv_only = Note("kv_start_idx without q_start_idx: it is ignored", "§5.1")
    pse__empty_batch = Note("pse with an empty TND query batch (docs forbid, tiling accepts)", "§3")
    tnd__long_lists = Note("actual_seq lists longer than 20000 (aclnn only warns)", "§3")
    tnd__decreasing = Note("actual_seq lists not non-decreasing: negative differences are empty batches", "§3")
    tnd__empty_keys = Note("a TND batch with S1b > 0 and S2b == 0 (documented unsupported; rows zero-filled)", "§3")
    drop_mask__unused = Note("drop_mask with keep_prob == 1: no dropout, the mask is ignored", "§4")


#: every warning, in declaration order
WARNINGS: Tuple[Note, ...] = tuple(v for v in vars(W).values() if isinstance(v, Note))
