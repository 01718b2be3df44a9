// The non-weight files of an HF checkpoint directory (config.json, tokenizer, generation config,
// chat template, …): what has to travel with weights written elsewhere so that the output is a
// usable checkpoint. One rule for every writer (save_pretrained, merge, the study, analyze combine).
#pragma once

#include <string>
#include <vector>

namespace prism::models {

/// True for weight files (safetensors shards and index, torch .bin/.pt/.pth and index) and
/// leftover temporaries (`.tmp.` in the name): the files a checkpoint writer produces itself.
bool is_weight_file(const std::string& name);

/// Copies every regular non-weight file of `from` into `to` that `to` does not have yet; returns
/// the names copied. `to` must exist.
std::vector<std::string> copy_checkpoint_files(const std::string& from, const std::string& to);

}  // namespace prism::models
