#!/usr/bin/env python3
# Times, with PyTorch on a CUDA machine, the pieces of a training step of the 64 x 8 model at
# 16 x 16384 that are not our scan: depthwise conv1d, AdamW (per-tensor vs foreach), cross-entropy.
# Where the ~75 ms of a `bench train` step go (issue 8). Run: python3 scripts/profile-train-pieces.py
import torch, time
import torch.nn.functional as F
torch.backends.cudnn.benchmark = True
dev = 'cuda'
B, D, L, K = 16, 128, 16384, 4
def timeit(f, n=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): f()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1e3
for dtype in (torch.float32, torch.bfloat16):
    x = torch.randn(B, D, L + K - 1, device=dev, dtype=dtype, requires_grad=True)
    w = torch.randn(D, 1, K, device=dev, dtype=dtype, requires_grad=True)
    b = torch.randn(D, device=dev, dtype=dtype, requires_grad=True)
    fwd = lambda: F.conv1d(x, w, b, groups=D)
    def fb():
        y = F.conv1d(x, w, b, groups=D); y.sum().backward()
    # the same math as shifted multiply-adds (what a fused causal conv does)
    def manual():
        y = sum(x[:, :, k:k + L] * w[:, 0, k].view(1, D, 1) for k in range(K)) + b.view(1, D, 1)
        y.sum().backward()
    print(f"{dtype}: conv1d fwd {timeit(fwd):.3f} ms, fwd+bwd {timeit(fb):.3f} ms, shifted-madd fwd+bwd {timeit(manual):.3f} ms (x8 layers per step)")
# AdamW: 8-layer 64-wide Mamba has ~75 parameter tensors
params = [torch.randn(s, device=dev, requires_grad=True) for s in [(256, 64), (128, 1, 4), (128,), (36, 128), (128, 4), (128,), (128, 16), (128,), (64, 128), (64,)] * 8]
for p in params: p.grad = torch.randn_like(p)
for foreach in (False, True):
    opt = torch.optim.AdamW(params, lr=1e-3, foreach=foreach)
    print(f"AdamW step over {len(params)} tensors, foreach={foreach}: {timeit(opt.step):.3f} ms")
logits = torch.randn(B * 16384, 256, device=dev, requires_grad=True); tgt = torch.randint(0, 256, (B * 16384,), device=dev)
def ce():
    F.cross_entropy(logits, tgt).backward()
print(f"CE fwd+bwd (B*L=262144, 256 classes): {timeit(ce):.3f} ms")
