#include "gemm_glue.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

namespace fastgan {

#if defined(FASTGAN_WITH_CUDA)
int current_cuda_sm_count(const at::Tensor& t);  // cuda_stream.cpp
#endif

int gemm_sm_count(const Exec& ex, const at::Tensor& t) {
#if defined(FASTGAN_WITH_CUDA)
  if (ex.backend == Backend::CUDA) return current_cuda_sm_count(t);
#else
  (void)t;
#endif
  (void)ex;
  return 132;
}


bool run_gemms(const Exec& ex, std::vector<GemmParams>& ps, const at::Tensor& like) {
  TORCH_CHECK(ex.kernels != nullptr && ex.kernels->gemm != nullptr, "fastgan: no GEMM kernels in this backend");
  const int sm = gemm_sm_count(ex, like);
  std::vector<int64_t> bytes(ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {  // every part inside the limits before any runs
    ps[i].sm_count = sm;
    bytes[i] = ex.kernels->gemm_workspace(ps[i]);
    if (bytes[i] < 0) return false;
  }
  std::vector<at::Tensor> ws(ps.size());  // caching allocator, stream-ordered: reusable once the launches are queued
  bool split = false;
  for (size_t i = 0; i < ps.size(); ++i) {
    if (bytes[i] > 0) {
      ws[i] = at::empty({bytes[i]}, like.options().dtype(at::kByte));
      ps[i].workspace = ws[i].mutable_data_ptr();
      split = true;
    }
  }
  with_counters(ex, like, split, [&](int* counters) {
    for (size_t i = 0; i < ps.size(); ++i)
      if (bytes[i] > 0) ps[i].counters = counters;
    try {
      ex.kernels->gemm(ps.data(), (int)ps.size(), ex.stream);
    } catch (const std::invalid_argument& e) {
      TORCH_CHECK(false, e.what());
    }
  });
  return true;
}

bool run_gemm(const Exec& ex, GemmParams& p, const at::Tensor& like) {
  std::vector<GemmParams> ps{p};
  const bool ok = run_gemms(ex, ps, like);
  p = ps[0];
  return ok;
}

LayerGrad::LayerGrad(const Exec& ex_, at::Tensor dy_, at::Tensor y_, int64_t dim_, int act_, double alpha_,
                     double gain_, double clamp_, at::Tensor db_)
    : ex(ex_), dy(std::move(dy_)), y(std::move(y_)), dim(dim_), act(act_), alpha(alpha_), gain(gain_),
      clamp(clamp_), db(std::move(db_)), db_done(!db.defined()) {}

const at::Tensor& LayerGrad::dz() {
  if (dz_.defined()) return dz_;
  if (!y.defined() && db_done) {
    dz_ = dy;
    return dz_;
  }
  // bias_act_backward's pass (a copy of dy plus the bias gradient when y is undefined: act linear)
  const at::Tensor& like = y.defined() ? y : dy;
  dz_ = poisoned(at::empty_like(like));
  const at::Tensor yd = with_strides_of(like, dz_), dyd = with_strides_of(dy, dz_);
  bias_act_backward_into(ex, dyd, yd, dz_, db_done ? at::Tensor() : db, dim, y.defined() ? act : 0,
                         y.defined() ? alpha : 0.0, y.defined() ? gain : 1.0, y.defined() ? clamp : -1.0);
  db_done = true;
  return dz_;
}

bool LayerGrad::foldable(const at::Tensor& a, const at::Tensor& y_view) const {
  if (!y.defined()) return true;
  for (int64_t d = 0; d < a.dim(); ++d)  // (a size-1 dim's index is always 0: its stride does not matter)
    if (a.size(d) > 1 && a.stride(d) != y_view.stride(d)) return false;
  return true;
}

void LayerGrad::fold(GemmParams& p, const at::Tensor& y_view) const {
  if (!y.defined()) return;
  p.a_y = y_view.const_data_ptr();
  p.a_act = act;
  p.a_alpha = alpha;
  p.a_gain = gain;
  p.a_clamp = clamp;
}

GemmIndex gemm_index1(int64_t stride) {
  GemmIndex g;
  g.off[0] = stride;
  return g;
}

bool gemm_k_fast(int64_t r_unit_stride, int64_t k_unit_stride) { return !(r_unit_stride == 1 && k_unit_stride != 1); }

bool gemm_poor_fit(int64_t M, int64_t N, double macs) {
  const double tiles = double((M + 63) / 64) * double((N + 63) / 64) * 4096.0;
  return macs >= double(1 << 24) && tiles > 0 && double(M) * double(N) < 0.25 * tiles;
}

namespace {
enum class Route : int { automatic = 0, kernels = 1, aten = 2 };
constexpr const char* kRouteNames[] = {"auto", "kernels", "aten"};

int route_code(const char* v) {
  for (int i = 0; i < 3; ++i)
    if (std::strcmp(v, kRouteNames[i]) == 0) return i;
  return -1;
}

// -1 until first read: FASTGAN_CUDA_GEMM, then whatever set_cuda_gemm_route chose.
std::atomic<int> g_route{-1};

Route cuda_route() {
  int r = g_route.load(std::memory_order_relaxed);
  if (r < 0) {
    const char* v = std::getenv("FASTGAN_CUDA_GEMM");
    r = (v == nullptr || *v == 0) ? 0 : route_code(v);
    if (r < 0) {
      TORCH_WARN("FASTGAN_CUDA_GEMM=", v, " is not one of auto, kernels, aten; using auto");
      r = 0;
    }
    int expected = -1;
    if (!g_route.compare_exchange_strong(expected, r)) r = expected;  // a concurrent setter won
  }
  return static_cast<Route>(r);
}
}  // namespace

void set_cuda_gemm_route(const std::string& name) {
  const int r = route_code(name.c_str());
  TORCH_CHECK_VALUE(r >= 0, "route: expected one of 'auto', 'kernels', 'aten', got '", name, "'");
  g_route.store(r);
}

std::string cuda_gemm_route() { return kRouteNames[static_cast<int>(cuda_route())]; }

bool cuda_prefers_aten(const at::Tensor& t, double macs, int64_t min_dim, bool poor_fit) {
  switch (cuda_route()) {
    case Route::kernels: return false;
    case Route::aten: return true;
    case Route::automatic: break;
  }
  if (poor_fit) return true;
  // Predictions (no GPU measurement yet): our mma.sync tiles (no cp.async / ldmatrix pipelining yet) and the
  // SIMT tiles of exact float32 reach a fraction of cuBLAS/cuDNN on large products. The fused epilogue saves one
  // pass over the output (~2 * output bytes / 3.3 TB/s) and a launch (~3-5 us): worth less than the GEMM gap
  // beyond these sizes (arithmetic in benchmarks/notes_kernels.md). To be set from the GPU check's measurements.
  const bool half = t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16;
  if (half) return macs >= double(1 << 26) && min_dim >= 16;
  return macs >= double(1 << 30) && min_dim >= 64;
}

}  // namespace fastgan
