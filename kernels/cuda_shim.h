// Compiles a kernels/*.cu file as plain C++ so CI (no GPU) can run the real kernel
// source on the CPU. kernels/loader.py includes this header, then the .cu file, then one
// launcher per kernel that sets blockIdx/threadIdx and calls the kernel for every thread
// of the grid in turn.
//
// A sequential loop is a faithful execution only for kernels whose threads never talk to
// each other, so Veil's kernels use no shared memory, barriers or atomics: each thread
// reads inputs and writes only its own outputs.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
typedef dim3 uint3;

// Per OS thread: two pipeline stages may launch kernels of one library at the same time
// (ctypes releases the GIL), and each launch must see only its own grid.
static thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

// The device-side integer min/max and the float intrinsics the kernels use.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmul_rn(float a, float b) { return a * b; }  // a product never fused into an FMA
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
