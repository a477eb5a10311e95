// ATen driver of the CUDA selective scan (csrc/cuda/scan_*.cu): layouts, allocation, the choice of
// thread layout and time segments, and the launches on the current CUDA stream, each followed by
// C10_CUDA_KERNEL_LAUNCH_CHECK. Compiled only with --features cuda.
//
// Tuning knobs (environment, read at every call; for benchmarks): WM_SCAN_MIN_THREADS (and the
// pass-specific WM_SCAN_FWD_MIN_THREADS / WM_SCAN_BWD_MIN_THREADS): split time into segments until
// rows × lanes × segments reaches this many threads (the forward, once it splits, twice as many);
// WM_SCAN_SEGMENTS forces a segment count;
// WM_SCAN_WIDE (WM_SCAN_FWD_WIDE / WM_SCAN_BWD_WIDE) = 1/0: two states per lane for N ≤ 16, or one
// (WM_SCAN_FWD_WIDE = 2: four, forward only);
// WM_SCAN_BWD_FULL_HISTORY = 1: backward keeping every state of a chunk in shared memory;
// WM_SCAN_BWD_FLUSH = 8/16: backward summing dB/dC every 8 (8 lanes per row only) or 16 steps.
// Defaults are the fastest measured on the H200 (BENCHMARKS.md): forward one state per lane, or
// two / four where the rows allow (forward_width); two states per lane backward, with the short
// flush and at least 98304 threads.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "cuda/kernels.h"
#include "scan/scan.h"

namespace wm::scan {
namespace {

using cuda::ScanArgs;

/// Default of WM_SCAN_MIN_THREADS: (16, 128, L) with N = 16 already has this many lanes.
constexpr int64_t kDefaultMinThreads = 32768;
/// Backward (8 lanes per row, 3 blocks per SM with the short flush): 6 segments at (16, 128, L),
/// ~2 waves of blocks (BENCHMARKS.md, sixth session: 3 segments were 1–5% slower once the
/// backward's dB/dC stores got cheaper, 8 segments (2.6 waves) too); none where B·D·8 ≥ 98304.
constexpr int64_t kDefaultBwdMinThreads = 98304;
/// Forward with 2 or 4 states per lane (N ≤ 16) once that still gives this many lanes: 15.5 warps
/// per SM of the H200. (8, 2048, 2048): 4 states per lane 0.442 → 0.328 ms (bf16), 2 states
/// 0.434 → 0.349 (fp32) (BENCHMARKS.md, seventh session).
constexpr int64_t kWideMinThreads = 65536;
constexpr int64_t kMaxGridYZ = 65535;

int64_t env_int(const char *name, int64_t fallback) {
  const char *v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoll(v, nullptr, 10);
}

/// Pass-specific variable first (e.g. WM_SCAN_FWD_WIDE), then the generic one (WM_SCAN_WIDE).
int64_t knob(const char *specific, const char *generic, int64_t fallback) {
  return env_int(specific, env_int(generic, fallback));
}

/// The forward's default `wide` for scan_config_for: several states per lane, where the rows
/// alone give at least kWideMinThreads lanes that way (4 in bfloat16, 2 in float32, whose 4-state
/// kernel spills at 4 blocks per SM), else one.
int forward_width(const ScanArgs &a) {
  const int64_t rows = a.batch * a.dim;
  if (a.dtype == cuda::ScanDType::BF16 && rows * 4 >= kWideMinThreads) return 2;
  return rows * 8 >= kWideMinThreads ? 1 : 0;
}

bool aligned(const void *p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

template <typename T = void>
const T *cptr(const at::Tensor &t) {
  return t.defined() ? static_cast<const T *>(t.const_data_ptr()) : nullptr;
}

ScanArgs make_args(const Inputs &in, bool backward) {
  const at::ScalarType io = in.u.scalar_type();
  TORCH_CHECK(io == at::kFloat || io == at::kBFloat16,
              "selective scan on CUDA: inputs must be float32 or bfloat16, got ", io);
  ScanArgs a;
  a.batch = in.u.size(0);
  a.dim = in.u.size(1);
  a.len = in.u.size(2);
  a.dstate = in.A.size(1);
  a.groups = in.B.size(1);
  TORCH_CHECK(a.dstate <= 64, "selective scan on CUDA supports N ≤ 64 states, got ", a.dstate);
  TORCH_CHECK(a.batch * a.groups <= kMaxGridYZ, "selective scan on CUDA supports batch × groups ≤ ",
              kMaxGridYZ, ", got ", a.batch * a.groups);
  TORCH_CHECK(a.batch <= kMaxGridYZ, "selective scan on CUDA supports batch ≤ ", kMaxGridYZ,
              ", got ", a.batch);
  a.softplus = in.softplus;
  a.dtype = io == at::kBFloat16 ? cuda::ScanDType::BF16 : cuda::ScanDType::F32;
  const char *wide = backward ? "WM_SCAN_BWD_WIDE" : "WM_SCAN_FWD_WIDE";
  const int64_t w = knob(wide, "WM_SCAN_WIDE", -1);  // unset: the default
  const int64_t width = backward ? (w < 0 ? 1 : std::min<int64_t>(w, 1))
                                 : (w < 0 ? forward_width(a) : std::min<int64_t>(w, 2));
  a.cfg = cuda::scan_config_for(a.dstate, static_cast<int>(width));
  a.bwd_full_history = env_int("WM_SCAN_BWD_FULL_HISTORY", 0) != 0;
  a.bwd_short_flush = env_int("WM_SCAN_BWD_FLUSH", 8) == 8;

  // Segments of whole chunks (see scan_common.cuh).
  a.n_chunks = (a.len + cuda::kScanChunk - 1) / cuda::kScanChunk;
  int64_t n_seg = env_int("WM_SCAN_SEGMENTS", 0);
  if (n_seg <= 0) {
    const char *min_name = backward ? "WM_SCAN_BWD_MIN_THREADS" : "WM_SCAN_FWD_MIN_THREADS";
    const int64_t min_threads = knob(min_name, "WM_SCAN_MIN_THREADS",
                                     backward ? kDefaultBwdMinThreads : kDefaultMinThreads);
    const int64_t threads = a.batch * a.dim * a.cfg.lanes;
    // A segmented forward pays a pass 1 of ~1/3 of the scan: once it must split, it splits
    // into enough segments for twice the minimum (4 blocks per SM fit them in one wave).
    const int64_t want = !backward && threads < min_threads ? 2 * min_threads : min_threads;
    n_seg = (want + threads - 1) / threads;
  }
  n_seg = std::clamp<int64_t>(n_seg, 1, std::min(a.n_chunks, kMaxGridYZ));
  a.chunks_per_seg = (a.n_chunks + n_seg - 1) / n_seg;
  a.n_seg = (a.n_chunks + a.chunks_per_seg - 1) / a.chunks_per_seg;

  a.u = cptr(in.u);
  a.delta = cptr(in.delta);
  a.Bm = cptr(in.B);
  a.Cm = cptr(in.C);
  a.z = cptr(in.z);
  a.A = cptr<float>(in.A);
  a.D_skip = cptr<float>(in.D);
  a.bias = cptr<float>(in.bias);
  a.h0 = cptr<float>(in.h0);
  const int64_t quad = 4 * static_cast<int64_t>(in.u.element_size());
  a.vec = a.len % 4 == 0;
  for (const void *p : {a.u, a.delta, a.Bm, a.Cm, a.z}) {
    if (p != nullptr && !aligned(p, quad)) a.vec = false;
  }
  return a;
}

/// Segmented mode (a.n_seg > 1): the float32 workspace (options `f32`), and passes 1 and 2
/// (`local`, `combine`) queued on `stream`; the main pass reads the result. The workspace lives as
/// long as this object.
class Segments {
 public:
  using Pass = cudaError_t (*)(const ScanArgs &, cudaStream_t);
  Segments(ScanArgs &a, const at::TensorOptions &f32, Pass local, Pass combine,
           cudaStream_t stream) {
    if (a.n_seg <= 1) return;
    state_ = at::empty({a.n_seg, a.batch * a.dim, a.dstate}, f32);
    dtsum_ = at::empty({a.n_seg, a.batch * a.dim}, f32);
    a.seg_state = state_.data_ptr<float>();
    a.seg_dtsum = dtsum_.data_ptr<float>();
    C10_CUDA_CHECK(local(a, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    C10_CUDA_CHECK(combine(a, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

 private:
  at::Tensor state_, dtsum_;
};

void check_inputs(const Inputs &in) {
  const at::ScalarType io = in.u.scalar_type();
  for (const at::Tensor *t : {&in.u, &in.delta, &in.B, &in.C, &in.z}) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == io && t->is_contiguous(),
                "selective scan on CUDA: internal layout error (io tensors)");
  }
  for (const at::Tensor *t : {&in.A, &in.D, &in.bias, &in.h0}) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "selective scan on CUDA: internal layout error (float32 tensors)");
  }
}

}  // namespace

Forward forward_cuda(const Inputs &in, bool save_checkpoints) {
  check_inputs(in);
  const c10::cuda::CUDAGuard device_guard(in.u.device());
  ScanArgs a = make_args(in, /*backward=*/false);
  const auto f32 = in.u.options().dtype(at::kFloat);
  Forward f;
  f.out = at::empty_like(in.u);
  f.last = at::empty({a.batch, a.dim, a.dstate}, f32);
  if (save_checkpoints) f.ckpt = at::empty({a.batch, a.dim, a.n_chunks, a.dstate}, f32);
  a.out = f.out.data_ptr();
  a.last = f.last.data_ptr<float>();
  a.ckpt = save_checkpoints ? f.ckpt.data_ptr<float>() : nullptr;
  // The backward's gz needs x = y + D·u: saved here rather than recomputed there.
  if (save_checkpoints && in.z.defined()) {
    f.x = at::empty_like(in.u);
    a.x = f.x.data_ptr();
  }

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const Segments seg(a, f32, cuda::scan_fwd_local, cuda::scan_fwd_combine, stream);
  C10_CUDA_CHECK(cuda::scan_fwd_main(a, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return f;
}

Grads backward_cuda(const Inputs &in, const at::Tensor &ckpt, const at::Tensor &x,
                    const at::Tensor &gout_, const at::Tensor &glast_) {
  check_inputs(in);
  const c10::cuda::CUDAGuard device_guard(in.u.device());
  ScanArgs a = make_args(in, /*backward=*/true);
  TORCH_CHECK(ckpt.defined() && ckpt.is_cuda() && ckpt.scalar_type() == at::kFloat &&
                  ckpt.is_contiguous() &&
                  ckpt.sizes() == at::IntArrayRef({a.batch, a.dim, a.n_chunks, a.dstate}),
              "selective scan backward: the forward pass saved no usable checkpoints");
  a.ckpt = const_cast<float *>(ckpt.const_data_ptr<float>());
  const auto f32 = in.u.options().dtype(at::kFloat);
  const at::ScalarType io = in.u.scalar_type();
  if (in.z.defined()) {
    TORCH_CHECK(x.defined() && x.is_cuda() && x.scalar_type() == io && x.is_contiguous() &&
                    x.sizes() == in.u.sizes(),
                "selective scan backward: the forward pass saved no usable x = y + D·u");
    a.x = const_cast<void *>(x.const_data_ptr());
    a.vec = a.vec && aligned(a.x, 4 * static_cast<int64_t>(x.element_size()));
  }

  // Any strides are fine for gout (`out.sum()` gives an expanded gradient: no copy).
  at::Tensor gout;
  if (gout_.defined()) {
    gout = gout_.to(io);
    a.gout = gout.const_data_ptr();
    for (int i = 0; i < 3; ++i) a.gout_stride[i] = gout.stride(i);
    a.gout_vec = gout.stride(2) == 1 && gout.stride(1) % 4 == 0 && gout.stride(0) % 4 == 0 &&
                 a.len % 4 == 0 && aligned(a.gout, 4 * static_cast<int64_t>(gout.element_size()));
  }
  const at::Tensor glast = glast_.defined() ? glast_.to(at::kFloat).contiguous() : at::Tensor();
  a.glast = cptr<float>(glast);

  Grads g;
  g.u = at::empty_like(in.u);
  g.delta = at::empty_like(in.u);
  if (in.z.defined()) g.z = at::empty_like(in.u);
  if (in.h0.defined()) g.h0 = at::empty({a.batch, a.dim, a.dstate}, f32);
  g.B = at::empty({a.batch, a.groups, a.dstate, a.len}, in.u.options());
  g.C = at::empty({a.batch, a.groups, a.dstate, a.len}, in.u.options());
  at::Tensor gA_part = at::empty({a.n_seg, a.batch, a.dim, a.dstate}, f32);
  at::Tensor gD_part = in.D.defined() ? at::empty({a.n_seg, a.batch, a.dim}, f32) : at::Tensor();
  at::Tensor gbias_part =
      in.bias.defined() ? at::empty({a.n_seg, a.batch, a.dim}, f32) : at::Tensor();
  const int64_t nrb = cuda::scan_row_blocks(a.cfg, a.dim, a.groups);
  const int64_t np = a.cfg.padded_states();
  at::Tensor dbc_part = at::empty({2, nrb, a.batch, a.groups, a.len, np}, f32);
  a.gu = g.u.data_ptr();
  a.gdelta = g.delta.data_ptr();
  a.gz = g.z.defined() ? g.z.data_ptr() : nullptr;
  a.gh0 = g.h0.defined() ? g.h0.data_ptr<float>() : nullptr;
  a.gA_part = gA_part.data_ptr<float>();
  a.gD_part = gD_part.defined() ? gD_part.data_ptr<float>() : nullptr;
  a.gbias_part = gbias_part.defined() ? gbias_part.data_ptr<float>() : nullptr;
  a.dbc_part = dbc_part.data_ptr<float>();
  a.dbc_stride = dbc_part.stride(0);
  a.gB = g.B.data_ptr();
  a.gC = g.C.data_ptr();

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const Segments seg(a, f32, cuda::scan_bwd_local, cuda::scan_bwd_combine, stream);
  C10_CUDA_CHECK(cuda::scan_bwd_main(a, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  C10_CUDA_CHECK(cuda::scan_dbc_reduce(a, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // Partial sums over (segment, batch): ATen's CUDA reductions are deterministic.
  g.A = gA_part.sum(at::IntArrayRef{0, 1});
  if (gD_part.defined()) g.D = gD_part.sum(at::IntArrayRef{0, 1});
  if (gbias_part.defined()) g.bias = gbias_part.sum(at::IntArrayRef{0, 1});
  return g;
}

}  // namespace wm::scan
