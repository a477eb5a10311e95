/* wavemamba C ABI: the one boundary between Rust and the C++/CUDA kernels in csrc/.
 *
 * Conventions
 * - A `wm_tensor` is the handle tch uses (`at::Tensor*`): inputs are lent (`Tensor::as_ptr`), never
 *   freed here; outputs are new handles the caller adopts (`Tensor::from_ptr`) and frees.
 * - Every function returns 0 on success. On failure it returns non-zero, writes no output, and the
 *   message is available from `wm_last_error()` (thread-local, valid until the next call on the
 *   same thread). No C++ exception crosses this boundary.
 * - Optional tensor arguments may be NULL.
 */
#ifndef WAVEMAMBA_H
#define WAVEMAMBA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *wm_tensor;

/* Message of the last failed call on this thread ("" if none). */
const char *wm_last_error(void);

/* Comma-separated list of compiled kernel back-ends: "cpu" or "cpu,cuda". */
const char *wm_kernels(void);

/* libtorch version this library was compiled against, e.g. "2.11.0". */
const char *wm_torch_version(void);

/* Number of visible CUDA devices as seen by the CUDA runtime (0 without the cuda build). */
int wm_cuda_device_count(void);

/* CUDA autocast of this thread (never fails). enter: enables it with lower-precision dtype `dtype`
 * (a c10::ScalarType code, e.g. 15 = bfloat16), saving the previous flag and dtype; exit: leaves
 * the region (clearing the cast cache when the outermost one ends) and restores them. libtorch's
 * CUDA default dtype is float16, and tch's `autocast` never sets it. */
void wm_autocast_cuda_enter(int dtype, int *prev_enabled, int *prev_dtype);
void wm_autocast_cuda_exit(int prev_enabled, int prev_dtype);
void wm_autocast_cuda_state(int *enabled, int *dtype);

/* Name of CUDA device `index` into `buf` (NUL-terminated, truncated to `len`). */
int wm_cuda_device_name(int index, char *buf, int64_t len);

/* CUDA event timer on the current stream of `device` (CUDA builds; elsewhere an error).
 * new: creates one; start: records its start; stop: records its end, waits for it and writes the
 * elapsed milliseconds; free: destroys it (NULL is ignored). */
int wm_cuda_timer_new(int device, void **timer);
int wm_cuda_timer_start(void *timer);
int wm_cuda_timer_stop(void *timer, double *ms);
void wm_cuda_timer_free(void *timer);

/* libtorch's CUDA caching allocator on `device`: bytes allocated now and their peak since the last
 * reset; `reset_peak` != 0 then resets the peak to the current value. */
int wm_cuda_memory(int device, int reset_peak, int64_t *allocated, int64_t *peak);

/* 8-bit style mu-law coding (DESIGN.md §2), CPU and CUDA.
 * encode: x floating (any shape, values clamped to [-1, 1]) -> int64 tokens in [0, mu].
 * decode: q integer (any shape, clamped to [0, mu]) -> float32 in [-1, 1].  1 <= mu <= 65535. */
int wm_mulaw_encode(wm_tensor x, int64_t mu, wm_tensor *out);
int wm_mulaw_decode(wm_tensor q, int64_t mu, wm_tensor *out);

/* Selective scan (Mamba S6), differentiable in every tensor input (autograd Function).
 *   u, delta (B, D, L); A (D, N); Bm, Cm (B, N, L) or (B, G, N, L) with D % G == 0;
 *   D_skip (D) | NULL; z (B, D, L) | NULL; delta_bias (D) | NULL; initial_state (B, D, N) | NULL.
 * Outputs: out (B, D, L), last_state (B, D, N) (float32 unless inputs are float64). */
int wm_selective_scan(wm_tensor u, wm_tensor delta, wm_tensor A, wm_tensor Bm, wm_tensor Cm,
                      wm_tensor D_skip, wm_tensor z, wm_tensor delta_bias,
                      wm_tensor initial_state, int delta_softplus, wm_tensor *out,
                      wm_tensor *last_state);

/* Training support over n parameters at once (ATen's multi-tensor kernels, CPU or CUDA), with no
 * host sync.
 * clip_grad_norm: *total = a new 0-dim float64 tensor on the gradients' device holding their global
 *   L2 norm; when max_norm > 0 every gradient is scaled by min(1, max_norm / (norm + 1e-6)) (by 1
 *   when the norm is not finite).
 * adamw_step: PyTorch's AdamW (fused) update for update number `step` (1-based), float32 only:
 *   p <- p (1 - lr wd); m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
 *   p <- p - lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).
 *   When `skip` (a 0-dim tensor, or NULL) is nonzero, nothing is updated (decided on the device).
 *   Call it once per weight-decay group (wd = 0 for the rest). Gradients are left as they are.
 * zero_: sets every tensor to zero. */
int wm_clip_grad_norm(wm_tensor *grads, int64_t n, double max_norm, wm_tensor *total);
int wm_adamw_step(wm_tensor *params, wm_tensor *grads, wm_tensor *m, wm_tensor *v, int64_t n,
                  double lr, double beta1, double beta2, double eps, double weight_decay,
                  int64_t step, wm_tensor skip);
int wm_zero_(wm_tensor *tensors, int64_t n);

/* Fused CUDA layers, differentiable (autograd Functions), CUDA tensors only (CUDA builds).
 * causal_conv1d_silu: x (B, D, L) float32 or bfloat16, unit stride along L; weight (D, 1, K),
 *   1 <= K <= 8, float32; bias (D) float32 | NULL. out (B, D, L) float32 =
 *   silu(depthwise causal conv1d(x) + bias), x taken as zero before t = 0; when out_bf16 is not
 *   NULL, also the same values in bfloat16 there (a second differentiable output).
 * rms_norm: x (..., C) float32, C <= 1024; weight (C) float32. out = x / sqrt(mean(x^2) + eps) * weight,
 *   float32, or bfloat16 when bf16_out != 0. */
int wm_causal_conv1d_silu(wm_tensor x, wm_tensor weight, wm_tensor bias, wm_tensor *out,
                          wm_tensor *out_bf16);
int wm_rms_norm(wm_tensor x, wm_tensor weight, double eps, int bf16_out, wm_tensor *out);

/* libtorch's Kineto profiler for this process: start records CPU operators (and CUDA kernels when
 * `cuda` != 0); stop ends it and saves a Chrome trace (chrome://tracing, Perfetto) to `path`. */
int wm_profiler_start(int cuda);
int wm_profiler_stop(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* WAVEMAMBA_H */
