// Loads and stores of the kernels' io dtypes (float32, bfloat16) as float32 arithmetic values,
// shared by the scan and the layer kernels. Raw4: four elements as loaded (float4, or the 8 bytes
// of four bfloat16), so that a prefetch into registers does not wait for its load to land just to
// convert it: unpack() where the values are used.
#pragma once

#include <cuda_bf16.h>

#include <cstring>

namespace wm::cuda {

template <typename T>
struct IO;

template <>
struct IO<float> {
  using Raw4 = float4;
  __device__ static float to_f(float v) { return v; }
  __device__ static float from_f(float v) { return v; }
  __device__ static float zero() { return 0.f; }
  __device__ static Raw4 raw_zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
  __device__ static Raw4 load_raw4(const float *p) { return *reinterpret_cast<const float4 *>(p); }
  __device__ static Raw4 pack(const float (&v)[4]) { return make_float4(v[0], v[1], v[2], v[3]); }
  __device__ static float4 unpack(Raw4 r) { return r; }
  __device__ static void store4(float *p, float4 v) { *reinterpret_cast<float4 *>(p) = v; }
};

template <>
struct IO<__nv_bfloat16> {
  using Raw4 = uint2;
  __device__ static float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
  __device__ static __nv_bfloat16 zero() { return __ushort_as_bfloat16(0); }
  __device__ static Raw4 raw_zero() { return make_uint2(0u, 0u); }
  __device__ static Raw4 load_raw4(const __nv_bfloat16 *p) {
    return *reinterpret_cast<const uint2 *>(p);
  }
  __device__ static Raw4 pack(const __nv_bfloat16 (&v)[4]) {
    Raw4 raw;
    memcpy(&raw, v, sizeof raw);
    return raw;
  }
  __device__ static float4 unpack(Raw4 raw) {
    __nv_bfloat162 lo, hi;
    memcpy(&lo, &raw.x, 4);
    memcpy(&hi, &raw.y, 4);
    const float2 a = __bfloat1622float2(lo), b = __bfloat1622float2(hi);
    return make_float4(a.x, a.y, b.x, b.y);
  }
  __device__ static void store4(__nv_bfloat16 *p, float4 v) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
    uint2 raw;
    memcpy(&raw.x, &lo, 4);
    memcpy(&raw.y, &hi, 4);
    *reinterpret_cast<uint2 *>(p) = raw;
  }
};

}  // namespace wm::cuda
