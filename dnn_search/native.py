"""Native CPU kernels for the fast inner step, built at first use (C++, load_inline).

Why: per inner step the B x H x Ho tile tanh(z * w1 + b1) is needed once forward (for f and f')
and once backward (for five reductions). Inductor re-evaluates tanh for each reduction and its
tanh does not vectorise well; here each direction is one pass over the tile with tanh computed
once per element by a vectorisable float32 approximation (float64 uses libm's tanh), parallel
over hidden neurons (each thread owns whole rows, so the reductions over the batch need no
atomics and their order does not depend on the thread count: results are reproducible). The
inner step's RMSprop update and its vector-Jacobian product are one call each for all four
parameters (at the smoke sizes dispatch overhead, not arithmetic, dominates a step).

The float32 tanh: tanh|x| = -m / (2 + m) with m = expm1(-2|x|), m from a round-to-nearest range
reduction (2^k by bit arithmetic, ln 2 in two parts) and a degree-7 Taylor polynomial of
expm1(r) on |r| <= ln2 / 2, |x| clamped at 9.02 where tanh rounds to 1.0f; sign restored with
copysign, NaN passed through. Measured alternatives (scripts/fit_tanh.py, tests/test_native.py):
one odd minimax rational x P(x^2) / Q(x^2) over [0, 9.02] is 5-6 ulp at best (rounding near 1
is amplified); a fitted rational below 0.625 with 1 - 2e / (1 + e) above is 3 ulp but 10 %
slower forward (both branches run on every lane); this form is 2 ulp (tested <= 4 ulp).

Build cache: $DNN_SEARCH_CACHE/torch_extensions if DNN_SEARCH_CACHE is set, else
<tempdir>/dnn_search-<uid>/torch_extensions (never under $HOME). The module name carries a hash
of the source, the compiler flags, the CPU flags and the torch version, so a cache shared between
different machines never loads a binary built for another CPU. DNN_SEARCH_NATIVE=0 disables it;
without a working compiler `load()` returns None after one warning and callers use the
torch.compile/eager kernels of dnn_search.fused.
"""
from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import threading
import warnings

import torch

from dnn_search import hnn_kernel

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <vector>

static constexpr float kSat = 9.02f;           // tanh(x) rounds to 1.0f beyond 13 ln 2

static inline float tanh_f32(float x) {
  float a = std::fabs(x);
  float y = -2.0f * (a < kSat ? a : kSat);                 // in [-18.04, 0]
  float kf = (y * 1.44269504f + 12582912.0f) - 12582912.0f; // round(y / ln 2)
  float r = (y - kf * 0.693145752f) - kf * 1.42860677e-06f; // ln 2 split in two parts
  float pm1 = r * (1.0f + r * (0.5f + r * (1.66666672e-01f + r * (4.16666679e-02f
            + r * (8.33333377e-03f + r * (1.38888892e-03f + r * 1.98412701e-04f))))));
  int32_t bits = (static_cast<int32_t>(kf) + 127) << 23;    // 2^k, k in [-27, 0]
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float em1 = scale * pm1 + (scale - 1.0f);                 // exp(y) - 1 without cancellation
  float res = -em1 / (2.0f + em1);
  res = a == a ? res : a;                                   // NaN stays NaN
  return std::copysign(res, x);
}
static inline double tanh_t(double x) { return std::tanh(x); }
static inline float tanh_t(float x) { return tanh_f32(x); }

// Arrays of shape (B, H) are row-major; each thread copies the columns of its neurons into
// small contiguous buffers (L2-resident gathers, cheaper than transposing whole arrays) so the
// innermost loop runs over the batch with unit stride, and writes its results back likewise.
template <typename T>
void forward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* b2, const T* d0,
                  const T* d1, T* f, T* fp, int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(3 * B);
    T* Z = buf.data(); T* F = Z + B; T* FP = F + B;
    for (int64_t h = h0; h < h1; ++h) {
      for (int64_t b = 0; b < B; ++b) { Z[b] = z[b * H + h]; F[b] = 0; FP[b] = 0; }
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W2 = w2[h * K + k], W12 = W1 * W2;
#pragma omp simd
        for (int64_t b = 0; b < B; ++b) {
          T t = tanh_t(Z[b] * W1 + B1);
          F[b] += W2 * t;
          FP[b] += W12 * (T(1) - t * t);
        }
      }
      for (int64_t b = 0; b < B; ++b) {
        f[b * H + h] = d0[b * H + h] + s * (F[b] + b2[h]);
        fp[b * H + h] = d1[b * H + h] + s * FP[b];
      }
    }
  });
}

template <typename T>
void backward_impl(const T* z, const T* w1, const T* b1, const T* w2, const T* gf, const T* gfp,
                   const T* d1, const T* d2, T* gz, T* gw1, T* gb1, T* gw2, T* gb2,
                   int64_t B, int64_t H, int64_t K) {
  const T s = T(0.2);
  at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<T> buf(4 * B);
    T* Z = buf.data(); T* C = Z + B; T* CP = C + B; T* GZ = CP + B;
    for (int64_t h = h0; h < h1; ++h) {
      T cb2 = 0;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t i = b * H + h;
        Z[b] = z[i]; C[b] = gf[i]; CP[b] = gfp[i];
        GZ[b] = gf[i] * d1[i] + gfp[i] * d2[i];
        cb2 += gf[i];
      }
      // With e = sech2 (c - 2 w1 cp t), the per-element gradient of u is 0.2 w2 e; the weight
      // factors are pulled out of the batch sums, leaving four plain sums per (h, k).
      for (int64_t k = 0; k < K; ++k) {
        const T W1 = w1[h * K + k], B1 = b1[h * K + k], W2 = w2[h * K + k];
        const T W1x2 = T(2) * W1, gzk = s * W2 * W1;
        T E = 0, EZ = 0, CT = 0, Q = 0;
#pragma omp simd reduction(+ : E, EZ, CT, Q)
        for (int64_t b = 0; b < B; ++b) {
          const T c = C[b], cp = CP[b], zz = Z[b];
          T t = tanh_t(zz * W1 + B1);
          T sech2 = T(1) - t * t;
          T e = sech2 * (c - W1x2 * cp * t);
          E += e;
          EZ += e * zz;
          CT += c * t;
          Q += cp * sech2;
          GZ[b] += gzk * e;
        }
        gb1[h * K + k] = s * W2 * E;
        gw1[h * K + k] = s * W2 * (EZ + Q);
        gw2[h * K + k] = s * (CT + W1 * Q);
      }
      for (int64_t b = 0; b < B; ++b) gz[b * H + h] = GZ[b];
      gb2[h] = s * cb2;
    }
  });
}

// z, d0, d1, gf, gfp, d2: (B, H); weights (H, K); b2 (H,).
std::vector<torch::Tensor> forward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                   torch::Tensor b2, torch::Tensor d0, torch::Tensor d1) {
  z = z.contiguous(); d0 = d0.contiguous(); d1 = d1.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous(); b2 = b2.contiguous();
  auto f = torch::empty_like(z), fp = torch::empty_like(z);
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_forward", [&] {
    forward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                           w2.data_ptr<scalar_t>(), b2.data_ptr<scalar_t>(), d0.data_ptr<scalar_t>(),
                           d1.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), fp.data_ptr<scalar_t>(), B, H, K);
  });
  return {f, fp};
}

std::vector<torch::Tensor> backward(torch::Tensor z, torch::Tensor w1, torch::Tensor b1, torch::Tensor w2,
                                    torch::Tensor gf, torch::Tensor gfp, torch::Tensor d1, torch::Tensor d2) {
  z = z.contiguous(); gf = gf.contiguous(); gfp = gfp.contiguous(); d1 = d1.contiguous(); d2 = d2.contiguous();
  w1 = w1.contiguous(); b1 = b1.contiguous(); w2 = w2.contiguous();
  auto gz = torch::empty_like(z), gw1 = torch::empty_like(w1), gb1 = torch::empty_like(b1),
       gw2 = torch::empty_like(w2), gb2 = torch::empty({z.size(1)}, z.options());
  int64_t B = z.size(0), H = z.size(1), K = w1.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "dnn_search_backward", [&] {
    backward_impl<scalar_t>(z.data_ptr<scalar_t>(), w1.data_ptr<scalar_t>(), b1.data_ptr<scalar_t>(),
                            w2.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(), gfp.data_ptr<scalar_t>(),
                            d1.data_ptr<scalar_t>(), d2.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                            gw1.data_ptr<scalar_t>(), gb1.data_ptr<scalar_t>(), gw2.data_ptr<scalar_t>(),
                            gb2.data_ptr<scalar_t>(), B, H, K);
  });
  return {gz, gw1, gb1, gw2, gb2};
}

// RMSprop of the inner step for all parameters in one call (forward), and its vector-Jacobian
// product (backward); the same expressions as dnn_search.inner_step's torch fallback.
template <typename T>
void rmsprop_forward_impl(const T* t, const T* g, const T* v, T* tn, T* vn, T* rn, int64_t n,
                          T mu, T lr, T eps) {
  const T m1 = T(1) - mu;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    T vv = mu * v[j] + m1 * g[j] * g[j];
    T r = std::sqrt(vv);
    vn[j] = vv; rn[j] = r;
    tn[j] = t[j] - lr * g[j] / (r + eps);
  }
}

template <typename T>
void rmsprop_backward_impl(const T* g, const T* r, const T* tb, const T* vb, T* gb, T* vo, int64_t n,
                           T mu, T lr, T eps) {
  const T two_m1 = T(2) * (T(1) - mu);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    // t' = t - lr g / d, d = sqrt(v') + eps, v' = mu v + (1 - mu) g^2
    T d = r[j] + eps;
    T scaled = tb[j] * lr / d;
    T v_total = vb[j] + scaled * g[j] / (d * 2 * r[j]);
    gb[j] = v_total * g[j] * two_m1 - scaled;
    vo[j] = v_total * mu;
  }
}

std::vector<torch::Tensor> rmsprop_forward(std::vector<torch::Tensor> theta, std::vector<torch::Tensor> grads,
                                           std::vector<torch::Tensor> second, double mu, double lr, double eps) {
  const size_t k = theta.size();
  std::vector<torch::Tensor> out(3 * k);
  for (size_t i = 0; i < k; ++i) {
    auto t = theta[i].contiguous(), g = grads[i].contiguous(), v = second[i].contiguous();
    auto tn = torch::empty_like(t), vn = torch::empty_like(t), rn = torch::empty_like(t);
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "dnn_search_rmsprop_forward", [&] {
      rmsprop_forward_impl<scalar_t>(t.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                     tn.data_ptr<scalar_t>(), vn.data_ptr<scalar_t>(), rn.data_ptr<scalar_t>(),
                                     t.numel(), scalar_t(mu), scalar_t(lr), scalar_t(eps));
    });
    out[i] = tn; out[k + i] = vn; out[2 * k + i] = rn;
  }
  return out;
}

std::vector<torch::Tensor> rmsprop_backward(std::vector<torch::Tensor> grads, std::vector<torch::Tensor> roots,
                                            std::vector<torch::Tensor> theta_bars, std::vector<torch::Tensor> second_bars,
                                            double mu, double lr, double eps) {
  const size_t k = grads.size();
  std::vector<torch::Tensor> out(2 * k);
  for (size_t i = 0; i < k; ++i) {
    auto g = grads[i].contiguous(), r = roots[i].contiguous(), tb = theta_bars[i].contiguous(),
         vb = second_bars[i].contiguous();
    auto gb = torch::empty_like(g), vo = torch::empty_like(g);
    AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "dnn_search_rmsprop_backward", [&] {
      rmsprop_backward_impl<scalar_t>(g.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), tb.data_ptr<scalar_t>(),
                                      vb.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), vo.data_ptr<scalar_t>(),
                                      g.numel(), scalar_t(mu), scalar_t(lr), scalar_t(eps));
    });
    out[i] = gb; out[k + i] = vo;
  }
  return out;
}

torch::Tensor tanh32(torch::Tensor x) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "tanh32 takes float32");
  x = x.contiguous();
  auto out = torch::empty_like(x);
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  int64_t n = x.numel();
  at::parallel_for(0, n, 4096, [&](int64_t i0, int64_t i1) {
#pragma omp simd
    for (int64_t i = i0; i < i1; ++i) dst[i] = tanh_f32(src[i]);
  });
  return out;
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]
if platform.machine() in ("x86_64", "AMD64"):
    _FLAGS.append("-mprefer-vector-width=512")  # gcc defaults to 256-bit vectors even with AVX-512
_FUNCTIONS = ["forward", "backward", "rmsprop_forward", "rmsprop_backward", "tanh32"]
_SOURCE += hnn_kernel.NATIVE_SOURCE  # the f'/f'' tile of the Hamiltonian network
_FUNCTIONS += hnn_kernel.NATIVE_FUNCTIONS
_lock = threading.Lock()
_state: dict[str, object] = {}


def enabled() -> bool:
    return os.environ.get("DNN_SEARCH_NATIVE", "1") != "0"


def build_dir() -> str:
    root = os.environ.get("DNN_SEARCH_CACHE") or os.path.join(tempfile.gettempdir(), f"dnn_search-{os.getuid()}")
    path = os.path.join(root, "torch_extensions")
    os.makedirs(path, exist_ok=True)
    return path


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = [platform.processor()]
    return "".join(lines)


def _module_name() -> str:
    key = "\n".join([_SOURCE, " ".join(_FLAGS), _cpu_signature(), torch.__version__, platform.machine()])
    return "dnn_search_native_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def load():
    """The compiled module, or None (disabled, or the build failed: warned once)."""
    if not enabled():
        return None
    with _lock:
        if "module" not in _state:
            try:
                from torch.utils.cpp_extension import load_inline
                name = _module_name()
                _state["module"] = load_inline(
                    name=name, cpp_sources=_SOURCE, functions=_FUNCTIONS, extra_cflags=_FLAGS,
                    extra_ldflags=["-fopenmp"], build_directory=_ensure(os.path.join(build_dir(), name)),
                    verbose=False)
            except Exception as exc:  # no compiler, no headers, no ninja: the torch kernels remain
                warnings.warn(f"native kernels unavailable ({type(exc).__name__}: {str(exc)[:300]}); "
                              "using the torch.compile/eager kernels", RuntimeWarning, stacklevel=2)
                _state["module"] = None
        return _state["module"]


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
