// Shared qualifiers so the same scalar code compiles for host (C++20) and device (nvcc).
#pragma once

#if defined(__CUDACC__)
#define EDLM_HD __host__ __device__ __forceinline__
#else
#define EDLM_HD inline
#endif
