// The CPU form of the filters' cut (filter.h), shared by the sampling and verification kernels.
#pragma once

#include <stdint.h>

#include <algorithm>

#include "../common/filter.h"
#include "../common/row_sampler.h"
#include "rows.h"

namespace edlm {
namespace cpu {

// Tile t's sums over its lanes of f(lane begin, lane end), added in the canonical xor-butterfly order.
template <class F>
double tile_tree(int64_t t, int64_t V, F f) {
  double a[kLanes];
  for (int l = 0; l < kLanes; ++l) a[l] = f(lane_begin(t, l, V), lane_end(t, l, V));
  return tree32(a);
}

// The filters' cut (filter.h) into in->z_cut, after a pass for each tile's max, range and count.
template <typename T>
int32_t find_cut(RowInput<T>* in, const FilterArgs& f, Scratch& sc) {
  const int64_t n_tiles = num_tiles(in->V);
  sc.ts.resize(n_tiles);
  TileStat* ts = sc.ts.data();
  int32_t status = kOk;
  float x_lo = 1.0f / 0.0f, x_hi = -1.0f / 0.0f;
  int64_t n = 0;
  for (int64_t t = 0; t < n_tiles; ++t) {
    TileStat& tile = ts[t];
    tile = TileStat{neg_inf(), 0.0, 0.0, 1.0f / 0.0f, -1.0f / 0.0f, 0, 0};
    for (int l = 0; l < kLanes; ++l) {
      const int64_t b = lane_begin(t, l, in->V), e = lane_end(t, l, in->V);
      const double m = lane_max(*in, b, e, &status);
      tile.m = m > tile.m ? m : tile.m;
      lane_range(*in, b, e, &tile.x_lo, &tile.x_hi, &tile.n);
    }
    x_lo = std::min(x_lo, tile.x_lo);
    x_hi = std::max(x_hi, tile.x_hi);
    n += tile.n;
  }
  if (status != kOk) return status;
  const double M = tiles_max(ts, n_tiles);
  if (M == neg_inf()) return kNoFinite;
  auto count = [&](double cut) {
    int64_t total = 0;
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t known = tile_count_bound(ts[t], in->inv_tau, cut);
      if (known >= 0) {
        total += known;
        continue;
      }
      for (int l = 0; l < kLanes; ++l) total += lane_count(*in, lane_begin(t, l, in->V), lane_end(t, l, in->V), cut);
    }
    return total;
  };
  auto mass = [&](double cut) {
    RowInput<T> at = *in;
    at.z_cut = cut;
    for (int64_t t = 0; t < n_tiles; ++t)
      ts[t].w = ts[t].m < cut ? 0.0 : tile_tree(t, in->V, [&](int64_t b, int64_t e) { return lane_sum(at, b, e, ts[t].m); });
    return tiles_mass(ts, n_tiles, M);
  };
  in->z_cut = filter_cut(f, in->inv_tau, x_lo, x_hi, n, M, count, mass);
  return kOk;
}

}  // namespace cpu
}  // namespace edlm
