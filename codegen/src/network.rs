//! Shuffle networks, the problems they solve, and the interpreter that runs
//! a network on lane labels to prove it correct for its ISA model.

use crate::isa::{Isa, IsaKind, Param};

/// One instruction use: `value = instr(args...)` (values are SSA numbers;
/// inputs are `0..n_inputs`, step `s` defines `n_inputs + s`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub instr: usize,
    pub param: Param,
    pub args: Vec<usize>,
}

/// A straight-line shuffle network.
#[derive(Clone, Debug)]
pub struct Network {
    pub n_inputs: usize,
    pub steps: Vec<Step>,
    /// The value stored as output register `r`.
    pub outputs: Vec<usize>,
    /// Load slot → flat source chunk (see [`Problem::in_piece`]); slot
    /// `r * pieces + t` is piece `t` of input register `r`.
    pub loads: Vec<usize>,
    /// Store slot → flat destination chunk (see [`Problem::out_piece`]).
    pub stores: Vec<usize>,
}

impl Network {
    /// Instructions that move lanes (everything the network executes).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Total model cost.
    pub fn cost(&self, isa: &Isa) -> u32 {
        self.steps.iter().map(|s| isa.instrs[s.instr].cost).sum()
    }
}

/// How a side of the block sits in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rows {
    /// Each row has its own address (row offset table); a register holds a
    /// whole row, part of one, or several short rows loaded piecewise.
    Separate,
    /// The rows are known to be back to back (checked at run time), so the
    /// block is a flat run of registers.
    Contiguous,
}

/// An in-register block problem: `nb` source rows of `na` elements become
/// `na` destination rows of `nb` elements (`dst[i][j] = src[j][i]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    pub isa: IsaKind,
    pub elem_bits: usize,
    pub na: usize,
    pub nb: usize,
    pub src: Rows,
    pub dst: Rows,
}

impl Problem {
    /// Elements per register.
    pub fn lanes(&self) -> usize {
        self.isa.vector_bits() / self.elem_bits
    }

    /// Registers on each side.
    pub fn regs(&self) -> usize {
        self.na * self.nb / self.lanes()
    }

    /// Whether the block maps onto whole registers on both sides and every
    /// separate row is a whole number of registers or of register pieces.
    pub fn is_well_formed(&self) -> bool {
        let l = self.lanes();
        let fits = |n: usize, rows: Rows| match rows {
            Rows::Contiguous => true,
            Rows::Separate => n.is_multiple_of(l) || (l.is_multiple_of(n) && self.piece_ok(n)),
        };
        self.na > 0
            && self.nb > 0
            && (self.na * self.nb).is_multiple_of(l)
            && fits(self.na, self.src)
            && fits(self.nb, self.dst)
    }

    /// Partial-register rows must be a load width the emitter supports.
    fn piece_ok(&self, n: usize) -> bool {
        let bits = n * self.elem_bits;
        match self.isa {
            IsaKind::Neon => bits == 64,
            IsaKind::Avx2 => bits == 128,
            IsaKind::Avx512 => bits == 128 || bits == 256,
        }
    }

    /// Elements per load slot: a whole register, or one short source row.
    pub fn in_piece(&self) -> usize {
        match self.src {
            Rows::Contiguous => self.lanes(),
            Rows::Separate => self.na.min(self.lanes()),
        }
    }

    /// Elements per store slot.
    pub fn out_piece(&self) -> usize {
        match self.dst {
            Rows::Contiguous => self.lanes(),
            Rows::Separate => self.nb.min(self.lanes()),
        }
    }

    /// Elements per slot when a side is split into `slots` load or store
    /// slots: back-to-back rows may be moved in register pieces (e.g. two
    /// 128-bit halves) so that in-block shuffles suffice.
    pub fn piece_for(&self, slots: usize) -> usize {
        self.regs() * self.lanes() / slots.max(1)
    }

    /// Whether a back-to-back side may move `piece` elements per slot.
    pub fn split_ok(&self, piece: usize) -> bool {
        let bits = piece * self.elem_bits;
        piece > 0
            && self.lanes().is_multiple_of(piece)
            && match self.isa {
                _ if piece == self.lanes() => true,
                IsaKind::Neon => bits == 64,
                IsaKind::Avx2 => bits == 128,
                IsaKind::Avx512 => bits == 128 || bits == 256,
            }
    }

    /// The load-slot (or store-slot) map that puts chunk `t * regs + r` in
    /// piece `t` of register `r`: every 128-bit block then holds a run of
    /// whole chunks of its own, so blocks can be worked independently.
    pub fn split_slots(&self, piece: usize) -> Vec<usize> {
        let regs = self.regs();
        let per = self.lanes() / piece;
        (0..regs * per).map(|s| (s % per) * regs + s / per).collect()
    }

    /// Input labels when load slot `s` holds flat source chunk `loads[s]`.
    pub fn input_labels_for(&self, loads: &[usize]) -> Vec<Vec<u32>> {
        let piece = match self.src {
            Rows::Contiguous => self.piece_for(loads.len()),
            Rows::Separate => self.in_piece(),
        };
        self.input_labels_with(loads, piece)
    }

    /// Input labels for load slots of `piece` elements.
    pub fn input_labels_with(&self, loads: &[usize], piece: usize) -> Vec<Vec<u32>> {
        let l = self.lanes();
        let per = l / piece;
        (0..self.regs())
            .map(|r| {
                (0..l)
                    .map(|k| {
                        let f = loads[r * per + k / piece] * piece + k % piece;
                        ((f % self.na) * self.nb + f / self.na) as u32
                    })
                    .collect()
            })
            .collect()
    }

    /// Identity slot maps (slot `s` ↔ chunk `s`).
    pub fn identity_slots(&self, piece: usize) -> Vec<usize> {
        (0..self.regs() * self.lanes() / piece).collect()
    }

    /// Input register `r`, lane `l` holds flat source element `r*L + l`,
    /// i.e. row `j = f / na`, column `i = f % na`; its label is its flat
    /// destination index `i*nb + j`.
    pub fn input_labels(&self) -> Vec<Vec<u32>> {
        let l = self.lanes();
        (0..self.regs())
            .map(|r| {
                (0..l)
                    .map(|k| {
                        let f = r * l + k;
                        ((f % self.na) * self.nb + f / self.na) as u32
                    })
                    .collect()
            })
            .collect()
    }

    /// Output register `r` must hold destination elements `r*L .. r*L+L`.
    pub fn target_labels(&self) -> Vec<Vec<u32>> {
        let l = self.lanes();
        (0..self.regs())
            .map(|r| (0..l).map(|k| (r * l + k) as u32).collect())
            .collect()
    }

    /// The kernel's function name, e.g. `transpose_8x8_b32_avx2`.
    pub fn fn_name(&self) -> String {
        let tag = match (self.src, self.dst) {
            (Rows::Separate, Rows::Separate) => "",
            (Rows::Contiguous, Rows::Separate) => "_csrc",
            (Rows::Separate, Rows::Contiguous) => "_cdst",
            (Rows::Contiguous, Rows::Contiguous) => "_cboth",
        };
        format!(
            "transpose_{}x{}{}_b{}_{}",
            self.nb,
            self.na,
            tag,
            self.elem_bits,
            self.isa.name()
        )
    }
}

/// Label of a lane that holds zero (out-of-range table lookups).
pub const ZERO: u32 = u32::MAX;

/// Runs `net` on `inputs` (lane labels of `w`-bit elements) under the ISA
/// model; returns the output registers or why the network is malformed.
pub fn execute(isa: &Isa, w: usize, net: &Network, inputs: &[Vec<u32>]) -> Result<Vec<Vec<u32>>, String> {
    if inputs.len() != net.n_inputs {
        return Err(format!("{} inputs given, network takes {}", inputs.len(), net.n_inputs));
    }
    let mut vals: Vec<Vec<u32>> = inputs.to_vec();
    for (s, step) in net.steps.iter().enumerate() {
        let instr = isa
            .instrs
            .get(step.instr)
            .ok_or_else(|| format!("step {s}: no instruction {}", step.instr))?;
        if step.args.len() != instr.arity {
            return Err(format!("step {s}: {} takes {} operands", instr.name, instr.arity));
        }
        if step.args.iter().any(|&a| a >= vals.len()) {
            return Err(format!("step {s}: operand not yet defined"));
        }
        let sel = isa
            .select_at(instr, &step.param, w)
            .ok_or_else(|| format!("step {s}: {} splits {w}-bit elements", instr.name))?;
        let out = sel
            .iter()
            .map(|x| match *x {
                None => ZERO,
                Some((o, l)) => vals[step.args[o as usize]][l as usize],
            })
            .collect();
        vals.push(out);
    }
    net.outputs
        .iter()
        .map(|&o| {
            vals.get(o)
                .cloned()
                .ok_or_else(|| format!("output value {o} undefined"))
        })
        .collect()
}

/// Checks that `net` solves `p` under the ISA model.
pub fn verify(p: &Problem, net: &Network) -> Result<(), String> {
    let isa = Isa::new(p.isa);
    let pin = match p.src {
        Rows::Contiguous => p.piece_for(net.loads.len()),
        Rows::Separate => p.in_piece(),
    };
    let pout = match p.dst {
        Rows::Contiguous => p.piece_for(net.stores.len()),
        Rows::Separate => p.out_piece(),
    };
    if !p.split_ok(pin) || !p.split_ok(pout) {
        return Err(format!(
            "load pieces of {pin} or store pieces of {pout} elements cannot be moved"
        ));
    }
    let mut seen_in = net.loads.clone();
    seen_in.sort_unstable();
    let mut seen_out = net.stores.clone();
    seen_out.sort_unstable();
    if seen_in != p.identity_slots(pin) || seen_out != p.identity_slots(pout) {
        return Err("load or store slots are not a permutation of the chunks".into());
    }
    let got = execute(&isa, p.elem_bits, net, &p.input_labels_for(&net.loads))?;
    if got.len() != p.regs() {
        return Err(format!("{} outputs, expected {}", got.len(), p.regs()));
    }
    let per = p.lanes() / pout;
    for (r, g) in got.iter().enumerate() {
        for t in 0..per {
            let chunk = net.stores[r * per + t];
            let want: Vec<u32> = (0..pout).map(|k| (chunk * pout + k) as u32).collect();
            if g[t * pout..(t + 1) * pout] != want[..] {
                return Err(format!("output register {r} piece {t}: got {g:?}, want {want:?}"));
            }
        }
    }
    Ok(())
}

/// Text listing of networks (simd/networks.txt), read back by the tests so
/// every emitted network is re-verified by the interpreter without a search.
pub fn listing(all: &[(Problem, Network)]) -> String {
    let mut out = String::new();
    let nums = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
    let rows = |r: Rows| {
        if r == Rows::Contiguous {
            "contiguous"
        } else {
            "separate"
        }
    };
    for (p, n) in all {
        let isa = Isa::new(p.isa);
        out.push_str(&format!(
            "kernel {} {} {} {} {} {} {}\n",
            p.fn_name(),
            p.isa.name(),
            p.elem_bits,
            p.na,
            p.nb,
            rows(p.src),
            rows(p.dst)
        ));
        out.push_str(&format!("loads {}\nstores {}\n", nums(&n.loads), nums(&n.stores)));
        for s in &n.steps {
            let param = match &s.param {
                Param::None => "-".to_string(),
                Param::Imm(i) => format!("i{i}"),
                Param::Index(v) => format!("x{}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")),
            };
            out.push_str(&format!(
                "step {} {} {}\n",
                isa.instrs[s.instr].name,
                param,
                nums(&s.args)
            ));
        }
        out.push_str(&format!("outputs {}\nend\n", nums(&n.outputs)));
    }
    out
}

/// Parses [`listing`] output.
pub fn parse_listing(text: &str) -> Result<Vec<(Problem, Network)>, String> {
    let mut out = Vec::new();
    let mut cur: Option<(Problem, Network, Isa)> = None;
    let nums = |it: &[&str]| -> Result<Vec<usize>, String> {
        it.iter()
            .map(|t| t.parse::<usize>().map_err(|e| format!("'{t}': {e}")))
            .collect()
    };
    for (ln, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let err = |m: &str| format!("line {}: {m}: {line}", ln + 1);
        if line.starts_with('#') {
            continue;
        }
        match (f.first().copied(), cur.as_mut()) {
            (Some("kernel"), None) if f.len() == 8 => {
                let kind = IsaKind::parse(f[2]).ok_or_else(|| err("unknown ISA"))?;
                let v = nums(&f[3..6]).map_err(|e| err(&e))?;
                let rows = |s: &str| {
                    if s == "contiguous" {
                        Rows::Contiguous
                    } else {
                        Rows::Separate
                    }
                };
                let p = Problem {
                    isa: kind,
                    elem_bits: v[0],
                    na: v[1],
                    nb: v[2],
                    src: rows(f[6]),
                    dst: rows(f[7]),
                };
                if p.fn_name() != f[1] {
                    return Err(err("name does not match the block"));
                }
                let net = Network {
                    n_inputs: p.regs(),
                    steps: Vec::new(),
                    outputs: Vec::new(),
                    loads: Vec::new(),
                    stores: Vec::new(),
                };
                cur = Some((p, net, Isa::new(kind)));
            }
            (Some("loads"), Some((_, n, _))) => n.loads = nums(&f[1..]).map_err(|e| err(&e))?,
            (Some("stores"), Some((_, n, _))) => n.stores = nums(&f[1..]).map_err(|e| err(&e))?,
            (Some("outputs"), Some((_, n, _))) => n.outputs = nums(&f[1..]).map_err(|e| err(&e))?,
            (Some("step"), Some((_, n, isa))) if f.len() >= 3 => {
                let instr = isa
                    .instrs
                    .iter()
                    .position(|i| i.name == f[1])
                    .ok_or_else(|| err("unknown instruction"))?;
                let param = match f[2] {
                    "-" => Param::None,
                    s if s.starts_with('i') => Param::Imm(s[1..].parse().map_err(|_| err("bad immediate"))?),
                    s if s.starts_with('x') => Param::Index(
                        s[1..]
                            .split(',')
                            .map(|t| t.parse::<u16>().map_err(|_| err("bad index")))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => return Err(err("bad parameter")),
                };
                n.steps.push(Step {
                    instr,
                    param,
                    args: nums(&f[3..]).map_err(|e| err(&e))?,
                });
            }
            (Some("end"), Some(_)) => {
                let (p, n, _) = cur.take().unwrap();
                out.push((p, n));
            }
            (None, _) => {}
            _ => return Err(err("unexpected line")),
        }
    }
    if cur.is_some() {
        return Err("listing ends inside a kernel".into());
    }
    Ok(out)
}
