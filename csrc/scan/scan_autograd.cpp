// The selective scan as a torch::autograd::Function: argument validation, dtype/layout
// normalisation, device dispatch, and the backward wiring (gradients for every tensor input).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "scan/scan.h"

namespace wm {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_shape(const at::Tensor &t, const char *name, at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, "argument `", name, "` must have shape ", expected, ", got ",
              t.sizes());
}

void check_optional(const at::Tensor &t, const char *name, at::IntArrayRef expected,
                    const at::Tensor &u) {
  if (!t.defined()) return;
  check_shape(t, name, expected);
  TORCH_CHECK(t.device() == u.device(), "argument `", name, "` is on ", t.device(),
              " but `u` is on ", u.device());
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "argument `", name,
              "` must be floating point, got ", t.scalar_type());
}

/// Validates shapes/devices/dtypes; returns the number of groups G.
int64_t validate(const at::Tensor &u, const at::Tensor &delta, const at::Tensor &A,
                 const at::Tensor &B, const at::Tensor &C, const at::Tensor &D_skip,
                 const at::Tensor &z, const at::Tensor &bias, const at::Tensor &h0) {
  TORCH_CHECK(u.dim() == 3, "argument `u` must be (batch, dim, len), got shape ", u.sizes());
  const int64_t batch = u.size(0), dim = u.size(1), len = u.size(2);
  TORCH_CHECK(batch > 0 && dim > 0 && len > 0, "argument `u` has an empty dimension: ",
              u.sizes());
  TORCH_CHECK(A.dim() == 2 && A.size(0) == dim && A.size(1) > 0,
              "argument `A` must have shape (", dim, ", N), got ", A.sizes());
  const int64_t dstate = A.size(1);
  TORCH_CHECK(B.dim() == 3 || B.dim() == 4, "argument `B` must be (batch, N, len) or ",
              "(batch, groups, N, len), got ", B.sizes());
  const int64_t groups = B.dim() == 4 ? B.size(1) : 1;
  TORCH_CHECK(groups > 0 && dim % groups == 0, "argument `B`: dim ", dim,
              " is not divisible by groups ", groups);
  const std::vector<int64_t> bc =
      B.dim() == 4 ? std::vector<int64_t>{batch, groups, dstate, len}
                   : std::vector<int64_t>{batch, dstate, len};
  check_shape(delta, "delta", u.sizes());
  check_shape(B, "B", bc);
  check_shape(C, "C", bc);
  for (auto [t, name] : {std::pair{&u, "u"}, {&delta, "delta"}, {&A, "A"}, {&B, "B"}, {&C, "C"}}) {
    TORCH_CHECK(at::isFloatingType(t->scalar_type()), "argument `", name,
                "` must be floating point, got ", t->scalar_type());
    TORCH_CHECK(t->device() == u.device(), "argument `", name, "` is on ", t->device(),
                " but `u` is on ", u.device());
  }
  check_optional(D_skip, "D", {dim}, u);
  check_optional(z, "z", u.sizes(), u);
  check_optional(bias, "delta_bias", {dim}, u);
  check_optional(h0, "initial_state", {batch, dim, dstate}, u);
  return groups;
}

at::ScalarType compute_dtype(const at::Tensor &u) {
  return u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor prep(const at::Tensor &t, at::ScalarType dtype) {
  return t.defined() ? t.to(dtype).contiguous() : at::Tensor();
}

/// Normalises dtypes and layouts for the kernel of u's device (see scan::Inputs).
scan::Inputs make_inputs(const at::Tensor &u, const at::Tensor &delta, const at::Tensor &A,
                         const at::Tensor &B, const at::Tensor &C, const at::Tensor &D_skip,
                         const at::Tensor &z, const at::Tensor &bias, const at::Tensor &h0,
                         bool softplus) {
  at::ScalarType io = compute_dtype(u), param = io;
  if (u.is_cuda()) {
    TORCH_CHECK(u.scalar_type() != at::kDouble,
                "selective scan on CUDA: float64 is not supported (use float32 or bfloat16)");
    io = u.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kFloat;
    param = at::kFloat;
  }
  scan::Inputs in;
  in.u = prep(u, io);
  in.delta = prep(delta, io);
  in.A = prep(A, param);
  in.B = prep(B.dim() == 3 ? B.unsqueeze(1) : B, io);
  in.C = prep(C.dim() == 3 ? C.unsqueeze(1) : C, io);
  in.D = prep(D_skip, param);
  in.z = prep(z, io);
  in.bias = prep(bias, param);
  in.h0 = prep(h0, param);
  in.softplus = softplus;
  return in;
}

scan::Forward run_forward(const scan::Inputs &in, bool save_checkpoints) {
  if (in.u.is_cuda()) {
#ifdef WM_WITH_CUDA
    return scan::forward_cuda(in, save_checkpoints);
#else
    TORCH_CHECK(false, "selective scan on ", in.u.device(),
                ": this build has only the CPU kernel (build with --features cuda)");
#endif
  }
  TORCH_CHECK(in.u.is_cpu(), "selective scan on ", in.u.device(), ": unsupported device");
  return scan::forward_cpu(in, save_checkpoints);
}

scan::Grads run_backward(const scan::Inputs &in, const at::Tensor &ckpt, const at::Tensor &x,
                         const at::Tensor &gout, const at::Tensor &glast) {
  if (in.u.is_cuda()) {
#ifdef WM_WITH_CUDA
    return scan::backward_cuda(in, ckpt, x, gout, glast);
#else
    TORCH_CHECK(false, "selective scan backward on ", in.u.device(),
                ": this build has only the CPU kernel (build with --features cuda)");
#endif
  }
  TORCH_CHECK(in.u.is_cpu(), "selective scan backward on ", in.u.device(), ": unsupported device");
  return scan::backward_cpu(in, ckpt, gout, glast);
}

class ScanFunction : public torch::autograd::Function<ScanFunction> {
 public:
  static variable_list forward(AutogradContext *ctx, const at::Tensor &u,
                               const at::Tensor &delta, const at::Tensor &A,
                               const at::Tensor &B, const at::Tensor &C,
                               const std::optional<at::Tensor> &D_skip,
                               const std::optional<at::Tensor> &z,
                               const std::optional<at::Tensor> &bias,
                               const std::optional<at::Tensor> &h0, bool softplus) {
    // Optional inputs travel as std::optional: autograd rejects undefined tensor arguments.
    scan::Inputs in = make_inputs(u, delta, A, B, C, D_skip.value_or(at::Tensor()),
                                  z.value_or(at::Tensor()), bias.value_or(at::Tensor()),
                                  h0.value_or(at::Tensor()), softplus);
    scan::Forward f = run_forward(in, /*save_checkpoints=*/true);
    ctx->save_for_backward(
        {in.u, in.delta, in.A, in.B, in.C, in.D, in.z, in.bias, in.h0, f.ckpt, f.x});
    ctx->saved_data["softplus"] = softplus;
    ctx->saved_data["b_groups_dim"] = static_cast<int64_t>(B.dim());
    return {f.out.to(u.scalar_type()), f.last};
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    scan::Inputs in;
    in.u = saved[0];
    in.delta = saved[1];
    in.A = saved[2];
    in.B = saved[3];
    in.C = saved[4];
    in.D = saved[5];
    in.z = saved[6];
    in.bias = saved[7];
    in.h0 = saved[8];
    in.softplus = ctx->saved_data["softplus"].toBool();
    const at::Tensor &ckpt = saved[9];
    const at::Tensor &x = saved[10];  // y + D·u (CUDA with z), else undefined
    scan::Grads g = run_backward(in, ckpt, x, grads[0], grads[1]);
    if (ctx->saved_data["b_groups_dim"].toInt() == 3) {
      g.B = g.B.squeeze(1);
      g.C = g.C.squeeze(1);
    }
    return {g.u, g.delta, g.A, g.B, g.C, g.D, g.z, g.bias, g.h0, at::Tensor()};
  }
};

bool any_requires_grad(std::initializer_list<const at::Tensor *> ts) {
  for (const at::Tensor *t : ts) {
    if (t->defined() && t->requires_grad()) return true;
  }
  return false;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor &u, const at::Tensor &delta,
                                                  const at::Tensor &A, const at::Tensor &B,
                                                  const at::Tensor &C, const at::Tensor &D_skip,
                                                  const at::Tensor &z,
                                                  const at::Tensor &delta_bias,
                                                  const at::Tensor &initial_state,
                                                  bool delta_softplus) {
  validate(u, delta, A, B, C, D_skip, z, delta_bias, initial_state);
  const bool needs_grad =
      torch::autograd::GradMode::is_enabled() &&
      any_requires_grad({&u, &delta, &A, &B, &C, &D_skip, &z, &delta_bias, &initial_state});
  if (needs_grad) {
    auto opt = [](const at::Tensor &t) {
      return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
    };
    auto outs = ScanFunction::apply(u, delta, A, B, C, opt(D_skip), opt(z), opt(delta_bias),
                                    opt(initial_state), delta_softplus);
    return {outs[0], outs[1]};
  }
  scan::Inputs in =
      make_inputs(u, delta, A, B, C, D_skip, z, delta_bias, initial_state, delta_softplus);
  scan::Forward f = run_forward(in, /*save_checkpoints=*/false);
  return {f.out.to(u.scalar_type()), f.last};
}

}  // namespace wm
