//! Which secure approximation each nonlinear op uses, and the input bounds promised to them.
//!
//! The `Mpc` backend and the `Approx` backend take the same [`Methods`], so an `Approx` run
//! predicts exactly what an `Mpc` run with the same methods computes (up to the secure
//! truncation's +-1 ulp). Methods travel in a job description as their command-line names.

use std::str::FromStr;

use mpc::nonlinear::activations::{GeluMethod, MishMethod, SiluMethod};
use mpc::nonlinear::catalog::{ACTIVATION_BOUND, SCORE_BOUND};
use mpc::nonlinear::norm::NormMethod;
use mpc::nonlinear::softmax::SoftmaxMethod;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Bound promised to DDIM's x0 clipping: |x0| before clipping stays below this. At the first
/// DDIM step x0 = (x - sqrt(1 - ab) eps) / sqrt(ab) is scaled by 1 / sqrt(ab_981) ~ 156, so a few
/// thousand is reachable; 2^14 leaves room.
pub const CLAMP_BOUND: f64 = 16384.0;

/// Resolution of the clamp's comparisons: a value within this of a clipping edge may be clipped
/// or not, which moves it by less than this.
pub const CLAMP_RESOLUTION: f64 = 1.0 / 4096.0;

/// SiLU: the library's methods, or `fine` ([`super::kernels::silu_fine`], the default: the
/// library's `ours` is cheaper but its 1.5e-3 error moves a DDIM-50 x_0 by up to 0.044).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silu {
    Fine,
    Library(SiluMethod),
}

impl Silu {
    pub fn name(&self) -> &'static str {
        match self {
            Silu::Fine => "fine",
            Silu::Library(m) => m.name(),
        }
    }
}

impl std::fmt::Display for Silu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Silu {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Silu, String> {
        match s {
            "fine" | "default" => Ok(Silu::Fine),
            other => other
                .parse::<SiluMethod>()
                .map(Silu::Library)
                .map_err(|e| format!("{e}, fine")),
        }
    }
}

/// Softmax: [`super::kernels::softmax_bounded`] (`bounded`: scores promised below
/// [`super::kernels::BOUNDED_SCORE_LIMIT`], no exp mask, normalisation fused into attention's
/// product with the values; the default for [`BOUNDED_SOFTMAX_MODELS`]) or one of the
/// library's methods (any score range up to `score_bound`, additive masks; the default `ours`
/// for every other model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Softmax {
    Bounded,
    Library(SoftmaxMethod),
}

impl Softmax {
    pub fn name(&self) -> &'static str {
        match self {
            Softmax::Bounded => "bounded",
            Softmax::Library(m) => m.name(),
        }
    }
}

impl std::fmt::Display for Softmax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Softmax {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Softmax, String> {
        match s {
            "bounded" => Ok(Softmax::Bounded),
            other => other
                .parse::<SoftmaxMethod>()
                .map(Softmax::Library)
                .map_err(|e| format!("{e}, bounded")),
        }
    }
}

/// Models whose attention scores were measured to keep `bounded`'s promise
/// (scripts/bench/score_range.py over DDIM-50 trajectories): [`Methods::for_model`] picks
/// `bounded` for them. Another model gets the library's `ours` until its scores are measured.
pub const BOUNDED_SOFTMAX_MODELS: &[&str] = &["cipherdm-mnist"];

/// The approximation methods and bounds of one run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Methods {
    pub silu: Silu,
    pub mish: MishMethod,
    pub gelu: GeluMethod,
    pub softmax: Softmax,
    pub norm: NormMethod,
    /// |x| < this for every SiLU/Mish/GeLU input.
    pub activation_bound: f64,
    /// |x| < this for every softmax input.
    pub score_bound: f64,
    /// |x| < this for every clamp input.
    pub clamp_bound: f64,
}

impl Default for Methods {
    fn default() -> Self {
        Methods {
            silu: Silu::Fine,
            mish: MishMethod::default(),
            gelu: GeluMethod::default(),
            softmax: Softmax::Library(SoftmaxMethod::Ours),
            norm: NormMethod::default(),
            activation_bound: ACTIVATION_BOUND,
            score_bound: SCORE_BOUND,
            clamp_bound: CLAMP_BOUND,
        }
    }
}

/// The wire and command-line form of [`Methods`]: names, not enums.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodNames {
    pub silu: String,
    pub mish: String,
    pub gelu: String,
    pub softmax: String,
    pub norm: String,
    pub activation_bound: f64,
    pub score_bound: f64,
    pub clamp_bound: f64,
}

fn parse<T: FromStr>(what: &str, name: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    name.parse()
        .map_err(|e: T::Err| Error::Config(format!("{what}: {e}")))
}

impl Methods {
    /// The defaults for the model `name` (a name under models/): `bounded` softmax where its
    /// promise was measured ([`BOUNDED_SOFTMAX_MODELS`]).
    pub fn for_model(name: &str) -> Methods {
        let mut m = Methods::default();
        if BOUNDED_SOFTMAX_MODELS.contains(&name) {
            m.softmax = Softmax::Bounded;
        }
        m
    }

    pub fn names(&self) -> MethodNames {
        MethodNames {
            silu: self.silu.name().into(),
            mish: self.mish.name().into(),
            gelu: self.gelu.name().into(),
            softmax: self.softmax.name().into(),
            norm: self.norm.name().into(),
            activation_bound: self.activation_bound,
            score_bound: self.score_bound,
            clamp_bound: self.clamp_bound,
        }
    }

    /// Checks every name and bound (bounds must be positive powers of two or at least finite
    /// and positive: they size the reduced-width comparisons).
    pub fn from_names(n: &MethodNames) -> Result<Methods> {
        for (what, b) in [
            ("activation_bound", n.activation_bound),
            ("score_bound", n.score_bound),
            ("clamp_bound", n.clamp_bound),
        ] {
            if !(b.is_finite() && b >= 1.0 && b <= 2f64.powi(40)) {
                return Err(Error::Config(format!(
                    "{what} must be in [1, 2^40], got {b}"
                )));
            }
        }
        Ok(Methods {
            silu: parse("silu", &n.silu)?,
            mish: parse("mish", &n.mish)?,
            gelu: parse("gelu", &n.gelu)?,
            softmax: parse("softmax", &n.softmax)?,
            norm: parse("norm", &n.norm)?,
            activation_bound: n.activation_bound,
            score_bound: n.score_bound,
            clamp_bound: n.clamp_bound,
        })
    }

    /// The library method softmax falls back to where `bounded` does not apply (causal masks).
    pub fn library_softmax(&self) -> SoftmaxMethod {
        match self.softmax {
            Softmax::Library(m) => m,
            Softmax::Bounded => SoftmaxMethod::Ours,
        }
    }

    /// One line for reports: `silu=ours softmax=ours norm=fused ...`.
    pub fn describe(&self) -> String {
        format!(
            "silu={} mish={} gelu={} softmax={} norm={}",
            self.silu, self.mish, self.gelu, self.softmax, self.norm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_named() {
        let m = Methods::default();
        assert_eq!(Methods::from_names(&m.names()).unwrap(), m);
        let mut n = m.names();
        n.silu = "cipherdm".into();
        assert_eq!(
            Methods::from_names(&n).unwrap().silu,
            Silu::Library(SiluMethod::Cipherdm)
        );
        n.softmax = "cipherdm".into();
        assert_eq!(
            Methods::from_names(&n).unwrap().softmax,
            Softmax::Library(SoftmaxMethod::Cipherdm)
        );
        assert_eq!(
            Methods::for_model("cipherdm-mnist").softmax,
            Softmax::Bounded
        );
        assert_eq!(Methods::for_model("mnist-sd").softmax, m.softmax);
        n.softmax = "nope".into();
        let e = Methods::from_names(&n).unwrap_err().to_string();
        assert!(e.contains("softmax") && e.contains("nope"), "{e}");
        let mut n = m.names();
        n.clamp_bound = f64::NAN;
        assert!(Methods::from_names(&n).is_err());
    }
}
