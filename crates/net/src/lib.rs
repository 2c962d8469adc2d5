//! Transport between the three MPC parties: framing, timeouts, and byte/round accounting.
