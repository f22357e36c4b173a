"""``torch_npu.testing`` on the CPU: the parts attention tests use (``testcase``, ``common_utils``)."""
