// Launchers of the fused layer kernels in csrc/cuda/layers.cu (torch-free). Each enqueues one
// kernel on `stream` and returns cudaSuccess; the caller checks the launch
// (C10_CUDA_KERNEL_LAUNCH_CHECK). Row-major layouts, row = b·D + d for the convolution.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace wm::cuda {

/// Time steps per thread block in the convolution kernels (the backward's partial sums of the
/// weight gradient are per (row, tile)).
constexpr int64_t kConvTile = 2048;
/// Largest kernel width of the fused convolution.
constexpr int kConvMaxWidth = 8;

/// y (rows, L) float32 = silu(Σ_k w[d, k]·x[row, t − K + 1 + k] + bias[d]), x = 0 before t = 0;
/// also y16 (rows, L) bfloat16 with the same values unless null.
/// x: rows of `x_row_stride` elements apart, contiguous in t, float32 (bf16 = false) or bfloat16;
/// w (D, K) float32, bias (D) float32 or null; d = row % D.
cudaError_t conv_silu_fwd(const void *x, bool bf16, int64_t x_batch_stride, int64_t x_row_stride,
                          const float *w, const float *bias, float *y, void *y16, int64_t batch,
                          int64_t dim, int64_t len, int width, cudaStream_t stream);

/// Backward of conv_silu_fwd for the gradient gy (rows, L) float32 contiguous, plus gy16 (rows, L)
/// bfloat16 contiguous (y16's gradient) unless null: gx (rows, L) contiguous in x's dtype, and per
/// (row, tile) partial sums part (rows, tiles, K + 1) float32: the weight gradient's K taps, then
/// the bias gradient.
cudaError_t conv_silu_bwd(const void *x, bool bf16, int64_t x_batch_stride, int64_t x_row_stride,
                          const float *w, const float *bias, const float *gy, const void *gy16,
                          void *gx, float *part, int64_t batch, int64_t dim, int64_t len,
                          int width, cudaStream_t stream);

/// RMSNorm rows of x (rows, C) float32 contiguous: y = x·rstd·w, rstd = 1/√(mean(x²) + eps);
/// writes y (float32, or bfloat16 when y_bf16) and rstd (rows).
cudaError_t rms_norm_fwd(const float *x, const float *w, void *y, bool y_bf16, float *rstd,
                         int64_t rows, int64_t cols, float eps, cudaStream_t stream);

/// Number of blocks rms_norm_bwd uses (rows of its weight-gradient partials).
int64_t rms_norm_bwd_blocks(int64_t rows);

/// Backward of rms_norm_fwd: gx (rows, C) and part (rms_norm_bwd_blocks(rows), C), the weight
/// gradient's partial sums. C ≤ 1024.
cudaError_t rms_norm_bwd(const float *x, const float *w, const float *rstd, const float *gy,
                         float *gx, float *part, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace wm::cuda
