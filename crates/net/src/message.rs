//! Typed messages on the links between a party and an outside role (client, model owner).
//!
//! Hand-written binary encoding, one message per frame:
//! ```text
//! tag 1 Control: UTF-8 text (a job description, "done", ...; JSON by convention)
//! tag 2 Shares:  name_len u16 | name | ndim u8 | dims u64 x ndim | elements u64 LE x prod(dims)
//! tag 3 Error:   UTF-8 text
//! ```
//! Share tensors travel as raw little-endian ring elements, so a 1M-element tensor costs 8 MB
//! plus a header of a few dozen bytes. A decoder checks every length against the payload, so a
//! malformed message is an error naming its sender, never a panic or a huge allocation.

use crate::{NetError, Peer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Control text.
    Control(String),
    /// A named tensor of ring elements (one party's shares), row-major.
    Shares {
        name: String,
        shape: Vec<usize>,
        data: Vec<u64>,
    },
    /// The sender gives up, for this reason.
    Error(String),
}

const TAG_CONTROL: u8 = 1;
const TAG_SHARES: u8 = 2;
const TAG_ERROR: u8 = 3;
const MAX_DIMS: usize = 8;

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Message {
    /// A shares message, checking that `data` fills `shape`.
    pub fn shares(name: &str, shape: &[usize], data: Vec<u64>) -> Result<Message, NetError> {
        if element_count(shape) != Some(data.len()) || shape.len() > MAX_DIMS {
            return Err(NetError::Setup(format!(
                "shares {name:?}: {} elements do not fill shape {shape:?}",
                data.len()
            )));
        }
        Ok(Message::Shares {
            name: name.to_string(),
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Control(t) => [&[TAG_CONTROL][..], t.as_bytes()].concat(),
            Message::Error(t) => [&[TAG_ERROR][..], t.as_bytes()].concat(),
            Message::Shares { name, shape, data } => {
                let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
                let head = 1 + 2 + name.len() + 1 + 8 * shape.len();
                let mut out = Vec::with_capacity(head + 8 * data.len());
                out.push(TAG_SHARES);
                out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                out.extend_from_slice(name);
                out.push(shape.len() as u8);
                for &d in shape {
                    out.extend_from_slice(&(d as u64).to_le_bytes());
                }
                out.resize(head + 8 * data.len(), 0);
                for (chunk, x) in out[head..].chunks_exact_mut(8).zip(data) {
                    chunk.copy_from_slice(&x.to_le_bytes());
                }
                out
            }
        }
    }

    /// Decodes a message received from `from`.
    pub fn decode(bytes: &[u8], from: Peer) -> Result<Message, NetError> {
        let bad = |detail: String| NetError::BadFrame { peer: from, detail };
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| bad("message text is not UTF-8".into()))
        };
        let (&tag, rest) = bytes
            .split_first()
            .ok_or_else(|| bad("empty message".into()))?;
        match tag {
            TAG_CONTROL => Ok(Message::Control(text(rest)?)),
            TAG_ERROR => Ok(Message::Error(text(rest)?)),
            TAG_SHARES => {
                let mut r = Cursor { b: rest };
                let short = || bad("shares message is truncated".into());
                let name_len = u16::from_le_bytes(r.take(2).ok_or_else(short)?.try_into().unwrap());
                let name = text(r.take(name_len as usize).ok_or_else(short)?)?;
                let ndim = r.take(1).ok_or_else(short)?[0] as usize;
                if ndim > MAX_DIMS {
                    return Err(bad(format!(
                        "shares {name:?} have {ndim} dimensions (max {MAX_DIMS})"
                    )));
                }
                let mut shape = Vec::with_capacity(ndim);
                for _ in 0..ndim {
                    let d = u64::from_le_bytes(r.take(8).ok_or_else(short)?.try_into().unwrap());
                    shape.push(
                        usize::try_from(d).map_err(|_| bad(format!("dimension {d} too large")))?,
                    );
                }
                let n = element_count(&shape)
                    .filter(|n| n.checked_mul(8) == Some(r.b.len()))
                    .ok_or_else(|| {
                        bad(format!(
                            "shares {name:?} of shape {shape:?} carry {} bytes of elements, \
                             which is not 8 bytes per element",
                            r.b.len()
                        ))
                    })?;
                let mut data = Vec::with_capacity(n);
                data.extend(
                    r.b.chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
                );
                Ok(Message::Shares { name, shape, data })
            }
            t => Err(bad(format!("unknown message tag {t}"))),
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_shares_are_raw_le_u64() {
        let m = Message::shares("x_T", &[2, 3], vec![1, 2, 3, u64::MAX, 5, 6]).unwrap();
        let bytes = m.encode();
        assert_eq!(bytes.len(), 1 + 2 + 3 + 1 + 16 + 48);
        assert_eq!(&bytes[bytes.len() - 8..], &6u64.to_le_bytes());
        assert_eq!(Message::decode(&bytes, Peer::Client).unwrap(), m);
        for m in [
            Message::Control("{\"steps\":50}".into()),
            Message::Error("no".into()),
        ] {
            assert_eq!(Message::decode(&m.encode(), Peer::Client).unwrap(), m);
        }
        assert!(Message::shares("x", &[2, 2], vec![0; 3]).is_err());
    }

    #[test]
    fn malformed_messages_name_the_sender() {
        let good = Message::shares("w", &[4], vec![9; 4]).unwrap().encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (vec![9, 1], "unknown message tag 9"),
            (good[..good.len() - 3].to_vec(), "not 8 bytes per element"),
            (good[..5].to_vec(), "truncated"),
            (
                [&[TAG_SHARES, 0, 0, 1], &u64::MAX.to_le_bytes()[..]].concat(),
                "shape",
            ),
            (vec![TAG_CONTROL, 0xff, 0xfe], "not UTF-8"),
        ];
        for (bytes, want) in cases {
            let e = Message::decode(&bytes, Peer::ModelOwner)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("the model owner sent") && e.contains(want),
                "{e}"
            );
        }
    }
}
