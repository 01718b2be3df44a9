// Best-fit-decreasing (prism/data/packing.h). A multimap from free room to row finds the best fit
// in O(log rows); equal rooms keep insertion order, which fixes the tie-break (and so the rows)
// for resumable loaders that rebuild a window from its cursors.
#include "prism/data/packing.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "prism/core/error.h"

namespace prism::data {

std::vector<PackedRow> pack_best_fit_decreasing(std::span<const int64_t> lengths, int64_t capacity) {
  if (capacity <= 0) throw Error(str("pack_best_fit_decreasing: capacity must be > 0, got ", capacity));
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (lengths[i] < 1 || lengths[i] > capacity)
      throw Error(
          str("pack_best_fit_decreasing: length ", lengths[i], " of sequence ", i, " is not in [1, ", capacity, "]"));
  }
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; });
  std::vector<PackedRow> rows;
  std::multimap<int64_t, size_t> free_room;  // room left -> row
  for (int64_t i : order) {
    const int64_t len = lengths[static_cast<size_t>(i)];
    auto it = free_room.lower_bound(len);
    size_t r;
    int64_t room;
    if (it == free_room.end()) {
      r = rows.size();
      rows.emplace_back();
      rows.back().cu_seqlens.push_back(0);
      room = capacity;
    } else {
      r = it->second;
      room = it->first;
      free_room.erase(it);
    }
    PackedRow& row = rows[r];
    row.items.push_back(i);
    row.used += len;
    row.cu_seqlens.push_back(row.used);
    if (room - len > 0) free_room.emplace(room - len, r);
  }
  return rows;
}

}  // namespace prism::data
