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

__all__ = ["Rule", "RuleSet", "R", "RULES", "rule", "rule_names", "Note", "W", "WARNINGS"]


class Rule:
    """One validation rule: ``exc`` (TypeError for a wrong Python type or dtype, ValueError for a wrong
    value or shape), the ``condition`` that raises it and its ``source``. The ``name`` comes from the
    attribute the rule is declared as in a :class:`RuleSet`.

    A rule also reads as the tuple ``(name, exc, condition, source)``.
    """

    __slots__ = ("name", "exc", "condition", "source")

    def __init__(self, exc: Type[Exception], condition: str, source: str, name: Optional[str] = None):
        if exc not in (TypeError, ValueError):
            raise ValueError(f"a rule raises TypeError or ValueError, got {exc!r}")
        self.exc = exc
        self.condition = condition
        self.source = source
        self.name: str = name or ""  # set from the attribute by __set_name__ when not given

    def __set_name__(self, owner, attr: str) -> None:
        if not self.name:
            self.name = attr.replace("__", ".")

    def fail(self, msg: str) -> NoReturn:
        """Raise this rule's exception, the message starting with the rule's name in brackets."""
        raise self.exc(f"[{self.name}] {msg}")

    def _astuple(self) -> tuple:
        return (self.name, self.exc, self.condition, self.source)

    def __iter__(self) -> Iterator:
        return iter(self._astuple())

    def __getitem__(self, i):
        return self._astuple()[i]

    def __len__(self) -> int:
        return 4

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.exc.__name__}, {self.condition!r}, {self.source!r})"


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
        ValueError, "numpy kernel entry: q / k / v not the C-contiguous arrays of the validated call", "ms_fa"
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


#: every rule, in declaration order
RULES: Tuple[Rule, ...] = R.all()
_BY_NAME: Dict[str, Rule] = {r.name: r for r in RULES}
if len(_BY_NAME) != len(RULES):  # a declaration bug, caught at import
    raise RuntimeError("ms_fa.semantics.rules: duplicate rule name")


def rule(name: str) -> Rule:
    """The rule called ``name``, for checks whose rule name is computed (``f"{arg}.type"``)."""
    return _BY_NAME[name]


def rule_names() -> Tuple[str, ...]:
    """Names of all rules in :data:`RULES`."""
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
