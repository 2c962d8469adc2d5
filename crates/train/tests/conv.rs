//! The im2col convolution matches candle's own conv2d in value and in both gradients (on sizes
//! where candle's own backward is defined: it fails when the stride leaves a remainder).

use candle_core::{Device, Tensor, Var};

fn close(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn im2col_conv_matches_candle_with_gradients() {
    let dev = Device::Cpu;
    for (stride, pad) in [(1, 1), (2, 1), (1, 0), (2, 0)] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 7, 9), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 3, 3, 3), &dev).unwrap()).unwrap();
        let ours = train::conv::conv2d(x.as_tensor(), w.as_tensor(), stride, [pad; 4]).unwrap();
        let theirs = x
            .as_tensor()
            .conv2d(w.as_tensor(), pad, stride, 1, 1)
            .unwrap();
        assert!(close(&ours, &theirs) < 1e-4, "stride {stride} pad {pad}");
        let probe = Tensor::randn(0f32, 1.0, ours.dims(), &dev).unwrap();
        let g1 = (&ours * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&theirs * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w] {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(close(a, b) < 1e-3, "gradient, stride {stride} pad {pad}");
        }
    }
}
