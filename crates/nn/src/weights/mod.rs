//! Model weights: safetensors files, the flax-layout parameter source, and a recording source
//! that lists what a model asks for (names, shapes, parameter count).

mod file;
mod flax;
mod record;

pub use file::{f32_tensors_to_bytes, write_atomic, write_f32_tensors, TensorFile};
pub use flax::FlaxParams;
pub use record::{ParamRecord, Recording, ZeroParams};
