//! Secure nonlinear functions (exp, reciprocal, rsqrt, sigmoid, tanh, SiLU, Mish, GeLU, softmax,
//! GroupNorm, LayerNorm) and their plaintext twins.
//!
//! Every function is one generic kernel over [`FxpOps`](ops::FxpOps), run either by the secure
//! engine (three parties on shares) or by the [`Twin`](twin::Twin) (same fixed-point arithmetic in
//! the clear, used by the `Approx` backend). Each function takes a method (an enum with
//! `FromStr`, so ablations can name it on the command line); the `Default` of each enum is our
//! best method. Each function's doc states its domain, what happens outside it, its error bound
//! and its cost in protocol calls; [`cost`] turns those calls into rounds and bytes.

mod error;
pub mod ops;
pub mod poly;
pub mod twin;

pub mod activations;
pub mod bench;
pub mod catalog;
pub mod cost;
pub mod exp;
pub mod norm;
pub mod reciprocal;
pub mod secure;
pub mod sigmoid;
pub mod softmax;

pub use error::NonlinearError;
pub use ops::{Coef, Fma, FxpOps, Threshold, POW2_GUARD_BITS, SCALED_MAX_FRAC_BITS};
pub use twin::Twin;

/// Declares a method enum with its command-line names, `FromStr`, `Display` and the list of all
/// methods (for benches and ablations).
macro_rules! methods {
    ($(#[$meta:meta])* $name:ident, $function:literal, default $default:ident,
     { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// `function:method`, the name of this method's `secdiff bench ops` entry.
            pub fn bench_name(self) -> &'static str {
                match self {
                    $($name::$variant => concat!($function, ":", $text)),+
                }
            }

            /// The command-line name.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every method once, the default first.
            pub fn all() -> Vec<$name> {
                let mut v = vec![$name::$default];
                $(if $name::$variant != $name::$default { v.push($name::$variant); })+
                v
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::nonlinear::NonlinearError;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                match s {
                    "default" => Ok($name::$default),
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::nonlinear::NonlinearError::UnknownMethod {
                        function: $function,
                        name: s.to_string(),
                        known: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}
pub(crate) use methods;
