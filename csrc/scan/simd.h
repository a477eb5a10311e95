// Minimal SIMD "packs" for the CPU scan kernel (torch-free).
//   Pack1<T>: one scalar of float or double (portable; also the N % 8 != 0 path).
//   PackF8  : 8 floats in an AVX2 register with FMA (only when compiled with -mavx2 -mfma).
// Each pack offers load/store/set1/arithmetic/fma/hsum(s)/exp/exp2/log1p/max/abs; the kernel in
// scan_kernel.inc is written once against this interface.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace wm::simd {

template <typename T>
struct Pack1 {
  using scalar = T;
  static constexpr int W = 1;
  T v;
  static Pack1 load(const T *p) { return {*p}; }
  void store(T *p) const { *p = v; }
  static Pack1 set1(T x) { return {x}; }
  static Pack1 zero() { return {T(0)}; }
  friend Pack1 operator+(Pack1 a, Pack1 b) { return {a.v + b.v}; }
  friend Pack1 operator-(Pack1 a, Pack1 b) { return {a.v - b.v}; }
  friend Pack1 operator*(Pack1 a, Pack1 b) { return {a.v * b.v}; }
  friend Pack1 operator/(Pack1 a, Pack1 b) { return {a.v / b.v}; }
  /// a·b + c
  static Pack1 fma(Pack1 a, Pack1 b, Pack1 c) { return {a.v * b.v + c.v}; }
  T hsum() const { return v; }
  /// out[j] = v[j].hsum() for j < W.
  static void hsums(const Pack1 *v, T *out) { out[0] = v[0].v; }
  static Pack1 exp(Pack1 x) { return {std::exp(x.v)}; }
  static Pack1 exp2(Pack1 x) { return {std::exp2(x.v)}; }
  static Pack1 log1p(Pack1 x) { return {std::log1p(x.v)}; }
  static Pack1 max(Pack1 a, Pack1 b) { return {a.v > b.v ? a.v : b.v}; }
  static Pack1 abs(Pack1 a) { return {std::fabs(a.v)}; }
};

#if defined(__AVX2__) && defined(__FMA__)
struct PackF8 {
  using scalar = float;
  static constexpr int W = 8;
  __m256 v;
  static PackF8 load(const float *p) { return {_mm256_loadu_ps(p)}; }
  void store(float *p) const { _mm256_storeu_ps(p, v); }
  static PackF8 set1(float x) { return {_mm256_set1_ps(x)}; }
  static PackF8 zero() { return {_mm256_setzero_ps()}; }
  friend PackF8 operator+(PackF8 a, PackF8 b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend PackF8 operator-(PackF8 a, PackF8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend PackF8 operator*(PackF8 a, PackF8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
  friend PackF8 operator/(PackF8 a, PackF8 b) { return {_mm256_div_ps(a.v, b.v)}; }
  static PackF8 fma(PackF8 a, PackF8 b, PackF8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  float hsum() const {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  /// out[j] = v[j].hsum() for j < 8, in 9 instructions for all eight (a horizontal-add tree and
  /// one cross-lane add) instead of 6 per sum.
  static void hsums(const PackF8 *v, float *out) {
    const __m256 ab = _mm256_hadd_ps(_mm256_hadd_ps(v[0].v, v[1].v), _mm256_hadd_ps(v[2].v, v[3].v));
    const __m256 cd = _mm256_hadd_ps(_mm256_hadd_ps(v[4].v, v[5].v), _mm256_hadd_ps(v[6].v, v[7].v));
    // ab = [Σ0..3 of v0..v3 | Σ4..7 of v0..v3], cd the same for v4..v7.
    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_permute2f128_ps(ab, cd, 0x20),
                                        _mm256_permute2f128_ps(ab, cd, 0x31)));
  }
  static PackF8 max(PackF8 a, PackF8 b) { return {_mm256_max_ps(a.v, b.v)}; }
  static PackF8 abs(PackF8 a) {
    return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)};
  }

  /// e^x, Cephes-style: x = k·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial; ≈1 ulp on [-87, 88].
  /// Inputs are clamped to that range (e^-87.3 ≈ 1.2e-38; e^88.4 ≈ 2.7e38).
  static PackF8 exp(PackF8 xin) {
    __m256 x = _mm256_min_ps(_mm256_max_ps(xin.v, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 x2 = _mm256_mul_ps(x, x);
    p = _mm256_fmadd_ps(p, x2, _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    // 2^k, split in two factors so k = 128 (x near 88.3) does not overflow the exponent field.
    const __m256i ki = _mm256_cvtps_epi32(k);
    const __m256i k1 = _mm256_srai_epi32(ki, 1);
    const __m256i k2 = _mm256_sub_epi32(ki, k1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, bias), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k2, bias), 23));
    return {_mm256_mul_ps(_mm256_mul_ps(p, s1), s2)};
  }

  /// 2^x (Cephes exp2f: x = k + f, |f| ≤ ½, degree-6 polynomial, ≈2 ulp), half the work of
  /// `exp`: the scan's decay exp(dt·A) = 2^(dt·A·log2 e). Inputs are clamped to [−126, 126]
  /// (2^−126 ≈ 1.2e−38 instead of smaller results).
  static PackF8 exp2(PackF8 xin) {
    const __m256 x = _mm256_min_ps(_mm256_max_ps(xin.v, _mm256_set1_ps(-126.0f)),
                                   _mm256_set1_ps(126.0f));
    const __m256 k = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(x, k);
    __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));  // in [0.7, 1.42]
    // p·2^k by adding k to the exponent field (|k| ≤ 126 keeps the result normal and finite)
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
    return {_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e))};
  }

  /// ln(x) for finite x > 0 (normal numbers), Cephes logf: x = m·2^e, m ∈ [√½, √2).
  static PackF8 log(PackF8 xin) {
    __m256 x = xin.v;
    __m256i xi = _mm256_castps_si256(x);
    __m256 e = _mm256_cvtepi32_ps(
        _mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126)));
    // mantissa in [0.5, 1)
    x = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
    const __m256 small = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(small, _mm256_set1_ps(1.0f)));
    x = _mm256_add_ps(_mm256_sub_ps(x, _mm256_set1_ps(1.0f)), _mm256_and_ps(small, x));
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(7.0376836292e-2f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.1514610310e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.1676998740e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.2420140846e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.4249322787e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.6668057665e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(2.0000714765e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-2.4999993993e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(3.3333331174e-1f));
    y = _mm256_mul_ps(_mm256_mul_ps(y, x), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    x = _mm256_add_ps(x, y);
    x = _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), x);
    return {x};
  }

  /// ln(1 + x) for x ≥ 0, accurate for tiny x: with v = 1 + x (rounded), ln(v)·x/(v − 1).
  static PackF8 log1p(PackF8 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 v = _mm256_add_ps(one, x.v);
    const __m256 d = _mm256_sub_ps(v, one);
    const __m256 r = _mm256_mul_ps(log({v}).v, _mm256_div_ps(x.v, d));
    const __m256 exact = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_EQ_OQ);
    return {_mm256_blendv_ps(r, x.v, exact)};
  }
};
#endif

}  // namespace wm::simd
