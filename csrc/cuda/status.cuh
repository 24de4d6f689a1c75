// Device side of the status word (csrc/common/status.h): every failing row offers (row << 8 | code) and the
// lowest row wins, so the word is read back once per op call, after every kernel of the call.
#pragma once

#include "../common/status.h"

namespace edlm {
namespace cuda {

__device__ inline void report(unsigned long long* status, int64_t row, int32_t code) {
  atomicMin(status, pack_status(row, code));
}

}  // namespace cuda
}  // namespace edlm
