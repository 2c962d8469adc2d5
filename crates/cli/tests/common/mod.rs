//! Helpers shared by the CLI's process tests.

/// The `[[party]]` entries of a parties.toml for three parties on six distinct free loopback
/// ports. All six listeners are held until the last is bound: a port found and released at once
/// can come back from the next bind, and two parties given one port fail to start.
pub fn loopback_party_entries() -> String {
    let held: Vec<_> = (0..6)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    ports
        .chunks(2)
        .enumerate()
        .map(|(id, pair)| {
            format!(
                "[[party]]\nid = {id}\nmesh = \"127.0.0.1:{}\"\nclient = \"127.0.0.1:{}\"\n",
                pair[0], pair[1]
            )
        })
        .collect()
}
