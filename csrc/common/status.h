// One status code for every op, shared by the CPU and CUDA kernels and the bindings' error text.
//
// An op reports its first failing row (the lowest index) and one code.  A row can hold several faults (a NaN
// and a +inf, say), and the CPU and the GPU find them in different orders, so the code named is the one that
// comes first in this enum: the lowest nonzero code wins, on both devices.
#pragma once

#include <stdint.h>

#include "macros.h"

namespace edlm {

enum StatusCode : int32_t {
  kOk = 0,
  kNaN = 1,             // a NaN logit or energy in a row that is read
  kPosInf = 2,          // a +inf logit: the softmax is undefined
  kNotFinite = 3,       // NaN or +inf (rescoring ops, which do not tell the two apart)
  kNoFinite = 4,        // no drawable logit: all -inf, or every finite one excluded
  kInfiniteWeight = 5,  // an energy of -inf: an infinite importance weight
  kNoWeight = 6,        // every energy +inf: no candidate has weight
  kBadTarget = 7,       // a target outside [0, V) on a row with nonzero weight
  kBadPUnmask = 8,      // the row's p_unmask lies outside [0, 1] (or is NaN)
  kBadExclude = 9,      // an excluded id outside [0, V)
};

// The code to keep when a row has faults a and b.
EDLM_HD int32_t merge_status(int32_t a, int32_t b) { return (a == kOk || (b != kOk && b < a)) ? b : a; }

// Bit form, for threads that OR their faults into one word (CUDA shared memory) before it is read once.
EDLM_HD uint32_t status_bit(int32_t code) { return code == kOk ? 0u : (1u << code); }

EDLM_HD int32_t status_of_bits(uint32_t bits) {
  for (int32_t c = 1; c < 32; ++c)
    if (bits & (1u << c)) return c;
  return kOk;
}

// First failing row and its code; row = -1 when all is well.
struct Status {
  int32_t code = kOk;
  int64_t row = -1;
};

// The status word of the CUDA kernels: (row << 8 | code), so an atomicMin keeps the lowest failing row.
constexpr unsigned long long kStatusClear = ~0ull;

EDLM_HD unsigned long long pack_status(int64_t row, int32_t code) {
  return (static_cast<unsigned long long>(row) << 8) | static_cast<unsigned long long>(code);
}

EDLM_HD Status unpack_status(unsigned long long word) {
  Status s;
  if (word != kStatusClear) {
    s.row = int64_t(word >> 8);
    s.code = int32_t(word & 0xFF);
  }
  return s;
}

// p_unmask is a probability; NaN fails the test as well.
EDLM_HD bool valid_probability(double p) { return p >= 0.0 && p <= 1.0; }

// Sorted excluded ids (duplicates allowed) lie in [0, V) when the first and the last do.
EDLM_HD bool valid_exclude(const int64_t* excl, int64_t n, int64_t V) {
  return n == 0 || (excl[0] >= 0 && excl[n - 1] < V);
}

}  // namespace edlm
