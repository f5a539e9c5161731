//! Network synthesis: a search over the ISA model, never a list of known
//! sequences.
//!
//! * [`search_bpc`]: for power-of-two blocks every register/lane position is
//!   an address whose bits are a permutation of the element label's bits (a
//!   bit-permute layout). A *stage* applies one two-operand instruction pair
//!   to every register pair that differs in one register bit, or one
//!   single-operand instruction to every register. A* over the layouts, with
//!   "label bits still in the wrong half of the address" as an admissible
//!   bound, finds the cheapest stage sequence.
//! * [`search_gather`]: for any block (e.g. 3 channels), each output register
//!   is built by dynamic programming over the subsets of input registers it
//!   draws from: blends of registers whose lanes do not collide, one- and
//!   multi-source permutes by index vector, and immediate shuffles.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::isa::{Isa, IsaKind, Param, Sel, Sem};
use crate::network::{verify, Network, Problem, Rows, Step, ZERO};

/// Finds a network for `p`: the bit-permute search for power-of-two blocks,
/// otherwise (or if it fails) the gather search. The result is verified.
pub fn synthesize(p: &Problem) -> Option<Network> {
    if !p.is_well_formed() {
        return None;
    }
    let isa = Isa::new(p.isa);
    let mut best: Option<Network> = None;
    if p.na.is_power_of_two() && p.nb.is_power_of_two() {
        best = search_bpc(p, &isa);
    }
    for (loads, stores) in gather_layouts(p) {
        if let Some(g) = search_gather(p, &isa, loads, stores) {
            let better = match &best {
                None => true,
                Some(b) => layout_cost(p, &isa, &g) < layout_cost(p, &isa, b),
            };
            if better {
                best = Some(g);
            }
        }
    }
    let net = best?;
    verify(p, &net).expect("synthesised network failed verification");
    Some(net)
}

/// Cost of a network including the piece inserts and extracts that split
/// loads and stores need (one per extra piece), then its length.
fn layout_cost(p: &Problem, isa: &Isa, n: &Network) -> (u32, usize) {
    let extra = |slots: usize, rows: Rows| match rows {
        Rows::Contiguous => slots - p.regs(),
        Rows::Separate => 0,
    };
    let moves = extra(n.loads.len(), p.src) + extra(n.stores.len(), p.dst);
    (n.cost(isa) + moves as u32, n.len())
}

/// Load and store slot maps the gather search tries: whole registers, and
/// on back-to-back x86 sides 128-bit pieces placed so that each block of a
/// register holds whole chunks of its own (3-channel bytes then need only
/// in-block shuffles and blends).
fn gather_layouts(p: &Problem) -> Vec<(Vec<usize>, Vec<usize>)> {
    let side = |rows: Rows, whole: usize| -> Vec<Vec<usize>> {
        let mut v = vec![p.identity_slots(whole)];
        let block = 128 / p.elem_bits;
        if rows == Rows::Contiguous && p.isa != IsaKind::Neon && block < p.lanes() && p.split_ok(block) {
            v.push(p.split_slots(block));
        }
        v
    };
    let mut out = Vec::new();
    for l in side(p.src, p.in_piece()) {
        for s in side(p.dst, p.out_piece()) {
            out.push((l.clone(), s));
        }
    }
    out
}

/// Layouts the A* search may expand before it gives up on a problem.
const MAX_EXPANSIONS: usize = 150000;

/// One instruction choice inside a stage.
#[derive(Clone, Debug)]
struct Cand {
    instr: usize,
    param: Param,
    /// Operands swapped (second register first).
    swap: bool,
    cost: u32,
    /// Element-level selection (operand 0 = first register of the pair).
    sel: Vec<Sel>,
}

/// A stage, by index into the candidate lists (nodes stay small).
#[derive(Clone, Copy, Debug)]
enum Stage {
    Pair { bit: usize, pair: usize },
    Unary { cand: usize },
}

/// A search node: a layout (as its bit map) and how it was reached.
struct Node {
    key: (Vec<u8>, u32),
    g: u32,
    parent: Option<(usize, Stage)>,
}

/// The registers of a bit-permute layout.
fn regs_of(key: &(Vec<u8>, u32), nregs: usize, lanes: usize) -> Vec<Vec<u32>> {
    let (map, c) = key;
    (0..nregs)
        .map(|r| {
            (0..lanes)
                .map(|l| {
                    let pos = r * lanes + l;
                    map.iter()
                        .enumerate()
                        .filter(|(b, _)| pos >> b & 1 == 1)
                        .fold(*c, |acc, (_, &m)| acc ^ (1 << m))
                })
                .collect()
        })
        .collect()
}

/// Affine bit-permute layout of a state: label(pos) = c ^ Σ map[b] over set bits b of pos.
fn bpc_key(regs: &[Vec<u32>], lanes: usize) -> Option<(Vec<u8>, u32)> {
    let n = regs.len() * lanes;
    let nbits = n.trailing_zeros() as usize;
    let lab = |pos: usize| regs[pos / lanes][pos % lanes];
    let c = lab(0);
    if c == ZERO {
        return None;
    }
    let mut map = Vec::with_capacity(nbits);
    let mut seen = 0u64;
    for b in 0..nbits {
        let d = lab(1 << b) ^ c;
        if d == 0 || !d.is_power_of_two() || seen & d as u64 != 0 {
            return None;
        }
        seen |= d as u64;
        map.push(d.trailing_zeros() as u8);
    }
    for pos in 0..n {
        let mut want = c;
        for (b, &m) in map.iter().enumerate() {
            if pos >> b & 1 == 1 {
                want ^= 1 << m;
            }
        }
        if lab(pos) != want {
            return None;
        }
    }
    Some((map, c))
}

fn apply(sel: &[Sel], a: &[u32], b: &[u32]) -> Vec<u32> {
    sel.iter()
        .map(|s| match *s {
            None => ZERO,
            Some((0, l)) => a[l as usize],
            Some((_, l)) => b[l as usize],
        })
        .collect()
}

/// Selections that are bijective onto their operands' lanes, with their source mask.
fn lane_mask(sel: &[Sel], lanes: usize) -> Option<u128> {
    let mut m = 0u128;
    for s in sel {
        let (o, l) = (*s)?;
        let bit = 1u128 << (o as usize * lanes + l as usize);
        if m & bit != 0 {
            return None;
        }
        m |= bit;
    }
    Some(m)
}

/// The cheapest stage sequence over bit-permute layouts, trying both ways of
/// filling registers with short rows (consecutive rows, or rows one register
/// count apart).
pub fn search_bpc(p: &Problem, isa: &Isa) -> Option<Network> {
    let piece = p.in_piece();
    let per = p.lanes() / piece;
    let mut options = vec![p.identity_slots(piece)];
    if per > 1 {
        let regs = p.regs();
        options.push((0..regs * per).map(|s| (s % per) * regs + s / per).collect());
    }
    let mut best: Option<Network> = None;
    for loads in options.into_iter().rev() {
        let upper = best.as_ref().map_or(u32::MAX, |n| n.cost(isa));
        if let Some(n) = search_bpc_with(p, isa, loads, upper) {
            best = Some(n);
        }
    }
    best
}

/// A* from the layout given by `loads`; only networks cheaper than `upper` count.
fn search_bpc_with(p: &Problem, isa: &Isa, loads: Vec<usize>, upper: u32) -> Option<Network> {
    let w = p.elem_bits;
    let pout = p.out_piece();
    let low_bits = pout.trailing_zeros() as u8;
    let lanes = p.lanes();
    let nregs = p.regs();
    if !nregs.is_power_of_two() || 2 * lanes > 128 {
        return None;
    }
    let lane_bits = lanes.trailing_zeros() as usize;
    let reg_bits = nregs.trailing_zeros() as usize;

    // State-independent candidates: every immediate of every fixed-pattern instruction.
    let mut singles: HashMap<Vec<Sel>, Cand> = HashMap::new();
    let mut unary: HashMap<Vec<Sel>, Cand> = HashMap::new();
    for (ii, instr) in isa.instrs.iter().enumerate() {
        if Isa::is_variable(instr) {
            continue;
        }
        for param in isa.imm_space(instr) {
            let Some(sel) = isa.select_at(instr, &param, w) else {
                continue;
            };
            let variants: &[bool] = if instr.arity == 2 { &[false, true] } else { &[false] };
            for &swap in variants {
                let sel: Vec<Sel> = if swap {
                    sel.iter().map(|s| s.map(|(o, l)| (1 - o, l))).collect()
                } else {
                    sel.clone()
                };
                let cand = Cand {
                    instr: ii,
                    param: param.clone(),
                    swap,
                    cost: instr.cost,
                    sel: sel.clone(),
                };
                let table = if instr.arity == 1 { &mut unary } else { &mut singles };
                if lane_mask(&sel, lanes).is_some() {
                    let keep = table.get(&sel).is_none_or(|c| c.cost > cand.cost);
                    if keep {
                        table.insert(sel, cand);
                    }
                }
            }
        }
    }
    // Two-source variable permutes: exchange the pair bit with each lane bit.
    for (ii, instr) in isa.instrs.iter().enumerate() {
        let two_source = matches!(instr.sem, Sem::Permute2Var) || (instr.sem == Sem::Table && instr.arity == 2);
        if !two_source {
            continue;
        }
        for q in 0..lane_bits {
            for hi in [0u16, 1] {
                let sel: Vec<Sel> = (0..lanes as u16)
                    .map(|l| Some(((l >> q & 1) as u8, (l & !(1 << q)) | (hi << q))))
                    .collect();
                if let Some(param) = isa.index_for(instr, &sel, w) {
                    let cand = Cand {
                        instr: ii,
                        param,
                        swap: false,
                        cost: instr.cost,
                        sel: sel.clone(),
                    };
                    let keep = singles.get(&sel).is_none_or(|c| c.cost > cand.cost);
                    if keep {
                        singles.insert(sel, cand);
                    }
                }
            }
        }
    }
    let full: u128 = if 2 * lanes == 128 {
        u128::MAX
    } else {
        (1u128 << (2 * lanes)) - 1
    };
    let mut by_mask: HashMap<u128, Vec<&Cand>> = HashMap::new();
    for c in singles.values() {
        by_mask.entry(lane_mask(&c.sel, lanes).unwrap()).or_default().push(c);
    }
    let mut pairs: Vec<(Cand, Cand)> = Vec::new();
    for (m, xs) in &by_mask {
        if let Some(ys) = by_mask.get(&(full & !m)) {
            for x in xs {
                for y in ys {
                    pairs.push(((*x).clone(), (*y).clone()));
                }
            }
        }
    }
    // Variable permutes: every permutation of the position bits they can reach.
    for (ii, instr) in isa.instrs.iter().enumerate() {
        let two_source = matches!(instr.sem, Sem::Permute2Var) || (instr.sem == Sem::Table && instr.arity == 2);
        if !two_source || lane_bits + 1 > 6 {
            continue;
        }
        for perm in bit_perms(lane_bits + 1) {
            let src_of = |q: usize| -> Sel {
                let m: usize = (0..=lane_bits).map(|b| (q >> b & 1) << perm[b]).sum();
                Some(((m / lanes) as u8, (m % lanes) as u16))
            };
            let xs: Vec<Sel> = (0..lanes).map(src_of).collect();
            let ys: Vec<Sel> = (lanes..2 * lanes).map(src_of).collect();
            if let (Some(px), Some(py)) = (isa.index_for(instr, &xs, w), isa.index_for(instr, &ys, w)) {
                let mk = |param, sel| Cand {
                    instr: ii,
                    param,
                    swap: false,
                    cost: instr.cost,
                    sel,
                };
                pairs.push((mk(px, xs), mk(py, ys)));
            }
        }
    }
    // Keep one (the cheapest) pair per distinct bit-permute move: only
    // bit-permute moves map bit-permute layouts to bit-permute layouts.
    let mut moves: HashMap<(Vec<u8>, u32), (Cand, Cand)> = HashMap::new();
    // A fixed order (hash maps above iterate randomly) keeps the output reproducible.
    let cand_key = |c: &Cand| (c.cost, c.instr, c.swap, format!("{:?}", c.param));
    pairs.sort_by_cached_key(|(x, y)| (x.cost + y.cost, cand_key(x), cand_key(y)));
    for (x, y) in pairs {
        let pos: Vec<u32> = x
            .sel
            .iter()
            .chain(&y.sel)
            .map(|s| s.map_or(ZERO, |(o, l)| (o as usize * lanes + l as usize) as u32))
            .collect();
        if let Some(key) = bpc_key(&[pos], 2 * lanes) {
            let keep = moves.get(&key).is_none_or(|(a, b)| a.cost + b.cost > x.cost + y.cost);
            if keep {
                moves.insert(key, (x, y));
            }
        }
    }
    let mut keyed: Vec<((Cand, Cand), Key)> = moves.into_iter().map(|(k, xy)| (xy, k)).collect();
    keyed.sort_by_cached_key(|((x, y), _)| (x.cost + y.cost, cand_key(x), cand_key(y)));
    let (pairs, pair_keys): (Vec<(Cand, Cand)>, Vec<Key>) = keyed.into_iter().unzip();
    let var1: Vec<usize> = (0..isa.instrs.len())
        .filter(|&i| {
            let s = isa.instrs[i].sem;
            s == Sem::PermuteVar || s == Sem::PermuteVarInBlock || (s == Sem::Table && isa.instrs[i].arity == 1)
        })
        .collect();
    let mut unary: Vec<Cand> = unary
        .into_values()
        .collect::<Vec<_>>()
        .into_iter()
        .filter(|c| {
            let pos: Vec<u32> = c.sel.iter().map(|s| s.map_or(ZERO, |(_, l)| l as u32)).collect();
            bpc_key(&[pos], lanes).is_some()
        })
        .collect();
    unary.sort_by_cached_key(|c| (c.cost, c.instr, format!("{:?}", c.param), c.sel.clone()));

    for &ii in &var1 {
        let instr = &isa.instrs[ii];
        let in_block = instr.sem == Sem::PermuteVarInBlock;
        let nbits = if in_block {
            (128 / w).trailing_zeros() as usize
        } else {
            lane_bits
        };
        if nbits > 6 {
            continue;
        }
        for perm in bit_perms(nbits) {
            let sel: Vec<Sel> = (0..lanes)
                .map(|q| {
                    let low: usize = (0..nbits).map(|b| (q >> b & 1) << perm[b]).sum();
                    Some((0, ((q >> nbits << nbits) | low) as u16))
                })
                .collect();
            if let Some(param) = isa.index_for(instr, &sel, w) {
                unary.push(Cand {
                    instr: ii,
                    param,
                    swap: false,
                    cost: instr.cost,
                    sel,
                });
            }
        }
    }
    let min_stage = 2 * nregs as u32; // every stage instruction costs at least 2
                                      // Each pair stage brings at most one label bit from a register bit into
                                      // the lanes, and low label bits must all end in the lanes.
                                      // Layouts are composed as bit maps (no registers built per child).
    let unary_keys: Vec<Option<Key>> = unary.iter().map(|c| unary_key(c, lanes)).collect();
    let lane_local: Vec<usize> = (0..lane_bits).collect();
    let bound = |key: &Key| -> u32 {
        let wrong = key.0[lane_bits..].iter().filter(|&&m| m < low_bits).count() as u32;
        let order = u32::from(wrong == 0 && !is_goal_key(key, pout));
        (wrong + order) * min_stage
    };

    let start = p.input_labels_for(&loads);
    let (m0, c0) = bpc_key(&start, lanes)?;
    let mut nodes = vec![Node {
        key: (m0.clone(), c0),
        g: 0,
        parent: None,
    }];
    // Unary candidates found for one state (register sorts) are appended to `unary`.
    let mut best_g: HashMap<(Vec<u8>, u32), u32> = HashMap::new();
    best_g.insert((m0.clone(), c0), 0);
    let mut open = BinaryHeap::new();
    open.push(Reverse((bound(&(m0.clone(), c0)), Reverse(0u32), 0usize)));
    let mut expanded = 0usize;
    while let Some(Reverse((f, Reverse(g), id))) = open.pop() {
        if f >= upper {
            return None;
        }
        if nodes[id].g != g {
            continue;
        }
        if is_goal_key(&nodes[id].key, pout) {
            return Some(build_bpc(p, &nodes, id, loads, &pairs, &unary));
        }
        expanded += 1;
        if expanded > MAX_EXPANSIONS {
            return None;
        }
        let cur = nodes[id].key.clone();
        let mut push = |nodes: &mut Vec<Node>, key: Key, cost: u32, stage: Stage| {
            let ng = g + cost;
            if best_g.get(&key).is_some_and(|&old| old <= ng) {
                return;
            }
            let h = bound(&key);
            best_g.insert(key.clone(), ng);
            nodes.push(Node {
                key,
                g: ng,
                parent: Some((id, stage)),
            });
            open.push(Reverse((ng + h, Reverse(ng), nodes.len() - 1)));
        };
        // Pair stages.
        // Pair stages: the pair's lanes and register bit `bit` are its local position bits.
        for bit in 0..reg_bits {
            let mut local = lane_local.clone();
            local.push(lane_bits + bit);
            for (pi, (x, y)) in pairs.iter().enumerate() {
                let cost = (x.cost + y.cost) * (nregs / 2) as u32;
                push(
                    &mut nodes,
                    compose(&cur, &local, &pair_keys[pi]),
                    cost,
                    Stage::Pair { bit, pair: pi },
                );
            }
        }
        // Unary stages: fixed patterns, then an index permute that sorts register 0.
        let regs = regs_of(&cur, nregs, lanes);
        for (ci, c) in unary.iter().enumerate() {
            // Sorts appended below have no precomputed key.
            let key = match unary_keys.get(ci).and_then(|k| k.as_ref()) {
                Some(k) => compose(&cur, &lane_local, k),
                None => {
                    let new: Vec<Vec<u32>> = regs.iter().map(|r| apply(&c.sel, r, r)).collect();
                    let Some(k) = bpc_key(&new, lanes) else { continue };
                    k
                }
            };
            push(&mut nodes, key, c.cost * nregs as u32, Stage::Unary { cand: ci });
        }
        if let Some(sel) = sort_pieces(&regs[0], pout) {
            for &ii in &var1 {
                let instr = &isa.instrs[ii];
                if let Some(param) = isa.index_for(instr, &sel, w) {
                    let c = Cand {
                        instr: ii,
                        param,
                        swap: false,
                        cost: instr.cost,
                        sel: sel.clone(),
                    };
                    let new: Vec<Vec<u32>> = regs.iter().map(|r| apply(&c.sel, r, r)).collect();
                    let Some(key) = bpc_key(&new, lanes) else { continue };
                    unary.push(c);
                    let cand = unary.len() - 1;
                    push(&mut nodes, key, unary[cand].cost * nregs as u32, Stage::Unary { cand });
                }
            }
        }
    }
    None
}

/// A bit-permute layout: position bit `b` flips label bit `map[b]`; label of position 0.
type Key = (Vec<u8>, u32);

/// Whether a layout is a goal (every store slot holds one whole destination
/// chunk in order): the low position bits of each store slot carry the low label bits in order, from a slot-aligned base.
fn is_goal_key(key: &Key, piece: usize) -> bool {
    let low = piece.trailing_zeros() as usize;
    (0..low).all(|b| key.0[b] as usize == b) && key.1 & (piece as u32 - 1) == 0
}

/// The layout after a bit-permute move: `mv` maps local position bits
/// (`local[k]` are their global position bits) to the local bits they read
/// from, and its constant is the local position read by position 0.
fn compose(key: &Key, local: &[usize], mv: &Key) -> Key {
    let mut map = key.0.clone();
    let mut c = key.1;
    for (k, &g) in local.iter().enumerate() {
        map[g] = key.0[local[mv.0[k] as usize]];
        if mv.1 >> k & 1 == 1 {
            c ^= 1 << key.0[g];
        }
    }
    (map, c)
}

/// The bit-permute key of a one-register move over its lanes, if it is one.
fn unary_key(c: &Cand, lanes: usize) -> Option<Key> {
    let pos: Vec<u32> = c.sel.iter().map(|s| s.map_or(ZERO, |(_, l)| l as u32)).collect();
    bpc_key(&[pos], lanes)
}

/// All permutations of `n` bit positions.
fn bit_perms(n: usize) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for k in 0..n {
        let mut next = Vec::new();
        for p in &out {
            for at in 0..=k {
                let mut q = p.clone();
                q.insert(at, k);
                next.push(q);
            }
        }
        out = next;
    }
    out
}

/// The one-register permutation that turns `reg` into whole destination
/// chunks of `piece` lanes, if its labels form such chunks.
fn sort_pieces(reg: &[u32], piece: usize) -> Option<Vec<Sel>> {
    let mut chunks: Vec<u32> = reg.iter().map(|&v| v / piece as u32).collect();
    if reg.contains(&ZERO) {
        return None;
    }
    chunks.sort_unstable();
    chunks.dedup();
    if chunks.len() * piece != reg.len() {
        return None;
    }
    let mut sel: Vec<Sel> = vec![None; reg.len()];
    for (pos, &v) in reg.iter().enumerate() {
        let slot = chunks.iter().position(|&c| c == v / piece as u32)?;
        sel[slot * piece + v as usize % piece] = Some((0, pos as u16));
    }
    Some(sel)
}

fn step_of(c: &Cand, args: Vec<usize>) -> Step {
    Step {
        instr: c.instr,
        param: c.param.clone(),
        args,
    }
}

fn build_bpc(
    p: &Problem,
    nodes: &[Node],
    goal: usize,
    loads: Vec<usize>,
    pairs: &[(Cand, Cand)],
    unary: &[Cand],
) -> Network {
    let mut stages = Vec::new();
    let mut id = goal;
    while let Some((parent, stage)) = &nodes[id].parent {
        stages.push(*stage);
        id = *parent;
    }
    stages.reverse();
    let nregs = p.regs();
    let mut cur: Vec<usize> = (0..nregs).collect();
    let mut steps = Vec::new();
    for st in &stages {
        match st {
            Stage::Pair { bit, pair } => {
                let (x, y) = &pairs[*pair];
                let k = 1 << bit;
                for r in (0..nregs).filter(|r| r & k == 0) {
                    let (a, b) = (cur[r], cur[r | k]);
                    let ops = |c: &Cand| if c.swap { vec![b, a] } else { vec![a, b] };
                    steps.push(step_of(x, ops(x)));
                    let vx = nregs + steps.len() - 1;
                    steps.push(step_of(y, ops(y)));
                    let vy = nregs + steps.len() - 1;
                    cur[r] = vx;
                    cur[r | k] = vy;
                }
            }
            Stage::Unary { cand } => {
                let c = &unary[*cand];
                for v in cur.iter_mut() {
                    steps.push(step_of(c, vec![*v]));
                    *v = nregs + steps.len() - 1;
                }
            }
        }
    }
    let pout = p.out_piece();
    let stores = regs_of(&nodes[goal].key, nregs, p.lanes())
        .iter()
        .flat_map(|r| r.chunks(pout).map(|c| c[0] as usize / pout))
        .collect();
    Network {
        n_inputs: nregs,
        steps,
        outputs: cur,
        loads,
        stores,
    }
}

// ---------------------------------------------------------------- gather search

/// How a partial register is produced.
#[derive(Clone, Debug)]
enum Expr {
    Raw(usize),
    /// Blend: lanes in `take_b` from the second expression.
    Blend(Box<Node2>, Box<Node2>),
    /// Variable permute of 1..k operands, placing needed labels at their targets.
    Perm(usize, Vec<Node2>),
    /// Immediate instruction on operands with a fixed parameter.
    Imm(usize, Param, Vec<Node2>),
}

/// A partial register: where each needed label sits, and how to make it.
#[derive(Clone, Debug)]
struct Node2 {
    cost: u32,
    count: u32,
    pos: Vec<(u32, u16)>,
    expr: Expr,
}

fn better(a: &Option<Node2>, b: &Node2) -> bool {
    match a {
        None => true,
        Some(a) => (b.cost, b.count) < (a.cost, a.count),
    }
}

/// Set partitions of `items` into exactly `k` non-empty blocks.
fn partitions(items: &[usize], k: usize) -> Vec<Vec<Vec<usize>>> {
    fn rec(items: &[usize], k: usize, cur: &mut Vec<Vec<usize>>, out: &mut Vec<Vec<Vec<usize>>>) {
        if items.is_empty() {
            if cur.len() == k {
                out.push(cur.clone());
            }
            return;
        }
        let (first, rest) = (items[0], &items[1..]);
        for b in 0..cur.len() {
            cur[b].push(first);
            rec(rest, k, cur, out);
            cur[b].pop();
        }
        if cur.len() < k {
            cur.push(vec![first]);
            rec(rest, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(items, k, &mut Vec::new(), &mut out);
    out
}

/// Builds each output register by dynamic programming over input subsets,
/// with input registers loaded by `loads` and output registers stored by
/// `stores` (slot maps as in [`Network`]).
pub fn search_gather(p: &Problem, isa: &Isa, loads: Vec<usize>, stores: Vec<usize>) -> Option<Network> {
    let w = p.elem_bits;
    let lanes = p.lanes();
    let inputs = p.input_labels_for(&loads);
    // Output register o, lane t must hold label want[o][t].
    let pout = p.piece_for(stores.len());
    let per_out = lanes / pout;
    let want: Vec<Vec<u32>> = (0..p.regs())
        .map(|o| {
            (0..lanes)
                .map(|t| (stores[o * per_out + t / pout] * pout + t % pout) as u32)
                .collect()
        })
        .collect();
    let mut where_is: HashMap<u32, (usize, u16)> = HashMap::new();
    for (r, reg) in inputs.iter().enumerate() {
        for (l, &v) in reg.iter().enumerate() {
            where_is.insert(v, (r, l as u16));
        }
    }
    let blend = isa
        .instrs
        .iter()
        .enumerate()
        .filter(|(_, i)| i.sem == Sem::Blend && w.is_multiple_of(i.gran))
        .min_by_key(|(_, i)| i.cost)
        .map(|(k, _)| k);
    let perms: Vec<usize> = (0..isa.instrs.len())
        .filter(|&i| {
            matches!(
                isa.instrs[i].sem,
                Sem::PermuteVar | Sem::PermuteVarInBlock | Sem::Permute2Var | Sem::Table
            )
        })
        .collect();
    let imm1: Vec<(usize, Param, Vec<Sel>)> = isa
        .instrs
        .iter()
        .enumerate()
        .filter(|(_, i)| !Isa::is_variable(i))
        .flat_map(|(k, i)| {
            isa.imm_space(i)
                .into_iter()
                .filter_map(move |pm| isa.select_at(i, &pm, w).map(|s| (k, pm, s)))
        })
        .collect();

    let mut b = Builder::new(isa, w, inputs.clone());
    let mut outputs = Vec::new();
    for o in 0..p.regs() {
        let need: Vec<(u32, usize, u16)> = (0..lanes)
            .map(|t| {
                let lab = want[o][t];
                let (r, l) = where_is[&lab];
                (lab, r, l)
            })
            .collect();
        let lane_of: HashMap<u32, u16> = (0..lanes).map(|t| (want[o][t], t as u16)).collect();
        let mut srcs: Vec<usize> = need.iter().map(|n| n.1).collect();
        srcs.sort_unstable();
        srcs.dedup();
        let ns = srcs.len();
        if ns > 8 {
            return None;
        }
        let target = |lab: u32| lane_of[&lab];
        let labels_of = |mask: usize| -> Vec<(u32, u16)> {
            need.iter()
                .filter(|n| mask >> srcs.iter().position(|&s| s == n.1).unwrap() & 1 == 1)
                .map(|n| (n.0, n.2))
                .collect()
        };
        let full = (1usize << ns) - 1;
        let mut any: Vec<Option<Node2>> = vec![None; full + 1];
        let mut inp: Vec<Option<Node2>> = vec![None; full + 1];
        for mask in 1..=full {
            let raw_pos = labels_of(mask);
            // Anywhere: needed labels at their raw lanes, if those lanes never collide.
            let mut lanes_used = 0u128;
            let disjoint = raw_pos.iter().all(|&(_, l)| {
                let bit = 1u128 << l;
                let free = lanes_used & bit == 0;
                lanes_used |= bit;
                free
            });
            if mask.is_power_of_two() {
                let s = srcs[mask.trailing_zeros() as usize];
                any[mask] = Some(Node2 {
                    cost: 0,
                    count: 0,
                    pos: raw_pos.clone(),
                    expr: Expr::Raw(s),
                });
            } else if disjoint {
                if let Some(bi) = blend {
                    let low = mask & mask.wrapping_neg();
                    let mut sub = (mask - 1) & mask;
                    while sub > 0 {
                        if sub & low != 0 {
                            let (x, y) = (&any[sub], &any[mask ^ sub]);
                            if let (Some(x), Some(y)) = (x, y) {
                                let n = Node2 {
                                    cost: x.cost + y.cost + isa.instrs[bi].cost,
                                    count: x.count + y.count + 1,
                                    pos: raw_pos.clone(),
                                    expr: Expr::Blend(Box::new(x.clone()), Box::new(y.clone())),
                                };
                                if better(&any[mask], &n) {
                                    any[mask] = Some(n);
                                }
                            }
                        }
                        sub = (sub - 1) & mask;
                    }
                }
            }
            let in_place: Vec<(u32, u16)> = raw_pos.iter().map(|&(lab, _)| (lab, target(lab))).collect();
            let mut cand: Option<Node2> = None;
            // Already in place.
            if let Some(a) = &any[mask] {
                if a.pos.iter().all(|&(lab, l)| l == target(lab)) {
                    cand = Some(a.clone());
                }
            }
            // One-source permutes of an Anywhere register.
            if let Some(a) = any[mask].clone() {
                let mut want: Vec<Sel> = vec![None; lanes];
                for &(lab, l) in &a.pos {
                    want[target(lab) as usize] = Some((0, l));
                }
                for &pi in &perms {
                    if isa.instrs[pi].arity != 1 {
                        continue;
                    }
                    if isa.index_for(&isa.instrs[pi], &want, w).is_some() {
                        let n = Node2 {
                            cost: a.cost + isa.instrs[pi].cost,
                            count: a.count + 1,
                            pos: in_place.clone(),
                            expr: Expr::Perm(pi, vec![a.clone()]),
                        };
                        if better(&cand, &n) {
                            cand = Some(n);
                        }
                    }
                }
                for (ii, pm, sel) in &imm1 {
                    if isa.instrs[*ii].arity != 1 {
                        continue;
                    }
                    let ok = a.pos.iter().all(|&(lab, l)| sel[target(lab) as usize] == Some((0, l)));
                    if ok {
                        let n = Node2 {
                            cost: a.cost + isa.instrs[*ii].cost,
                            count: a.count + 1,
                            pos: in_place.clone(),
                            expr: Expr::Imm(*ii, pm.clone(), vec![a.clone()]),
                        };
                        if better(&cand, &n) {
                            cand = Some(n);
                        }
                    }
                }
            }
            // Two raw registers through one immediate two-source instruction.
            if mask.count_ones() == 2 {
                let i0 = mask.trailing_zeros() as usize;
                let i1 = (mask & (mask - 1)).trailing_zeros() as usize;
                let (xa, xb) = (any[1 << i0].clone().unwrap(), any[1 << i1].clone().unwrap());
                for (ii, pm, sel) in &imm1 {
                    if isa.instrs[*ii].arity != 2 {
                        continue;
                    }
                    for (first, second) in [(&xa, &xb), (&xb, &xa)] {
                        let ok = first
                            .pos
                            .iter()
                            .all(|&(lab, l)| sel[target(lab) as usize] == Some((0, l)))
                            && second
                                .pos
                                .iter()
                                .all(|&(lab, l)| sel[target(lab) as usize] == Some((1, l)));
                        if ok {
                            let n = Node2 {
                                cost: isa.instrs[*ii].cost,
                                count: 1,
                                pos: in_place.clone(),
                                expr: Expr::Imm(*ii, pm.clone(), vec![first.clone(), second.clone()]),
                            };
                            if better(&cand, &n) {
                                cand = Some(n);
                            }
                        }
                    }
                }
            }
            // Blend of two in-place halves.
            if let Some(bi) = blend {
                let low = mask & mask.wrapping_neg();
                let mut sub = (mask - 1) & mask;
                while sub > 0 {
                    if sub & low != 0 {
                        if let (Some(x), Some(y)) = (&inp[sub], &inp[mask ^ sub]) {
                            let n = Node2 {
                                cost: x.cost + y.cost + isa.instrs[bi].cost,
                                count: x.count + y.count + 1,
                                pos: in_place.clone(),
                                expr: Expr::Blend(Box::new(x.clone()), Box::new(y.clone())),
                            };
                            if better(&cand, &n) {
                                cand = Some(n);
                            }
                        }
                    }
                    sub = (sub - 1) & mask;
                }
            }
            // Multi-source permutes of k partial registers.
            let members: Vec<usize> = (0..ns).filter(|i| mask >> i & 1 == 1).collect();
            for &pi in &perms {
                let k = isa.instrs[pi].arity;
                if k < 2 || members.len() < k {
                    continue;
                }
                for part in partitions(&members, k) {
                    let mut parts = Vec::with_capacity(k);
                    for blk in &part {
                        let m: usize = blk.iter().map(|i| 1 << i).sum();
                        let opts = [&any[m], &inp[m]];
                        let pick = opts.iter().filter_map(|o| o.as_ref()).min_by_key(|n| (n.cost, n.count));
                        match pick {
                            Some(n) => parts.push(n.clone()),
                            None => break,
                        }
                    }
                    if parts.len() != k {
                        continue;
                    }
                    let mut want: Vec<Sel> = vec![None; lanes];
                    for (oi, part) in parts.iter().enumerate() {
                        for &(lab, l) in &part.pos {
                            want[target(lab) as usize] = Some((oi as u8, l));
                        }
                    }
                    if isa.index_for(&isa.instrs[pi], &want, w).is_none() {
                        continue;
                    }
                    let n = Node2 {
                        cost: parts.iter().map(|x| x.cost).sum::<u32>() + isa.instrs[pi].cost,
                        count: parts.iter().map(|x| x.count).sum::<u32>() + 1,
                        pos: in_place.clone(),
                        expr: Expr::Perm(pi, parts),
                    };
                    if better(&cand, &n) {
                        cand = Some(n);
                    }
                }
            }
            inp[mask] = cand;
        }
        let root = inp[full].clone()?;
        outputs.push(b.realize(&root));
    }
    Some(Network {
        n_inputs: p.regs(),
        steps: b.steps,
        outputs,
        loads,
        stores,
    })
}

/// Turns expression trees into steps, sharing identical steps.
struct Builder<'a> {
    isa: &'a Isa,
    w: usize,
    vals: Vec<Vec<u32>>,
    n_inputs: usize,
    steps: Vec<Step>,
    memo: HashMap<Step, usize>,
}

impl<'a> Builder<'a> {
    fn new(isa: &'a Isa, w: usize, inputs: Vec<Vec<u32>>) -> Self {
        Builder {
            isa,
            w,
            n_inputs: inputs.len(),
            vals: inputs,
            steps: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn emit(&mut self, step: Step) -> usize {
        if let Some(&v) = self.memo.get(&step) {
            return v;
        }
        let instr = &self.isa.instrs[step.instr];
        let sel = self.isa.select_at(instr, &step.param, self.w).expect("valid selection");
        let out = sel
            .iter()
            .map(|s| match *s {
                None => ZERO,
                Some((o, l)) => self.vals[step.args[o as usize]][l as usize],
            })
            .collect();
        self.vals.push(out);
        self.steps.push(step.clone());
        let v = self.n_inputs + self.steps.len() - 1;
        self.memo.insert(step, v);
        v
    }

    fn realize(&mut self, n: &Node2) -> usize {
        let lanes = self.vals[0].len();
        match &n.expr {
            Expr::Raw(r) => *r,
            Expr::Blend(x, y) => {
                let (vx, vy) = (self.realize(x), self.realize(y));
                let mut from_b = vec![false; lanes];
                for &(_, l) in &y.pos {
                    from_b[l as usize] = true;
                }
                let bi = (0..self.isa.instrs.len())
                    .filter(|&i| self.isa.instrs[i].sem == Sem::Blend && self.w.is_multiple_of(self.isa.instrs[i].gran))
                    .min_by_key(|&i| self.isa.instrs[i].cost)
                    .unwrap();
                let param = self.isa.blend_mask(&self.isa.instrs[bi], &from_b, self.w).unwrap();
                self.emit(Step {
                    instr: bi,
                    param,
                    args: vec![vx, vy],
                })
            }
            Expr::Perm(pi, parts) => {
                let args: Vec<usize> = parts.iter().map(|x| self.realize(x)).collect();
                let mut want: Vec<Sel> = vec![None; lanes];
                for (oi, part) in parts.iter().enumerate() {
                    for (k, &(_, l)) in part.pos.iter().enumerate() {
                        let t = n.pos[n.pos.iter().position(|q| q.0 == part.pos[k].0).unwrap()].1;
                        want[t as usize] = Some((oi as u8, l));
                    }
                }
                let param = self.isa.index_for(&self.isa.instrs[*pi], &want, self.w).unwrap();
                self.emit(Step {
                    instr: *pi,
                    param,
                    args,
                })
            }
            Expr::Imm(ii, param, parts) => {
                let args: Vec<usize> = parts.iter().map(|x| self.realize(x)).collect();
                self.emit(Step {
                    instr: *ii,
                    param: param.clone(),
                    args,
                })
            }
        }
    }
}
