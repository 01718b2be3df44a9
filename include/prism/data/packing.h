// Best-fit-decreasing packing of variable-length sequences into fixed-capacity rows: the mixture
// loader's bfd packing, and the packer for rollouts (prompt + completion sequences) in RL.
//
// **Example**:
//
//     auto rows = prism::data::pack_best_fit_decreasing({5, 3, 8, 2}, 8);
//     // rows[0].items == {2} (length 8), rows[1].items == {0, 1} (5 + 3), rows[2].items == {3}
//     // rows[1].cu_seqlens == {0, 5, 8}; rows[2].used == 2 (6 tokens of padding to add)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace prism::data {

/// One packed row: which sequences it holds, in order, and their boundaries.
struct PackedRow {
  std::vector<int64_t> items;       ///< indices into the packed lengths, in row order
  std::vector<int64_t> cu_seqlens;  ///< [items + 1]: 0, then cumulative lengths (flash-attn varlen layout)
  int64_t used = 0;                 ///< tokens filled (cu_seqlens.back()); capacity - used is padding
};

/// Packs sequences of `lengths` (each in [1, capacity]) into rows of `capacity` tokens: longest
/// first (ties in input order), each into the row with the least room that still fits it (ties:
/// the row whose room was set earliest), else into a new row. Deterministic; rows are returned
/// in creation order. Throws prism::Error naming the index of a length out of range.
std::vector<PackedRow> pack_best_fit_decreasing(std::span<const int64_t> lengths, int64_t capacity);

}  // namespace prism::data
