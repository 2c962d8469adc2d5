//! Run-time SIMD selection without `target-cpu=native`: `simd_dispatch!` compiles a kernel's body
//! twice, for the baseline x86-64 target and for AVX2+FMA, and runs the AVX2 copy when the CPU
//! has those features. The bodies are plain loops that the compiler vectorises for each target,
//! so the binary runs on any x86-64 and uses 8-wide SIMD where it can. Inside a body, `Madd`
//! names how to compute a * b + c: fused in the AVX2+FMA copy, two operations in the other.

/// a * b + c: fused (one rounding, one instruction) where the CPU has FMA, two operations
/// elsewhere. Rust never fuses on its own, and `f32::mul_add` without FMA hardware is a slow
/// library call, so each compiled copy of a kernel picks its own.
pub(crate) trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

pub(crate) struct Fused;
pub(crate) struct Separate;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Defines a slice kernel that runs an AVX2+FMA-compiled copy of its body when the CPU has those
/// features, and the baseline-compiled body otherwise. The body sees `Madd` (a [`MulAdd`]).
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    #[allow(dead_code)]
                    type Madd = $crate::plain::simd::Fused;
                    $body
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[allow(dead_code)]
            type Madd = $crate::plain::simd::Separate;
            $body
        }
    };
}
