//! Run-time SIMD selection without `target-cpu=native`: `simd_dispatch!` compiles a kernel's body
//! twice, for the baseline x86-64 target and for AVX2+FMA, and runs the AVX2 copy when the CPU
//! has those features. The bodies are plain loops that the compiler vectorises for each target,
//! so the binary runs on any x86-64 and uses 8-wide SIMD where it can.

/// Defines a slice kernel that runs an AVX2+FMA-compiled copy of its body when the CPU has those
/// features, and the baseline-compiled body otherwise.
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $body
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body
        }
    };
}
