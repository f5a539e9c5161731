// Shared device helpers for every kernel file. No CUDA headers are included so the same
// source compiles under nvcc and NVRTC: f16/bf16 are carried as 16-bit integers and
// converted with PTX instructions.
#ifndef VLK_COMMON_CUH
#define VLK_COMMON_CUH

typedef long long i64;
typedef unsigned short u16;

struct f16_t { u16 bits; };
struct bf16_t { u16 bits; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __int_as_float(((unsigned int)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16_t x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ f16_t from_f32<f16_t>(float x) {
    f16_t r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ bf16_t from_f32<bf16_t>(float x) {
    // Round to nearest even; NaN stays a quiet NaN.
    unsigned int u = __float_as_uint(x);
    bf16_t r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (u16)((u >> 16) | 0x40u);
    } else {
        r.bits = (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return r;
}

// N elements of T moved as one aligned vector access.
template <typename T, int N> struct alignas(sizeof(T) * N) Pack { T v[N]; };

#endif
