// Forward selective scan kernels (see scan_common.cuh for the design). Included by the per-dtype
// instantiation files scan_fwd_f32.cu and scan_fwd_bf16.cu.
#pragma once

#include <type_traits>

#include "cuda/scan_common.cuh"

namespace wm::cuda::scan_detail {

/// kLocal = false: the scan proper (out, ckpt, last). kLocal = true: segmented pass 1 (each
/// segment from zero; end state and Σdt into seg_state / seg_dtsum; no output).
/// The next chunk's raw tiles are prefetched into registers while a chunk is scanned.
/// kDense: compiled for 4 blocks per SM (≤ 128 registers) for grids of more than 3 blocks per SM
/// (many rows, or long sequences split into many segments); else no register cap (fastest when
/// the grid is small). 32 lanes per row (N > 16): never capped.
template <typename T, int LPR, int S, bool kLocal, bool kDense>
__global__ void __launch_bounds__(kThreads, kDense && LPR < 32 ? 4 : 1)
    scan_fwd_kernel(const ScanArgs a) {
  using C = Cfg<LPR, S>;
  extern __shared__ float4 smem4[];
  // Outputs (out, and x = y + D·u where z gates). With 16 or more lanes per row each lane keeps
  // its steps' values of a chunk in registers and stores them after the chunk (a row's lanes
  // write consecutive steps). With fewer lanes (kOutTiles) that would take 2·kTC/LPR registers and
  // scattered stores: each lane overwrites u with x and z with out at its steps instead, and after
  // the chunk the threads that staged those tiles store them, one vector per quad.
  constexpr bool kOutTiles = C::FWD_OUT_TILES;
  constexpr int RP = C::FWD_ROW_STRIDE;
  float *s_u = reinterpret_cast<float *>(smem4);  // [RB][RP] u (kOutTiles: then x)
  float *s_z = s_u + C::RB * RP;                  // [RB][RP] z (kOutTiles: then out)
  float *s_dt = s_z + C::RB * RP;                 // [RB][RP] dt
  float *s_du = s_dt + C::RB * RP;                // [RB][RP] dt·u
  float *s_B = s_du + C::RB * RP;                 // [NP][kTP], rows bc_tile_row(n)
  float *s_C = s_B + C::NP * kTP;                 // [NP][kTP], rows bc_tile_row(n)

  const Place<LPR, S> pl(a);
  // Pass 1: no later segment starts from the last one's end state.
  if (kLocal && pl.seg == a.n_seg - 1) return;
  const T *u = static_cast<const T *>(a.u);
  const T *delta = static_cast<const T *>(a.delta);
  const T *zp = kLocal ? nullptr : static_cast<const T *>(a.z);
  const T *Bm = static_cast<const T *>(a.Bm);
  const T *Cm = static_cast<const T *>(a.Cm);
  const bool vec = a.vec;
  const int64_t BD = a.batch * pl.D;

  float A2[S], h[S];
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int n = pl.n_of(s);
    const bool ok = pl.valid && n < pl.N;
    A2[s] = ok ? a.A[pl.d * pl.N + n] * kLog2e : 0.f;
    float h0 = 0.f;
    if (ok && !kLocal) {
      if (a.n_seg > 1) {
        h0 = a.seg_state[(pl.seg * BD + pl.row) * pl.N + n];
      } else if (a.h0) {
        h0 = a.h0[pl.row * pl.N + n];
      }
    }
    h[s] = h0;
  }
  const float dskip = (!kLocal && pl.valid && a.D_skip) ? a.D_skip[pl.d] : 0.f;
  const float z_on = zp ? 1.f : 0.f;  // gate by silu(z) or not, without a branch in the scan loop

  // Prefetch registers: the next chunk's raw tiles (io dtype: converted where staged).
  using Raw = typename IO<T>::Raw4;
  Raw pu[C::ROW_UNITS], pd[C::ROW_UNITS], pz[C::ROW_UNITS];
  Raw pB[C::BC_UNITS], pC[C::BC_UNITS];
  const Raw raw0 = IO<T>::raw_zero();
  const float4 zero4 = make_float4(0.f, 0.f, 0.f, 0.f);

  // Staging: this thread's quads start at these rows / states (see Place).
  const int64_t len = pl.L - pl.q4;  // steps of the sequence from this thread's quad of chunk 0
  float bias[C::ROW_UNITS];
#pragma unroll
  for (int k = 0; k < C::ROW_UNITS; ++k) {
    const int rr = pl.ur + k * kUnitRows;
    bias[k] = (rr < pl.rows_valid && a.bias) ? a.bias[pl.d0 + rr] : 0.f;
  }

  // A chunk's raw tiles into the prefetch registers. full (std::true_type): the whole chunk lies
  // inside the sequence and the rows are vector-aligned (uniform per chunk), so every quad is one
  // plain vector load without bounds checks; else load_quad_raw checks each quad.
  auto load_tiles = [&](int64_t c, auto full) {
    const int64_t t = c * kTC;
    auto quad = [&](const T *row) {
      if constexpr (decltype(full)::value) {
        return IO<T>::load_raw4(row + t);
      } else {
        return load_quad_raw(row, t, len, 1, vec);
      }
    };
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      pu[k] = pd[k] = pz[k] = raw0;
      if (pl.ur + k * kUnitRows < pl.rows_valid) {
        const int64_t o = pl.row_off + k * pl.unit_stride;
        pu[k] = quad(u + o);
        pd[k] = quad(delta + o);
        if (zp) pz[k] = quad(zp + o);
      }
    }
#pragma unroll
    for (int k = 0; k < C::BC_UNITS; ++k) {
      pB[k] = pC[k] = raw0;
      if (pl.ur + k * kUnitRows < pl.N) {
        const int64_t o = pl.bc_off + k * pl.unit_stride;
        pB[k] = quad(Bm + o);
        if (!kLocal) pC[k] = quad(Cm + o);
      }
    }
  };
  auto load = [&](int64_t c) {
    if (vec && (c + 1) * kTC <= pl.L) {
      load_tiles(c, std::true_type{});
    } else {
      load_tiles(c, std::false_type{});
    }
  };

  // Stages chunk c from the prefetch registers: dt = softplus(delta + bias) (or delta + bias), zero
  // past the sequence. Branch-free where the quads cover the tiles exactly (row_in_tile,
  // bc_in_tile), and the softplus flag selects rather than branches: each thread's four softplus
  // chains then overlap (forward −1…−11%, BENCHMARKS.md, eighth session).
  auto store = [&](int64_t c) {
    const int64_t t = c * kTC;
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      const int rr = pl.ur + k * kUnitRows;
      if (C::row_in_tile(rr)) {
        const bool row_ok = rr < pl.rows_valid;
        const float4 u4 = IO<T>::unpack(pu[k]), d4 = IO<T>::unpack(pd[k]);
        float dt[4], du[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float x = comp(d4, e) + bias[k];
          float sp, sig;
          softplus_sigmoid(x, sp, sig);
          const bool in = row_ok && t + e < len;
          dt[e] = in ? (a.softplus ? sp : x) : 0.f;
          du[e] = dt[e] * comp(u4, e);
        }
        const int o = rr * RP + pl.q4;
        st4(s_dt + o, make_float4(dt[0], dt[1], dt[2], dt[3]));
        st4(s_du + o, make_float4(du[0], du[1], du[2], du[3]));
        if (!kLocal) {
          st4(s_u + o, u4);
          st4(s_z + o, IO<T>::unpack(pz[k]));
        }
      }
    }
#pragma unroll
    for (int k = 0; k < C::BC_UNITS; ++k) {
      const int n = pl.ur + k * kUnitRows;
      if (C::bc_in_tile(n)) {
        const int row = bc_tile_row<LPR, S>(n);
        st4(s_B + row * kTP + pl.q4, IO<T>::unpack(pB[k]));
        if (!kLocal) st4(s_C + row * kTP + pl.q4, IO<T>::unpack(pC[k]));
      }
    }
  };

  // Where the outputs start: this lane's row, or (kOutTiles) the tensor.
  const int64_t out_off = kOutTiles ? 0 : pl.row * pl.L;
  T *out = kLocal ? nullptr : static_cast<T *>(a.out) + out_off;
  T *xs = (kLocal || a.x == nullptr) ? nullptr : static_cast<T *>(a.x) + out_off;
  auto store_out = [&](int64_t c) {
    const int64_t t = c * kTC;
#pragma unroll
    for (int k = 0; k < C::ROW_UNITS; ++k) {
      const int rr = pl.ur + k * kUnitRows;
      if (rr < pl.rows_valid) {
        const int64_t o = pl.row_off + k * pl.unit_stride + t;
        store_quad(out + o, 0, len - t, vec, ld4(s_z + rr * RP + pl.q4));
        if (zp && xs) store_quad(xs + o, 0, len - t, vec, ld4(s_u + rr * RP + pl.q4));
      }
    }
  };
  // Checkpoint c: the state entering chunk c. With 16 lanes per row it is stored at the start of
  // the chunk, before the next chunk's prefetch is issued (stored after it, the store shared the
  // prefetch's scoreboard, and in bf16 the scan then waited for the prefetch to land:
  // BENCHMARKS.md, fifth session). With fewer lanes (kOutTiles) it is stored right after the
  // previous chunk's scan, 4 states in one vector store: forward+backward −2% at (8, 2048, 2048)
  // bf16 (seventh session), where storing it late with 16 lanes per row cost the forward 10–15%.
  auto store_ckpt = [&](int64_t c) {
    if (kLocal || a.ckpt == nullptr || !pl.valid) return;
    float *dst = a.ckpt + (pl.row * a.n_chunks + c) * pl.N + pl.n_of(0);
    if constexpr (S == 4) {
      if (pl.N % 4 == 0 && pl.n_of(0) < pl.N) {
        st4(dst, make_float4(h[0], h[1], h[2], h[3]));
        return;
      }
    }
#pragma unroll
    for (int s = 0; s < S; ++s) {
      if (pl.n_of(s) < pl.N) dst[s] = h[s];
    }
  };
  float dtsum = 0.f;
  if (pl.c_begin < pl.c_end) {
    if (kOutTiles) store_ckpt(pl.c_begin);
    load(pl.c_begin);
  }
  for (int64_t c = pl.c_begin; c < pl.c_end; ++c) {
    __syncthreads();
    // The previous chunk's outputs: this thread reads exactly the quads it overwrites next.
    if (kOutTiles && !kLocal && c > pl.c_begin) store_out(c - 1);
    store(c);
    __syncthreads();
    if (!kOutTiles) store_ckpt(c);
    if (c + 1 < pl.c_end) load(c + 1);
    // The chunk's groups of LPR steps, unrolled into one branch-free block (a conditional store
    // per group split it into one scheduling region per group, and the compiler could not overlap
    // a group's y transposes with the next group's recurrence: BENCHMARKS.md, sixth session); with
    // 4 lanes per row, into a loop over blocks of 16 steps (fully unrolled, ~2000 instructions per
    // chunk, the forward was 5% slower at (8, 2048, 2048) bf16; with 8 lanes per row the loop was
    // 7% slower: seventh session). Each lane owns step grp·LPR + ln of every group.
    constexpr int kGroups = kTC / LPR;
    constexpr int kIterGroups = LPR == 4 ? 16 / LPR : kGroups;
    constexpr bool kOutRegs = !kLocal && !kOutTiles;
    float ov[kOutRegs ? kGroups : 1], xv[kOutRegs ? kGroups : 1];
#pragma unroll 1
    for (int g0 = 0; g0 < kGroups; g0 += kIterGroups) {
#pragma unroll
      for (int gi = 0; gi < kIterGroups; ++gi) {
        const int grp = g0 + gi;
        float p[LPR];
#pragma unroll
        for (int j0 = 0; j0 < LPR; j0 += 4) {
          const int t0 = grp * LPR + j0;
          const float4 dt4 = ld4(s_dt + pl.r * RP + t0);
          const float4 du4 = ld4(s_du + pl.r * RP + t0);
          float4 b4[S], c4[S];
#pragma unroll
          for (int s = 0; s < S; ++s) {
            b4[s] = ld4(s_B + (s * LPR + pl.ln) * kTP + t0);
            c4[s] = kLocal ? zero4 : ld4(s_C + (s * LPR + pl.ln) * kTP + t0);
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            const float dtk = comp(dt4, k), duk = comp(du4, k);
            float acc = 0.f;
#pragma unroll
            for (int s = 0; s < S; ++s) {
              const float dA = ex2(dtk * A2[s]);
              h[s] = fmaf(dA, h[s], duk * comp(b4[s], k));
              if (!kLocal) acc = fmaf(comp(c4[s], k), h[s], acc);
            }
            p[j0 + k] = acc;
            if (kLocal) dtsum += dtk;
          }
        }
        if constexpr (!kLocal) {
          const int t = grp * LPR + pl.ln;
          const float x = fmaf(dskip, s_u[pl.r * RP + t], transpose_reduce<LPR>(p, pl.lane));
          const float zz = s_z[pl.r * RP + t];
          const float o = x * fmaf(z_on, zz * sigmoid(zz), 1.f - z_on);  // x·silu(z) or x
          if constexpr (kOutTiles) {
            s_u[pl.r * RP + t] = x;
            s_z[pl.r * RP + t] = o;
          } else {
            xv[grp] = x;
            ov[grp] = o;
          }
        }
      }
    }
    if (kOutTiles && c + 1 < pl.c_end) store_ckpt(c + 1);
    if constexpr (kOutRegs) {
      // Predicated stores (x only where z gates and the caller saves it).
      T *const x_dst = (zp && xs) ? xs : out;
#pragma unroll
      for (int grp = 0; grp < kGroups; ++grp) {
        const int64_t tg = c * kTC + grp * LPR + pl.ln;
        const bool ok = pl.valid && tg < pl.L;
        store_if(ok && zp && xs, x_dst + tg, xv[grp]);
        store_if(ok, out + tg, ov[grp]);
      }
    }
  }
  if (kOutTiles && !kLocal && pl.c_begin < pl.c_end) {
    __syncthreads();
    store_out(pl.c_end - 1);
  }

  if (pl.valid) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int n = pl.n_of(s);
      if (n >= pl.N) continue;
      if (kLocal) {
        a.seg_state[(pl.seg * BD + pl.row) * pl.N + n] = h[s];
      } else if (pl.seg == a.n_seg - 1) {
        a.last[pl.row * pl.N + n] = h[s];
      }
    }
    if (kLocal && pl.ln == 0) a.seg_dtsum[pl.seg * BD + pl.row] = dtsum;
  }
}

/// The forward kernel for a launch: dense (4 blocks per SM) or not.
template <typename T, int LPR, int S, bool kLocal>
auto fwd_kernel(bool dense) {
  return dense ? scan_fwd_kernel<T, LPR, S, kLocal, true>
               : scan_fwd_kernel<T, LPR, S, kLocal, false>;
}

template <typename T>
struct FwdLauncher {
  const ScanArgs &a;
  bool local;
  cudaStream_t stream;
  template <int LPR, int S>
  cudaError_t operator()() const {
    using C = Cfg<LPR, S>;
    const int64_t bx = a.groups * row_blocks_per_group<LPR, S>(a);
    int device = 0, sms = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (e != cudaSuccess) return e;
    const bool dense = bx * a.batch * a.n_seg > 3 * static_cast<int64_t>(sms);
    return local ? launch(fwd_kernel<T, LPR, S, true>(dense), a, bx, C::FWD_FLOATS, stream)
                 : launch(fwd_kernel<T, LPR, S, false>(dense), a, bx, C::FWD_FLOATS, stream);
  }
};

template <typename T>
cudaError_t launch_fwd(const ScanArgs &a, bool local, cudaStream_t stream) {
  const FwdLauncher<T> f{a, local, stream};
  // 4 lanes × 4 states exists for the forward only (with_config also instantiates the backward).
  if (a.cfg.lanes == 4 && a.cfg.states == 4) return f.template operator()<4, 4>();
  return with_config(a.cfg, f);
}

}  // namespace wm::cuda::scan_detail
