//! The same party code over real loopback TCP (the transport of `secdiff party`) gives
//! bit-identical shares to the in-memory runner, with the same metered costs; and a party that
//! dies mid-protocol makes the other two fail with an error that names it.

use mpc::{
    deal, run_local, run_with, AShare, FixedConfig, OutputShare, Party, SharedTransport,
    TruncMethod,
};
use net::{MeshOptions, TcpMesh, Transport};
use rand::SeedableRng;
use ring::{FixedPoint, RingTensor};
use std::time::Duration;

fn workload(
    p: &Party,
    x: &AShare,
    y: &AShare,
) -> mpc::Result<(OutputShare, OutputShare, Vec<u64>, u64)> {
    p.meter().reset();
    let m = p.mul(x, y)?;
    let r = p.relu(&m)?;
    let lt = p.less_than(x, y)?;
    let bytes = p.meter().total().bytes;
    Ok((
        OutputShare::of(&m),
        OutputShare::of(&r),
        lt.mine().to_vec(),
        bytes,
    ))
}

#[test]
fn tcp_and_in_memory_runs_agree_bit_for_bit() {
    let fp = FixedPoint::new(18);
    let n = 5000;
    let xs: Vec<f64> = (0..n)
        .map(|i| ((i * 37) % 101) as f64 / 7.0 - 7.0)
        .collect();
    let ys: Vec<f64> = (0..n).map(|i| ((i * 53) % 97) as f64 / 9.0 - 5.0).collect();
    let x = RingTensor::new(&[n], fp.encode_slice(&xs).unwrap()).unwrap();
    let y = RingTensor::new(&[n], fp.encode_slice(&ys).unwrap()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (dx, dy) = (deal(&x, &mut rng), deal(&y, &mut rng));
    let cfg = FixedConfig::new(18, TruncMethod::Robust);
    let f = |p: &Party| {
        let id = p.id();
        workload(
            p,
            &dx[id].clone().into_share(id)?,
            &dy[id].clone().into_share(id)?,
        )
    };
    let local = run_local(cfg, Some(9), f).unwrap();
    let meshes = TcpMesh::loopback(&MeshOptions::default()).unwrap();
    let nets: Vec<Box<dyn Transport>> = meshes
        .into_iter()
        .map(|m| Box::new(m) as Box<dyn Transport>)
        .collect();
    let tcp = run_with(nets, cfg, Some(9), f).unwrap();
    for i in 0..3 {
        assert_eq!(local[i].0, tcp[i].0, "mul shares of P{i}");
        assert_eq!(local[i].1, tcp[i].1, "relu shares of P{i}");
        assert_eq!(local[i].2, tcp[i].2, "comparison shares of P{i}");
        assert_eq!(local[i].3, tcp[i].3, "bytes of P{i}");
    }
    let m = mpc::reconstruct(&[local[0].0.clone(), local[1].0.clone()]).unwrap();
    for i in 0..n {
        assert!((fp.decode(m.data()[i]) - xs[i] * ys[i]).abs() < 1e-4);
    }
}

#[test]
fn a_party_dying_mid_protocol_is_named_by_the_others() {
    let opts = MeshOptions {
        recv_timeout: Duration::from_secs(3),
        ..MeshOptions::default()
    };
    let meshes = TcpMesh::loopback(&opts).unwrap();
    let cfg = FixedConfig::new(18, TruncMethod::Fast);
    let results: Vec<mpc::Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = meshes
            .into_iter()
            .map(|m| {
                s.spawn(move || -> mpc::Result<()> {
                    let id = m.id();
                    let mesh = std::sync::Arc::new(m);
                    let p = Party::setup(Box::new(SharedTransport(mesh.clone())), cfg)?;
                    // What `secdiff party` does on a failure: tell the others why, then stop.
                    let fail = |e: mpc::MpcError| {
                        mesh.abort(&e.to_string());
                        e
                    };
                    let x = AShare::zeros(id, &[1000]);
                    p.mul(&x, &x).map_err(fail)?;
                    if id == 1 {
                        // P1 stops answering: no goodbye, its sockets stay open (like a hung or
                        // killed process whose connections the OS has not reset yet).
                        std::mem::forget(p);
                        return Ok(());
                    }
                    // An exchange in which both survivors wait on P1.
                    mpc::bench::sync(&p).map_err(fail)?;
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in results.iter().enumerate() {
        if i == 1 {
            continue;
        }
        let e = r.as_ref().expect_err("the survivors must fail");
        assert!(e.to_string().contains("P1"), "P{i}: {e}");
    }
}
