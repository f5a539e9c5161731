// Mixture-of-experts kernels: fused softmax + top-k routing, a stable (deterministic)
// dispatch plan, row permutation, SiLU-and-multiply and the weighted unpermute.
// Selection contract (same as the CPU): rank by logit, ties to the lower expert index.
// Every buffer index is 64-bit; positions and expert ids are stored as int32 (the host
// checks that T * k plus padding fits).
#include "common.cuh"

#define MOE_MAX_EXPERTS 512
#define MOE_MAX_TOPK 16
#define MOE_ALIGN_WARPS 16
#define MOE_ALIGN_BATCH 16
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// (v, i) ranks ahead of (ov, oi): larger value, or equal value and lower index.
__device__ __forceinline__ bool ranks_ahead(float v, int i, float ov, int oi) {
    return v > ov || (v == ov && i < oi);
}

// ---------------------------------------------------------------------------------
// Routing: one warp per token. Lane l holds experts l, l + 32, ... (NV per lane), so
// the loads are coalesced. k rounds of a warp arg-max pick the experts in order.

// Mirrors `TopkLaunch` in src/moe/cuda.rs.
struct TopkLaunch {
    unsigned long long logits;   // T [tokens, E]
    unsigned long long ids;      // i32 [tokens, k]; -1 for a token with a non-finite logit
    unsigned long long weights;  // f32 [tokens, k]
    i64 tokens;
    int experts, k, norm;
};

template <typename T, int NV>
__device__ void topk_softmax(const TopkLaunch& a) {
    const int lane = threadIdx.x & 31;
    const i64 t = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (t >= a.tokens) return;
    const T* row = reinterpret_cast<const T*>(a.logits) + t * a.experts;
    float v[NV];
    bool finite = true;
    float m = neg_inf();
#pragma unroll
    for (int i = 0; i < NV; ++i) {
        const int e = lane + 32 * i;
        v[i] = e < a.experts ? to_f32(row[e]) : neg_inf();
        if (e < a.experts) {
            finite &= isfinite(v[i]);
            m = fmaxf(m, v[i]);
        }
    }
    finite = __all_sync(FULL_MASK, finite);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL_MASK, m, off));
    float total = 0.f;
    if (!a.norm) {
#pragma unroll
        for (int i = 0; i < NV; ++i)
            if (lane + 32 * i < a.experts) total += expf(v[i] - m);
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) total += __shfl_xor_sync(FULL_MASK, total, off);
    }
    unsigned taken = 0;  // bit i: v[i] already chosen
    float chosen = 0.f, my_p = 0.f;
    int my_id = -1;
    for (int j = 0; j < a.k; ++j) {
        float bv = neg_inf();
        int bi = 0x7fffffff;
#pragma unroll
        for (int i = 0; i < NV; ++i) {
            const int e = lane + 32 * i;
            if (e < a.experts && !((taken >> i) & 1u) && ranks_ahead(v[i], e, bv, bi)) {
                bv = v[i];
                bi = e;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, off);
            const int oi = __shfl_xor_sync(FULL_MASK, bi, off);
            if (ranks_ahead(ov, oi, bv, bi)) {
                bv = ov;
                bi = oi;
            }
        }
        if (bi < a.experts && (bi & 31) == lane) taken |= 1u << (bi >> 5);
        const float p = expf(bv - m);
        chosen += p;
        if (lane == j) {
            my_p = p;
            my_id = bi;
        }
    }
    if (lane < a.k) {
        const i64 o = t * a.k + lane;
        const float inv = 1.f / (a.norm ? chosen : total);
        reinterpret_cast<int*>(a.ids)[o] = finite ? my_id : -1;
        reinterpret_cast<float*>(a.weights)[o] = finite ? my_p * inv : 0.f;
    }
}

#define TOPK_KERNELS(NAME, T)                                                                     \
    extern "C" __global__ void moe_topk_softmax_##NAME##_v1(TopkLaunch a) { topk_softmax<T, 1>(a); } \
    extern "C" __global__ void moe_topk_softmax_##NAME##_v2(TopkLaunch a) { topk_softmax<T, 2>(a); } \
    extern "C" __global__ void moe_topk_softmax_##NAME##_v4(TopkLaunch a) { topk_softmax<T, 4>(a); } \
    extern "C" __global__ void moe_topk_softmax_##NAME##_v8(TopkLaunch a) { topk_softmax<T, 8>(a); } \
    extern "C" __global__ void moe_topk_softmax_##NAME##_v16(TopkLaunch a) { topk_softmax<T, 16>(a); }
TOPK_KERNELS(f32, float)
TOPK_KERNELS(bf16, bf16_t)

// ---------------------------------------------------------------------------------
// Dispatch plan: one block of 16 warps. Warp w owns a contiguous range of assignments
// and walks it 32 at a time; __match_any_sync groups equal experts inside a step, so a
// stable rank needs no atomics. Pass 1 counts per (warp, expert); a block scan gives
// the segment starts; pass 2 walks again and writes every position.

// Mirrors `AlignLaunch` in src/moe/cuda.rs.
struct AlignLaunch {
    unsigned long long ids;             // i32 [n]
    unsigned long long counts;          // i32 [E]
    unsigned long long offsets;         // i32 [E + 1]
    unsigned long long padded_offsets;  // i32 [E + 1]
    unsigned long long sorted;          // i32 [n]
    unsigned long long inverse;         // i32 [n]
    unsigned long long padded_sorted;   // i32 [n + E * (block - 1)]; padding slots get n
    unsigned long long block_experts;   // i32 [capacity / block]
    unsigned long long status;          // i64 [1]: first assignment with a bad id, or n
    i64 n;
    int experts, block;
};

// Exclusive scan of one int per thread over a block of MOE_ALIGN_WARPS warps.
__device__ __forceinline__ int block_exclusive_scan(int x, int* scratch, int* total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int inc = x;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int y = __shfl_up_sync(FULL_MASK, inc, off);
        if (lane >= off) inc += y;
    }
    if (lane == 31) scratch[warp] = inc;
    __syncthreads();
    if (warp == 0) {
        int w = lane < MOE_ALIGN_WARPS ? scratch[lane] : 0;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int y = __shfl_up_sync(FULL_MASK, w, off);
            if (lane >= off) w += y;
        }
        if (lane < MOE_ALIGN_WARPS) scratch[lane] = w;  // inclusive totals per warp
    }
    __syncthreads();
    const int before = warp > 0 ? scratch[warp - 1] : 0;
    *total = scratch[MOE_ALIGN_WARPS - 1];
    __syncthreads();
    return before + inc - x;
}

extern "C" __global__ void __launch_bounds__(MOE_ALIGN_WARPS * 32, 1) moe_align_stable(AlignLaunch a) {
    __shared__ int cnt[MOE_ALIGN_WARPS][MOE_MAX_EXPERTS];  // counts, then write cursors
    __shared__ int seg_start[MOE_MAX_EXPERTS];
    __shared__ int pad_start[MOE_MAX_EXPERTS];
    __shared__ int scratch[32];
    __shared__ unsigned long long first_bad;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int E = a.experts;
    const int* ids = reinterpret_cast<const int*>(a.ids);
    for (int i = tid; i < MOE_ALIGN_WARPS * MOE_MAX_EXPERTS; i += blockDim.x) (&cnt[0][0])[i] = 0;
    if (tid == 0) first_bad = (unsigned long long)a.n;
    __syncthreads();

    const i64 per = (a.n + MOE_ALIGN_WARPS - 1) / MOE_ALIGN_WARPS;
    const i64 lo = warp * per;
    const i64 hi = lo + per < a.n ? lo + per : a.n;
    const unsigned lt_mask = (1u << lane) - 1u;
    // Ids are loaded MOE_ALIGN_BATCH steps ahead so the loads overlap (the walk is
    // otherwise bound by one load latency per step).
    for (i64 base = lo; base < hi; base += 32 * MOE_ALIGN_BATCH) {
        int ev[MOE_ALIGN_BATCH];
#pragma unroll
        for (int r = 0; r < MOE_ALIGN_BATCH; ++r) {
            const i64 idx = base + 32 * r + lane;
            ev[r] = idx < hi ? __ldg(ids + idx) : -1;
        }
#pragma unroll
        for (int r = 0; r < MOE_ALIGN_BATCH; ++r) {
            const int e = ev[r];
            const bool ok = (unsigned)e < (unsigned)E;
            if (!ok && base + 32 * r + lane < hi) atomicMin(&first_bad, (unsigned long long)(base + 32 * r + lane));
            const unsigned peers = __match_any_sync(FULL_MASK, ok ? e : -1) & __ballot_sync(FULL_MASK, ok);
            if (ok && (peers & lt_mask) == 0) cnt[warp][e] += __popc(peers);
            __syncwarp();
        }
    }
    __syncthreads();

    // Thread e: total of expert e, per-warp cursors, then the block scans.
    int total = 0, padded = 0;
    if (tid < E) {
        for (int w = 0; w < MOE_ALIGN_WARPS; ++w) total += cnt[w][tid];
        padded = (total + a.block - 1) / a.block * a.block;
    }
    int n_total, p_total;
    const int start = block_exclusive_scan(total, scratch, &n_total);
    const int pstart = block_exclusive_scan(padded, scratch, &p_total);
    int* counts = reinterpret_cast<int*>(a.counts);
    int* offsets = reinterpret_cast<int*>(a.offsets);
    int* padded_offsets = reinterpret_cast<int*>(a.padded_offsets);
    int* padded_sorted = reinterpret_cast<int*>(a.padded_sorted);
    int* block_experts = reinterpret_cast<int*>(a.block_experts);
    if (tid < E) {
        counts[tid] = total;
        offsets[tid] = start;
        padded_offsets[tid] = pstart;
        seg_start[tid] = start;
        pad_start[tid] = pstart;
        int cursor = start;
        for (int w = 0; w < MOE_ALIGN_WARPS; ++w) {
            const int c = cnt[w][tid];
            cnt[w][tid] = cursor;
            cursor += c;
        }
        for (i64 p = (i64)pstart + total; p < (i64)pstart + padded; ++p) padded_sorted[p] = (int)a.n;
    }
    if (tid == 0) {
        offsets[E] = n_total;
        padded_offsets[E] = p_total;
    }
    __syncthreads();
    // Expert of each block of the padded order: binary search over the padded starts.
    for (i64 b = tid; b < p_total / a.block; b += blockDim.x) {
        const i64 p = b * a.block;
        int l = 0, r = E - 1;  // last expert whose padded start <= p (non-empty segment)
        while (l < r) {
            const int mid = (l + r + 1) >> 1;
            if (pad_start[mid] <= p) l = mid; else r = mid - 1;
        }
        block_experts[b] = l;
    }

    int* sorted = reinterpret_cast<int*>(a.sorted);
    int* inverse = reinterpret_cast<int*>(a.inverse);
    for (i64 base = lo; base < hi; base += 32 * MOE_ALIGN_BATCH) {
        int ev[MOE_ALIGN_BATCH];
#pragma unroll
        for (int r = 0; r < MOE_ALIGN_BATCH; ++r) {
            const i64 idx = base + 32 * r + lane;
            ev[r] = idx < hi ? __ldg(ids + idx) : -1;
        }
#pragma unroll
        for (int r = 0; r < MOE_ALIGN_BATCH; ++r) {
            const i64 idx = base + 32 * r + lane;
            const int e = ev[r];
            const bool ok = (unsigned)e < (unsigned)E;
            const unsigned peers = __match_any_sync(FULL_MASK, ok ? e : -1) & __ballot_sync(FULL_MASK, ok);
            if (ok) {
                const int pos = cnt[warp][e] + __popc(peers & lt_mask);
                sorted[pos] = (int)idx;
                inverse[idx] = pos;
                padded_sorted[(i64)pad_start[e] + (pos - seg_start[e])] = (int)idx;
            }
            __syncwarp();
            if (ok && (peers & lt_mask) == 0) cnt[warp][e] += __popc(peers);
            __syncwarp();
        }
    }
    if (tid == 0) *reinterpret_cast<long long*>(a.status) = (long long)first_bad;
}

// ---------------------------------------------------------------------------------
// Permute: out[p, :] = x[idx[p] / k, :]; rows whose index is >= pad are zero-filled.

// Mirrors `PermuteLaunch` in src/moe/cuda.rs.
struct PermuteLaunch {
    unsigned long long x;    // T [tokens, hidden]
    unsigned long long idx;  // i32 [rows]
    unsigned long long out;  // T [rows, hidden]
    i64 rows, hidden, pad;
    int k;
};

template <typename T, int VB>
__device__ void permute_rows(const PermuteLaunch& a) {
    for (i64 r = blockIdx.x; r < a.rows; r += gridDim.x) {
        const i64 src = reinterpret_cast<const int*>(a.idx)[r];
        Pack<T, VB>* dst = reinterpret_cast<Pack<T, VB>*>(reinterpret_cast<T*>(a.out) + r * a.hidden);
        const i64 chunks = a.hidden / VB;
        if (src >= a.pad) {
            Pack<T, VB> z;
#pragma unroll
            for (int i = 0; i < VB; ++i) z.v[i] = from_f32<T>(0.f);
            for (i64 c = threadIdx.x; c < chunks; c += blockDim.x) dst[c] = z;
        } else {
            const Pack<T, VB>* s =
                reinterpret_cast<const Pack<T, VB>*>(reinterpret_cast<const T*>(a.x) + (src / a.k) * a.hidden);
            for (i64 c = threadIdx.x; c < chunks; c += blockDim.x) dst[c] = s[c];
        }
    }
}

extern "C" __global__ void moe_permute_f32(PermuteLaunch a) { permute_rows<float, 4>(a); }
extern "C" __global__ void moe_permute_bf16(PermuteLaunch a) { permute_rows<bf16_t, 8>(a); }
extern "C" __global__ void moe_permute_f32_scalar(PermuteLaunch a) { permute_rows<float, 1>(a); }
extern "C" __global__ void moe_permute_bf16_scalar(PermuteLaunch a) { permute_rows<bf16_t, 1>(a); }

// ---------------------------------------------------------------------------------
// SiLU-and-multiply: in [rows, 2I] (gate | up) -> out [rows, I], f32 math.

// Mirrors `SiluMulLaunch` in src/moe/cuda.rs.
struct SiluMulLaunch {
    unsigned long long in;   // T [rows, 2 * inter]
    unsigned long long out;  // T [rows, inter]
    i64 rows, inter;
};

template <typename T>
__device__ void silu_mul(const SiluMulLaunch& a) {
    const T* in = reinterpret_cast<const T*>(a.in);
    T* out = reinterpret_cast<T*>(a.out);
    const i64 n = a.rows * a.inter;
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
        const i64 r = i / a.inter, c = i - r * a.inter;
        const float g = to_f32(in[r * 2 * a.inter + c]);
        const float u = to_f32(in[r * 2 * a.inter + a.inter + c]);
        out[i] = from_f32<T>(g / (1.f + expf(-g)) * u);
    }
}

extern "C" __global__ void moe_silu_mul_f32(SiluMulLaunch a) { silu_mul<float>(a); }
extern "C" __global__ void moe_silu_mul_bf16(SiluMulLaunch a) { silu_mul<bf16_t>(a); }

// ---------------------------------------------------------------------------------
// Weighted unpermute: out[t, :] = sum_j w[t, j] * y[inverse[t * k + j], :] in slot order
// (f32, no atomics, so the result is deterministic), plus, when given, the shared
// expert: sigmoid(shared_gate[t]) * shared_y[t, :].

// Mirrors `UnpermuteLaunch` in src/moe/cuda.rs.
struct UnpermuteLaunch {
    unsigned long long y;            // T [T * k, hidden] in sorted order
    unsigned long long weights;      // f32 [tokens, k]
    unsigned long long inverse;      // i32 [tokens * k]
    unsigned long long out;          // T [tokens, hidden]
    unsigned long long shared_y;     // T [tokens, hidden] or 0
    unsigned long long shared_gate;  // T [tokens] (pre-sigmoid) or 0
    i64 tokens, hidden;
    int k;
};

template <typename T>
__device__ void unpermute(const UnpermuteLaunch& a) {
    const T* y = reinterpret_cast<const T*>(a.y);
    const float* w = reinterpret_cast<const float*>(a.weights);
    const int* inv = reinterpret_cast<const int*>(a.inverse);
    T* out = reinterpret_cast<T*>(a.out);
    for (i64 t = blockIdx.x; t < a.tokens; t += gridDim.x) {
        float gate = 0.f;
        if (a.shared_y) gate = 1.f / (1.f + expf(-to_f32(reinterpret_cast<const T*>(a.shared_gate)[t])));
        for (i64 d = threadIdx.x; d < a.hidden; d += blockDim.x) {
            float acc = 0.f;
            for (int j = 0; j < a.k; ++j) {
                const i64 p = inv[t * a.k + j];
                acc += w[t * a.k + j] * to_f32(y[p * a.hidden + d]);
            }
            if (a.shared_y) acc += gate * to_f32(reinterpret_cast<const T*>(a.shared_y)[t * a.hidden + d]);
            out[t * a.hidden + d] = from_f32<T>(acc);
        }
    }
}

extern "C" __global__ void moe_unpermute_f32(UnpermuteLaunch a) { unpermute<float>(a); }
extern "C" __global__ void moe_unpermute_bf16(UnpermuteLaunch a) { unpermute<bf16_t>(a); }
