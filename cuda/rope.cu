// Fused rotary embeddings: plain RoPE, sectioned MRoPE, interleaved MRoPE-I, multi-head
// MHRoPE and the ViT's 2-D RoPE in one kernel. The host turns every variant into
// per-pair frequencies and position rows (or per-KV-head rows for MHRoPE), so the kernel
// only builds a cos/sin table per token and rotates q and k rows in place.
#include "common.cuh"

#define ROPE_MAX_HALF 256
#define ROPE_AXES 3

// Mirrors `RopeLaunch` in src/rope/cuda.rs (repr(C)); element strides, 64-bit.
struct RopeLaunch {
    unsigned long long q;          // T*: token 0, head 0 of the q view
    unsigned long long k;          // T*: token 0, head 0 of the k view
    unsigned long long positions;  // i64 [n_axes, n_tokens]
    unsigned long long freq;       // f32 [half]: inverse frequency of each pair
    unsigned long long pair_axis;  // i32 [half]: position row of each pair (shared table)
    unsigned long long head_axis;  // i32 [hkv]: position row of each KV head, -1 = not rotated
    i64 n_tokens;
    i64 q_token_stride, q_head_stride, k_token_stride, k_head_stride;
    int hq, hkv, half, gptj, per_head, n_axes;
    float scale;
};

template <typename T, int VB>
__device__ __forceinline__ void rotate_chunk(T* row, const float* c, const float* s, int j0, int half, int gptj) {
    if (!gptj) {
        // neox: pair j is (j, j + half); VB consecutive pairs per chunk.
        Pack<T, VB> x1 = *reinterpret_cast<const Pack<T, VB>*>(row + j0);
        Pack<T, VB> x2 = *reinterpret_cast<const Pack<T, VB>*>(row + half + j0);
#pragma unroll
        for (int i = 0; i < VB; ++i) {
            float a = to_f32(x1.v[i]), b = to_f32(x2.v[i]);
            float cc = c[j0 + i], ss = s[j0 + i];
            x1.v[i] = from_f32<T>(a * cc - b * ss);
            x2.v[i] = from_f32<T>(b * cc + a * ss);
        }
        *reinterpret_cast<Pack<T, VB>*>(row + j0) = x1;
        *reinterpret_cast<Pack<T, VB>*>(row + half + j0) = x2;
    } else if (VB == 1) {
        // GPT-J, unaligned view: pair j is (2j, 2j + 1), element accesses.
        float a = to_f32(row[2 * j0]), b = to_f32(row[2 * j0 + 1]);
        float cc = c[j0], ss = s[j0];
        row[2 * j0] = from_f32<T>(a * cc - b * ss);
        row[2 * j0 + 1] = from_f32<T>(b * cc + a * ss);
    } else {
        // GPT-J: VB elements = VB/2 adjacent pairs per chunk, starting at pair j0.
        Pack<T, VB> x = *reinterpret_cast<const Pack<T, VB>*>(row + 2 * j0);
#pragma unroll
        for (int i = 0; i < VB / 2; ++i) {
            float a = to_f32(x.v[2 * i]), b = to_f32(x.v[2 * i + 1]);
            float cc = c[j0 + i], ss = s[j0 + i];
            x.v[2 * i] = from_f32<T>(a * cc - b * ss);
            x.v[2 * i + 1] = from_f32<T>(b * cc + a * ss);
        }
        *reinterpret_cast<Pack<T, VB>*>(row + 2 * j0) = x;
    }
}

template <typename T, int VB>
__device__ void rope_fused(const RopeLaunch& a) {
    __shared__ float cos_t[ROPE_AXES][ROPE_MAX_HALF];
    __shared__ float sin_t[ROPE_AXES][ROPE_MAX_HALF];
    const i64* pos = reinterpret_cast<const i64*>(a.positions);
    const float* freq = reinterpret_cast<const float*>(a.freq);
    const int* pair_axis = reinterpret_cast<const int*>(a.pair_axis);
    const int* head_axis = reinterpret_cast<const int*>(a.head_axis);
    T* q = reinterpret_cast<T*>(a.q);
    T* k = reinterpret_cast<T*>(a.k);
    const int pairs_per_chunk = (a.gptj && VB > 1) ? VB / 2 : VB;
    const int chunks = a.half / pairs_per_chunk;
    const int items = (a.hq + a.hkv) * chunks;
    const int group = a.hq / a.hkv;
    const int tables = a.per_head ? a.n_axes : 1;

    for (i64 n = blockIdx.x; n < a.n_tokens; n += gridDim.x) {
        // cos/sin of every pair for this token: one table, or one per position row.
        for (int e = threadIdx.x; e < tables * a.half; e += blockDim.x) {
            int t = e / a.half, j = e - t * a.half;
            int axis = a.per_head ? t : pair_axis[j];
            float angle = (float)pos[(i64)axis * a.n_tokens + n] * freq[j];
            float sv, cv;
            sincosf(angle, &sv, &cv);
            cos_t[t][j] = cv * a.scale;
            sin_t[t][j] = sv * a.scale;
        }
        __syncthreads();
        for (int it = threadIdx.x; it < items; it += blockDim.x) {
            int h = it / chunks, c = it - h * chunks;
            bool is_k = h >= a.hq;
            int g = is_k ? h - a.hq : h / group;  // the KV head this row follows
            int t = 0;
            if (a.per_head) {
                t = head_axis[g];
                if (t < 0) continue;  // heads beyond the sections keep their values
            }
            T* row = is_k ? k + n * a.k_token_stride + (i64)(h - a.hq) * a.k_head_stride
                          : q + n * a.q_token_stride + (i64)h * a.q_head_stride;
            rotate_chunk<T, VB>(row, cos_t[t], sin_t[t], c * pairs_per_chunk, a.half, a.gptj);
        }
        __syncthreads();
    }
}

// VB = elements per 16-byte access; the `_scalar` forms serve views whose pointers or
// strides are not multiples of that.
extern "C" __global__ void rope_fused_f32(RopeLaunch a) { rope_fused<float, 4>(a); }
extern "C" __global__ void rope_fused_f16(RopeLaunch a) { rope_fused<f16_t, 8>(a); }
extern "C" __global__ void rope_fused_bf16(RopeLaunch a) { rope_fused<bf16_t, 8>(a); }
extern "C" __global__ void rope_fused_f32_scalar(RopeLaunch a) { rope_fused<float, 1>(a); }
extern "C" __global__ void rope_fused_f16_scalar(RopeLaunch a) { rope_fused<f16_t, 1>(a); }
extern "C" __global__ void rope_fused_bf16_scalar(RopeLaunch a) { rope_fused<bf16_t, 1>(a); }
