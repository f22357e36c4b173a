/* twin_main.cpp -- runs MsFaFlashAttention's kernel in Ascend C's CPU-twin mode (ICPU_RUN_KF) on one call
 * written to a directory by st/test_ascend_c_op.py (L1: needs the CANN toolkit's tikicpulib; not run
 * on machines without it).
 *
 *   ms_fa_twin DIR      DIR holds query.bin key.bin value.bin pse.bin drop_mask.bin atten_mask.bin
 *                       meta.bin (the int64 meta row) and sizes.txt (bytes of attention_out and of one
 *                       statistics output); writes attention_out.bin softmax_max.bin softmax_sum.bin
 *   ms_fa_twin DIR grad the backward: DIR also holds dy.bin and the forward's attention_out.bin,
 *                       softmax_max.bin, softmax_sum.bin; sizes.txt holds the bytes of dq, dk, dv;
 *                       writes dq.bin dk.bin dv.bin
 *
 * The host part is the op's own: fa_meta_decode, fa_kernel_params_fill, fa_cube_tilings (what the
 * TilingFunc does, without the TilingContext). Two blocks = two cube + four vector cores.
 */
#include <stdint.h>
#include <string.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fa_cube_tiling.h"
#include "fa_kernel_params_fill.h"
#include "fa_meta.h"
#include "ms_fa_flash_attention_tiling.h"
#include "tikicpulib.h"

extern "C" __global__ __aicore__ void ms_fa_flash_attention(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR pse,
                                                            GM_ADDR drop_mask, GM_ADDR atten_mask, GM_ADDR meta,
                                                            GM_ADDR attention_out, GM_ADDR softmax_max,
                                                            GM_ADDR softmax_sum, GM_ADDR workspace, GM_ADDR tiling);
extern "C" __global__ __aicore__ void ms_fa_flash_attention_grad(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR dy,
                                                                 GM_ADDR pse, GM_ADDR drop_mask, GM_ADDR atten_mask,
                                                                 GM_ADDR softmax_max, GM_ADDR softmax_sum,
                                                                 GM_ADDR attention_out, GM_ADDR meta, GM_ADDR dq,
                                                                 GM_ADDR dk, GM_ADDR dv, GM_ADDR workspace,
                                                                 GM_ADDR tiling);

namespace {

constexpr uint32_t kBlocks = 2;
constexpr size_t kSysWorkspace = 16 * 1024 * 1024; /* the Matmul API's system workspace */

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

uint8_t* ToGm(const std::vector<uint8_t>& v, size_t at_least) {
  const size_t n = v.size() > at_least ? v.size() : at_least;
  auto* p = static_cast<uint8_t*>(AscendC::GmAlloc(n > 0 ? n : 32));
  if (!v.empty()) memcpy(p, v.data(), v.size());
  return p;
}

void WriteFile(const std::string& path, const uint8_t* p, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
}

}  // namespace

/* the backward on the files of DIR; returns the process status */
int RunGrad(const std::string& dir, const FaProblem& prob) {
  char err[256];
  size_t dq_bytes = 0, dk_bytes = 0, dv_bytes = 0;
  {
    std::ifstream s(dir + "/sizes.txt");
    s >> dq_bytes >> dk_bytes >> dv_bytes;
  }
  auto* td =
      reinterpret_cast<MsFaFlashAttentionGradTilingData*>(AscendC::GmAlloc(sizeof(MsFaFlashAttentionGradTilingData)));
  memset(td, 0, sizeof(*td));
  std::vector<int64_t> lists(6 * static_cast<size_t>(prob.s.B > 1 ? prob.s.B : 1));
  const int fill = fa_kernel_params_fill(&prob, 2 * kBlocks, &td->params, lists.data(), err, sizeof(err), 1);
  fa_kernel_lists_clear(&td->params); /* as the TilingFunc: the kernel computes its lists from meta */
  if (fill != FA_FILL_OK) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (!td->params.zero_all) {
    matmul_tiling::MatmulApiTiling mm1, mm2, mm3;
    if (!fa_cube_tilings_grad(mm1, mm2, mm3, td->params, td->mm_abt, td->mm_atb, td->mm_ab)) {
      fprintf(stderr, "no Matmul tiling\n");
      return 1;
    }
  }
  std::vector<uint8_t*> in;
  for (const char* name : {"query", "key", "value", "dy", "pse", "drop_mask", "atten_mask", "softmax_max",
                           "softmax_sum", "attention_out", "meta"})
    in.push_back(ToGm(ReadFile(dir + "/" + name + ".bin"), 32));
  uint8_t* dq = ToGm({}, dq_bytes);
  uint8_t* dk = ToGm({}, dk_bytes);
  uint8_t* dv = ToGm({}, dv_bytes);
  uint8_t* ws = ToGm({}, kSysWorkspace + static_cast<size_t>(td->params.tiling.workspace_bytes));
  AscendC::SetKernelMode(KernelMode::MIX_MODE);
  ICPU_RUN_KF(ms_fa_flash_attention_grad, kBlocks, in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], in[9],
              in[10], dq, dk, dv, ws, reinterpret_cast<uint8_t*>(td));
  WriteFile(dir + "/dq.bin", dq, dq_bytes);
  WriteFile(dir + "/dk.bin", dk, dk_bytes);
  WriteFile(dir + "/dv.bin", dv, dv_bytes);
  for (uint8_t* p : in) AscendC::GmFree(p);
  for (uint8_t* p : {dq, dk, dv, ws}) AscendC::GmFree(p);
  AscendC::GmFree(td);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 3 && std::string(argv[2]) == "grad")) {
    fprintf(stderr, "usage: ms_fa_twin DIR [grad]\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<uint8_t> meta = ReadFile(dir + "/meta.bin");
  size_t out_bytes = 0, stat_bytes = 0;
  {
    std::ifstream s(dir + "/sizes.txt");
    s >> out_bytes >> stat_bytes;
  }
  FaProblem prob;
  char err[256];
  if (fa_meta_decode(reinterpret_cast<const int64_t*>(meta.data()), static_cast<int64_t>(meta.size() / 8), &prob, err,
                     sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (argc == 3) return RunGrad(dir, prob);
  auto* td = reinterpret_cast<MsFaFlashAttentionTilingData*>(AscendC::GmAlloc(sizeof(MsFaFlashAttentionTilingData)));
  memset(td, 0, sizeof(*td));
  std::vector<int64_t> lists(6 * static_cast<size_t>(prob.s.B > 1 ? prob.s.B : 1));
  const int fill = fa_kernel_params_fill(&prob, 2 * kBlocks, &td->params, lists.data(), err, sizeof(err));
  fa_kernel_lists_clear(&td->params); /* as the TilingFunc: the kernel computes its lists from meta */
  if (fill != FA_FILL_OK) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (!td->params.zero_all) {
    matmul_tiling::MatmulApiTiling mm1, mm2;
    if (!fa_cube_tilings(mm1, mm2, td->params, td->bmm1, td->bmm2)) {
      fprintf(stderr, "no Matmul tiling\n");
      return 1;
    }
  }
  uint8_t* q = ToGm(ReadFile(dir + "/query.bin"), 0);
  uint8_t* k = ToGm(ReadFile(dir + "/key.bin"), 0);
  uint8_t* v = ToGm(ReadFile(dir + "/value.bin"), 0);
  uint8_t* pse = ToGm(ReadFile(dir + "/pse.bin"), 32);
  uint8_t* dm = ToGm(ReadFile(dir + "/drop_mask.bin"), 32);
  uint8_t* am = ToGm(ReadFile(dir + "/atten_mask.bin"), 32);
  uint8_t* mt = ToGm(meta, 0);
  uint8_t* out = ToGm({}, out_bytes);
  uint8_t* smax = ToGm({}, stat_bytes);
  uint8_t* ssum = ToGm({}, stat_bytes);
  uint8_t* ws = ToGm({}, kSysWorkspace + static_cast<size_t>(td->params.tiling.workspace_bytes));
  AscendC::SetKernelMode(KernelMode::MIX_MODE);
  ICPU_RUN_KF(ms_fa_flash_attention, kBlocks, q, k, v, pse, dm, am, mt, out, smax, ssum, ws,
              reinterpret_cast<uint8_t*>(td));
  WriteFile(dir + "/attention_out.bin", out, out_bytes);
  WriteFile(dir + "/softmax_max.bin", smax, stat_bytes);
  WriteFile(dir + "/softmax_sum.bin", ssum, stat_bytes);
  for (uint8_t* p : {q, k, v, pse, dm, am, mt, out, smax, ssum, ws}) AscendC::GmFree(p);
  AscendC::GmFree(td);
  return 0;
}
