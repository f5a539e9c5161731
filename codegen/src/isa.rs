//! Instruction-set models. Every shuffle, permute and blend instruction the
//! synthesiser may use is data: its lane semantics (which operand lane lands
//! in each output lane, as a function of its immediate or index vector), the
//! granularity it moves, and a cost. The interpreter and both search engines
//! read only this table, so a network is correct for an ISA exactly when it is
//! correct under these semantics.

/// The instruction sets kernels are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IsaKind {
    Avx2,
    Avx512,
    Neon,
}

impl IsaKind {
    pub const ALL: [IsaKind; 3] = [IsaKind::Avx2, IsaKind::Avx512, IsaKind::Neon];

    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Avx2 => "avx2",
            IsaKind::Avx512 => "avx512",
            IsaKind::Neon => "neon",
        }
    }

    /// Register width in bits.
    pub fn vector_bits(self) -> usize {
        match self {
            IsaKind::Avx2 => 256,
            IsaKind::Avx512 => 512,
            IsaKind::Neon => 128,
        }
    }

    pub fn parse(s: &str) -> Option<IsaKind> {
        IsaKind::ALL.into_iter().find(|i| i.name() == s)
    }
}

/// Lane semantics, stated at the instruction's own granularity (`gran` bits).
/// x86 "in-block" instructions act independently on each 128-bit block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sem {
    /// x86 punpckl*: per block, interleave the low halves of a and b.
    UnpackLo,
    /// x86 punpckh*: per block, interleave the high halves of a and b.
    UnpackHi,
    /// shufps: per block, two lanes of a then two of b, chosen by 2-bit fields.
    ShufflePs,
    /// shufpd: per block, one lane of a then one of b, chosen by imm bits.
    ShufflePd,
    /// vperm2i128: each output half is one of a.lo, a.hi, b.lo, b.hi.
    Permute2x128,
    /// vshufi32x4 (512-bit): output blocks 0,1 from a and 2,3 from b by 2-bit fields.
    ShuffleX4,
    /// vpermq with immediate: per 256-bit group, out[k] = a[imm field k].
    PermuteImm4,
    /// pshufd: per block, out[k] = a[imm field k].
    ShuffleEpi32,
    /// Blend with a per-lane mask (immediate, vector or mask register).
    Blend,
    /// One-source permute by an index vector across the whole register.
    PermuteVar,
    /// pshufb: one-source byte permute inside each 128-bit block.
    PermuteVarInBlock,
    /// Two-source permute by an index vector (permutex2var).
    Permute2Var,
    /// NEON trn1/trn2, zip1/zip2, uzp1/uzp2.
    Trn1,
    Trn2,
    Zip1,
    Zip2,
    Uzp1,
    Uzp2,
    /// NEON ext: bytes imm.. of the concatenation a ++ b.
    Ext,
    /// NEON tbl with an `arity`-register table (byte indices, out of range gives 0).
    Table,
}

/// The parameter of one instruction use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    None,
    /// Immediate, or a blend mask with one bit per lane of the instruction's granularity.
    Imm(u64),
    /// Index vector, one entry per lane of the instruction's granularity.
    Index(Vec<u16>),
}

/// Where an output lane comes from.
pub type Sel = Option<(u8, u16)>;

/// One instruction of the model.
#[derive(Clone, Debug)]
pub struct Instr {
    /// The intrinsic (for reports).
    pub name: &'static str,
    pub sem: Sem,
    /// Bits per lane of the semantics.
    pub gran: usize,
    /// Vector operands.
    pub arity: usize,
    /// Relative cost (about half-cycles of shuffle-port throughput).
    pub cost: u32,
}

/// An instruction set: register width and instructions.
#[derive(Clone, Debug)]
pub struct Isa {
    pub kind: IsaKind,
    pub instrs: Vec<Instr>,
}

fn ins(name: &'static str, sem: Sem, gran: usize, arity: usize, cost: u32) -> Instr {
    Instr {
        name,
        sem,
        gran,
        arity,
        cost,
    }
}

impl Isa {
    pub fn new(kind: IsaKind) -> Isa {
        use Sem::*;
        let mut v = Vec::new();
        match kind {
            IsaKind::Avx2 => {
                v.push(ins("_mm256_unpacklo_epi8", UnpackLo, 8, 2, 2));
                v.push(ins("_mm256_unpackhi_epi8", UnpackHi, 8, 2, 2));
                v.push(ins("_mm256_unpacklo_epi16", UnpackLo, 16, 2, 2));
                v.push(ins("_mm256_unpackhi_epi16", UnpackHi, 16, 2, 2));
                v.push(ins("_mm256_unpacklo_epi32", UnpackLo, 32, 2, 2));
                v.push(ins("_mm256_unpackhi_epi32", UnpackHi, 32, 2, 2));
                v.push(ins("_mm256_unpacklo_epi64", UnpackLo, 64, 2, 2));
                v.push(ins("_mm256_unpackhi_epi64", UnpackHi, 64, 2, 2));
                v.push(ins("_mm256_shuffle_ps", ShufflePs, 32, 2, 2));
                v.push(ins("_mm256_shuffle_pd", ShufflePd, 64, 2, 2));
                v.push(ins("_mm256_permute2x128_si256", Permute2x128, 128, 2, 2));
                v.push(ins("_mm256_permute4x64_epi64", PermuteImm4, 64, 1, 2));
                v.push(ins("_mm256_shuffle_epi32", ShuffleEpi32, 32, 1, 2));
                v.push(ins("_mm256_blend_epi32", Blend, 32, 2, 1));
                v.push(ins("_mm256_blendv_epi8", Blend, 8, 2, 2));
                v.push(ins("_mm256_permutevar8x32_epi32", PermuteVar, 32, 1, 2));
                v.push(ins("_mm256_shuffle_epi8", PermuteVarInBlock, 8, 1, 2));
            }
            IsaKind::Avx512 => {
                v.push(ins("_mm512_unpacklo_epi8", UnpackLo, 8, 2, 2));
                v.push(ins("_mm512_unpackhi_epi8", UnpackHi, 8, 2, 2));
                v.push(ins("_mm512_unpacklo_epi16", UnpackLo, 16, 2, 2));
                v.push(ins("_mm512_unpackhi_epi16", UnpackHi, 16, 2, 2));
                v.push(ins("_mm512_unpacklo_epi32", UnpackLo, 32, 2, 2));
                v.push(ins("_mm512_unpackhi_epi32", UnpackHi, 32, 2, 2));
                v.push(ins("_mm512_unpacklo_epi64", UnpackLo, 64, 2, 2));
                v.push(ins("_mm512_unpackhi_epi64", UnpackHi, 64, 2, 2));
                v.push(ins("_mm512_shuffle_ps", ShufflePs, 32, 2, 2));
                v.push(ins("_mm512_shuffle_pd", ShufflePd, 64, 2, 2));
                v.push(ins("_mm512_shuffle_i32x4", ShuffleX4, 128, 2, 2));
                v.push(ins("_mm512_permutex_epi64", PermuteImm4, 64, 1, 2));
                v.push(ins("_mm512_shuffle_epi32", ShuffleEpi32, 32, 1, 2));
                v.push(ins("_mm512_mask_blend_epi8", Blend, 8, 2, 1));
                v.push(ins("_mm512_mask_blend_epi16", Blend, 16, 2, 1));
                v.push(ins("_mm512_mask_blend_epi32", Blend, 32, 2, 1));
                v.push(ins("_mm512_mask_blend_epi64", Blend, 64, 2, 1));
                v.push(ins("_mm512_permutexvar_epi16", PermuteVar, 16, 1, 4));
                v.push(ins("_mm512_permutexvar_epi32", PermuteVar, 32, 1, 2));
                v.push(ins("_mm512_permutexvar_epi64", PermuteVar, 64, 1, 2));
                v.push(ins("_mm512_permutex2var_epi16", Permute2Var, 16, 2, 6));
                v.push(ins("_mm512_permutex2var_epi32", Permute2Var, 32, 2, 2));
                v.push(ins("_mm512_permutex2var_epi64", Permute2Var, 64, 2, 2));
                v.push(ins("_mm512_shuffle_epi8", PermuteVarInBlock, 8, 1, 2));
            }
            IsaKind::Neon => {
                for (g, names) in [
                    (
                        8,
                        [
                            "vtrn1q_u8",
                            "vtrn2q_u8",
                            "vzip1q_u8",
                            "vzip2q_u8",
                            "vuzp1q_u8",
                            "vuzp2q_u8",
                        ],
                    ),
                    (
                        16,
                        [
                            "vtrn1q_u16",
                            "vtrn2q_u16",
                            "vzip1q_u16",
                            "vzip2q_u16",
                            "vuzp1q_u16",
                            "vuzp2q_u16",
                        ],
                    ),
                    (
                        32,
                        [
                            "vtrn1q_u32",
                            "vtrn2q_u32",
                            "vzip1q_u32",
                            "vzip2q_u32",
                            "vuzp1q_u32",
                            "vuzp2q_u32",
                        ],
                    ),
                    (
                        64,
                        [
                            "vtrn1q_u64",
                            "vtrn2q_u64",
                            "vzip1q_u64",
                            "vzip2q_u64",
                            "vuzp1q_u64",
                            "vuzp2q_u64",
                        ],
                    ),
                ] {
                    for (name, sem) in names.into_iter().zip([Trn1, Trn2, Zip1, Zip2, Uzp1, Uzp2]) {
                        v.push(ins(name, sem, g, 2, 2));
                    }
                }
                v.push(ins("vextq_u8", Ext, 8, 2, 2));
                v.push(ins("vbslq_u8", Blend, 8, 2, 2));
                v.push(ins("vqtbl1q_u8", Table, 8, 1, 2));
                v.push(ins("vqtbl2q_u8", Table, 8, 2, 4));
                v.push(ins("vqtbl3q_u8", Table, 8, 3, 6));
                v.push(ins("vqtbl4q_u8", Table, 8, 4, 8));
            }
        }
        Isa { kind, instrs: v }
    }

    /// Lanes of `gran` bits in one register.
    pub fn lanes(&self, gran: usize) -> usize {
        self.kind.vector_bits() / gran
    }

    /// Whether `instr` takes its lane choice from an index vector or a
    /// per-lane mask that the search constructs rather than enumerates.
    pub fn is_variable(instr: &Instr) -> bool {
        matches!(
            instr.sem,
            Sem::PermuteVar | Sem::PermuteVarInBlock | Sem::Permute2Var | Sem::Table | Sem::Blend
        )
    }

    /// The immediates worth enumerating for an immediate-controlled instruction.
    pub fn imm_space(&self, instr: &Instr) -> Vec<Param> {
        let n = self.lanes(instr.gran);
        match instr.sem {
            Sem::UnpackLo | Sem::UnpackHi | Sem::Trn1 | Sem::Trn2 | Sem::Zip1 | Sem::Zip2 | Sem::Uzp1 | Sem::Uzp2 => {
                vec![Param::None]
            }
            Sem::ShufflePs | Sem::ShuffleX4 | Sem::PermuteImm4 | Sem::ShuffleEpi32 => {
                (0..256).map(Param::Imm).collect()
            }
            Sem::ShufflePd => (0..(1u64 << n.min(8))).map(Param::Imm).collect(),
            // Zeroing bits (3 and 7) are left out: the networks never need zeros.
            Sem::Permute2x128 => (0..16u64).map(|i| Param::Imm((i & 3) | ((i >> 2) << 4))).collect(),
            Sem::Ext => (1..n as u64).map(Param::Imm).collect(),
            _ => Vec::new(),
        }
    }

    /// Output lane sources of `instr` with `param`, at the instruction's granularity.
    pub fn select(&self, instr: &Instr, param: &Param) -> Vec<Sel> {
        let n = self.lanes(instr.gran);
        let blk = (128 / instr.gran).max(1);
        let imm = match param {
            Param::Imm(i) => *i,
            _ => 0,
        };
        let idx = |k: usize| -> usize {
            match param {
                Param::Index(v) => v[k] as usize,
                _ => panic!("{} needs an index vector", instr.name),
            }
        };
        let field = |k: usize, bits: usize| ((imm >> (k * bits)) & ((1 << bits) - 1)) as usize;
        (0..n)
            .map(|k| {
                let q = k / blk * blk; // first lane of k's 128-bit block
                let r = k % blk;
                match instr.sem {
                    Sem::UnpackLo => Some(((r & 1) as u8, (q + r / 2) as u16)),
                    Sem::UnpackHi => Some(((r & 1) as u8, (q + blk / 2 + r / 2) as u16)),
                    Sem::ShufflePs => Some(((r / 2) as u8, (q + field(r, 2)) as u16)),
                    Sem::ShufflePd => Some((r as u8, (q + ((imm >> k) & 1) as usize) as u16)),
                    Sem::Permute2x128 => {
                        let s = field(k, 4) & 3;
                        Some(((s / 2) as u8, (s % 2) as u16))
                    }
                    Sem::ShuffleX4 => Some(((k / 2) as u8, field(k, 2) as u16)),
                    Sem::PermuteImm4 => Some((0, (k / 4 * 4 + field(k % 4, 2)) as u16)),
                    Sem::ShuffleEpi32 => Some((0, (q + field(r, 2)) as u16)),
                    Sem::Blend => Some((((imm >> k) & 1) as u8, k as u16)),
                    Sem::PermuteVar => Some((0, (idx(k) % n) as u16)),
                    Sem::PermuteVarInBlock => {
                        let i = idx(k);
                        if i & 0x80 != 0 {
                            None
                        } else {
                            Some((0, (q + (i & 15)) as u16))
                        }
                    }
                    Sem::Permute2Var => {
                        let i = idx(k) % (2 * n);
                        Some(((i / n) as u8, (i % n) as u16))
                    }
                    Sem::Trn1 => Some(((k & 1) as u8, (k & !1) as u16)),
                    Sem::Trn2 => Some(((k & 1) as u8, (k | 1) as u16)),
                    Sem::Zip1 => Some(((k & 1) as u8, (k / 2) as u16)),
                    Sem::Zip2 => Some(((k & 1) as u8, (n / 2 + k / 2) as u16)),
                    Sem::Uzp1 => Some(((2 * k / n) as u8, (2 * k % n) as u16)),
                    Sem::Uzp2 => Some(((2 * k / n) as u8, (2 * k % n + 1) as u16)),
                    Sem::Ext => {
                        let s = k + imm as usize;
                        Some(((s / n) as u8, (s % n) as u16))
                    }
                    Sem::Table => {
                        let i = idx(k);
                        if i < n * instr.arity {
                            Some(((i / n) as u8, (i % n) as u16))
                        } else {
                            None
                        }
                    }
                }
            })
            .collect()
    }

    /// The same selection seen in elements of `w` bits, or `None` when the
    /// instruction would split an element (e.g. a byte shuffle that tears a
    /// 32-bit element apart).
    pub fn select_at(&self, instr: &Instr, param: &Param, w: usize) -> Option<Vec<Sel>> {
        let sel = self.select(instr, param);
        let g = instr.gran;
        if g >= w {
            let per = g / w;
            return Some(
                (0..sel.len() * per)
                    .map(|e| sel[e / per].map(|(o, l)| (o, l * per as u16 + (e % per) as u16)))
                    .collect(),
            );
        }
        let per = w / g;
        (0..sel.len() / per)
            .map(|e| {
                let first = sel[e * per];
                match first {
                    None => (1..per).all(|t| sel[e * per + t].is_none()).then_some(None),
                    Some((o, l)) => {
                        if !(l as usize).is_multiple_of(per) {
                            return None;
                        }
                        (1..per)
                            .all(|t| sel[e * per + t] == Some((o, l + t as u16)))
                            .then_some(Some((o, l / per as u16)))
                    }
                }
            })
            .collect()
    }

    /// The index vector (at the instruction's granularity) that realises an
    /// element-level selection `want` (elements of `w` bits; `None` = don't care).
    pub fn index_for(&self, instr: &Instr, want: &[Sel], w: usize) -> Option<Param> {
        let g = instr.gran;
        if !w.is_multiple_of(g) {
            return None;
        }
        let per = w / g;
        let n = self.lanes(g);
        let blk = (128 / g).max(1);
        let mut idx = Vec::with_capacity(n);
        for (e, s) in want.iter().enumerate() {
            for t in 0..per {
                let k = e * per + t;
                let v = match *s {
                    // Don't-care lanes repeat whole elements so no element is split.
                    None => match instr.sem {
                        Sem::Table => 0xff,
                        _ => t,
                    },
                    Some((o, l)) => {
                        let src = l as usize * per + t;
                        match instr.sem {
                            Sem::PermuteVar if o == 0 => src,
                            Sem::Permute2Var if o < 2 => o as usize * n + src,
                            Sem::Table if (o as usize) < instr.arity => o as usize * n + src,
                            Sem::PermuteVarInBlock if o == 0 && src / blk == k / blk => src % blk,
                            _ => return None,
                        }
                    }
                };
                idx.push(v as u16);
            }
        }
        Some(Param::Index(idx))
    }

    /// The blend mask (at the instruction's granularity) taking element lanes
    /// `from_b[e]` from the second operand.
    pub fn blend_mask(&self, instr: &Instr, from_b: &[bool], w: usize) -> Option<Param> {
        let g = instr.gran;
        if !w.is_multiple_of(g) || instr.sem != Sem::Blend {
            return None;
        }
        let per = w / g;
        let mut m = 0u64;
        for (e, &b) in from_b.iter().enumerate() {
            if b {
                for t in 0..per {
                    m |= 1 << (e * per + t);
                }
            }
        }
        Some(Param::Imm(m))
    }
}
