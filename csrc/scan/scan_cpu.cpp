// ATen driver of the CPU selective scan: layouts, allocation, threading (at::parallel_for over
// (batch, channel) rows) and the choice between the AVX2 and the generic kernel builds.
#include <ATen/Parallel.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "scan/scan.h"
#include "scan/scan_kernels.h"

namespace wm::scan {
namespace {

bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

template <typename T>
const T *ptr_or_null(const at::Tensor &t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <typename T>
T *mut_or_null(at::Tensor &t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

/// (B, G, N, L) -> (B, G, L, N), contiguous.
at::Tensor time_major(const at::Tensor &x) { return x.transpose(-1, -2).contiguous(); }

/// Rows per parallel task: enough work per task to amortise scheduling.
int64_t grain_for(int64_t len) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(len, 1)); }

template <typename T>
FwdParams<T> make_params(const Inputs &in, const at::Tensor &Bt, const at::Tensor &Ct) {
  FwdParams<T> p{};
  p.batch = in.u.size(0);
  p.dim = in.u.size(1);
  p.len = in.u.size(2);
  p.dstate = in.A.size(1);
  p.groups = in.B.size(1);
  p.softplus = in.softplus;
  p.u = in.u.data_ptr<T>();
  p.delta = in.delta.data_ptr<T>();
  p.A = in.A.data_ptr<T>();
  p.Bt = Bt.data_ptr<T>();
  p.Ct = Ct.data_ptr<T>();
  p.D_skip = ptr_or_null<T>(in.D);
  p.z = ptr_or_null<T>(in.z);
  p.delta_bias = ptr_or_null<T>(in.bias);
  p.h0 = ptr_or_null<T>(in.h0);
  return p;
}

template <typename T>
Forward forward_typed(const Inputs &in, bool save_checkpoints) {
  const at::Tensor Bt = time_major(in.B), Ct = time_major(in.C);
  const int64_t batch = in.u.size(0), dim = in.u.size(1), len = in.u.size(2);
  const int64_t dstate = in.A.size(1);
  Forward f;
  f.out = at::empty({batch, dim, len}, in.u.options());
  f.last = at::empty({batch, dim, dstate}, in.u.options());
  if (save_checkpoints) f.ckpt = at::empty({batch, dim, n_chunks(len), dstate}, in.u.options());
  FwdParams<T> p = make_params<T>(in, Bt, Ct);
  p.out = f.out.data_ptr<T>();
  p.last = f.last.data_ptr<T>();
  p.ckpt = mut_or_null<T>(f.ckpt);
  const bool wide = cpu_has_avx2();
  at::parallel_for(0, batch * dim, grain_for(len), [&](int64_t r0, int64_t r1) {
    if (wide) {
      avx2::fwd_rows<T>(p, r0, r1);
    } else {
      generic::fwd_rows<T>(p, r0, r1);
    }
  });
  return f;
}

template <typename T>
Grads backward_typed(const Inputs &in, const at::Tensor &ckpt, const at::Tensor &gout_,
                     const at::Tensor &glast_) {
  const at::Tensor Bt = time_major(in.B), Ct = time_major(in.C);
  const int64_t batch = in.u.size(0), dim = in.u.size(1), len = in.u.size(2);
  const int64_t dstate = in.A.size(1), groups = in.B.size(1);
  const auto opts = in.u.options();
  // Any strides are fine (the kernel reads through them): `out.sum()` gives an expanded gradient
  // that must not be materialised.
  const at::Tensor gout = gout_.defined() ? gout_.to(in.u.scalar_type())
                                          : at::zeros({1, 1, 1}, in.u.options()).expand_as(in.u);
  const at::Tensor glast =
      glast_.defined() ? glast_.to(in.u.scalar_type()).contiguous() : at::Tensor();

  Grads g;
  g.u = at::empty_like(in.u);
  g.delta = at::empty_like(in.u);
  if (in.z.defined()) g.z = at::empty_like(in.u);
  at::Tensor gA_rows = at::empty({batch, dim, dstate}, opts);
  at::Tensor gD_rows = in.D.defined() ? at::empty({batch, dim}, opts) : at::Tensor();
  at::Tensor gbias_rows = in.bias.defined() ? at::empty({batch, dim}, opts) : at::Tensor();
  if (in.h0.defined()) g.h0 = at::empty({batch, dim, dstate}, opts);
  at::Tensor gBt = at::zeros({batch, groups, len, dstate}, opts);
  at::Tensor gCt = at::zeros({batch, groups, len, dstate}, opts);

  BwdParams<T> q{};
  q.f = make_params<T>(in, Bt, Ct);
  q.f.ckpt = const_cast<T *>(ckpt.data_ptr<T>());
  q.gout = gout.data_ptr<T>();
  for (int i = 0; i < 3; ++i) q.gout_stride[i] = gout.stride(i);
  q.glast = ptr_or_null<T>(glast);
  q.gu = g.u.data_ptr<T>();
  q.gdelta = g.delta.data_ptr<T>();
  q.gz = mut_or_null<T>(g.z);
  q.gA_rows = gA_rows.data_ptr<T>();
  q.gD_rows = mut_or_null<T>(gD_rows);
  q.gbias_rows = mut_or_null<T>(gbias_rows);
  q.gh0 = mut_or_null<T>(g.h0);

  const bool wide = cpu_has_avx2();
  const int64_t slice = groups * len * dstate;  // one batch entry of dB or dC
  // Private dB/dC accumulators per task, covering only the batches the task touches (channels of
  // one group may be split across tasks). They are merged after the parallel region in task
  // order, so results do not depend on thread timing (bit-exact reruns and resumes).
  struct Partial {
    int64_t r0 = 0, b0 = 0, nb = 0;
    std::vector<T> dB, dC;
  };
  std::vector<Partial> partials;
  std::mutex registry;
  at::parallel_for(0, batch * dim, grain_for(len), [&](int64_t r0, int64_t r1) {
    Partial part;
    part.r0 = r0;
    part.b0 = r0 / dim;
    part.nb = (r1 - 1) / dim + 1 - part.b0;
    part.dB.assign(part.nb * slice, T(0));
    part.dC.assign(part.nb * slice, T(0));
    BwdParams<T> local = q;
    local.gBt_acc = part.dB.data();
    local.gCt_acc = part.dC.data();
    local.acc_b0 = part.b0;
    if (wide) {
      avx2::bwd_rows<T>(local, r0, r1);
    } else {
      generic::bwd_rows<T>(local, r0, r1);
    }
    std::lock_guard<std::mutex> lock(registry);
    partials.push_back(std::move(part));
  });
  std::sort(partials.begin(), partials.end(),
            [](const Partial &a, const Partial &b) { return a.r0 < b.r0; });
  T *gB_all = gBt.data_ptr<T>(), *gC_all = gCt.data_ptr<T>();
  for (const Partial &part : partials) {
    T *dB = gB_all + part.b0 * slice, *dC = gC_all + part.b0 * slice;
    for (int64_t i = 0; i < part.nb * slice; ++i) {
      dB[i] += part.dB[i];
      dC[i] += part.dC[i];
    }
  }
  g.A = gA_rows.sum(0);
  if (gD_rows.defined()) g.D = gD_rows.sum(0);
  if (gbias_rows.defined()) g.bias = gbias_rows.sum(0);
  g.B = gBt.transpose(-1, -2).contiguous();
  g.C = gCt.transpose(-1, -2).contiguous();
  return g;
}

}  // namespace

Forward forward_cpu(const Inputs &in, bool save_checkpoints) {
  if (in.u.scalar_type() == at::kDouble) return forward_typed<double>(in, save_checkpoints);
  return forward_typed<float>(in, save_checkpoints);
}

Grads backward_cpu(const Inputs &in, const at::Tensor &ckpt, const at::Tensor &gout,
                   const at::Tensor &glast) {
  TORCH_CHECK(ckpt.defined(), "selective scan backward: the forward pass saved no checkpoints");
  if (in.u.scalar_type() == at::kDouble) return backward_typed<double>(in, ckpt, gout, glast);
  return backward_typed<float>(in, ckpt, gout, glast);
}

}  // namespace wm::scan
