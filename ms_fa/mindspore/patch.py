"""``ms_fa.patch()`` / ``ms_fa.unpatch()`` / ``ms_fa.patched()``: run unchanged MindSpore attention code on CPU.

After ``ms_fa.patch()`` user code that calls ``mindspore.ops.speed_fusion_attention``,
``mindspore.ops.flash_attention_score`` or the ``FlashAttentionScore`` primitive (MindFormers style, also
in GRAPH mode) runs on CPU through ms_fa's kernel. Two mechanisms, tried in this order:

1. ``op_plugin`` (GRAPH mode) -- MindSpore's CPU op-plugin hook (DESIGN §8). The environment variable
   ``MS_OP_PLUGIN_PATH`` names ``libms_fa_cpu.so``, which exports kernels for MindSpore's *own*
   primitives FlashAttentionScore[Grad] and SpeedFusionAttention[Grad]; MindSpore's primitives, its
   shape inference and its bprop then run our kernel, in PYNATIVE and GRAPH mode, whatever way the user
   reached the primitive. It only works when the variable is set before MindSpore creates its first
   kernel: ``python -m ms_fa run script.py`` (or exporting the variable) guarantees it; ``ms_fa.patch()``
   sets it and checks with a one-element probe call whether MindSpore took it. Not used in PYNATIVE
   mode: with *any* op plugin set, MindSpore 2.10 PYNATIVE hands strided views (transposes, slices)
   to its built-in CPU kernels, which read them as contiguous -- silently wrong add/mul/matmul/softmax.
2. ``python`` -- in PYNATIVE mode, or when the hook cannot apply (a kernel already ran, another plugin
   is set): the Python
   names are replaced in every loaded ``mindspore`` module: the two functions by ms_fa's, the
   ``FlashAttentionScore`` primitive class by a Cell with the same constructor and call signature.
   Code holding references taken *before* ``patch()`` (``from mindspore.ops import FlashAttentionScore``
   executed earlier, primitives already constructed) is not reached.

On Ascend nothing is patched (mechanism ``native``). The chosen mechanism and the reason are returned
(:class:`PatchStatus`) and logged on the ``ms_fa`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

__all__ = ["patch", "unpatch", "patched", "patch_dropout_gen_mask", "PatchStatus", "PLUGIN_ENV"]

PLUGIN_ENV = "MS_OP_PLUGIN_PATH"
_LOG = logging.getLogger("ms_fa")


@dataclass(frozen=True)
class PatchStatus:
    """What :func:`patch` did: ``mechanism`` is ``"op_plugin"``, ``"python"``, ``"native"`` or ``"none"``."""

    mechanism: str
    reason: str

    def __str__(self):
        return f"ms_fa.patch: mechanism={self.mechanism} ({self.reason})"


class _PatchState:
    """The replaced attributes of one patch() (explicit, restored by unpatch())."""

    def __init__(self):
        self.replaced = []  # (module, name, original)
        self.status = None
        self.env_set_here = False  # patch() set MS_OP_PLUGIN_PATH itself (unpatch() unsets it)


_STATE = _PatchState()


def _lib():
    from ms_fa.mindspore._custom import library_path

    return library_path()


def _probe_plugin():
    """Run a one-element FlashAttentionScore; True when MindSpore runs it (the plugin is active)."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from ms_fa.mindspore._dispatch import NATIVE_FAS

    q = Tensor(np.ones((1, 1, 1, 8), np.float32))
    prev = ms.get_context("mode")
    try:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        out = NATIVE_FAS(q, q, q, 1, input_layout="BNSD")
        return bool(np.allclose(out.asnumpy(), 1.0))
    except Exception:  # "Create kernelmod for op FlashAttentionScore failed": the hook came too late
        return False
    finally:
        ms.set_context(mode=prev)


def _flash_attention_score_primitive():
    """The Cell that stands in for the ``FlashAttentionScore`` primitive in the python mechanism."""
    from mindspore import nn
    from mindspore.ops import constexpr

    from ms_fa.mindspore._dispatch import TensorSpec, make_options, run, softmax_out_1
    from ms_fa.semantics.args import normalize

    @constexpr
    def _check_padding_mask(qs, qd, ks, kd, vs, vd, head_num, layout, pms, pmd, opts):
        # semantics.args is the one place of the rule: it raises [padding_mask.none] (after the rules it checks first)
        normalize(
            TensorSpec(qs, qd),
            TensorSpec(ks, kd),
            TensorSpec(vs, vd),
            head_num,
            layout,
            padding_mask=TensorSpec(pms, pmd),
            api="flash_attention_score",
            check_values=False,
            **opts.kwargs(),
        )
        return True

    class FlashAttentionScore(nn.Cell):
        """ms_fa stand-in for ``mindspore.ops.FlashAttentionScore`` (same constructor and call signature).

        Outputs ``(softmax_max, softmax_sum, softmax_out, attention_out)`` like the primitive; softmax_out has
        shape (1,). Backward through ms_fa's AOT op. ``add_prim_attr`` / ``del_prim_attr`` / ``attrs`` behave as
        on ``mindspore.ops.Primitive`` (attributes are stored; the constructor's attributes also take effect).
        """

        _PRIM_ATTRS = (
            "head_num",
            "keep_prob",
            "scale_value",
            "pre_tokens",
            "next_tokens",
            "inner_precise",
            "input_layout",
            "sparse_mode",
        )

        def __init__(
            self,
            head_num,
            keep_prob=1.0,
            scale_value=1.0,
            pre_tokens=2147483647,
            next_tokens=2147483647,
            inner_precise=0,
            input_layout="BSH",
            sparse_mode=0,
        ):
            super().__init__()
            self.head_num = head_num
            self.keep_prob = keep_prob
            self.scale_value = scale_value
            self.pre_tokens = pre_tokens
            self.next_tokens = next_tokens
            self.inner_precise = inner_precise
            self.input_layout = input_layout
            self.sparse_mode = sparse_mode
            self.attrs = {name: getattr(self, name) for name in self._PRIM_ATTRS}

        def add_prim_attr(self, name, value):
            """Store a primitive attribute (as ``mindspore.ops.Primitive.add_prim_attr``); returns self."""
            self.attrs[name] = value
            if name in self._PRIM_ATTRS:
                setattr(self, name, value)
            return self

        def del_prim_attr(self, name):
            """Delete an attribute added by :meth:`add_prim_attr` (constructor attributes stay); returns self."""
            if name in self.attrs and name not in self._PRIM_ATTRS:
                del self.attrs[name]
            return self

        def construct(
            self,
            query,
            key,
            value,
            real_shift=None,
            drop_mask=None,
            padding_mask=None,
            attn_mask=None,
            prefix=None,
            actual_seq_qlen=None,
            actual_seq_kvlen=None,
        ):
            opts = make_options(
                scale=self.scale_value,
                keep_prob=self.keep_prob,
                pre_tokens=self.pre_tokens,
                next_tokens=self.next_tokens,
                inner_precise=self.inner_precise,
                prefix=prefix,
                actual_seq_qlen=actual_seq_qlen,
                actual_seq_kvlen=actual_seq_kvlen,
                sparse_mode=self.sparse_mode,
            )
            if padding_mask is not None:
                _check_padding_mask(
                    query.shape,
                    query.dtype,
                    key.shape,
                    key.dtype,
                    value.shape,
                    value.dtype,
                    self.head_num,
                    self.input_layout,
                    padding_mask.shape,
                    padding_mask.dtype,
                    opts,
                )
            out, smax, ssum, _, _, _ = run(
                "flash_attention_score",
                query,
                key,
                value,
                self.head_num,
                self.input_layout,
                real_shift,
                attn_mask,
                drop_mask,
                opts,
            )
            return smax, ssum, softmax_out_1(query.dtype), out

    return FlashAttentionScore


def _dropout_gen_mask_primitive():
    """The Cell that stands in for MindSpore's ``DropoutGenMask`` primitive, which has no CPU kernel: MindFormers'
    FlashAttention feeds its bits to FlashAttentionScore as ``drop_mask``. Same constructor and call
    (``(shape, keep_prob) -> uint8 bits``, ``ceil(prod(shape) / 128) * 16`` bytes, 1 = keep, LSB first). The bits
    come from ms_fa's dropout generator (not the NPU's); each call draws its (seed, offset) from MindSpore's
    default generator (eagerly) or a MindSpore random op (GRAPH), so ``mindspore.manual_seed`` reproduces a run;
    ``Seed0`` / ``Seed1`` are kept as attributes and do not select the stream. The forward and the backward of
    FlashAttentionScore read the same mask tensor, so they drop the same scores."""
    import numpy as np
    from mindspore import Tensor, nn
    from mindspore.ops import constexpr

    from ms_fa.mindspore._custom import custom_ops
    from ms_fa.mindspore._dispatch import dropout_rng

    @constexpr
    def _like(shape):
        n = 1
        for d in shape:
            n *= int(d)
        return Tensor(np.zeros(((n + 127) // 128 * 16,), np.uint8))

    class DropoutGenMask(nn.Cell):
        """ms_fa stand-in for ``mindspore.ops.DropoutGenMask`` (see :func:`_dropout_gen_mask_primitive`)."""

        def __init__(self, Seed0=0, Seed1=0):  # noqa: N803 (MindSpore's argument names)
            super().__init__()
            self.Seed0, self.Seed1 = Seed0, Seed1
            self.gen = custom_ops().dropout_gen_mask()

        def construct(self, shape, keep_prob):
            return self.gen(_like(shape), keep_prob, dropout_rng())

    return DropoutGenMask


def _dropout_gen_mask_pairs():
    import mindspore.ops as msops

    prim = getattr(msops, "DropoutGenMask", None)
    return [(prim, _dropout_gen_mask_primitive())] if isinstance(prim, type) else []


def patch_dropout_gen_mask() -> None:
    """Replace MindSpore's ``DropoutGenMask`` primitive class (no CPU kernel) by ms_fa's stand-in everywhere in
    ``mindspore.*``; :func:`patch` does it in both mechanisms, ``python -m ms_fa run --op-plugin`` through this
    (the op plugin cannot serve it). Undone by :func:`unpatch`."""
    _replace_everywhere(_dropout_gen_mask_pairs())


def _replace_everywhere(originals_to_new):
    for modname, mod in list(sys.modules.items()):
        if mod is None or not (modname == "mindspore" or modname.startswith("mindspore.")):
            continue
        try:
            items = list(vars(mod).items())
        except TypeError:
            continue
        for name, val in items:
            for orig, new in originals_to_new:
                if val is orig:
                    setattr(mod, name, new)
                    _STATE.replaced.append((mod, name, orig))


def patch(mechanism: str = "auto") -> PatchStatus:
    """Make MindSpore's FlashAttentionScore APIs run on CPU through ms_fa.

    Args:
        mechanism (str): ``"auto"`` (op plugin when it can still apply, else python), ``"op_plugin"``
            (fail if the hook cannot apply) or ``"python"``. ``"auto"`` picks the op plugin only in GRAPH
            mode (see the module docstring). Default: ``"auto"``.

    Returns:
        PatchStatus: the active mechanism and why (also logged on the ``ms_fa`` logger).

    Raises:
        ValueError: unknown `mechanism`.
        RuntimeError: ``mechanism="op_plugin"`` and the hook cannot apply in this process.

    Supported Platforms:
        ``CPU`` (on ``Ascend`` this is a no-op: the native kernels run)

    Examples:
        >>> import ms_fa
        >>> status = ms_fa.patch()
        >>> status.mechanism in ("op_plugin", "python")
        True
        >>> ms_fa.unpatch().mechanism
        'none'
    """
    if mechanism not in ("auto", "op_plugin", "python"):
        raise ValueError(f"[patch.mechanism] mechanism must be 'auto', 'op_plugin' or 'python', got {mechanism!r}")
    import mindspore as ms

    if _STATE.status is not None and _STATE.status.mechanism != "none":
        return _STATE.status
    if ms.get_context("device_target") == "Ascend":
        return _set(PatchStatus("native", "device target is Ascend: MindSpore's own kernels run"))
    lib = _lib()
    pynative = ms.get_context("mode") == ms.PYNATIVE_MODE
    if mechanism == "auto" and pynative:
        mechanism = "python"
        why = (
            "PYNATIVE mode: with any op plugin set, MindSpore 2.10 PYNATIVE hands strided views to its "
            "built-in CPU kernels, which read them as contiguous (silently wrong results)"
        )
    elif mechanism == "python":
        why = "requested"
    if mechanism in ("auto", "op_plugin"):
        if pynative:
            _LOG.warning(
                "ms_fa.patch(mechanism='op_plugin') in PYNATIVE mode: MindSpore 2.10 then computes "
                "built-in CPU ops on strided views wrongly; use GRAPH mode or mechanism='python'"
            )
        cur = os.environ.get(PLUGIN_ENV)
        if cur and os.path.abspath(cur) != os.path.abspath(lib):
            why = f"{PLUGIN_ENV} already names another library ({cur}); one op plugin per process"
        else:
            set_here = not cur
            os.environ[PLUGIN_ENV] = lib
            if _probe_plugin():
                how = "set by ms_fa.patch() before the first kernel" if set_here else "set before the process started"
                _STATE.env_set_here = set_here
                # DropoutGenMask cannot be a plugin kernel (MindSpore's GRAPH compiler rejects its tuple input
                # then): its Python name is replaced in both mechanisms
                patch_dropout_gen_mask()
                return _set(
                    PatchStatus(
                        "op_plugin", f"{PLUGIN_ENV}={lib} ({how}); MindSpore's primitives and bprop run ms_fa's kernel"
                    )
                )
            if set_here:
                del os.environ[PLUGIN_ENV]
            why = (
                f"{PLUGIN_ENV} came too late: MindSpore had already created a kernel in this process "
                "(use `python -m ms_fa run --op-plugin script.py` or call ms_fa.patch() before any computation)"
            )
        if mechanism == "op_plugin":
            raise RuntimeError(f"[patch.op_plugin] the op-plugin hook cannot apply: {why}")
    import mindspore.ops as msops

    from ms_fa.mindspore import ops as ms_fa_ops
    from ms_fa.mindspore._dispatch import NATIVE_FAS, NATIVE_SFA

    pairs = [(NATIVE_SFA, ms_fa_ops.speed_fusion_attention), (NATIVE_FAS, ms_fa_ops.flash_attention_score)]
    try:
        from mindspore.ops.auto_generate.gen_ops_prim import FlashAttentionScore as prim
    except ImportError:  # other MindSpore versions
        prim = getattr(getattr(msops, "operations", None), "FlashAttentionScore", None)
    if isinstance(prim, type):
        pairs.append((prim, _flash_attention_score_primitive()))
    _replace_everywhere(pairs + _dropout_gen_mask_pairs())
    return _set(
        PatchStatus(
            "python", f"Python names replaced in mindspore.* ({why}); references taken before patch() are not reached"
        )
    )


def _set(status):
    _STATE.status = status
    _LOG.info("%s", status)
    return status


def unpatch() -> PatchStatus:
    """Undo :func:`patch`: restore the replaced Python names and unset ``MS_OP_PLUGIN_PATH`` if ms_fa set it.

    A loaded op plugin stays loaded for the life of the process (MindSpore cannot unload it): kernels
    already created keep running ms_fa's code.

    Returns:
        PatchStatus: ``mechanism="none"``.

    Supported Platforms:
        ``CPU`` ``Ascend``

    Examples:
        >>> import ms_fa
        >>> ms_fa.unpatch().mechanism
        'none'
    """
    for mod, name, orig in reversed(_STATE.replaced):
        setattr(mod, name, orig)
    _STATE.replaced.clear()
    note = "restored"
    if _STATE.status is not None and _STATE.status.mechanism == "op_plugin":
        note = "op plugin stays loaded in this process (MindSpore cannot unload it)"
    if _STATE.env_set_here:
        os.environ.pop(PLUGIN_ENV, None)
        _STATE.env_set_here = False
    _STATE.status = None
    return PatchStatus("none", note)


@contextlib.contextmanager
def patched(mechanism: str = "auto"):
    """Context manager: ``with ms_fa.patched() as status: ...`` patches on entry, unpatches on exit.

    Args:
        mechanism (str): as :func:`patch`. Default: ``"auto"``.

    Returns:
        A context manager yielding the :class:`PatchStatus` of :func:`patch`.

    Raises:
        ValueError: unknown `mechanism`.
        RuntimeError: ``mechanism="op_plugin"`` and the hook cannot apply.

    Supported Platforms:
        ``CPU`` ``Ascend``

    Examples:
        >>> import ms_fa
        >>> with ms_fa.patched() as st:
        ...     st.mechanism in ("op_plugin", "python")
        True
    """
    status = patch(mechanism)
    try:
        yield status
    finally:
        unpatch()
