// Variable-length attention for sm_80+: tensor cores (mma.sync m16n8k16, bf16 or
// f16 operands, f32 accumulation), online softmax, causal grouped-query heads,
// and a split-KV mode for decode whose partial results `attn_combine` merges.
//
// Layout (as the Rust API): q [Nq, Hq, D], k/v [Nk, Hkv, D], out [Nq, Hq, D], rows
// `*_stride` elements apart (multiples of 8), segments given by cu_seqlens_q/k.
//
// Work split: a block of 4 warps owns BLOCK_M = 64 rows, each row a (token, query
// head) pair of one GQA group (row r: token t0 + r / group, head kvh·group + r % group),
// so each K/V tile loaded serves every query head that shares it. Blocks come from
// a host-built table `tiles` of (segment, first token): one launch covers all
// segments. grid = (tiles, Hkv, splits).
//
// Per 64-key tile: cp.async K and V into shared memory (V's load overlaps S = Q·Kᵀ,
// the next K's overlaps softmax and O += P·V), masks, base-2 online softmax in
// registers; P is reused from the S accumulators as the A operand of P·V.
//
// Head dims 64/72/80/96/128: the QKᵀ k-loop runs over D rounded up to 16 (72 → 80,
// the pad columns are zero-filled); P·V runs over D in 8-wide n-tiles.
// Indices into global memory are 64-bit. No CUDA headers are needed (NVRTC-ready).

#define BLOCK_M 64
#define BLOCK_N 64
#define THREADS 128
#define NEG_INF (-__int_as_float(0x7f800000))

typedef unsigned int u32;
typedef unsigned short u16;
typedef long long i64;

// ---------------------------------------------------------------------------
// PTX wrappers
// ---------------------------------------------------------------------------

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// 16 bytes global → shared, zero-filled when !pred (nothing is read then).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool pred) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_trans(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x2_trans(u32 r[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p)));
}

// C[16×8] += A[16×16]·B[16×8], f32 accumulators.
template <bool BF16>
__device__ __forceinline__ void mma16816(float c[4], const u32 a[4], u32 b0, u32 b1) {
    if (BF16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// Two floats → packed 16-bit pair (lo in the low half), round to nearest even.
template <bool BF16>
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r;
    if (BF16) {
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    } else {
        asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    }
    return r;
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---------------------------------------------------------------------------
// The attention kernel
// ---------------------------------------------------------------------------

struct SegInfo {
    i64 q0, k0;
    int sq, sk;
};

__device__ __forceinline__ SegInfo segment(const int* cu_q, const int* cu_k, const int* seqused_k, int s) {
    SegInfo g;
    g.q0 = cu_q[s];
    g.k0 = cu_k[s];
    g.sq = cu_q[s + 1] - cu_q[s];
    g.sk = seqused_k ? seqused_k[s] : cu_k[s + 1] - cu_k[s];
    return g;
}

// Keys visible to query i of a segment: bottom-right aligned causal mask.
__device__ __forceinline__ int key_end(int i, int sq, int sk, bool causal) {
    if (!causal) return sk;
    int e = i + sk - sq + 1;
    return e < 0 ? 0 : (e > sk ? sk : e);
}

// Copies BLOCK_N rows of a K or V tile into shared memory (row pitch LDS), zero
// rows beyond `rows_valid` and zero columns D..DP.
template <int D, int DP, int LDS>
__device__ __forceinline__ void load_kv_tile(u16* s, const u16* g, i64 stride, int rows_valid, int tid) {
    constexpr int CHUNKS = DP / 8;
    for (int idx = tid; idx < BLOCK_N * CHUNKS; idx += THREADS) {
        int r = idx / CHUNKS, c = idx % CHUNKS;
        bool ok = r < rows_valid && c * 8 < D;
        const u16* src = ok ? g + (i64)r * stride + c * 8 : g;
        cp_async16(s + r * LDS + c * 8, src, ok);
    }
}

template <bool BF16, int D>
__device__ __forceinline__ void attn_fwd(const u16* __restrict__ q, const u16* __restrict__ k,
                                         const u16* __restrict__ v, u16* __restrict__ out, const int* cu_q,
                                         const int* cu_k, const int* seqused_k, const int* tiles, float* ws_o,
                                         float* ws_ml, i64 q_stride, i64 k_stride, i64 v_stride, i64 out_stride,
                                         int hq, int hkv, int tokens_per_tile, float scale_log2, int causal,
                                         int num_splits, i64 nq_total) {
    constexpr int DP = (D + 15) / 16 * 16;  // QKᵀ k-extent
    constexpr int LDS = DP + 8;             // smem row pitch: +16 B breaks bank conflicts of ldmatrix
    constexpr int KSTEPS = DP / 16;
    constexpr int NT_S = BLOCK_N / 8;  // n-tiles of S
    constexpr int NT_O = D / 8;        // n-tiles of O

    extern __shared__ __align__(16) u16 smem[];
    u16* sK = smem;                // BLOCK_N × LDS (also stages Q at the start)
    u16* sV = smem + BLOCK_N * LDS;  // BLOCK_N × LDS

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int seg_id = tiles[2 * blockIdx.x], t0 = tiles[2 * blockIdx.x + 1];
    const int kvh = blockIdx.y, split = blockIdx.z;
    const int group = hq / hkv;
    const SegInfo sg = segment(cu_q, cu_k, seqused_k, seg_id);
    const int ntok = max(0, min(tokens_per_tile, sg.sq - t0));  // tokens of this block
    const int rows = ntok * group;                                 // valid rows

    // --- Q: stage the 64 rows in sK, then keep them as A fragments in registers.
    {
        constexpr int CHUNKS = DP / 8;
        for (int idx = tid; idx < BLOCK_M * CHUNKS; idx += THREADS) {
            int r = idx / CHUNKS, c = idx % CHUNKS;
            bool ok = r < rows && c * 8 < D;
            const u16* src = q;
            if (ok) {
                int tok = t0 + r / group, h = kvh * group + r % group;
                src = q + (sg.q0 + tok) * q_stride + (i64)h * D + c * 8;
            }
            cp_async16(sK + r * LDS + c * 8, src, ok);
        }
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
    }
    u32 qa[KSTEPS][4];
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
        int r = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
        int c = ks * 16 + (lane / 16) * 8;
        ldsm_x4(qa[ks], sK + r * LDS + c);
    }
    __syncthreads();

    // Rows of this thread: r0 = warp·16 + lane/4 and r0 + 8; their tokens' key limits.
    const int r_lo = warp * 16 + lane / 4;
    int lim[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        int r = r_lo + 8 * i;
        lim[i] = r < rows ? key_end(t0 + r / group, sg.sq, sg.sk, causal) : 0;
    }
    // Key range of the block (limit of its last token), then of this split.
    const int k_end_block = ntok > 0 ? key_end(t0 + ntok - 1, sg.sq, sg.sk, causal) : 0;
    const int n_tiles = (k_end_block + BLOCK_N - 1) / BLOCK_N;
    const int per_split = (n_tiles + num_splits - 1) / num_splits;
    const int tile_begin = min(n_tiles, split * per_split);
    const int tile_end = min(n_tiles, tile_begin + per_split);
    const int min_lim = ntok > 0 ? key_end(t0, sg.sq, sg.sk, causal) : 0;  // no mask below this key

    float o[NT_O][4];
#pragma unroll
    for (int j = 0; j < NT_O; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    const u16* kbase = k + sg.k0 * k_stride + (i64)kvh * D;
    const u16* vbase = v + sg.k0 * v_stride + (i64)kvh * D;
    if (tile_begin < tile_end) {
        load_kv_tile<D, DP, LDS>(sK, kbase + (i64)tile_begin * BLOCK_N * k_stride, k_stride,
                                 min(BLOCK_N, sg.sk - tile_begin * BLOCK_N), tid);
        cp_async_commit();
    }
    for (int t = tile_begin; t < tile_end; ++t) {
        const int kb = t * BLOCK_N;
        load_kv_tile<D, DP, LDS>(sV, vbase + (i64)kb * v_stride, v_stride, min(BLOCK_N, sg.sk - kb), tid);
        cp_async_commit();
        cp_async_wait<1>();  // K(t) has landed
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows × 64 keys.
        float s[NT_S][4];
#pragma unroll
        for (int j = 0; j < NT_S; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
#pragma unroll
            for (int j = 0; j < NT_S; j += 2) {
                u32 b[4];
                int r = j * 8 + (lane / 16) * 8 + (lane % 8);
                int c = ks * 16 + ((lane / 8) % 2) * 8;
                ldsm_x4(b, sK + r * LDS + c);
                mma16816<BF16>(s[j], qa[ks], b[0], b[1]);
                mma16816<BF16>(s[j + 1], qa[ks], b[2], b[3]);
            }
        }
        __syncthreads();  // all warps are done with sK
        if (t + 1 < tile_end) {
            load_kv_tile<D, DP, LDS>(sK, kbase + (i64)(kb + BLOCK_N) * k_stride, k_stride,
                                     min(BLOCK_N, sg.sk - kb - BLOCK_N), tid);
        }
        cp_async_commit();  // (possibly empty) group keeps the wait counts uniform

        // Mask, online softmax (base 2). Thread holds cols 2·(lane%4)+{0,1} of each n-tile.
        const bool need_mask = kb + BLOCK_N > min_lim;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float mx = m[i];
#pragma unroll
            for (int j = 0; j < NT_S; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float x = s[j][2 * i + e] * scale_log2;
                    int key = kb + j * 8 + 2 * (lane % 4) + e;
                    if (need_mask && key >= lim[i]) x = NEG_INF;
                    s[j][2 * i + e] = x;
                    mx = fmaxf(mx, x);
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
            const float mref = mx == NEG_INF ? 0.f : mx;  // a fully masked row stays at zero
            const float alpha = fast_exp2(m[i] - mref);
            m[i] = mx;
            float sum = 0.f;
#pragma unroll
            for (int j = 0; j < NT_S; ++j) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float p = fast_exp2(s[j][2 * i + e] - mref);
                    s[j][2 * i + e] = p;
                    sum += p;
                }
            }
            l[i] = l[i] * alpha + sum;  // per-thread partial; the quad is summed at the end
#pragma unroll
            for (int j = 0; j < NT_O; ++j) {
                o[j][2 * i] *= alpha;
                o[j][2 * i + 1] *= alpha;
            }
        }

        cp_async_wait<1>();  // V(t) has landed (K(t+1) may still be in flight)
        __syncthreads();

        // O += P·V: P from the S accumulators (C layout of two n-tiles = A layout of one k-step).
#pragma unroll
        for (int kk = 0; kk < BLOCK_N / 16; ++kk) {
            u32 a[4];
            a[0] = pack2<BF16>(s[2 * kk][0], s[2 * kk][1]);
            a[1] = pack2<BF16>(s[2 * kk][2], s[2 * kk][3]);
            a[2] = pack2<BF16>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = pack2<BF16>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const int r = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
#pragma unroll
            for (int j = 0; j + 1 < NT_O; j += 2) {
                u32 b[4];
                ldsm_x4_trans(b, sV + r * LDS + j * 8 + (lane / 16) * 8);
                mma16816<BF16>(o[j], a, b[0], b[1]);
                mma16816<BF16>(o[j + 1], a, b[2], b[3]);
            }
            if (NT_O % 2) {
                u32 b[2];
                ldsm_x2_trans(b, sV + r * LDS + (NT_O - 1) * 8);
                mma16816<BF16>(o[NT_O - 1], a, b[0], b[1]);
            }
        }
        __syncthreads();  // all warps are done with sV
    }
    cp_async_wait<0>();

    // Sum l across the quad; write out (one split) or partials (split-KV).
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffff, l[i], 2);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int r = r_lo + 8 * i;
        if (r >= rows) continue;
        const i64 tok = sg.q0 + t0 + r / group;
        const int h = kvh * group + r % group;
        if (num_splits == 1) {
            const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
            u16* dst = out + tok * out_stride + (i64)h * D + 2 * (lane % 4);
#pragma unroll
            for (int j = 0; j < NT_O; ++j) {
                *(u32*)(dst + j * 8) = pack2<BF16>(o[j][2 * i] * inv, o[j][2 * i + 1] * inv);
            }
        } else {
            const i64 row = ((i64)split * nq_total + tok) * hq + h;
            float* dst = ws_o + row * D + 2 * (lane % 4);
#pragma unroll
            for (int j = 0; j < NT_O; ++j) {
                *(float2*)(dst + j * 8) = make_float2(o[j][2 * i], o[j][2 * i + 1]);
            }
            if (lane % 4 == 0) {
                ws_ml[2 * row] = m[i];
                ws_ml[2 * row + 1] = l[i];
            }
        }
    }
}

// Merges split-KV partials: one block per (token, head), one thread per element of D.
template <bool BF16>
__device__ __forceinline__ void attn_combine(const float* ws_o, const float* ws_ml, u16* out, i64 out_stride,
                                             int hq, int d, int num_splits, i64 nq_total) {
    const i64 row = blockIdx.x;  // token · hq + head
    const int c = threadIdx.x;
    if (c >= d) return;
    const i64 tok = row / hq;
    const int h = (int)(row % hq);
    float mx = NEG_INF;
    for (int s = 0; s < num_splits; ++s) mx = fmaxf(mx, ws_ml[2 * ((i64)s * nq_total * hq + row)]);
    const float mref = mx == NEG_INF ? 0.f : mx;
    float num = 0.f, den = 0.f;
    for (int s = 0; s < num_splits; ++s) {
        const i64 r = (i64)s * nq_total * hq + row;
        const float w = fast_exp2(ws_ml[2 * r] - mref);
        den += w * ws_ml[2 * r + 1];
        num += w * ws_o[r * d + c];
    }
    const float val = den > 0.f ? num / den : 0.f;
    u32 packed = pack2<BF16>(val, 0.f);
    out[tok * out_stride + (i64)h * d + c] = (u16)(packed & 0xffff);
}

// ---------------------------------------------------------------------------
// Entry points: attn_fwd_{bf16,f16}_d{64,72,80,96,128}, attn_combine_{bf16,f16}.
// Dynamic shared memory: 2 · 64 · (roundup16(D) + 8) · 2 bytes.
// ---------------------------------------------------------------------------

#define ATTN_FWD_ENTRY(NAME, BF16, D)                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                                \
        const u16* q, const u16* k, const u16* v, u16* out, const int* cu_q, const int* cu_k,                  \
        const int* seqused_k, const int* tiles, float* ws_o, float* ws_ml, i64 q_stride, i64 k_stride,         \
        i64 v_stride, i64 out_stride, int hq, int hkv, int tokens_per_tile, float scale_log2, int causal,      \
        int num_splits, i64 nq_total) {                                                                        \
        attn_fwd<BF16, D>(q, k, v, out, cu_q, cu_k, seqused_k, tiles, ws_o, ws_ml, q_stride, k_stride,         \
                          v_stride, out_stride, hq, hkv, tokens_per_tile, scale_log2, causal, num_splits,      \
                          nq_total);                                                                           \
    }

ATTN_FWD_ENTRY(attn_fwd_bf16_d64, true, 64)
ATTN_FWD_ENTRY(attn_fwd_bf16_d72, true, 72)
ATTN_FWD_ENTRY(attn_fwd_bf16_d80, true, 80)
ATTN_FWD_ENTRY(attn_fwd_bf16_d96, true, 96)
ATTN_FWD_ENTRY(attn_fwd_bf16_d128, true, 128)
ATTN_FWD_ENTRY(attn_fwd_f16_d64, false, 64)
ATTN_FWD_ENTRY(attn_fwd_f16_d72, false, 72)
ATTN_FWD_ENTRY(attn_fwd_f16_d80, false, 80)
ATTN_FWD_ENTRY(attn_fwd_f16_d96, false, 96)
ATTN_FWD_ENTRY(attn_fwd_f16_d128, false, 128)

extern "C" __global__ void attn_combine_bf16(const float* ws_o, const float* ws_ml, u16* out, i64 out_stride,
                                             int hq, int d, int num_splits, i64 nq_total) {
    attn_combine<true>(ws_o, ws_ml, out, out_stride, hq, d, num_splits, nq_total);
}
extern "C" __global__ void attn_combine_f16(const float* ws_o, const float* ws_ml, u16* out, i64 out_stride,
                                            int hq, int d, int num_splits, i64 nq_total) {
    attn_combine<false>(ws_o, ws_ml, out, out_stride, hq, d, num_splits, nq_total);
}
