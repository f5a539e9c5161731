//! Code generator for vlkernels' SIMD permutation micro-kernels (see issue: codegen).
