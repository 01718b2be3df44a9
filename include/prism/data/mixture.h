// The mid-training data mixture: a streaming, deterministic, resumable loader over token shards
// (docs/data-format.md §Mixture loader).
//
// Why a single global stream: every rank computes the same global sequence of packed rows (only
// document lengths are needed for that, read from the shard indexes) and materialises just the
// rows it owns (rank r takes the r-th of every world_size consecutive rows). So the union over
// ranks is exactly the single-rank stream, and the resume state - taken at a boundary of whole
// world_size groups - is a position in the global stream, identical on every rank and valid for
// any world size.
//
// **Example**:
//
//     auto cfg = prism::config::load_config<prism::data::MixtureConfig>("configs/mixtures/prism-mcs.yaml");
//     prism::data::MixtureLoader loader(cfg, rank, world_size);
//     prism::data::Batch b = loader.next();       // b.input_ids: [batch_size, seq_len]
//     std::string saved = to_json(loader.state());
//     loader.restore(mixture_state_from_json(saved));
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "prism/core/config.h"

namespace prism::data {

/// One corpus of the mixture.
struct MixtureSource {
  std::string name;    ///< unique label (state, logs, realized_tokens())
  std::string path;    ///< glob(3) pattern of token shard files, e.g. `/data/megamath/*.tok`
  double weight = 0;   ///< share of the mixture's tokens; relative (normalised by the sum of all weights)

  void visit(config::Visitor& v) {
    v.field("name", name, config::required() & config::non_empty(), "unique source name");
    v.field("path", path, config::required() & config::non_empty(), "glob(3) pattern of token shard files");
    v.field("weight", weight, config::required() & config::positive(),
            "share of tokens; weights are normalised by their sum, so percentages work");
  }
  bool operator==(const MixtureSource&) const = default;
};

/// The mixture loader's options. Weights are relative: the loader divides each by their sum.
struct MixtureConfig {
  std::vector<MixtureSource> sources;  ///< at least one
  int64_t seq_len = 8192;              ///< tokens per packed row
  int64_t batch_size = 1;              ///< rows per batch on each rank
  int64_t seed = 0;                    ///< seeds the per-source, per-epoch document permutations
  std::string packing = "concat";      ///< "concat" (stream cut into rows) or "bfd" (best-fit-decreasing)
  int64_t eos_id = -1;                 ///< appended after every document (required)
  bool append_eos = true;              ///< false: the shards already end documents with EOS
  int64_t pad_id = -1;                 ///< fills the tail of bfd rows; -1: eos_id
  int64_t bfd_window_rows = 64;        ///< bfd: documents are gathered for this many rows, then packed
  /// bfd: a document longer than seq_len is cut into seq_len chunks that start every
  /// seq_len - split_overlap tokens, so each chunk but the first repeats the previous one's last
  /// split_overlap tokens as context (the study's long-context data, paper Table 18). 0: disjoint.
  int64_t split_overlap = 0;
  /// Documents with fewer tokens are skipped (the study filters short samples out of its
  /// long-context data); 0: only empty documents are skipped.
  int64_t min_doc_tokens = 0;

  void visit(config::Visitor& v) {
    v.field("sources", sources, config::non_empty(), "the corpora and their token shares");
    v.field("seq_len", seq_len, config::positive(), "tokens per packed row");
    v.field("batch_size", batch_size, config::positive(), "rows per batch on each rank");
    v.field("seed", seed, config::non_negative(), "seed of the document permutations");
    v.field("packing", packing, config::one_of({"concat", "bfd"}),
            "concat: documents back to back, cut at seq_len; bfd: best-fit-decreasing into rows, padded");
    v.field("eos_id", eos_id, config::required() & config::non_negative(), "token id appended after each document");
    v.field("append_eos", append_eos, "append eos_id after each document");
    v.field("pad_id", pad_id, config::at_least(-1), "padding token id for bfd rows (-1: eos_id)");
    v.field("bfd_window_rows", bfd_window_rows, config::positive(),
            "bfd: rows' worth of documents packed together (larger packs tighter)");
    v.field("split_overlap", split_overlap, config::non_negative(),
            "bfd: documents longer than seq_len become seq_len chunks overlapping by this many tokens (< seq_len)");
    v.field("min_doc_tokens", min_doc_tokens, config::non_negative(),
            "skip documents shorter than this many tokens (0: keep all non-empty ones)");
  }
  /// Cross-field rules: unique source names; split_overlap < seq_len and only with bfd.
  void validate() const;
  /// Weights divided by their sum.
  std::vector<double> normalized_weights() const;
  bool operator==(const MixtureConfig&) const = default;
};

/// One batch of packed rows; B = batch_size, T = seq_len.
struct Batch {
  at::Tensor input_ids;     ///< [B, T] int64
  at::Tensor labels;        ///< [B, T] int64: next token of the same document, -100 at a document's end and on padding
  at::Tensor position_ids;  ///< [B, T] int64: 0 at each segment start (document start, or a row start mid-document)
  /// [S + 1] int64: segment boundaries in the flattened [B * T] tokens (flash-attn varlen layout:
  /// starts at 0, ends at B * T, every row boundary is a boundary; bfd padding is one segment).
  at::Tensor cu_seqlens;
  int64_t max_seqlen = 0;   ///< longest segment in the batch
  int64_t first_row = 0;    ///< global stream index of this rank's first row in the batch
};

/// Per-source cursor of the global stream.
struct SourceCursor {
  std::string name;
  int64_t num_docs = 0;         ///< over all shards; checked on restore (the data must not change)
  int64_t num_tokens = 0;       ///< over all shards; checked on restore
  int64_t epoch = 0;            ///< current pass over the source (0-based)
  int64_t position = 0;         ///< documents of this epoch's permutation already drawn
  int64_t realized_tokens = 0;  ///< document tokens drawn so far (EOS not counted)
};

/// Resume state: a position in the global stream (rank- and world-size-independent).
struct MixtureState {
  int64_t version = 1;
  int64_t seed = 0;
  int64_t seq_len = 0;
  std::string packing;
  int64_t rows = 0;  ///< global rows consumed (by all ranks together)
  /// Cursors at the anchor: the current row boundary (concat) or the start of the current bfd
  /// window; `rows_into_window` rows of that window were already consumed.
  std::vector<SourceCursor> sources;
  int64_t rows_into_window = 0;
  /// concat: the document cut by the last row boundary (-1: none) and how much of it was used.
  int64_t carry_source = -1;
  int64_t carry_doc = -1;
  int64_t carry_offset = 0;
  int64_t split_overlap = 0;   ///< the config's; bfd windows depend on it (absent in older states: 0)
  int64_t min_doc_tokens = 0;  ///< the config's; the stream depends on it (absent in older states: 0)
};

std::string to_json(const MixtureState& state);
/// Throws prism::Error naming the bad key.
MixtureState mixture_state_from_json(const std::string& json);

/// Streams packed batches of the mixture; see the file comment and docs/data-format.md.
class MixtureLoader {
 public:
  /// Globs and mmaps every shard (validating them); throws prism::Error naming the source/file.
  MixtureLoader(const MixtureConfig& cfg, int rank, int world_size);
  ~MixtureLoader();
  MixtureLoader(const MixtureLoader&) = delete;
  MixtureLoader& operator=(const MixtureLoader&) = delete;

  /// The next batch of this rank.
  Batch next();

  /// Position after the last next(); identical on every rank.
  MixtureState state() const;
  /// Continues from `state` (saved with any world size); throws if seed, seq_len, packing or the
  /// sources' documents differ.
  void restore(const MixtureState& state);

  /// The token shards' vocab_size (the same for every shard of every source; each id read is
  /// checked against it). A model whose vocab is smaller cannot embed these tokens.
  int64_t vocab_size() const;
  /// Throws prism::Error, naming a shard and `model_source` (e.g. the model's config.json), when
  /// the shards' vocab_size exceeds `model_vocab_size`: call at start-up, before step 1.
  void check_model_vocab(int64_t model_vocab_size, const std::string& model_source) const;

  /// Source names, in config order.
  std::vector<std::string> source_names() const;
  /// Document tokens drawn into the global stream per source (including a partly used document
  /// and the current bfd window); divide by the sum for realized fractions.
  std::vector<int64_t> realized_tokens() const;
  /// Completed epochs per source.
  std::vector<int64_t> epochs() const;
  /// Called as (source name, new epoch index) whenever a source starts a new pass.
  void set_epoch_callback(std::function<void(const std::string&, int64_t)> callback);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prism::data
