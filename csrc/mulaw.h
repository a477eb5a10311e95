// mu-law companding of one value (DESIGN.md §2), shared by the CPU loop and the CUDA kernel.
// Torch-free so nvcc compiles it without ATen.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define WM_HD __host__ __device__ __forceinline__
#else
#define WM_HD inline
#endif

namespace wm {

/// y = sign(x)·ln(1+μ|x|)/ln(1+μ);  q = floor((y+1)/2·μ + 0.5);  x clamped to [-1, 1].
template <typename T>
WM_HD int64_t mulaw_encode_one(T x, T mu) {
  x = x > T(1) ? T(1) : (x < T(-1) ? T(-1) : x);
  if (x != x) x = T(0);  // NaN encodes as silence
  const T mag = log1p(mu * fabs(x)) / log1p(mu);
  const T y = x < T(0) ? -mag : mag;
  return static_cast<int64_t>(floor((y + T(1)) / T(2) * mu + T(0.5)));
}

/// Inverse of `mulaw_encode_one`: y = 2q/μ − 1;  x = sign(y)·((1+μ)^|y| − 1)/μ.
template <typename T>
WM_HD T mulaw_decode_one(int64_t q, T mu) {
  const int64_t m = static_cast<int64_t>(mu);
  q = q < 0 ? 0 : (q > m ? m : q);
  const T y = T(2) * static_cast<T>(q) / mu - T(1);
  const T mag = expm1(fabs(y) * log1p(mu)) / mu;
  return y < T(0) ? -mag : mag;
}

}  // namespace wm
