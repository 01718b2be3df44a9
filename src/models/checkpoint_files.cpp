// Non-weight files of an HF checkpoint (include/prism/models/checkpoint_files.h).
#include "prism/models/checkpoint_files.h"

#include "prism/core/fs.h"

namespace prism::models {

bool is_weight_file(const std::string& n) {
  return n.ends_with(".safetensors") || n == "model.safetensors.index.json" || n.ends_with(".bin") ||
         n.ends_with(".pt") || n.ends_with(".pth") || n == "pytorch_model.bin.index.json" ||
         n.find(".tmp.") != std::string::npos;
}

std::vector<std::string> copy_checkpoint_files(const std::string& from, const std::string& to) {
  std::vector<std::string> copied;
  for (const auto& n : fs::list_dir(from)) {
    const std::string src = fs::join(from, n), dst = fs::join(to, n);
    if (!fs::is_regular_file(src) || is_weight_file(n) || fs::exists(dst)) continue;
    fs::copy_file(src, dst);
    copied.push_back(n);
  }
  return copied;
}

}  // namespace prism::models
