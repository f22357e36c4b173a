/* C ABI of ms_fa's CPU FlashAttentionScore kernel (forward and backward).
 *
 * Callers: ms_fa/kernels/cpu.py (ctypes, numpy), the MindSpore AOT entry points and the
 * MindSpore op-plugin entry points (ms_fa/csrc/ms_*.cc).
 *
 * The caller passes the *raw* Ascend arguments (sparse_mode, pre/next tokens, prefix, the
 * actual_seq lists, inner_precise); everything derived from them (band per batch, band batch of
 * TND modes 7/8, invalid-line mode) is computed by fa_plan.h, the single C++ statement of those
 * rules (mirrored by ms_fa/semantics/plan.py). Validation is the caller's job (ms_fa/semantics/args.py);
 * the kernel only rejects what would make it read out of bounds, returning non-zero and a message.
 *
 * Tensors are read in place in their own layout: no copies of q/k/v/dy/out.
 */
#ifndef MS_FA_FA_KERNEL_H_
#define MS_FA_FA_KERNEL_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum FaDtype { FA_F32 = 0, FA_F16 = 1, FA_BF16 = 2 };
enum FaLayout { FA_BSH = 0, FA_SBH = 1, FA_BSND = 2, FA_BNSD = 3, FA_TND = 4 };

enum FaMaskKind {
  FA_MASK_NONE = 0,      /* no atten_mask: nothing is masked, whatever sparse_mode says */
  FA_MASK_FULL = 1,      /* full mask read element-wise at
                             mask[b*stride_b + h*stride_n + i*stride_s1 + j]  (batch-local i, j;
                             strides 0 where broadcast). TND (maxS1,maxS2) form: stride_b = 0. */
  FA_MASK_FULL_TT = 2,   /* TND (T1,T2) mask: mask[(cum_q_start+i)*stride_s1 + cum_kv_start+j] */
  FA_MASK_COMPRESSED = 3 /* canonical 2048x2048 / 3072x2048 compressed mask (modes 2,3,4,6,7,8):
                             validated by the caller, never read: the band says it all */
};

enum FaPseKind {
  FA_PSE_NONE = 0,
  FA_PSE_FULL = 1,             /* (Bp, N1, S1, S2) rows read at pse[b%Bp*stride_b + h*stride_n + i*stride_s1 + j] */
  FA_PSE_ROW = 2,              /* (Bp, N1, 1, S2): one row broadcast over i */
  FA_PSE_ALIBI_COMPRESSED = 3, /* (Bp, N1, 1024, S2 or maxS2): SPEC 5.2 mapping, never expanded */
  FA_PSE_SLOPES = 4            /* pse_type 2/3: float32 slopes (B, N1) (stride_b = N1) or (N1,) (stride_b = 0) */
};

/* The scalar part of one problem: every dimension, argument and derived form of a validated call.
 * This struct is the one definition of the kernel problem's scalars. It is filled by the one
 * marshaller in Python (ms_fa/kernels/abi.py: make_scalars, from a validated AttnArgs) for the ctypes
 * path and, as raw bytes, for the MindSpore AOT path (ms_aot.cc copies the bytes), and by the op
 * plugin (ms_op_plugin.cc) from MindSpore's primitive inputs. fa_abi.cc exports its field table
 * (fa_scalars_fields) so that the Python mirror is checked against this build when it loads.
 * Layout rule: no padding (each field at a multiple of its size, total a multiple of 8), so that the
 * bytes are the same for every compiler and for numpy's int64 view of them. */
typedef struct FaScalars {
  uint32_t struct_size;            /* sizeof(FaScalars): the AOT path checks that its bytes fit this build */
  int32_t layout;                  /* FaLayout */
  int32_t dtype;                   /* FaDtype of q, k, v, dy, out */
  int32_t sparse_mode;             /* 0..8 */
  int64_t B;                       /* batches (TND: number of entries of the actual_seq lists) */
  int64_t N1, N2;                  /* query heads (= head_num), kv heads; N1 % N2 == 0 */
  int64_t S1, S2;                  /* non-TND: sequence lengths. TND: max per-batch lengths */
  int64_t D, Dv;                   /* head dims of q/k and of v/out (Dv <= D) */
  int64_t T1, T2;                  /* TND only: first dims of q and k/v */
  float scale;                     /* float32, as the chip's attribute */
  float keep_prob;                 /* (0, 1] */
  int32_t inner_precise;           /* 2 => invalid-line mode on */
  int32_t mask_kind;               /* FaMaskKind */
  int64_t pre_tokens, next_tokens; /* as the user gave them (mode 4/7/8: bottom-right based) */
  /* atten_mask addressing (FA_MASK_FULL / FA_MASK_FULL_TT), in elements; 0 where broadcast */
  int64_t mask_stride_b, mask_stride_n, mask_stride_s1;
  int32_t pse_kind;    /* FaPseKind */
  int32_t pse_type;    /* 0..3: 1 => (QK^T + pse) * scale, else QK^T * scale + pse */
  int32_t pse_dtype;   /* FaDtype of pse (float32 for slopes) */
  int32_t num_threads; /* <= 0: all cores (OMP default) */
  int64_t pse_b;       /* first dim of pse (1 or B) for FULL/ROW/ALIBI_COMPRESSED */
  int64_t pse_stride_b, pse_stride_n, pse_stride_s1;
  int64_t q_start_idx, kv_start_idx; /* pse_type 2/3 offsets (0 when not given) */
  uint64_t seed, offset;             /* dropout stream of the in-kernel generator (fa_dropout.h) */
  int32_t has_prefix;                /* the call has a prefix list (modes 5/6): FaProblem.prefix is set */
  int32_t has_drop_mask;             /* dropout reads explicit bits: FaProblem.drop_mask is set */
} FaScalars;

/* One problem: the scalars and the arrays they describe. */
typedef struct FaProblem {
  FaScalars s;
  const int64_t* actual_seq_qlen; /* TND only: cumulative ends, no leading 0, length B (raw values) */
  const int64_t* actual_seq_kvlen;
  const int64_t* prefix; /* modes 5/6: length B, else NULL */
  const uint8_t* mask;   /* atten_mask (uint8 / bool bytes, non-zero = discard) */
  const void* pse;
  /* dropout (only when keep_prob < 1): explicit keep bits, 1 bit per score, LSB first, flat index
     per SPEC 4; or, when drop_mask is NULL, bits generated in the kernel from (seed, offset) by
     fa_dropout.h (the same generator as ms_fa/semantics/dropout.py), so forward and backward agree. */
  const uint8_t* drop_mask;
} FaProblem;

/* The field table of FaScalars (fa_abi.cc): name, byte offset, byte size and kind ('i' signed int,
 * 'u' unsigned int, 'f' float) of each field, in order. Returns the number of fields. */
typedef struct FaFieldInfo {
  const char* name;
  int64_t offset;
  int64_t size;
  char kind;
} FaFieldInfo;
int fa_scalars_fields(const FaFieldInfo** fields);
int64_t fa_scalars_size(void);

/* Forward. out: layout of q with head dim Dv. softmax_max/softmax_sum: float32, (B,N1,S1,8)
 * non-TND or (T1,N1,8) TND with the per-batch (N1,S1b,8) order of SPEC 6.
 * Returns 0 on success; otherwise writes a NUL-terminated message into err (errlen bytes). */
int fa_cpu_forward(const FaProblem* p, const void* q, const void* k, const void* v, void* out, float* softmax_max,
                   float* softmax_sum, char* err, int errlen);

/* Backward (SPEC 7): D = rowsum(dy * attention_out) from the stored forward output.
 * dq, dk, dv: shapes/dtypes of q, k, v. dpse is not computed (as on Atlas A2). */
int fa_cpu_backward(const FaProblem* p, const void* q, const void* k, const void* v, const void* dy,
                    const void* attention_out, const float* softmax_max, const float* softmax_sum, void* dq, void* dk,
                    void* dv, char* err, int errlen);

#ifdef __cplusplus
}
#endif

#endif /* MS_FA_FA_KERNEL_H_ */
