"""ms_fa.kernels"""
