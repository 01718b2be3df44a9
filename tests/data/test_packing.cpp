// pack_best_fit_decreasing (prism/data/packing.h). Oracles: rows worked out by hand, and a naive
// O(n * rows) best-fit-decreasing written out plainly here (scan every row for the least room
// that fits; ties to the row whose room was set first).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "prism/core/error.h"
#include "prism/data/packing.h"

namespace {

using prism::data::pack_best_fit_decreasing;

TEST(Packing, ByHand) {
  // Sorted: 8 (2), 5 (0), 3 (1), 2 (3). 8 fills row 0; 5 opens row 1 (room 3); 3 fits row 1
  // exactly; 2 opens row 2.
  auto rows = pack_best_fit_decreasing(std::vector<int64_t>{5, 3, 8, 2}, 8);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].items, (std::vector<int64_t>{2}));
  EXPECT_EQ(rows[1].items, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(rows[1].cu_seqlens, (std::vector<int64_t>{0, 5, 8}));
  EXPECT_EQ(rows[2].items, (std::vector<int64_t>{3}));
  EXPECT_EQ(rows[2].used, 2);
  // Ties in length keep input order; the exact fit closes row 0.
  rows = pack_best_fit_decreasing(std::vector<int64_t>{4, 6, 4, 2}, 10);
  // Sorted 6 (1), 4 (0), 4 (2), 2 (3): 6 -> row 0 (room 4); 4 -> row 0 (room 0); 4 -> row 1 (room 6); 2 -> row 1.
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].items, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(rows[1].items, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(pack_best_fit_decreasing(std::vector<int64_t>{}, 4).empty());
}

std::vector<std::vector<int64_t>> naive_bfd(const std::vector<int64_t>& len, int64_t cap) {
  std::vector<int64_t> order(len.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return len[a] > len[b]; });
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> room, stamp;  // stamp: when the row's room was last set
  int64_t clock = 0;
  for (int64_t i : order) {
    int best = -1;
    for (size_t r = 0; r < rows.size(); ++r) {
      if (room[r] < len[i] || room[r] == 0) continue;
      if (best < 0 || room[r] < room[best] || (room[r] == room[best] && stamp[r] < stamp[best]))
        best = static_cast<int>(r);
    }
    if (best < 0) {
      rows.emplace_back();
      room.push_back(cap);
      stamp.push_back(0);
      best = static_cast<int>(rows.size()) - 1;
    }
    rows[best].push_back(i);
    room[best] -= len[i];
    stamp[best] = ++clock;
  }
  return rows;
}

TEST(Packing, MatchesANaiveBestFitDecreasing) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t cap = 1 + rng() % 64;
    std::vector<int64_t> len(rng() % 120);
    for (auto& l : len) l = 1 + rng() % (trial % 2 ? cap : std::min<int64_t>(cap, 8));  // many ties too
    auto rows = pack_best_fit_decreasing(len, cap);
    auto expected = naive_bfd(len, cap);
    ASSERT_EQ(rows.size(), expected.size()) << "trial " << trial;
    std::vector<int> seen(len.size(), 0);
    for (size_t r = 0; r < rows.size(); ++r) {
      EXPECT_EQ(rows[r].items, expected[r]) << "trial " << trial << " row " << r;
      int64_t sum = 0;
      ASSERT_EQ(rows[r].cu_seqlens.size(), rows[r].items.size() + 1);
      for (size_t k = 0; k < rows[r].items.size(); ++k) {
        EXPECT_EQ(rows[r].cu_seqlens[k], sum);
        sum += len[rows[r].items[k]];
        ++seen[rows[r].items[k]];
      }
      EXPECT_EQ(rows[r].used, sum);
      EXPECT_LE(sum, cap);
    }
    for (int s : seen) EXPECT_EQ(s, 1);
  }
}

TEST(Packing, RefusesLengthsOutOfRange) {
  EXPECT_THROW(pack_best_fit_decreasing(std::vector<int64_t>{3, 9}, 8), prism::Error);
  EXPECT_THROW(pack_best_fit_decreasing(std::vector<int64_t>{0}, 8), prism::Error);
  EXPECT_THROW(pack_best_fit_decreasing(std::vector<int64_t>{1}, 0), prism::Error);
}

}  // namespace
