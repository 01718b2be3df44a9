#include "prism/models/decode_weights.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <dlfcn.h>
#include <sys/mman.h>

#include <climits>

#include "prism/core/error.h"
#include "prism/models/causal_lm.h"

namespace prism::models {

namespace {

// MKL's packed-GEMM entry points (LP64 CBLAS: MKL_INT is int). LibTorch's CPU library links MKL
// statically and exports them on x86-64 builds; other builds (aarch64, a LibTorch without MKL)
// lack them and the copies stay [in, out] transposes. Looked up at run time so that prism links
// against any LibTorch.
struct MklPackedGemm {
  using GetSize = size_t (*)(int identifier, int m, int n, int k);
  using Pack = void (*)(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                        int ld, float* dest);
  using Compute = void (*)(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                           const float* b, int ldb, float beta, float* c, int ldc);
  // CBLAS enum values (mkl_cblas.h).
  static constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;
  GetSize get_size = nullptr;
  Pack pack = nullptr;
  Compute compute = nullptr;

  // nullptr when this process has no MKL packed GEMM. Resolved once (immutable afterwards).
  static const MklPackedGemm* get() {
    static const MklPackedGemm m = [] {
      MklPackedGemm r;
      r.get_size = reinterpret_cast<GetSize>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack_get_size"));
      r.pack = reinterpret_cast<Pack>(dlsym(RTLD_DEFAULT, "cblas_sgemm_pack"));
      r.compute = reinterpret_cast<Compute>(dlsym(RTLD_DEFAULT, "cblas_sgemm_compute"));
      return r;
    }();
    return m.get_size && m.pack && m.compute ? &m : nullptr;
  }
};

// The packed layout does not depend on the row count of the products (MKL's size query ignores
// it; tests compare products of every row count with at::linear), so one pack serves every batch.
constexpr int kPackRows = 64;

// MKL's packed-buffer size is far above the packed data (+9 MB per matrix, up to 2x for the
// lm_head) and only the data is written. The buffer is an anonymous mapping of its own, so the
// pages MKL never writes are never backed by memory (RSS grows by the data only); c10's allocator
// would count, and may recycle and touch, the whole reservation.
at::Tensor packed_buffer(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  PRISM_CHECK(p != MAP_FAILED, "DecodeWeights: cannot map ", bytes, " bytes for a packed weight copy");
  return at::from_blob(
      p, {static_cast<int64_t>(bytes)}, [bytes](void* q) { munmap(q, bytes); }, at::TensorOptions().dtype(at::kByte));
}

}  // namespace

DecodeWeights::DecodeWeights(const CausalLM& model, int64_t min_packed_bytes)
    : model_(model), min_packed_bytes_(min_packed_bytes) {
  refresh();
}

void DecodeWeights::refresh() {
  at::NoGradGuard ng;
  // The matrices forward multiplies through linear: every 2-D matrix parameter (a Mamba2 conv
  // weight is 3-D) and the lm_head, which is the embedding when tied.
  std::vector<const at::Tensor*> mats;
  const auto& named = model_.named_parameters();
  const auto& kinds = model_.parameter_kinds();
  for (size_t i = 0; i < named.size(); ++i)
    if ((kinds[i] == ParameterKind::kMatrix || kinds[i] == ParameterKind::kLmHead) && named[i].second.dim() == 2)
      mats.push_back(&named[i].second);
  mats.push_back(&model_.lm_head_weight());

  const MklPackedGemm* mkl = MklPackedGemm::get();
  std::unordered_map<const void*, Copy> next;
  bytes_ = 0;
  packed_count_ = 0;
  for (const at::Tensor* w : mats) {
    const void* key = w->unsafeGetTensorImpl();
    if (next.count(key)) continue;  // a tied lm_head is also listed as a parameter
    Copy c;
    c.out = w->size(0);
    c.in = w->size(1);
    c.packed = mkl && w->device().is_cpu() && w->scalar_type() == at::kFloat && c.in <= INT_MAX && c.out <= INT_MAX &&
               static_cast<int64_t>(w->nbytes()) >= min_packed_bytes_;
    const auto old = copies_.find(key);
    const bool reuse = old != copies_.end() && old->second.packed == c.packed && old->second.in == c.in &&
                       old->second.out == c.out &&
                       old->second.data.scalar_type() == (c.packed ? at::kByte : w->scalar_type()) &&
                       old->second.data.device() == w->device();
    if (c.packed) {
      const int K = static_cast<int>(c.in), N = static_cast<int>(c.out);
      c.data = reuse ? old->second.data : packed_buffer(mkl->get_size(MklPackedGemm::kBMatrix, kPackRows, N, K));
      // B = W^T ([K, N]) is the [out, in] parameter read as column-major: pack it as op(B) = src^T.
      const auto src = w->contiguous();
      mkl->pack(MklPackedGemm::kRowMajor, MklPackedGemm::kBMatrix, MklPackedGemm::kTrans, kPackRows, N, K, 1.0f,
                src.data_ptr<float>(), K, reinterpret_cast<float*>(c.data.data_ptr()));
      ++packed_count_;
    } else {
      c.data = reuse ? old->second.data : at::empty({c.in, c.out}, w->options());
      c.data.copy_(w->t());
    }
    bytes_ += static_cast<int64_t>(w->nbytes());
    next.emplace(key, std::move(c));
  }
  copies_ = std::move(next);
}

at::Tensor DecodeWeights::linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) const {
  const auto it = copies_.find(w.unsafeGetTensorImpl());
  if (it == copies_.end()) return {};
  const Copy& c = it->second;
  // Activations the packed fp32 product cannot take: the caller's at::linear on the parameter.
  if (c.packed && (x.scalar_type() != at::kFloat || !x.device().is_cpu())) return {};
  auto x2 = x.reshape({-1, x.size(-1)});
  auto sizes = x.sizes().vec();
  sizes.back() = c.out;
  if (!c.packed) return (bias.defined() ? at::addmm(bias, x2, c.data) : at::mm(x2, c.data)).view(sizes);
  x2 = x2.contiguous();
  const int64_t M = x2.size(0);
  // A fresh output (an expanded bias made contiguous may alias the bias itself), C = bias + A B.
  auto y = at::empty({M, c.out}, x2.options());
  float beta = 0.0f;
  if (bias.defined()) {
    y.copy_(bias.expand({M, c.out}));
    beta = 1.0f;
  }
  if (M > 0) {
    PRISM_CHECK(M <= INT_MAX, "DecodeWeights::linear: ", M, " rows exceed MKL's 32-bit row count");
    const MklPackedGemm* mkl = MklPackedGemm::get();
    mkl->compute(MklPackedGemm::kRowMajor, MklPackedGemm::kNoTrans, MklPackedGemm::kPacked, static_cast<int>(M),
                 static_cast<int>(c.out), static_cast<int>(c.in), x2.data_ptr<float>(), static_cast<int>(c.in),
                 reinterpret_cast<const float*>(c.data.data_ptr()), static_cast<int>(c.out), beta, y.data_ptr<float>(),
                 static_cast<int>(c.out));
  }
  return y.view(sizes);
}

}  // namespace prism::models
