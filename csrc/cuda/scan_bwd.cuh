// Backward selective scan kernels (see scan_common.cuh for the design). Included by the per-dtype
// instantiation files scan_bwd_f32.cu and scan_bwd_bf16.cu.
//
// Adjoint recurrence (csrc/scan/scan_kernel.inc, bwd_rows_impl), per row and state n, t = L−1..0:
//   g = C_t·gy_t + gh;  gh ← exp(dt_t·A)·g;  with gy = gout·silu(z) (gout without z)
//   dA:  Σ_t g·h_{t−1}·exp(dt_t·A)·dt_t          dB_t += g·dt_t·u_t     dC_t += gy_t·h_t
//   gu_t = gy_t·D + dt_t·Σ_n g·B_t               gdt_t = Σ_n g·h_{t−1}·exp(dt_t·A)·A + u_t·Σ_n g·B_t
//   gdelta = gdt·σ(delta + bias) with softplus;  gz = gout·x·σ(z)·(1 + z·(1 − σ(z))), x = y + D·u
//   (x as saved by the forward: the backward never recomputes y)
#pragma once

#include "cuda/scan_bwd_tiles.cuh"

namespace wm::cuda::scan_detail {

/// Segmented backward, pass 1: adjoint at each segment's start with zero adjoint at its end.
template <typename T, int LPR, int S>
__global__ void __launch_bounds__(kThreads) scan_bwd_local_kernel(const ScanArgs a) {
  using C = Cfg<LPR, S>;
  extern __shared__ float4 smem4[];
  float *s_dt = reinterpret_cast<float *>(smem4);  // [RB][kTP]
  float *s_gy = s_dt + C::RB * kTP;                 // [RB][kTP]
  float *s_C = s_gy + C::RB * kTP;                  // [NP][kTP]

  const Place<LPR, S> pl(a);
  // No earlier segment needs the first one's start adjoint.
  if (pl.seg == 0) return;
  const int64_t BD = a.batch * pl.D;
  const bool has_z = a.z != nullptr;
  float A2[S], gh[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int n = pl.n_of(s);
    A2[s] = (pl.valid && n < pl.N) ? a.A[pl.d * pl.N + n] * kLog2e : 0.f;
    gh[s] = 0.f;
  }
  BwdRows<T, LPR, S> rows(a, pl);
  BwdBC<T, LPR, S> bc;
  float dtsum = 0.f;
  if (pl.c_begin < pl.c_end) {
    rows.load(a, pl, pl.c_end - 1, false);
    bc.load(a, pl, pl.c_end - 1, false);
  }
  for (int64_t c = pl.c_end - 1; c >= pl.c_begin; --c) {
    __syncthreads();
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      if (rows.in_tile(pl, k)) {
        const int rr = pl.ur + k * kUnitRows;
        const bool row_ok = rr < pl.rows_valid;
        const int64_t left = pl.L - c * kTC - pl.q4;
        const float bias = rows.bias(a, pl, k);
        float4 u4, d4, z4, g4;
        rows.unpack(k, u4, d4, z4, g4);
        float dt[4], gy[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float sd, gzf;
          derive(comp(d4, e) + bias, comp(z4, e), comp(g4, e), a.softplus, has_z,
                 row_ok && e < left, dt[e], sd, gy[e], gzf);
        }
        const int o = rr * kTP + pl.q4;
        st4(s_dt + o, make_float4(dt[0], dt[1], dt[2], dt[3]));
        st4(s_gy + o, make_float4(gy[0], gy[1], gy[2], gy[3]));
      }
    }
    bc.store(pl, nullptr, s_C);
    __syncthreads();
    if (c > pl.c_begin) {
      rows.load(a, pl, c - 1, false);
      bc.load(a, pl, c - 1, false);
    }
#pragma unroll 1
    for (int t0 = kTC - 4; t0 >= 0; t0 -= 4) {
      const float4 dt4 = ld4(s_dt + pl.r * kTP + t0);
      const float4 gy4 = ld4(s_gy + pl.r * kTP + t0);
      float4 c4[S];
#pragma unroll
      for (int s = 0; s < S; ++s) c4[s] = ld4(s_C + (s * LPR + pl.ln) * kTP + t0);
#pragma unroll
      for (int k = 3; k >= 0; --k) {
        const float dt = comp(dt4, k), gy = comp(gy4, k);
        dtsum += dt;
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const float g = fmaf(comp(c4[s], k), gy, gh[s]);
          gh[s] = g * ex2(dt * A2[s]);
        }
      }
    }
  }
  if (pl.valid) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int n = pl.n_of(s);
      if (n < pl.N) a.seg_state[(pl.seg * BD + pl.row) * pl.N + n] = gh[s];
    }
    if (pl.ln == 0) a.seg_dtsum[pl.seg * BD + pl.row] = dtsum;
  }
}

/// A lane's S consecutive values (its states) to / from shared memory: one 8-byte access for
/// S = 2 (p 8-byte aligned). Two scalar accesses at a lane stride of 2 floats also conflicted
/// (2-way).
template <int S>
__device__ __forceinline__ void store_states(float *p, const float (&v)[S]) {
  if constexpr (S == 2) {
    *reinterpret_cast<float2 *>(p) = make_float2(v[0], v[1]);
  } else {
#pragma unroll
    for (int s = 0; s < S; ++s) p[s] = v[s];
  }
}
template <int S>
__device__ __forceinline__ void load_states(const float *p, float (&v)[S]) {
  if constexpr (S == 2) {
    const float2 x = *reinterpret_cast<const float2 *>(p);
    v[0] = x.x;
    v[1] = x.y;
  } else {
#pragma unroll
    for (int s = 0; s < S; ++s) v[s] = p[s];
  }
}

/// Blocks per SM the backward kernel is compiled for (registers ≤ 65536 / (128 · blocks)): what
/// its shared memory allows for the N ≤ 16 layouts; no cap for 32 lanes per row (N > 16).
constexpr int bwd_min_blocks(int lanes, int states, bool sub, int ts) {
  return lanes == 32 ? 1 : states == 1 ? (sub ? 4 : 3) : (sub ? (ts <= 8 ? 3 : 2) : 1);
}

/// The backward scan proper. kSub: the state history keeps every 4th state (the states inside a
/// group of 4 steps are recomputed in registers during the adjoint sweep: 4× less shared memory);
/// else every state of the chunk. TS: steps per dB/dC flush.
template <typename T, int LPR, int S, bool kSub, int TS>
__global__ void __launch_bounds__(kThreads, bwd_min_blocks(LPR, S, kSub, TS))
    scan_bwd_kernel(const ScanArgs a) {
  using C = Cfg<LPR, S>;
  constexpr int HS = kThreads * S;  // row stride of the state history
  constexpr int HROWS = kSub ? kTC / 4 : kTC + 1;
  extern __shared__ float4 smem4[];
  constexpr int RP = C::ROW_STRIDE;
  float *s_u = reinterpret_cast<float *>(smem4);  // [RB][RP] each
  float *s_sd = s_u + C::RB * RP;                 // σ(delta + bias)
  float *s_dt = s_sd + C::RB * RP;
  float *s_du = s_dt + C::RB * RP;
  float *s_gy = s_du + C::RB * RP;
  float *s_B = s_gy + C::RB * RP;   // [NP][kTP], rows bc_tile_row(n)
  float *s_C = s_B + C::NP * kTP;   // [NP][kTP]
  // kSub: s_h[j] = state before step 4j (j < kTC/4); else s_h[t + 1] = state after step t.
  float *s_h = s_C + C::NP * kTP;
  float *s_dB = s_h + HROWS * HS;  // [TS][RB][NP] (step stride DBC_STEP)
  float *s_dC = s_dB + TS * C::DBC_STEP;

  const Place<LPR, S> pl(a);
  const int64_t BD = a.batch * pl.D;
  const bool has_z = a.z != nullptr;
  T *gu_row = static_cast<T *>(a.gu) + pl.row * pl.L;
  T *gdelta_row = static_cast<T *>(a.gdelta) + pl.row * pl.L;
  T *gz = static_cast<T *>(a.gz);

  float A2[S], Af[S], gh[S], gA[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int n = pl.n_of(s);
    const bool ok = pl.valid && n < pl.N;
    Af[s] = ok ? a.A[pl.d * pl.N + n] : 0.f;
    A2[s] = Af[s] * kLog2e;
    float g0 = 0.f;
    if (ok) {
      if (a.n_seg > 1) {
        g0 = a.seg_state[(pl.seg * BD + pl.row) * pl.N + n];
      } else if (a.glast) {
        g0 = a.glast[pl.row * pl.N + n];
      }
    }
    gh[s] = g0;
    gA[s] = 0.f;
  }
  const float dskip = (pl.valid && a.D_skip) ? a.D_skip[pl.d] : 0.f;
  float gD_acc = 0.f, gb_acc = 0.f;

  using Flush = FlushShare<LPR, S, TS>;
  const Flush flush(a, pl);

  BwdRows<T, LPR, S> rows(a, pl);
  BwdBC<T, LPR, S> bc;
  // Each chunk's checkpoint is loaded a chunk ahead, before the staging barrier. Loaded right
  // before Phase A, it shared a scoreboard with the next chunk's prefetch, so waiting for it waited
  // for those loads too (BENCHMARKS.md, fifth session).
  float ck[S];
  auto load_ckpt = [&](int64_t c) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int n = pl.n_of(s);
      ck[s] = (pl.valid && n < pl.N) ? a.ckpt[(pl.row * a.n_chunks + c) * pl.N + n] : 0.f;
    }
  };
  if (pl.c_begin < pl.c_end) {
    rows.load(a, pl, pl.c_end - 1, true);
    bc.load(a, pl, pl.c_end - 1, true);
    load_ckpt(pl.c_end - 1);
  }
  for (int64_t c = pl.c_end - 1; c >= pl.c_begin; --c) {
    __syncthreads();
    float4 gz4[C::ROW_UNITS];  // gz = gzf·x of this thread's quads, stored after the staging
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      if (rows.in_tile(pl, k)) {
        const int rr = pl.ur + k * kUnitRows;
        const bool row_ok = rr < pl.rows_valid;
        const int64_t left = pl.L - c * kTC - pl.q4;
        const float bias = rows.bias(a, pl, k);
        float4 u4, d4, z4, g4;
        rows.unpack(k, u4, d4, z4, g4);
        float dt[4], sd[4], gy[4], du[4], gzf[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          derive(comp(d4, e) + bias, comp(z4, e), comp(g4, e), a.softplus, has_z,
                 row_ok && e < left, dt[e], sd[e], gy[e], gzf[e]);
          du[e] = dt[e] * comp(u4, e);
        }
        const float4 x = IO<T>::unpack(rows.px[k]);
        gz4[k] = make_float4(gzf[0] * x.x, gzf[1] * x.y, gzf[2] * x.z, gzf[3] * x.w);
        const int o = rr * RP + pl.q4;
        st4(s_u + o, u4);
        st4(s_sd + o, make_float4(sd[0], sd[1], sd[2], sd[3]));
        st4(s_dt + o, make_float4(dt[0], dt[1], dt[2], dt[3]));
        st4(s_du + o, make_float4(du[0], du[1], du[2], du[3]));
        st4(s_gy + o, make_float4(gy[0], gy[1], gy[2], gy[3]));
      }
    }
    bc.store(pl, s_B, s_C);
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      if (has_z && pl.ur + k * kUnitRows < pl.rows_valid) {
        const int64_t go = pl.row_off + k * pl.unit_stride;
        store_quad(gz + go, c * kTC, pl.L - pl.q4, a.vec, gz4[k]);
      }
    }
    float h[S];
#pragma unroll
    for (int s = 0; s < S; ++s) h[s] = ck[s];
    if (c > pl.c_begin) load_ckpt(c - 1);
    __syncthreads();
    if (c > pl.c_begin) {
      rows.load(a, pl, c - 1, true);
      bc.load(a, pl, c - 1, true);
    }

    // Phase A: recompute the chunk's state history from the checkpoint.
#pragma unroll
    for (int s = 0; s < S; ++s) {
      if (!kSub) s_h[pl.tid * S + s] = h[s];
    }
#pragma unroll 2
    for (int t0 = 0; t0 < kTC; t0 += 4) {
      const float4 dt4 = ld4(s_dt + pl.r * RP + t0);
      const float4 du4 = ld4(s_du + pl.r * RP + t0);
      float4 b4[S];
#pragma unroll
      for (int s = 0; s < S; ++s) b4[s] = ld4(s_B + (s * LPR + pl.ln) * kTP + t0);
      if (kSub) store_states<S>(s_h + (t0 / 4) * HS + pl.tid * S, h);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
          h[s] = fmaf(ex2(comp(dt4, k) * A2[s]), h[s], comp(du4, k) * comp(b4[s], k));
          if (!kSub) s_h[(t0 + k + 1) * HS + pl.tid * S + s] = h[s];
        }
      }
    }

    // Phase C: the adjoint recurrence backwards through the chunk.
    float hcur[S];
#pragma unroll
    for (int s = 0; s < S; ++s) hcur[s] = kSub ? 0.f : s_h[kTC * HS + pl.tid * S + s];
#pragma unroll 1
    for (int grp = kTC / LPR - 1; grp >= 0; --grp) {
      float qdt[LPR], qu[LPR];
#pragma unroll
      for (int j0 = LPR - 4; j0 >= 0; j0 -= 4) {
        const int t0 = grp * LPR + j0;
        const float4 dt4 = ld4(s_dt + pl.r * RP + t0);
        const float4 du4 = ld4(s_du + pl.r * RP + t0);
        const float4 gy4 = ld4(s_gy + pl.r * RP + t0);
        float4 b4[S], c4[S];
        // kSub: the group's decays and states, recomputed from the state before step t0.
        float dAq[4][S], hq[5][S];
        if (kSub) load_states<S>(s_h + (t0 / 4) * HS + pl.tid * S, hq[0]);
#pragma unroll
        for (int s = 0; s < S; ++s) {
          b4[s] = ld4(s_B + (s * LPR + pl.ln) * kTP + t0);
          c4[s] = ld4(s_C + (s * LPR + pl.ln) * kTP + t0);
          if (kSub) {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              dAq[k][s] = ex2(comp(dt4, k) * A2[s]);
              hq[k + 1][s] = fmaf(dAq[k][s], hq[k][s], comp(du4, k) * comp(b4[s], k));
            }
          }
        }
#pragma unroll
        for (int k = 3; k >= 0; --k) {
          const int t = t0 + k;
          const float dt = comp(dt4, k), du = comp(du4, k), gy = comp(gy4, k);
          float sdt = 0.f, su = 0.f;
          // This lane's states n_of(0).. are consecutive: its dB/dC values go out in one store.
          float *dB = s_dB + (t % TS) * C::DBC_STEP + pl.r * C::NP + pl.n_of(0);
          float *dC = s_dC + (t % TS) * C::DBC_STEP + pl.r * C::NP + pl.n_of(0);
          float vB[S], vC[S];
#pragma unroll
          for (int s = 0; s < S; ++s) {
            if (kSub) hcur[s] = hq[k + 1][s];
            const float hprev = kSub ? hq[k][s] : s_h[t * HS + pl.tid * S + s];
            const float dA = kSub ? dAq[k][s] : ex2(dt * A2[s]);
            const float g = fmaf(comp(c4[s], k), gy, gh[s]);
            const float ga = g * hprev * dA;
            gA[s] = fmaf(ga, dt, gA[s]);
            sdt = fmaf(ga, Af[s], sdt);
            su = fmaf(g, comp(b4[s], k), su);
            vB[s] = g * du;
            vC[s] = gy * hcur[s];
            gh[s] = g * dA;
            hcur[s] = hprev;
          }
          store_states<S>(dB, vB);
          store_states<S>(dC, vC);
          qdt[j0 + k] = sdt;
          qu[j0 + k] = su;
        }
      }
      const float Qdt = transpose_reduce<LPR>(qdt, pl.lane);
      const float Qu = transpose_reduce<LPR>(qu, pl.lane);
      {
        const int t = grp * LPR + pl.ln;
        const int64_t tg = c * kTC + t;
        const bool ok = pl.valid && tg < pl.L;  // predicated: no branch inside the group
        const int o = pl.r * RP + t;
        const float gyv = s_gy[o], dtv = s_dt[o], uv = s_u[o];
        const float gd = fmaf(Qu, uv, Qdt) * s_sd[o];
        store_if(ok, gu_row + tg, fmaf(gyv, dskip, Qu * dtv));
        store_if(ok, gdelta_row + tg, gd);
        gD_acc = ok ? fmaf(gyv, uv, gD_acc) : gD_acc;
        gb_acc += ok ? gd : 0.f;
      }
      if ((grp * LPR) % TS == 0) {
        // Flush steps [t_lo, t_lo + TS): sum over the block's rows (fixed order), written straight
        // into this row block's partials (t, n) rows. The second barrier keeps the next steps'
        // dB/dC from overwriting the buffers before everyone has read them.
        const int64_t tc = c * kTC + grp * LPR;
        __syncthreads();
#pragma unroll
        for (int i = 0; i < Flush::kItems; ++i) {
          const int item = flush.first + i * Flush::kItemStep;  // (which, tt) of this share
          if (Flush::kItems * Flush::kItemStep > 2 * TS && item >= 2 * TS) break;
          const int tt = item % TS, which = item / TS;
          if (tc + tt >= pl.L) continue;
          const float *buf = (which ? s_dC : s_dB) + tt * C::DBC_STEP + flush.col;
          typename Flush::Vec sum = *reinterpret_cast<const typename Flush::Vec *>(buf);
#pragma unroll
          for (int rr = 1; rr < C::RB; ++rr) {
            const auto v = *reinterpret_cast<const typename Flush::Vec *>(buf + rr * C::NP);
            sum.x += v.x;
            sum.y += v.y;
            if constexpr (Flush::W == 4) {
              sum.z += v.z;
              sum.w += v.w;
            }
          }
          *reinterpret_cast<typename Flush::Vec *>(flush.dst + (which ? a.dbc_stride : 0) +
                                                   (tc + tt) * C::NP) = sum;
        }
        __syncthreads();
      }
    }
  }

  const float gD_row = row_sum<LPR>(gD_acc), gb_row = row_sum<LPR>(gb_acc);
  if (pl.valid) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int n = pl.n_of(s);
      if (n >= pl.N) continue;
      a.gA_part[(pl.seg * BD + pl.row) * pl.N + n] = gA[s];
      if (pl.seg == 0 && a.gh0) a.gh0[pl.row * pl.N + n] = gh[s];
    }
    if (pl.ln == 0) {
      if (a.gD_part) a.gD_part[pl.seg * BD + pl.row] = gD_row;
      if (a.gbias_part) a.gbias_part[pl.seg * BD + pl.row] = gb_row;
    }
  }
}

template <typename T>
struct BwdLocalLauncher {
  const ScanArgs &a;
  cudaStream_t stream;
  template <int LPR, int S>
  cudaError_t operator()() const {
    const int64_t bx = a.groups * row_blocks_per_group<LPR, S>(a);
    return launch(scan_bwd_local_kernel<T, LPR, S>, a, bx, Cfg<LPR, S>::BWD_LOCAL_FLOATS, stream);
  }
};

template <typename T>
struct BwdLauncher {
  const ScanArgs &a;
  cudaStream_t stream;
  template <int LPR, int S>
  cudaError_t operator()() const {
    using C = Cfg<LPR, S>;
    const int64_t bx = a.groups * row_blocks_per_group<LPR, S>(a);
    if (a.bwd_full_history) {
      return launch(scan_bwd_kernel<T, LPR, S, false, C::TS>, a, bx, C::bwd_floats(C::TS, false),
                    stream);
    }
    if (a.bwd_short_flush && C::TS_SHORT != C::TS) {
      return launch(scan_bwd_kernel<T, LPR, S, true, C::TS_SHORT>, a, bx,
                    C::bwd_floats(C::TS_SHORT, true), stream);
    }
    return launch(scan_bwd_kernel<T, LPR, S, true, C::TS>, a, bx, C::bwd_floats(C::TS, true),
                  stream);
  }
};

template <typename T>
cudaError_t launch_bwd_local(const ScanArgs &a, cudaStream_t stream) {
  return with_config(a.cfg, BwdLocalLauncher<T>{a, stream});
}

template <typename T>
cudaError_t launch_bwd(const ScanArgs &a, cudaStream_t stream) {
  return with_config(a.cfg, BwdLauncher<T>{a, stream});
}

}  // namespace wm::cuda::scan_detail
