// Owns the torch side of safetensors: the memory-mapped SafetensorsFile, the CheckpointReader over
// one file or HF shards, and the atomic writers save_safetensors / save_sharded.
//
// Key decisions:
// - Reading maps the whole file MAP_PRIVATE with PROT_READ|PROT_WRITE: tensors are zero-copy
//   views, in-place ops on them work (copy-on-write pages) and can never reach the file. With
//   PROT_READ alone, the first in-place op on a loaded weight would segfault.
// - Each view's deleter holds a shared_ptr to the mapping, so the file stays mapped while any
//   tensor views it, whatever happens to the SafetensorsFile or CheckpointReader.
// - All validation happens in parse_safetensors_header (safetensors_header.cpp, fuzzed) before
//   any view is made; this file only trusts offsets that passed it.
// - Writes go to `<path>.tmp.<pid>`, are fsynced, then renamed (style.md rule 11), so a crash
//   leaves either the old file or the new one, never a torn one. The sharded index is written
//   last, because it is what makes the shards visible to readers.
#include "prism/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "safetensors_header.h"

namespace prism::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; prism writes tensor memory as is");

using nlohmann::json;

namespace {

struct DtypePair {
  const char* name;
  c10::ScalarType type;
};

// Every byte-sized safetensors dtype that has an ATen equivalent.
constexpr DtypePair kDtypePairs[] = {
    {"BOOL", at::kBool},
    {"U8", at::kByte},
    {"I8", at::kChar},
    {"F8_E5M2", at::kFloat8_e5m2},
    {"F8_E4M3", at::kFloat8_e4m3fn},
    {"F8_E8M0", at::kFloat8_e8m0fnu},
    {"F8_E4M3FNUZ", at::kFloat8_e4m3fnuz},
    {"F8_E5M2FNUZ", at::kFloat8_e5m2fnuz},
    {"I16", at::kShort},
    {"U16", at::kUInt16},
    {"F16", at::kHalf},
    {"BF16", at::kBFloat16},
    {"I32", at::kInt},
    {"U32", at::kUInt32},
    {"F32", at::kFloat},
    {"C64", at::kComplexFloat},
    {"F64", at::kDouble},
    {"I64", at::kLong},
    {"U64", at::kUInt64},
};

std::string errno_text(int err) { return std::strerror(err); }

// ErrorContext with every field set (brace-init with fewer trips -Wmissing-field-initializers).
ErrorContext ctx(std::string file, std::string key = "", std::string tensor = "", std::string expected = "",
                 std::string found = "") {
  return ErrorContext{std::move(file), std::move(key), std::move(tensor), std::move(expected), std::move(found)};
}

// A file written under a temporary name and renamed into place by commit(). If commit() is never
// reached (an exception), the destructor removes the temporary file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error(str("cannot create temporary file ", tmp_, ": ", errno_text(errno)), ctx(path_));
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      // Linux writes at most ~2 GiB per call; loop for large tensors and on EINTR.
      ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error(str("write failed: ", errno_text(errno)), ctx(path_));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) throw Error(str("fsync failed: ", errno_text(errno)), ctx(path_));
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) throw Error(str("close failed: ", errno_text(errno)), ctx(path_));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw Error(str("rename failed: ", errno_text(errno)), ctx(path_));
    committed_ = true;
    // Make the rename itself durable. Some filesystems refuse fsync on a directory; the data is
    // already safe then, so that failure is not an error.
    std::string dir = prism::fs::parent(path_);
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

void write_text_atomically(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

// CPU, strided, contiguous, with conjugate/negative views materialised: exactly the bytes to write.
at::Tensor to_writable(const at::Tensor& t, const std::string& path, const std::string& name) {
  if (!t.defined()) throw Error("tensor is undefined", ctx(path, "", name));
  if (t.device().is_meta()) throw Error("tensor is on the meta device (it has no data)", ctx(path, "", name));
  at::Tensor c = t.detach();
  if (c.layout() != at::kStrided) c = c.to_dense();
  return c.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
}

uint64_t tensor_nbytes(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(t.element_size());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(str("cannot open: ", errno_text(errno)), ctx(path));
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw Error("read failed", ctx(path));
  return os.str();
}

// "model" -> is `name` one of the files a save with this prefix produces?
bool is_own_output(const std::string& name, const std::string& prefix) {
  if (name == prefix + ".safetensors" || name == prefix + ".safetensors.index.json") return true;
  // <prefix>-NNNNN-of-NNNNN.safetensors
  const std::string tail = ".safetensors";
  if (name.size() != prefix.size() + 15 + tail.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      !name.ends_with(tail))
    return false;
  const std::string mid = name.substr(prefix.size(), 15);  // "-00001-of-00003"
  auto digits = [&](size_t from) {
    for (size_t i = from; i < from + 5; ++i)
      if (mid[i] < '0' || mid[i] > '9') return false;
    return true;
  };
  return mid[0] == '-' && digits(1) && mid.compare(6, 4, "-of-") == 0 && digits(10);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// dtypes

c10::ScalarType safetensors_to_scalar_type(const std::string& dtype) {
  for (const auto& p : kDtypePairs)
    if (dtype == p.name) return p.type;
  throw Error("safetensors dtype has no ATen equivalent", ctx("", "", "", "a byte-sized safetensors dtype", dtype));
}

std::string scalar_type_to_safetensors(c10::ScalarType t) {
  for (const auto& p : kDtypePairs)
    if (t == p.type) return p.name;
  throw Error("ATen dtype has no safetensors equivalent", ctx("", "", "", "", c10::toString(t)));
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

struct SafetensorsFile::Mapping {
  uint8_t* base = nullptr;
  size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (base != nullptr) ::munmap(base, size);
  }
};

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(str("cannot open safetensors file: ", errno_text(errno)), ctx(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(str("cannot stat: ", errno_text(err)), ctx(path));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("not a regular file", ctx(path));
  }
  auto map = std::make_shared<Mapping>();
  map->size = static_cast<size_t>(st.st_size);
  if (map->size > 0) {
    // MAP_NORESERVE: a writable private mapping would otherwise be charged in full against the
    // commit limit, and a 100 GB checkpoint could fail to map although it is only ever read.
    void* p = ::mmap(nullptr, map->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(str("mmap failed: ", errno_text(err)), ctx(path));
    }
    map->base = static_cast<uint8_t*>(p);
  }
  ::close(fd);  // the mapping keeps its own reference to the file

  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->header_ = parse_safetensors_header(map->base, map->size, path);
  f->map_ = std::move(map);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_.emplace(f->header_.tensors[i].name, i);
  return f;
}

SafetensorsFile::~SafetensorsFile() = default;

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) != 0; }

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error("no such tensor in the file", ctx(path_, "", name));
  return header_.tensors[it->second];
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  auto options = at::TensorOptions().dtype(safetensors_to_scalar_type(ti.dtype)).device(at::kCPU);
  const size_t nbytes = static_cast<size_t>(ti.end - ti.begin);
  // Zero-size tensors own nothing: their offset may be the very end of the mapping.
  if (nbytes == 0) return at::empty(ti.shape, options);
  uint8_t* p = map_->base + header_.data_offset() + ti.begin;
  if (reinterpret_cast<uintptr_t>(p) % safetensors_dtype_size(ti.dtype) != 0) {
    // Files from writers that do not pad the header leave tensors misaligned; ATen kernels may
    // assume natural alignment, so such tensors are copied instead of viewed.
    at::Tensor t = at::empty(ti.shape, options);
    std::memcpy(t.data_ptr(), p, nbytes);
    return t;
  }
  std::shared_ptr<Mapping> keep = map_;
  return at::from_blob(p, ti.shape, [keep](void*) {}, options);
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(map_->base + header_.data_offset() + ti.begin);
  const uintptr_t e = b + static_cast<uintptr_t>(ti.end - ti.begin);
  const uintptr_t first = (b + page - 1) / page * page, last = e / page * page;
  // Pages shared with a neighbouring tensor stay: at most two per tensor, and the neighbour may be in use.
  if (last > first) ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> v;
  v.reserve(header_.tensors.size());
  for (const auto& t : header_.tensors) v.push_back(t.name);
  return v;
}

// ---------------------------------------------------------------------------------------------
// CheckpointReader

CheckpointReader::CheckpointReader(const std::string& path) : path_(path) {
  std::string single, index;
  if (prism::fs::is_directory(path)) {
    // transformers' order: a single model.safetensors wins over an index.
    if (prism::fs::exists(prism::fs::join(path, "model.safetensors")))
      single = prism::fs::join(path, "model.safetensors");
    else if (prism::fs::exists(prism::fs::join(path, "model.safetensors.index.json")))
      index = prism::fs::join(path, "model.safetensors.index.json");
    else
      throw Error("directory has neither model.safetensors nor model.safetensors.index.json", ctx(path));
  } else if (prism::fs::is_regular_file(path)) {
    if (path.ends_with(".index.json"))
      index = path;
    else
      single = path;
  } else {
    throw Error("checkpoint not found", ctx(path, "", "", "a .safetensors file, an index or a directory", ""));
  }

  if (!single.empty()) {
    files_.push_back(SafetensorsFile::open(single));
    for (const auto& t : files_[0]->header().tensors) where_.emplace(t.name, 0);
    return;
  }

  const std::string index_name = prism::fs::filename(index);
  json j = detail::parse_json_strict(read_text(index), index);
  if (!j.is_object()) throw Error("index is not a JSON object", ctx(index));
  if (auto m = j.find("metadata"); m != j.end() && !m->is_null()) {
    if (!m->is_object()) throw Error("\"metadata\" is not an object", ctx(index, "metadata"));
    // Readers must tolerate unknown keys; non-string values (total_size) are kept as JSON text.
    for (const auto& [k, v] : m->items()) index_metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) throw Error("index has no \"weight_map\" object", ctx(index, "weight_map"));

  std::map<std::string, std::string> listed;  // tensor -> shard file name
  std::set<std::string> shard_names;
  for (const auto& [tensor, file] : wm->items()) {
    if (!file.is_string())
      throw Error("weight_map values must be shard file names", ctx(index, "weight_map", tensor, "a string", file.dump()));
    std::string name = file.get<std::string>();
    bool escapes = name.empty() || name[0] == '/';
    for (size_t b = 0; b <= name.size();) {  // any ".." path component
      size_t e = name.find('/', b);
      if (e == std::string::npos) e = name.size();
      escapes = escapes || (e - b == 2 && name.compare(b, 2, "..") == 0);
      b = e + 1;
    }
    if (escapes)
      throw Error("shard name must be a relative path inside the checkpoint directory",
                  ctx(index, "weight_map", tensor, "", name));
    shard_names.insert(name);
    listed.emplace(tensor, std::move(name));
  }

  const std::string dir = prism::fs::parent(index);
  std::map<std::string, size_t> shard_index;
  for (const auto& name : shard_names) {
    const std::string shard_path = prism::fs::join(dir, name);
    if (!prism::fs::exists(shard_path))
      throw Error(str("shard listed in ", index_name, " is missing"), ctx(shard_path));
    shard_index.emplace(name, files_.size());
    files_.push_back(SafetensorsFile::open(shard_path));
  }
  // Every tensor lives in exactly one shard. Tensors a shard holds beyond the weight_map are
  // still readable (transformers loads whole shards too).
  for (size_t i = 0; i < files_.size(); ++i) {
    for (const auto& t : files_[i]->header().tensors) {
      auto [it, fresh] = where_.emplace(t.name, i);
      if (!fresh)
        throw Error(str("tensor appears in two shards (also in ", files_[it->second]->path(), ")"),
                    ctx(files_[i]->path(), "", t.name));
    }
  }
  for (const auto& [tensor, name] : listed) {
    const size_t i = shard_index.at(name);
    if (!files_[i]->contains(tensor))
      throw Error(str("tensor listed in ", index_name, " is not in its shard"), ctx(files_[i]->path(), "", tensor));
  }
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> v;
  v.reserve(where_.size());
  for (const auto& [n, i] : where_) v.push_back(n);
  return v;
}

bool CheckpointReader::contains(const std::string& name) const { return where_.count(name) != 0; }

namespace {
size_t lookup(const std::map<std::string, size_t>& where, const std::string& path, const std::string& name) {
  auto it = where.find(name);
  if (it == where.end()) throw Error("no such tensor in the checkpoint", ctx(path, "", name));
  return it->second;
}
}  // namespace

at::Tensor CheckpointReader::get(const std::string& name) const { return files_[lookup(where_, path_, name)]->get(name); }

void CheckpointReader::release(const std::string& name) const { files_[lookup(where_, path_, name)]->release(name); }

const TensorInfo& CheckpointReader::info(const std::string& name) const {
  return files_[lookup(where_, path_, name)]->info(name);
}

std::string CheckpointReader::file_of(const std::string& name) const {
  return files_[lookup(where_, path_, name)]->path();
}

std::vector<std::string> CheckpointReader::files() const {
  std::vector<std::string> v;
  for (const auto& f : files_) v.push_back(f->path());
  return v;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

// The spec (name, dtype, shape) of each of `tensors`, refusing what cannot be written.
std::vector<TensorSpec> specs_of(const std::string& where, const NamedTensors& tensors) {
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw Error("tensor is undefined", ctx(where, "", name));
    specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  }
  return specs;
}

uint64_t spec_nbytes(const TensorSpec& s) {
  uint64_t n = c10::elementSize(s.dtype);
  for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
  return n;
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<TensorSpec>& specs, const TensorSource& source,
                      const std::map<std::string, std::string>& metadata) {
  struct Entry {
    size_t index;
    std::string dtype;
    int rank;
  };
  std::vector<Entry> entries;
  entries.reserve(specs.size());
  std::set<std::string_view> seen;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& name = specs[i].name;
    if (name == "__metadata__") throw Error("\"__metadata__\" is reserved and cannot name a tensor", ctx(path, "", name));
    if (!seen.insert(name).second) throw Error("duplicate tensor name", ctx(path, "", name));
    std::string dtype;
    try {
      dtype = scalar_type_to_safetensors(specs[i].dtype);
    } catch (const Error& e) {
      throw Error(e.message(), ctx(path, "", name, "a dtype safetensors can store", c10::toString(specs[i].dtype)));
    }
    for (int64_t d : specs[i].shape)
      if (d < 0) throw Error("negative dimension", ctx(path, "", name));
    const int rank = detail::safetensors_dtype_rank(dtype);
    entries.push_back({i, std::move(dtype), rank});
  }
  // The official writer's order (see safetensors_dtype_rank): wider dtypes first, then by name.
  std::sort(entries.begin(), entries.end(), [&](const Entry& a, const Entry& b) {
    if (a.rank != b.rank) return a.rank > b.rank;
    return specs[a.index].name < specs[b.index].name;
  });

  // Assembled by hand (nlohmann only escapes the strings) so that the layout is the reference
  // serializer's: "__metadata__" first, tensors in data order, fields as dtype/shape/data_offsets,
  // no whitespace. A json object would sort the keys, an ordered_json would be O(n^2) to fill.
  std::string text = "{";
  try {
    auto quote = [](const std::string& s) { return json(s).dump(); };
    if (!metadata.empty()) {
      text += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata) {
        text += (first ? "" : ",") + quote(k) + ":" + quote(v);
        first = false;
      }
      text += "},";
    }
    uint64_t offset = 0;
    for (const auto& e : entries) {
      const auto& s = specs[e.index];
      const uint64_t n = spec_nbytes(s);
      text += quote(s.name) + ":{\"dtype\":\"" + e.dtype + "\",\"shape\":[";
      for (size_t d = 0; d < s.shape.size(); ++d) text += (d ? "," : "") + std::to_string(s.shape[d]);
      text += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) + "]},";
      offset += n;
    }
  } catch (const nlohmann::json::exception& ex) {
    throw Error(str("tensor names and metadata must be valid UTF-8: ", ex.what()), ctx(path));
  }
  if (text.size() > 1) text.pop_back();  // the last ','
  text += "}";
  text.append((8 - text.size() % 8) % 8, ' ');  // so the buffer, and every tensor, starts aligned
  if (text.size() > 100'000'000) throw Error("header too large", ctx(path, "", "", "<= 100000000 bytes", str(text.size())));

  AtomicFile f(path);
  uint8_t prefix[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(n >> (8 * i));
  f.write(prefix, 8);
  f.write(text.data(), text.size());
  // The header is fixed before any data is asked for, so each tensor is produced, written and
  // dropped in turn: a streamed save holds one tensor at a time.
  for (const auto& e : entries) {
    const auto& s = specs[e.index];
    at::Tensor data = to_writable(source(e.index), path, s.name);
    if (data.scalar_type() != s.dtype || data.sizes().vec() != s.shape)
      throw Error("produced tensor differs from its declared dtype/shape",
                  ctx(path, "", s.name, prism::str(s.dtype, " ", c10::IntArrayRef(s.shape)),
                      prism::str(data.scalar_type(), " ", data.sizes())));
    f.write(data.data_ptr(), static_cast<size_t>(tensor_nbytes(data)));
  }
  f.commit();
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_safetensors(
      path, specs_of(path, tensors), [&](size_t i) { return tensors[i].second; }, metadata);
}

std::vector<std::string> save_sharded(const std::string& dir, const std::vector<TensorSpec>& specs,
                                      const TensorSource& source, const ShardOptions& options) {
  if (!prism::fs::is_directory(dir)) throw Error("output directory does not exist", ctx(dir));
  if (options.prefix.empty() || options.prefix.find('/') != std::string::npos)
    throw Error("shard prefix must be a plain file name", ctx(dir, "prefix", "", "", options.prefix));
  {
    std::set<std::string_view> seen;
    for (const auto& s : specs)
      if (!seen.insert(s.name).second) throw Error("duplicate tensor name", ctx(dir, "", s.name));
  }

  std::vector<std::vector<size_t>> shards;
  uint64_t total_bytes = 0;
  for (const auto& s : specs) total_bytes += spec_nbytes(s);
  if (!options.shard_of.empty()) {
    if (options.shard_of.size() != specs.size())
      throw Error(str("shard_of has ", options.shard_of.size(), " entries for ", specs.size(), " tensors"), ctx(dir));
    for (size_t i = 0; i < specs.size(); ++i) {
      const size_t s = options.shard_of[i];
      if (s >= shards.size()) shards.resize(s + 1);
      shards[s].push_back(i);
    }
    for (size_t s = 0; s < shards.size(); ++s)
      if (shards[s].empty()) throw Error(str("shard_of leaves shard ", s, " empty"), ctx(dir));
  } else {
    // Greedy packing in the given order (huggingface_hub's rule, minus its reordering of
    // oversized tensors): start a new shard when the next tensor would overflow the current one.
    std::vector<size_t> current;
    uint64_t current_bytes = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
      const uint64_t n = spec_nbytes(specs[i]);
      if (!current.empty() && (n > options.max_shard_bytes || current_bytes + n > options.max_shard_bytes)) {
        shards.push_back(std::move(current));
        current.clear();
        current_bytes = 0;
      }
      current.push_back(i);
      current_bytes += n;
      if (n > options.max_shard_bytes) {  // oversized: alone in its shard
        shards.push_back(std::move(current));
        current.clear();
        current_bytes = 0;
      }
    }
    if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  }

  std::vector<std::string> written;
  const size_t num_shards = shards.size();
  json weight_map = json::object();
  for (size_t s = 0; s < num_shards; ++s) {
    std::string name = options.prefix + ".safetensors";
    if (num_shards > 1) {
      auto pad5 = [](size_t v) {
        std::string d = std::to_string(v);
        return std::string(d.size() < 5 ? 5 - d.size() : 0, '0') + d;
      };
      name = options.prefix + "-" + pad5(s + 1) + "-of-" + pad5(num_shards) + ".safetensors";
    }
    std::vector<TensorSpec> part;
    part.reserve(shards[s].size());
    for (size_t i : shards[s]) {
      part.push_back(specs[i]);
      weight_map[specs[i].name] = name;
    }
    const auto& members = shards[s];
    save_safetensors(
        prism::fs::join(dir, name), part, [&](size_t k) { return source(members[k]); }, options.metadata);
    written.push_back(std::move(name));
  }
  if (num_shards > 1) {
    const std::string index_name = options.prefix + ".safetensors.index.json";
    json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", std::move(weight_map)}};
    write_text_atomically(prism::fs::join(dir, index_name), index.dump(2) + "\n");
    written.push_back(index_name);
  }

  // Remove what an earlier save with the same prefix left behind (a stale model.safetensors would
  // shadow a new index; stale shards would confuse anyone globbing).
  const std::set<std::string> keep(written.begin(), written.end());
  for (const auto& name : prism::fs::list_dir(dir)) {
    const std::string p = prism::fs::join(dir, name);
    if (!keep.count(name) && is_own_output(name, options.prefix) && prism::fs::is_regular_file(p)) ::unlink(p.c_str());
  }
  return written;
}

std::vector<std::string> save_sharded(const std::string& dir, const NamedTensors& tensors,
                                      const ShardOptions& options) {
  return save_sharded(
      dir, specs_of(dir, tensors), [&](size_t i) { return tensors[i].second; }, options);
}

}  // namespace prism::io
