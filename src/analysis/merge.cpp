// Checkpoint merging (include/prism/analysis/combine.h): Σ_i w_i W_i written as an HF checkpoint.
//
// Every check runs before the first byte is written (a merge of two 24B checkpoints takes minutes;
// failing at the last tensor would waste them). Then the output is streamed: io::save_sharded
// writes each shard's header from the declared specs and asks for one tensor at a time, which is
// accumulated from the memory maps and dropped, and the input pages are released after each
// tensor, so the resident set stays near one tensor whatever the model size.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "analysis/checkpoint_set.h"
#include "prism/analysis/combine.h"
#include "prism/analysis/weights.h"
#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/models/checkpoint_files.h"

namespace prism::analysis {
namespace {

// One output tensor: its stored name in every checkpoint and where it sits in the reference.
struct Item {
  std::vector<std::string> stored;  // per checkpoint; stored[0] is the output name
  size_t shard = 0;                 // index of the reference shard holding it
  uint64_t begin = 0;               // its offset there (reads follow the file order)
  bool floating = true;
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// The weight files a merge writes itself; everything else in the reference directory is copied.
}  // namespace

MergeResult merge_checkpoints(const std::vector<std::string>& checkpoints, const std::vector<double>& weights,
                              const std::string& output, const MergeOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  if (checkpoints.size() < 2)
    throw Error("a merge needs at least two checkpoints",
                key_context("", "checkpoints", ">= 2", str(checkpoints.size())));
  if (weights.size() != checkpoints.size())
    throw Error("one weight per checkpoint",
                key_context("", "weights", str(checkpoints.size(), " weights"), str(weights.size())));
  double sum = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!std::isfinite(weights[i]))
      throw Error("weights must be finite numbers",
                  key_context("", str("weights[", i, "]"), "a finite number", str(weights[i])));
    sum += weights[i];
  }
  if (std::abs(sum - 1.0) > 1e-9)
    log::warn(str("merge: the weights sum to ", sum,
                  ", not 1: the result is scaled (an extrapolation, not an interpolation)"));

  const std::string out = fs::absolute(output);
  if (out.empty() || fs::exists(out))
    throw Error("the merge output already exists (choose a new directory)",
                key_context(out, "output", "a new path", ""));
  std::vector<std::string> dirs;
  for (const auto& c : checkpoints) dirs.push_back(resolve_hf_dir(c));

  // Architecture: the same model_type; CheckpointSet then resolves every parameter of the
  // reference's config.json in each checkpoint and checks its shape.
  const auto ref_cfg = models::CausalLM::read_config(dirs[0]);
  for (size_t k = 1; k < dirs.size(); ++k) {
    const auto cfg = models::CausalLM::read_config(dirs[k]);
    if (cfg.model_type != ref_cfg.model_type)
      throw Error("model_type differs from the first checkpoint's",
                  key_context(fs::join(dirs[k], "config.json"), "model_type", ref_cfg.model_type, cfg.model_type));
  }
  CheckpointSet set(dirs);
  const auto& ref = set.reader(0);
  std::map<std::string, size_t> shard_index;
  for (const auto& f : ref.files()) shard_index.emplace(f, shard_index.size());

  std::vector<Item> items;
  std::vector<std::set<std::string>> claimed(set.size());
  for (const auto& p : set.parameters()) {
    Item it;
    it.stored = p.stored;
    for (size_t k = 0; k < set.size(); ++k) claimed[k].insert(p.stored[k]);
    items.push_back(std::move(it));
  }
  // Tensors the model does not declare (e.g. a stored rotary inv_freq): merged when floating,
  // else they must agree; they are matched by name.
  for (const auto& name : set.unused()) {
    Item it;
    const auto& info0 = ref.info(name);
    it.floating = at::isFloatingType(io::safetensors_to_scalar_type(info0.dtype));
    for (size_t k = 0; k < set.size(); ++k) {
      const auto& r = set.reader(k);
      if (!r.contains(name))
        throw Error("tensor of the first checkpoint is missing",
                    ErrorContext{set.dir(k), "", name, "present", "absent"});
      const auto& info = r.info(name);
      if (info.shape != info0.shape)
        throw Error("shape differs from the first checkpoint's",
                    ErrorContext{r.file_of(name), "", name, shape_text(info0.shape), shape_text(info.shape)});
      if (!it.floating && info.dtype != info0.dtype)
        throw Error("dtype of a non-floating tensor differs from the first checkpoint's",
                    ErrorContext{r.file_of(name), "", name, info0.dtype, info.dtype});
      it.stored.push_back(name);
      claimed[k].insert(name);
    }
    items.push_back(std::move(it));
  }
  for (size_t k = 1; k < set.size(); ++k)
    for (const auto& n : set.reader(k).names())
      if (!claimed[k].count(n))
        throw Error("tensor is not in the first checkpoint (different architecture?)",
                    ErrorContext{set.reader(k).file_of(n), "", n, "absent", "present"});
  for (auto& it : items) {
    it.shard = shard_index.at(ref.file_of(it.stored[0]));
    it.begin = ref.info(it.stored[0]).begin;
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return std::tie(a.shard, a.begin) < std::tie(b.shard, b.begin);
  });

  // Non-floating tensors are compared now, not while writing (they are small: ids, masks).
  for (const auto& it : items) {
    if (it.floating) continue;
    const at::Tensor a = ref.get(it.stored[0]);
    for (size_t k = 1; k < set.size(); ++k)
      if (!at::equal(a, set.reader(k).get(it.stored[k])))
        throw Error(
            "non-floating tensor differs between checkpoints (it cannot be interpolated)",
            ErrorContext{set.reader(k).file_of(it.stored[k]), "", it.stored[k], "equal to the first's", "different"});
  }

  std::vector<io::TensorSpec> specs;
  io::ShardOptions so;
  MergeResult res;
  res.output = out;
  for (const auto& it : items) {
    const auto& info = ref.info(it.stored[0]);
    specs.push_back({it.stored[0], io::safetensors_to_scalar_type(info.dtype), info.shape});
    so.shard_of.push_back(it.shard);
    res.bytes += info.end - info.begin;
    res.largest_tensor_bytes = std::max<uint64_t>(res.largest_tensor_bytes, info.end - info.begin);
  }
  if (opts.max_shard_bytes > 0) {
    so.shard_of.clear();
    so.max_shard_bytes = opts.max_shard_bytes;
  }

  const std::string tmp = out + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    res.files = models::copy_checkpoint_files(dirs[0], tmp);
    at::NoGradGuard no_grad;
    size_t done = 0;
    auto source = [&](size_t i) -> at::Tensor {
      const Item& it = items[i];
      at::Tensor merged;
      if (it.floating) {
        std::vector<at::Tensor> src;
        for (size_t k = 0; k < set.size(); ++k) src.push_back(set.reader(k).get(it.stored[k]));
        merged = at::empty(specs[i].shape, at::TensorOptions().dtype(specs[i].dtype));
        accumulate_into(merged, src, weights);
      } else {
        merged = ref.get(it.stored[0]).clone();
      }
      for (size_t k = 0; k < set.size(); ++k) set.reader(k).release(it.stored[k]);
      if (opts.progress) opts.progress(++done, items.size(), it.stored[0]);
      return merged;
    };
    auto written = io::save_sharded(tmp, specs, source, so);
    written.insert(written.end(), res.files.begin(), res.files.end());
    res.files = std::move(written);
    fs::fsync_tree(tmp);
    fs::rename(tmp, out);
    fs::fsync_dir(fs::parent(out));
  } catch (...) {
    fs::remove_all(tmp);
    throw;
  }
  res.tensors = items.size();
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace prism::analysis
