//! The DDPM U-Net family that CipherDM uses (its flax `UNet`), written once against `Backend`.
//!
//! Parameter names are the flax paths of CipherDM's checkpoint (`downs_3.AttentionBlock_0.to_qkv`,
//! `time_mlp.layers_1`, ...). The timestep is public and enters as sinusoidal features computed in
//! the clear; the class label enters as a one-hot tensor, so under MPC it stays secret.

mod blocks;
mod config;
mod embedding;

pub use blocks::{AttentionBlock, Conditioning, ResidualBlock, ResidualSpec};
pub use config::UNetConfig;
pub use embedding::{one_hot, timestep_features};

use crate::layers::Naming::Flax;
use crate::layers::{Activation, Conv2d, ConvTranspose2d, GroupNorm, Linear};
use crate::{Backend, ConvSpec, Error, ParamSource, Result};

enum DownBlock<B: Backend> {
    Residual(Box<ResidualBlock<B>>),
    Downsample(Conv2d<B>),
}

enum UpBlock<B: Backend> {
    /// Runs on concat([x, skip], channels).
    Residual(Box<ResidualBlock<B>>),
    Upsample(ConvTranspose2d<B>),
}

/// Where the U-Net is cut between a client that runs its first layers and a server that runs the
/// rest (HE mode): after the stem convolution and the first `down_blocks` blocks of the down path
/// (0: right after the stem).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPoint {
    pub down_blocks: usize,
}

pub struct UNet<B: Backend> {
    config: UNetConfig,
    time_mlp: (Linear<B>, Linear<B>),
    init_conv: Conv2d<B>,
    downs: Vec<DownBlock<B>>,
    mid: Vec<ResidualBlock<B>>,
    ups: Vec<UpBlock<B>>,
    out_norm: GroupNorm<B>,
    out_conv: Conv2d<B>,
}

impl<B: Backend> UNet<B> {
    /// Builds the model, asking `src` for every parameter (with its internal-layout shape).
    pub fn load(b: &B, config: &UNetConfig, src: &mut impl ParamSource<B>) -> Result<Self> {
        config.validate()?;
        let c = config;
        let base = c.base_channels;
        let spec = |cin: usize, cout: usize, attention: bool| ResidualSpec {
            in_channels: cin,
            out_channels: cout,
            time_emb_dim: c.time_emb_dim,
            num_classes: c.num_classes,
            groups: c.norm_groups,
            eps: c.norm_eps,
            attention,
            activation: c.activation,
        };
        let time_mlp = (
            Linear::load(
                b,
                src,
                Flax,
                "time_mlp.layers_1",
                (base, c.time_emb_dim),
                true,
            )?,
            Linear::load(
                b,
                src,
                Flax,
                "time_mlp.layers_3",
                (c.time_emb_dim, c.time_emb_dim),
                true,
            )?,
        );
        let init_conv = Conv2d::load(
            b,
            src,
            Flax,
            "init_conv",
            (c.img_channels, base),
            3,
            ConvSpec::same(1),
        )?;

        // Channel counts of the skip connections, in the order the down path produces them.
        let mut skips = vec![base];
        let mut now = base;
        let mut downs = Vec::new();
        for (level, &mult) in c.channel_mults.iter().enumerate() {
            let out = base * mult;
            let attention = c.attention_resolutions.contains(&level);
            for _ in 0..c.num_res_blocks {
                let prefix = format!("downs_{}", downs.len());
                downs.push(DownBlock::Residual(Box::new(ResidualBlock::load(
                    b,
                    src,
                    &prefix,
                    &spec(now, out, attention),
                )?)));
                now = out;
                skips.push(now);
            }
            if level + 1 != c.channel_mults.len() {
                let prefix = format!("downs_{}.Conv_0", downs.len());
                downs.push(DownBlock::Downsample(Conv2d::load(
                    b,
                    src,
                    Flax,
                    &prefix,
                    (now, now),
                    3,
                    ConvSpec::same(2),
                )?));
                skips.push(now);
            }
        }
        let mid = vec![
            ResidualBlock::load(b, src, "mid_0", &spec(now, now, true))?,
            ResidualBlock::load(b, src, "mid_1", &spec(now, now, false))?,
        ];
        let mut ups = Vec::new();
        for (level, &mult) in c.channel_mults.iter().enumerate().rev() {
            let out = base * mult;
            let attention = c.attention_resolutions.contains(&level);
            for _ in 0..=c.num_res_blocks {
                let skip = skips.pop().expect("one skip per down block plus the stem");
                let prefix = format!("ups_{}", ups.len());
                ups.push(UpBlock::Residual(Box::new(ResidualBlock::load(
                    b,
                    src,
                    &prefix,
                    &spec(now + skip, out, attention),
                )?)));
                now = out;
            }
            if level != 0 {
                let prefix = format!("ups_{}.ConvTranspose_0", ups.len());
                ups.push(UpBlock::Upsample(ConvTranspose2d::load(
                    b,
                    src,
                    Flax,
                    &prefix,
                    (now, now),
                    3,
                    ConvSpec::same(2),
                )?));
            }
        }
        debug_assert!(skips.is_empty());
        let out_norm = GroupNorm::load(b, src, Flax, "out_norm", now, c.norm_groups, c.norm_eps)?;
        let out_conv = Conv2d::load(
            b,
            src,
            Flax,
            "out_conv",
            (now, c.img_channels),
            3,
            ConvSpec::same(1),
        )?;
        Ok(UNet {
            config: c.clone(),
            time_mlp,
            init_conv,
            downs,
            mid,
            ups,
            out_norm,
            out_conv,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The predicted noise for images `x` (N, C, H, W) at public timesteps `t` (one per image),
    /// with one-hot class labels `y_onehot` (N, num_classes) if the model is class-conditional.
    pub fn forward(
        &self,
        b: &B,
        x: &B::Tensor,
        t: &[usize],
        y_onehot: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let split = SplitPoint { down_blocks: 0 };
        let activations = self.forward_head(b, x, t, y_onehot, split)?;
        self.forward_tail(b, activations, t, y_onehot, split)
    }

    /// The split points of this model, first to last (see [`SplitPoint`]).
    pub fn split_points(&self) -> Vec<SplitPoint> {
        (0..=self.downs.len())
            .map(|down_blocks| SplitPoint { down_blocks })
            .collect()
    }

    /// The layers before `split`: the stem convolution and the first `split.down_blocks` blocks
    /// of the down path. Returns every activation the rest of the network reads: the skip
    /// connections made so far, in order; the last one is also the current activation.
    pub fn forward_head(
        &self,
        b: &B,
        x: &B::Tensor,
        t: &[usize],
        y_onehot: Option<&B::Tensor>,
        split: SplitPoint,
    ) -> Result<Vec<B::Tensor>> {
        self.check_split(split)?;
        let c = &self.config;
        let shape = b.shape(x);
        let multiple = c.size_multiple();
        let valid = shape.len() == 4
            && shape[1] == c.img_channels
            && shape[2] > 0
            && shape[2] % multiple == 0
            && shape[3] > 0
            && shape[3] % multiple == 0;
        if !valid {
            return Err(Error::shape(
                "unet",
                format!(
                    "input {shape:?} must be (N, {}, H, W) with H and W multiples of {multiple}",
                    c.img_channels
                ),
            ));
        }
        let mut skips = vec![self.init_conv.forward(b, x)?];
        if split.down_blocks > 0 {
            let cond = self.conditioning(b, shape[0], t, y_onehot)?;
            for block in &self.downs[..split.down_blocks] {
                let h = skips.last().expect("the stem's output");
                skips.push(self.down(b, block, h, &cond)?);
            }
        }
        Ok(skips)
    }

    /// The layers after `split`, from the activations [`UNet::forward_head`] returned: the
    /// predicted noise.
    pub fn forward_tail(
        &self,
        b: &B,
        activations: Vec<B::Tensor>,
        t: &[usize],
        y_onehot: Option<&B::Tensor>,
        split: SplitPoint,
    ) -> Result<B::Tensor> {
        self.check_split(split)?;
        let mut skips = activations;
        if skips.len() != split.down_blocks + 1 {
            return Err(Error::shape(
                "unet tail",
                format!(
                    "{} activations at split point {split:?}, expected {}",
                    skips.len(),
                    split.down_blocks + 1
                ),
            ));
        }
        let n = b.shape(&skips[0]).first().copied().unwrap_or(0);
        let cond = self.conditioning(b, n, t, y_onehot)?;
        let mut h = skips.last().expect("at least the stem's output").clone();
        for block in &self.downs[split.down_blocks..] {
            h = self.down(b, block, &h, &cond)?;
            skips.push(h.clone());
        }
        for block in &self.mid {
            h = block.forward(b, &h, &cond)?;
        }
        for block in &self.ups {
            h = match block {
                UpBlock::Residual(r) => {
                    let skip = skips.pop().expect("as many skips as residual up blocks");
                    r.forward(b, &b.concat(&[&h, &skip], 1)?, &cond)?
                }
                UpBlock::Upsample(conv) => conv.forward(b, &h)?,
            };
        }
        let h = self
            .config
            .activation
            .forward(b, &self.out_norm.forward(b, &h)?)?;
        self.out_conv.forward(b, &h)
    }

    fn check_split(&self, split: SplitPoint) -> Result<()> {
        if split.down_blocks > self.downs.len() {
            return Err(Error::Config(format!(
                "split point after {} down blocks, but the model has {}",
                split.down_blocks,
                self.downs.len()
            )));
        }
        Ok(())
    }

    fn down(
        &self,
        b: &B,
        block: &DownBlock<B>,
        h: &B::Tensor,
        cond: &Conditioning<'_, B>,
    ) -> Result<B::Tensor> {
        match block {
            DownBlock::Residual(r) => r.forward(b, h, cond),
            DownBlock::Downsample(conv) => conv.forward(b, h),
        }
    }

    /// The time embedding and labels every residual block reads, after checking them against a
    /// batch of `n`.
    fn conditioning<'a>(
        &self,
        b: &B,
        n: usize,
        t: &[usize],
        y_onehot: Option<&'a B::Tensor>,
    ) -> Result<Conditioning<'a, B>> {
        let c = &self.config;
        if t.len() != n {
            return Err(Error::shape(
                "unet",
                format!("{} timesteps for a batch of {n}", t.len()),
            ));
        }
        match (c.num_classes, y_onehot) {
            (Some(k), Some(y)) if b.shape(y) == [n, k] => {}
            (Some(k), Some(y)) => {
                return Err(Error::shape(
                    "unet",
                    format!("labels have shape {:?}, expected [{n}, {k}]", b.shape(y)),
                ))
            }
            (Some(_), None) => {
                return Err(Error::shape(
                    "unet",
                    "the model is class-conditional: labels needed",
                ))
            }
            (None, Some(_)) => {
                return Err(Error::shape(
                    "unet",
                    "the model is unconditional: no labels allowed",
                ))
            }
            (None, None) => {}
        }
        let features = timestep_features(t, c.base_channels, c.time_emb_scale);
        let temb = b.public(&[n, c.base_channels], &features)?;
        let temb = self.time_mlp.0.forward(b, &temb)?;
        let temb = self.time_mlp.1.forward(b, &b.silu(&temb)?)?;
        // Every residual block applies the block activation to the embedding first.
        Ok(Conditioning {
            time: c.activation.forward(b, &temb)?,
            labels: y_onehot,
        })
    }

    /// A one-screen description of the architecture.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let levels: Vec<String> = c
            .channel_mults
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "level {i}: {} channels, {} res blocks down / {} up{}",
                    c.base_channels * m,
                    c.num_res_blocks,
                    c.num_res_blocks + 1,
                    if c.attention_resolutions.contains(&i) {
                        ", self-attention"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        format!(
            "U-Net (CipherDM/flax family): {} image channel(s), base {} channels\n  {}\n  middle: 2 res blocks ({} channels), the first with self-attention\n  GroupNorm {} groups (eps {:e}), activation {}, time embedding {} -> {}, {}",
            c.img_channels,
            c.base_channels,
            levels.join("\n  "),
            c.base_channels * c.channel_mults.last().copied().unwrap_or(1),
            c.norm_groups,
            c.norm_eps,
            match c.activation {
                Activation::Silu => "SiLU",
                Activation::Mish => "Mish",
            },
            c.base_channels,
            c.time_emb_dim,
            match c.num_classes {
                Some(k) => format!("class-conditional ({k} classes)"),
                None => "unconditional".to_string(),
            }
        )
    }
}
