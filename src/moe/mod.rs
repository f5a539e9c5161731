//! Mixture-of-experts: routing, dispatch plan, token permutation and expert
//! execution (Qwen3-MoE, Qwen3-VL-MoE, Qwen3-Next).
//!
//! Every stage has a scalar reference (`*_reference`, f64 accumulation) and a
//! fast path with the same arguments; the tests hold one against the other.
//! Data flow of [`moe_block`]: `router_logits` → `route` (softmax, top-k with
//! ties to the lower index, renormalisation) → `plan_dispatch` (stable
//! counting sort by expert) → `permute_tokens` → per-expert GEMMs
//! (`run_experts`) → `unpermute_tokens` (weighted sum) → shared expert.

pub mod block;
pub mod cuda;
pub mod dispatch;
pub mod expert;
pub mod router;
pub mod tokens;
pub mod weights;

pub use block::{moe_block, moe_block_reference, run_experts, MoeOutput};
pub use dispatch::{plan_dispatch, plan_dispatch_reference, DispatchPlan};
pub use expert::{expert_ffn, expert_ffn_reference, ExpertRef, MatRef};
pub use router::{
    route, route_reference, router_logits, router_logits_reference, RouterConfig, MAX_EXPERTS, MAX_TOP_K,
};
pub use tokens::{permute_tokens, permute_tokens_reference, unpermute_tokens, unpermute_tokens_reference};
pub use weights::{ExpertLayout, MoeWeights, SharedExpert, TensorRef};
