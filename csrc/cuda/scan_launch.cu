// Selective scan on CUDA: the launchers of kernels.h (dtype dispatch), the segment-chaining kernels
// and the deterministic dB/dC reduction.
#include "cuda/scan_common.cuh"

namespace wm::cuda {

using scan_detail::ex2;
using scan_detail::kLog2e;

ScanConfig scan_config_for(int64_t dstate, int wide) {
  if (dstate <= 8) return {8, 1};
  if (dstate <= 16) {
    return wide >= 2 ? ScanConfig{4, 4} : wide == 1 ? ScanConfig{8, 2} : ScanConfig{16, 1};
  }
  if (dstate <= 32) return {32, 1};
  return {32, 2};
}

int64_t scan_row_blocks(ScanConfig cfg, int64_t dim, int64_t groups) {
  const int64_t rows_per_block = 32 / cfg.lanes * scan_detail::kWarps;
  return (dim / groups + rows_per_block - 1) / rows_per_block;
}

namespace {

/// Forward pass 2: per (row, n), sequential over segments. In: seg_state = local end states (all
/// but the last segment's). Out: seg_state = true start state of each segment.
__global__ void fwd_combine_kernel(const ScanArgs a) {
  const int64_t BD = a.batch * a.dim, N = a.dstate;
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= BD * N) return;
  const int64_t row = i / N, n = i % N, d = row % a.dim;
  const float A2 = a.A[d * N + n] * kLog2e;
  float h = a.h0 ? a.h0[i] : 0.f;
  for (int64_t s = 0; s < a.n_seg; ++s) {
    float *slot = a.seg_state + s * BD * N + i;
    const float start = h;
    if (s + 1 < a.n_seg) h = fmaf(ex2(A2 * a.seg_dtsum[s * BD + row]), h, *slot);
    *slot = start;
  }
}

/// Backward pass 2: per (row, n), from the last segment to the first. In: seg_state = adjoint at
/// each segment's start given a zero adjoint at its end (all but the first segment's). Out:
/// seg_state = adjoint entering each segment at its end.
__global__ void bwd_combine_kernel(const ScanArgs a) {
  const int64_t BD = a.batch * a.dim, N = a.dstate;
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= BD * N) return;
  const int64_t row = i / N, n = i % N, d = row % a.dim;
  const float A2 = a.A[d * N + n] * kLog2e;
  float g = a.glast ? a.glast[i] : 0.f;
  for (int64_t s = a.n_seg - 1; s >= 0; --s) {
    float *slot = a.seg_state + s * BD * N + i;
    const float end = g;
    if (s > 0) g = fmaf(ex2(A2 * a.seg_dtsum[s * BD + row]), g, *slot);
    *slot = end;
  }
}

/// gB, gC (B, G, N, L) = Σ over row blocks of dbc_part (2, nrb, B·G, L, NP), in fixed order. One
/// block per (64 steps, b·G + g, B or C): each thread sums 4 consecutive states of one step over
/// the row blocks (16-byte loads, 8 in flight), the block then writes its [64 t][N n] tile
/// transposed through shared memory (writes along t). np is a multiple of 4 (lanes × states).
constexpr int kReduceSteps = 64;
template <typename T>
__global__ void __launch_bounds__(256) dbc_reduce_kernel(const ScanArgs a, int64_t nrb,
                                                         int64_t np, T *gB, T *gC) {
  __shared__ float tile[64][kReduceSteps + 1];
  const int64_t L = a.len, N = a.dstate, BG = a.batch * a.groups;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kReduceSteps, bg = blockIdx.y;
  const int which = blockIdx.z;
  const int64_t steps = L - t0 < kReduceSteps ? L - t0 : kReduceSteps;
  const float *part = a.dbc_part + which * a.dbc_stride + (bg * L + t0) * np;
  const int quads = static_cast<int>((N + 3) / 4);
  const int64_t rb_stride = BG * L * np;
  for (int e = threadIdx.x; e < steps * quads; e += blockDim.x) {
    const int t = e / quads, n = 4 * (e % quads);
    const float *p = part + t * np + n;
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
    for (int64_t k = 0; k < nrb; ++k) {
      const float4 v = scan_detail::ld4(p + k * rb_stride);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    tile[n][t] = sum.x;
    tile[n + 1][t] = sum.y;
    tile[n + 2][t] = sum.z;
    tile[n + 3][t] = sum.w;
  }
  __syncthreads();
  T *out = (which ? gC : gB) + bg * N * L + t0;
  for (int e = threadIdx.x; e < N * kReduceSteps; e += blockDim.x) {
    const int n = e / kReduceSteps, t = e % kReduceSteps;
    if (t < steps) out[n * L + t] = scan_detail::IO<T>::from_f(tile[n][t]);
  }
}

unsigned blocks_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

}  // namespace

cudaError_t scan_fwd_local(const ScanArgs &a, cudaStream_t stream) {
  return a.dtype == ScanDType::BF16
             ? scan_detail::launch_fwd<__nv_bfloat16>(a, true, stream)
             : scan_detail::launch_fwd<float>(a, true, stream);
}

cudaError_t scan_fwd_main(const ScanArgs &a, cudaStream_t stream) {
  return a.dtype == ScanDType::BF16
             ? scan_detail::launch_fwd<__nv_bfloat16>(a, false, stream)
             : scan_detail::launch_fwd<float>(a, false, stream);
}

cudaError_t scan_fwd_combine(const ScanArgs &a, cudaStream_t stream) {
  const int64_t n = a.batch * a.dim * a.dstate;
  fwd_combine_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(a);
  return cudaSuccess;
}

cudaError_t scan_bwd_local(const ScanArgs &a, cudaStream_t stream) {
  return a.dtype == ScanDType::BF16 ? scan_detail::launch_bwd_local<__nv_bfloat16>(a, stream)
                                    : scan_detail::launch_bwd_local<float>(a, stream);
}

cudaError_t scan_bwd_combine(const ScanArgs &a, cudaStream_t stream) {
  const int64_t n = a.batch * a.dim * a.dstate;
  bwd_combine_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(a);
  return cudaSuccess;
}

cudaError_t scan_bwd_main(const ScanArgs &a, cudaStream_t stream) {
  return a.dtype == ScanDType::BF16 ? scan_detail::launch_bwd<__nv_bfloat16>(a, stream)
                                    : scan_detail::launch_bwd<float>(a, stream);
}

cudaError_t scan_dbc_reduce(const ScanArgs &a, cudaStream_t stream) {
  const int64_t nrb = scan_row_blocks(a.cfg, a.dim, a.groups);
  const int64_t np = a.cfg.padded_states();
  const dim3 grid(static_cast<unsigned>((a.len + kReduceSteps - 1) / kReduceSteps),
                  static_cast<unsigned>(a.batch * a.groups), 2);
  if (a.dtype == ScanDType::BF16) {
    dbc_reduce_kernel<<<grid, 256, 0, stream>>>(a, nrb, np, static_cast<__nv_bfloat16 *>(a.gB),
                                                static_cast<__nv_bfloat16 *>(a.gC));
  } else {
    dbc_reduce_kernel<<<grid, 256, 0, stream>>>(a, nrb, np, static_cast<float *>(a.gB),
                                                static_cast<float *>(a.gC));
  }
  return cudaSuccess;
}

}  // namespace wm::cuda
