"""The f' and f'' tile of the learned activations, for the Hamiltonian network's fast path.

Why: a Hamiltonian network predicts an input gradient of its output, so its loss uses f' and its
inner gradient f'' (docs/design.md, "The Hamiltonian network's fast path"); f itself is never
needed. This module holds that tile's maths in plain torch: the forward (f', f'') and the
vector-Jacobian product of <g1, f'> + <g2, f''> with respect to z and the per-neuron weights of
g, which uses f''' and df'/dphi, df''/dphi. `dnn_search.fused` wraps them in an autograd Function
that saves only its inputs and recomputes the B x H x Ho tile in the backward (memory is what the
reference path runs out of), and dispatches to the native C++ kernels whose source is below where
they build.

Notation per tile element (b, h, k): p = w1 z + b1, t = tanh p, e = 1 - t^2 = t', m = -2 t e = e',
n = e (6 t^2 - 2) = m'. Then f' = base' + 0.2 sum_k w2 w1 e and f'' = base'' + 0.2 sum_k w2 w1^2 m.
"""
from __future__ import annotations

import torch

from dnn_search.activations import RESIDUAL_SCALE, base_derivatives


def derivatives_forward(z, w1, b1, w2, base: str):
    """(f', f'') of shape (B, H) for z (B, H) and per-neuron weights (H, Ho)."""
    t = torch.tanh(z[..., None] * w1 + b1)
    e = 1 - t * t
    w21 = w2 * w1
    f1 = (e * w21).sum(-1)
    f2 = (t * e * (w21 * w1)).sum(-1)
    _, d1, d2 = base_derivatives(base, z)
    return d1 + RESIDUAL_SCALE * f1, d2 - 2 * RESIDUAL_SCALE * f2


def derivatives_backward(z, w1, b1, w2, g1, g2, base: str):
    """(grad_z, grad_w1, grad_b1, grad_w2) of <g1, f'> + <g2, f''>; g's output bias gets none."""
    t = torch.tanh(z[..., None] * w1 + b1)
    e = 1 - t * t
    m = -2 * t * e
    n = e * (6 * t * t - 2)
    c1, c2 = g1[..., None], g2[..., None]
    w1c2 = w1 * c2
    p = w1 * (c1 * m + w1c2 * n)  # P = g1 w1 m + g2 w1^2 n
    s = RESIDUAL_SCALE
    grad_w2 = s * (w1 * (c1 * e + w1c2 * m)).sum(0)
    grad_b1 = s * w2 * p.sum(0)
    grad_w1 = s * w2 * (c1 * e + 2 * w1c2 * m + z[..., None] * p).sum(0)
    _, _, d2, d3 = base_derivatives(base, z, order=3)
    grad_z = g1 * d2 + g2 * d3 + s * (p * (w2 * w1)).sum(-1)
    return grad_z, grad_w1, grad_b1, grad_w2


# The same two functions as native C++ (compiled by `dnn_search.native` together with the
# classification kernels, whose `tanh_t` they use): one pass over the tile per direction, tanh once
# per element, parallel over hidden neurons with each thread owning whole rows (reductions over the
# batch in a fixed order: reproducible whatever the thread count). In the backward the weight
# factors are pulled out of the batch sums, leaving four plain sums per (h, k):
#   SA = sum g1 e, SB = sum g2 m, SP = sum P, SZP = sum z P with P = w1 (g1 m + w1 g2 n);
#   grad_w2 = 0.2 w1 (SA + w1 SB), grad_b1 = 0.2 w2 SP, grad_w1 = 0.2 w2 (SA + 2 w1 SB + SZP).
NATIVE_SOURCE = r"""
template <typename T>
void derivatives_forward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* d1, const T* d2,
                              T* f1, T* f2, int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(3 * B);
    T* Z = buf.data(); T* F1 = Z + B; T* F2 = F1 + B;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t b = 0; b < B; ++b) { Z[b] = z[b * H + h]; F1[b] = 0; F2[b] = 0; }
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W21 = w2[h * K + k] * W1, W211 = W21 * W1;
#pragma omp simd
        for (int64_t b = 0; b < B; ++b) {
          T t = tanh_t(Z[b] * W1 + B1);
          T e = T(1) - t * t;
          F1[b] += W21 * e;
          F2[b] += W211 * (t * e);
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        f1[b * H + h] = d1[b * H + h] + s * F1[b];
        f2[b * H + h] = d2[b * H + h] - T(2) * s * F2[b];
      }
    }
  });
}

template <typename T>
void derivatives_backward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* g1, const T* g2,
                               const T* d2, const T* d3, T* gz, T* gw1, T* gb1, T* gw2,
                               int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(4 * B);
    T* Z = buf.data(); T* G1 = Z + B; T* G2 = G1 + B; T* GZ = G2 + B;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t b = 0; b < B; ++b) {
        const int64_t i = b * H + h;
        Z[b] = z[i]; G1[b] = g1[i]; G2[b] = g2[i];
        GZ[b] = g1[i] * d2[i] + g2[i] * d3[i];
      }
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W2 = w2[h * K + k];
        const T gzk = s * W2 * W1;
        T SA = 0, SB = 0, SP = 0, SZP = 0;
#pragma omp simd reduction(+ : SA, SB, SP, SZP)
        for (int64_t b = 0; b < B; ++b) {
          const T zz = Z[b], c1 = G1[b], c2 = G2[b];
          T t = tanh_t(zz * W1 + B1);
          T e = T(1) - t * t;
          T m = T(-2) * t * e;
          T n = e * (T(6) * t * t - T(2));
          T p = W1 * (c1 * m + W1 * c2 * n);
          SA += c1 * e;
          SB += c2 * m;
          SP += p;
          SZP += zz * p;
          GZ[b] += gzk * p;
        }
        gw2[h * K + k] = s * W1 * (SA + W1 * SB);
        gb1[h * K + k] = s * W2 * SP;
        gw1[h * K + k] = s * W2 * (SA + T(2) * W1 * SB + SZP);
      }
      for (int64_t b = 0; b < B; ++b) gz[b * H + h] = GZ[b];
    }
  });
}

// z, d1, d2: (B, H); weights (H, K). Returns f', f''.
std::vector<torch::Tensor> derivatives_forward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1,
                                               torch::Tensor w2, torch::Tensor d1, torch::Tensor d2) {
  z = z.contiguous(); d1 = d1.contiguous(); d2 = d2.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous();
  auto f1 = torch::empty_like(z), f2 = torch::empty_like(z);
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_derivatives_forward", [&] {
    derivatives_forward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                                       w2.data_ptr<scalar_t>(), d1.data_ptr<scalar_t>(), d2.data_ptr<scalar_t>(),
                                       f1.data_ptr<scalar_t>(), f2.data_ptr<scalar_t>(), B, H, K);
  });
  return {f1, f2};
}

// g1, g2 (incoming gradients of f', f''), d2, d3: (B, H). Returns grad z, w1, b1, w2.
std::vector<torch::Tensor> derivatives_backward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1,
                                                torch::Tensor w2, torch::Tensor g1, torch::Tensor g2,
                                                torch::Tensor d2, torch::Tensor d3) {
  z = z.contiguous(); g1 = g1.contiguous(); g2 = g2.contiguous(); d2 = d2.contiguous(); d3 = d3.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous();
  auto gz = torch::empty_like(z), gw1 = torch::empty_like(w1), gb1 = torch::empty_like(b1),
       gw2 = torch::empty_like(w2);
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_derivatives_backward", [&] {
    derivatives_backward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                                        w2.data_ptr<scalar_t>(), g1.data_ptr<scalar_t>(), g2.data_ptr<scalar_t>(),
                                        d2.data_ptr<scalar_t>(), d3.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                                        gw1.data_ptr<scalar_t>(), gb1.data_ptr<scalar_t>(), gw2.data_ptr<scalar_t>(),
                                        B, H, K);
  });
  return {gz, gw1, gb1, gw2};
}
"""
NATIVE_FUNCTIONS = ["derivatives_forward", "derivatives_backward"]
