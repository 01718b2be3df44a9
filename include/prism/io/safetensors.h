// safetensors reading (memory-mapped, copy-on-write, zero-copy where aligned) and writing
// (single file or HF-style shards + model.safetensors.index.json), always atomically.
//
// Format (huggingface/safetensors): u64 little-endian N, N bytes of JSON header, then the byte
// buffer. Header entries: name -> {"dtype", "shape", "data_offsets": [begin, end)} with offsets
// relative to the buffer start; optional "__metadata__" string->string map. Every header is
// validated before a single tensor is created, so a bad file gives a prism::Error naming the file
// and the tensor, never a crash (the parser is fuzzed: tests/fuzz/fuzz_safetensors_header.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace prism::io {

/// One tensor entry of a safetensors header.
struct TensorInfo {
  std::string name;
  std::string dtype;            ///< safetensors spelling: "BF16", "F32", "F8_E4M3", …
  std::vector<int64_t> shape;
  uint64_t begin = 0;           ///< byte offset in the data buffer (after the header)
  uint64_t end = 0;             ///< one past the last byte
};

/// A parsed and validated header.
struct SafetensorsHeader {
  uint64_t header_size = 0;                     ///< N: JSON bytes after the 8-byte length
  std::vector<TensorInfo> tensors;              ///< in file order (sorted by begin offset)
  std::map<std::string, std::string> metadata;  ///< "__metadata__"
  uint64_t data_offset() const { return 8 + header_size; }
};

/// Parses and validates the header of a safetensors file whose first `size` bytes are at `data`
/// (`size` is the whole file size). Torch-free, so it can be fuzzed on its own. Checks: length
/// prefix vs file size, header ≤ 100 MB, JSON object, known dtypes, shape × itemsize == byte
/// span, offsets within the buffer, no overlap, no holes, no duplicates. `path` is only used in
/// error messages.
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, const std::string& path);

/// Bytes per element of a safetensors dtype; throws for unknown dtypes.
size_t safetensors_dtype_size(const std::string& dtype);

}  // namespace prism::io

// Everything below needs ATen. src/io/safetensors_header.cpp defines PRISM_IO_SAFETENSORS_NO_TORCH
// so that it sees only the torch-free part above: the fuzzer compiles it without LibTorch.
#ifndef PRISM_IO_SAFETENSORS_NO_TORCH
#include <ATen/core/Tensor.h>

#include <functional>

namespace prism::io {

/// safetensors dtype <-> ATen scalar type ("BF16" <-> at::kBFloat16, "F8_E4M3" <-> Float8_e4m3fn …).
c10::ScalarType safetensors_to_scalar_type(const std::string& dtype);
std::string scalar_type_to_safetensors(c10::ScalarType t);

/// A memory-mapped safetensors file. Tensors returned by get() view the mapping (MAP_PRIVATE,
/// PROT_READ|PROT_WRITE: writes are copy-on-write and never reach the file) and keep it alive;
/// a tensor whose data is not aligned to its element size is copied instead.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }
  bool contains(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const;  ///< throws naming file + tensor
  /// CPU tensor, zero-copy when aligned. Views share the private mapping: an in-place write to
  /// one is seen by later get() calls on this object (never by the file or other opens).
  at::Tensor get(const std::string& name) const;
  std::vector<std::string> names() const;
  /// Drops this process's resident pages of the tensor's bytes (madvise MADV_DONTNEED on the whole
  /// pages inside it), so a pass that streams a checkpoint tensor by tensor keeps its RSS near one
  /// tensor instead of growing to the file size. Views of the tensor stay valid and fault the bytes
  /// back in from the file; in-place writes made through them are discarded.
  void release(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

/// All tensors of a checkpoint: one .safetensors file, a model.safetensors.index.json file, or a
/// directory with model.safetensors (preferred, as transformers does) or
/// model.safetensors.index.json (+ its shards). Every shard is opened and validated up front.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path);

  std::vector<std::string> names() const;  ///< sorted
  bool contains(const std::string& name) const;
  at::Tensor get(const std::string& name) const;
  void release(const std::string& name) const;  ///< SafetensorsFile::release on the shard holding `name`
  const TensorInfo& info(const std::string& name) const;
  std::string file_of(const std::string& name) const;       ///< path of the shard holding `name`
  std::vector<std::string> files() const;                   ///< shard paths, in order
  const std::map<std::string, std::string>& index_metadata() const { return index_metadata_; }

 private:
  std::string path_;  // as given, for error messages
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor -> files_ index
  std::map<std::string, std::string> index_metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

/// A tensor declared before its data exists: a streamed save writes the header from these, then
/// asks for each tensor's data only when its bytes are due.
struct TensorSpec {
  std::string name;
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
};
/// Produces the data of specs[i] (that dtype and shape, any device/layout). A streamed save calls
/// it once per tensor, in file order, and drops the result before the next call, so the peak is
/// one tensor whatever the checkpoint size.
using TensorSource = std::function<at::Tensor(size_t i)>;

/// Writes one safetensors file atomically (`path.tmp.<pid>`, fsync, rename). Tensors are written
/// contiguous, little-endian, ordered as the official writer does (descending dtype, then name,
/// so every tensor is naturally aligned), header padded with spaces to 8 bytes; with at most one
/// metadata entry the bytes equal Python's `safetensors.torch.save_file`. Any device/layout is
/// accepted (copied to CPU contiguous). "__metadata__" is written only when `metadata` is non-empty.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
/// The same file, streamed: the tensors' data come from `source` one at a time (TensorSource).
/// A produced tensor whose dtype or shape differs from its spec is an error naming it.
void save_safetensors(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
                      const std::map<std::string, std::string>& metadata = {});

struct ShardOptions {
  uint64_t max_shard_bytes = 5'000'000'000ULL;  ///< HF default "5GB" (decimal)
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::string prefix = "model";                 ///< file names: <prefix>.safetensors or <prefix>-0000i-of-0000N
  /// When non-empty: the 0-based shard of each tensor (e.g. to keep another checkpoint's layout);
  /// max_shard_bytes is then ignored. Every shard from 0 to the largest must get a tensor.
  std::vector<size_t> shard_of;
};

/// Writes `tensors` into directory `dir` (which must exist) as `model.safetensors` when they fit
/// one shard, else `model-0000i-of-0000N.safetensors` + `model.safetensors.index.json`
/// ({"metadata": {"total_size": …}, "weight_map": {…}}), each file atomically. Tensors keep
/// their order and are never split across shards; a tensor larger than the limit gets a shard of
/// its own. The index is written last; then stale `<prefix>.safetensors`,
/// `<prefix>-NNNNN-of-NNNNN.safetensors` and index files of an earlier save into `dir` are
/// removed (as transformers does), so later readers never pick up an old file. Each file is
/// atomic, the set is not: for all-or-nothing, save into a fresh directory and rename it (as
/// CausalLM::save_pretrained does). Returns the written file names (shards, then the index if any).
std::vector<std::string> save_sharded(const std::string& dir, const NamedTensors& tensors,
                                      const ShardOptions& options = {});
/// The same directory, streamed (TensorSource): one tensor in memory at a time.
std::vector<std::string> save_sharded(const std::string& dir, const std::vector<TensorSpec>& specs,
                                      const TensorSource& source, const ShardOptions& options = {});

}  // namespace prism::io
#endif  // PRISM_IO_SAFETENSORS_NO_TORCH
