//! A small CKKS interface over Microsoft SEAL (through `sealy`): parameter presets, client keys,
//! packing of f64 vectors into ciphertexts, the two operations HE-Diffusion's server needs
//! (ciphertext * public scalar, ciphertext + plaintext) and serialisation with validation.
//!
//! Scales. sealy exposes no rescale for CKKS, so we never rescale: a fresh ciphertext is at scale
//! D (the preset's scale), ciphertext * scalar is at D^2, and a plaintext added to it is encoded
//! directly at D^2 (the "encode at the product scale" option). The modulus of every preset leaves
//! room for D^2 times the largest latent value; a second multiplication would need a rescale and is
//! refused with `Error::ScaleMismatch`. Each vector records its scale power (1 or 2).
//!
//! What leaves the client: [`CkksParams`] (degree, primes, scale: all the server needs to build a
//! matching SEAL context) and ciphertexts. The server never needs the public key (it adds
//! plaintexts rather than encrypting) and the secret key never leaves [`ClientKeys`].
//!
//! What SEAL cannot tell us: a ciphertext made with another key under the same parameters loads and
//! decrypts to garbage. Vectors therefore carry the id of the key they were encrypted under (a hash
//! of the public key), and decryption also rejects values no latent can have
//! ([`PLAUSIBLE_LIMIT`]); CKKS has no integrity, so a server that forges the id and keeps values
//! small is out of scope (semi-honest server).

use std::fmt;
use std::sync::Arc;

use sealy::{
    AsymmetricEncryptor, CKKSEncoder, CKKSEncryptionParametersBuilder, CKKSEvaluator, Ciphertext,
    CoefficientModulusFactory, Context, Decryptor, DegreeType, Encryptor, Evaluator, FromBytes,
    KeyGenerator, Modulus, SecurityLevel, ToBytes,
};
use sha2::{Digest, Sha256};

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};

/// Decrypted values beyond this magnitude mean a wrong key or a damaged ciphertext: latents and
/// noise predictions are O(1) and a wrong-key decryption is uniform modulo q / scale.
pub const PLAUSIBLE_LIMIT: f64 = 1e6;

/// The named parameter sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// HE-Diffusion's released parameters: N = 8192, moduli [31, 26 x 6, 31], scale 2^26.
    HeDiff,
    /// More precision for the same degree: N = 8192, moduli [60, 40, 40, 60], scale 2^40.
    Precise,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::HeDiff, Preset::Precise];

    pub fn name(self) -> &'static str {
        match self {
            Preset::HeDiff => "hediff",
            Preset::Precise => "precise",
        }
    }

    pub fn parse(name: &str) -> Result<Preset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                Error::Parameters(format!(
                    "unknown CKKS preset `{name}` (known: hediff, precise)"
                ))
            })
    }

    fn spec(self) -> (DegreeType, &'static [i32], u32) {
        match self {
            Preset::HeDiff => (DegreeType::D8192, &[31, 26, 26, 26, 26, 26, 26, 31], 26),
            Preset::Precise => (DegreeType::D8192, &[60, 40, 40, 60], 40),
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The public CKKS parameters: everything the server needs to build the client's SEAL context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CkksParams {
    pub poly_degree: u64,
    /// The coefficient-modulus primes; the last is SEAL's special (key-switching) prime.
    pub moduli: Vec<u64>,
    /// The encoding scale is 2^scale_bits.
    pub scale_bits: u32,
}

const PARAMS_MAGIC: &[u8; 4] = b"SDCP";
const PARAMS_VERSION: u16 = 1;
const VECTOR_MAGIC: &[u8; 4] = b"SDCV";
const VECTOR_VERSION: u16 = 1;
/// Headroom in bits kept above D^2 for the values themselves (|v| < 2^8 with margin for noise).
const VALUE_HEADROOM_BITS: u32 = 10;

impl CkksParams {
    pub fn preset(preset: Preset) -> Result<CkksParams> {
        let (degree, bits, scale_bits) = preset.spec();
        let moduli = CoefficientModulusFactory::build(degree, bits)
            .map_err(Error::seal("CoeffModulus::Create"))?;
        let params = CkksParams {
            poly_degree: u64::from(degree),
            moduli: moduli.iter().map(Modulus::value).collect(),
            scale_bits,
        };
        params.validate()?;
        Ok(params)
    }

    pub fn scale(&self) -> f64 {
        2f64.powi(self.scale_bits as i32)
    }

    /// Number of f64 slots in one ciphertext (N / 2).
    pub fn slots(&self) -> usize {
        (self.poly_degree / 2) as usize
    }

    /// Bits of the data modulus (all primes but the special one): the budget for D^2 * |v|.
    pub fn data_modulus_bits(&self) -> u32 {
        self.moduli[..self.moduli.len() - 1]
            .iter()
            .map(|q| 64 - q.leading_zeros())
            .sum()
    }

    /// A short identifier of the parameter set (first 8 bytes of SHA-256 of its encoding).
    pub fn fingerprint(&self) -> u64 {
        let digest = Sha256::digest(self.to_bytes());
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    /// Checks what SEAL does not (or checks only by throwing deep inside): sizes we accept and a
    /// modulus large enough for the product scale we use instead of rescaling.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Parameters(m));
        if DegreeType::try_from(self.poly_degree).is_err() || self.poly_degree < 1024 {
            return bad(format!(
                "polynomial degree {} is not a power of two in 1024..=32768",
                self.poly_degree
            ));
        }
        if !(2..=16).contains(&self.moduli.len()) {
            return bad(format!(
                "{} coefficient moduli (need 2..=16)",
                self.moduli.len()
            ));
        }
        for &q in &self.moduli {
            if q % 2 == 0 || !((1 << 16)..(1 << 61)).contains(&q) {
                return bad(format!(
                    "coefficient modulus {q} is not an odd prime of 17..=61 bits"
                ));
            }
        }
        if !(16..=60).contains(&self.scale_bits) {
            return bad(format!("scale 2^{} outside 2^16..=2^60", self.scale_bits));
        }
        let need = 2 * self.scale_bits + VALUE_HEADROOM_BITS;
        if self.data_modulus_bits() < need {
            return bad(format!(
                "data modulus of {} bits cannot hold products at scale 2^{} (needs {need} bits)",
                self.data_modulus_bits(),
                2 * self.scale_bits
            ));
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(PARAMS_MAGIC)
            .u16(PARAMS_VERSION)
            .u64(self.poly_degree)
            .u32(self.scale_bits)
            .u32(self.moduli.len() as u32);
        for &q in &self.moduli {
            w.u64(q);
        }
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<CkksParams> {
        let mut r = Reader::new(bytes, "CKKS parameters");
        r.header(PARAMS_MAGIC, PARAMS_VERSION)?;
        let poly_degree = r.u64()?;
        let scale_bits = r.u32()?;
        let count = r.u32()? as usize;
        if count > 16 {
            return Err(Error::Parameters(format!("{count} coefficient moduli")));
        }
        let moduli = (0..count).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
        r.finish()?;
        let params = CkksParams {
            poly_degree,
            moduli,
            scale_bits,
        };
        params.validate()?;
        Ok(params)
    }
}

/// The id of a client key: the first 16 bytes of SHA-256 of its serialised public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyId(pub [u8; 16]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("..")
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How values are laid out in ciphertexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// As many values per ciphertext as there are slots (HE-Diffusion's packed forms).
    Dense,
    /// One value per ciphertext (the paper's "non-optimised" baseline).
    OnePerCiphertext,
}

/// A SEAL context for one parameter set, with the encoders and evaluator the operations need.
/// Shared (behind an `Arc`) by the client's keys and by the server.
pub struct CkksContext {
    params: CkksParams,
    fingerprint: u64,
    // Field order matters for drop order: SEAL objects before the context they point into.
    encoders: [CKKSEncoder; 2],
    evaluator: CKKSEvaluator,
    seal: Context,
}

impl CkksContext {
    pub fn new(params: CkksParams) -> Result<Arc<CkksContext>> {
        params.validate()?;
        let degree = DegreeType::try_from(params.poly_degree)
            .map_err(|_| Error::Parameters(format!("degree {}", params.poly_degree)))?;
        let moduli = params
            .moduli
            .iter()
            .map(|&q| Modulus::new(q))
            .collect::<sealy::Result<Vec<_>>>()
            .map_err(|e| Error::Parameters(format!("coefficient modulus rejected by SEAL: {e}")))?;
        let seal_params = CKKSEncryptionParametersBuilder::new()
            .set_poly_modulus_degree(degree)
            .set_coefficient_modulus(moduli)
            .build()
            .map_err(|e| Error::Parameters(format!("SEAL rejected the parameters: {e}")))?;
        let seal = Context::new(&seal_params, true, SecurityLevel::TC128)
            .map_err(|e| Error::Parameters(format!("SEAL rejected the parameters: {e}")))?;
        // SEAL builds a context even for invalid parameters and only throws when it is used; the
        // encoder is the first user, so its failure means "parameters not valid / not secure".
        let invalid = |e: sealy::Error| {
            Error::Parameters(format!(
                "SEAL does not accept N={} with moduli {:?} at 128-bit security ({e})",
                params.poly_degree, params.moduli
            ))
        };
        let scale = params.scale();
        let encoders = [
            CKKSEncoder::new(&seal, scale).map_err(invalid)?,
            CKKSEncoder::new(&seal, scale * scale).map_err(invalid)?,
        ];
        let evaluator = CKKSEvaluator::new(&seal).map_err(invalid)?;
        if encoders[0].get_slot_count() != params.slots() {
            return Err(Error::Parameters("unexpected slot count".into()));
        }
        Ok(Arc::new(CkksContext {
            fingerprint: params.fingerprint(),
            params,
            encoders,
            evaluator,
            seal,
        }))
    }

    pub fn from_preset(preset: Preset) -> Result<Arc<CkksContext>> {
        CkksContext::new(CkksParams::preset(preset)?)
    }

    pub fn params(&self) -> &CkksParams {
        &self.params
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    pub fn slots(&self) -> usize {
        self.params.slots()
    }

    /// Largest serialised size of one ciphertext: two polynomials of N coefficients per prime,
    /// plus SEAL's header and metadata and the compressor's worst-case expansion.
    fn max_ciphertext_bytes(&self) -> usize {
        let raw = 2 * self.params.poly_degree as usize * self.params.moduli.len() * 8;
        raw + raw / 64 + 4096
    }

    fn encoder(&self, scale_power: u8) -> Result<&CKKSEncoder> {
        match scale_power {
            1 | 2 => Ok(&self.encoders[scale_power as usize - 1]),
            p => Err(Error::ScaleMismatch {
                op: "encode",
                detail: format!("no encoder for scale D^{p}"),
            }),
        }
    }

    /// `a * x` for a public scalar `a`: the result is at scale D^2.
    pub fn mul_scalar(&self, x: &EncryptedVector, a: f64) -> Result<EncryptedVector> {
        self.check_own(x)?;
        if x.scale_power != 1 {
            return Err(Error::ScaleMismatch {
                op: "ciphertext * scalar",
                detail: format!(
                    "input is at scale D^{}; a further product needs a rescale, which this \
                     interface does not do",
                    x.scale_power
                ),
            });
        }
        if !a.is_finite() {
            return Err(Error::Other(format!("scalar {a} is not finite")));
        }
        let scalar = self.encoders[0]
            .encode_f64(&vec![a; self.slots()])
            .map_err(Error::seal("encode scalar"))?;
        let cts = x
            .cts
            .iter()
            .map(|ct| self.evaluator.multiply_plain(ct, &scalar))
            .collect::<sealy::Result<Vec<_>>>()
            .map_err(Error::seal("multiply_plain"))?;
        Ok(EncryptedVector {
            scale_power: 2,
            cts,
            ..x.clone_meta()
        })
    }

    /// `x + p` for plaintext values `p` (one per value of `x`), encoded at `x`'s scale.
    pub fn add_plain(&self, x: &EncryptedVector, p: &[f64]) -> Result<EncryptedVector> {
        self.check_own(x)?;
        if p.len() != x.len {
            return Err(Error::shape(
                "ciphertext + plaintext",
                format!("{} encrypted values, {} plaintext values", x.len, p.len()),
            ));
        }
        if let Some(v) = p.iter().find(|v| !v.is_finite()) {
            return Err(Error::Other(format!("plaintext value {v} is not finite")));
        }
        let encoder = self.encoder(x.scale_power)?;
        let cts = x
            .cts
            .iter()
            .zip(p.chunks(x.per_ct.max(1)))
            .map(|(ct, chunk)| {
                let plain = encoder.encode_f64(chunk)?;
                self.evaluator.add_plain(ct, &plain)
            })
            .collect::<sealy::Result<Vec<_>>>()
            .map_err(Error::seal("add_plain"))?;
        Ok(EncryptedVector {
            cts,
            ..x.clone_meta()
        })
    }

    /// `a * x + p`: the whole HE-Diffusion server update of the encrypted part.
    pub fn affine(&self, x: &EncryptedVector, a: f64, p: &[f64]) -> Result<EncryptedVector> {
        self.add_plain(&self.mul_scalar(x, a)?, p)
    }

    fn check_own(&self, x: &EncryptedVector) -> Result<()> {
        if x.params_fingerprint != self.fingerprint {
            return Err(Error::ParameterMismatch {
                expected: self.fingerprint,
                found: x.params_fingerprint,
            });
        }
        Ok(())
    }

    /// Reads a vector written by [`EncryptedVector::to_bytes`], validating every size and the
    /// checksum before SEAL sees the bytes.
    pub fn load_vector(&self, bytes: &[u8]) -> Result<EncryptedVector> {
        const WHAT: &str = "encrypted vector";
        // CKKS has no integrity: a flipped low bit would decrypt to a slightly wrong value without
        // any error. A digest over the whole vector turns accidental damage into an error.
        if bytes.len() < 32 {
            return Err(Error::Truncated {
                what: WHAT,
                needed: 32,
                got: bytes.len(),
            });
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        let mut r = Reader::new(body, WHAT);
        r.header(VECTOR_MAGIC, VECTOR_VERSION)?;
        let params_fingerprint = r.u64()?;
        if params_fingerprint != self.fingerprint {
            return Err(Error::ParameterMismatch {
                expected: self.fingerprint,
                found: params_fingerprint,
            });
        }
        let mut key_id = KeyId::default();
        key_id.0.copy_from_slice(r.take(16)?);
        let len = usize::try_from(r.u64()?).map_err(|_| r.corrupt("length overflows"))?;
        let per_ct = usize::try_from(r.u64()?).map_err(|_| r.corrupt("packing overflows"))?;
        let scale_power = r.u8()?;
        let count = r.u32()? as usize;
        if per_ct == 0 || per_ct > self.slots() {
            return Err(r.corrupt(format!(
                "{per_ct} values per ciphertext (slots: {})",
                self.slots()
            )));
        }
        if count != len.div_ceil(per_ct) {
            return Err(r.corrupt(format!(
                "{count} ciphertexts for {len} values at {per_ct} per ciphertext"
            )));
        }
        if !(1..=2).contains(&scale_power) {
            return Err(r.corrupt(format!("scale power {scale_power}")));
        }
        // Each ciphertext needs at least its length word; checking up front bounds the allocation.
        if count > r.remaining() / 4 {
            return Err(Error::Truncated {
                what: WHAT,
                needed: count * 4,
                got: bytes.len(),
            });
        }
        let mut blobs = Vec::with_capacity(count);
        for i in 0..count {
            let n = r.u32()? as usize;
            if n > self.max_ciphertext_bytes() {
                return Err(r.corrupt(format!(
                    "ciphertext {i} claims {n} bytes, more than any ciphertext of these parameters"
                )));
            }
            let blob = r.take(n)?;
            blobs.push(blob);
        }
        r.finish()?;
        if Sha256::digest(body).as_slice() != digest {
            return Err(Error::corrupt(
                WHAT,
                "checksum mismatch: the bytes were damaged in transit or storage",
            ));
        }
        let cts = blobs
            .into_iter()
            .enumerate()
            .map(|(i, blob)| self.load_ciphertext(blob, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(EncryptedVector {
            params_fingerprint,
            key_id,
            len,
            per_ct,
            scale_power,
            cts,
        })
    }

    /// One SEAL ciphertext: check SEAL's 16-byte header ourselves (precise errors for truncation
    /// and garbage), let SEAL load and validate the rest, then check it is a fresh-size ciphertext
    /// at the top level of this context.
    fn load_ciphertext(&self, blob: &[u8], index: usize) -> Result<Ciphertext> {
        const WHAT: &str = "SEAL ciphertext";
        let mut r = Reader::new(blob, WHAT);
        let magic = r.u16()?;
        let header_size = r.u8()?;
        let (major, _minor) = (r.u8()?, r.u8()?);
        let compression = r.u8()?;
        let _reserved = r.u16()?;
        let size = r.u64()?;
        if magic != 0xA15E || header_size != 16 {
            return Err(Error::corrupt(
                WHAT,
                format!("ciphertext {index}: not a SEAL object (magic {magic:#06x})"),
            ));
        }
        if major != 4 || compression > 2 {
            return Err(Error::corrupt(
                WHAT,
                format!(
                    "ciphertext {index}: SEAL version {major} / compression {compression} not \
                     supported"
                ),
            ));
        }
        if size != blob.len() as u64 {
            return Err(if size > blob.len() as u64 {
                Error::Truncated {
                    what: WHAT,
                    needed: size.min(usize::MAX as u64) as usize,
                    got: blob.len(),
                }
            } else {
                Error::corrupt(
                    WHAT,
                    format!(
                        "ciphertext {index}: header says {size} bytes, blob has {}",
                        blob.len()
                    ),
                )
            });
        }
        let ct = Ciphertext::from_bytes(&self.seal, blob).map_err(|e| {
            Error::corrupt(
                WHAT,
                format!("ciphertext {index}: SEAL rejected it ({e}): damaged or not made for these parameters"),
            )
        })?;
        let levels = self.params.moduli.len() as u64 - 1;
        if ct.num_polynomials() != 2 || ct.coeff_modulus_size() != levels {
            return Err(Error::corrupt(
                WHAT,
                format!(
                    "ciphertext {index}: {} polynomials at {} primes, expected 2 at {levels}",
                    ct.num_polynomials(),
                    ct.coeff_modulus_size()
                ),
            ));
        }
        Ok(ct)
    }
}

/// A vector of f64 values encrypted into one or more CKKS ciphertexts.
pub struct EncryptedVector {
    params_fingerprint: u64,
    key_id: KeyId,
    len: usize,
    per_ct: usize,
    scale_power: u8,
    cts: Vec<Ciphertext>,
}

impl EncryptedVector {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ciphertext_count(&self) -> usize {
        self.cts.len()
    }
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// 1 for a fresh encryption (scale D), 2 after a multiplication by a scalar (D^2).
    pub fn scale_power(&self) -> u8 {
        self.scale_power
    }

    fn clone_meta(&self) -> EncryptedVector {
        EncryptedVector {
            params_fingerprint: self.params_fingerprint,
            key_id: self.key_id,
            len: self.len,
            per_ct: self.per_ct,
            scale_power: self.scale_power,
            cts: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.raw(VECTOR_MAGIC)
            .u16(VECTOR_VERSION)
            .u64(self.params_fingerprint)
            .raw(&self.key_id.0)
            .u64(self.len as u64)
            .u64(self.per_ct as u64)
            .u8(self.scale_power)
            .u32(self.cts.len() as u32);
        for ct in &self.cts {
            let blob = ct.as_bytes().map_err(Error::seal("Ciphertext::save"))?;
            w.u32(blob.len() as u32).raw(&blob);
        }
        let digest = Sha256::digest(&w.buf);
        w.raw(&digest);
        Ok(w.finish())
    }
}

/// The client's keys. The secret key stays inside (in the decryptor); nothing here serialises it.
pub struct ClientKeys {
    key_id: KeyId,
    encryptor: AsymmetricEncryptor,
    decryptor: Decryptor,
    ctx: Arc<CkksContext>,
}

impl ClientKeys {
    pub fn generate(ctx: &Arc<CkksContext>) -> Result<ClientKeys> {
        let keygen = KeyGenerator::new(&ctx.seal).map_err(Error::seal("KeyGenerator"))?;
        let public = keygen.create_public_key();
        let secret = keygen.secret_key();
        let public_bytes = public.as_bytes().map_err(Error::seal("PublicKey::save"))?;
        let mut key_id = KeyId::default();
        key_id
            .0
            .copy_from_slice(&Sha256::digest(&public_bytes)[..16]);
        Ok(ClientKeys {
            key_id,
            encryptor: Encryptor::with_public_key(&ctx.seal, &public)
                .map_err(Error::seal("Encryptor"))?,
            decryptor: Decryptor::new(&ctx.seal, &secret).map_err(Error::seal("Decryptor"))?,
            ctx: ctx.clone(),
        })
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }

    /// Encrypts `values` at scale D, fresh randomness per ciphertext.
    pub fn encrypt(&self, values: &[f64], packing: Packing) -> Result<EncryptedVector> {
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            return Err(Error::Other(format!("cannot encrypt non-finite value {v}")));
        }
        let per_ct = match packing {
            Packing::Dense => self.ctx.slots(),
            Packing::OnePerCiphertext => 1,
        };
        let cts = values
            .chunks(per_ct)
            .map(|chunk| {
                let plain = self.ctx.encoders[0].encode_f64(chunk)?;
                self.encryptor.encrypt(&plain)
            })
            .collect::<sealy::Result<Vec<_>>>()
            .map_err(Error::seal("encrypt"))?;
        Ok(EncryptedVector {
            params_fingerprint: self.ctx.fingerprint,
            key_id: self.key_id,
            len: values.len(),
            per_ct,
            scale_power: 1,
            cts,
        })
    }

    /// Decrypts and decodes, after checking the vector belongs to this key and parameter set.
    pub fn decrypt(&self, x: &EncryptedVector) -> Result<Vec<f64>> {
        self.ctx.check_own(x)?;
        if x.key_id != self.key_id {
            return Err(Error::ForeignKey {
                expected: self.key_id.to_string(),
                found: x.key_id.to_string(),
            });
        }
        let mut out = Vec::with_capacity(x.len);
        for ct in &x.cts {
            let plain = self.decryptor.decrypt(ct).map_err(Error::seal("decrypt"))?;
            let decoded = self.ctx.encoders[0]
                .decode_f64(&plain)
                .map_err(Error::seal("decode"))?;
            let take = x.per_ct.min(x.len - out.len());
            out.extend_from_slice(&decoded[..take.min(decoded.len())]);
        }
        if out.len() != x.len {
            return Err(Error::shape(
                "decrypt",
                format!("{} values decoded, {} expected", out.len(), x.len),
            ));
        }
        // `f64::max` skips NaN, so finiteness is tested separately.
        let max_abs = out.iter().fold(0f64, |m, v| m.max(v.abs()));
        if max_abs > PLAUSIBLE_LIMIT || out.iter().any(|v| !v.is_finite()) {
            return Err(Error::Implausible { max_abs });
        }
        Ok(out)
    }
}
