// Selective scan on CUDA: shared pieces of the forward and backward kernels (torch-free).
//
// Design (same semantics as csrc/scan/scan_kernel.inc, whose comments give the formulas):
// - Thread layout: `LPR` lanes of a warp share one (b, d) row and each lane owns `S` consecutive
//   states n, so a warp covers 32/LPR rows and a block of kWarps warps covers RB rows, all of the
//   same (batch b, group g). Time is walked sequentially by each lane; the h recurrence lives in
//   registers, in float32 whatever the io dtype.
// - Time goes in chunks of kTC = 64 steps (the checkpoint interval). Per chunk the block loads the
//   rows' u, delta, z (and gout) and the group's B, C tiles from global memory into shared memory
//   (coalesced; the next chunk's loads are issued into registers, still in the io dtype, before
//   the current chunk is scanned), computes dt = softplus(delta + bias) once per (row, t), then
//   every lane reads dt, dt·u (broadcast within a row) and its own B[n], C[n] (4 time steps per
//   16-byte shared load).
// - y_t = Σ_n C·h needs a sum across the row's lanes: each lane keeps LPR consecutive steps' partial
//   sums and one "transpose reduction" (LPR−1 shuffles per LPR steps) leaves lane j with step j's
//   total, so lane j also produces out[t0 + j] (no per-step reduction tree). With fewer than 16
//   lanes per row the outputs go out through the chunk's row tiles, one vector store per quad.
// - The forward uses 1, 2 or 4 states per lane (N ≤ 16): more states per lane reuse dt and dt·u
//   from registers and shorten the transposes, but give fewer warps, so they are picked only where
//   the rows alone fill the GPU (scan_cuda.cpp).
// - Long sequences with few rows are split into segments of whole chunks scanned by separate
//   blocks: pass 1 scans each segment from zero (end state + Σdt), pass 2 chains the segments
//   (h_end = exp(A·Σdt)·h_start + local end), pass 3 is the ordinary scan started from the right
//   state. The backward does the same with the adjoint recurrence.
// - Backward per chunk (last to first): recompute the chunk's states from its checkpoint into
//   shared memory (every 4th; the others again in registers), then run the adjoint recurrence
//   backwards. dz needs x = y + D·u, which the forward saved (no y in the backward). Sums over n
//   (dt and u gradients) use the same transpose reduction; sums over the rows of dB/dC go through
//   shared memory (fixed order) into per-row-block partials in global memory, reduced by a second
//   kernel in fixed order: no atomics anywhere, so results are bit-identical from run to run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/io.cuh"
#include "cuda/kernels.h"

namespace wm::cuda::scan_detail {

using cuda::IO;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTC = static_cast<int>(kScanChunk);  // time steps per chunk
constexpr int kTP = kTC + 4;                        // padded row stride of shared tiles (floats)
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kQuads = kTC / 4;               // quads (4 steps) per tile row of a chunk
constexpr int kUnitRows = kThreads / kQuads;  // tile rows staged per pass of the block's threads

template <int LPR, int S>
struct Cfg {
  static_assert(LPR == 4 || LPR == 8 || LPR == 16 || LPR == 32, "lanes per row");
  static constexpr int RW = 32 / LPR;     // rows per warp
  static constexpr int RB = RW * kWarps;  // rows per block
  static constexpr int NP = LPR * S;      // padded state size
  static constexpr int ROW_QUADS = RB * (kTC / 4);
  static constexpr int ROW_UNITS = (ROW_QUADS + kThreads - 1) / kThreads;
  static constexpr int BC_QUADS = NP * (kTC / 4);
  static constexpr int BC_UNITS = (BC_QUADS + kThreads - 1) / kThreads;
  /// Whether a staging unit's tile row rr (row of the block) / n (state) lies inside the tile:
  /// true at compile time where the quads cover the tiles exactly (every N ≤ 16 layout), so that
  /// the staging has no branch there.
  __device__ static bool row_in_tile(int rr) { return ROW_QUADS % kThreads == 0 || rr < RB; }
  __device__ static bool bc_in_tile(int n) { return BC_QUADS % kThreads == 0 || n < NP; }
  // Steps per dB/dC flush in the backward: the default, and the short one (WM_SCAN_BWD_FLUSH=8,
  // N ≤ 16 layouts with 8 lanes per row) that frees shared memory for a third block per SM.
  static constexpr int TS = LPR > 16 ? LPR : 16;
  static constexpr int TS_SHORT = LPR > 8 ? TS : 8;
  /// Row stride (floats) of the row tiles: ≡ LPR (mod 32), so that the RW rows of a warp reading
  /// or writing LPR consecutive steps each fall in different banks.
  static constexpr int ROW_STRIDE = kTC + (LPR < 32 ? LPR : 4);
  /// Floats per step of the backward's dB/dC buffers ([TS][RB][NP], steps padded so that the
  /// flush's reads of neighbouring steps fall in different banks).
  static constexpr int DBC_STEP = RB * NP + (NP < 32 ? NP : 0);
  // Shared memory (floats).
  /// The forward's outputs go out through its row tiles (scan_fwd.cuh), for fewer than 16 lanes
  /// per row; its row tiles then use ROW_STRIDE, else kTP (1–2% faster with 16 lanes per row).
  static constexpr bool FWD_OUT_TILES = LPR < 16;
  static constexpr int FWD_ROW_STRIDE = FWD_OUT_TILES ? ROW_STRIDE : kTP;
  static constexpr int FWD_FLOATS = 4 * RB * FWD_ROW_STRIDE + 2 * NP * kTP;
  static constexpr int BWD_LOCAL_FLOATS = (2 * RB + NP) * kTP;
  /// Shared memory of the backward kernel (floats) for flush length ts, full or every-4th-state
  /// history: row and B/C tiles, state history, dB/dC buffers.
  static constexpr int bwd_floats(int ts, bool sub) {
    return 5 * RB * ROW_STRIDE + 2 * NP * kTP + (sub ? kTC / 4 : kTC + 1) * kThreads * S +
           2 * ts * DBC_STEP;
  }
};

// ---- math -----------------------------------------------------------------------------------

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// softplus(x) = max(x, 0) + log1p(e^−|x|) and σ(x) from the same exponential (hardware
/// approximations; log1p by its series below 1/16, where lg2 would lose relative accuracy).
__device__ __forceinline__ void softplus_sigmoid(float x, float &sp, float &sig) {
  const float e = ex2(-fabsf(x) * kLog2e);  // e^−|x| in (0, 1]
  float l;
  if (e < 0.0625f) {
    l = e * fmaf(e, fmaf(e, fmaf(e, fmaf(e, 0.2f, -0.25f), 1.f / 3.f), -0.5f), 1.f);
  } else {
    l = lg2(1.f + e) * 0.6931471805599453f;
  }
  sp = fmaxf(x, 0.f) + l;
  const float r = rcp(1.f + e);
  sig = x >= 0.f ? r : e * r;
}

/// σ(x) = 1 / (1 + e^−x) (→ 0 for very negative x: rcp(inf) = 0).
__device__ __forceinline__ float sigmoid(float x) { return rcp(1.f + ex2(-x * kLog2e)); }

template <int K>
__device__ __forceinline__ float comp(const float4 &v) {
  static_assert(K >= 0 && K < 4, "component");
  return K == 0 ? v.x : K == 1 ? v.y : K == 2 ? v.z : v.w;
}

__device__ __forceinline__ float comp(const float4 &v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

__device__ __forceinline__ float4 ld4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
__device__ __forceinline__ void st4(float *p, float4 v) { *reinterpret_cast<float4 *>(p) = v; }

/// v[j] holds this lane's partial sum for step j (j < LPR). Afterwards the lane with
/// lane % LPR == j returns the sum over the LPR lanes of v[j]. LPR−1 shuffles in all.
template <int CNT, int LPR>
__device__ __forceinline__ void transpose_level(float (&v)[LPR], int lane) {
  if constexpr (CNT > 1) {
    constexpr int half = CNT / 2;
    const bool upper = (lane & half) != 0;
#pragma unroll
    for (int i = 0; i < half; ++i) {
      const float send = upper ? v[i] : v[i + half];
      const float keep = upper ? v[i + half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, half);
    }
    transpose_level<half, LPR>(v, lane);
  }
}

template <int LPR>
__device__ __forceinline__ float transpose_reduce(float (&v)[LPR], int lane) {
  transpose_level<LPR, LPR>(v, lane);
  return v[0];
}

/// Sum over the LPR lanes of a row (butterfly: every lane gets the total, fixed order).
template <int LPR>
__device__ __forceinline__ float row_sum(float v) {
#pragma unroll
  for (int off = LPR / 2; off >= 1; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/// Row of state n in the B/C tiles: a lane's s-th states are rows s·LPR + lane, so the lanes of a
/// row read consecutive rows with one 16-byte load each (no bank conflicts; n = lane·S + s would
/// put lanes S apart in the same banks).
template <int LPR, int S>
__device__ __forceinline__ int bc_tile_row(int n) {
  return (n % S) * LPR + n / S;
}

/// *p = v where `pred`, as one predicated store: a branch around a store closes the compiler's
/// scheduling region, so per-step output stores inside the scan use this.
__device__ __forceinline__ void store_if(bool pred, float *p, float v) {
  const int on = pred;
  asm volatile("{ .reg .pred q; setp.ne.b32 q, %0, 0; @q st.global.f32 [%1], %2; }"
               :
               : "r"(on), "l"(p), "f"(v));
}
__device__ __forceinline__ void store_if(bool pred, __nv_bfloat16 *p, float v) {
  const int on = pred;
  const unsigned short raw = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  asm volatile("{ .reg .pred q; setp.ne.b32 q, %0, 0; @q st.global.b16 [%1], %2; }"
               :
               : "r"(on), "l"(p), "h"(raw));
}

/// Four consecutive time steps t..t+3 of one row (element stride `stride`), zero past `len`, as
/// loaded (IO<T>::unpack converts). `vec`: the row is aligned for a 4-element vector load and
/// stride == 1.
template <typename T>
__device__ __forceinline__ typename IO<T>::Raw4 load_quad_raw(const T *row, int64_t t, int64_t len,
                                                              int64_t stride, bool vec) {
  if (vec && t + 3 < len) return IO<T>::load_raw4(row + t);
  T v[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = t + k < len ? row[(t + k) * stride] : IO<T>::zero();
  return IO<T>::pack(v);
}

/// Stores four consecutive time steps t..t+3 of one contiguous row, skipping those past `len`.
template <typename T>
__device__ __forceinline__ void store_quad(T *row, int64_t t, int64_t len, bool vec, float4 v) {
  if (vec && t + 3 < len) {
    IO<T>::store4(row + t, v);
    return;
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (t + k < len) row[t + k] = IO<T>::from_f(comp(v, k));
  }
}

/// Where a block sits: rows [d0, d0 + rows_valid) of group g in batch b, segment seg.
template <int LPR, int S>
struct Place {
  using C = Cfg<LPR, S>;
  int64_t D, L, N, G, dpg, nrb, g, rb, b, seg, d0, bg;
  int rows_valid;
  int tid, lane, ln, r;  // r: this lane's row within the block, ln: lane within the row
  bool valid;            // r < rows_valid
  int64_t d, row;
  int64_t c_begin, c_end;
  // Staging a chunk's tiles: this thread moves quad q4 / 4 (steps q4..q4 + 3 of the chunk) of tile
  // rows ur + k·kUnitRows (rows of the block, or states of B/C), k = 0, 1, …
  int q4, ur;
  int64_t row_off;      // element offset of (row d0 + ur, t = q4) in (B, D, L)
  int64_t bc_off;       // element offset of (bg, state ur, t = q4) in (B, G, N, L)
  int64_t unit_stride;  // kUnitRows · L: from one of this thread's tile rows to the next

  __device__ explicit Place(const ScanArgs &a) {
    D = a.dim;
    L = a.len;
    N = a.dstate;
    G = a.groups;
    dpg = D / G;
    nrb = (dpg + C::RB - 1) / C::RB;
    g = blockIdx.x / nrb;
    rb = blockIdx.x % nrb;
    b = blockIdx.y;
    seg = blockIdx.z;
    d0 = g * dpg + rb * C::RB;
    bg = b * G + g;
    rows_valid = static_cast<int>(dpg - rb * C::RB < C::RB ? dpg - rb * C::RB : C::RB);
    tid = threadIdx.x;
    lane = tid & 31;
    ln = lane % LPR;
    r = (tid >> 5) * C::RW + lane / LPR;
    valid = r < rows_valid;
    d = d0 + r;
    row = b * D + d;
    c_begin = seg * a.chunks_per_seg;
    c_end = c_begin + a.chunks_per_seg < a.n_chunks ? c_begin + a.chunks_per_seg : a.n_chunks;
    q4 = 4 * (tid % kQuads);
    ur = tid / kQuads;
    row_off = (b * D + d0 + ur) * L + q4;
    bc_off = (bg * N + ur) * L + q4;
    unit_stride = kUnitRows * L;
  }
  /// State index of this lane's s-th state.
  __device__ int n_of(int s) const { return ln * S + s; }
};

template <typename T, int LPR, int S, bool kLocal, bool kDense>
__global__ void scan_fwd_kernel(const ScanArgs a);
template <typename T, int LPR, int S>
__global__ void scan_bwd_local_kernel(const ScanArgs a);
template <typename T, int LPR, int S, bool kSub, int TS>
__global__ void scan_bwd_kernel(const ScanArgs a);

/// Row blocks per group of the layout a kernel was instantiated for (scan_row_blocks; the grid's x
/// is groups × this).
template <int LPR, int S>
inline int64_t row_blocks_per_group(const ScanArgs &a) {
  static_assert(32 / LPR * kWarps == Cfg<LPR, S>::RB, "scan_row_blocks: same rows per block");
  return scan_row_blocks(ScanConfig{LPR, S}, a.dim, a.groups);
}

template <typename K>
inline cudaError_t launch(K kernel, const ScanArgs &a, int64_t blocks_x, int smem_floats,
                          cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(smem_floats) * sizeof(float);
  cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(a.batch),
                  static_cast<unsigned>(a.n_seg));
  kernel<<<grid, kThreads, smem, stream>>>(a);
  return cudaSuccess;
}

/// Calls f.template operator()<LPR, S>() for the configuration in `cfg`.
template <typename F>
inline cudaError_t with_config(ScanConfig cfg, F &&f) {
  if (cfg.lanes == 8 && cfg.states == 1) return f.template operator()<8, 1>();
  if (cfg.lanes == 16 && cfg.states == 1) return f.template operator()<16, 1>();
  if (cfg.lanes == 8 && cfg.states == 2) return f.template operator()<8, 2>();
  if (cfg.lanes == 32 && cfg.states == 1) return f.template operator()<32, 1>();
  if (cfg.lanes == 32 && cfg.states == 2) return f.template operator()<32, 2>();
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t launch_fwd(const ScanArgs &a, bool local, cudaStream_t stream);
template <typename T>
cudaError_t launch_bwd_local(const ScanArgs &a, cudaStream_t stream);
template <typename T>
cudaError_t launch_bwd(const ScanArgs &a, cudaStream_t stream);

}  // namespace wm::cuda::scan_detail
