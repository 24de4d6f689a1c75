// The CPU kernels' row loop: OpenMP over rows, a scratch per thread, the first failing row reported.
#pragma once

#include <stdint.h>

#include <utility>
#include <vector>

#include "../common/row_sampler.h"
#include "../common/status.h"

namespace edlm {
namespace cpu {

// Keeps the lowest failing row across threads.
struct StatusCollector {
  Status s;
  void add(int32_t code, int64_t row) {
    if (code == kOk) return;
#pragma omp critical(edlm_status)
    if (s.row < 0 || row < s.row) {
      s.row = row;
      s.code = code;
    }
  }
};

// Per-thread scratch reused across rows.
struct Scratch {
  std::vector<TileStat> ts;
  std::vector<double> u;
  std::vector<int64_t> tok;  // a row's k candidate draws, before they are strided into x0
  std::vector<std::pair<int64_t, int64_t>> order;
  std::vector<double> rem;
};

// Tile t's max and sum (.m, .c) of any row type of row_sampler.h: the vectorized tile pass of the sampling
// kernels (sampling.cpp), the same canonical sums as the lane functions give.  *cursor walks the row's sorted
// exclusions: 0 before tile 0, then passed from tile to tile in order.
template <typename In>
int32_t tile_stats(const In& in, int64_t t, TileStat* tile, int64_t* cursor);

// body(r, scratch) -> status over rows [0, rows), one scratch per thread; the first failing row is reported.
template <typename Body>
Status for_rows(int64_t rows, int chunk, Body body) {
  StatusCollector all;
#pragma omp parallel
  {
    Scratch sc;
#pragma omp for schedule(dynamic, chunk)
    for (int64_t r = 0; r < rows; ++r) all.add(body(r, sc), r);
  }
  return all.s;
}

}  // namespace cpu
}  // namespace edlm
