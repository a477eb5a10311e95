// mu-law coding on the GPU: one thread per element, grid-stride loop.
#include "cuda/kernels.h"
#include "mulaw.h"

namespace {

__global__ void encode_kernel(const float *x, int64_t *q, int64_t n, float mu) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    q[i] = wm::mulaw_encode_one<float>(x[i], mu);
  }
}

__global__ void decode_kernel(const int64_t *q, float *x, int64_t n, float mu) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    x[i] = wm::mulaw_decode_one<float>(q[i], mu);
  }
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

namespace wm::cuda {

cudaError_t mulaw_encode_f32(const float *x, int64_t *q, int64_t n, float mu, cudaStream_t stream) {
  encode_kernel<<<grid_for(n), 256, 0, stream>>>(x, q, n, mu);
  return cudaGetLastError();
}

cudaError_t mulaw_decode_f32(const int64_t *q, float *x, int64_t n, float mu, cudaStream_t stream) {
  decode_kernel<<<grid_for(n), 256, 0, stream>>>(q, x, n, mu);
  return cudaGetLastError();
}

}  // namespace wm::cuda
