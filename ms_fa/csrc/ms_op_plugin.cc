/* MindSpore CPU op-plugin entry points of ms_fa (DESIGN §8).
 *
 * When the environment variable MS_OP_PLUGIN_PATH names libms_fa_cpu.so before MindSpore creates its
 * first kernel, MindSpore dlopens the library and runs the kernels below for its *own* primitives
 * FlashAttentionScore / FlashAttentionScoreGrad (ops.flash_attention_score, the MindFormers-style
 * primitive, its bprop) and SpeedFusionAttention / SpeedFusionAttentionGrad
 * (ops.speed_fusion_attention), in PYNATIVE and GRAPH mode. ms_fa.patch() / `python -m ms_fa run`
 * set it up.
 *
 * ABI (measured with a probe on mindspore 2.10.0 CPU, pinned by tests/test_patch.py):
 *   exports  bool IsKernelRegistered(const char*), int GetRegisteredOpCount(), char** GetAllRegisteredOps()
 *   and per primitive  int <Name>(int nparam, void** params, int* ndims, int64_t** shapes,
 *                                 const char** dtypes, void* stream, void* extra)
 *   params = all primitive inputs in the order of the op yaml, then the outputs. None inputs have
 *   params[i] == NULL and dtype "none". Scalar inputs (head_num, keep_prob, scale, tokens,
 *   inner_precise, input_layout, sparse_mode, pse_type, ...) and tuple inputs (prefix, actual_seq_*)
 *   are read through extra, a KernelInputInfo* (GetIntInput / GetFloatInput / GetIntVecInput).
 *   input_layout arrives as MindSpore's enum: BSH 0, BNSD 1, SBH 2, BSND 3, TND 4.
 *   Returns 0 on success. On failure we *throw* a std::runtime_error: MindSpore 2.10 catches it and
 *   raises RuntimeError in Python with our message ("... Error message is [rule.name] ..."), in
 *   PYNATIVE and GRAPH mode (a non-zero return only gives "Return value ... is 1"); pinned by
 *   tests/test_op_plugin_inputs.py.
 *
 * Here we parse layouts and shapes into a FaProblem (B/N/S/D, the mask / pse form and strides).
 * MindSpore's CPU shape inference does not check atten_mask / pse / drop_mask, so before the kernel
 * runs we check the rank, extents and dtype of every tensor the kernel reads against the forms of
 * ms_fa/semantics/args.py (SPEC §2.3/§2.4/§4/§5), with the same [rule.name]s -- shapes and dtypes only, no
 * contents (fa_kernel.h: the kernel only rejects what would make it read out of bounds). Every band /
 * invalid-line rule stays in fa_plan.h inside the kernel.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "fa_kernel.h"

#include "ms_op_plugin_abi.h"

namespace {
using mindspore::kernel::op_plugin::KernelInputInfo;

const char* kRegistered[] = {"FlashAttentionScore", "FlashAttentionScoreGrad", "SpeedFusionAttention",
                             "SpeedFusionAttentionGrad"};
constexpr int kNumRegistered = 4;

struct Args {
  int nparam;
  void** params;
  int* ndims;
  int64_t** shapes;
  const char** dtypes;
  KernelInputInfo* info;

  bool none(int i) const { return params[i] == nullptr || strcmp(dtypes[i], "none") == 0; }
  std::vector<int64_t> shape(int i) const { return std::vector<int64_t>(shapes[i], shapes[i] + ndims[i]); }
  int64_t numel(int i) const {
    int64_t n = 1;
    for (int d = 0; d < ndims[i]; d++) n *= shapes[i][d];
    return n;
  }
  int64_t i64(int i) const { return info->GetIntInput(i); }
  double f64(int i) const { return info->GetFloatInput(i); }
  std::vector<int64_t> ivec(int i) const {
    if (none(i) && info->GetInputTypeId(i) == 7) return {};
    if (!info->IsScalarInput(i)) {  // a tensor
      const int64_t* p = static_cast<const int64_t*>(params[i]);
      return std::vector<int64_t>(p, p + numel(i));
    }
    return info->GetIntVecInput(i);
  }
};

int DtypeCode(const char* s) {
  if (strcmp(s, "float32") == 0) return FA_F32;
  if (strcmp(s, "float16") == 0) return FA_F16;
  if (strcmp(s, "bfloat16") == 0) return FA_BF16;
  return -1;
}

size_t DtypeSize(const char* s) {
  if (strcmp(s, "float32") == 0 || strcmp(s, "int32") == 0) return 4;
  if (strcmp(s, "float16") == 0 || strcmp(s, "bfloat16") == 0) return 2;
  if (strcmp(s, "int64") == 0 || strcmp(s, "float64") == 0) return 8;
  return 1;
}

/* PYNATIVE hands views to the plugin: params[i] is the *storage* base and GetInputTensorLayout(i)
 * gives the storage offset and strides (in elements) -- e.g. q/k/v sliced out of one fused qkv
 * projection and transposed. Make such inputs contiguous (the kernel reads dense layouts). */
void MakeContiguous(Args* a, int i, std::vector<std::vector<uint8_t>>* keep) {
  if (i < 0 || a->none(i) || a->info->IsScalarInput(i)) return;
  std::optional<mindspore::kernel::op_plugin::OpPluginTensorStorageInfo> lay = a->info->GetInputTensorLayout(i);
  if (!lay.has_value()) return;
  const int nd = a->ndims[i];
  const size_t es = DtypeSize(a->dtypes[i]);
  const std::vector<int64_t>& st = lay->strides;
  if (static_cast<int>(st.size()) != nd)
    throw std::runtime_error("[plugin.layout] input " + std::to_string(i) + " has " + std::to_string(nd) +
                             " dims but its storage layout gives " + std::to_string(st.size()) + " strides");
  bool dense = lay->storage_offset == 0;
  int64_t expect = 1;
  for (int d = nd - 1; dense && d >= 0; d--) {
    if (a->shapes[i][d] != 1 && st[d] != expect) dense = false;
    expect *= a->shapes[i][d];
  }
  if (dense) return;
  const int64_t n = a->numel(i);
  keep->emplace_back(static_cast<size_t>(n) * es);
  uint8_t* dst = keep->back().data();
  const uint8_t* base = static_cast<const uint8_t*>(a->params[i]) + lay->storage_offset * es;
  std::vector<int64_t> idx(static_cast<size_t>(nd), 0);
  for (int64_t e = 0; e < n; e++) {
    int64_t off = 0;
    for (int d = 0; d < nd; d++) off += idx[d] * st[d];
    memcpy(dst + e * es, base + off * static_cast<int64_t>(es), es);
    for (int d = nd - 1; d >= 0; d--) {
      if (++idx[d] < a->shapes[i][d]) break;
      idx[d] = 0;
    }
  }
  a->params[i] = dst;
}

void ZeroFill(const Args& a, int i) {
  if (a.params[i] != nullptr) memset(a.params[i], 0, static_cast<size_t>(a.numel(i)) * DtypeSize(a.dtypes[i]));
}

/* Where each raw Ascend argument of one call sits among a primitive's inputs (MindSpore's op yaml
 * order); kAbsent where the primitive has no such input. One named table per primitive below. */
constexpr int kAbsent = -1;
struct Raw {
  int q = kAbsent, k = kAbsent, v = kAbsent, pse = kAbsent, drop_mask = kAbsent, atten_mask = kAbsent;
  int prefix = kAbsent, aq = kAbsent, akv = kAbsent; /* aq / akv: actual_seq_qlen / actual_seq_kvlen */
  int head_num = kAbsent, layout = kAbsent, scale = kAbsent, keep_prob = kAbsent, pre = kAbsent;
  int next = kAbsent, inner = kAbsent, sparse = kAbsent, pse_type = kAbsent, q_start = kAbsent;
  int kv_start = kAbsent;
  int seed_t = kAbsent, offset_t = kAbsent; /* SpeedFusionAttention: int64 tensors */
};

/* FlashAttentionScore: q k v real_shift drop_mask padding_mask attn_mask prefix actual_seq_qlen
 * actual_seq_kvlen head_num keep_prob scale_value pre_tokens next_tokens inner_precise input_layout
 * sparse_mode -> softmax_max softmax_sum softmax_out attention_out */
constexpr Raw kFasInputs = [] {
  Raw r;
  r.q = 0, r.k = 1, r.v = 2, r.pse = 3, r.drop_mask = 4, r.atten_mask = 6, r.prefix = 7, r.aq = 8, r.akv = 9;
  r.head_num = 10, r.keep_prob = 11, r.scale = 12, r.pre = 13, r.next = 14, r.inner = 15, r.layout = 16;
  r.sparse = 17;
  return r;
}();

/* FlashAttentionScoreGrad: q k v dy pse drop_mask padding_mask atten_mask softmax_max softmax_sum
 * softmax_in attention_in prefix actual_seq_qlen actual_seq_kvlen head_num keep_prob scale_value
 * pre_tokens next_tokens inner_precise input_layout sparse_mode -> dq dk dv dpse */
constexpr Raw kFasGradInputs = [] {
  Raw r;
  r.q = 0, r.k = 1, r.v = 2, r.pse = 4, r.drop_mask = 5, r.atten_mask = 7, r.prefix = 12, r.aq = 13, r.akv = 14;
  r.head_num = 15, r.keep_prob = 16, r.scale = 17, r.pre = 18, r.next = 19, r.inner = 20, r.layout = 21;
  r.sparse = 22;
  return r;
}();

/* SpeedFusionAttention: q k v head_num input_layout seed offset pse padding_mask atten_mask scale
 * keep_prob pre_tokens next_tokens inner_precise prefix actual_seq_qlen actual_seq_kvlen sparse_mode
 * gen_mask_parallel sync pse_type q_start_idx kv_start_idx
 * -> attention_out softmax_max softmax_sum softmax_out seed offset numels */
constexpr Raw kSfaInputs = [] {
  Raw r;
  r.q = 0, r.k = 1, r.v = 2, r.head_num = 3, r.layout = 4, r.seed_t = 5, r.offset_t = 6, r.pse = 7;
  r.atten_mask = 9, r.scale = 10, r.keep_prob = 11, r.pre = 12, r.next = 13, r.inner = 14, r.prefix = 15;
  r.aq = 16, r.akv = 17, r.sparse = 18, r.pse_type = 21, r.q_start = 22, r.kv_start = 23;
  return r;
}();

/* SpeedFusionAttentionGrad: q k v dy head_num input_layout pse padding_mask atten_mask softmax_max
 * softmax_sum softmax_in attention_in scale keep_prob pre_tokens next_tokens inner_precise seed offset
 * numels prefix actual_seq_qlen actual_seq_kvlen sparse_mode gen_mask_parallel sync pse_type
 * q_start_idx kv_start_idx -> dq dk dv dpse */
constexpr Raw kSfaGradInputs = [] {
  Raw r;
  r.q = 0, r.k = 1, r.v = 2, r.head_num = 4, r.layout = 5, r.pse = 6, r.atten_mask = 8, r.scale = 13;
  r.keep_prob = 14, r.pre = 15, r.next = 16, r.inner = 17, r.seed_t = 18, r.offset_t = 19, r.prefix = 21;
  r.aq = 22, r.akv = 23, r.sparse = 24, r.pse_type = 27, r.q_start = 28, r.kv_start = 29;
  return r;
}();

struct Problem {
  FaProblem p;
  std::vector<int64_t> aq, akv, prefix;
};

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string o = "(";
  for (size_t d = 0; d < s.size(); d++) o += (d ? ", " : "") + std::to_string(s[d]);
  return o + (s.size() == 1 ? ",)" : ")");
}

int MsLayoutToFa(int64_t ms_layout) {
  switch (ms_layout) {  // MindSpore FASInputLayoutMode
    case 0:
      return FA_BSH;
    case 1:
      return FA_BNSD;
    case 2:
      return FA_SBH;
    case 3:
      return FA_BSND;
    case 4:
      return FA_TND;
    default:
      return -1;
  }
}

int Fill(const Args& a, const Raw& r, Problem* pr, char* err, int errlen) {
  FaProblem& p = pr->p;
  memset(&p, 0, sizeof(p));
  p.s.struct_size = sizeof(FaScalars);
  p.s.layout = MsLayoutToFa(a.i64(r.layout));
  if (p.s.layout < 0) {
    snprintf(err, errlen, "unknown input_layout enum %ld", static_cast<long>(a.i64(r.layout)));
    return 1;
  }
  p.s.dtype = DtypeCode(a.dtypes[r.q]);
  if (p.s.dtype < 0) {
    snprintf(err, errlen, "[qkv.dtype] query dtype must be float16, bfloat16 or float32, got %s", a.dtypes[r.q]);
    return 1;
  }
  const int64_t N1 = a.i64(r.head_num);
  const std::vector<int64_t> qs = a.shape(r.q), ks = a.shape(r.k), vs = a.shape(r.v);
  const size_t rank = (p.s.layout == FA_BSND || p.s.layout == FA_BNSD) ? 4 : 3;
  if (N1 <= 0 || qs.size() != rank || ks.size() != rank || vs.size() != rank) {
    snprintf(err, errlen, "[qkv.rank] query/key/value ranks do not fit layout (head_num %ld)", static_cast<long>(N1));
    return 1;
  }
  p.s.N1 = N1;
  switch (p.s.layout) {
    case FA_BSH:
    case FA_SBH: {
      const bool sbh = p.s.layout == FA_SBH;
      p.s.B = sbh ? qs[1] : qs[0];
      p.s.S1 = sbh ? qs[0] : qs[1];
      p.s.S2 = sbh ? ks[0] : ks[1];
      p.s.D = qs[2] / N1;
      p.s.N2 = p.s.D ? ks[2] / p.s.D : 0;
      p.s.Dv = p.s.N2 ? vs[2] / p.s.N2 : 0;
      break;
    }
    case FA_BSND:
      p.s.B = qs[0];
      p.s.S1 = qs[1];
      p.s.D = qs[3];
      p.s.S2 = ks[1];
      p.s.N2 = ks[2];
      p.s.Dv = vs[3];
      break;
    case FA_BNSD:
      p.s.B = qs[0];
      p.s.S1 = qs[2];
      p.s.D = qs[3];
      p.s.S2 = ks[2];
      p.s.N2 = ks[1];
      p.s.Dv = vs[3];
      break;
    default: {  // TND
      p.s.T1 = qs[0];
      p.s.D = qs[2];
      p.s.T2 = ks[0];
      p.s.N2 = ks[1];
      p.s.Dv = vs[2];
      pr->aq = a.ivec(r.aq);
      pr->akv = a.ivec(r.akv);
      if (pr->aq.empty() || pr->aq.size() != pr->akv.size()) {
        snprintf(err, errlen,
                 "[tnd.same_length] TND needs actual_seq_qlen and actual_seq_kvlen of equal, non-zero length");
        return 1;
      }
      p.s.B = static_cast<int64_t>(pr->aq.size());
      int64_t pq = 0, pk = 0;
      for (size_t b = 0; b < pr->aq.size(); b++) {
        p.s.S1 = std::max(p.s.S1, pr->aq[b] - pq);
        p.s.S2 = std::max(p.s.S2, pr->akv[b] - pk);
        pq = pr->aq[b];
        pk = pr->akv[b];
      }
      p.actual_seq_qlen = pr->aq.data();
      p.actual_seq_kvlen = pr->akv.data();
    }
  }
  if (p.s.N2 <= 0 || p.s.N1 % p.s.N2 != 0 || p.s.D <= 0) {
    snprintf(err, errlen, "[gqa.N1_mod_N2] N1=%ld must be a multiple of N2=%ld (D=%ld)", static_cast<long>(p.s.N1),
             static_cast<long>(p.s.N2), static_cast<long>(p.s.D));
    return 1;
  }
  p.s.scale = static_cast<float>(a.f64(r.scale));
  p.s.keep_prob = static_cast<float>(a.f64(r.keep_prob));
  p.s.pre_tokens = a.i64(r.pre);
  p.s.next_tokens = a.i64(r.next);
  p.s.inner_precise = static_cast<int32_t>(a.i64(r.inner));
  p.s.sparse_mode = static_cast<int32_t>(a.i64(r.sparse));
  p.s.pse_type = r.pse_type >= 0 ? static_cast<int32_t>(a.i64(r.pse_type)) : 1;
  if (r.prefix >= 0 && !a.none(r.prefix)) {
    pr->prefix = a.ivec(r.prefix);
    pr->prefix.resize(static_cast<size_t>(p.s.B), 0);
    p.prefix = pr->prefix.data();
    p.s.has_prefix = 1;
  }
  if (r.q_start >= 0 && !a.none(r.q_start)) {
    std::vector<int64_t> qsi = a.ivec(r.q_start);
    if (!qsi.empty()) {
      p.s.q_start_idx = qsi[0];
      if (r.kv_start >= 0 && !a.none(r.kv_start)) {
        std::vector<int64_t> ksi = a.ivec(r.kv_start);
        if (!ksi.empty()) p.s.kv_start_idx = ksi[0];
      }
    }
  }
  if (p.s.keep_prob <= 0.0f || p.s.keep_prob > 1.0f) {
    snprintf(err, errlen, "[keep_prob.range] keep_prob must be in (0, 1], got %g", static_cast<double>(p.s.keep_prob));
    return 1;
  }
  {
    const int m = p.s.sparse_mode;
    const bool ok = p.s.layout == FA_TND ? (m >= 0 && m <= 8 && m != 5) : (m >= 0 && m <= 6);
    if (!ok) {
      snprintf(err, errlen, "[sparse_mode.range] sparse_mode must be one of %s for this layout, got %d",
               p.s.layout == FA_TND ? "(0, 1, 2, 3, 4, 6, 7, 8)" : "(0, 1, 2, 3, 4, 5, 6)", m);
      return 1;
    }
  }
  if (p.s.pse_type < 0 || p.s.pse_type > 3) {
    snprintf(err, errlen, "[pse_type.range] pse_type must be in [0, 3], got %d", static_cast<int>(p.s.pse_type));
    return 1;
  }
  const int64_t B = p.s.B, S1 = p.s.S1, S2 = p.s.S2;
  using Shape = std::vector<int64_t>;
  // atten_mask: dtype and one of the forms of semantics/args.py _mask_form (SPEC §2.2-§2.4)
  if (!a.none(r.atten_mask) && a.numel(r.atten_mask) > 0) {
    const Shape ms = a.shape(r.atten_mask);
    const char* md = a.dtypes[r.atten_mask];
    if (strcmp(md, "bool") != 0 && strcmp(md, "uint8") != 0) {
      snprintf(err, errlen, "[atten_mask.dtype] atten_mask dtype must be bool or uint8, got %s", md);
      return 1;
    }
    p.mask = static_cast<const uint8_t*>(a.params[r.atten_mask]);
    const int m = p.s.sparse_mode;
    const size_t mr = ms.size();
    if (m == 2 || m == 3 || m == 4 || m == 7 || m == 8 || m == 6) {
      const int64_t rows = m == 6 ? 3072 : 2048;
      if ((mr != 2 && mr != 4) || ms[mr - 2] != rows || ms[mr - 1] != 2048) {
        snprintf(err, errlen, "[%s] sparse_mode %d needs the compressed atten_mask of shape (%ld, 2048), got %s",
                 m == 6 ? "atten_mask.prefix_compressed_shape" : "atten_mask.compressed_shape", m,
                 static_cast<long>(rows), ShapeStr(ms).c_str());
        return 1;
      }
      p.s.mask_kind = FA_MASK_COMPRESSED;
    } else if (p.s.layout == FA_TND) {
      if (ms == Shape{S1, S2} || (mr == 2 && ms[0] >= S1 && ms[1] >= S2 && ms != Shape{p.s.T1, p.s.T2})) {
        p.s.mask_kind = FA_MASK_FULL;
        p.s.mask_stride_s1 = ms[1];
      } else if (ms == Shape{p.s.T1, p.s.T2}) {
        p.s.mask_kind = FA_MASK_FULL_TT;
        p.s.mask_stride_s1 = p.s.T2;
      } else {
        snprintf(err, errlen,
                 "[atten_mask.tnd_shape] TND atten_mask for sparse_mode %d must be (maxS1, maxS2)=(%ld, %ld) or "
                 "(T1, T2)=(%ld, %ld), got %s",
                 m, static_cast<long>(S1), static_cast<long>(S2), static_cast<long>(p.s.T1), static_cast<long>(p.s.T2),
                 ShapeStr(ms).c_str());
        return 1;
      }
    } else {
      const bool bnss = ms == Shape{B, p.s.N1, S1, S2}, b1ss = ms == Shape{B, 1, S1, S2};
      if (m == 5 && B != 1) {
        if (!bnss && !b1ss) {
          snprintf(err, errlen,
                   "[atten_mask.prefix_full_shape] sparse_mode 5 with B=%ld > 1 needs atten_mask (B, N1, S1, S2)="
                   "(%ld, %ld, %ld, %ld) or (B, 1, S1, S2), got %s",
                   static_cast<long>(B), static_cast<long>(B), static_cast<long>(p.s.N1), static_cast<long>(S1),
                   static_cast<long>(S2), ShapeStr(ms).c_str());
          return 1;
        }
      } else if (!bnss && !b1ss && ms != Shape{S1, S2} && ms != Shape{1, 1, S1, S2}) {
        snprintf(err, errlen,
                 "[atten_mask.full_shape] atten_mask for sparse_mode %d must be one of (S1, S2), (1, 1, S1, S2), "
                 "(B, 1, S1, S2), (B, N1, S1, S2) with B=%ld N1=%ld S1=%ld S2=%ld, got %s",
                 m, static_cast<long>(B), static_cast<long>(p.s.N1), static_cast<long>(S1), static_cast<long>(S2),
                 ShapeStr(ms).c_str());
        return 1;
      }
      p.s.mask_kind = FA_MASK_FULL;
      p.s.mask_stride_s1 = S2;
      if (mr == 4) {
        p.s.mask_stride_b = ms[0] == 1 ? 0 : ms[1] * S1 * S2;
        p.s.mask_stride_n = ms[1] == 1 ? 0 : S1 * S2;
      }
    }
  }
  // pse: dtype and one of the forms of semantics/args.py (SPEC §5.1, §5.2)
  const bool has_pse = r.pse >= 0 && !a.none(r.pse) && a.numel(r.pse) > 0;
  if (!has_pse && (p.s.pse_type == 2 || p.s.pse_type == 3)) {
    snprintf(err, errlen,
             "[pse.required] pse_type is not default but pse is None: pse_type %d needs the ALiBi "
             "slopes (float32 (B, N1)=(%ld, %ld) or (N1,)) in pse",
             static_cast<int>(p.s.pse_type), static_cast<long>(B), static_cast<long>(p.s.N1));
    return 1;
  }
  if (has_pse) {
    const Shape ps = a.shape(r.pse);
    const char* pd = a.dtypes[r.pse];
    p.pse = a.params[r.pse];
    if (p.s.pse_type == 2 || p.s.pse_type == 3) {
      if (strcmp(pd, "float32") != 0) {
        snprintf(err, errlen, "[pse.slopes_dtype] pse (ALiBi slopes) must be float32 for pse_type %d, got %s",
                 static_cast<int>(p.s.pse_type), pd);
        return 1;
      }
      if (ps == Shape{B, p.s.N1}) {
        p.s.pse_stride_b = p.s.N1;
      } else if (ps == Shape{p.s.N1}) {
        p.s.pse_stride_b = 0;
      } else {
        snprintf(err, errlen,
                 "[pse.slopes_shape] pse for pse_type %d must be (B, N1)=(%ld, %ld) or (N1,)=(%ld,), "
                 "got %s",
                 static_cast<int>(p.s.pse_type), static_cast<long>(B), static_cast<long>(p.s.N1),
                 static_cast<long>(p.s.N1), ShapeStr(ps).c_str());
        return 1;
      }
      p.s.pse_kind = FA_PSE_SLOPES;
      p.s.pse_dtype = FA_F32;
    } else {
      if (strcmp(pd, a.dtypes[r.q]) != 0) {
        snprintf(err, errlen, "[pse.dtype] pse dtype must equal query dtype %s for pse_type %d, got %s", a.dtypes[r.q],
                 static_cast<int>(p.s.pse_type), pd);
        return 1;
      }
      const bool lead = ps.size() == 4 && (ps[0] == 1 || ps[0] == B) && ps[1] == p.s.N1 && ps[3] == S2;
      if (p.s.layout == FA_TND) {
        if (!lead || ps[2] != 1024) {
          snprintf(err, errlen,
                   "[pse.tnd_shape] TND pse must be the compressed ALiBi (B or 1, N1, 1024, maxS2) = "
                   "(%ld or 1, %ld, 1024, %ld), got %s",
                   static_cast<long>(B), static_cast<long>(p.s.N1), static_cast<long>(S2), ShapeStr(ps).c_str());
          return 1;
        }
        p.s.pse_kind = FA_PSE_ALIBI_COMPRESSED;
      } else {
        if (!lead || (ps[2] != S1 && ps[2] != 1 && ps[2] != 1024)) {
          snprintf(err, errlen,
                   "[pse.shape] pse must be (B or 1, N1, S1 | 1 | 1024, S2) = (%ld or 1, %ld, %ld | 1 | "
                   "1024, %ld), got %s",
                   static_cast<long>(B), static_cast<long>(p.s.N1), static_cast<long>(S1), static_cast<long>(S2),
                   ShapeStr(ps).c_str());
          return 1;
        }
        if (ps[2] == S1) {
          p.s.pse_kind = FA_PSE_FULL;
        } else if (ps[2] == 1) {
          p.s.pse_kind = FA_PSE_ROW;
        } else if (S1 < 1024) {
          snprintf(err, errlen,
                   "[pse.alibi_rows] a 1024-row pse (compressed ALiBi) needs S1 > 1024, got S1=%ld "
                   "(pse %s)",
                   static_cast<long>(S1), ShapeStr(ps).c_str());
          return 1;
        } else {
          p.s.pse_kind = FA_PSE_ALIBI_COMPRESSED;
        }
      }
      p.s.pse_dtype = DtypeCode(pd);
      p.s.pse_b = ps[0];
      p.s.pse_stride_b = ps[1] * ps[2] * ps[3];
      p.s.pse_stride_n = ps[2] * ps[3];
      p.s.pse_stride_s1 = p.s.pse_kind == FA_PSE_ROW ? 0 : ps[3];
    }
  }
  // drop_mask: uint8, (B, N1, S1, S2 // 8) with S2 % 8 == 0 (non-TND) or 1-D with enough bytes (SPEC §4)
  if (r.drop_mask >= 0 && !a.none(r.drop_mask) && a.numel(r.drop_mask) > 0) {
    const Shape ds = a.shape(r.drop_mask);
    const char* dd = a.dtypes[r.drop_mask];
    if (strcmp(dd, "uint8") != 0) {
      snprintf(err, errlen, "[drop_mask.dtype] drop_mask must be uint8 (1 bit per score, LSB first), got %s", dd);
      return 1;
    }
    // the bits the kernel reads: N1 * sum(S1b * S2b) over the clamped TND lengths, also the raw numels
    int64_t numels = B * p.s.N1 * S1 * S2, scores = numels;
    if (p.s.layout == FA_TND) {
      int64_t raw = 0, sum = 0, pq = 0, pk = 0;
      for (size_t b = 0; b < pr->aq.size(); b++) {
        raw += (pr->aq[b] - pq) * (pr->akv[b] - pk);
        sum += std::max<int64_t>(pr->aq[b] - pq, 0) * std::max<int64_t>(pr->akv[b] - pk, 0);
        pq = pr->aq[b];
        pk = pr->akv[b];
      }
      numels = p.s.N1 * raw;
      scores = p.s.N1 * sum;
    }
    const int64_t need = (std::max<int64_t>({numels, scores, 0}) + 7) / 8;
    const bool bns8 = p.s.layout != FA_TND && ds.size() == 4 && S2 % 8 == 0 && ds == Shape{B, p.s.N1, S1, S2 / 8};
    const bool flat = ds.size() == 1 && ds[0] >= need;
    if (!bns8 && !flat) {
      snprintf(err, errlen,
               "[drop_mask.shape] drop_mask must be 1-D with >= ceil(numels / 8) = %ld bytes "
               "(numels=%ld)%s, got %s",
               static_cast<long>(need), static_cast<long>(numels),
               p.s.layout == FA_TND ? "" : " or (B, N1, S1, S2 // 8) with S2 % 8 == 0", ShapeStr(ds).c_str());
      return 1;
    }
    if (p.s.keep_prob < 1.0f) {
      p.drop_mask = static_cast<const uint8_t*>(a.params[r.drop_mask]);
      p.s.has_drop_mask = 1;
    }
  } else if (r.drop_mask >= 0 && p.s.keep_prob < 1.0f) {
    /* FlashAttentionScore[Grad] take the dropout bits from the caller (SPEC §0a) and have no seed: without
       them every call would draw the same bits. */
    snprintf(err, errlen,
             "[drop_mask.required] FlashAttentionScore with keep_prob=%g < 1 needs drop_mask (the "
             "caller's dropout bits, SPEC §0a); use ops.speed_fusion_attention for generated dropout",
             static_cast<double>(p.s.keep_prob));
    return 1;
  }
  /* SpeedFusionAttention[Grad]: (seed, offset) are MindSpore's generator state, handed to the kernel as
     they are and echoed in outputs 4/5. MindSpore steps offset by a constant 12 per call whatever numels
     is; fa_dropout.h keys one stream per (seed, offset) (fa_drop_key), so consecutive calls draw
     unrelated masks, not shifted copies (an additive offset would); pinned by
     tests/test_op_plugin_inputs.py. fa_forward(seed=out[4], offset=out[5]) reproduces the bits. */
  if (r.seed_t >= 0 && !a.none(r.seed_t)) {
    p.s.seed = static_cast<uint64_t>(*static_cast<const int64_t*>(a.params[r.seed_t]));
  }
  if (r.offset_t >= 0 && !a.none(r.offset_t)) {
    p.s.offset = static_cast<uint64_t>(*static_cast<const int64_t*>(a.params[r.offset_t]));
  }
  p.s.num_threads = 0;
  return 0;
}

int64_t Numels(const FaProblem& p) {
  if (p.s.layout != FA_TND) return p.s.B * p.s.N1 * p.s.S1 * p.s.S2;
  int64_t n = 0, pq = 0, pk = 0;
  for (int64_t b = 0; b < p.s.B; b++) {
    n += (p.actual_seq_qlen[b] - pq) * (p.actual_seq_kvlen[b] - pk);
    pq = p.actual_seq_qlen[b];
    pk = p.actual_seq_kvlen[b];
  }
  return n * p.s.N1;
}

/* Failures are thrown: MindSpore 2.10 catches the exception of a plugin kernel and raises RuntimeError in
 * Python with "... Error message is <what()>" (a non-zero return value only says "is 1"). */
struct PluginError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int Report(const char* op, const char* err) {
  throw PluginError(std::string("[ms_fa op plugin] ") + op + " failed: " + err);
}

template <typename F>
int Guard(const char* op, F f) {
  try {
    return f();
  } catch (const PluginError&) {
    throw;
  } catch (const std::exception& e) {
    return Report(op, e.what());
  } catch (...) {
    return Report(op, "unknown exception");
  }
}

}  // namespace

extern "C" {

bool IsKernelRegistered(const char* name) {
  if (name == nullptr) return false;
  for (int i = 0; i < kNumRegistered; i++)
    if (strcmp(kRegistered[i], name) == 0) return true;
  return false;
}

int GetRegisteredOpCount() {
  return kNumRegistered;
}

char** GetAllRegisteredOps() {
  return const_cast<char**>(kRegistered);
}

/* inputs: q k v real_shift drop_mask padding_mask attn_mask prefix actual_seq_qlen actual_seq_kvlen
 *         head_num keep_prob scale_value pre_tokens next_tokens inner_precise input_layout sparse_mode
 * outputs: softmax_max softmax_sum softmax_out attention_out                                        */
int FlashAttentionScore(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                        void* extra) {
  (void)stream;
  return Guard("FlashAttentionScore", [&]() {
    if (nparam != 22 || extra == nullptr) return Report("FlashAttentionScore", "unexpected parameter count");
    Args a{nparam, params, ndims, shapes, dtypes, static_cast<KernelInputInfo*>(extra)};
    std::vector<std::vector<uint8_t>> keep;
    for (int i : {0, 1, 2, 3, 4, 6}) MakeContiguous(&a, i, &keep);
    const Raw& r = kFasInputs;
    Problem pr;
    char err[512] = {0};
    if (Fill(a, r, &pr, err, sizeof(err)) != 0) return Report("FlashAttentionScore", err);
    ZeroFill(a, 20);
    if (fa_cpu_forward(&pr.p, params[0], params[1], params[2], params[21], static_cast<float*>(params[18]),
                       static_cast<float*>(params[19]), err, sizeof(err)) != 0)
      return Report("FlashAttentionScore", err);
    return 0;
  });
}

/* inputs: q k v dy pse drop_mask padding_mask atten_mask softmax_max softmax_sum softmax_in attention_in
 *         prefix actual_seq_qlen actual_seq_kvlen head_num keep_prob scale_value pre_tokens next_tokens
 *         inner_precise input_layout sparse_mode;  outputs: dq dk dv dpse                            */
int FlashAttentionScoreGrad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                            void* extra) {
  (void)stream;
  return Guard("FlashAttentionScoreGrad", [&]() {
    if (nparam != 27 || extra == nullptr) return Report("FlashAttentionScoreGrad", "unexpected parameter count");
    Args a{nparam, params, ndims, shapes, dtypes, static_cast<KernelInputInfo*>(extra)};
    std::vector<std::vector<uint8_t>> keep;
    for (int i : {0, 1, 2, 3, 4, 5, 7, 8, 9, 11}) MakeContiguous(&a, i, &keep);
    const Raw& r = kFasGradInputs;
    Problem pr;
    char err[512] = {0};
    if (Fill(a, r, &pr, err, sizeof(err)) != 0) return Report("FlashAttentionScoreGrad", err);
    ZeroFill(a, 26);  // dpse is not computed (as on Atlas A2)
    if (fa_cpu_backward(&pr.p, params[0], params[1], params[2], params[3], params[11],
                        static_cast<const float*>(params[8]), static_cast<const float*>(params[9]), params[23],
                        params[24], params[25], err, sizeof(err)) != 0)
      return Report("FlashAttentionScoreGrad", err);
    return 0;
  });
}

/* inputs: q k v head_num input_layout seed offset pse padding_mask atten_mask scale keep_prob pre_tokens
 *         next_tokens inner_precise prefix actual_seq_qlen actual_seq_kvlen sparse_mode gen_mask_parallel
 *         sync pse_type q_start_idx kv_start_idx
 * outputs: attention_out softmax_max softmax_sum softmax_out seed offset numels                      */
int SpeedFusionAttention(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                         void* extra) {
  (void)stream;
  return Guard("SpeedFusionAttention", [&]() {
    if (nparam != 31 || extra == nullptr) return Report("SpeedFusionAttention", "unexpected parameter count");
    Args a{nparam, params, ndims, shapes, dtypes, static_cast<KernelInputInfo*>(extra)};
    std::vector<std::vector<uint8_t>> keep;
    for (int i : {0, 1, 2, 7, 9}) MakeContiguous(&a, i, &keep);
    const Raw& r = kSfaInputs;
    Problem pr;
    char err[512] = {0};
    if (Fill(a, r, &pr, err, sizeof(err)) != 0) return Report("SpeedFusionAttention", err);
    if (fa_cpu_forward(&pr.p, params[0], params[1], params[2], params[24], static_cast<float*>(params[25]),
                       static_cast<float*>(params[26]), err, sizeof(err)) != 0)
      return Report("SpeedFusionAttention", err);
    *static_cast<int64_t*>(params[28]) = static_cast<int64_t>(pr.p.s.seed);
    *static_cast<int64_t*>(params[29]) = static_cast<int64_t>(pr.p.s.offset);
    *static_cast<int64_t*>(params[30]) = Numels(pr.p);
    return 0;
  });
}

/* inputs: q k v dy head_num input_layout pse padding_mask atten_mask softmax_max softmax_sum softmax_in
 *         attention_in scale keep_prob pre_tokens next_tokens inner_precise seed offset numels prefix
 *         actual_seq_qlen actual_seq_kvlen sparse_mode gen_mask_parallel sync pse_type q_start_idx
 *         kv_start_idx;  outputs: dq dk dv dpse                                                       */
int SpeedFusionAttentionGrad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                             void* extra) {
  (void)stream;
  return Guard("SpeedFusionAttentionGrad", [&]() {
    if (nparam != 34 || extra == nullptr) return Report("SpeedFusionAttentionGrad", "unexpected parameter count");
    Args a{nparam, params, ndims, shapes, dtypes, static_cast<KernelInputInfo*>(extra)};
    std::vector<std::vector<uint8_t>> keep;
    for (int i : {0, 1, 2, 3, 6, 8, 9, 10, 12}) MakeContiguous(&a, i, &keep);
    const Raw& r = kSfaGradInputs;
    Problem pr;
    char err[512] = {0};
    if (Fill(a, r, &pr, err, sizeof(err)) != 0) return Report("SpeedFusionAttentionGrad", err);
    ZeroFill(a, 33);  // dpse is not computed (as on Atlas A2)
    if (fa_cpu_backward(&pr.p, params[0], params[1], params[2], params[3], params[12],
                        static_cast<const float*>(params[9]), static_cast<const float*>(params[10]), params[30],
                        params[31], params[32], err, sizeof(err)) != 0)
      return Report("SpeedFusionAttentionGrad", err);
    return 0;
  });
}

}  // extern "C"
