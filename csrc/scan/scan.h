// Selective scan: the autograd entry point and the per-device drivers (ATen types).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace wm {

/// Differentiable selective scan (see wavemamba.h for shapes). Validates arguments, then runs the
/// autograd Function when a gradient is needed, the plain forward kernel otherwise.
/// Returns (out (B, D, L) in u's dtype, last_state (B, D, N) float32/float64).
std::tuple<at::Tensor, at::Tensor> selective_scan(const at::Tensor &u, const at::Tensor &delta,
                                                  const at::Tensor &A, const at::Tensor &B,
                                                  const at::Tensor &C, const at::Tensor &D_skip,
                                                  const at::Tensor &z,
                                                  const at::Tensor &delta_bias,
                                                  const at::Tensor &initial_state,
                                                  bool delta_softplus);

namespace scan {

/// Scan inputs, contiguous; B and C are (B, G, N, L). Optional tensors are undefined when absent.
/// CPU: everything in the compute dtype (float32 or float64). CUDA: u, delta, B, C, z in the io
/// dtype (bfloat16 for bfloat16 `u`, else float32); A, D, bias, h0 in float32.
struct Inputs {
  at::Tensor u, delta, A, B, C, D, z, bias, h0;
  bool softplus = false;
};

struct Forward {
  at::Tensor out;   // (B, D, L), compute dtype (CPU) / io dtype (CUDA)
  at::Tensor last;  // (B, D, N)
  at::Tensor ckpt;  // (B, D, n_chunks, N), only when requested
  at::Tensor x;     // CUDA, with checkpoints and z: (B, D, L) io dtype, y + D·u before the gate
};

/// Gradients for each input of `Inputs` (undefined where the input is absent).
struct Grads {
  at::Tensor u, delta, A, B, C, D, z, bias, h0;
};

Forward forward_cpu(const Inputs &in, bool save_checkpoints);
/// `gout` (B, D, L) and `glast` (B, D, N) may be undefined (= zero).
Grads backward_cpu(const Inputs &in, const at::Tensor &ckpt, const at::Tensor &gout,
                   const at::Tensor &glast);

/// The CUDA kernels (scan_cuda.cpp; defined only in builds with --features cuda). Gradients of
/// u, delta, z, B, C come back in the io dtype, the others in float32.
Forward forward_cuda(const Inputs &in, bool save_checkpoints);
/// `x`: Forward::x (needed when z is given).
Grads backward_cuda(const Inputs &in, const at::Tensor &ckpt, const at::Tensor &x,
                    const at::Tensor &gout, const at::Tensor &glast);

}  // namespace scan
}  // namespace wm
