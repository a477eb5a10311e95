// Fused layer kernels for training on CUDA (launchers in layers.h): the Mamba block's causal
// depthwise convolution with its SiLU, and RMSNorm, forward and backward. Deterministic: partial
// sums per block are written out and reduced in a fixed order by the caller, no atomics.
#include <cuda_bf16.h>

#include "cuda/layers.h"

namespace wm::cuda {
namespace {

constexpr int kConvThreads = 128;
constexpr int kPerThread = static_cast<int>(kConvTile) / kConvThreads;  // 16 steps per thread

template <typename T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

/// Loads x[row, t] for t in [t_lo, t_lo + n) into s (zero outside [0, len)).
template <typename T>
__device__ __forceinline__ void load_span(float *s, const T *xrow, int64_t t_lo, int n,
                                          int64_t len) {
#pragma unroll 4
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t t = t_lo + i;
    s[i] = (t >= 0 && t < len) ? to_f(xrow[t]) : 0.f;
  }
}

// grid (tiles, rows). Shared: x over [t0 − K + 1, t0 + tile).
template <typename T>
__global__ void __launch_bounds__(kConvThreads)
    conv_silu_fwd_kernel(const T *x, int64_t xbs, int64_t xrs, const float *w, const float *bias,
                         float *y, int64_t dim, int64_t len, int width) {
  __shared__ float s_x[kConvTile + kConvMaxWidth];
  const int64_t row = blockIdx.y, b = row / dim, d = row % dim;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kConvTile;
  const T *xrow = x + b * xbs + d * xrs;
  load_span(s_x, xrow, t0 - width + 1, static_cast<int>(kConvTile) + width - 1, len);
  float wk[kConvMaxWidth];
#pragma unroll
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < width ? w[d * width + k] : 0.f;
  const float bv = bias ? bias[d] : 0.f;
  __syncthreads();
  float *yrow = y + row * len;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = j * kConvThreads + threadIdx.x;  // coalesced stores
    const int64_t t = t0 + i;
    if (t >= len) break;
    float p = bv;
#pragma unroll
    for (int k = 0; k < kConvMaxWidth; ++k)
      if (k < width) p = fmaf(wk[k], s_x[i + k], p);
    yrow[t] = p * sigmoid(p);
  }
}

// grid (tiles, rows). gpre[t] = gy[t]·silu'(pre[t]) over [t0, t0 + tile + K − 1) (the right
// halo feeds gx at the tile's end); gx[t] = Σ_k w[k]·gpre[t + K − 1 − k];
// part[row, tile] = (Σ_t gpre[t]·x[t − K + 1 + k])_k, Σ_t gpre[t] over the tile's own t.
template <typename T>
__global__ void __launch_bounds__(kConvThreads)
    conv_silu_bwd_kernel(const T *x, int64_t xbs, int64_t xrs, const float *w, const float *bias,
                         const float *gy, T *gx, float *part, int64_t dim, int64_t len,
                         int width) {
  constexpr int kSpan = static_cast<int>(kConvTile) + 2 * kConvMaxWidth;
  __shared__ float s_x[kSpan];   // x over [t0 − K + 1, t0 + tile + K − 1)
  __shared__ float s_g[kSpan];   // gpre over [t0, t0 + tile + K − 1)
  __shared__ float s_red[kConvThreads / 32][kConvMaxWidth + 1];
  const int64_t row = blockIdx.y, b = row / dim, d = row % dim;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kConvTile;
  const int tile = static_cast<int>(kConvTile);
  const T *xrow = x + b * xbs + d * xrs;
  load_span(s_x, xrow, t0 - width + 1, tile + 2 * width - 2, len);
  float wk[kConvMaxWidth];
#pragma unroll
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < width ? w[d * width + k] : 0.f;
  const float bv = bias ? bias[d] : 0.f;
  const float *gyrow = gy + row * len;
  __syncthreads();
  for (int i = threadIdx.x; i < tile + width - 1; i += kConvThreads) {
    const int64_t t = t0 + i;
    float g = 0.f;
    if (t < len) {
      float p = bv;
#pragma unroll
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < width) p = fmaf(wk[k], s_x[i + k], p);
      const float s = sigmoid(p);
      g = gyrow[t] * s * (1.f + p * (1.f - s));
    }
    s_g[i] = g;
  }
  __syncthreads();
  float acc[kConvMaxWidth + 1];
#pragma unroll
  for (int k = 0; k <= kConvMaxWidth; ++k) acc[k] = 0.f;
  T *gxrow = gx + row * len;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = j * kConvThreads + threadIdx.x;
    const int64_t t = t0 + i;
    if (t >= len) break;
    // gx[t] = Σ_k w[k]·gpre[t + K − 1 − k]; s_g index of time t' is t' − t0.
    float gxv = 0.f;
#pragma unroll
    for (int k = 0; k < kConvMaxWidth; ++k)
      if (k < width) gxv = fmaf(wk[k], s_g[i + width - 1 - k], gxv);
    gxrow[t] = from_f<T>(gxv);
    const float g = s_g[i];
#pragma unroll
    for (int k = 0; k < kConvMaxWidth; ++k)
      if (k < width) acc[k] = fmaf(g, s_x[i + k], acc[k]);
    acc[kConvMaxWidth] += g;
  }
  // Block sum in a fixed order: warp butterflies, then warp 0 adds the warps' totals.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k <= kConvMaxWidth; ++k) {
    float v = acc[k];
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) s_red[warp][k] = v;
  }
  __syncthreads();
  if (threadIdx.x <= width) {
    const int k = threadIdx.x == width ? kConvMaxWidth : threadIdx.x;  // taps, then the bias
    float sum = 0.f;
    for (int wi = 0; wi < kConvThreads / 32; ++wi) sum += s_red[wi][k];
    part[(row * gridDim.x + blockIdx.x) * (width + 1) + threadIdx.x] = sum;
  }
}

constexpr int kNormWarps = 8;

// One warp per row; lane owns columns lane + 32·j.
__global__ void __launch_bounds__(32 * kNormWarps)
    rms_norm_fwd_kernel(const float *x, const float *w, float *y, float *rstd, int64_t rows,
                        int64_t cols, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kNormWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const float *xr = x + row * cols;
  float ss = 0.f;
  for (int64_t c = lane; c < cols; c += 32) ss = fmaf(xr[c], xr[c], ss);
#pragma unroll
  for (int off = 16; off >= 1; off /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float r = rsqrtf(ss / static_cast<float>(cols) + eps);
  float *yr = y + row * cols;
  for (int64_t c = lane; c < cols; c += 32) yr[c] = xr[c] * r * w[c];
  if (lane == 0) rstd[row] = r;
}

// Grid-stride over rows with a fixed assignment (warp i of block b takes rows b·W + i + k·G·W);
// lanes keep their columns' weight-gradient sums in registers (J per lane, cols ≤ 32·J), then the
// block adds its warps in order into part[block].
template <int J>
__global__ void __launch_bounds__(32 * kNormWarps)
    rms_norm_bwd_kernel(const float *x, const float *w, const float *rstd, const float *gy,
                        float *gx, float *part, int64_t rows, int64_t cols) {
  __shared__ float s_acc[kNormWarps][32 * J];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float acc[J], wv[J];
#pragma unroll
  for (int j = 0; j < J; ++j) {
    const int64_t c = lane + 32 * j;
    acc[j] = 0.f;
    wv[j] = c < cols ? w[c] : 0.f;
  }
  const float inv_cols = 1.f / static_cast<float>(cols);
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kNormWarps + warp; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kNormWarps) {
    const float *xr = x + row * cols, *gr = gy + row * cols;
    const float r = rstd[row];
    float xv[J], gv[J], dot = 0.f;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t c = lane + 32 * j;
      xv[j] = c < cols ? xr[c] : 0.f;
      gv[j] = c < cols ? gr[c] : 0.f;
      dot = fmaf(gv[j] * wv[j], xv[j], dot);
      acc[j] = fmaf(gv[j] * xv[j], r, acc[j]);
    }
#pragma unroll
    for (int off = 16; off >= 1; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    // gx = r·(gy·w) − x·r³·mean(gy·w·x)
    const float k = r * r * r * dot * inv_cols;
    float *gxr = gx + row * cols;
#pragma unroll
    for (int j = 0; j < J; ++j) {
      const int64_t c = lane + 32 * j;
      if (c < cols) gxr[c] = r * gv[j] * wv[j] - xv[j] * k;
    }
  }
#pragma unroll
  for (int j = 0; j < J; ++j) s_acc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    float sum = 0.f;
    for (int wi = 0; wi < kNormWarps; ++wi) sum += s_acc[wi][c];
    part[static_cast<int64_t>(blockIdx.x) * cols + c] = sum;
  }
}

unsigned tiles_of(int64_t len) { return static_cast<unsigned>((len + kConvTile - 1) / kConvTile); }

}  // namespace

cudaError_t conv_silu_fwd(const void *x, bool bf16, int64_t x_batch_stride, int64_t x_row_stride,
                          const float *w, const float *bias, float *y, int64_t batch, int64_t dim,
                          int64_t len, int width, cudaStream_t stream) {
  if (width < 1 || width > kConvMaxWidth) return cudaErrorInvalidValue;
  const dim3 grid(tiles_of(len), static_cast<unsigned>(batch * dim));
  if (bf16) {
    conv_silu_fwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16 *>(x), x_batch_stride, x_row_stride, w, bias, y, dim, len,
        width);
  } else {
    conv_silu_fwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const float *>(x), x_batch_stride, x_row_stride, w, bias, y, dim, len, width);
  }
  return cudaSuccess;
}

cudaError_t conv_silu_bwd(const void *x, bool bf16, int64_t x_batch_stride, int64_t x_row_stride,
                          const float *w, const float *bias, const float *gy, void *gx,
                          float *part, int64_t batch, int64_t dim, int64_t len, int width,
                          cudaStream_t stream) {
  if (width < 1 || width > kConvMaxWidth) return cudaErrorInvalidValue;
  const dim3 grid(tiles_of(len), static_cast<unsigned>(batch * dim));
  if (bf16) {
    conv_silu_bwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16 *>(x), x_batch_stride, x_row_stride, w, bias, gy,
        static_cast<__nv_bfloat16 *>(gx), part, dim, len, width);
  } else {
    conv_silu_bwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const float *>(x), x_batch_stride, x_row_stride, w, bias, gy,
        static_cast<float *>(gx), part, dim, len, width);
  }
  return cudaSuccess;
}

cudaError_t rms_norm_fwd(const float *x, const float *w, float *y, float *rstd, int64_t rows,
                         int64_t cols, float eps, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((rows + kNormWarps - 1) / kNormWarps);
  rms_norm_fwd_kernel<<<blocks, 32 * kNormWarps, 0, stream>>>(x, w, y, rstd, rows, cols, eps);
  return cudaSuccess;
}

int64_t rms_norm_bwd_blocks(int64_t rows) {
  const int64_t per_block = 16 * kNormWarps;  // ~16 rows per warp
  const int64_t b = (rows + per_block - 1) / per_block;
  return b < 1 ? 1 : (b > 2048 ? 2048 : b);
}

cudaError_t rms_norm_bwd(const float *x, const float *w, const float *rstd, const float *gy,
                         float *gx, float *part, int64_t rows, int64_t cols, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(rms_norm_bwd_blocks(rows));
  const int threads = 32 * kNormWarps;
  if (cols <= 64) {
    rms_norm_bwd_kernel<2><<<blocks, threads, 0, stream>>>(x, w, rstd, gy, gx, part, rows, cols);
  } else if (cols <= 128) {
    rms_norm_bwd_kernel<4><<<blocks, threads, 0, stream>>>(x, w, rstd, gy, gx, part, rows, cols);
  } else if (cols <= 256) {
    rms_norm_bwd_kernel<8><<<blocks, threads, 0, stream>>>(x, w, rstd, gy, gx, part, rows, cols);
  } else if (cols <= 512) {
    rms_norm_bwd_kernel<16><<<blocks, threads, 0, stream>>>(x, w, rstd, gy, gx, part, rows, cols);
  } else if (cols <= 1024) {
    rms_norm_bwd_kernel<32><<<blocks, threads, 0, stream>>>(x, w, rstd, gy, gx, part, rows, cols);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace wm::cuda
