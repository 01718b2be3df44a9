// Token shards (docs/data-format.md): a streaming, atomic writer and an mmap reader that
// validates everything it can afford to on open.
//
// Why this layout: a fixed 64-byte header (with an FNV-1a checksum) is read with one pread and
// checked before anything is trusted; the token array is written while documents stream in,
// and the document index (cumulative offsets, num_docs + 1 int64) goes after it, because its
// size is only known at the end. The header is written last with pwrite, so a file is only
// ever visible under its final name once it is complete (temp + fsync + rename), and a
// trailing magic catches files truncated by a copy tool after the fact.
#include "prism/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cerrno>
#include <cstring>
#include <vector>

#include "prism/core/error.h"
#include "prism/core/fs.h"

namespace prism::data {

namespace {

constexpr char kMagic[8] = {'P', 'R', 'I', 'S', 'M', 'T', 'O', 'K'};
constexpr char kEndMagic[8] = {'P', 'R', 'I', 'S', 'M', 'E', 'N', 'D'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kHeaderBytes = 64;
constexpr size_t kWriteBuffer = 1 << 20;  // bytes buffered before a write(2)
// Shards up to this many tokens (2 MiB of uint16) get every token id checked on open; larger
// ones a strided sample of a few hundred pages, since a loader opens every shard of the corpus
// at start-up and a full check would read all of it.
constexpr int64_t kFullTokenCheck = int64_t{1} << 20;
constexpr int64_t kSpotChecks = 256;

// The on-disk header, little-endian, 64 bytes (static_asserts below pin the layout).
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  int64_t vocab_size;
  int64_t num_tokens;
  int64_t num_docs;
  uint64_t tokens_offset;
  uint64_t index_offset;
  uint64_t checksum;  // FNV-1a 64 of the 56 bytes before it
};
static_assert(sizeof(Header) == kHeaderBytes);
static_assert(offsetof(Header, checksum) == 56);
static_assert(std::endian::native == std::endian::little, "token shards are little-endian; add byte swaps");

uint64_t fnv1a(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

uint32_t token_bytes_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t{7}; }

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const void* data, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error("write failed: " + errno_text(), ErrorContext{path, {}, {}, {}, {}});
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void pwrite_all(int fd, const void* data, size_t n, off_t off, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error("write failed: " + errno_text(), ErrorContext{path, {}, {}, {}, {}});
    p += w;
    off += w;
    n -= static_cast<size_t>(w);
  }
}

ErrorContext file_ctx(const std::string& path, std::string expected = {}, std::string found = {}) {
  ErrorContext c;
  c.file = path;
  c.expected = std::move(expected);
  c.found = std::move(found);
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

struct ShardWriter::Impl {
  std::string path;
  std::string tmp_path;
  int fd = -1;
  int64_t vocab_size = 0;
  uint32_t token_bytes = 2;
  int64_t num_tokens = 0;
  std::vector<int64_t> index{0};  // cumulative document offsets; small next to the tokens
  std::vector<char> buffer;
  bool finished = false;

  void flush() {
    if (!buffer.empty()) write_all(fd, buffer.data(), buffer.size(), tmp_path);
    buffer.clear();
  }
  void append(const void* data, size_t n) {
    if (buffer.size() + n > kWriteBuffer) flush();
    if (n >= kWriteBuffer) {
      write_all(fd, data, n, tmp_path);
      return;
    }
    const char* p = static_cast<const char*>(data);
    buffer.insert(buffer.end(), p, p + n);
  }
};

ShardWriter::ShardWriter(const std::string& path, int64_t vocab_size) : impl_(std::make_unique<Impl>()) {
  PRISM_CHECK(vocab_size > 0 && vocab_size <= (int64_t{1} << 31),
              path, ": vocab_size must be in [1, 2^31], got ", vocab_size);
  impl_->path = path;
  impl_->tmp_path = path + ".tmp." + std::to_string(::getpid());
  impl_->vocab_size = vocab_size;
  impl_->token_bytes = token_bytes_for(vocab_size);
  impl_->buffer.reserve(kWriteBuffer);
  impl_->fd = ::open(impl_->tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (impl_->fd < 0) throw Error("cannot create shard: " + errno_text(), file_ctx(impl_->tmp_path));
  // Placeholder header; the real one is written by finish() once the sizes are known.
  char zeros[kHeaderBytes] = {};
  impl_->append(zeros, sizeof(zeros));
}

ShardWriter::~ShardWriter() {
  if (!impl_) return;
  if (impl_->fd >= 0) ::close(impl_->fd);
  if (!impl_->finished) ::unlink(impl_->tmp_path.c_str());
}

void ShardWriter::add_document(std::span<const int32_t> ids) {
  append_tokens(ids);
  end_document();
}

void ShardWriter::end_document() { impl_->index.push_back(impl_->num_tokens); }

int64_t ShardWriter::open_document_tokens() const { return impl_->num_tokens - impl_->index.back(); }

void ShardWriter::discard_document() {
  Impl& m = *impl_;
  PRISM_CHECK(!m.finished, m.path, ": discard_document after finish()");
  m.flush();
  m.num_tokens = m.index.back();
  const off_t end = static_cast<off_t>(kHeaderBytes + static_cast<uint64_t>(m.num_tokens) * m.token_bytes);
  if (::ftruncate(m.fd, end) != 0 || ::lseek(m.fd, end, SEEK_SET) != end)
    throw Error("cannot truncate shard: " + errno_text(), file_ctx(m.tmp_path));
}

void ShardWriter::append_tokens(std::span<const int32_t> ids) {
  PRISM_CHECK(!impl_->finished, impl_->path, ": add_document after finish()");
  const int64_t vocab = impl_->vocab_size;
  // Converted in chunks so that a huge document never needs a second full-size copy.
  constexpr size_t kChunk = 1 << 16;
  if (impl_->token_bytes == 2) {
    uint16_t tmp[kChunk];
    for (size_t i = 0; i < ids.size(); i += kChunk) {
      size_t n = std::min(kChunk, ids.size() - i);
      for (size_t j = 0; j < n; ++j) {
        int32_t t = ids[i + j];
        if (t < 0 || t >= vocab)
          throw Error(str("document ", impl_->index.size() - 1, ": token id ", t, " at position ", impl_->num_tokens - impl_->index.back() + static_cast<int64_t>(i + j),
                          " is out of range"),
                      file_ctx(impl_->path, str("[0, ", vocab, ")"), std::to_string(t)));
        tmp[j] = static_cast<uint16_t>(t);
      }
      impl_->append(tmp, n * 2);
    }
  } else {
    for (size_t i = 0; i < ids.size(); ++i) {
      int32_t t = ids[i];
      if (t < 0 || t >= vocab)
        throw Error(str("document ", impl_->index.size() - 1, ": token id ", t, " at position ", impl_->num_tokens - impl_->index.back() + static_cast<int64_t>(i),
                        " is out of range"),
                    file_ctx(impl_->path, str("[0, ", vocab, ")"), std::to_string(t)));
    }
    impl_->append(ids.data(), ids.size() * 4);  // int32 ids in range are their uint32 encoding
  }
  impl_->num_tokens += static_cast<int64_t>(ids.size());
}

void ShardWriter::finish() {
  Impl& m = *impl_;
  PRISM_CHECK(!m.finished, m.path, ": finish() called twice");
  if (open_document_tokens() > 0) end_document();
  const uint64_t tokens_end = kHeaderBytes + static_cast<uint64_t>(m.num_tokens) * m.token_bytes;
  const uint64_t index_offset = align8(tokens_end);
  char pad[8] = {};
  m.append(pad, index_offset - tokens_end);
  m.append(m.index.data(), m.index.size() * sizeof(int64_t));
  m.append(kEndMagic, sizeof(kEndMagic));
  m.flush();

  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.token_bytes = m.token_bytes;
  h.vocab_size = m.vocab_size;
  h.num_tokens = m.num_tokens;
  h.num_docs = static_cast<int64_t>(m.index.size()) - 1;
  h.tokens_offset = kHeaderBytes;
  h.index_offset = index_offset;
  h.checksum = fnv1a(&h, offsetof(Header, checksum));
  pwrite_all(m.fd, &h, sizeof(h), 0, m.tmp_path);
  if (::fsync(m.fd) != 0) throw Error("fsync failed: " + errno_text(), file_ctx(m.tmp_path));
  if (::close(m.fd) != 0) {
    m.fd = -1;
    throw Error("close failed: " + errno_text(), file_ctx(m.tmp_path));
  }
  m.fd = -1;
  fs::rename(m.tmp_path, m.path);
  m.finished = true;
  fs::fsync_dir(fs::parent(m.path));
}

int64_t ShardWriter::num_tokens() const { return impl_->num_tokens; }
int64_t ShardWriter::num_documents() const { return static_cast<int64_t>(impl_->index.size()) - 1; }

// ---------------------------------------------------------------------------------------------
// Reader

struct ShardReader::Impl {
  std::string path;
  void* map = nullptr;
  size_t map_bytes = 0;
  Header h{};
  const unsigned char* tokens = nullptr;
  const int64_t* index = nullptr;

  ~Impl() {
    if (map) ::munmap(map, map_bytes);
  }
  int64_t token_at(int64_t i) const {
    if (h.token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, tokens + i * 2, 2);
      return v;
    }
    uint32_t v;
    std::memcpy(&v, tokens + i * 4, 4);
    return v;
  }
};

ShardReader::ShardReader() : impl_(std::make_unique<Impl>()) {}
ShardReader::~ShardReader() = default;

std::shared_ptr<ShardReader> ShardReader::open(const std::string& path) {
  std::shared_ptr<ShardReader> r(new ShardReader());
  Impl& m = *r->impl_;
  m.path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open token shard: " + errno_text(), file_ctx(path));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat token shard: " + errno_text(), file_ctx(path));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes + 16) {
    ::close(fd);
    throw Error("truncated token shard: smaller than header + index + end magic",
                file_ctx(path, str(">= ", kHeaderBytes + 16, " bytes"), str(size, " bytes")));
  }
  m.map_bytes = size;
  m.map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (m.map == MAP_FAILED) {
    m.map = nullptr;
    throw Error("mmap failed: " + errno_text(), file_ctx(path));
  }
  const auto* base = static_cast<const unsigned char*>(m.map);
  std::memcpy(&m.h, base, sizeof(Header));
  const Header& h = m.h;

  if (std::memcmp(h.magic, kMagic, 8) != 0)
    throw Error("bad magic: not a prism token shard",
                file_ctx(path, "\"PRISMTOK\"", "\"" + std::string(h.magic, 8) + "\""));
  if (h.version != kVersion)
    throw Error("unknown token shard format version (written by a newer prism?)",
                file_ctx(path, std::to_string(kVersion), std::to_string(h.version)));
  if (fnv1a(&h, offsetof(Header, checksum)) != h.checksum)
    throw Error("header checksum mismatch: the header is corrupt", file_ctx(path));
  if (h.vocab_size <= 0 || h.vocab_size > (int64_t{1} << 31))
    throw Error("vocab_size out of range", file_ctx(path, "[1, 2^31]", std::to_string(h.vocab_size)));
  if (h.token_bytes != token_bytes_for(h.vocab_size))
    throw Error(str("token width does not match vocab_size ", h.vocab_size),
                file_ctx(path, std::to_string(token_bytes_for(h.vocab_size)), std::to_string(h.token_bytes)));
  if (h.num_tokens < 0 || h.num_docs < 0 || h.num_tokens > int64_t{1} << 48 || h.num_docs > int64_t{1} << 48)
    throw Error(str("negative or absurd sizes: num_tokens ", h.num_tokens, ", num_docs ", h.num_docs),
                file_ctx(path));
  const uint64_t tokens_end = h.tokens_offset + static_cast<uint64_t>(h.num_tokens) * h.token_bytes;
  if (h.tokens_offset != kHeaderBytes || h.index_offset != align8(tokens_end))
    throw Error("token/index offsets out of range",
                file_ctx(path, str("tokens at ", kHeaderBytes, ", index at ", align8(tokens_end)),
                         str("tokens at ", h.tokens_offset, ", index at ", h.index_offset)));
  const uint64_t expected = h.index_offset + static_cast<uint64_t>(h.num_docs + 1) * 8 + sizeof(kEndMagic);
  if (size != expected)
    throw Error(size < expected ? "truncated token shard" : "token shard has trailing bytes",
                file_ctx(path, str(expected, " bytes"), str(size, " bytes")));
  if (std::memcmp(base + size - 8, kEndMagic, 8) != 0)
    throw Error("bad end magic: the file was cut or overwritten", file_ctx(path, "\"PRISMEND\""));

  m.tokens = base + h.tokens_offset;
  m.index = reinterpret_cast<const int64_t*>(base + h.index_offset);  // 8-aligned by construction
  if (m.index[0] != 0 || m.index[h.num_docs] != h.num_tokens)
    throw Error("document index must run from 0 to num_tokens",
                file_ctx(path, str("0 .. ", h.num_tokens), str(m.index[0], " .. ", m.index[h.num_docs])));
  for (int64_t i = 0; i < h.num_docs; ++i) {
    if (m.index[i + 1] < m.index[i])
      throw Error(str("document index is not monotonic at document ", i),
                  file_ctx(path, str(">= ", m.index[i]), std::to_string(m.index[i + 1])));
  }
  // A uint16 shard with vocab 65536 cannot hold an out-of-range id; otherwise check all ids of
  // a small shard, or a strided sample of a large one.
  if (!(h.token_bytes == 2 && h.vocab_size == 65536) && h.num_tokens > 0) {
    const int64_t step = h.num_tokens <= kFullTokenCheck ? 1 : h.num_tokens / kSpotChecks;
    for (int64_t i = 0; i < h.num_tokens; i += step) {
      int64_t t = m.token_at(i);
      if (t >= h.vocab_size)
        throw Error(str("token id at position ", i, " is >= vocab_size"),
                    file_ctx(path, str("< ", h.vocab_size), std::to_string(t)));
    }
  }
  return r;
}

const std::string& ShardReader::path() const { return impl_->path; }
int64_t ShardReader::vocab_size() const { return impl_->h.vocab_size; }
int64_t ShardReader::num_tokens() const { return impl_->h.num_tokens; }
int64_t ShardReader::num_documents() const { return impl_->h.num_docs; }

std::pair<int64_t, int64_t> ShardReader::document(int64_t i) const {
  PRISM_CHECK(i >= 0 && i < impl_->h.num_docs, impl_->path, ": document ", i, " out of range [0, ",
              impl_->h.num_docs, ")");
  return {impl_->index[i], impl_->index[i + 1]};
}

void ShardReader::read(int64_t begin, std::span<int32_t> out) const {
  const Impl& m = *impl_;
  const auto n = static_cast<int64_t>(out.size());
  PRISM_CHECK(begin >= 0 && begin + n <= m.h.num_tokens, m.path, ": token range [", begin, ", ", begin + n,
              ") out of range [0, ", m.h.num_tokens, ")");
  // Every id read is range-checked (one compare per token, next to the copy): open() only spot
  // checks large shards, and an id past the vocabulary would otherwise surface as LibTorch's
  // "index out of range in self" inside the embedding, naming neither shard nor position.
  const int64_t vocab = m.h.vocab_size;
  int64_t bad = -1;
  if (m.h.token_bytes == 2) {
    const auto* p = m.tokens + begin * 2;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t v;
      std::memcpy(&v, p + i * 2, 2);
      out[i] = v;
      if (v >= vocab && bad < 0) bad = i;
    }
  } else {
    std::memcpy(out.data(), m.tokens + begin * 4, static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) {
      if ((out[i] < 0 || out[i] >= vocab) && bad < 0) bad = i;  // uint32 >= 2^31 reads as negative
    }
  }
  if (bad >= 0) {
    const int64_t pos = begin + bad;
    const int64_t id = m.h.token_bytes == 2 ? out[bad] : static_cast<int64_t>(static_cast<uint32_t>(out[bad]));
    const int64_t* doc = std::upper_bound(m.index, m.index + m.h.num_docs + 1, pos) - 1;
    throw Error(str("token id at position ", pos, " (document ", doc - m.index, ") is outside the vocabulary: the "
                    "shard is corrupt"),
                file_ctx(m.path, str("< ", vocab), std::to_string(id)));
  }
}

}  // namespace prism::data
