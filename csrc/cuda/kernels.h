// Launchers of the CUDA kernels in csrc/cuda/ (torch-free: included by the shim and by .cu files).
// Each enqueues on `stream` and returns the launch status; the shim checks it.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace wm::cuda {

cudaError_t mulaw_encode_f32(const float *x, int64_t *q, int64_t n, float mu, cudaStream_t stream);
cudaError_t mulaw_decode_f32(const int64_t *q, float *x, int64_t n, float mu, cudaStream_t stream);

}  // namespace wm::cuda
