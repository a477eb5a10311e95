// The backward scan's per-chunk pieces shared by its two kernels (scan_bwd.cuh): the staged row
// and B/C tiles, the per-(row, t) derived values, and each thread's share of a dB/dC flush.
#pragma once

#include <type_traits>

#include "cuda/scan_common.cuh"

namespace wm::cuda::scan_detail {

/// The per-row tiles of the backward: raw loads of one chunk (this thread's quads, see Place, in
/// the io dtype until used), and what the kernels derive from them. Used by both backward kernels.
template <typename T, int LPR, int S>
struct BwdRows {
  using C = Cfg<LPR, S>;
  using Raw = typename IO<T>::Raw4;
  // px: x = y + D·u as the forward saved it (for dz; the main kernel, with z only).
  Raw pu[C::ROW_UNITS], pd[C::ROW_UNITS], pz[C::ROW_UNITS], pg[C::ROW_UNITS], px[C::ROW_UNITS];
  // gout (any strides): element offset of this thread's first quad (row d0 + ur, t = q4), and
  // from one of its tile rows to the next.
  int64_t g_off = 0, g_unit = 0;

  __device__ BwdRows(const ScanArgs &a, const Place<LPR, S> &pl) {
    if (a.gout) {
      g_off = pl.b * a.gout_stride[0] + (pl.d0 + pl.ur) * a.gout_stride[1] +
              pl.q4 * a.gout_stride[2];
      g_unit = kUnitRows * a.gout_stride[1];
    }
  }
  /// Unit k's quads as float32: u, delta, z, gout.
  __device__ void unpack(int k, float4 &u, float4 &d, float4 &z, float4 &g) const {
    u = IO<T>::unpack(pu[k]);
    d = IO<T>::unpack(pd[k]);
    z = IO<T>::unpack(pz[k]);
    g = IO<T>::unpack(pg[k]);
  }
  /// Whether unit k covers a row of the tile (rows past rows_valid are zero).
  __device__ static bool in_tile(const Place<LPR, S> &pl, int k) {
    return C::row_in_tile(pl.ur + k * kUnitRows);
  }
  /// delta_bias of unit k's row (0 without).
  __device__ static float bias(const ScanArgs &a, const Place<LPR, S> &pl, int k) {
    const int rr = pl.ur + k * kUnitRows;
    return (rr < pl.rows_valid && a.bias) ? a.bias[pl.d0 + rr] : 0.f;
  }

  /// Chunk c's quads into the prefetch registers; u and x only for the main kernel (`main`). x is
  /// prefetched too: loaded where dz is computed, its latency was 7% of the backward's stall
  /// samples at (16, 128, 16384) bf16 (eighth session).
  __device__ void load(const ScanArgs &a, const Place<LPR, S> &pl, int64_t c, bool main) {
    const T *u = static_cast<const T *>(a.u);
    const T *xs = static_cast<const T *>(a.x);
    const T *delta = static_cast<const T *>(a.delta);
    const T *zp = static_cast<const T *>(a.z);
    const T *gout = static_cast<const T *>(a.gout);
    const int64_t t = c * kTC, len = pl.L - pl.q4;
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      pu[k] = pd[k] = pz[k] = pg[k] = px[k] = IO<T>::raw_zero();
      if (pl.ur + k * kUnitRows < pl.rows_valid) {
        const int64_t o = pl.row_off + k * pl.unit_stride;
        if (main) pu[k] = load_quad_raw(u + o, t, len, 1, a.vec);
        pd[k] = load_quad_raw(delta + o, t, len, 1, a.vec);
        if (zp) pz[k] = load_quad_raw(zp + o, t, len, 1, a.vec);
        if (main && zp) px[k] = load_quad_raw(xs + o, t, len, 1, a.vec);
        if (gout) {
          pg[k] = load_quad_raw(gout + g_off + k * g_unit, t, len, a.gout_stride[2], a.gout_vec);
        }
      }
    }
  }
};

/// Loads the group's C (and B) tile of one chunk into registers / shared memory.
template <typename T, int LPR, int S>
struct BwdBC {
  using C = Cfg<LPR, S>;
  typename IO<T>::Raw4 pB[C::BC_UNITS], pC[C::BC_UNITS];

  __device__ void load(const ScanArgs &a, const Place<LPR, S> &pl, int64_t c, bool need_b) {
    const int64_t t = c * kTC, len = pl.L - pl.q4;
#pragma unroll
    for (int k = 0; k < C::BC_UNITS; ++k) {
      pB[k] = pC[k] = IO<T>::raw_zero();
      if (pl.ur + k * kUnitRows < pl.N) {
        const int64_t o = pl.bc_off + k * pl.unit_stride;
        if (need_b) pB[k] = load_quad_raw(static_cast<const T *>(a.Bm) + o, t, len, 1, a.vec);
        pC[k] = load_quad_raw(static_cast<const T *>(a.Cm) + o, t, len, 1, a.vec);
      }
    }
  }
  __device__ void store(const Place<LPR, S> &pl, float *s_B, float *s_C) const {
#pragma unroll
    for (int k = 0; k < C::BC_UNITS; ++k) {
      const int n = pl.ur + k * kUnitRows;
      if (C::bc_in_tile(n)) {
        const int row = bc_tile_row<LPR, S>(n);
        if (s_B) st4(s_B + row * kTP + pl.q4, IO<T>::unpack(pB[k]));
        st4(s_C + row * kTP + pl.q4, IO<T>::unpack(pC[k]));
      }
    }
  }
};

/// Derived per-(row, t) values: dt, σ(delta + bias) (1 without softplus), gy = gout·silu(z) (gout
/// without z) and gzf = gout·σ(z)·(1 + z·(1 − σ(z))), so that dz = gzf·(y + D·u). Branch-free (the
/// flags select), so that a thread's four steps interleave (as in the forward's staging).
__device__ __forceinline__ void derive(float delta_b, float z, float go, bool softplus, bool has_z,
                                       bool in, float &dt, float &sd, float &gy, float &gzf) {
  float sp, sig;
  softplus_sigmoid(delta_b, sp, sig);
  dt = in ? (softplus ? sp : delta_b) : 0.f;
  sd = softplus ? sig : 1.f;
  const float sz = has_z ? sigmoid(z) : 1.f;
  gy = in ? (has_z ? go * z * sz : go) : 0.f;
  gzf = go * sz * (1.f + z * (1.f - sz));
}

/// This thread's share of a dB/dC flush: W consecutive states (columns `col`..col + W − 1 of the
/// block's [RB][NP] rows) of the steps items first, first + kItemStep, … of 2·TS (dB steps, then
/// dC steps). W = 4, or 2 where that keeps every thread busy.
template <int LPR, int S, int TS>
struct FlushShare {
  using C = Cfg<LPR, S>;
  static constexpr int W = 2 * (C::NP / 4) * TS >= kThreads ? 4 : 2;
  static constexpr int NW = C::NP / W;
  static_assert(kThreads % NW == 0, "a thread's columns are the same for all its items");
  static constexpr int kItemStep = kThreads / NW;
  static constexpr int kItems = (2 * TS + kItemStep - 1) / kItemStep;
  using Vec = std::conditional_t<W == 4, float4, float2>;
  int col, first;
  float *dst;  // this row block's partials at (dB, t = 0, column col)
  __device__ FlushShare(const ScanArgs &a, const Place<LPR, S> &pl)
      : col(W * (pl.tid % NW)),
        first(pl.tid / NW),
        dst(a.dbc_part + (pl.rb * a.batch * pl.G + pl.bg) * pl.L * C::NP + col) {}
};

}  // namespace wm::cuda::scan_detail
