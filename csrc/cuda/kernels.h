// Launchers of the CUDA kernels in csrc/cuda/ (torch-free: included by the shim, the scan driver and
// the .cu files). Each launcher enqueues exactly one kernel on `stream` and returns the status of
// what it did before the launch (kernel attributes); the caller checks that status and then the
// launch itself (C10_CUDA_KERNEL_LAUNCH_CHECK).
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace wm::cuda {

cudaError_t mulaw_encode_f32(const float *x, int64_t *q, int64_t n, float mu, cudaStream_t stream);
cudaError_t mulaw_decode_f32(const int64_t *q, float *x, int64_t n, float mu, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Selective scan (see csrc/cuda/scan_common.cuh for the kernel design).
//
// Layouts (contiguous unless a stride is given), row = b·D + d:
//   u, delta, z, out, x, gu, gdelta, gz (B, D, L)          io dtype (float32 or bfloat16)
//   Bm, Cm, gB, gC                     (B, G, N, L)         io dtype
//   A (D, N), D_skip (D), bias (D), h0 / last / gh0 / glast (B, D, N)       float32
//   ckpt                               (B, D, n_chunks, N)  float32, state before each chunk
//   seg_state                          (n_seg, B·D, N)      float32 workspace (segmented mode)
//   seg_dtsum                          (n_seg, B·D)         float32 workspace
//   gA_part (n_seg, B, D, N), gD_part / gbias_part (n_seg, B, D)  float32 partial sums
//   dbc_part                           (2, n_rowblocks, B, G, L, NP) float32 partial sums of
//                                      dB, dC (NP = lanes · states ≥ N; padded states are 0)
// A chunk is kScanChunk time steps; a segment is `chunks_per_seg` chunks scanned by one block.

constexpr int64_t kScanChunk = 64;

enum class ScanDType : int { F32 = 0, BF16 = 1 };

/// Thread layout of the scan kernels: `lanes` lanes of a warp share one (b, d) row, each lane owns
/// `states` consecutive states, so lanes·states ≥ N (padded states are inert).
struct ScanConfig {
  int lanes = 16;
  int states = 1;
  /// States padded to the thread layout (≥ N): the state stride of the dB/dC partial sums.
  int padded_states() const { return lanes * states; }
};

/// The configuration used for a state size N (1 ≤ N ≤ 64); for N ≤ 16, `wide` = 1 picks 2 states
/// per lane (8 lanes per row) and 2 picks 4 states per lane (4 lanes; forward only) instead of 1
/// (16 lanes).
ScanConfig scan_config_for(int64_t dstate, int wide);
/// Row blocks per group (thread blocks along a group's D / G rows): the row-block count of the
/// dB/dC partial sums.
int64_t scan_row_blocks(ScanConfig cfg, int64_t dim, int64_t groups);

struct ScanArgs {
  int64_t batch = 0, dim = 0, len = 0, dstate = 0, groups = 1;
  int64_t n_chunks = 0, chunks_per_seg = 0, n_seg = 1;
  bool softplus = false;
  ScanDType dtype = ScanDType::F32;
  ScanConfig cfg;
  // Rows of u, delta, z, out, B, C (and gu, gdelta, gz) start 4-element aligned: vector loads.
  bool vec = false;
  // Variant: backward keeping every state of a chunk instead of every 4th.
  bool bwd_full_history = false;
  // Backward flushing dB/dC every 8 steps instead of 16 (8 lanes per row only): less shared memory.
  bool bwd_short_flush = false;
  // Inputs (io dtype unless noted).
  const void *u = nullptr, *delta = nullptr, *Bm = nullptr, *Cm = nullptr, *z = nullptr;
  const float *A = nullptr, *D_skip = nullptr, *bias = nullptr, *h0 = nullptr;
  // Forward outputs.
  void *out = nullptr;
  float *last = nullptr;
  float *ckpt = nullptr;  // written by the forward when not null; read by the backward
  // x = y + D·u before the z gate: written by the forward when not null (and z is given), read by
  // the backward for gz (so the backward does not recompute y = Σ_n C·h).
  void *x = nullptr;
  // Segmented mode workspace.
  float *seg_state = nullptr, *seg_dtsum = nullptr;
  // Backward.
  const void *gout = nullptr;  // (B, D, L) with strides gout_stride (elements); null = zero
  int64_t gout_stride[3] = {0, 0, 0};
  bool gout_vec = false;  // gout rows contiguous and 4-element aligned
  const float *glast = nullptr;  // null = zero
  void *gu = nullptr, *gdelta = nullptr, *gz = nullptr;
  float *gA_part = nullptr, *gD_part = nullptr, *gbias_part = nullptr, *gh0 = nullptr;
  float *dbc_part = nullptr;
  int64_t dbc_stride = 0;  // elements between the dB and dC halves of dbc_part
  void *gB = nullptr, *gC = nullptr;
};

/// Segmented mode, pass 1: end state of each segment scanned from zero, and Σ dt per segment,
/// into seg_state / seg_dtsum.
cudaError_t scan_fwd_local(const ScanArgs &a, cudaStream_t stream);
/// Segmented mode, pass 2: chains the segments (sequential over segments, parallel over states),
/// overwriting seg_state with each segment's true start state.
cudaError_t scan_fwd_combine(const ScanArgs &a, cudaStream_t stream);
/// The forward scan: out, last, and ckpt if requested; starts each segment from seg_state when
/// n_seg > 1 (after the two passes above), else from h0 (or zero).
cudaError_t scan_fwd_main(const ScanArgs &a, cudaStream_t stream);

/// Segmented backward, pass 1: the adjoint of each segment's start state with a zero adjoint at its
/// end, and Σ dt, into seg_state / seg_dtsum.
cudaError_t scan_bwd_local(const ScanArgs &a, cudaStream_t stream);
/// Segmented backward, pass 2: chains the adjoints from the last segment to the first, overwriting
/// seg_state with the adjoint entering each segment from its end (glast for the last).
cudaError_t scan_bwd_combine(const ScanArgs &a, cudaStream_t stream);
/// The backward scan: gu, gdelta, gz, gA/gD/gbias partial sums, gh0, dB/dC partial sums.
cudaError_t scan_bwd_main(const ScanArgs &a, cudaStream_t stream);
/// Sums the dB/dC partials over row blocks (fixed order: deterministic) into gB, gC (io dtype).
cudaError_t scan_dbc_reduce(const ScanArgs &a, cudaStream_t stream);

}  // namespace wm::cuda
