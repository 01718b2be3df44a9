#include "analysis/checkpoint_set.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::analysis {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// The stored name of `name` in `reader`, trying the family's prefix aliases as from_pretrained does.
std::string stored_name(const io::CheckpointReader& reader, const models::ModelConfig& cfg, const std::string& name) {
  if (reader.contains(name)) return name;
  for (const auto& [from, to] : cfg.name_aliases) {
    if (name.rfind(from, 0) == 0) {
      std::string alt = to + name.substr(from.size());
      if (reader.contains(alt)) return alt;
    }
  }
  return {};
}

}  // namespace

CheckpointSet::CheckpointSet(const std::vector<std::string>& dirs) : dirs_(dirs) {
  PRISM_CHECK(!dirs.empty(), "CheckpointSet: no checkpoints given");
  cfg_ = models::CausalLM::read_config(dirs[0]);
  models::LoadOptions meta;
  meta.device = "meta";  // parameter list and shapes only, nothing allocated
  auto layout = models::CausalLM::from_config(cfg_, meta)->parameter_infos();
  for (const auto& d : dirs) readers_.push_back(std::make_unique<io::CheckpointReader>(d));
  std::set<std::string> used;
  for (auto& info : layout) {
    ResolvedParameter p;
    for (size_t i = 0; i < readers_.size(); ++i) {
      const auto& r = *readers_[i];
      std::string n = stored_name(r, cfg_, info.name);
      if (n.empty())
        throw Error("parameter missing from the checkpoint (the first checkpoint's config.json declares it)",
                    {dirs[i], "", info.name, "", ""});
      const auto& ti = r.info(n);
      if (ti.shape != info.shape)
        throw Error("shape differs from the first checkpoint's config.json",
                    {r.file_of(n), "", n, shape_str(info.shape), shape_str(ti.shape)});
      if (!at::isFloatingType(io::safetensors_to_scalar_type(ti.dtype)))
        throw Error("expected a floating-point tensor", {r.file_of(n), "", n, "BF16/F16/F32/F64", ti.dtype});
      if (i == 0) used.insert(n);
      p.stored.push_back(std::move(n));
    }
    p.info = std::move(info);
    params_.push_back(std::move(p));
  }
  for (const auto& n : readers_[0]->names())
    if (!used.count(n)) unused_.push_back(n);
}

std::vector<size_t> CheckpointSet::file_order() const {
  const auto& r = *readers_[0];
  std::map<std::string, size_t> shard;
  for (const auto& f : r.files()) shard.emplace(f, shard.size());
  std::vector<size_t> order(params_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto key = [&](size_t i) {
    const auto& n = params_[i].stored[0];
    return std::make_pair(shard.at(r.file_of(n)), r.info(n).begin);
  };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key(a) < key(b); });
  return order;
}

void accumulate_into(at::Tensor dst, const std::vector<at::Tensor>& srcs, const std::vector<double>& coeffs) {
  PRISM_CHECK(srcs.size() == coeffs.size(), "accumulate_into: ", srcs.size(), " tensors but ", coeffs.size(),
              " coefficients");
  constexpr int64_t kChunk = 1 << 22;  // fp64 accumulator of 32 MB
  at::Tensor flat = dst.view({-1});
  std::vector<at::Tensor> src;
  for (const auto& s : srcs) src.push_back(s.reshape({-1}));
  const int64_t n = flat.numel();
  for (int64_t b = 0; b < n; b += kChunk) {
    const int64_t m = std::min(kChunk, n - b);
    at::Tensor acc = at::zeros({m}, at::TensorOptions().dtype(at::kDouble).device(dst.device()));
    for (size_t k = 0; k < src.size(); ++k) acc.add_(src[k].narrow(0, b, m).to(acc.device(), at::kDouble), coeffs[k]);
    flat.narrow(0, b, m).copy_(acc);
  }
}

void load_as_double(const at::Tensor& t, int64_t begin, int64_t count, double* out) {
  const void* base = t.data_ptr();
  switch (t.scalar_type()) {
    case at::kBFloat16: {
      const auto* p = static_cast<const uint16_t*>(base) + begin;
      for (int64_t i = 0; i < count; ++i) {
        // bf16 is the top half of an fp32: widening is a shift, exact.
        const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
        float f;
        std::memcpy(&f, &bits, sizeof f);
        out[i] = f;
      }
      break;
    }
    case at::kHalf: {
      const auto* p = static_cast<const c10::Half*>(base) + begin;
      for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(p[i]);
      break;
    }
    case at::kFloat: {
      const auto* p = static_cast<const float*>(base) + begin;
      for (int64_t i = 0; i < count; ++i) out[i] = p[i];
      break;
    }
    case at::kDouble: {
      const auto* p = static_cast<const double*>(base) + begin;
      std::copy(p, p + count, out);
      break;
    }
    default:
      throw Error(prism::str("unsupported dtype ", t.scalar_type(), " (expected bf16, fp16, fp32 or fp64)"));
  }
}

std::unique_ptr<io::Tokenizer> load_tokenizer(const std::string& model_dir, const std::string& override_path) {
  const std::string p = override_path.empty() ? fs::join(model_dir, "tokenizer.json") : override_path;
  if (!fs::exists(p))
    throw Error("no tokenizer.json (pass --tokenizer)",
                {model_dir, "", "", "tokenizer.json in the model directory", "none"});
  return io::Tokenizer::from_file(p);
}

}  // namespace prism::analysis
