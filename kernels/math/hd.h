// HD marks math shared by the CPU reference (engine/cpu) and the CUDA kernels:
// compiled as __host__ __device__ under nvcc, as plain inline C++ otherwise.
// Keeping one definition is what lets CPU tests cover the kernels' arithmetic.
#pragma once

#if defined(__CUDACC__)
#define HD __host__ __device__ __forceinline__
#else
#define HD inline
#endif
