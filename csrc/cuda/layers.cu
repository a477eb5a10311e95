// Fused layer kernels for training on CUDA (launchers in layers.h): the Mamba block's causal
// depthwise convolution with its SiLU, and RMSNorm, forward and backward. Deterministic: partial
// sums per block are written out and reduced in a fixed order by the caller, no atomics.
#include <cuda_bf16.h>

#include "cuda/io.cuh"
#include "cuda/layers.h"

namespace wm::cuda {
namespace {

constexpr int kConvThreads = 128;
constexpr int kPerThread = static_cast<int>(kConvTile) / kConvThreads;  // 16 steps per thread

__device__ __forceinline__ float sigmoid(float x) { return __fdividef(1.f, 1.f + __expf(-x)); }

// Shared tiles hold x (and the backward's gpre) at index kHalo + (t − t0): a left halo of
// kConvMaxWidth − 1 steps for the window, and as much on the right for the backward.
constexpr int kHalo = kConvMaxWidth - 1;
constexpr int kSpan = static_cast<int>(kConvTile) + 2 * kHalo;

/// Stages x[row, t0 − kHalo, t0 + tile + right) into s (zero outside [0, len)): the tile's loads
/// are unrolled (independent, all in flight at once), the halos taken by the first threads.
template <typename T>
__device__ __forceinline__ void stage_x(float *s, const T *xrow, int64_t t0, int64_t len,
                                        int right) {
  float v[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t t = t0 + j * kConvThreads + threadIdx.x;
    v[j] = t < len ? IO<T>::to_f(xrow[t]) : 0.f;
  }
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) s[kHalo + j * kConvThreads + threadIdx.x] = v[j];
  if (threadIdx.x < kHalo) {
    const int64_t t = t0 - kHalo + threadIdx.x;
    s[threadIdx.x] = t >= 0 && t < len ? IO<T>::to_f(xrow[t]) : 0.f;
  } else if (threadIdx.x < kHalo + right) {
    const int i = static_cast<int>(kConvTile) + threadIdx.x - kHalo;
    const int64_t t = t0 + i;
    s[kHalo + i] = t < len ? IO<T>::to_f(xrow[t]) : 0.f;
  }
}

/// Pre-activation at tile index i (time t0 + i): bias + Σ_k w[k]·x[t − K + 1 + k].
__device__ __forceinline__ float pre_at(const float *s_x, const float (&wk)[kConvMaxWidth],
                                        float bv, int i, int width) {
  float p = bv;
#pragma unroll
  for (int k = 0; k < kConvMaxWidth; ++k)
    if (k < width) p = fmaf(wk[k], s_x[kHalo + i - width + 1 + k], p);
  return p;
}

// grid (tiles, rows). y (float32) and, when y16 is not null, the same values in bfloat16 (what
// autocast's next matmul would otherwise make with a separate cast).
template <typename T>
__global__ void __launch_bounds__(kConvThreads)
    conv_silu_fwd_kernel(const T *x, int64_t xbs, int64_t xrs, const float *w, const float *bias,
                         float *y, __nv_bfloat16 *y16, int64_t dim, int64_t len, int width) {
  __shared__ float s_x[kSpan];
  const int64_t row = blockIdx.y, b = row / dim, d = row % dim;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kConvTile;
  stage_x(s_x, x + b * xbs + d * xrs, t0, len, 0);
  float wk[kConvMaxWidth];
#pragma unroll
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < width ? w[d * width + k] : 0.f;
  const float bv = bias ? bias[d] : 0.f;
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = j * kConvThreads + threadIdx.x;  // coalesced stores
    const int64_t t = t0 + i;
    if (t < len) {
      const float p = pre_at(s_x, wk, bv, i, width);
      const float v = p * sigmoid(p);
      y[row * len + t] = v;
      if (y16) y16[row * len + t] = __float2bfloat16_rn(v);
    }
  }
}

// grid (tiles, rows). gpre[t] = (gy[t] + gy16[t])·silu'(pre[t]) over [t0, t0 + tile + K − 1) (the
// right halo feeds gx at the tile's end); gx[t] = Σ_k w[k]·gpre[t + K − 1 − k];
// part[row, tile] = (Σ_t gpre[t]·x[t − K + 1 + k])_k, Σ_t gpre[t] over the tile's own t.
template <typename T>
__global__ void __launch_bounds__(kConvThreads)
    conv_silu_bwd_kernel(const T *x, int64_t xbs, int64_t xrs, const float *w, const float *bias,
                         const float *gy, const __nv_bfloat16 *gy16, T *gx, float *part,
                         int64_t dim, int64_t len, int width) {
  __shared__ float s_x[kSpan];
  __shared__ float s_g[kSpan];  // gpre at index t − t0 (no left halo)
  __shared__ float s_red[kConvThreads / 32][kConvMaxWidth + 1];
  const int64_t row = blockIdx.y, b = row / dim, d = row % dim;
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kConvTile;
  const int tile = static_cast<int>(kConvTile);
  stage_x(s_x, x + b * xbs + d * xrs, t0, len, width - 1);
  float wk[kConvMaxWidth];
#pragma unroll
  for (int k = 0; k < kConvMaxWidth; ++k) wk[k] = k < width ? w[d * width + k] : 0.f;
  const float bv = bias ? bias[d] : 0.f;
  const float *gyrow = gy + row * len;
  const __nv_bfloat16 *gy16row = gy16 ? gy16 + row * len : nullptr;
  // The upstream gradient at the thread's steps (and its right-halo step), loads all in flight.
  float g_in[kPerThread + 1];
#pragma unroll
  for (int j = 0; j <= kPerThread; ++j) {
    const int i = j < kPerThread ? j * kConvThreads + threadIdx.x : tile + threadIdx.x;
    const int64_t t = t0 + i;
    const bool ok = t < len && (j < kPerThread || threadIdx.x < width - 1);
    g_in[j] = ok ? gyrow[t] + (gy16row ? __bfloat162float(gy16row[t]) : 0.f) : 0.f;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j <= kPerThread; ++j) {
    const int i = j < kPerThread ? j * kConvThreads + threadIdx.x : tile + threadIdx.x;
    if (j == kPerThread && threadIdx.x >= width - 1) break;
    const float p = pre_at(s_x, wk, bv, i, width);
    const float sg = sigmoid(p);
    s_g[i] = g_in[j] * sg * (1.f + p * (1.f - sg));  // zero past len: g_in is
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
    if (t < len) {
      float gxv = 0.f;
#pragma unroll
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < width) gxv = fmaf(wk[k], s_g[i + width - 1 - k], gxv);
      gxrow[t] = IO<T>::from_f(gxv);
      const float g = s_g[i];
#pragma unroll
      for (int k = 0; k < kConvMaxWidth; ++k)
        if (k < width) acc[k] = fmaf(g, s_x[kHalo + i - width + 1 + k], acc[k]);
      acc[kConvMaxWidth] += g;
    }
  }
  // Block sum in a fixed order: warp butterflies, then one thread per tap adds the warps.
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

// One warp per row; lane owns columns lane + 32·j. Y: float or bfloat16 output.
template <typename Y>
__global__ void __launch_bounds__(32 * kNormWarps)
    rms_norm_fwd_kernel(const float *x, const float *w, Y *y, float *rstd, int64_t rows,
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
  Y *yr = y + row * cols;
  for (int64_t c = lane; c < cols; c += 32) yr[c] = IO<Y>::from_f(xr[c] * r * w[c]);
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
                          const float *w, const float *bias, float *y, void *y16, int64_t batch,
                          int64_t dim, int64_t len, int width, cudaStream_t stream) {
  if (width < 1 || width > kConvMaxWidth) return cudaErrorInvalidValue;
  const dim3 grid(tiles_of(len), static_cast<unsigned>(batch * dim));
  auto *y16b = static_cast<__nv_bfloat16 *>(y16);
  if (bf16) {
    conv_silu_fwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16 *>(x), x_batch_stride, x_row_stride, w, bias, y, y16b, dim,
        len, width);
  } else {
    conv_silu_fwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const float *>(x), x_batch_stride, x_row_stride, w, bias, y, y16b, dim, len,
        width);
  }
  return cudaSuccess;
}

cudaError_t conv_silu_bwd(const void *x, bool bf16, int64_t x_batch_stride, int64_t x_row_stride,
                          const float *w, const float *bias, const float *gy, const void *gy16,
                          void *gx, float *part, int64_t batch, int64_t dim, int64_t len,
                          int width, cudaStream_t stream) {
  if (width < 1 || width > kConvMaxWidth) return cudaErrorInvalidValue;
  const dim3 grid(tiles_of(len), static_cast<unsigned>(batch * dim));
  const auto *g16 = static_cast<const __nv_bfloat16 *>(gy16);
  if (bf16) {
    conv_silu_bwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16 *>(x), x_batch_stride, x_row_stride, w, bias, gy, g16,
        static_cast<__nv_bfloat16 *>(gx), part, dim, len, width);
  } else {
    conv_silu_bwd_kernel<<<grid, kConvThreads, 0, stream>>>(
        static_cast<const float *>(x), x_batch_stride, x_row_stride, w, bias, gy, g16,
        static_cast<float *>(gx), part, dim, len, width);
  }
  return cudaSuccess;
}

cudaError_t rms_norm_fwd(const float *x, const float *w, void *y, bool y_bf16, float *rstd,
                         int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>((rows + kNormWarps - 1) / kNormWarps);
  if (y_bf16) {
    rms_norm_fwd_kernel<<<blocks, 32 * kNormWarps, 0, stream>>>(
        x, w, static_cast<__nv_bfloat16 *>(y), rstd, rows, cols, eps);
  } else {
    rms_norm_fwd_kernel<<<blocks, 32 * kNormWarps, 0, stream>>>(x, w, static_cast<float *>(y),
                                                                 rstd, rows, cols, eps);
  }
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
