"""ms_fa's MindSpore frontend.

``ops``      speed_fusion_attention, flash_attention_score (functional API; Ascend -> native op, else the
             CPU kernel through ``ops.Custom(func_type="aot")``)
``cell``     FlashAttention (nn.Cell; mask objects, TND packing, ALiBi, an explicit argument cache)
``patch``    patch / unpatch / patched (run unchanged MindSpore code on CPU; op plugin or python mechanism)
``runner``   ``python -m ms_fa run [--op-plugin] script.py``
``_custom``  the AOT Custom ops and their meta tensor

Guide: docs/mindspore.md. The public names are re-exported lazily by ``ms_fa`` itself.
"""
