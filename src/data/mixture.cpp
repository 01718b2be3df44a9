// The mixture loader (include/prism/data/mixture.h, docs/data-format.md §Mixture loader).
//
// Design, and why:
//  * Source sampling is a deterministic token-deficit scheduler: the next document comes from the
//    source whose realized token count lags its target share the most (argmax of
//    w_s * total - realized_s, ties to the lower index). Realized fractions then stay within one
//    document of the weights at every point of the stream (no RNG variance), and the sampler
//    state is just the realized counts.
//  * Each source walks its documents (over all its shards) in a pseudo-random order per epoch: a
//    4-round Feistel permutation of [0, 2^2h) with cycle-walking into [0, num_docs), keyed by
//    (seed, source name, epoch). O(1) memory and O(1) state (epoch, position), so a source with
//    10^8 documents needs no permutation table.
//  * The global stream of rows only needs document lengths (shard indexes); tokens are read from
//    the mmaps only for the rows this rank owns.
//  * Resume state is taken at world_size-group boundaries of the global stream, so it is the
//    same on every rank and any world size can continue from it. bfd windows are not stored:
//    the state keeps the cursors at the window start and how many of its rows were consumed, and
//    restore() rebuilds the window (it is a pure function of the cursors).
#include "prism/data/mixture.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "prism/core/error.h"
#include "prism/core/fs.h"
#include "prism/core/log.h"
#include "prism/data/packing.h"
#include "prism/data/token_shard.h"

namespace prism::data {

namespace {

constexpr int64_t kIgnore = -100;  // label ignored by the loss (PyTorch/HF convention)

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// A keyed bijection of [0, n): Feistel network on 2h bits, cycle-walked into range.
class Permutation {
 public:
  Permutation() = default;
  Permutation(uint64_t n, uint64_t key) : n_(n), key_(key) {
    while ((uint64_t{1} << (2 * half_)) < n_) ++half_;
    mask_ = (uint64_t{1} << half_) - 1;
  }
  uint64_t operator()(uint64_t i) const {
    if (n_ <= 1) return 0;
    uint64_t x = i;
    do x = round_trip(x);
    while (x >= n_);  // expected < 4 walks: 2^2h < 4n
    return x;
  }

 private:
  uint64_t round_trip(uint64_t x) const {
    uint64_t l = x >> half_, r = x & mask_;
    for (uint64_t k = 0; k < 4; ++k) {
      uint64_t f = splitmix64(r ^ splitmix64(key_ + k)) & mask_;
      uint64_t nl = r;
      r = l ^ f;
      l = nl;
    }
    return (l << half_) | r;
  }
  uint64_t n_ = 0, key_ = 0, mask_ = 0;
  int half_ = 1;
};

// One piece of a packed row: positions [begin, end) of a document's segment (its tokens, then
// EOS when append_eos), as a contiguous run of the row.
struct Piece {
  int src;
  int64_t doc;      // document index within the source (over all its shards)
  int64_t begin;    // within the segment
  int64_t end;
  int64_t seg_len;  // document tokens + EOS
};
using Row = std::vector<Piece>;

struct Source {
  std::string name;
  double weight = 0;  // normalised
  std::vector<std::shared_ptr<ShardReader>> shards;
  std::vector<int64_t> doc_prefix{0};  // documents before shard i
  int64_t num_docs = 0, num_tokens = 0;
  uint64_t key_base = 0;
  // cursor
  int64_t epoch = 0, position = 0, realized = 0;
  Permutation perm;

  void reset_perm(uint64_t seed) {
    perm = Permutation(static_cast<uint64_t>(num_docs),
                       splitmix64(seed ^ splitmix64(key_base ^ splitmix64(static_cast<uint64_t>(epoch)))));
  }
  // (shard, first token, end token) of document d.
  std::tuple<const ShardReader*, int64_t, int64_t> locate(int64_t d) const {
    auto it = std::upper_bound(doc_prefix.begin(), doc_prefix.end(), d);
    size_t s = static_cast<size_t>(it - doc_prefix.begin()) - 1;
    auto [b, e] = shards[s]->document(d - doc_prefix[s]);
    return {shards[s].get(), b, e};
  }
  int64_t doc_len(int64_t d) const {
    auto [sh, b, e] = locate(d);
    return e - b;
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

void MixtureConfig::validate() const {
  // Each weight is already finite and > 0 (the field's check); their sum must be finite too, or
  // every normalised weight would be 0 and the deficit scheduler would starve sources silently.
  double sum = 0;
  for (const auto& s : sources) sum += s.weight;
  if (!std::isfinite(sum))
    throw Error("the weights' sum overflows; use relative weights such as percentages",
                key_context("", "sources", "weights with a finite sum", str(sum)));
  std::set<std::string> seen;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (!seen.insert(sources[i].name).second)
      throw Error("source names must be unique",
                  key_context("", str("sources[", i, "].name"), "a new name", "\"" + sources[i].name + "\" again"));
  }
  if (split_overlap > 0 && packing != "bfd")
    throw Error("overlapping chunks need bfd packing (concat streams documents across rows)",
                key_context("", "split_overlap", "0 with packing: concat", str(split_overlap)));
  if (split_overlap >= seq_len)
    throw Error("chunks must advance",
                key_context("", "split_overlap", str("< seq_len (", seq_len, ")"), str(split_overlap)));
}

std::vector<double> MixtureConfig::normalized_weights() const {
  double sum = 0;
  for (const auto& s : sources) sum += s.weight;
  std::vector<double> w;
  for (const auto& s : sources) w.push_back(s.weight / sum);
  return w;
}

// ---------------------------------------------------------------------------------------------
// State <-> JSON

std::string to_json(const MixtureState& st) {
  nlohmann::json j;
  j["version"] = st.version;
  j["seed"] = st.seed;
  j["seq_len"] = st.seq_len;
  j["packing"] = st.packing;
  j["rows"] = st.rows;
  j["rows_into_window"] = st.rows_into_window;
  j["carry_source"] = st.carry_source;
  j["carry_doc"] = st.carry_doc;
  j["carry_offset"] = st.carry_offset;
  j["split_overlap"] = st.split_overlap;
  j["min_doc_tokens"] = st.min_doc_tokens;
  j["sources"] = nlohmann::json::array();
  for (const auto& c : st.sources) {
    j["sources"].push_back({{"name", c.name},
                            {"num_docs", c.num_docs},
                            {"num_tokens", c.num_tokens},
                            {"epoch", c.epoch},
                            {"position", c.position},
                            {"realized_tokens", c.realized_tokens}});
  }
  return j.dump();
}

namespace {
template <class T>
T json_get(const nlohmann::json& j, const std::string& key, const std::string& path) {
  if (!j.is_object() || !j.contains(key))
    throw Error("missing key in mixture state", key_context("<mixture state>", path + key));
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("wrong type in mixture state: ") + e.what(), key_context("<mixture state>", path + key));
  }
}
}  // namespace

MixtureState mixture_state_from_json(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(std::string("mixture state is not valid JSON: ") + e.what(), key_context("<mixture state>", ""));
  }
  MixtureState st;
  st.version = json_get<int64_t>(j, "version", "");
  if (st.version != 1)
    throw Error("unknown mixture state version", key_context("<mixture state>", "version", "1", str(st.version)));
  st.seed = json_get<int64_t>(j, "seed", "");
  st.seq_len = json_get<int64_t>(j, "seq_len", "");
  st.packing = json_get<std::string>(j, "packing", "");
  st.rows = json_get<int64_t>(j, "rows", "");
  st.rows_into_window = json_get<int64_t>(j, "rows_into_window", "");
  st.carry_source = json_get<int64_t>(j, "carry_source", "");
  st.carry_doc = json_get<int64_t>(j, "carry_doc", "");
  st.carry_offset = json_get<int64_t>(j, "carry_offset", "");
  if (j.contains("split_overlap")) st.split_overlap = json_get<int64_t>(j, "split_overlap", "");
  if (j.contains("min_doc_tokens")) st.min_doc_tokens = json_get<int64_t>(j, "min_doc_tokens", "");
  auto srcs = json_get<nlohmann::json>(j, "sources", "");
  if (!srcs.is_array()) throw Error("must be a list", key_context("<mixture state>", "sources"));
  for (size_t i = 0; i < srcs.size(); ++i) {
    const std::string p = str("sources[", i, "].");
    SourceCursor c;
    c.name = json_get<std::string>(srcs[i], "name", p);
    c.num_docs = json_get<int64_t>(srcs[i], "num_docs", p);
    c.num_tokens = json_get<int64_t>(srcs[i], "num_tokens", p);
    c.epoch = json_get<int64_t>(srcs[i], "epoch", p);
    c.position = json_get<int64_t>(srcs[i], "position", p);
    c.realized_tokens = json_get<int64_t>(srcs[i], "realized_tokens", p);
    st.sources.push_back(std::move(c));
  }
  return st;
}

// ---------------------------------------------------------------------------------------------
// Loader

struct MixtureLoader::Impl {
  MixtureConfig cfg;
  int rank = 0, world = 1;
  int64_t seq_len = 0;
  int64_t eos = 0, pad = 0;
  int64_t vocab = 0;         // the shards' vocab_size
  std::string vocab_file;    // a shard that declares it, for messages
  bool bfd = false;
  std::vector<Source> sources;
  std::function<void(const std::string&, int64_t)> on_epoch;
  bool quiet = false;  // no epoch callbacks while restore() replays a window

  // Global stream position.
  int64_t rows = 0;
  int64_t total_realized = 0;
  // concat carry: the document cut by the last row boundary.
  int carry_src = -1;
  int64_t carry_doc = -1, carry_off = 0, carry_seg = 0;
  // bfd: the rows of the current window not yet consumed, and the state at its start.
  std::vector<Row> window;
  size_t window_next = 0;
  MixtureState window_anchor;

  int64_t seg_len(int64_t doc_len) const { return doc_len + (cfg.append_eos ? 1 : 0); }

  // Draws the next document of the stream: the source lagging its share most, then that
  // source's next non-empty document in this epoch's permutation.
  std::pair<int, int64_t> draw() {
    int best = 0;
    double best_deficit = -1e300;
    for (size_t s = 0; s < sources.size(); ++s) {
      double deficit = sources[s].weight * static_cast<double>(total_realized) - static_cast<double>(sources[s].realized);
      if (deficit > best_deficit) {
        best_deficit = deficit;
        best = static_cast<int>(s);
      }
    }
    Source& src = sources[best];
    for (;;) {
      if (src.position == src.num_docs) {
        ++src.epoch;
        src.position = 0;
        src.reset_perm(static_cast<uint64_t>(cfg.seed));
        if (!quiet) {
          log::info("mixture: source '" + src.name + "' exhausted, starting epoch " + std::to_string(src.epoch));
          if (on_epoch) on_epoch(src.name, src.epoch);
        }
      }
      int64_t d = static_cast<int64_t>(src.perm(static_cast<uint64_t>(src.position++)));
      int64_t len = src.doc_len(d);
      // Empty documents contribute nothing; short ones are filtered (min_doc_tokens). The
      // constructor made sure every source has a document that passes, so this ends.
      if (len == 0 || len < cfg.min_doc_tokens) continue;
      src.realized += len;
      total_realized += len;
      return {best, d};
    }
  }

  Row next_concat_row() {
    Row row;
    int64_t filled = 0;
    while (filled < seq_len) {
      if (carry_src < 0) {
        auto [s, d] = draw();
        carry_src = s;
        carry_doc = d;
        carry_off = 0;
        carry_seg = seg_len(sources[s].doc_len(d));
      }
      int64_t take = std::min(carry_seg - carry_off, seq_len - filled);
      row.push_back({carry_src, carry_doc, carry_off, carry_off + take, carry_seg});
      filled += take;
      carry_off += take;
      if (carry_off == carry_seg) carry_src = -1;
    }
    return row;
  }

  // Gathers documents for bfd_window_rows rows, splits those longer than seq_len into
  // seq_len chunks (starting every seq_len - split_overlap tokens), and packs the pieces
  // best-fit-decreasing into rows.
  void build_window() {
    window_anchor = snapshot();
    std::vector<Piece> pieces;
    const int64_t target = cfg.bfd_window_rows * seq_len;
    for (int64_t gathered = 0; gathered < target;) {
      auto [s, d] = draw();
      int64_t sl = seg_len(sources[s].doc_len(d));
      const int64_t stride = seq_len - cfg.split_overlap;
      for (int64_t b = 0;; b += stride) {
        pieces.push_back({s, d, b, std::min(sl, b + seq_len), sl});
        if (b + seq_len >= sl) break;
      }
      gathered += sl;
    }
    std::vector<int64_t> lengths;
    lengths.reserve(pieces.size());
    for (const Piece& p : pieces) lengths.push_back(p.end - p.begin);
    window.clear();
    window_next = 0;
    for (const PackedRow& packed : pack_best_fit_decreasing(lengths, seq_len)) {
      Row row;
      for (int64_t i : packed.items) row.push_back(pieces[static_cast<size_t>(i)]);
      window.push_back(std::move(row));
    }
  }

  Row next_row() {
    ++rows;
    if (!bfd) return next_concat_row();
    if (window_next == window.size()) build_window();
    return std::move(window[window_next++]);
  }

  MixtureState snapshot() const {
    MixtureState st;
    st.seed = cfg.seed;
    st.seq_len = seq_len;
    st.packing = cfg.packing;
    st.split_overlap = cfg.split_overlap;
    st.min_doc_tokens = cfg.min_doc_tokens;
    st.rows = rows;
    for (const Source& s : sources)
      st.sources.push_back({s.name, s.num_docs, s.num_tokens, s.epoch, s.position, s.realized});
    if (carry_src >= 0) {
      st.carry_source = carry_src;
      st.carry_doc = carry_doc;
      st.carry_offset = carry_off;
    }
    return st;
  }

  // Fills row b of the batch from the mmaps. `buf` is scratch.
  void materialize(const Row& row, int64_t b, int64_t* ids, int64_t* labels, int64_t* pos,
                   std::vector<int64_t>& cu, int64_t& max_seqlen, std::vector<int32_t>& buf) const {
    int64_t t = 0;
    const int64_t base = b * seq_len;
    for (const Piece& p : row) {
      const int64_t len = p.end - p.begin;
      const int64_t want = std::min(p.end + 1, p.seg_len) - p.begin;  // one more token for the last label
      buf.resize(static_cast<size_t>(want));
      auto [shard, tb, te] = sources[static_cast<size_t>(p.src)].locate(p.doc);
      const int64_t from_doc = std::clamp<int64_t>(te - tb - p.begin, 0, want);
      if (from_doc > 0) shard->read(tb + p.begin, std::span<int32_t>(buf.data(), static_cast<size_t>(from_doc)));
      for (int64_t i = from_doc; i < want; ++i) buf[static_cast<size_t>(i)] = static_cast<int32_t>(eos);
      for (int64_t i = 0; i < len; ++i) {
        ids[base + t + i] = buf[static_cast<size_t>(i)];
        labels[base + t + i] = i + 1 < want ? buf[static_cast<size_t>(i + 1)] : kIgnore;
        pos[base + t + i] = i;
      }
      t += len;
      cu.push_back(base + t);
      max_seqlen = std::max(max_seqlen, len);
    }
    if (t < seq_len) {  // bfd padding: one ignored segment
      for (int64_t i = 0; t + i < seq_len; ++i) {
        ids[base + t + i] = pad;
        labels[base + t + i] = kIgnore;
        pos[base + t + i] = i;
      }
      max_seqlen = std::max(max_seqlen, seq_len - t);
      cu.push_back(base + seq_len);
    }
  }
};

MixtureLoader::MixtureLoader(const MixtureConfig& cfg, int rank, int world_size) : impl_(std::make_unique<Impl>()) {
  config::validate_config(cfg);
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw Error(str("rank ", rank, " / world_size ", world_size, " is invalid"),
                key_context("", "", "world_size >= 1 and 0 <= rank < world_size"));
  Impl& m = *impl_;
  m.cfg = cfg;
  m.rank = rank;
  m.world = world_size;
  m.seq_len = cfg.seq_len;
  m.bfd = cfg.packing == "bfd";
  m.eos = cfg.eos_id;
  m.pad = cfg.pad_id >= 0 ? cfg.pad_id : cfg.eos_id;
  const std::vector<double> w = cfg.normalized_weights();
  int64_t vocab = -1;
  std::string vocab_file;
  for (size_t i = 0; i < cfg.sources.size(); ++i) {
    const MixtureSource& ms = cfg.sources[i];
    const std::string key = str("sources[", i, "].path");
    const std::vector<std::string> files = fs::glob(ms.path);
    if (files.empty())
      throw Error(str("source '", ms.name, "': no token shards match '", ms.path, "' (", fs::glob_miss_reason(ms.path),
                      "); make them with `prism-train data tokenize --tokenizer <model dir> --input <text files> "
                      "--output <dir>` (tools/demo.sh makes the ones the bundled configs use)"),
                  key_context("", key));
    Source src;
    src.name = ms.name;
    src.weight = w[i];
    src.key_base = hash_name(ms.name);
    for (const std::string& f : files) {
      auto r = ShardReader::open(f);
      if (vocab < 0) {
        vocab = r->vocab_size();
        vocab_file = f;
      } else if (r->vocab_size() != vocab) {
        throw Error(str("source '", ms.name, "': vocab_size differs from ", vocab_file, " (mixed tokenizers?)"),
                    ErrorContext{f, {}, {}, std::to_string(vocab), std::to_string(r->vocab_size())});
      }
      src.num_docs += r->num_documents();
      src.num_tokens += r->num_tokens();
      src.doc_prefix.push_back(src.num_docs);
      src.shards.push_back(std::move(r));
    }
    if (src.num_tokens == 0)
      throw Error(str("source '", ms.name, "' has no tokens"), key_context("", key, "at least one token", ms.path));
    if (cfg.min_doc_tokens > 1) {
      bool any = false;
      for (int64_t d = 0; d < src.num_docs && !any; ++d) any = src.doc_len(d) >= cfg.min_doc_tokens;
      if (!any)
        throw Error(str("source '", ms.name, "' has no document of min_doc_tokens or more"),
                    key_context("", "min_doc_tokens", str("<= its longest document"), str(cfg.min_doc_tokens)));
    }
    src.reset_perm(static_cast<uint64_t>(cfg.seed));
    m.sources.push_back(std::move(src));
  }
  m.vocab = vocab;
  m.vocab_file = vocab_file;
  if (m.eos >= vocab)
    throw Error("eos_id is not a token id of the shards' vocabulary", key_context("", "eos_id", str("< ", vocab), str(m.eos)));
  if (m.pad >= vocab)
    throw Error("pad_id is not a token id of the shards' vocabulary", key_context("", "pad_id", str("< ", vocab), str(m.pad)));
}

MixtureLoader::~MixtureLoader() = default;

Batch MixtureLoader::next() {
  Impl& m = *impl_;
  const int64_t B = m.cfg.batch_size, T = m.seq_len;
  auto opts = at::TensorOptions().dtype(at::kLong);
  Batch out;
  out.input_ids = at::empty({B, T}, opts);     // [B, T]
  out.labels = at::empty({B, T}, opts);        // [B, T]
  out.position_ids = at::empty({B, T}, opts);  // [B, T]
  int64_t* ids = out.input_ids.data_ptr<int64_t>();
  int64_t* labels = out.labels.data_ptr<int64_t>();
  int64_t* pos = out.position_ids.data_ptr<int64_t>();
  std::vector<int64_t> cu{0};
  std::vector<int32_t> buf;
  out.first_row = m.rows + m.rank;
  for (int64_t b = 0; b < B; ++b) {
    // Every rank walks the whole group of world_size rows (lengths only) and reads its own.
    for (int j = 0; j < m.world; ++j) {
      Row row = m.next_row();
      if (j == m.rank) m.materialize(row, b, ids, labels, pos, cu, out.max_seqlen, buf);
    }
  }
  out.cu_seqlens = at::tensor(at::ArrayRef<int64_t>(cu), opts);  // [S + 1]
  return out;
}

MixtureState MixtureLoader::state() const {
  const Impl& m = *impl_;
  if (m.bfd && m.window_next < m.window.size()) {
    MixtureState st = m.window_anchor;
    st.rows = m.rows;
    st.rows_into_window = static_cast<int64_t>(m.window_next);
    return st;
  }
  return m.snapshot();
}

void MixtureLoader::restore(const MixtureState& st) {
  Impl& m = *impl_;
  const char* ctx = "<mixture state>";
  if (st.seed != m.cfg.seed) throw Error("saved with another seed", key_context(ctx, "seed", str(m.cfg.seed), str(st.seed)));
  if (st.seq_len != m.seq_len)
    throw Error("saved with another seq_len", key_context(ctx, "seq_len", str(m.seq_len), str(st.seq_len)));
  if (st.packing != m.cfg.packing)
    throw Error("saved with another packing", key_context(ctx, "packing", m.cfg.packing, st.packing));
  if (st.split_overlap != m.cfg.split_overlap)
    throw Error("saved with another split_overlap",
                key_context(ctx, "split_overlap", str(m.cfg.split_overlap), str(st.split_overlap)));
  if (st.min_doc_tokens != m.cfg.min_doc_tokens)
    throw Error("saved with another min_doc_tokens",
                key_context(ctx, "min_doc_tokens", str(m.cfg.min_doc_tokens), str(st.min_doc_tokens)));
  if (st.sources.size() != m.sources.size())
    throw Error("saved with another number of sources",
                key_context(ctx, "sources", str(m.sources.size()), str(st.sources.size())));
  for (size_t i = 0; i < st.sources.size(); ++i) {
    const SourceCursor& c = st.sources[i];
    const Source& s = m.sources[i];
    const std::string key = str("sources[", i, "]");
    if (c.name != s.name) throw Error("source order or names changed", key_context(ctx, key + ".name", s.name, c.name));
    if (c.num_docs != s.num_docs || c.num_tokens != s.num_tokens)
      // Expected: what the saved state recorded; found: what the shards hold now.
      throw Error(str("source '", s.name, "' changed on disk since the state was saved"),
                  key_context(ctx, key, str(c.num_docs, " docs / ", c.num_tokens, " tokens"),
                              str(s.num_docs, " docs / ", s.num_tokens, " tokens")));
    if (c.position < 0 || c.position > c.num_docs || c.epoch < 0 || c.realized_tokens < 0)
      throw Error("cursor out of range", key_context(ctx, key, str("position in [0, ", c.num_docs, "]"), str(c.position)));
  }
  if (st.carry_source >= static_cast<int64_t>(m.sources.size()) ||
      (st.carry_source >= 0 && (st.carry_doc < 0 || st.carry_doc >= m.sources[st.carry_source].num_docs)))
    throw Error("carry-over document out of range", key_context(ctx, "carry_doc"));
  if (st.rows_into_window < 0 || (!m.bfd && st.rows_into_window != 0))
    throw Error("rows_into_window out of range", key_context(ctx, "rows_into_window", "0", str(st.rows_into_window)));

  m.total_realized = 0;
  for (size_t i = 0; i < st.sources.size(); ++i) {
    Source& s = m.sources[i];
    s.epoch = st.sources[i].epoch;
    s.position = st.sources[i].position;
    s.realized = st.sources[i].realized_tokens;
    s.reset_perm(static_cast<uint64_t>(m.cfg.seed));
    m.total_realized += s.realized;
  }
  m.carry_src = static_cast<int>(st.carry_source);
  m.carry_doc = st.carry_doc;
  m.carry_off = st.carry_offset;
  if (m.carry_src >= 0) {
    m.carry_seg = m.seg_len(m.sources[static_cast<size_t>(m.carry_src)].doc_len(m.carry_doc));
    if (m.carry_off <= 0 || m.carry_off >= m.carry_seg)
      throw Error("carry_offset out of range", key_context(ctx, "carry_offset", str("in (0, ", m.carry_seg, ")"), str(m.carry_off)));
  }
  m.window.clear();
  m.window_next = 0;
  m.rows = st.rows;
  if (st.rows_into_window > 0) {
    m.quiet = true;  // the epoch callbacks of this window already fired before the save
    m.build_window();
    m.quiet = false;
    m.window_anchor.rows = st.rows - st.rows_into_window;
    if (static_cast<size_t>(st.rows_into_window) >= m.window.size())
      throw Error("rows_into_window exceeds the window", key_context(ctx, "rows_into_window", str("< ", m.window.size()),
                                                                       str(st.rows_into_window)));
    m.window_next = static_cast<size_t>(st.rows_into_window);
  }
}

int64_t MixtureLoader::vocab_size() const { return impl_->vocab; }

void MixtureLoader::check_model_vocab(int64_t model_vocab_size, const std::string& model_source) const {
  if (impl_->vocab <= model_vocab_size) return;
  throw Error(str("the token shards' vocab_size ", impl_->vocab, " exceeds the model's vocab_size ", model_vocab_size, " (",
                  model_source, "): were the shards made with another tokenizer?"),
              key_context(impl_->vocab_file, "vocab_size", str("<= ", model_vocab_size), str(impl_->vocab)));
}

std::vector<std::string> MixtureLoader::source_names() const {
  std::vector<std::string> v;
  for (const auto& s : impl_->sources) v.push_back(s.name);
  return v;
}

std::vector<int64_t> MixtureLoader::realized_tokens() const {
  std::vector<int64_t> v;
  for (const auto& s : impl_->sources) v.push_back(s.realized);
  return v;
}

std::vector<int64_t> MixtureLoader::epochs() const {
  std::vector<int64_t> v;
  for (const auto& s : impl_->sources) v.push_back(s.epoch);
  return v;
}

void MixtureLoader::set_epoch_callback(std::function<void(const std::string&, int64_t)> callback) {
  impl_->on_epoch = std::move(callback);
}

}  // namespace prism::data
