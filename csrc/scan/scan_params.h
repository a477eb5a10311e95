// Raw-pointer views of the selective scan's tensors, shared by the ATen driver (scan_cpu.cpp) and
// the torch-free CPU kernels (scan_kernel.inc, compiled twice: AVX2+FMA and generic).
//
// Layout (all contiguous). A "row" is one (batch b, channel d) pair, row = b·D + d.
//   u, delta, z, out        (B, D, L)
//   A                       (D, N)
//   Bt, Ct                  (B, G, L, N)   B and C transposed so a time step's N values are adjacent
//   D_skip, delta_bias      (D)
//   h0, last                (B, D, N)
//   ckpt                    (B, D, n_chunks, N)  state before each chunk of kChunk steps
#pragma once

#include <cstdint>

namespace wm::scan {

/// Time steps per chunk: the backward pass recomputes states chunk by chunk from checkpoints.
constexpr int64_t kChunk = 64;

inline int64_t n_chunks(int64_t len) { return (len + kChunk - 1) / kChunk; }

template <typename T>
struct FwdParams {
  int64_t batch, dim, len, dstate, groups;
  bool softplus;
  const T *u, *delta, *A, *Bt, *Ct;
  const T *D_skip, *z, *delta_bias, *h0;  // optional (nullptr)
  T *out, *last;
  T *ckpt;  // optional: written when the backward pass will need it
};

template <typename T>
struct BwdParams {
  FwdParams<T> f;  // inputs as in the forward pass; f.ckpt must be filled, f.out/f.last unused
  const T *gout;   // (B, D, L) with strides gout_stride (an expanded gradient needs no copy)
  int64_t gout_stride[3];
  const T *glast;  // (B, D, N), optional
  T *gu, *gdelta;  // (B, D, L)
  T *gz;           // (B, D, L), when f.z
  T *gA_rows;      // (B, D, N): per-row partial sums, reduced over B by the driver
  T *gD_rows;      // (B, D), when f.D_skip
  T *gbias_rows;   // (B, D), when f.delta_bias
  T *gh0;          // (B, D, N), when f.h0
  // Accumulators for dB, dC (transposed layout) covering batches [acc_b0, acc_b0 + nb): rows of
  // several channels add into the same (b, g) slice, so each worker owns a private copy.
  T *gBt_acc, *gCt_acc;
  int64_t acc_b0;
};

}  // namespace wm::scan
